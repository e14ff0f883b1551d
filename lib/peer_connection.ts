/**
 * One inbound peer connection: a neighbour's link to us. The first line
 * must be `HELLO <name>` from a configured neighbour; then each record is
 * offered to the server and acknowledged once handled.
 */

import { readLines } from "./line_stream.ts";
import { log } from "./logging.ts";
import { formatAck, parsePeerMessage } from "./peer_wire.ts";
import { type LocationRecord, splitFields } from "./protocol.ts";
import { writeAll } from "./reply_queue.ts";

/** What an inbound peer connection needs from the server. */
export interface PeerContext {
  /** Names this server accepts links from. */
  neighbours: ReadonlySet<string>;
  /** Handles a record from `from`; resolves when it may be acknowledged (stored and passed on, or found old). */
  receive(record: LocationRecord, from: string, waitMs: number): Promise<void>;
  /** A neighbour dialled in: it is back, so our own link to it should retry now. */
  greeted(name: string): void;
}

const _decoder = new TextDecoder();
const _encoder = new TextEncoder();

/** Serves one inbound peer connection until it closes. */
export async function servePeer(conn: Deno.Conn, context: PeerContext, maxLineBytes: number): Promise<void> {
  let name: string | undefined;
  let acks = "";
  let writing: Promise<void> | undefined;
  let failed = false;
  const flushAcks = async () => {
    while (acks !== "" && !failed) {
      const text = acks;
      acks = "";
      try {
        await writeAll(conn, _encoder.encode(text));
      } catch {
        failed = true;
      }
    }
    writing = undefined;
  };
  const ack = (seq: number) => {
    acks += formatAck(seq);
    writing ??= Promise.resolve().then(flushAcks);
  };
  const handling = new Set<Promise<void>>();
  try {
    for await (const batch of readLines(conn, maxLineBytes)) {
      for (const bytes of batch.lines) {
        const line = _decoder.decode(bytes);
        const fields = splitFields(line);
        if (fields.length === 0) continue;
        const message = parsePeerMessage(fields);
        if (name === undefined) {
          if (message.kind !== "HELLO" || !context.neighbours.has(message.name)) {
            log.peer.warning("Refused a peer connection that did not introduce itself as a neighbour: {line}", {
              line,
            });
            return;
          }
          name = message.name;
          log.peer.info("Link from {neighbour} is up", { neighbour: name });
          context.greeted(name);
          continue;
        }
        if (message.kind !== "RECORD") {
          log.peer.warning("Invalid line from {neighbour}: {line}", { neighbour: name, line });
          continue;
        }
        const { seq } = message;
        const handled = context.receive(message.record, name, message.waitMs);
        if (seq === undefined) continue;
        const done: Promise<void> = handled.then(() => {
          handling.delete(done);
          ack(seq);
        });
        handling.add(done);
      }
      if (batch.overflow) {
        log.peer.warning("Peer {neighbour} sent an over-long line; closing its link", { neighbour: name ?? "?" });
        return;
      }
    }
  } catch (error) {
    // Interrupted and BadResource mean we closed it ourselves (shutdown); anything else is the link failing.
    const ours = error instanceof Deno.errors.Interrupted || error instanceof Deno.errors.BadResource;
    log.peer[ours ? "info" : "warning"]("Link from {neighbour} closed: {error}", {
      neighbour: name ?? "?",
      error: (error as Error).message,
    });
  } finally {
    await Promise.all(handling);
    await writing;
    try {
      conn.close();
    } catch { /* already closed */ }
    if (name !== undefined) log.peer.info("Link from {neighbour} is down", { neighbour: name });
  }
}
