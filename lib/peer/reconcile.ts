/**
 * Reconciliation (anti-entropy) between two neighbours, both directions.
 * The dialler sends `DIGEST <hex>`: its store's digest, one XOR of record
 * hashes per bucket of clients (store/digest.ts). The acceptor answers with
 * its records of every bucket that differs, as plain AT lines, then its own
 * `DIGEST <hex>`; the dialler then sends its records of the buckets that
 * still differ. Each side keeps the greater record per client, so after one
 * exchange both hold the same records, whatever was lost in flight.
 *
 * Two neighbours whose configs differ (a change being rolled out) never
 * agree: one holds records the other refuses (peer/refused_records.ts), and
 * each exchange would send the whole of every bucket holding one, both
 * ways. So each server remembers, per neighbour, the records it refused from
 * it, and the digest it shows that neighbour and compares with its own is
 * its store's as if it held those in place of its own older ones.
 */

import { metrics } from "../admin/metrics.ts";
import { log } from "../logging.ts";
import { clientTimeOfLine, compareToLine, ownCopy, recordOfLine } from "../protocol.ts";
import { differingBuckets, StoreDigest } from "../store/digest.ts";
import { formatDigest } from "./wire.ts";

/** What reconciliation reads of the store. */
export interface ReconcileStore {
  /** The store's digest, kept current as records are stored. */
  readonly digest: StoreDigest;
  /**
   * The stored AT lines of some digest buckets, one at a time, with an
   * empty string every so many clients walked (a pause).
   */
  linesInBuckets(buckets: ReadonlySet<number>): Iterable<string>;
  /** The line stored for a client, if any. */
  lineOf(clientId: string): string | undefined;
  /** Whether a record of this client time has expired (`records.ttlS`): the neighbour's store drops it too. */
  isExpired(clientTime: string): boolean;
}

/**
 * Characters of refused records (line and client ID) remembered per
 * neighbour, at most: 16 Mi, 150,000 records of a usual length. Past it,
 * the rest is not remembered, and the buckets holding them are sent at each
 * exchange, as before.
 */
export const MAX_REFUSED_CHARS = 16 * 1024 * 1024;

/**
 * How long after a neighbour started an exchange with us our own link to
 * it skips the exchange it would start on coming up: the neighbour's goes
 * both ways, so ours would only send everything a second time.
 */
const _RECENT_MS = 2000;

/** How long after a neighbour's last reconciliation records its catch-up counts as still coming, in milliseconds. */
const _CATCHING_UP_MS = 1000;

/**
 * How long the answer to an exchange of ours may take to begin, counted
 * from the exchange's start or from the last records of a reconciliation we
 * sent the neighbour (it answers once those stopped coming), before the
 * exchange is taken for lost, in milliseconds: its digest went into a black
 * hole that kept the connection open (or the answer's first lines did).
 */
const _ANSWER_LOST_MS = 3000;

/** One more of something under way with `neighbour`, counted in `counts`. */
function _countUp(counts: Map<string, number>, neighbour: string): void {
  counts.set(neighbour, (counts.get(neighbour) ?? 0) + 1);
}

/** One fewer (none below zero): a neighbour with none is not in `counts`, so `has()` says whether any is. */
function _countDown(counts: Map<string, number>, neighbour: string): void {
  const count = counts.get(neighbour) ?? 0;
  if (count <= 1) counts.delete(neighbour);
  else counts.set(neighbour, count - 1);
}

