/**
 * One inbound peer connection: a neighbour's link to us. The first line
 * must be `HELLO <name>` from a configured neighbour; then each record is
 * offered to the server and acknowledged once handled, and each `DIGEST`
 * is answered with our records of the buckets that differ and our digest.
 */

import { setImmediate } from "node:timers";
import { readLines } from "../net/line_stream.ts";
import { log } from "../logging.ts";
import { formatAck, formatDigest, parsePeerMessage } from "./wire.ts";
import { type LocationRecord, splitFields } from "../protocol.ts";
import { writeParts } from "../net/write.ts";

/** What an inbound peer connection needs from the server. */
export interface PeerContext {
  /** Names this server accepts links from. */
  neighbours: ReadonlySet<string>;
  /**
   * Handles a flooded record from `from`. Returns a promise when the
   * acknowledgement must wait for it (the record passed on and acknowledged
   * further), or nothing when it may be acknowledged at once.
   */
  receive(record: LocationRecord, from: string, waitMs: number): Promise<void> | undefined;
  /** Handles a reconciliation record from `from`; returns whether it was new. */
  catchUp(record: LocationRecord, from: string): boolean;
  /** A neighbour dialled in: it is back, so our own link to it should retry now. */
  greeted(name: string): void;
  /** Our records in the buckets where `digest` differs from ours (none for null), and our digest as hex. */
  reconcile(digest: Uint32Array | null, from: string): { records: LocationRecord[]; hex: string };
}

const _decoder = new TextDecoder();

/** Serves one inbound peer connection until it closes. */
export async function servePeer(conn: Deno.Conn, context: PeerContext, maxLineBytes: number): Promise<void> {
  let name: string | undefined;
  let out = "";
  let writing: Promise<void> | undefined;
  let failed = false;
  const flushAcks = async () => {
    while (out !== "" && !failed) {
      const text = out;
      out = "";
      try {
        await writeParts(conn, [text]);
      } catch {
        failed = true;
      }
    }
    writing = undefined;
  };
  // At the end of this turn: the acks of everything handled meanwhile go out in one write.
  const scheduleFlush = () => {
    writing ??= new Promise<void>((resolve) => setImmediate(resolve)).then(flushAcks);
  };
  const send = (text: string) => {
    out += text;
    scheduleFlush();
  };
  const handling = new Set<Promise<void>>();
  let caughtUp = 0;
  let stored = 0;
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
        if (message.kind === "DIGEST?") {
          send(formatDigest(context.reconcile(null, name).hex));
          continue;
        }
        if (message.kind === "DIGEST") {
          const { records, hex } = context.reconcile(message.digest, name);
          let text = "";
          for (const record of records) text += record.line + "\n";
          send(text + formatDigest(hex));
          log.peer.info("Reconciling with {neighbour}: sent {count} records", {
            neighbour: name,
            count: records.length,
          });
          continue;
        }
        if (message.kind !== "RECORD") {
          log.peer.warning("Invalid line from {neighbour}: {line}", { neighbour: name, line });
          continue;
        }
        const { seq } = message;
        if (seq === undefined) {
          caughtUp++;
          if (context.catchUp(message.record, name)) stored++;
          continue;
        }
        // The flush is booked before the record is handled, so its acknowledgement goes out ahead of the floods
        // it causes: the sender is waiting on the one, nobody on the others.
        if (message.waitMs > 0) scheduleFlush();
        const handled = context.receive(message.record, name, message.waitMs);
        // A record sent with no wait is not acknowledged: nobody is waiting on it.
        if (message.waitMs === 0) continue;
        if (handled === undefined) {
          send(formatAck(seq));
          continue;
        }
        const done: Promise<void> = handled.then(() => {
          handling.delete(done);
          send(formatAck(seq));
        });
        handling.add(done);
      }
      if (caughtUp > 0) {
        log.peer.info("From {neighbour}, reconciling: received {received} records, stored {stored}", {
          neighbour: name,
          received: caughtUp,
          stored,
        });
        caughtUp = stored = 0;
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
