/**
 * One persistent outbound link to a neighbour's peer port. Records wait in
 * a queue coalesced by client (so a slow or frozen neighbour costs at most
 * one pending record per client), go out in batches, one write each, and
 * live ones are acknowledged by the neighbour (peer/acks.ts). The link
 * reconnects with exponential backoff and jitter when it drops, and starts
 * a reconciliation when it comes up (peer/reconcile.ts).
 */

import { setImmediate } from "node:timers";
import { log } from "../logging.ts";
import { readLineBatches } from "../net/line_stream.ts";
import { writeAll, writeParts } from "../net/write.ts";
import { type LocationRecord, splitFields } from "../protocol.ts";
import { type AckTicket, AckTracker } from "./acks.ts";
import type { PeerHost } from "./host.ts";
import { formatHello, formatRecord, parsePeerMessage, PEER_MAX_LINE_BYTES } from "./wire.ts";

/** Options for {@linkcode PeerLink}. */
export interface PeerLinkOptions {
  /** The server this link belongs to. */
  host: PeerHost;
  /** The neighbour's name. */
  neighbour: string;
  /** Where the neighbour's peer port is dialled: host. */
  dialHost: string;
  /** Where the neighbour's peer port is dialled: port. */
  dialPort: number;
  /** First reconnect delay in milliseconds. */
  reconnectMinMs: number;
  /** Longest reconnect delay in milliseconds. */
  reconnectMaxMs: number;
  /** A neighbour that leaves a record unacknowledged this long is lagging: no one waits on it until it catches up. */
  ackTimeoutMs: number;
}

interface _Entry {
  record: LocationRecord;
  waitMs: number;
  /** The waits on this record; only for live records. */
  ticket: AckTicket | undefined;
  /** Live records are numbered (and acknowledged when waited on); reconciliation records are plain AT lines. */
  live: boolean;
}

const _encoder = new TextEncoder();
const _decoder = new TextDecoder();

/** Exponential backoff with jitter: each pause is half to all of a step that doubles up to a ceiling. */
class _Backoff {
  #min: number;
  #max: number;
  #step: number;

  constructor(min: number, max: number) {
    this.#min = min;
    this.#max = max;
    this.#step = min;
  }

  /** The next pause in milliseconds; the step doubles. */
  next(): number {
    const step = this.#step;
    this.#step = Math.min(step * 2, this.#max);
    return step / 2 + Math.random() * step / 2;
  }

  /** Back to the first step. */
  reset(): void {
    this.#step = this.#min;
  }
}

/** An outbound link to one neighbour. */
export class PeerLink {
  /** The neighbour's name. */
  readonly neighbour: string;
  #options: PeerLinkOptions;
  #host: PeerHost;
  #conn: Deno.TcpConn | undefined;
  #queue = new Map<string, _Entry>();
  #acks: AckTracker;
  #seq = 0;
  #digestDue = false;
  #closed = false;
  #wake: (() => void) | undefined;
  #wakeScheduled = false;
  #retry: { timer: ReturnType<typeof setTimeout>; resolve: () => void } | undefined;
  #running: Promise<void> | undefined;

