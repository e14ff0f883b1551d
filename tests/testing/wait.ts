/**
 * Waiting in tests: poll a condition until it holds ({@linkcode waitFor}),
 * keep checking one for a period that must pass ({@linkcode checkThroughout}),
 * or pause ({@linkcode delay}). Tests await what they can observe (a port, a
 * log line, a recorded request) with these rather than writing their own
 * deadline loops, and pause only where the pause is what is being tested.
 */

/** Options for {@linkcode waitFor}. */
export interface WaitForOptions {
  /**
   * How long to keep checking before giving up, in milliseconds.
   * @default {10_000}
   */
  timeoutMs?: number;
  /**
   * Pause between two checks, in milliseconds.
   * @default {25}
   */
  stepMs?: number;
  /** What is awaited, named in the timeout's error; a function is called on timeout, so it can show the last value seen. */
  what?: string | (() => string);
}

/** Options for {@linkcode checkThroughout}. */
export interface CheckThroughoutOptions {
  /** How long to keep checking, in milliseconds. */
  durationMs: number;
  /**
   * Pause between two checks, in milliseconds.
   * @default {25}
   */
  stepMs?: number;
}

/** `T` without its falsy values: what {@linkcode waitFor} returns. */
export type Truthy<T> = Exclude<T, false | 0 | 0n | "" | null | undefined>;

/** Resolves after `ms` milliseconds. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Calls `predicate` every `stepMs` until it returns a truthy value, and returns that value; throws once `timeoutMs` have passed. */
export async function waitFor<T>(
  predicate: () => T | Promise<T>,
  options: WaitForOptions = {},
): Promise<Truthy<T>> {
  const { timeoutMs = 10_000, stepMs = 25 } = options;
  const start = performance.now();
  while (true) {
    const value = await predicate();
    if (value) return value as Truthy<T>;
    if (performance.now() - start >= timeoutMs) {
      const what = typeof options.what === "function" ? options.what() : options.what ?? "a condition to hold";
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await delay(stepMs);
  }
}

/** Calls `check` every `stepMs` for `durationMs`, the last time once they have passed; `check` throws (an assertion) to fail. */
export async function checkThroughout(
  check: () => unknown,
  options: CheckThroughoutOptions,
): Promise<void> {
  const { durationMs, stepMs = 25 } = options;
  const start = performance.now();
  while (true) {
    await check();
    if (performance.now() - start >= durationMs) return;
    await delay(stepMs);
  }
}
