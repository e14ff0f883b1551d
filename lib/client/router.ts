/**
 * The command router: one client line in, one reply out (now, or once its
 * flood or Places search completes). Empty lines get no reply.
 */

import { compareToNanoseconds, nanosecondsText, wholeMetres } from "../decimal.ts";
import { cutForLog, log, quote } from "../logging.ts";
import { traffic } from "../traffic_log.ts";
import type { PlacesService } from "../places/cache.ts";
import { type LocationRecord, parseCommand, parseLocation, recordFromIamat, splitFields } from "../protocol.ts";
import { metrics } from "../admin/metrics.ts";
import { NoReply, type Reply } from "./reply_queue.ts";
import type { LocationStore } from "../store/store.ts";

/** What the router needs from the server. */
export interface RouterContext {
  /** This server's name. */
  name: string;
  /** The latest record of every client. */
  store: LocationStore;
  /** Where WHATSAT asks for places. */
  places: PlacesService;
  /**
   * Writes a record this server just stored to disk and floods it; resolves
   * once both are done, rejects with {@linkcode NoReply} when the commit
   * failed (the record must not be acknowledged).
   */
  publish(record: LocationRecord): Promise<void>;
  /** Bounds a command keeps to, beyond its syntax. */
  limits: CommandLimits;
  /** Whether records can be committed now: while they cannot, IAMATs are refused without a reply. */
  canCommit(): boolean;
  /**
   * When the record held for `clientId` is not yet what an IAMAT reply
   * promises (committed here; for one of our own clients' still on its way,
   * also held by the neighbours), a promise that settles once it is, and
   * rejects with {@linkcode NoReply} when it cannot be; undefined when it
   * already is. An IAMAT that is not newer is answered only then: its reply
   * says the herd holds a record at least as great.
   */
  heldSettled(clientId: string): Promise<void> | undefined;
}

/** Bounds a command keeps to, beyond its syntax (`limits` and `records` in the config). */
export interface CommandLimits {
  /** Longest client ID in UTF-8 bytes. */
  maxClientIdBytes: number;
  /** How far past the server's clock an IAMAT's client time may be, in seconds. */
  maxClockSkewS: number;
  /** Most clients held: past it, an IAMAT for a new client is invalid. */
  maxRecords: number;
}

/** The latest instant an IAMAT's time may name, for the arrival time it was computed for. */
let _skewLimit: { arrivedNs: bigint; skewS: number; limit: { whole: string; nanos: string } } | undefined;

/** Whether `clientTime` is later than `arrivedNs` plus the skew allowance: a record from the far future. */
function _fromTheFuture(clientTime: string, arrivedNs: bigint, skewS: number): boolean {
  // Every line of a read shares one arrival time: the limit is made once per read, not per line.
  if (_skewLimit === undefined || _skewLimit.arrivedNs !== arrivedNs || _skewLimit.skewS !== skewS) {
    _skewLimit = { arrivedNs, skewS, limit: nanosecondsText(arrivedNs + BigInt(skewS) * 1_000_000_000n) };
  }
  return compareToNanoseconds(clientTime, _skewLimit.limit) > 0;
}

/** When the store-full warning was last logged, so a client filling it makes one line a second, not one each. */
let _fullWarnedAt = -Infinity;

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
  const counts = metrics.commands;
  if (line === null) {
    counts.otherInvalid.inc();
    return _invalid(bytes);
  }
  const { limits } = context;
  const command = parseCommand(line, limits.maxClientIdBytes);
  switch (command.kind) {
    case "empty":
      return null;
    case "invalid": {
      const verb = splitFields(line)[0]; // split again, off the path of valid commands, only to count it
      (verb === "IAMAT" ? counts.iamatInvalid : verb === "WHATSAT" ? counts.whatsatInvalid : counts.otherInvalid).inc();
      return _invalid(line);
    }
    case "IAMAT": {
      if (_fromTheFuture(command.clientTime, arrivedNs, limits.maxClockSkewS)) {
        counts.iamatInvalid.inc();
        return _invalid(line);
      }
      const { store } = context;
      if (store.size >= limits.maxRecords && !store.has(command.clientId)) {
        const now = performance.now();
        if (now - _fullWarnedAt >= 1000) {
          _fullWarnedAt = now;
          log.server.warning("The store holds {count} clients, records.max: IAMATs for new clients are invalid", {
            count: store.size,
          });
        }
        counts.iamatInvalid.inc();
        return _invalid(line);
      }
      // A server that cannot commit answers no IAMAT: the client may try another server.
      if (!context.canCommit()) {
        counts.iamatRefused.inc();
        return Promise.reject(new NoReply("the server cannot commit records now"));
      }
      const record = recordFromIamat(context.name, command, arrivedNs);
      const reply = record.line + "\n";
      if (!store.offer(record)) {
        if (traffic.debug) {
          traffic.event(
            "client",
            `IAMAT for ${
              quote(cutForLog(command.clientId))
            } is not newer than the stored record (or expired); not flooded`,
            "DBG",
          );
        }
        // Answered once the record that beats it is safe: a kill -9 meanwhile must not leave neither on disk.
        const held = context.heldSettled(command.clientId);
        if (held === undefined) {
          counts.iamatOk.inc();
          return reply;
        }
        return held.then(() => {
          counts.iamatOk.inc();
          return reply;
        }, (error) => {
          counts.iamatRefused.inc();
          throw error;
        });
      }
      return context.publish(record).then(() => {
        counts.iamatOk.inc();
        return reply;
      }, (error) => {
        counts.iamatRefused.inc();
        throw error;
      });
    }
    case "WHATSAT": {
      const record = context.store.get(command.clientId);
      if (record === undefined) {
        counts.whatsatInvalid.inc();
        return _invalid(line);
      }
      counts.whatsatOk.inc();
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
  // Whole metres: radii a fraction of a metre apart are one search (one cache entry, one billed call).
  const radiusMetres = wholeMetres(radiusKm);
  const started = performance.now();
  const result = await context.places.result({ ...location, radiusMetres });
  const provider = context.places.name;
  const ms = Math.round(performance.now() - started);
  // One per WHATSAT, so through the traffic log's cheap path rather than a LogTape call each, errors too: a failed
  // search is warned about once, where it failed (lib/places/cache.ts), not once per reply that serves it again.
  traffic.event(
    "places",
    `Places ${quote(provider)} around ${quote(record.location)} radius ${radiusMetres} m: ${
      quote(result.status)
    } in ${ms} ms${result.errorMessage === undefined ? "" : `: ${quote(String(result.errorMessage))}`}`,
  );
  return result.replyParts(record.line, bound);
}
