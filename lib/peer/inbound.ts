/**
 * One inbound peer connection: a neighbour's link to us. The first line
 * must be `HELLO <name>` from a configured neighbour; then each live record
 * is offered to the server and acknowledged once handled, each
 * reconciliation record is offered too, and each `DIGEST` is answered
 * (peer/reconcile.ts).
 */

import { setImmediate } from "node:timers";
import { log } from "../logging.ts";
import { readLineBatches } from "../net/line_stream.ts";
import { writeParts } from "../net/write.ts";
import { splitFields } from "../protocol.ts";
import type { PeerHost } from "./host.ts";
import { formatAck, parsePeerMessage, PEER_MAX_LINE_BYTES, type PeerMessage } from "./wire.ts";

const _decoder = new TextDecoder();

/**
 * What goes back to the neighbour (acknowledgements, reconciliation
 * answers): gathered during a turn of the event loop and written together,
 * one write per turn.
 */
class _Replies {
  #conn: Deno.Conn;
  #out = "";
  #writing: Promise<void> | undefined;
  #failed = false;

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  /** Books a write at the end of this turn, even with nothing to send yet (see {@linkcode InboundLink}). */
  schedule(): void {
    this.#writing ??= new Promise<void>((resolve) => setImmediate(resolve)).then(() => this.#flush());
  }

  /** Adds `text` to this turn's write. */
  send(text: string): void {
    this.#out += text;
    this.schedule();
  }

  /** Resolves once everything sent so far is written (or the connection failed). */
  async done(): Promise<void> {
    await this.#writing;
  }

  async #flush(): Promise<void> {
    while (this.#out !== "" && !this.#failed) {
      const text = this.#out;
      this.#out = "";
      try {
        await writeParts(this.#conn, [text]);
      } catch {
        this.#failed = true;
      }
    }
    this.#writing = undefined;
  }
}

/** A neighbour's link to us, being served. */
class InboundLink {
  #conn: Deno.Conn;
  #host: PeerHost;
  #replies: _Replies;
  /** The neighbour, once it said `HELLO`. */
  #name: string | undefined;
  /** Acknowledgements waiting on records being passed on (`ackScope` herd). */
  #handling = new Set<Promise<void>>();
  /** Reconciliation records received in this read, and how many of them were new. */
  #caughtUp = 0;
  #stored = 0;

  constructor(conn: Deno.Conn, host: PeerHost) {
    this.#conn = conn;
    this.#host = host;
    this.#replies = new _Replies(conn);
  }

  /** Reads and handles lines until the link closes or breaks the protocol. */
  async serve(): Promise<void> {
    try {
      for await (const batch of readLineBatches(this.#conn, PEER_MAX_LINE_BYTES)) {
        for (const bytes of batch.lines) {
          const line = _decoder.decode(bytes);
          const fields = splitFields(line);
          if (fields.length === 0) continue;
          if (!this.#handle(parsePeerMessage(fields), line)) return;
        }
        this.#logCatchUp();
        if (batch.overflow) {
          log.peer.warning("Peer {neighbour} sent an over-long line; closing its link", {
            neighbour: this.#name ?? "?",
          });
          return;
        }
      }
    } catch (error) {
      // Interrupted and BadResource mean we closed it ourselves (shutdown); anything else is the link failing.
      const ours = error instanceof Deno.errors.Interrupted || error instanceof Deno.errors.BadResource;
      log.peer[ours ? "info" : "warning"]("Link from {neighbour} closed: {error}", {
        neighbour: this.#name ?? "?",
        error: (error as Error).message,
      });
    } finally {
      await Promise.all(this.#handling);
      await this.#replies.done();
      try {
        this.#conn.close();
      } catch { /* already closed */ }
      if (this.#name !== undefined) log.peer.info("Link from {neighbour} is down", { neighbour: this.#name });
    }
  }

  /** Handles one message; false when the link must close. */
  #handle(message: PeerMessage, line: string): boolean {
    if (this.#name === undefined) return this.#hello(message, line);
    const name = this.#name;
    switch (message.kind) {
      case "DIGEST?":
        this.#replies.send(this.#host.reconciler.answer(name, null));
        return true;
      case "DIGEST":
        this.#replies.send(this.#host.reconciler.answer(name, message.digest));
        return true;
      case "RECORD":
        if (message.seq === undefined) {
          this.#caughtUp++;
          if (this.#host.catchUp(message.record, name)) this.#stored++;
        } else {
          this.#live(message.record, message.seq, message.waitMs);
        }
        return true;
      default:
        log.peer.warning("Invalid line from {neighbour}: {line}", { neighbour: name, line });
        return true;
    }
  }

  /** The first line: `HELLO <name>` from a neighbour, or the link closes. */
  #hello(message: PeerMessage, line: string): boolean {
    if (message.kind !== "HELLO" || !this.#host.isNeighbour(message.name)) {
      log.peer.warning("Refused a peer connection that did not introduce itself as a neighbour: {line}", { line });
      return false;
    }
    this.#name = message.name;
    log.peer.info("Link from {neighbour} is up", { neighbour: message.name });
    this.#host.dialledBy(message.name);
    return true;
  }

  /** A live record: handed to the server, and acknowledged when it was sent with a wait. */
  #live(record: Parameters<PeerHost["receive"]>[0], seq: number, waitMs: number): void {
    // The write is booked before the record is handled, so its acknowledgement goes out ahead of the floods it
    // causes: the sender is waiting on the one, nobody on the others.
    if (waitMs > 0) this.#replies.schedule();
    const handled = this.#host.receive(record, this.#name!, waitMs);
    // A record sent with no wait is not acknowledged: nobody is waiting on it.
    if (waitMs === 0) return;
    if (handled === undefined) {
      this.#replies.send(formatAck(seq));
      return;
    }
    const done: Promise<void> = handled.then(() => {
      this.#handling.delete(done);
      this.#replies.send(formatAck(seq));
    });
    this.#handling.add(done);
  }

  /** Reconciliation records are logged as a count per read, not a line each: a catch-up can carry 100,000. */
  #logCatchUp(): void {
    if (this.#caughtUp === 0) return;
    log.peer.info("From {neighbour}, reconciling: received {received} records, stored {stored}", {
      neighbour: this.#name,
      received: this.#caughtUp,
      stored: this.#stored,
    });
    this.#caughtUp = this.#stored = 0;
  }
}

/** Serves one inbound peer connection until it closes. */
export function servePeer(conn: Deno.Conn, host: PeerHost): Promise<void> {
  return new InboundLink(conn, host).serve();
}
