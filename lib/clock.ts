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
 * How fast the two clocks may drift apart, as a fraction (200 ppm): the
 * window of the offset widens by this much of the time between readings.
 * Linux disciplines its monotonic clock with the wall clock, so they do not
 * drift there; other systems' monotonic clocks may run free.
 */
const _DRIFT = 200e-6;

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
 * intersection of the windows seen so far (widened as time passes by what
 * the clocks may drift apart, {@linkcode _DRIFT}), which narrows to
 * microseconds as readings fall at different points of a millisecond, and
 * moves the offset into it. A window outside it means the system clock was
 * set: the clock starts again from that window, so it is off by at most a
 * millisecond at once and narrows again.
 */
export class WallClock {
  #sources: ClockSources;
  /**
   * Whole milliseconds: times are `#base + perfNow() + #offset`, with the
   * offset kept under a millisecond or so (the base takes the rest), so the
   * sums in floating point keep their nanoseconds.
   */
  #base: number;
  #offset: number;
  #low = -Infinity;
  #high = Infinity;
  #last = 0;

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
    const slack = (after - this.#last) * _DRIFT;
    this.#last = after;
    const keptLow = this.#low - slack;
    const keptHigh = this.#high + slack;
    if (low > keptHigh || high < keptLow) {
      // Disjoint from every window before, drift allowed for: the system clock was set.
      this.#low = low;
      this.#high = high;
      this.#offset = (low + high) / 2;
    } else {
      this.#low = Math.max(keptLow, low);
      this.#high = Math.min(keptHigh, high);
      this.#offset = Math.min(Math.max(this.#offset, this.#low), this.#high);
    }
    if (this.#offset >= 1 || this.#offset < 0) {
      // The base takes the whole milliseconds, the window and the offset keep the fraction.
      const shift = Math.floor(this.#offset);
      this.#base += shift;
      this.#low -= shift;
      this.#high -= shift;
      this.#offset -= shift;
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
