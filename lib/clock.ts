/** The server's clock, read in one place: the protocol's code stays pure. */

/** What a {@linkcode WallClock} reads: the runtime's clocks, or a test's. */
export interface ClockSources {
  /** The wall clock in whole milliseconds since the epoch (`Date.now()`): follows the system clock when it is set. */
  dateNow(): number;
  /** A monotonic clock in fractional milliseconds (`performance.now()`): fine-grained, blind to the clock being set. */
  perfNow(): number;
  /** The wall-clock time in milliseconds at which `perfNow()` read 0 (`performance.timeOrigin`). */
  timeOrigin: number;
}

/**
 * The wall-clock time in nanoseconds: the monotonic clock's resolution
 * (`performance.now()`, sub-microsecond), kept on the system's wall clock
 * (`Date.now()`, whole milliseconds).
 *
 * The monotonic clock alone, offset once by `performance.timeOrigin`,
 * would never follow the system clock being set: a server started before
 * NTP set the clock (at boot, say) would stamp every IAMAT with a wrong
 * time for as long as it ran, and judge the skew allowance against it. So
 * each reading also reads `Date.now()`, which says the true offset between
 * the two clocks lies in a window one millisecond wide; the clock keeps the
 * intersection of the windows seen so far, which narrows to microseconds
 * as readings fall at different points of a millisecond. A window outside
 * it means the system clock was set (or the clocks drift apart, where the
 * monotonic clock is not disciplined like the wall clock): the clock starts
 * again from that window, so it is off by at most a millisecond at once and
 * narrows again.
 */
export class WallClock {
  #sources: ClockSources;
  /** Whole milliseconds: times are `#base + perfNow() + #offset`, so the sums in floating point stay small. */
  #base: number;
  #offset: number;
  #low = -Infinity;
  #high = Infinity;

  /** A clock on `sources` (the runtime's by default). */
  constructor(sources: ClockSources = _runtime) {
    this.#sources = sources;
    this.#base = Math.floor(sources.timeOrigin);
    this.#offset = sources.timeOrigin - this.#base;
  }

  /** The current wall-clock time in integer nanoseconds since the epoch. */
  nowNs(): bigint {
    const before = this.#sources.perfNow();
    const wall = this.#sources.dateNow() - this.#base;
    const after = this.#sources.perfNow();
    // Date.now() read some time between the two readings of the monotonic clock, and truncates: the true time then was
    // in [wall, wall + 1) ms, so the offset is at least wall - after and less than wall + 1 - before.
    const low = wall - after;
    const high = wall + 1 - before;
    if (low > this.#high || high <= this.#low) {
      // Disjoint from every window before: the system clock was set.
      this.#low = low;
      this.#high = high;
      this.#offset = (low + high) / 2;
    } else {
      this.#low = Math.max(this.#low, low);
      this.#high = Math.min(this.#high, high);
      if (this.#offset < this.#low) this.#offset = this.#low;
      else if (this.#offset >= this.#high) this.#offset = this.#high;
    }
    const ms = after + this.#offset;
    const whole = Math.floor(ms);
    return (BigInt(this.#base) + BigInt(whole)) * 1_000_000n + BigInt(Math.round((ms - whole) * 1e6));
  }
}

const _runtime: ClockSources = {
  dateNow: () => Date.now(),
  perfNow: () => performance.now(),
  timeOrigin: performance.timeOrigin,
};

const _clock = new WallClock();

/** The current wall-clock time in integer nanoseconds since the epoch (see {@linkcode WallClock}). */
export function nowNs(): bigint {
  return _clock.nowNs();
}
