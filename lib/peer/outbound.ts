/**
 * One persistent outbound link to a neighbour's peer port, over TLS that
 * proves the neighbour is who we meant to reach (peer/transport.ts). Records wait in
 * a queue coalesced by client (so a slow or frozen neighbour costs at most
 * one pending record per client), go out in batches, one write each, and
 * live ones are acknowledged by the neighbour (peer/acks.ts). A quiet link
 * sends `PING` and is closed when the neighbour says nothing for
 * `peers.heartbeatTimeoutMs` (peer/heartbeat.ts). The link reconnects with
 * exponential backoff and jitter when it drops, and starts a
 * reconciliation when it comes up (peer/reconcile.ts).
 */

import { setImmediate } from "node:timers";
import { metrics } from "../admin/metrics.ts";
import { cutForLog, log, quote } from "../logging.ts";
import { traffic } from "../traffic_log.ts";
import { LineSocket } from "../net/line_socket.ts";
import type { LocationRecord } from "../protocol.ts";
import { type AckTicket, AckTracker } from "./acks.ts";
import type { PeerHost } from "./host.ts";
import type { PeerTransport } from "./transport.ts";
import { BulkWindow } from "./bulk_window.ts";
import { Heartbeat } from "./heartbeat.ts";
import { configRefusal, RefusedRecords } from "./refused_records.ts";
import {
  formatHello,
  formatMark,
  formatMarked,
  parsePeerMessage,
  PEER_MAX_LINE_BYTES,
  PING_LINE,
  pushRecord,
} from "./wire.ts";

/** Options for {@linkcode PeerLink}. */
export interface PeerLinkOptions {
  /** The server this link belongs to. */
  host: PeerHost;
  /** How to dial: TLS that checks the neighbour's certificate, or plain text. */
  transport: PeerTransport;
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
  /** How often a quiet link sends `PING`, in milliseconds (peer/heartbeat.ts). */
  heartbeatMs: number;
  /** A link that hears nothing from the neighbour this long is closed, in milliseconds. */
  heartbeatTimeoutMs: number;
  /** How long a session's first marks may all go unanswered (bulk_window.ts); `BULK_MARK_PATIENCE_MS` by default. */
  markPatienceMs?: number;
  /** Called when the link comes up, goes down, turns lagging or catches up. */
  onStateChange?: () => void;
  /** Lines written right after `HELLO` on each new session (the link state we hold, peer/tree.ts). */
  greeting?: () => string;
}

interface _Entry {
  record: LocationRecord;
  waitMs: number;
  /** The waits on this record. */
  ticket: AckTicket | undefined;
}

/**
 * How long a session must last before the link counts as in use for the
 * broadcast trees (peer/tree.ts): a link that drops as soon as it comes up
 * (a neighbour that refuses us, a flapping network) would otherwise be put
 * in the trees and taken out again on every retry, and lose what went over
 * it each time.
 */
