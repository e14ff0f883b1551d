import assert from "node:assert/strict";
import { type ClockSources, nowNs, WallClock } from "../lib/clock.ts";

/**
 * A machine's clocks, made up: real time `t` (ms since the epoch, fractional) advances as the test says; the
 * monotonic clock reads `t - start` (plus a drift, if any); the wall clock reads `t + set` truncated to whole
 * milliseconds, `set` being what the system clock was set by; each reading advances real time by `stepMs`.
 */
function machine(start: number, stepMs = 0.0003) {
  let t = start;
  let set = 0;
  let drift = 0;
  const sources: ClockSources = {
    dateNow: () => {
      t += stepMs;
      return Math.floor(t + set);
    },
    perfNow: () => {
      t += stepMs;
      return t - start + drift * (t - start);
    },
    timeOrigin: start,
  };
  return {
    sources,
    advance: (ms: number) => t += ms,
    setClock: (ms: number) => set += ms,
    drift: (rate: number) => drift = rate,
    /** The wall clock's true time now, in ns. */
    trueNs: () => BigInt(Math.round((t + set) * 1e6)),
  };
}

/** |a - b| in microseconds. */
function offUs(a: bigint, b: bigint): number {
  return Math.abs(Number(a - b)) / 1000;
}

Deno.test("WallClock reads the wall clock to within microseconds, from the monotonic clock's resolution", () => {
  const m = machine(1_796_000_000_123.456);
  const clock = new WallClock(m.sources);
  for (let i = 0; i < 1000; i++) {
    m.advance(0.0371);
    const read = clock.nowNs();
    // Between the clock's own readings: the true time is within a microsecond of what it said.
    assert.ok(offUs(read, m.trueNs()) < 1, `read ${read}, true ${m.trueNs()} (reading ${i})`);
  }
});

Deno.test("WallClock follows the system clock when it is set, forward or back, within a millisecond at once", () => {
  const m = machine(1_796_000_000_000.25);
  const clock = new WallClock(m.sources);
  for (let i = 0; i < 100; i++) m.advance(0.13), clock.nowNs();
  // NTP steps the clock two minutes forward, as after a boot without a battery-backed clock.
  m.setClock(120_000.4567);
  m.advance(1);
  let read = clock.nowNs();
  assert.ok(offUs(read, m.trueNs()) < 1000, `off by ${offUs(read, m.trueNs())} µs right after the clock was set`);
  // And narrows again as readings fall at different points of a millisecond.
  for (let i = 0; i < 2000; i++) m.advance(0.0731), read = clock.nowNs();
  assert.ok(offUs(read, m.trueNs()) < 2, `off by ${offUs(read, m.trueNs())} µs 2,000 readings later`);
  // Back by an hour (a wrong clock corrected).
  m.setClock(-3_600_000);
  read = clock.nowNs();
  assert.ok(offUs(read, m.trueNs()) < 1000, `off by ${offUs(read, m.trueNs())} µs after the clock went back`);
});

Deno.test("WallClock corrects a timeOrigin that is wrong from the first reading", () => {
  const m = machine(1_796_000_000_000);
  const clock = new WallClock({ ...m.sources, timeOrigin: 1_796_000_000_000 - 5_000 });
  m.advance(10);
  assert.ok(offUs(clock.nowNs(), m.trueNs()) < 1000);
});

Deno.test("WallClock stays within a millisecond of a wall clock that drifts from the monotonic one", () => {
  const m = machine(1_796_000_000_000.5);
  const clock = new WallClock(m.sources);
  m.drift(50e-6); // 50 ppm: 4.3 s a day
  for (let i = 0; i < 20_000; i++) {
    m.advance(7.3);
    const read = clock.nowNs();
    assert.ok(offUs(read, m.trueNs()) < 1000, `off by ${offUs(read, m.trueNs())} µs at reading ${i}`);
  }
});

Deno.test("nowNs() is the runtime's wall clock, to the millisecond", () => {
  for (let i = 0; i < 100; i++) {
    const before = BigInt(Date.now()) * 1_000_000n;
    const now = nowNs();
    const after = BigInt(Date.now() + 1) * 1_000_000n;
    assert.ok(before <= now && now < after, `${before} <= ${now} < ${after}`);
  }
});
