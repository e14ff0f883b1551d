/**
 * One persistent outbound link to a neighbour's peer port. Records wait in
 * a queue coalesced by client (so a slow or frozen neighbour costs at most
 * one pending record per client), go out in batches, one write each, and
 * are acknowledged by the neighbour. The link reconnects with exponential
 * backoff and jitter when it drops.
 */

import { setImmediate } from "node:timers";
import { log } from "../logging.ts";
import { LineSplitter } from "../net/line_stream.ts";
import { differingBuckets } from "../store/digest.ts";
import { formatDigest, formatHello, formatRecord, parsePeerMessage } from "./wire.ts";
import { type LocationRecord, splitFields } from "../protocol.ts";
import { writeAll, writeParts } from "../net/write.ts";

/** Options for {@linkcode PeerLink}. */
export interface PeerLinkOptions {
  /** This server's name, sent in the handshake. */
  self: string;
  /** The neighbour's name. */
  neighbour: string;
  /** The neighbour's host. */
  host: string;
  /** The neighbour's peer port. */
  peerPort: number;
  /** First reconnect delay in milliseconds. */
  reconnectMinMs: number;
  /** Longest reconnect delay in milliseconds. */
  reconnectMaxMs: number;
  /** A neighbour that leaves a record unacknowledged this long is lagging: no one waits on it until it catches up. */
  ackTimeoutMs: number;
  /** The local store, for reconciling with the neighbour. */
  source: ReconcileSource;
}

/** What a link needs from its server to reconcile stores with the neighbour. */
export interface ReconcileSource {
  /** The store's digest words, live. */
  digestWords(): Uint32Array;
  /** The store's digest as hex. */
  digestHex(): string;
  /** The stored records of some digest buckets. */
  inBuckets(buckets: ReadonlySet<number>): LocationRecord[];
  /**
   * Whether the neighbour itself just started a reconciliation with us
   * (over its link to us): that exchange goes both ways, so ours, on our
   * link coming up, would only send everything a second time.
   */
  reconciledBy(neighbour: string): boolean;
  /** A record the neighbour sent while reconciling: offered to the store (and passed on if new); whether it was new. */
  catchUp(record: LocationRecord, from: string): boolean;
}

/** Longest line a peer may send: a digest is 16 KiB of hex. */
export const PEER_MAX_LINE_BYTES = 64 * 1024;

interface _Waiter {
  resolve: () => void;
  deadline: number;
  done: boolean;
}

interface _Entry {
  record: LocationRecord;
  waitMs: number;
  waiters: _Waiter[];
  /** Live floods are numbered and acknowledged; reconciliation records are plain AT lines. */
  ack: boolean;
}

interface _Sent {
  sentAt: number;
  waiters: _Waiter[];
}

const _encoder = new TextEncoder();
const _decoder = new TextDecoder();
const _SWEEP_MS = 5;

/** An outbound link to one neighbour. */
export class PeerLink {
  readonly neighbour: string;
  #options: PeerLinkOptions;
  #conn: Deno.TcpConn | undefined;
  #queue = new Map<string, _Entry>();
  #sent = new Map<number, _Sent>();
  #waiting: _Waiter[] = [];
  #seq = 0;
  #lagging = false;
  #digestDue = false;
  #closed = false;
  #wake: (() => void) | undefined;
  #wakeScheduled = false;
  #retry: { timer: ReturnType<typeof setTimeout>; resolve: () => void } | undefined;
  #sweeper: ReturnType<typeof setInterval> | undefined;
  #running: Promise<void> | undefined;

  constructor(options: PeerLinkOptions) {
    this.neighbour = options.neighbour;
    this.#options = options;
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
    return this.#lagging;
  }

