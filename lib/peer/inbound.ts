/**
 * One inbound peer connection: a neighbour's link to us. With TLS its
 * certificate has already proved which server it is (peer/transport.ts);
 * its first line must be `HELLO <that name>`, from a configured neighbour,
 * within a few seconds. Then each live record is checked, offered to the
 * server and acknowledged once handled, each reconciliation record is
 * offered too, and each `DIGEST` is answered (peer/reconcile.ts). Lines a
 * neighbour could not have sent are logged (quoted and cut) and dropped; a
 * link that keeps sending them, or stops reading what we send, is closed.
 */

import { setImmediate } from "node:timers";
import { metrics } from "../admin/metrics.ts";
import { cutForLog, log, quote } from "../logging.ts";
import { LogBudget } from "../log_budget.ts";
import { traffic } from "../traffic_log.ts";
import { LineSocket } from "../net/line_socket.ts";
import type { LocationRecord } from "../protocol.ts";
import type { PeerHost } from "./host.ts";
import type { AcceptedPeer } from "./transport.ts";
import { BulkWindow } from "./bulk_window.ts";
import { Heartbeat } from "./heartbeat.ts";
import { configRefusal, RefusedRecords } from "./refused_records.ts";
import {
  formatMark,
  formatMarked,
  NOT_A_NEIGHBOUR_LINE,
  parsePeerMessage,
  PEER_MAX_LINE_BYTES,
  type PeerMessage,
  PONG_LINE,
  pushAck,
} from "./wire.ts";

/** Options for {@linkcode servePeer}. */
export interface InboundOptions {
  /** How long a dialler has to introduce itself (`HELLO`), in milliseconds. */
  helloTimeoutMs: number;
  /** The least time between two full reconciliations a link may ask for, in milliseconds. */
  minExchangeIntervalMs: number;
  /** How often the link's silence is looked at, in milliseconds: `peers.heartbeatMs` (peer/heartbeat.ts). */
  heartbeatMs: number;
  /** A link that sends nothing this long once introduced is closed, in milliseconds: `peers.heartbeatTimeoutMs`. */
  heartbeatTimeoutMs: number;
  /**
   * The server's links from each neighbour, one per neighbour, shared by all
   * its inbound links: a neighbour has one link dialled to us at a time, so
   * a new one's `HELLO` closes the one before (gone on its side, or not
   * theirs). One certificate cannot hold more links than that.
   */
  current: Map<string, { close(): void }>;
  /** How long a link's first marks may all go unanswered (bulk_window.ts); `BULK_MARK_PATIENCE_MS` by default. */
  markPatienceMs?: number;
}

/** How long a link dialled to us must last before our link state counts it, in milliseconds (as outbound.ts's). */
const _LIVE_AFTER_MS = 1000;

/** How long a dialer told it is not a neighbour has to close its end before we close ours, in milliseconds. */
const _REFUSED_LINGER_MS = 1000;

/** Invalid lines a link may send before it is closed. */
const _MAX_INVALID_LINES = 16;

/** Bytes of replies a neighbour may leave unread before its link is closed: it does not read. */
const _MAX_UNREAD_BYTES = 4 * 1024 * 1024;
/**
 * Full exchanges a link may start in a row (a repair after the broadcast
 * trees changed, peer/links.ts, on top of the regular one per interval):
 * one more is allowed per `minExchangeIntervalMs` after them.
 */
const _EXCHANGE_BURST = 3;
/** The least time between two exchanges on a link, in milliseconds (or `minExchangeIntervalMs`, if less). */
const _EXCHANGE_GAP_MS = 500;
/** How often an exchange put off while the neighbour's catch-up is still coming is looked at again, in ms. */
const _CATCHING_UP_RECHECK_MS = 250;

/**
 * The neighbour's exchanges waiting for an answer (put off, or owed a
 * digest) past which its link is closed: one that asks again and again
 * while we cannot answer would have us hold, then write, all of them.
 */