/** One server's side of reconciling with each of its neighbours. */
export class Reconciler {
  #store: ReconcileStore;
  /** When each neighbour last started an exchange with us. */
  #startedBy = new Map<string, number>();
  /** How many exchanges with each neighbour sent it our side ({@linkcode exchangesWith}). */
  #exchanges = new Map<string, number>();
  /** When records of a reconciliation last came from each neighbour (`performance.now()`). */
  #caughtUpAt = new Map<string, number>();
  /** Our answers to each neighbour's exchanges being written. */
  #answering = new Map<string, number>();
  /** Our exchanges with each neighbour whose answer has not come yet: our digest sent, its not back. */
  #underway = new Map<string, number>();
  /** When our last exchange with each neighbour started. */
  #startedAt = new Map<string, number>();
  /** Our records of a reconciliation being sent to each neighbour (our side of an exchange of ours). */
  #walking = new Map<string, number>();
  /** When we last finished sending records of a reconciliation to each neighbour (an answer, or our side). */
  #sentAt = new Map<string, number>();
  /** The neighbours whose answer to our exchange is coming (records of it arrived), and who waits for its end. */
  #receiving = new Set<string>();
  #afterOurs = new Map<string, ((answered: boolean) => void)[]>();
  /** The records each neighbour holds that our config refuses: their lines, by client, and their size in all. */
  #refused = new Map<string, { lines: Map<string, string>; chars: number; full: boolean }>();
  #maxRefusedChars: number;

  /**
   * Reconciles `store` with the neighbours, remembering at most
   * `maxRefusedChars` characters of refused records per neighbour
   * ({@linkcode MAX_REFUSED_CHARS} unless a test says otherwise).
   */
  constructor(store: ReconcileStore, maxRefusedChars: number = MAX_REFUSED_CHARS) {
    this.#store = store;
    this.#maxRefusedChars = maxRefusedChars;
  }