  /** A link that dials once {@linkcode PeerLink.start} is called. */
  constructor(options: PeerLinkOptions) {
    this.neighbour = options.neighbour;
    this.#options = options;
    this.#host = options.host;
    this.#acks = new AckTracker({
      timeoutMs: options.ackTimeoutMs,
      onLagging: (lagging) => {
        if (lagging) {
          log.peer.warning(
            "Link to {neighbour} is lagging: a record went unacknowledged; not waiting on it until it catches up",
            { neighbour: this.neighbour },
          );
        } else {
          log.peer.info("Link to {neighbour} caught up", { neighbour: this.neighbour });
        }
      },
    });
  }

  /** Whether the link is connected. */
  get up(): boolean {
    return this.#conn !== undefined;
  }

  /** Records waiting to be written: at most one per client. */
  get queued(): number {
    return this.#queue.size;
  }

  /** Whether the neighbour is connected but has stopped acknowledging in time. */
  get lagging(): boolean {
    return this.#acks.lagging;
  }

  /** Starts connecting; the link keeps itself up until {@linkcode PeerLink.close}. */
  start(): void {
    this.#running ??= this.#run();
  }

  /** Retries at once if the link is waiting to reconnect (the neighbour just dialled us, so it is back). */
  poke(): void {
    if (this.#retry === undefined) return;
    clearTimeout(this.#retry.timer);
    this.#retry.resolve();
  }

  /** Starts a reconciliation: our digest goes out with the next write. */
  reconcile(): void {
    if (this.#conn === undefined) return;
    this.#digestDue = true;
    this.#wake?.();
  }

  /**
   * Queues a live record, numbered, for the neighbour. With `waitMs` > 0 the
   * neighbour acknowledges it, and the promise resolves then or after
   * `waitMs`; nothing is returned when there is nothing to wait for:
   * `waitMs` is 0 (the record is not acknowledged), the link is down (the
   * record is skipped) or lagging (it still goes).
   */
  sendAcknowledged(record: LocationRecord, waitMs: number): Promise<void> | undefined {
    if (this.#conn === undefined) return undefined;
    let entry = this.#queue.get(record.clientId);
    if (entry === undefined) {
      entry = { record, waitMs, ticket: undefined, live: true };
      this.#queue.set(record.clientId, entry);
    } else {
      entry.record = record;
      entry.waitMs = Math.max(entry.waitMs, waitMs);
      entry.live = true;
    }
    this.#wakeSoon();
    if (waitMs <= 0 || this.#acks.lagging) return undefined;
    entry.ticket ??= this.#acks.ticket();
    return this.#acks.wait(entry.ticket, waitMs);
  }

  /**
   * Queues a reconciliation record: sent as a plain AT line, never
   * acknowledged, nobody waits. Skipped when the link is down (the next
   * reconciliation covers it).
   */
  sendUnacknowledged(record: LocationRecord): void {
    if (this.#conn === undefined) return;
    const entry = this.#queue.get(record.clientId);
    if (entry === undefined) this.#queue.set(record.clientId, { record, waitMs: 0, ticket: undefined, live: false });
    else entry.record = record; // the store's record: never older than one already queued
    this.#wakeSoon();
  }

  /**
   * Wakes the writer at the end of this turn of the event loop, not at once:
   * every record stored while handling this turn's reads then goes out in
   * the same write. Under load that turns one write per record into one per
   * batch; socket operations are a large share of a server's time
   * (docs/PERFORMANCE.md).
   */
  #wakeSoon(): void {
    if (this.#wakeScheduled) return;
    this.#wakeScheduled = true;
    setImmediate(() => {
      this.#wakeScheduled = false;
      this.#wake?.();
    });
  }

  /** Closes the link for good. */
  async close(): Promise<void> {
    this.#closed = true;
    this.poke();
    this.#wake?.();
    try {
      this.#conn?.close();
    } catch { /* already closed */ }
    await this.#running;
  }

  /** Dials, serves a session while the link lasts, and dials again after a pause, until closed. */
  async #run(): Promise<void> {
    const { dialHost, dialPort, reconnectMinMs, reconnectMaxMs } = this.#options;
    const backoff = new _Backoff(reconnectMinMs, reconnectMaxMs);
    let announcedDown = false;
    let wasUp = false;
    while (!this.#closed) {
      let conn: Deno.TcpConn;
      try {
        conn = await Deno.connect({ hostname: dialHost, port: dialPort });
      } catch (error) {
        if (!announcedDown) {
          // Neighbours starting after us is normal; a link that was up and cannot come back is worth a warning.
          log.peer[wasUp ? "warning" : "info"](
            "Link to {neighbour} at {host}:{port} is down: {error}; retrying with backoff",
            { neighbour: this.neighbour, host: dialHost, port: dialPort, error: (error as Error).message },
          );
          announcedDown = true;
        }
        await this.#sleep(backoff.next());
        continue;
      }
      if (this.#closed) {
        conn.close();
        break;
      }
      conn.setNoDelay(true);
      announcedDown = false;
      wasUp = true;
      const began = performance.now();
      await this.#session(conn);
      // A neighbour that accepts and drops us at once (refusing our HELLO, or cut by a proxy) must not be
      // redialled in a tight loop: only a session that lasted resets the backoff.
      if (performance.now() - began >= reconnectMaxMs) backoff.reset();
      else if (!this.#closed) await this.#sleep(backoff.next());
    }
  }

  async #session(conn: Deno.TcpConn): Promise<void> {
    this.#conn = conn;
    this.#digestDue = this.#host.reconciler.shouldStart(this.neighbour);
    log.peer.info("Link to {neighbour} is up", { neighbour: this.neighbour });
    const reading = this.#readReplies(conn);
    try {
      await writeAll(conn, _encoder.encode(formatHello(this.#host.name)));
      await this.#writeLoop(conn);
    } catch (error) {
      if (!this.#closed) {
        log.peer.warning("Link to {neighbour} failed while writing: {error}", {
          neighbour: this.neighbour,
          error: (error as Error).message,
        });
      }
    }
    try {
      conn.close();
    } catch { /* already closed by the reader */ }
    await reading;
    this.#conn = undefined;
    this.#queue.clear();
    this.#acks.reset();
    log.peer[this.#closed ? "info" : "warning"]("Link to {neighbour} is down", { neighbour: this.neighbour });
  }

  /** Writes what is queued, one write per batch, until the link drops or closes. */
  async #writeLoop(conn: Deno.TcpConn): Promise<void> {
    while (!this.#closed && this.#conn === conn) {
      if (this.#queue.size === 0 && !this.#digestDue) {
        await new Promise<void>((resolve) => this.#wake = resolve);
        this.#wake = undefined;
        continue;
      }
      let text = "";
      if (this.#digestDue) {
        this.#digestDue = false;
        text += this.#host.reconciler.request();
      }
      const batch = [...this.#queue.values()];
      this.#queue.clear();
      const now = performance.now();
      for (const entry of batch) {
        if (!entry.live) {
          text += entry.record.line + "\n";
          continue;
        }
        const seq = ++this.#seq;
        // Sent with no wait, a record is not acknowledged (see wire.ts).
        if (entry.waitMs > 0) this.#acks.sent(seq, entry.ticket, now);
        text += formatRecord(entry.record, seq, entry.waitMs);
      }
      await writeParts(conn, [text]);
    }
  }

  /** Reads what the neighbour sends back: acknowledgements, and its side of a reconciliation. */
  async #readReplies(conn: Deno.TcpConn): Promise<void> {
    let received = 0;
    let stored = 0;
    try {
      for await (const batch of readLineBatches(conn, PEER_MAX_LINE_BYTES, 64 * 1024)) {
        for (const line of batch.lines) {
          const message = parsePeerMessage(splitFields(_decoder.decode(line)));
          if (message.kind === "ACK") this.#acks.acknowledged(message.seq);
          else if (message.kind === "RECORD") {
            received++;
            if (this.#host.catchUp(message.record, this.neighbour)) stored++;
          } else if (message.kind === "DIGEST") {
            const records = this.#host.reconciler.finish(this.neighbour, message.digest, received, stored);
            for (const record of records) this.sendUnacknowledged(record);
            received = stored = 0;
          } else {
            log.peer.warning("Unexpected line from {neighbour}: {line}", {
              neighbour: this.neighbour,
              line: _decoder.decode(line).slice(0, 200),
            });
          }
        }
      }
    } catch { /* the writer side reports the failure */ }
    if (this.#conn === conn) {
      try {
        conn.close();
      } catch { /* already closed */ }
      this.#wake?.();
      if (this.#conn === conn) this.#conn = undefined;
    }
  }

  #sleep(ms: number): Promise<void> {
    if (this.#closed) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = () => {
        this.#retry = undefined;
        resolve();
      };
      this.#retry = { timer: setTimeout(done, ms), resolve: done };
    });
  }
}