const _PROVEN_MS = 1000;
/** How often an exchange put off (see {@linkcode PeerLink.reconcile}) is looked at again, in milliseconds. */
const _RECONCILE_RECHECK_MS = 250;
/** How long an exchange of ours may go unanswered before another may start anyway, in milliseconds. */
const _UNANSWERED_PATIENCE_MS = 30_000;
/** Past this many queued records, a write takes about {@linkcode _CATCH_UP_SLICE_BYTES} of them, not all. */
const _QUEUE_SLICE_RECORDS = 1024;
/** About how much of a reconciliation's records goes with one write (the acceptor's answer is written in such slices too). */
const _CATCH_UP_SLICE_BYTES = 64 * 1024;

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
  #quotedNeighbour: string;
  #options: PeerLinkOptions;
  #host: PeerHost;
  #conn: LineSocket | undefined;
  /** Live records waiting to go, by client: numbered, and acknowledged when waited on. */
  #queue = new Map<string, _Entry>();
  /**
   * Reconciliation records passed on (a catch-up from another neighbour),
   * by client: plain AT lines, bulk work held back with our side of an
   * exchange while the neighbour's answers to our marks lag (bulk_window.ts).
   */
  #passOn = new Map<string, LocationRecord>();
  /**
   * Our side of a reconciliation still to send, as the store is walked: a
   * slice of it with each write, so that a catch-up of a million records
   * is never one string, nor one stall of the server.
   */
  #catchUp: Iterator<string> | undefined;
  #acks: AckTracker;
  #seq = 0;
  /** Link state for the next write, ahead of its records: the latest report of each server, as its line. */
  #control = new Map<string, string>();
  #digestDue = false;
  /** The greatest `MARK` of the neighbour's handled this turn (its answer's slices), answered at its end; 0: none. */
  #markedDue = 0;
  /** Our reconciliation records' slices in flight this session (bulk_window.ts). */
  #window = new BulkWindow();
  /** Our digests sent this session whose answer (the neighbour's `DIGEST <hex>`) has not come yet. */
  #digestsAwaited = 0;
  /** When this link last started a reconciliation (`performance.now()`, and wall-clock ms for status). */
  #reconciledAt = -Infinity;
  #lastReconciliation: number | undefined;
  /** A repair waiting for {@linkcode PeerLink.repair}'s gap, and when it was asked for (`performance.now()`). */
  #repairTimer: ReturnType<typeof setTimeout> | undefined;
  /** An exchange put off by {@linkcode PeerLink.reconcile}, looked at again when this fires. */
  #reconcileLater: ReturnType<typeof setTimeout> | undefined;
  #repairAskedAt = 0;
  #closed = false;
  /** Whether this session has lasted {@linkcode _PROVEN_MS}, and the timer that says so. */
  #proven = false;
  #provenTimer: ReturnType<typeof setTimeout> | undefined;
  /** Whether the neighbour has said anything in this session (a connection into a black hole says nothing). */
  #heard = false;
  /** Why the neighbour refused this session's `HELLO`, if it did; whether it refused the last one. */
  #refusedFor: string | undefined;
  #refusedBefore = false;
  /** Whether this session's "is up" waits for the neighbour's first answer (see {@linkcode PeerLink.#session}). */
  #upUnsaid = false;
  /** Whether {@linkcode _PROVEN_MS} passed before the neighbour said anything: proven when it does. */
  #provenWhenHeard = false;
  #wake: (() => void) | undefined;
  #wakeScheduled = false;
  #retry: { timer: ReturnType<typeof setTimeout>; resolve: () => void } | undefined;
  #running: Promise<void> | undefined;
  /** When (`performance.now()`) this session last wrote to the neighbour. */
  #lastWrite = 0;
  /** The last record queued to be acknowledged: what a lagging link sends again to see whether it caught up. */
  #lastAcknowledged: LocationRecord | undefined;

  /** A link that dials once {@linkcode PeerLink.start} is called. */
  constructor(options: PeerLinkOptions) {
    this.neighbour = options.neighbour;
    this.#quotedNeighbour = quote(options.neighbour);
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
          // Counted on again only after another second of keeping up: a link whose acknowledgements hover about the
          // deadline would otherwise go in and out of the trees, and its link state round the herd, each time.
          this.#prove();
          // Our digest may have gone where the acknowledgements went: an exchange it started would stay unanswered
          // (putting ours off for _UNANSWERED_PATIENCE_MS, and the neighbour's answered with our digest alone).
          if (this.#host.reconciler.forgetUnanswered(this.neighbour)) {
            log.peer.info("Reconciling with {neighbour} again: our exchange went unanswered while the link lagged", {
              neighbour: this.neighbour,
            });
            this.reconcile();
          }
        }
        options.onStateChange?.();
      },
    });
  }

  /** Whether the link is connected. */
  get up(): boolean {
    return this.#conn !== undefined;
  }

  /** Records waiting to be written: at most one per client. */
  get queued(): number {
    return this.#queue.size + this.#passOn.size;
  }

  /** Whether the neighbour is connected but has stopped acknowledging in time. */
  get lagging(): boolean {
    return this.#acks.lagging;
  }

  /**
   * Whether the broadcast trees may count on the link: up for a while
   * ({@linkcode _PROVEN_MS}) and keeping up. A link that is up but not in
   * use still gets every record sent past it (peer/links.ts).
   */
  get inUse(): boolean {
    return this.#conn !== undefined && this.#proven && !this.#acks.lagging;
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

  /** When (wall-clock ms) this link last started a reconciliation, if it did. */
  get lastReconciliation(): number | undefined {
    return this.#lastReconciliation;
  }

  /** Acknowledgements being waited on. */
  get ackWaits(): number {
    return this.#acks.waiting;
  }

  /** Milliseconds since this link last started a reconciliation. */
  get sinceReconciled(): number {
    return performance.now() - this.#reconciledAt;
  }

  /**
   * Starts a reconciliation: our digest goes out with the next write. While
   * one would only have records sent twice (our side of an exchange still
   * being written, one of ours still unanswered, or the neighbour's being
   * answered or just answered: `Reconciler.shouldStart`), it starts
   * once that is over, looked at every {@linkcode _RECONCILE_RECHECK_MS}:
   * put off, never dropped, as what we stored meanwhile is in no exchange
   * yet. Dropped only when another exchange began on the link meanwhile.
   */
  reconcile(): void {
    if (this.#conn === undefined) return;
    const reconciler = this.#host.reconciler;
    // One of ours unanswered: a second would have the neighbour send again what the first is bringing (but a
    // neighbour that never answers does not stop us for good; one whose answer is coming, however slowly, does, until
    // nothing of it has come for as long).
    const ours = reconciler.underway(this.neighbour) &&
      (this.sinceReconciled < _UNANSWERED_PATIENCE_MS ||
        (reconciler.beingAnswered(this.neighbour) &&
          reconciler.heardRecordsWithin(this.neighbour, _UNANSWERED_PATIENCE_MS)));
    if (this.#catchUp === undefined && !ours && reconciler.shouldStart(this.neighbour)) {
      this.#digestDue = true;
      this.#wake?.();
      return;
    }
    if (this.#reconcileLater !== undefined) return;
    const conn = this.#conn;
    const askedAt = performance.now();
    this.#reconcileLater = setTimeout(() => {
      this.#reconcileLater = undefined;
      if (this.#conn === conn && this.#reconciledAt < askedAt) this.reconcile();
    }, _RECONCILE_RECHECK_MS);
  }

  /**
   * Starts a reconciliation to repair what the neighbour may lack, once
   * `gapMs` have passed since this link's last one (at once if they have):
   * asked for when the neighbour came to hang below us in a broadcast tree
   * (peer/links.ts). Repairs asked for while one waits are the same one, and
   * one is dropped when an exchange began on the link after it was asked for
   * (that one compared the stores since). Nothing without a session.
   */
  repair(gapMs: number): void {
    if (this.#conn === undefined || this.#repairTimer !== undefined) return;
    this.#repairAskedAt = performance.now();
    const start = () => {
      this.#repairTimer = undefined;
      if (this.#reconciledAt >= this.#repairAskedAt || this.#conn === undefined) return;
      metrics.reconciliationRepairs.inc();
      log.peer.info("Reconciling with {neighbour}: it hangs below us in a broadcast tree it did not before", {
        neighbour: this.neighbour,
      });
      this.reconcile();
    };
    const wait = gapMs - this.sinceReconciled;
    if (wait <= 0) start();
    else this.#repairTimer = setTimeout(start, wait);
  }

  /**
   * Queues a live record, numbered, for the neighbour. With `waitMs` > 0 the
   * neighbour acknowledges it, and `release` (if given) is called once, then
   * or after `waitMs`; returns whether it will be: not when there is nothing
   * to wait for, `waitMs` being 0 (the record is not acknowledged), the link
   * down (the record is skipped) or lagging (it still goes).
   */
  sendAcknowledged(record: LocationRecord, waitMs: number, release?: () => void): boolean {
    if (this.#conn === undefined) return false;
    // A record passed on for the client is older: this one goes in its place, live.
    this.#passOn.delete(record.clientId);
    let entry = this.#queue.get(record.clientId);
    if (entry === undefined) {
      entry = { record, waitMs, ticket: undefined };
      this.#queue.set(record.clientId, entry);
    } else {
      entry.record = record;
      entry.waitMs = Math.max(entry.waitMs, waitMs);
    }
    this.#wakeSoon();
    if (waitMs > 0) this.#lastAcknowledged = record;
    if (release === undefined || waitMs <= 0 || this.#acks.lagging) return false;
    entry.ticket ??= this.#acks.ticket();
    this.#acks.wait(entry.ticket, waitMs, release);
    return true;
  }

  /**
   * At each heartbeat while the link is lagging, with nothing queued: the
   * last record we had acknowledged, sent again to be acknowledged. The
   * neighbour holds it (or takes it: it is a record like any other) and
   * answers at once, so an answer within `ackTimeoutMs` is the link catching
   * up ({@linkcode AckTracker}'s rule), whether or not our server takes
   * another IAMAT: until it does, IAMAT replies would not wait on this
   * neighbour, nor the trees count on the link. One record a heartbeat, and
   * none while the neighbour keeps up.
   */
  #probeIfLagging(): void {
    const record = this.#lastAcknowledged;
    // Records passed on wait for no acknowledgement and may be held (the window): they are no reason not to probe, but
    // a newer one of the same client must not be replaced by the older probe.
    if (!this.#acks.lagging || record === undefined || this.#queue.size > 0 || this.#passOn.has(record.clientId)) {
      return;
    }
    metrics.laggingProbes.inc();
    this.sendAcknowledged(record, this.#options.ackTimeoutMs);
  }

  /** The link counts for the trees {@linkcode _PROVEN_MS} from now, if the session lasts and keeps up. */
  #prove(): void {
    this.#proven = false;
    this.#provenWhenHeard = false;
    clearTimeout(this.#provenTimer);
    this.#provenTimer = setTimeout(() => {
      // A plain-text connection into a black hole is up (the first hop accepted it) but the neighbour never answers:
      // not counted on before it says something (the PING after HELLO asks it to at once).
      if (!this.#heard) {
        this.#provenWhenHeard = true;
        return;
      }
      this.#proven = true;
      this.#options.onStateChange?.();
    }, _PROVEN_MS);
  }

  /**
   * Queues `server`'s link state report (its line) for the next write, ahead
   * of its records, in place of one of the same server still waiting;
   * dropped when the link is down (the next session's greeting has it).
   */
  sendLinks(server: string, line: string): void {
    if (this.#conn === undefined) return;
    this.#control.set(server, line);
    this.#wakeSoon();
  }

  /**
   * Queues a reconciliation record: sent as a plain AT line, never
   * acknowledged, nobody waits. Skipped when the link is down (the next
   * reconciliation covers it).
   */
  sendUnacknowledged(record: LocationRecord): void {
    if (this.#conn === undefined) return;
    // The store's record: never older than one already queued. A live one waiting keeps its place, and its waits.
    const entry = this.#queue.get(record.clientId);
    if (entry === undefined) this.#passOn.set(record.clientId, record);
    else entry.record = record;
    this.#wakeSoon();
  }

  /**
   * Sends `lines` (AT lines, a reconciliation's records) as plain records,
   * a slice of about {@linkcode _CATCH_UP_SLICE_BYTES} with each write, read
   * from `lines` only as they are sent; in place of a walk not finished
   * (the newer covers what the neighbour still lacks). Dropped when the
   * link is down (the next reconciliation covers it).
   */
  sendCatchUp(lines: Iterable<string>): void {
    this.#catchUp?.return?.();
    this.#catchUp = undefined;
    if (this.#conn === undefined) return;
    this.#catchUp = lines[Symbol.iterator]();
    this.#wakeSoon();
  }

  /**
   * The neighbour's `MARK <n>`, every line before it handled: answered at
   * the end of this turn, for the greatest mark of the turn, with a write of
   * its own (not behind records still queued, nor after a wait for the
   * socket to drain).
   */
  markHandled(n: number): void {
    const conn = this.#conn;
    if (conn === undefined) return;
    const scheduled = this.#markedDue > 0;
    this.#markedDue = Math.max(this.#markedDue, n);
    if (scheduled) return;
    setImmediate(() => {
      // A session begun since has marks of its own: its own answer goes for them.
      if (conn !== this.#conn) return;
      const due = this.#markedDue;
      this.#markedDue = 0;
      if (due === 0 || conn.isClosed) return;
      this.#lastWrite = performance.now();
      conn.write(formatMarked(due));
    });
  }

  /** The neighbour's `MARKED <n>`; false if it answers no mark of ours of this session that was still unanswered. */
  markAnswered(n: number): boolean {
    if (!this.#window.answered(n)) return false;
    this.#wakeSoon();
    return true;
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
    this.#conn?.destroy();
    await this.#running;
    // What the link logged as it closed goes to the log file now, not on the traffic log's timer, which would outlive
    // it (a test's timer sanitizer saw one, about once in five runs of peer_link_test.ts on a busy machine).
    traffic.flush();
  }

  /** Dials, serves a session while the link lasts, and dials again after a pause, until closed. */
  async #run(): Promise<void> {
    const { dialHost, dialPort, reconnectMinMs, reconnectMaxMs } = this.#options;
    const backoff = new _Backoff(reconnectMinMs, reconnectMaxMs);
    /** Why the link was last said to be down: a new reason is logged, the same one again is not. */
    let announced: string | undefined;
    let wasUp = false;
    while (!this.#closed) {
      let socket: Awaited<ReturnType<PeerTransport["dial"]>>;
      try {
        socket = await this.#options.transport.dial(dialHost, dialPort, this.neighbour);
      } catch (error) {
        const reason = (error as Error).message;
        if (reason !== announced) {
          // Neighbours starting after us is normal; a link that was up and cannot come back, or a neighbour that
          // cannot prove who it is, is worth a warning.
          log.peer[(wasUp || announced !== undefined) && this.#host.stopping !== true ? "warning" : "info"](
            "Link to {neighbour} at {host}:{port} is down: {error}; retrying with backoff",
            { neighbour: this.neighbour, host: dialHost, port: dialPort, error: reason },
          );
          announced = reason;
        }
        await this.#sleep(backoff.next());
        continue;
      }
      if (this.#closed) {
        socket.destroy();
        break;
      }
      wasUp = true;
      const began = performance.now();
      this.#refusedFor = undefined;
      await this.#session(socket);
      this.#refusedBefore = this.#refusedFor !== undefined;
      if (this.#refusedFor !== undefined && !this.#closed) {
        // Its config and ours differ (a link added on our side first): a long wait, not a redial every
        // reconnectMaxMs; it dials us once its config has the link, and we dial again then (retryNow).
        const waitMs = Math.max(_REFUSED_RETRY_MS, reconnectMaxMs);
        const reason = `refused: ${this.#refusedFor}`;
        if (reason !== announced) {
          log.peer.warning(
            "{neighbour} refused our link ({reason}): its config does not have us as a neighbour, ours has it; " +
              "dialling again every {seconds} s, or when it dials us",
            { neighbour: this.neighbour, reason: this.#refusedFor, seconds: Math.round(waitMs / 1000) },
          );
          announced = reason;
        }
        await this.#sleep(waitMs);
        continue;
      }
      announced = undefined;
      // A neighbour that accepts and drops us at once (refusing our HELLO, or cut by a proxy) must not be
      // redialled in a tight loop: only a session that lasted, and in which the neighbour said something, resets the
      // backoff (a plain-text connection into a black hole lasts until the heartbeat gives up on it, silent).
      if (performance.now() - began >= reconnectMaxMs && this.#heard) backoff.reset();
      else if (!this.#closed) await this.#sleep(backoff.next());
    }
  }

  async #session(socket: Awaited<ReturnType<PeerTransport["dial"]>>): Promise<void> {
    const replies = new _Replies(this, this.#host, () => conn.destroy());
    this.#heard = false;
    this.#digestsAwaited = 0;
    const { heartbeatMs, heartbeatTimeoutMs } = this.#options;
    const heartbeat = new Heartbeat({
      intervalMs: heartbeatMs,
      timeoutMs: heartbeatTimeoutMs,
      onTick: (silentMs) => {
        this.#probeIfLagging();
        if (this.#window.giveUpIfUnanswered(performance.now(), this.#options.markPatienceMs)) {
          log.peer.warning(
            "{neighbour} answered none of the marks in our reconciliation records on our link (a server of an older " +
              "version?): sending them on that link without waiting for answers",
            { neighbour: this.neighbour },
          );
          this.#wakeSoon();
        }
        // Asked when the neighbour has been quiet, and also when we have: the neighbour judges our silence by what
        // we write (a long reconciliation answer from it is heard here while it hears nothing from us).
        const now = performance.now();
        if (silentMs < heartbeatMs / 2 && now - this.#lastWrite < heartbeatMs / 2) return;
        this.#lastWrite = now;
        conn.write(PING_LINE);
      },
      onSilent: (silentMs) => {
        metrics.silentLinksTo.inc();
        log.peer.warning("Link to {neighbour} heard nothing for {ms} ms; closing it", {
          neighbour: this.neighbour,
          ms: Math.round(silentMs),
        });
        conn.destroy();
      },
    });
    const conn = new LineSocket(socket, {
      maxLineBytes: PEER_MAX_LINE_BYTES,
      onLines: (lines) => {
        heartbeat.heard();
        this.#heard = true;
        if (this.#upUnsaid && !lines[0].startsWith("REFUSED")) {
          this.#upUnsaid = false;
          log.peer.info("Link to {neighbour} is up", { neighbour: this.neighbour });
        }
        if (this.#provenWhenHeard) {
          this.#provenWhenHeard = false;
          this.#proven = true;
          this.#options.onStateChange?.();
        }
        if (replies.handle(lines)) {
          conn.bulk();
          this.#host.reconciler.caughtUpFrom(this.neighbour);
        }
      },
      onOverflow: () => {
        log.peer.warning("Link to {neighbour}: the neighbour sent an over-long line; closing", {
          neighbour: this.neighbour,
        });
      },
    });
    this.#conn = conn;
    this.#control.clear();
    this.#host.reconciler.forget(this.neighbour);
    this.#digestDue = false;
    this.#markedDue = 0;
    this.#window = new BulkWindow();
    this.reconcile();
    // After a refusal, said once the neighbour answers otherwise: a link it refuses again is not "up" every 30 s.
    this.#upUnsaid = this.#refusedBefore;
    if (!this.#upUnsaid) log.peer.info("Link to {neighbour} is up", { neighbour: this.neighbour });
    conn.closed.then(() => this.#wake?.());
    this.#options.onStateChange?.();
    this.#prove();
    // A PING at once: the neighbour's PONG is the first sign that the link works (see #prove()).
    conn.write(formatHello(this.#host.name) + PING_LINE + (this.#options.greeting?.() ?? ""));
    this.#lastWrite = performance.now();
    // The greeting has every report we hold, our own new one (queued just now) among them.
    this.#control.clear();
    await this.#writeLoop(conn);
    this.#window.close();
    heartbeat.stop();
    conn.destroy();
    await conn.closed;
    replies.close();
    if (conn.error !== undefined && !this.#closed) {
      log.peer[this.#host.stopping === true ? "info" : "warning"]("Link to {neighbour} failed: {error}", {
        neighbour: this.neighbour,
        error: conn.error.message,
      });
    }
    this.#conn = undefined;
    clearTimeout(this.#provenTimer);
    // A repair dies with its session: the next one reconciles as it comes up.
    clearTimeout(this.#repairTimer);
    this.#repairTimer = undefined;
    clearTimeout(this.#reconcileLater);
    this.#reconcileLater = undefined;
    this.#proven = false;
    this.#provenWhenHeard = false;
    this.#control.clear();
    this.#queue.clear();
    this.#passOn.clear();
    this.#host.reconciler.dropped(this.neighbour);
    this.#catchUp?.return?.();
    this.#catchUp = undefined;
    this.#acks.reset();
    this.#options.onStateChange?.();
    if (this.#refusedFor !== undefined || this.#upUnsaid) return; // said by #run, once; or never said to be up
    log.peer[this.#closed || this.#host.stopping === true ? "info" : "warning"]("Link to {neighbour} is down", {
      neighbour: this.neighbour,
    });
  }

  /** The neighbour answered our `HELLO` with `REFUSED <reason>`: its config does not have us as a neighbour. */
  refusedBy(reason: string): void {
    this.#refusedFor = reason;
  }

  /** Writes what is queued, one write per batch, until the link drops or closes. */
  async #writeLoop(conn: LineSocket): Promise<void> {
    while (!this.#closed && !conn.isClosed) {
      // Reconciliation records (our side of an exchange, records passed on from another's) go only while the
      // neighbour has answered enough of their marks (bulk_window.ts); live records and the rest go at once.
      const bulkMay = this.#window.open;
      if (
        this.#control.size === 0 && !this.#digestDue && this.#queue.size === 0 &&
        (!bulkMay || (this.#passOn.size === 0 && this.#catchUp === undefined))
      ) {
        await new Promise<void>((resolve) => this.#wake = resolve);
        this.#wake = undefined;
        continue;
      }
      // The batch's text in pieces, joined once: one flat string, not a string per record and a rope of them.
      // Link state first: a record must not overtake the link state it was routed by (peer/tree.ts).
      const parts: (string | number)[] = [...this.#control.values()];
      this.#control.clear();
      if (this.#digestDue) {
        this.#digestDue = false;
        this.#reconciledAt = performance.now();
        this.#lastReconciliation = Date.now();
        metrics.reconciliationsStarted.inc();
        this.#digestsAwaited++;
        parts.push(this.#host.reconciler.request(this.neighbour));
        this.#host.reconciler.started(this.neighbour);
      }
      const now = performance.now();
      let live = 0;
      let catchingUp = 0;
      // A queue grown large (a neighbour that reads slowly) goes in slices, in order, so that it is never one string;
      // a usual one goes whole, with one clear(). Bulk work then takes a slice's worth (what a sliced queue left of it).
      const sliced = this.#queue.size > _QUEUE_SLICE_RECORDS;
      let bytes = 0;
      for (const [clientId, entry] of this.#queue) {
        if (sliced) {
          if (bytes > _CATCH_UP_SLICE_BYTES) break;
          bytes += entry.record.line.length + 24;
          this.#queue.delete(clientId);
        }
        const seq = ++this.#seq;
        live++;
        // Sent with no wait, a record is not acknowledged (see wire.ts).
        if (entry.waitMs > 0) this.#acks.sent(seq, entry.ticket, now);
        pushRecord(parts, entry.record, seq, entry.waitMs);
      }
      if (!sliced) this.#queue.clear();
      let paused = false;
      if (bulkMay) {
        for (const [clientId, record] of this.#passOn) {
          if (bytes > _CATCH_UP_SLICE_BYTES) break;
          bytes += record.line.length + 1;
          this.#passOn.delete(clientId);
          catchingUp++;
          parts.push(record.line, "\n");
        }
      }
      if (this.#catchUp !== undefined && bulkMay) {
        while (bytes < _CATCH_UP_SLICE_BYTES) {
          const next = this.#catchUp.next();
          if (next.done) {
            this.#catchUp = undefined;
            break;
          }
          // A pause of the store's walk (every 16,384 clients walked): what we have goes now, the rest in a later turn.
          if (next.value === "") {
            paused = true;
            break;
          }
          catchingUp++;
          bytes += next.value.length + 1;
          parts.push(next.value, "\n");
        }
      }
      if (catchingUp > 0 && this.#window.marking) parts.push(formatMark(this.#window.mark()));
      if (parts.length === 0) {
        // A walk that found nothing more leaves nothing to write, nor to log; one that paused goes on in a later turn.
        if (paused) await new Promise((resolve) => setTimeout(resolve, 0));
        continue;
      }
      const text = parts.join("");
      // A write is logged as a count when it carries reconciliation records (logged nowhere else); live records are
      // each a line of their own already, with where they went (links.ts), so a write of them alone only at debug.
      if (catchingUp > 0 || (live > 0 && traffic.debug)) {
        const also = catchingUp > 0 ? `, ${catchingUp} catching up` : "";
        const level = catchingUp > 0 ? "INF" : "DBG";
        traffic.event(
          "peer",
          `To ${this.#quotedNeighbour}: ${live} ${live === 1 ? "record" : "records"}${also}`,
          level,
        );
      }
      if (catchingUp > 0) this.#host.reconciler.sentRecordsTo(this.neighbour);
      // A neighbour that does not read holds the writer here; the queue meanwhile keeps one record per client.
      this.#lastWrite = performance.now();
      if (!conn.write(text)) await conn.drained();
      // The next slice in a later turn, whatever the socket took: clients and the other links between slices.
      else if (this.#catchUp !== undefined || sliced || (this.#passOn.size > 0 && this.#window.open)) {
        await new Promise((resolve) => setTimeout(resolve, 0));
      }
    }
  }

  /** Whether a digest of ours awaits the neighbour's answer. */
  get awaitingDigest(): boolean {
    return this.#digestsAwaited > 0;
  }

  /** Whether a digest of the neighbour's answers one of ours (taking it off those awaited), or comes unasked. */
  takeAwaitedDigest(): boolean {
    if (this.#digestsAwaited === 0) return false;
    this.#digestsAwaited--;
    return true;
  }

  /** A neighbour's acknowledgement. */
  acknowledged(seq: number): void {
    this.#acks.acknowledged(seq);
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

/** The least wait before dialling a neighbour that refused our `HELLO` again, in milliseconds. */
const _REFUSED_RETRY_MS = 30_000;

/** Unexpected lines a neighbour may send back on our link before we close it (as inbound.ts's bad lines). */
const _MAX_UNEXPECTED_LINES = 16;

/**
 * What the neighbour sends back on our link: acknowledgements, and its side
 * of a reconciliation (its records, then its digest, once for each digest of
 * ours). Anything else is logged, quoted and cut, and dropped, and a link
 * that keeps sending it is closed: a digest nobody asked for would have us
 * walk the store and send what it lacks, as often as the neighbour likes.
 */
class _Replies {
  #link: PeerLink;
  #host: PeerHost;
  #close: () => void;
  #received = 0;
  #stored = 0;
  #unexpected = 0;
  /** Records our rules refuse: never a reason to close. */
  #refusedRecords: RefusedRecords;

  constructor(link: PeerLink, host: PeerHost, close: () => void) {
    this.#link = link;
    this.#host = host;
    this.#close = close;
    this.#refusedRecords = new RefusedRecords(
      () => link.neighbour,
      " on our link",
      (line) => host.reconciler.refused(link.neighbour, line),
    );
  }

  /** The link is closed. */
  close(): void {
    this.#refusedRecords.close();
  }

  /** Handles one read's lines; whether they held records of a reconciliation (bulk work: see LineSocket.bulk()). */
  handle(lines: string[]): boolean {
    const link = this.#link;
    const host = this.#host;
    let bulk = false;
    let refusal: string | undefined;
    let late = 0;
    let lateStored = 0;
    for (const line of lines) {
      if (this.#unexpected >= _MAX_UNEXPECTED_LINES) return false;
      const message = parsePeerMessage(line, host.recordRules);
      // SKIP: the neighbour will not hold that record (its config refuses it); the wait on it ends as on an ACK.
      if (message.kind === "ACK" || message.kind === "SKIP") link.acknowledged(message.seq);
      else if (message.kind === "PONG") continue; // heard: that is all a heartbeat asks
      else if (message.kind === "MARK") link.markHandled(message.n);
      else if (message.kind === "MARKED" && link.markAnswered(message.n)) continue;
      else if (message.kind === "REFUSED") {
        link.refusedBy(cutForLog(message.reason, 64));
        this.#close();
        return false;
      } else if (message.kind === "RECORD" && message.seq === undefined) {
        bulk = true;
        if (!link.awaitingDigest || !host.reconciler.hasUnderway(link.neighbour)) {
          // The neighbour's side of an exchange of its own we answered, sent late (inbound.ts, InboundLink.#owe); or
          // records of an answer to an exchange of ours taken for lost, which its digest, should it come, still ends.
          late++;
          if (host.catchUp(message.record, link.neighbour)) lateStored++;
          continue;
        }
        if (this.#received++ === 0) host.reconciler.receiving(link.neighbour);
        if (host.catchUp(message.record, link.neighbour)) this.#stored++;
      } else if (message.kind === "DIGEST" && link.takeAwaitedDigest()) {
        link.sendCatchUp(host.reconciler.finish(link.neighbour, message.digest, this.#received, this.#stored));
        this.#received = this.#stored = 0;
      } else if (message.kind === "empty") {
        continue;
      } else if ((refusal = configRefusal(message, line)) !== undefined) {
        // A record of the neighbour's store that our config refuses: dropped, as the acceptor does, but not a reason to
        // close: it would come back at each exchange (peer/refused_records.ts).
        this.#refusedRecords.drop(refusal, line);
      } else {
        this.#unexpected++;
        log.peer.warning("Unexpected line from {neighbour} on our link: {line}", {
          neighbour: link.neighbour,
          line: cutForLog(line),
        });
        if (this.#unexpected === _MAX_UNEXPECTED_LINES) {
          log.peer.warning("Closing our link to {neighbour}: {count} lines it should not have sent", {
            neighbour: link.neighbour,
            count: this.#unexpected,
          });
          this.#close();
          return false;
        }
      }
    }
    if (late > 0) {
      metrics.reconciliationReceived.inc(late);
      log.peer.info(
        "From {neighbour} on our link, its side of its exchange, late: received {count} records, stored {stored}",
        {
          neighbour: link.neighbour,
          count: late,
          stored: lateStored,
        },
      );
    }
    return bulk;
  }
}
