/** The server's clock, read in one place: the protocol's code stays pure. */

/** The current wall-clock time in integer nanoseconds since the epoch. */
export function nowNs(): bigint {
  const ms = performance.timeOrigin + performance.now();
  const whole = Math.floor(ms);
  return BigInt(whole) * 1_000_000n + BigInt(Math.round((ms - whole) * 1e6));
}
