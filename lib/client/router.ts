/**
 * The command router: one client line in, one reply out (now, or once its
 * flood or Places search completes). Empty lines get no reply.
 */

import { timesThousand } from "../decimal.ts";
import { log, quote } from "../logging.ts";
import { traffic } from "../traffic_log.ts";
import type { PlacesService } from "../places/cache.ts";
import { type LocationRecord, parseCommand, parseLocation, recordFromIamat } from "../protocol.ts";
import type { Reply } from "./reply_queue.ts";
import type { LocationStore } from "../store/store.ts";

/** What the router needs from the server. */
export interface RouterContext {
  /** This server's name. */
  name: string;
  /** The latest record of every client. */
  store: LocationStore;
  /** Where WHATSAT asks for places. */
  places: PlacesService;
  /** Writes a record this server just stored to disk and floods it; resolves once both are done. */
  publish(record: LocationRecord): Promise<void>;
}

// ignoreBOM keeps a leading U+FEFF in the text, so the `? ` echo of such a line is byte for byte.
const _decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const _encoder = new TextEncoder();
const _QUESTION = _encoder.encode("? ");

/** The `? ` reply for a line, as bytes when the line was not UTF-8. */
function _invalid(line: string | Uint8Array): Reply {
  if (typeof line === "string") return `? ${line}\n`;
  const out = new Uint8Array(line.length + 3);
  out.set(_QUESTION, 0);
  out.set(line, 2);
  out[line.length + 2] = 10;
  return out;
}

/** Decodes a line as UTF-8, or returns null when it is not. */
export function decodeLine(bytes: Uint8Array): string | null {
  try {
    return _decoder.decode(bytes);
  } catch {
    return null;
  }
}

/**
 * Routes one line (without `\n`) that arrived at `arrivedNs`; returns its
 * reply, or null for an ignored empty line. `line` is the line decoded by
 * {@linkcode decodeLine}, when the caller has already done that.
 */
export function route(
  context: RouterContext,
  bytes: Uint8Array,
  arrivedNs: bigint,
  line: string | null = decodeLine(bytes),
): Reply | Promise<Reply> | null {
  if (line === null) return _invalid(bytes);
  const command = parseCommand(line);
  switch (command.kind) {
    case "empty":
      return null;
    case "invalid":
      return _invalid(line);
    case "IAMAT": {
      const record = recordFromIamat(context.name, command, arrivedNs);
      const reply = record.line + "\n";
      if (!context.store.offer(record)) {
        traffic.event(
          "client",
          `IAMAT for ${quote(command.clientId)} is not newer than the stored record; not flooded`,
          "DBG",
        );
        return reply;
      }
      return context.publish(record).then(() => reply);
    }
    case "WHATSAT": {
      const record = context.store.get(command.clientId);
      if (record === undefined) return _invalid(line);
      return _whatsat(context, record, command.radiusKm, command.bound);
    }
  }
}

async function _whatsat(
  context: RouterContext,
  record: LocationRecord,
  radiusKm: string,
  bound: number,
): Promise<Reply> {
  const location = parseLocation(record.location)!;
  const radiusMetres = timesThousand(radiusKm);
  const started = performance.now();
  const result = await context.places.result({ ...location, radiusMetres });
  const answer = result.answer;
  const provider = context.places.name;
  const ms = Math.round(performance.now() - started);
  if (answer.error_message === undefined) {
    // One per WHATSAT, so through the traffic log's cheap path rather than a LogTape call each.
    traffic.event(
      "places",
      `Places ${quote(provider)} around ${quote(record.location)} radius ${radiusMetres} m: ${
        quote(answer.status)
      } in ${ms} ms`,
    );
  } else {
    log.places.warning(
      "Places {provider} around {location} radius {radius} m: {status} in {ms} ms: {error}",
      {
        provider,
        location: record.location,
        radius: radiusMetres,
        status: answer.status,
        ms,
        error: answer.error_message,
      },
    );
  }
  const body = result.body(bound);
  const line = _encoder.encode(record.line);
  const reply = new Uint8Array(line.length + body.length);
  reply.set(line, 0);
  reply.set(body, line.length);
  return reply;
}
