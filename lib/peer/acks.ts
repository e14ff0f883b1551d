/**
 * The acknowledgements one outbound link waits for, in one place: who waits
 * on which record, which sequence number it went out as, when each wait
 * expires, and whether the neighbour is lagging (let a wait expire, so
 * nobody waits on it again until it acknowledges in time).
 */

/** How often expired waits are looked for, in milliseconds. */
const _SWEEP_MS = 5;

type _Waiter = AckTicket["waiters"][number];

/** The waits on one queued record, until it is sent and acknowledged; only the tracker looks inside. */
export class AckTicket {
  /** Who waits on the record: touched by {@linkcode AckTracker} alone. */
  readonly waiters: { release: () => void; deadline: number; done: boolean }[] = [];
}

/** Options for {@linkcode AckTracker}. */
export interface AckTrackerOptions {
  /** A record unacknowledged this long makes the neighbour lagging. */
  timeoutMs: number;
  /** Called when the neighbour turns lagging (`true`) or catches up (`false`). */
  onLagging(lagging: boolean): void;
}

/** Tracks the acknowledgements of one link. */
export class AckTracker {
  #options: AckTrackerOptions;
  /** Every wait not yet over. */
  #waiting: _Waiter[] = [];
  /** Sent records still of interest, by sequence number, oldest first. */
  #sent = new Map<number, { sentAt: number; ticket: AckTicket | undefined }>();
  #lagging = false;
  #sweeper: ReturnType<typeof setInterval> | undefined;

  /** A tracker with nothing to wait for yet. */
  constructor(options: AckTrackerOptions) {
    this.#options = options;
  }

  /** Whether the neighbour let a wait expire and has not acknowledged in time since. */
  get lagging(): boolean {
    return this.#lagging;
  }

  /** Waits currently open. */
  get waiting(): number {
    return this.#waiting.length;
  }

  /** A new ticket for a queued record. */
  ticket(): AckTicket {
    return new AckTicket();
  }

  /**
   * Waits on `ticket` at most `waitMs`: `release` is called once, when its
   * record is acknowledged, or then (or when the link is reset). A callback,
   * not a promise: a server waits on each of its neighbours for every IAMAT.
   */
  wait(ticket: AckTicket, waitMs: number, release: () => void): void {
    const waiter = { release, deadline: performance.now() + waitMs, done: false };
    ticket.waiters.push(waiter);
    this.#waiting.push(waiter);
    this.#sweeper ??= setInterval(() => this.#sweep(), _SWEEP_MS);
  }

  /** The record of `ticket` went out as `seq`, to be acknowledged. */
  sent(seq: number, ticket: AckTicket | undefined, now: number): void {
    this.#sent.set(seq, { sentAt: now, ticket });
    this.#sweeper ??= setInterval(() => this.#sweep(), _SWEEP_MS);
  }

  /** The neighbour acknowledged `seq`: its waiters go, and a lagging neighbour that answered in time caught up. */
  acknowledged(seq: number): void {
    const sent = this.#sent.get(seq);
    if (sent === undefined) return;
    this.#sent.delete(seq);
    if (this.#lagging && performance.now() - sent.sentAt < this.#options.timeoutMs) {
      this.#lagging = false;
      this.#options.onLagging(false);
    }
    if (sent.ticket !== undefined) _releaseAll(sent.ticket);
  }

  /** The link went down or was reset: every wait is over, nothing is lagging. */
  reset(): void {
    this.#waiting.forEach(_release);
    this.#waiting = [];
    this.#sent.clear();
    this.#lagging = false;
    clearInterval(this.#sweeper);
    this.#sweeper = undefined;
  }

  /** Releases waits past their deadline (the neighbour is then lagging) and forgets old sent records. */
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
    if (expired && !this.#lagging) {
      this.#lagging = true;
      this.#options.onLagging(true);
    }
    // Sent records are kept only long enough to notice the neighbour catching up.
    const cutoff = now - this.#options.timeoutMs;
    for (const [seq, sent] of this.#sent) {
      if (sent.sentAt >= cutoff) break;
      this.#sent.delete(seq);
    }
    if (this.#waiting.length === 0 && this.#sent.size === 0) {
      clearInterval(this.#sweeper);
      this.#sweeper = undefined;
    }
  }
}

function _release(waiter: _Waiter): void {
  if (waiter.done) return;
  waiter.done = true;
  waiter.release();
}

function _releaseAll(ticket: AckTicket): void {
  ticket.waiters.forEach(_release);
}
