/**
 * A budget of log lines for events that anyone on the network can cause
 * (refused connections, say): a few a second are written one by one, the
 * rest counted and said in one line once the second is over, so a flood of
 * them cannot fill the log (and rotate out what came before it).
 */

/** Lines written one by one in each second, and what says how many were not. */
export class LogBudget {
  #perSecond: number;
  #summary: (count: number) => void;
  #windowStart = -Infinity;
  #used = 0;
  #suppressed = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;

  /** `perSecond` lines a second; `summary` is called with the count of the others once their second is over. */
  constructor(perSecond: number, summary: (count: number) => void) {
    this.#perSecond = perSecond;
    this.#summary = summary;
  }

  /** Whether one more line may be written now; when not, it is counted for the summary. */
  take(): boolean {
    const now = performance.now();
    if (now - this.#windowStart >= 1000) {
      this.flush();
      this.#windowStart = now;
      this.#used = 0;
    }
    if (this.#used < this.#perSecond) {
      this.#used++;
      return true;
    }
    if (this.#suppressed++ === 0) {
      this.#timer = setTimeout(() => this.flush(), 1000 - (now - this.#windowStart));
      // A summary still due does not keep a stopping process alive.
      Deno.unrefTimer(this.#timer);
    }
    return false;
  }

  /** Says how many were not written, if any, now (when what they came from is gone, say). */
  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#suppressed === 0) return;
    const count = this.#suppressed;
    this.#suppressed = 0;
    this.#summary(count);
  }
}
