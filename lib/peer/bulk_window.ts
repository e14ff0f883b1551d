/**
 * Flow control for a reconciliation's records on one peer link. Without
 * it the sender of a million records writes as fast as it walks its store,
 * the sockets' buffers on both ends fill (4 MB and more on Linux, measured),
 * and every live record and acknowledgement written after them waits behind
 * those megabytes, hundreds of milliseconds at the receiver's pace.
 *
 * The sender follows each slice of records with `MARK <n>` (`n` counting up
 * from 1 on the connection); the receiver answers `MARKED <n>` once it has
 * handled every line before it (one answer a turn of its event loop, for
 * the turn's greatest mark).
 * The sender keeps at most a window of marks unanswered. The window follows
 * the marks' round trips, as LEDBAT (RFC 6817) does for a background
 * transfer: it widens by one slice for each answer that came back within
 * {@linkcode BULK_TARGET_DELAY_MS} of the fastest round trip seen on the
 * link, and narrows by one otherwise. A fast link then carries no more than
 * about that much of a queue ahead of a live record, and a long one (a wide
 * area network) still keeps its round trip full.
 *
 * A receiver that answers none of a connection's marks for
 * {@linkcode BULK_MARK_PATIENCE_MS} or more (looked at each heartbeat, two
 * looks in a row) does not speak them (a server of a version before them,
 * which drops each `MARK` as a line it does not know, a few of them below
 * its limit for closing the link): the window then stays open and no more
 * marks are sent, so the catch-up goes as fast as the sockets take it, as
 * it did before; unless an answer comes after all, which paces it again.
 */

/** How long a connection's first marks may all go unanswered before the sender stops waiting on marks, in ms. */
export const BULK_MARK_PATIENCE_MS = 10_000;
/** Queueing delay a catch-up may add at the receiver, in milliseconds, over the link's fastest round trip. */
export const BULK_TARGET_DELAY_MS = 20;
/** Slices a connection's window starts with. */
export const BULK_WINDOW_START = 4;
/** Fewest slices in flight (a slice is about 64 KiB): a window never narrows below it. */
export const BULK_WINDOW_MIN = 2;
/** Most slices in flight: 4 MiB, about what the sockets' buffers held before the window. */
export const BULK_WINDOW_MAX = 64;

/** The sender's side: marks sent, answers received, and whether another slice may go. */
export class BulkWindow {
  #sent = 0;
  #answered = 0;
  #window = BULK_WINDOW_START;
  /** The fastest round trip of a mark on this connection, in ms. */
  #baseMs = Infinity;
  /** When each unanswered mark was sent (`performance.now()`), oldest first; index 0 is mark `#answered + 1`. */
  #sentAt: number[] = [];
  #waiters: (() => void)[] = [];
  #closed = false;
  /** The receiver answered none of the marks in time ({@linkcode BulkWindow.giveUpIfUnanswered}). */
  #unpaced = false;
  /** The last look found the first mark past its patience, unanswered: the next one decides. */
  #doubted = false;

  /** Whether another slice may be sent now. */
  get open(): boolean {
    return this.#closed || this.#unpaced || this.#sent - this.#answered < this.#window;
  }

  /** Whether slices are still to be followed by a mark: not once the receiver was found not to answer them. */
  get marking(): boolean {
    return !this.#unpaced;
  }

  /** Slices that may be in flight at once, now. */
  get size(): number {
    return this.#window;
  }

  /** Marks sent and not answered yet. */
  get unanswered(): number {
    return this.#sent - this.#answered;
  }

  /** The number of the mark (`MARK <n>`) to follow a slice about to be written. */
  mark(now = performance.now()): number {
    this.#sentAt.push(now);
    return ++this.#sent;
  }

  /**
   * The receiver's `MARKED <n>`: every mark up to `n` is answered. Returns
   * false, changing nothing, for a mark never sent or answered already (a
   * line the receiver should not have sent).
   */
  answered(n: number, now = performance.now()): boolean {
    if (n <= this.#answered || n > this.#sent) return false;
    const sentAt = this.#sentAt[n - this.#answered - 1];
    this.#sentAt.splice(0, n - this.#answered);
    this.#answered = n;
    // An answer after giving up (one that waited unread through a pause of ours): paced again from here on.
    this.#unpaced = false;
    const roundTripMs = now - sentAt;
    this.#baseMs = Math.min(this.#baseMs, roundTripMs);
    this.#window = roundTripMs - this.#baseMs <= BULK_TARGET_DELAY_MS
      ? Math.min(BULK_WINDOW_MAX, this.#window + 1)
      : Math.max(BULK_WINDOW_MIN, this.#window - 1);
    if (this.open) this.#release();
    return true;
  }

  /**
   * Looked at now and then (each heartbeat): when no mark of this
   * connection has been answered and the first went `patienceMs` ago or
   * more, at two looks in a row, stops pacing (see above) and returns true,
   * once. Two looks: a look that comes late (a pause of this process) may
   * come before the answer waiting unread in the socket; by the next look it
   * has been read. An answer that comes after all makes the window pace again.
   */
  giveUpIfUnanswered(now = performance.now(), patienceMs = BULK_MARK_PATIENCE_MS): boolean {
    if (this.#unpaced || this.#closed || this.#answered > 0 || this.#sentAt.length === 0) return false;
    if (now - this.#sentAt[0] < patienceMs) return false;
    if (!this.#doubted) {
      this.#doubted = true;
      return false;
    }
    this.#unpaced = true;
    this.#release();
    return true;
  }

  /** Resolves once another slice may be sent, or the connection is gone ({@linkcode BulkWindow.close}). */
  opened(): Promise<void> {
    if (this.open) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  /** The connection is gone: nothing waits on its answers any more. */
  close(): void {
    this.#closed = true;
    this.#release();
  }

  #release(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const resolve of waiters) resolve();
  }
}