  /** Starts connecting; the link keeps itself up until {@linkcode close}. */
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
   * Queues `record` for the neighbour. With `waitMs` > 0 the neighbour
   * acknowledges it, and the promise resolves then or after `waitMs`;
   * nothing is returned when there is nothing to wait for: `waitMs` is 0,
   * or the link is down (the record is skipped) or lagging (it still goes).
   */
  send(record: LocationRecord, waitMs: number): Promise<void> | undefined {
    if (this.#conn === undefined) return undefined;
    const waits = waitMs > 0 && !this.#lagging;
    let entry = this.#queue.get(record.clientId);
    if (entry === undefined) {
      entry = { record, waitMs, waiters: [], ack: true };
      this.#queue.set(record.clientId, entry);
    } else {
      entry.record = record;
      entry.waitMs = Math.max(entry.waitMs, waitMs);
      entry.ack = true;
    }
    this.#wakeSoon();
    if (!waits) return undefined;
    return new Promise<void>((resolve) => {
      const waiter = { resolve, deadline: performance.now() + waitMs, done: false };
      entry.waiters.push(waiter);
      this.#waiting.push(waiter);
      this.#sweeper ??= setInterval(() => this.#sweep(), _SWEEP_MS);
    });
  }

  /**
   * Queues a record for reconciliation: sent as a plain AT line, not
   * acknowledged, nobody waits. Skipped when the link is down (the next
   * reconciliation covers it).
   */
  enqueue(record: LocationRecord): void {
    if (this.#conn === undefined) return;
    const entry = this.#queue.get(record.clientId);
    if (entry === undefined) this.#queue.set(record.clientId, { record, waitMs: 0, waiters: [], ack: false });
    else entry.record = record; // the store's record: never older than one already queued
    this.#wakeSoon();
  }

  /**
   * Wakes the writer at the end of this turn of the event loop, not at once:
   * every record stored while handling this turn's reads then goes out in
   * the same write. Under load that turns one write per record into one per
   * batch, which is most of a server's cost.
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

  async #run(): Promise<void> {
    const { host, peerPort, reconnectMinMs, reconnectMaxMs } = this.#options;
    let delay = reconnectMinMs;
    let announcedDown = false;
    let wasUp = false;
    while (!this.#closed) {
      let conn: Deno.TcpConn;
      try {
        conn = await Deno.connect({ hostname: host, port: peerPort });
      } catch (error) {
        if (!announcedDown) {
          // Neighbours starting after us is normal; a link that was up and cannot come back is worth a warning.
          log.peer[wasUp ? "warning" : "info"](
            "Link to {neighbour} at {host}:{port} is down: {error}; retrying with backoff",
            {
              neighbour: this.neighbour,
              host,
              port: peerPort,
              error: (error as Error).message,
            },
          );
          announcedDown = true;
        }
        await this.#sleep(delay / 2 + Math.random() * delay / 2);
        delay = Math.min(delay * 2, reconnectMaxMs);
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
      if (performance.now() - began >= reconnectMaxMs) {
        delay = reconnectMinMs;
      } else if (!this.#closed) {
        await this.#sleep(delay / 2 + Math.random() * delay / 2);
        delay = Math.min(delay * 2, reconnectMaxMs);
      }
    }
  }

  async #session(conn: Deno.TcpConn): Promise<void> {
    this.#conn = conn;
    this.#lagging = false;
    this.#digestDue = !this.#options.source.reconciledBy(this.neighbour);
    log.peer.info("Link to {neighbour} is up", { neighbour: this.neighbour });
    const reading = this.#readReplies(conn);
    try {
      await writeAll(conn, _encoder.encode(formatHello(this.#options.self)));
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
    this.#dropAll();
    log.peer[this.#closed ? "info" : "warning"]("Link to {neighbour} is down", { neighbour: this.neighbour });
  }

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
        text += formatDigest(this.#options.source.digestHex());
      }
      const batch = [...this.#queue.values()];
      this.#queue.clear();
      const now = performance.now();
      for (const entry of batch) {
        if (!entry.ack) {
          text += entry.record.line + "\n";
          continue;
        }
        const seq = ++this.#seq;
        // Sent with no wait, a record is not acknowledged (see peer_wire.ts).
        if (entry.waitMs > 0) this.#sent.set(seq, { sentAt: now, waiters: entry.waiters });
        text += formatRecord(entry.record, seq, entry.waitMs);
      }
      if (this.#sent.size > 0) this.#sweeper ??= setInterval(() => this.#sweep(), _SWEEP_MS);
      await writeParts(conn, [text]);
    }
  }

  /** Reads what the neighbour sends back: acknowledgements, and its side of a reconciliation. */
  async #readReplies(conn: Deno.TcpConn): Promise<void> {
    const splitter = new LineSplitter(PEER_MAX_LINE_BYTES);
    const buffer = new Uint8Array(64 * 1024);
    let received = 0;
    let stored = 0;
    try {
      while (true) {
        const n = await conn.read(buffer);
        if (n === null) break;
        const batch = splitter.push(buffer.subarray(0, n));
        for (const line of batch.lines) {
          const message = parsePeerMessage(splitFields(_decoder.decode(line)));
          if (message.kind === "ACK") this.#acknowledged(message.seq);
          else if (message.kind === "RECORD") {
            received++;
            if (this.#options.source.catchUp(message.record, this.neighbour)) stored++;
          } else if (message.kind === "DIGEST") {
            this.#reconciled(message.digest, received, stored);
            received = stored = 0;
          } else {
            log.peer.warning("Unexpected line from {neighbour}: {line}", {
              neighbour: this.neighbour,
              line: _decoder.decode(line).slice(0, 200),
            });
          }
        }
        if (batch.overflow) break;
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

  /** The neighbour's digest came back after its records: send ours for the buckets that still differ. */
  #reconciled(digest: Uint32Array, received: number, stored: number): void {
    const buckets = differingBuckets(this.#options.source.digestWords(), digest);
    const records = this.#options.source.inBuckets(buckets);
    for (const record of records) this.enqueue(record);
    log.peer.info(
      "Reconciled with {neighbour}: received {received} records, stored {stored}; sending {sent} from {buckets} buckets",
      { neighbour: this.neighbour, received, stored, sent: records.length, buckets: buckets.size },
    );
  }

  #acknowledged(seq: number): void {
    const sent = this.#sent.get(seq);
    if (sent === undefined) return;
    this.#sent.delete(seq);
    if (this.#lagging && performance.now() - sent.sentAt < this.#options.ackTimeoutMs) {
      this.#lagging = false;
      log.peer.info("Link to {neighbour} caught up", { neighbour: this.neighbour });
    }
    for (const waiter of sent.waiters) _release(waiter);
  }

  #sweep(): void {
    const now = performance.now();
    let expired = false;
    this.#waiting = this.#waiting.filter((waiter) => {
      if (waiter.done) return false;
      if (waiter.deadline > now) return true;
      _release(waiter);
      expired = true;
      return false;
    });
    if (expired && !this.#lagging && this.#conn !== undefined) {
      this.#lagging = true;
      log.peer.warning(
        "Link to {neighbour} is lagging: a record went unacknowledged; not waiting on it until it catches up",
        {
          neighbour: this.neighbour,
        },
      );
    }
    // Sent records are kept only long enough to notice the neighbour catching up.
    const cutoff = now - this.#options.ackTimeoutMs;
    for (const [seq, sent] of this.#sent) {
      if (sent.sentAt >= cutoff) break;
      this.#sent.delete(seq);
    }
    if (this.#waiting.length === 0 && this.#sent.size === 0) {
      clearInterval(this.#sweeper);
      this.#sweeper = undefined;
    }
  }

  #dropAll(): void {
    for (const entry of this.#queue.values()) entry.waiters.forEach(_release);
    for (const sent of this.#sent.values()) sent.waiters.forEach(_release);
    this.#waiting.forEach(_release);
    this.#queue.clear();
    this.#sent.clear();
    this.#waiting = [];
    this.#lagging = false;
    clearInterval(this.#sweeper);
    this.#sweeper = undefined;
  }

  #sleep(ms: number): Promise<void> {
    if (this.#closed) return Promise.resolve();
    return new Promise<void>((resolve) => {
      this.#retry = {
        timer: setTimeout(() => {
          this.#retry = undefined;
          resolve();
        }, ms),
        resolve: () => {
          this.#retry = undefined;
          resolve();
        },
      };
    });
  }
}

function _release(waiter: _Waiter): void {
  if (waiter.done) return;
  waiter.done = true;
  waiter.resolve();
}
