import assert from "node:assert/strict";
import { type ClockSources, nowNs, WallClock } from "../lib/clock.ts";

/**
 * A machine's clocks, made up, exactly: real time is `start` plus `t` ms (`t` kept small, so that floating point keeps
 * its nanoseconds); the monotonic clock reads `t` (times 1 + a drift, if any); the wall clock reads the real time plus
 * what the system clock was set by (`whole` ms and a fraction `frac`), truncated to whole milliseconds. Each reading
 * advances real time by `stepMs`.
 */
function machine(start: number, stepMs = 0.0003) {
  let whole = Math.floor(start);
  let frac = start - whole;
  let t = 0;
  let drift = 0;
  const sources: ClockSources = {
    dateNow: () => {
      t += stepMs;
      return whole + Math.floor(t + frac);
    },
    perfNow: () => {
      t += stepMs;
      return t * (1 + drift);
    },
    timeOrigin: start,
  };
  return {
    sources,
    advance: (ms: number) => t += ms,
    /** Sets the system clock `ms` later (earlier if negative); the monotonic clock does not notice. */
    setClock: (ms: number) => {
      const moved = frac + ms;
      whole += Math.floor(moved);
      frac = moved - Math.floor(moved);
    },
    drift: (rate: number) => drift = rate,
    /** The wall clock's true time now, in ns. */
    trueNs: () => BigInt(whole) * 1_000_000n + BigInt(Math.round((t + frac) * 1e6)),
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

Deno.test("WallClock follows a wall clock that drifts from the monotonic one smoothly, within tens of microseconds", () => {
  const m = machine(1_796_000_000_000.5);
  const clock = new WallClock(m.sources);
  for (let i = 0; i < 2000; i++) m.advance(0.0731), clock.nowNs();
  for (const rate of [50e-6, -50e-6]) {
    m.drift(rate); // 4.3 s a day, the monotonic clock ahead, then behind
    let previous = clock.nowNs();
    let worst = 0;
    for (let i = 0; i < 100_000; i++) {
      m.advance(0.731);
      const read = clock.nowNs();
      worst = Math.max(worst, offUs(read, m.trueNs()));
      // Readings 0.73 ms apart: one that went back, or jumped, is the clock starting again from a new window.
      const step = Number(read - previous) / 1e6;
      assert.ok(step > 0.7 && step < 0.76, `a step of ${step} ms at reading ${i}, drift ${rate}`);
      previous = read;
    }
    assert.ok(worst < 20, `off by up to ${worst} µs at a drift of ${rate}`);
  }
});

Deno.test("WallClock keeps its microseconds after the clock is set by decades (a machine that booted in 1970)", () => {
  const m = machine(3_600_000.25, 0.000001); // an hour after the epoch; readings close together, windows that narrow
  const clock = new WallClock(m.sources);
  for (let i = 0; i < 100; i++) m.advance(0.13), clock.nowNs();
  m.setClock(1_796_000_000_000 - 3_600_000); // NTP: 56 years later
  let previous = clock.nowNs();
  // Readings at every point of a millisecond narrow the window, then readings 123 ns apart.
  for (let i = 0; i < 20_000; i++) m.advance(0.0731), previous = clock.nowNs();
  for (let i = 0; i < 200_000; i++) {
    m.advance(0.0001234567);
    const read = clock.nowNs();
    assert.ok(offUs(read, m.trueNs()) < 2, `off by ${offUs(read, m.trueNs())} µs at reading ${i}`);
    assert.ok(read > previous, `went back ${previous - read} ns at reading ${i}`);
    previous = read;
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