const _MAX_EXCHANGES_WAITING = 16;
/**
 * A late side owed to the neighbour: its crossing exchange's digest, the
 * buckets that differed then, and how many exchanges had sent it our side.
 */
interface _Owed {
  digest: Uint32Array;
  buckets: Set<number>;
  exchanges: number;
}

/** Size of one write of a reconciliation answer. */
const _ANSWER_CHUNK_BYTES = 64 * 1024;

/** Warnings of peer connections refused before they proved who they are: anyone can cause them, so 10 a second. */
const _refusals = new LogBudget(10, (count) => {
  log.peer.warning("Refused {count} more peer connections in the last second (past 10 a second they are counted)", {
    count,
  });
});

/**
 * Counts a peer connection refused before it proved who it is, and logs
 * `message` with `values` unless ten were logged this second already.
 */
export function refusePeer(message: string, values: Record<string, unknown>): void {
  metrics.peerConnectionsRefused.inc();
  if (_refusals.take()) log.peer.warning(message, values);
}

/** A neighbour's link to us, being served. */
class InboundLink {
  #peer: AcceptedPeer;
  #host: PeerHost;
  #options: InboundOptions;
  #conn: LineSocket;
  /** The neighbour, once it said `HELLO`. */
  #name: string | undefined;
  #helloTimer: ReturnType<typeof setTimeout> | undefined;
  /** Whether the dialer was told it is not a neighbour, and the timer that closes the link if it does not. */
  #refused = false;
  #endTimer: ReturnType<typeof setTimeout> | undefined;
  /** Whether the link has been said to be live (it lasted a second after `HELLO`), and the timer that says so. */
  #announced = false;
  #liveTimer: ReturnType<typeof setTimeout> | undefined;
  /** The watch on the link's silence, from `HELLO` on (the dialer sends `PING` when quiet, and so do we: `PONG`). */
  #heartbeat: Heartbeat | undefined;
  /** When (`performance.now()`) we last wrote to the dialer. */
  #lastWrite = 0;
  /** Acknowledgements and short answers gathered this turn, written together at its end. */
  #out: (string | number)[] = [];
  #flushScheduled = false;
  /** Whether this turn's write carries a `PONG`, and our digest (each once, however often asked for). */
  #pongDue = false;
  /** The greatest `MARK` of the neighbour's handled this turn, answered at its end (0: none). */
  #markedDue = 0;
  /** Our answers' and late sides' slices in flight (bulk_window.ts). */
  #window = new BulkWindow();
  #digestDue = false;
  /** `DIGEST <hex>` lines of the neighbour's to answer with our digest alone, each with a line of its own. */
  #digestsOwed = 0;
  /** The neighbour's exchanges put off while its catch-up comes (a few at most), in the order they came. */
  #deferred: Uint32Array[] = [];
  /**
   * The neighbour's exchanges that crossed ours while its answer to ours was
   * coming, answered with our digest alone once that answer is whole.
   */
  #afterAnswer = 0;
  /**
   * The neighbour's last exchange that crossed ours, answered with our
   * digest alone: its digest, the buckets that differed, and how many
   * exchanges with the neighbour had sent it our side. Should ours end
   * unanswered, we send the neighbour our side of it late, on this link
   * ({@linkcode InboundLink.#owe}).
   */
  #owed: _Owed | undefined;
  /** Stops waiting on our exchange's end (the link closed). */
  #stopWaiting: (() => void)[] = [];
  /** Timers of {@linkcode InboundLink.#later}, cleared when the link closes. */
  #timers = new Set<ReturnType<typeof setTimeout>>();
  /** Acknowledgements waiting on records being passed on (`ackScope` herd). */
  #handling = new Set<Promise<void>>();
  /** A reconciliation answer being written, and when the last full one began. */
  #answering: Promise<void> | undefined;
  #lastExchange = -Infinity;
  /** Exchanges the link may start now (see {@linkcode _EXCHANGE_BURST}), as of `#allowanceAt`. */
  #allowance = _EXCHANGE_BURST;
  #allowanceAt = 0;
  #refusedExchanges = 0;
  #invalid = 0;
  /** Records our config refuses and the neighbour's allows: dropped, not a reason to close the link (refused_records.ts). */
  #refusedRecords = new RefusedRecords(
    () => this.#who,
    "",
    (line) => this.#host.reconciler.refused(this.#name!, line),
  );
  /** Reconciliation records received in this read, and how many of them were new. */
  #caughtUp = 0;
  #stored = 0;
  /** Live records received in this read, and how many of them were new (when that was known at once). */
  #live = 0;
  #liveStored = 0;

  constructor(peer: AcceptedPeer, host: PeerHost, options: InboundOptions) {
    this.#peer = peer;
    this.#host = host;
    this.#options = options;
    this.#conn = new LineSocket(peer.socket, {
      maxLineBytes: PEER_MAX_LINE_BYTES,
      onLines: (lines) => this.#handleLines(lines),
      onOverflow: () => {
        if (this.#name !== undefined) {
          log.peer.warning("Peer {neighbour} sent an over-long line; closing its link", { neighbour: this.#name });
        } else refusePeer("Refused a peer connection from {address}: an over-long line", { address: peer.address });
      },
    });
    this.#helloTimer = setTimeout(() => {
      refusePeer("Refused a peer connection from {address}: no HELLO within {ms} ms", {
        address: peer.address,
        ms: options.helloTimeoutMs,
      });
      this.#conn.destroy();
    }, options.helloTimeoutMs);
  }

  /** The neighbour's name for the log, or its address before it said `HELLO`. */
  get #who(): string {
    return this.#name ?? this.#peer.address;
  }

  /** Serves the link until it closes. */
  async serve(): Promise<void> {
    await this.#conn.closed;
    this.#window.close();
    for (const stop of [...this.#stopWaiting]) stop();
    for (const timer of this.#timers) clearTimeout(timer);
    this.#refusedRecords.close();
    clearTimeout(this.#helloTimer);
    clearTimeout(this.#endTimer);
    clearTimeout(this.#liveTimer);
    this.#heartbeat?.stop();
    if (this.#announced) this.#host.dialledByClosed(this.#name!);
    if (this.#name !== undefined && this.#options.current.get(this.#name) === this) {
      this.#options.current.delete(this.#name);
    }
    await Promise.all(this.#handling);
    await this.#answering;
    const error = this.#conn.error;
    if (error !== undefined) {
      log.peer[this.#host.stopping === true ? "info" : "warning"]("Link from {neighbour} failed: {error}", {
        neighbour: this.#who,
        error: error.message,
      });
    }
    if (this.#name !== undefined) log.peer.info("Link from {neighbour} is down", { neighbour: this.#name });
  }

  /** Closes the link now. */
  close(): void {
    this.#conn.destroy();
  }

  #handleLines(lines: string[]): void {
    if (this.#refused) return;
    this.#heartbeat?.heard();
    const caughtUp = this.#caughtUp;
    for (const line of lines) {
      // Closed (or refused) by a line of this read: the rest is not handled, but what was is still logged.
      if (this.#conn.isClosed || this.#refused) break;
      this.#handle(parsePeerMessage(line, this.#host.recordRules), line);
    }
    if (this.#caughtUp > caughtUp) {
      this.#conn.bulk();
      if (this.#name !== undefined) this.#host.reconciler.caughtUpFrom(this.#name);
    }
    this.#logCatchUp();
    this.#logLive();
  }

  #handle(message: PeerMessage, line: string): void {
    if (message.kind === "empty") return;
    if (this.#name === undefined) {
      this.#hello(message, line);
      return;
    }
    const name = this.#name;
    switch (message.kind) {
      case "DIGEST?":
        this.#answerDigest();
        return;
      case "DIGEST":
        this.#exchange(message.digest);
        return;
      case "LINKS":
        this.#host.linkState(message.report, name);
        return;
      case "PING":
        this.#answerPong();
        return;
      case "MARK":
        this.#markedDue = Math.max(this.#markedDue, message.n);
        this.#scheduleFlush();
        return;
      case "MARKED":
        if (!this.#window.answered(message.n)) this.#refuseLine("a MARKED of no mark of ours", line);
        return;
      case "HELD":
        this.#liveRecord(undefined, line, message.seq, message.waitMs);
        return;
      case "RECORD":
        if (message.seq === undefined) {
          this.#caughtUp++;
          if (this.#host.catchUp(message.record, name)) this.#stored++;
        } else {
          this.#liveRecord(message.record, line, message.seq, message.waitMs);
        }
        return;
      default: {
        const refusal = configRefusal(message, line);
        if (refusal !== undefined) {
          this.#refusedRecords.drop(refusal, line);
          this.#skip(line);
        } else {
          this.#refuseLine(
            message.kind === "invalid"
              ? message.reason
              : message.kind === "HELLO"
              ? "a HELLO once introduced"
              : `${message.kind} is not for the dialler to send`,
            line,
          );
        }
      }
    }
  }

  /** The first line: `HELLO <name>` from a neighbour, the one its certificate names, or the link closes. */
  #hello(message: PeerMessage, line: string): void {
    const { provenName, address } = this.#peer;
    let refusal: string | undefined;
    if (message.kind !== "HELLO") refusal = "it did not start with HELLO";
    else if (!this.#host.isNeighbour(message.name)) refusal = `"${cutForLog(message.name, 64)}" is not a neighbour`;
    else if (provenName !== undefined && provenName !== message.name) {
      refusal = `it said HELLO ${cutForLog(message.name, 64)} but its certificate names ${provenName}`;
    }
    if (refusal !== undefined || message.kind !== "HELLO") {
      refusePeer("Refused a peer connection from {address}: {reason}; its first line: {line}", {
        address,
        reason: refusal,
        line: cutForLog(line),
      });
      if (
        message.kind === "HELLO" && !this.#host.isNeighbour(message.name) &&
        (provenName === undefined || provenName === message.name)
      ) {
        // A server (with TLS, its certificate says so) whose config has a link ours has not, yet: told, so that it
        // waits longer before dialling again rather than every reconnectMaxMs while the change is rolled out.
        this.#refused = true;
        this.#conn.write(NOT_A_NEIGHBOUR_LINE);
        this.#conn.end();
        this.#endTimer = setTimeout(() => this.#conn.destroy(), _REFUSED_LINGER_MS);
      } else this.#conn.destroy();
      return;
    }
    clearTimeout(this.#helloTimer);
    this.#peer.prove();
    this.#name = message.name;
    this.#host.reconciler.forget(message.name);
    log.peer.info("Link from {neighbour} is up", { neighbour: message.name });
    const older = this.#options.current.get(message.name);
    this.#options.current.set(message.name, this);
    if (older !== undefined) {
      log.peer.info("Closing the older link from {neighbour}: it dialled us again", { neighbour: message.name });
      older.close();
    }
    this.#host.dialledBy(message.name);
    const { heartbeatMs, heartbeatTimeoutMs } = this.#options;
    this.#heartbeat = new Heartbeat({
      intervalMs: heartbeatMs,
      timeoutMs: heartbeatTimeoutMs,
      // A PONG of our own when we have been quiet, not only in answer to a PING: a dialer whose PING waits behind a
      // long backlog (a catch-up over a slow network) hears from us meanwhile that we are there and reading.
      onTick: () => {
        if (performance.now() - this.#lastWrite >= heartbeatMs / 2) this.#answerPong();
        if (this.#window.giveUpIfUnanswered(performance.now(), this.#options.markPatienceMs)) {
          log.peer.warning(
            "{neighbour} answered none of the marks in our reconciliation records on its link (a server of an older " +
              "version?): sending them on that link without waiting for answers",
            { neighbour: this.#name },
          );
        }
      },
      onSilent: (silentMs) => {
        metrics.silentLinksFrom.inc();
        log.peer.warning("Link from {neighbour} sent nothing for {ms} ms; closing it", {
          neighbour: message.name,
          ms: Math.round(silentMs),
        });
        this.#conn.destroy();
      },
    });
    // Live for the link state once it has lasted a second: a neighbour whose links drop as soon as they come up must
    // not send a report round the herd, and start its second of flooding, at each retry (peer/links.ts).
    this.#liveTimer = setTimeout(() => {
      this.#announced = true;
      this.#host.dialledByLasting(message.name);
    }, _LIVE_AFTER_MS);
  }

  /**
   * A live record (undefined: the line we hold for its client, `line` being
   * the whole line it came in): handed to the server, and acknowledged when
   * it was sent with a wait.
   */
  #liveRecord(record: LocationRecord | undefined, line: string, seq: number, waitMs: number): void {
    // The write is booked before the record is handled, so its acknowledgement goes out ahead of the floods it
    // causes: the sender is waiting on the one, nobody on the others.
    if (waitMs > 0) this.#scheduleFlush();
    const handled = record === undefined
      ? this.#host.receiveNotNewer(this.#name!, line)
      : this.#host.receive(record, this.#name!, waitMs);
    this.#live++;
    // A promise (ackScope herd) means stored and passed on, waiting on the neighbours' acknowledgements.
    if (handled !== false) this.#liveStored++;
    // A record sent with no wait is not acknowledged: nobody is waiting on it.
    if (waitMs === 0) return;
    if (typeof handled === "boolean") {
      this.#acknowledge(seq);
      return;
    }
    const done: Promise<void> = handled.then(() => {
      this.#handling.delete(done);
      this.#acknowledge(seq);
    });
    this.#handling.add(done);
  }

  /**
   * A full reconciliation asked for. One at a time, at least half a second
   * apart, at most {@linkcode _EXCHANGE_BURST} in a row and then one per
   * interval: another is answered with our digest alone (the neighbour then
   * sends what we lack, and gets what it lacks next time).
   */
  #exchange(digest: Uint32Array): void {
    const reconciler = this.#host.reconciler;
    if (this.#afterAnswer + this.#digestsOwed + this.#deferred.length >= _MAX_EXCHANGES_WAITING) {
      // An honest neighbour waits for the answer to each exchange before it starts another, or takes it for lost.
      log.peer.warning(
        "Closing the link from {neighbour}: it started another exchange while {count} wait for an answer",
        {
          neighbour: this.#name,
          count: _MAX_EXCHANGES_WAITING,
        },
      );
      this.#conn.destroy();
      return;
    }
    // (Behind those already put off, too: answers go in the order the exchanges came, as the neighbour counts them.)
    if (
      (reconciler.catchingUpFrom(this.#name!) || this.#deferred.length > 0) && this.#deferred.length < _EXCHANGE_BURST
    ) {
      // Its catch-up is still coming to us: answered now, our answer would send it back the part we have. Answered,
      // in the order they came, once it has stopped coming (looked at every 250 ms); past a few, at once, as below.
      this.#deferred.push(digest);
      if (this.#deferred.length === 1) this.#answerDeferredWhenQuiet();
      return;
    }
    if (reconciler.underway(this.#name!)) {
      // Ours and the neighbour's crossed: each side sends what the other lacks once, not twice (reconcile.ts).
      metrics.reconciliationsCrossed.inc();
      this.#owe(digest);
      if (reconciler.beingAnswered(this.#name!)) {
        log.peer.info(
          "{neighbour} started an exchange while answering ours; answering its with our digest once its answer is whole",
          { neighbour: this.#name },
        );
        if (this.#afterAnswer++ === 0) {
          this.#whenOursEnds(() => {
            for (; this.#afterAnswer > 0; this.#afterAnswer--) this.#answerExchangeWithDigest();
          });
        }
        return;
      }
      log.peer.info("{neighbour} and we started exchanges at once; answering its with our digest alone", {
        neighbour: this.#name,
      });
      this.#answerExchangeWithDigest();
      return;
    }
    const now = performance.now();
    const { minExchangeIntervalMs } = this.#options;
    this.#allowance = Math.min(
      _EXCHANGE_BURST,
      this.#allowance + (now - this.#allowanceAt) / minExchangeIntervalMs,
    );
    this.#allowanceAt = now;
    if (
      this.#answering !== undefined || this.#allowance < 1 ||
      now - this.#lastExchange < Math.min(_EXCHANGE_GAP_MS, minExchangeIntervalMs)
    ) {
      metrics.reconciliationsRefused.inc();
      if (this.#refusedExchanges++ === 0) {
        log.peer.warning("{neighbour} asks to reconcile again too soon; answering with our digest alone", {
          neighbour: this.#name,
        });
      }
      this.#answerExchangeWithDigest();
      return;
    }
    this.#lastExchange = now;
    this.#allowance--;
    this.#answering = this.#writeAnswer(this.#host.reconciler.answer(this.#name!, digest)).finally(() => {
      this.#answering = undefined;
      // Digests owed meanwhile go after the answer's own.
      if (this.#digestsOwed > 0) this.#scheduleFlush();
    });
  }

  /**
   * The neighbour's exchange `digest` crossed ours and is answered with our
   * digest alone: the neighbour sends what we lack, and ours, once answered,
   * sends it what it lacks. Should ours end unanswered (our link went down,
   * or the exchange was taken for lost), no side of ours would come, and
   * the neighbour's link may be the only one that works (a link of ours cut
   * just after its digest went): we then send our side on this link, late.
   */
  #owe(digest: Uint32Array): void {
    const waiting = this.#owed !== undefined;
    const reconciler = this.#host.reconciler;
    // The last one's digest is enough: one late side answers them all.
    this.#owed = {
      digest,
      buckets: reconciler.differingFrom(this.#name!, digest),
      exchanges: reconciler.exchangesWith(this.#name!),
    };
    if (waiting) return;
    this.#whenOursEnds((answered) => {
      const owed = this.#owed!;
      this.#owed = undefined;
      if (!answered) this.#sendLateSide(owed);
    });
  }

  /**
   * Calls `then` once our exchange with the neighbour is over, answered or
   * not, unless this link closed first. Only `Reconciler.underway()` takes
   * an exchange for lost: it is asked now and then meanwhile.
   */
  #whenOursEnds(then: (answered: boolean) => void): void {
    const reconciler = this.#host.reconciler;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const look = () => {
      timer = setTimeout(look, _CATCHING_UP_RECHECK_MS);
      reconciler.underway(this.#name!);
    };
    const cancel = reconciler.afterOurs(this.#name!, (answered) => {
      clearTimeout(timer);
      const at = this.#stopWaiting.indexOf(stop);
      if (at >= 0) this.#stopWaiting.splice(at, 1);
      if (!this.#conn.isClosed) then(answered);
    });
    const stop = () => {
      clearTimeout(timer);
      cancel();
    };
    this.#stopWaiting.push(stop);
    timer = setTimeout(look, _CATCHING_UP_RECHECK_MS);
  }

  /**
   * Sends the neighbour, on this link, our records of the buckets that
   * differed from its digest when its exchange crossed ours and still do,
   * and no digest: its exchange is over. Once its own records of a
   * reconciliation have stopped coming (sent now, our walk would send them
   * back), and after any answer being written; not at all once another
   * exchange with the neighbour sent our side meanwhile (ours, answered
   * after all or started again and answered, or its, answered in full).
   */
  #sendLateSide(owed: _Owed): void {
    const reconciler = this.#host.reconciler;
    if (reconciler.exchangesWith(this.#name!) !== owed.exchanges) {
      log.peer.info("Not sending {neighbour} our side of its exchange late: another exchange sent it meanwhile", {
        neighbour: this.#name,
      });
      return;
    }
    if (reconciler.catchingUpFrom(this.#name!) || this.#answering !== undefined) {
      this.#later(() => this.#sendLateSide(owed), _CATCHING_UP_RECHECK_MS);
      return;
    }
    if (reconciler.hasUnderway(this.#name!)) {
      // An exchange of ours began again (our link came back): answered, it sends our side; else this goes after it. A
      // crossing meanwhile owes a late side of its own, which covers this one.
      if (this.#owed === undefined) {
        this.#whenOursEnds((answered) => {
          if (!answered && this.#owed === undefined) this.#sendLateSide(owed);
        });
      }
      return;
    }
    log.peer.info(
      "Our exchange with {neighbour} ended unanswered, and we had answered its own with our digest alone: sending it " +
        "our side on its link",
      { neighbour: this.#name },
    );
    this.#answering = this.#writeAnswer(reconciler.lateSide(this.#name!, owed.digest, owed.buckets)).finally(() => {
      this.#answering = undefined;
      if (this.#digestsOwed > 0) this.#scheduleFlush();
    });
  }

  /** Calls `then` in `ms`, unless the link closed first. */
  #later(then: () => void, ms: number): void {
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      if (!this.#conn.isClosed) then();
    }, ms);
    this.#timers.add(timer);
  }

  /** Answers the exchanges put off while the neighbour's catch-up was coming, once it has stopped. */
  #answerDeferredWhenQuiet(): void {
    this.#later(() => {
      if (this.#host.reconciler.catchingUpFrom(this.#name!)) return this.#answerDeferredWhenQuiet();
      const deferred = this.#deferred;
      this.#deferred = [];
      for (const digest of deferred) this.#exchange(digest);
      // (An exchange of these that finds a catch-up coming again is put off again, in order, by #exchange.)
    }, _CATCHING_UP_RECHECK_MS);
  }

  /**
   * Writes a reconciliation answer (or a late side), as `texts` makes it, in
   * chunks, each in a turn of its own, once the socket took the one before
   * and the neighbour has answered enough of their marks (bulk_window.ts).
   */
  async #writeAnswer(texts: Iterable<string>): Promise<void> {
    let chunk = "";
    for (const text of texts) {
      chunk += text;
      // (An empty text is a pause of the store's walk, every 16,384 clients: a turn, written or not.)
      if (chunk.length < _ANSWER_CHUNK_BYTES && text !== "") continue;
      if (chunk !== "") {
        await this.#window.opened();
        if (this.#conn.isClosed) return;
        this.#lastWrite = performance.now();
      }
      const mark = chunk !== "" && this.#window.marking ? formatMark(this.#window.mark()) : "";
      if (chunk !== "" && !this.#conn.write(chunk + mark)) await this.#conn.drained();
      // The next chunk in a later turn, whatever the socket took: a million records are not one stall.
      else await new Promise((resolve) => setTimeout(resolve, 0));
      chunk = "";
      if (this.#conn.isClosed) return;
    }
    if (chunk === "") return;
    this.#lastWrite = performance.now();
    this.#conn.write(chunk);
  }

  /** Logs and drops a line no neighbour could have sent; closes a link that keeps sending them. */
  #refuseLine(reason: string, line: string): void {
    this.#invalid++;
    metrics.peerInvalid.inc();
    log.peer.warning("Dropped a line from {neighbour} ({reason}): {line}", {
      neighbour: this.#who,
      reason,
      line: cutForLog(line),
    });
    if (this.#invalid >= _MAX_INVALID_LINES) {
      log.peer.warning("Closing the link from {neighbour}: {count} lines it could not have sent", {
        neighbour: this.#who,
        count: this.#invalid,
      });
      this.#conn.destroy();
    }
  }

  /** Adds `ACK <seq>` to this turn's write. */
  #acknowledge(seq: number): void {
    pushAck(this.#out, seq);
    this.#scheduleFlush();
  }

  /**
   * Answers a live record our config refuses with `SKIP <seq>` when the
   * neighbour waits on it (its last two fields: a sequence number and a wait
   * above 0): we will not hold it, and its wait need not run out.
   */
  #skip(line: string): void {
    // A record of the herd's form (configRefusal): eight fields when live, the last two counts.
    const fields = line.split(" ");
    if (fields.length !== 8 || Number(fields[7]) === 0) return;
    this.#out.push(`SKIP ${fields[6]}\n`);
    this.#scheduleFlush();
  }

  /**
   * Adds our digest to this turn's write, once however often it is asked
   * for in the turn: a digest is 16 KiB of hex for a `DIGEST` line of 7
   * bytes, and a neighbour sending thousands in one read would otherwise have
   * us make a string of them all before the unread check below could see it.
   */
  #answerDigest(): void {
    this.#digestDue = true;
    this.#scheduleFlush();
  }

  /**
   * Answers one `DIGEST <hex>` with our digest alone. Each is answered with
   * a line of its own, as the neighbour counts its exchanges by our
   * answers (a `DIGEST <hex>` is as long as our answer: nothing is
   * amplified); and none goes out in the middle of a full answer being
   * written, which the neighbour would take for that answer's end.
   */
  #answerExchangeWithDigest(): void {
    this.#digestsOwed++;
    this.#scheduleFlush();
  }

  /** Adds `PONG` to this turn's write, once however many `PING`s came in the turn. */
  #answerPong(): void {
    this.#pongDue = true;
    this.#scheduleFlush();
  }

  /** Books a write at the end of this turn, even with nothing to send yet (see {@linkcode InboundLink.#live}). */
  #scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    setImmediate(() => {
      this.#flushScheduled = false;
      if (this.#pongDue) this.#out.push(PONG_LINE);
      if (this.#markedDue > 0) this.#out.push(formatMarked(this.#markedDue));
      this.#markedDue = 0;
      const owed = this.#answering === undefined ? this.#digestsOwed : 0;
      if (this.#digestDue || owed > 0) {
        const digest = this.#host.reconciler.request(this.#name!);
        // A bare `DIGEST` is answered by any digest this write carries.
        for (let i = 0; i < Math.max(owed, 1); i++) this.#out.push(digest);
      }
      this.#digestsOwed -= owed;
      this.#pongDue = this.#digestDue = false;
      if (this.#out.length === 0 || this.#conn.isClosed) return;
      // Joined once: one flat string for the write, not a string per acknowledgement and a rope of them.
      this.#lastWrite = performance.now();
      this.#conn.write(this.#out.join(""));
      this.#out = [];
      if (this.#conn.buffered > _MAX_UNREAD_BYTES) {
        log.peer.warning("Closing the link from {neighbour}: it leaves what we send unread", { neighbour: this.#who });
        this.#conn.destroy();
      }
    });
  }

  /** Live records are logged as a count per read (each record stored is a line of its own, in herd_server.ts). */
  #logLive(): void {
    if (this.#live === 0) return;
    const records = this.#live === 1 ? "record" : "records";
    traffic.event("peer", `From ${quote(this.#name!)}: ${this.#live} ${records}, ${this.#liveStored} new`);
    this.#live = this.#liveStored = 0;
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

/** A neighbour's link being served: {@linkcode InboundPeer.done} settles once it closed. */
export interface InboundPeer {
  /** Settles once the link has closed and its last acknowledgements are written. */
  done: Promise<void>;
  /** Closes the link now. */
  close(): void;
}

/** Serves one inbound peer connection until it closes. */
export function servePeer(peer: AcceptedPeer, host: PeerHost, options: InboundOptions): InboundPeer {
  const link = new InboundLink(peer, host, options);
  return { done: link.serve(), close: () => link.close() };
}