  /** The line that starts an exchange with `neighbour` (the dialler's side), or answers a `DIGEST` alone. */
  request(neighbour: string): string {
    return formatDigest(this.#digestFor(neighbour).toHex());
  }

  /**
   * `neighbour` sent `line`, a record as the herd writes it (six fields, or
   * eight: the first six are the record) that our config refuses: it holds
   * it, and will show it in its digest.
   */
  refused(neighbour: string, line: string): void {
    const fields = line.split(" ");
    let held = this.#refused.get(neighbour);
    if (held === undefined) this.#refused.set(neighbour, held = { lines: new Map(), chars: 0, full: false });
    const clientId = fields[3];
    const before = held.lines.get(clientId);
    // Copies, not slices of the read the line came in: a slice would keep the whole read alive (protocol.ts ownCopy).
    const record = ownCopy(fields.length === 6 ? line : fields.slice(0, 6).join(" "));
    // The greater one: the two links with a neighbour may bring its records out of order.
    if (before !== undefined && compareToLine(recordOfLine(record), before, clientTimeOfLine(before)) <= 0) return;
    const chars = record.length + (before === undefined ? clientId.length : -before.length);
    if (held.chars + chars > this.#maxRefusedChars) {
      if (!held.full) {
        // Said once per neighbour until its link comes up again (forget()).
        held.full = true;
        log.peer.warning(
          "Remembering no more of the records {neighbour} holds that our config refuses ({count}, {mb} MB): " +
            "reconciliations with it resend the buckets holding the others until its config and ours agree",
          { neighbour, count: held.lines.size, mb: Math.round(held.chars / (1024 * 1024)) },
        );
      }
      return;
    }
    held.lines.set(before === undefined ? ownCopy(clientId) : clientId, record);
    held.chars += chars;
  }

  /** A link with `neighbour` came up: what it holds, and what it may send, may have changed (a restart, a config). */
  forget(neighbour: string): void {
    this.#refused.delete(neighbour);
  }

  /**
   * Our digest as `neighbour` holds it, were it not for our config: our
   * store's, with each record it holds that we refused in place of our
   * line for that client. A refused record older than ours is forgotten:
   * the neighbour takes ours; so is an expired one: the neighbour drops it.
   */
  #digestFor(neighbour: string): StoreDigest {
    const refused = this.#refused.get(neighbour);
    if (refused === undefined || refused.lines.size === 0) return this.#store.digest;
    const digest = new StoreDigest();
    digest.words.set(this.#store.digest.words);
    const forget = (clientId: string, line: string) => {
      refused.lines.delete(clientId);
      refused.chars -= clientId.length + line.length;
    };
    for (const [clientId, line] of refused.lines) {
      const clientTime = clientTimeOfLine(line);
      if (this.#store.isExpired(clientTime)) {
        forget(clientId, line);
        continue;
      }
      const ours = this.#store.lineOf(clientId);
      if (ours !== undefined) {
        if (compareToLine(recordOfLine(ours), line, clientTime) >= 0) {
          forget(clientId, line);
          continue;
        }
        digest.toggle(clientId, ours);
      }
      digest.toggle(clientId, line);
    }
    return digest;
  }

  /** Our link to `neighbour` sent our digest: an exchange of ours is under way until its answer ({@linkcode finish}). */
  started(neighbour: string): void {
    _countUp(this.#underway, neighbour);
    this.#startedAt.set(neighbour, performance.now());
  }

  /** Our link to `neighbour` went down: the answers to its digests will not come. */
  dropped(neighbour: string): void {
    this.#underway.delete(neighbour);
    this.#ourAnswered(neighbour, false);
  }

  /**
   * Our link to `neighbour` lagged and caught up (a black hole that healed,
   * its connection kept): what it sent meanwhile may be lost, our digest
   * among it. An exchange of ours whose answer has not begun is taken for
   * lost, so that it holds up neither ours nor the neighbour's (answered
   * with our digest alone while ours is under way): returns whether one was.
   * Its answer, should it come after all, is taken as the next one's.
   */
  forgetUnanswered(neighbour: string): boolean {
    // The count itself: underway() would forget one 3 s old on its own, and say none was.
    if ((this.#underway.get(neighbour) ?? 0) === 0 || this.#receiving.has(neighbour)) return false;
    this.#underway.delete(neighbour);
    this.#ourAnswered(neighbour, false);
    return true;
  }

  /**
   * Records of a reconciliation (passed on from a catch-up) were just
   * written to `neighbour`: it answers our exchange once they stop coming.
   */
  sentRecordsTo(neighbour: string): void {
    this.#sentAt.set(neighbour, performance.now());
  }

  /** A record of `neighbour`'s answer to our exchange came: it is answering, in full. */
  receiving(neighbour: string): void {
    this.#receiving.add(neighbour);
  }

  /**
   * Whether `neighbour` is part-way through answering our exchange (its
   * records coming): its own exchange, started meanwhile, is then answered
   * once that answer is whole ({@linkcode Reconciler.afterOurs}), with a
   * digest that holds all it sent; answered at once, our digest would miss
   * what is still on its way, and the neighbour would send it all again.
   */
  beingAnswered(neighbour: string): boolean {
    return this.#receiving.has(neighbour) && this.underway(neighbour);
  }

  /**
   * Calls `then` once our exchange with `neighbour` is over: `answered`
   * (its digest came back, after its records), or not (our link to it went
   * down, or the exchange was taken for lost: only {@linkcode underway}
   * looks, so a caller that waits asks it now and then).
   */
  afterOurs(neighbour: string, then: (answered: boolean) => void): () => void {
    const waiting = this.#afterOurs.get(neighbour);
    if (waiting === undefined) this.#afterOurs.set(neighbour, [then]);
    else waiting.push(then);
    // Called off when the caller no longer waits (its link closed): nothing of it is held until ours ends.
    return () => {
      const list = this.#afterOurs.get(neighbour);
      const at = list?.indexOf(then) ?? -1;
      if (at >= 0) list!.splice(at, 1);
    };
  }

  #ourAnswered(neighbour: string, answered: boolean): void {
    this.#receiving.delete(neighbour);
    const waiting = this.#afterOurs.get(neighbour);
    this.#afterOurs.delete(neighbour);
    for (const then of waiting ?? []) then(answered);
  }

  /**
   * Whether an exchange of ours with `neighbour` is under way, so that one
   * it starts (the two links came up at once) is answered with our digest
   * alone: ours sends the neighbour what it lacks once its answer comes, and
   * the neighbour, given our digest, sends what we lack. Answered in full,
   * the records we hold and it lacks (a whole store, to a server started
   * empty) would go twice, once down each link. Should ours then end
   * unanswered, our side goes to the neighbour late, on its link
   * (inbound.ts).
   */
  underway(neighbour: string): boolean {
    if ((this.#underway.get(neighbour) ?? 0) === 0) return false;
    if (!this.#answerLost(neighbour)) return true;
    log.peer.info(
      "Our exchange with {neighbour} is taken for lost: no answer began within {ms} ms while we sent it nothing",
      { neighbour, ms: _ANSWER_LOST_MS },
    );
    this.#underway.delete(neighbour);
    this.#ourAnswered(neighbour, false);
    return false;
  }

  /**
   * Whether the answer to our exchange with `neighbour` (under way) has not
   * begun within {@linkcode _ANSWER_LOST_MS} of the later of its start and
   * the end of the records of a reconciliation we last sent the neighbour,
   * nor are we sending it any: a neighbour answers an exchange at once, but
   * once records of a reconciliation from us stopped coming.
   */
  #answerLost(neighbour: string): boolean {
    if (this.#receiving.has(neighbour) || this.#answering.has(neighbour) || this.#walking.has(neighbour)) return false;
    const since = Math.max(this.#startedAt.get(neighbour) ?? -Infinity, this.#sentAt.get(neighbour) ?? -Infinity);
    return performance.now() - since >= _ANSWER_LOST_MS;
  }

  /**
   * Whether our link to `neighbour` may start an exchange now (at link-up,
   * periodic, a repair; `PeerLink.reconcile` puts it off until it may): not
   * while we answer one the neighbour started, nor within
   * {@linkcode _RECENT_MS} of its start or its end (the neighbour's goes
   * both ways), nor while its catch-up is still coming
   * ({@linkcode Reconciler.catchingUpFrom}).
   */
  shouldStart(neighbour: string): boolean {
    if (this.#answering.has(neighbour) || this.catchingUpFrom(neighbour)) return false;
    return performance.now() - (this.#startedBy.get(neighbour) ?? -Infinity) >= _RECENT_MS;
  }

  /** Whether records of a reconciliation came from `neighbour` in the last `ms` (a slow answer still coming). */
  heardRecordsWithin(neighbour: string, ms: number): boolean {
    return performance.now() - (this.#caughtUpAt.get(neighbour) ?? -Infinity) < ms;
  }

  /** Records of a reconciliation came from `neighbour` just now (a read of them, on either link). */
  caughtUpFrom(neighbour: string): void {
    this.#caughtUpAt.set(neighbour, performance.now());
  }

  /**
   * Whether records of a reconciliation came from `neighbour` in the last
   * {@linkcode _CATCHING_UP_MS}: a catch-up is on its way, and a digest of
   * ours now would not hold what is still coming (an exchange we started,
   * or answered in full, would have the neighbour send it again, or have us
   * send it back what we got of it).
   */
  catchingUpFrom(neighbour: string): boolean {
    return performance.now() - (this.#caughtUpAt.get(neighbour) ?? -Infinity) < _CATCHING_UP_MS;
  }

  /**
   * The acceptor's answer to `DIGEST <hex>` from `from`: our records of the
   * buckets that differ, as AT lines, then our digest, made as the caller
   * takes them (a whole store can differ: nothing is gathered first); an
   * empty string among them is a pause of the walk, where the caller should
   * take a turn before asking for more.
   */
  *answer(from: string, digest: Uint32Array): Generator<string, void, undefined> {
    this.#startedBy.set(from, performance.now());
    _countUp(this.#exchanges, from);
    _countUp(this.#answering, from);
    try {
      metrics.reconciliationsAnswered.inc();
      const count = yield* this.#linesOf(differingBuckets(this.#digestFor(from).words, digest));
      yield this.request(from);
      log.peer.info("Reconciling with {neighbour}: sent {count} records", { neighbour: from, count });
    } finally {
      // Counted from the end too: an answer of a million records takes seconds, and an exchange of ours starting
      // during it or just after would have the neighbour send back all it just got (its digest not yet whole).
      this.#startedBy.set(from, performance.now());
      this.#sentAt.set(from, performance.now());
      _countDown(this.#answering, from);
    }
  }

  /**
   * Our side of an exchange of `from`'s that we answered with our digest
   * alone (`digest` being its), sent once our own exchange ended unanswered:
   * our records of the buckets of `late` that still differ, as
   * {@linkcode answer} makes them, and no digest (that exchange is over).
   * `late` holds the buckets that differed then: the others differ now only
   * by live records, which both sides got.
   */
  *lateSide(from: string, digest: Uint32Array, late: ReadonlySet<number>): Generator<string, void, undefined> {
    const buckets = differingBuckets(this.#digestFor(from).words, digest);
    _countUp(this.#answering, from);
    try {
      const count = yield* this.#linesOf(new Set([...buckets].filter((bucket) => late.has(bucket))));
      log.peer.info("Sent {neighbour} our side of its exchange, late: {count} records", { neighbour: from, count });
    } finally {
      this.#sentAt.set(from, performance.now());
      _countDown(this.#answering, from);
    }
  }

  /** Our records of `buckets`, each a line with its newline, and the walk's pauses (empty); returns how many. */
  *#linesOf(buckets: ReadonlySet<number>): Generator<string, number, undefined> {
    let count = 0;
    for (const line of this.#store.linesInBuckets(buckets)) {
      if (line === "") {
        yield ""; // a pause of the walk: the caller takes a turn
        continue;
      }
      count++;
      metrics.reconciliationSent.inc();
      yield line + "\n";
    }
    return count;
  }

  /**
   * The buckets in which our records differ from `digest`, a neighbour's
   * (whose exchange we answer with our digest alone: what a late side of
   * ours would send, {@linkcode lateSide}).
   */
  differingFrom(neighbour: string, digest: Uint32Array): Set<number> {
    return differingBuckets(this.#digestFor(neighbour).words, digest);
  }

  /**
   * How many exchanges with `neighbour` have sent it our side so far (ours
   * answered, its answered in full): a late side waiting is not needed once
   * another did. (Not ours started: a link of ours that keeps failing
   * starts one at each attempt, and none sends anything.)
   */
  exchangesWith(neighbour: string): number {
    return this.#exchanges.get(neighbour) ?? 0;
  }

  /** Whether an exchange of ours with `neighbour` is under way, looked at without taking a late one for lost. */
  hasUnderway(neighbour: string): boolean {
    return this.#underway.has(neighbour);
  }

  /**
   * The dialler's last step: the acceptor's digest came back after its
   * records (`received`, of which `stored` were new to us); returns our
   * AT lines of the buckets that still differ, to send back, read from the
   * store as they are taken (how many is logged once they all were, or the
   * walk was given up), with an empty string where the walk pauses, as in
   * {@linkcode answer}.
   */
  finish(neighbour: string, digest: Uint32Array, received: number, stored: number): Iterable<string> {
    _countUp(this.#exchanges, neighbour);
    _countDown(this.#underway, neighbour);
    // Run after this call's records are chosen: a digest answered now is the store's with them all in.
    queueMicrotask(() => this.#ourAnswered(neighbour, true));
    const buckets = differingBuckets(this.#digestFor(neighbour).words, digest);
    metrics.reconciliationReceived.inc(received);
    log.peer.info(
      "Reconciled with {neighbour}: received {received} records, stored {stored}; sending the records of {buckets} " +
        "buckets",
      { neighbour, received, stored, buckets: buckets.size },
    );
    return buckets.size === 0 ? [] : this.#sending(neighbour, this.#store.linesInBuckets(buckets));
  }

  /** `lines`, counted as they are taken; the count logged when they end or are given up. */
  *#sending(neighbour: string, lines: Iterable<string>): Generator<string, void, undefined> {
    let count = 0;
    let whole = false;
    _countUp(this.#walking, neighbour);
    try {
      for (const line of lines) {
        // (An empty string is a pause of the walk, passed on: the caller takes a turn.)
        if (line !== "") {
          count++;
          metrics.reconciliationSent.inc();
        }
        yield line;
      }
      whole = true;
    } finally {
      _countDown(this.#walking, neighbour);
      this.#sentAt.set(neighbour, performance.now());
      if (whole) log.peer.info("Reconciliation with {neighbour}: sent {count} records", { neighbour, count });
      else {
        log.peer.info(
          "Reconciliation with {neighbour}: sent {count} records, then stopped (the link went down, or a newer exchange " +
            "took over)",
          { neighbour, count },
        );
      }
    }
  }
}
