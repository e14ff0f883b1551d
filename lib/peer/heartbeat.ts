/**
 * The watch on one peer link's silence (`peers.heartbeatMs`,
 * `peers.heartbeatTimeoutMs`): a link whose other end has said nothing for
 * the timeout is given up, so that a neighbour gone without closing its
 * connection (its host powered off, a network that drops packets) is seen
 * as down within seconds, not after the many minutes TCP keeps trying, and
 * the broadcast trees go around it (peer/tree.ts). Each end speaks when it
 * has been quiet for half a heartbeat: the dialer `PING` (answered `PONG`),
 * the acceptor `PONG` (wire.ts). Each end's silence is then the other's
 * to judge, even when one direction is busy with a long backlog.
 */

/** Options for {@linkcode Heartbeat}. */
export interface HeartbeatOptions {
  /** How often the link is looked at, in milliseconds: `peers.heartbeatMs`. */
  intervalMs: number;
  /** How long the other end may say nothing, in milliseconds: `peers.heartbeatTimeoutMs`. */
  timeoutMs: number;
  /** At each look while the link lives: how long the other end has said nothing, in milliseconds. */
  onTick?(silentMs: number): void;
  /** The other end said nothing for the timeout: called once, and the watch stops. */
  onSilent(silentMs: number): void;
}

/** Watches one link from its start until {@linkcode Heartbeat.stop}. */
export class Heartbeat {
  #options: HeartbeatOptions;
  #lastHeard: number;
  #lastTick: number;
  /** Whether the last look came late (see {@linkcode Heartbeat.#tick}). */
  #lastLate = false;
  #timer: ReturnType<typeof setInterval> | undefined;

  /** Starts watching: the link counts as heard from now. */
  constructor(options: HeartbeatOptions) {
    this.#options = options;
    this.#lastHeard = this.#lastTick = performance.now();
    this.#timer = setInterval(() => this.#tick(), options.intervalMs);
  }

  /** The other end said something. */
  heard(): void {
    this.#lastHeard = performance.now();
  }

  /** Stops watching. */
  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #tick(): void {
    const now = performance.now();
    const { intervalMs, timeoutMs } = this.#options;
    const gap = now - this.#lastTick;
    this.#lastTick = now;
    // This process was held up (a long pause, SIGSTOP): the other end could not be heard meanwhile, and what it sent
    // may be waiting unread in the socket. The pause does not count as its silence, and the link is not judged at
    // this look, but it still says it is there (onTick: the dialer's PING, the acceptor's PONG), so that the other
    // end hears from us at once. Only the first of late looks in a row is let off: by the next one what was waiting
    // has been read, so a server whose timers always run late (an event loop kept busy) still gives up on a dead
    // neighbour, a look or so after the timeout.
    const excused = gap > intervalMs * 1.5 && !this.#lastLate;
    this.#lastLate = gap > intervalMs * 1.5;
    if (excused) this.#lastHeard = Math.min(now, this.#lastHeard + gap - intervalMs);
    const silentMs = now - this.#lastHeard;
    if (!excused && silentMs >= timeoutMs) {
      this.stop();
      this.#options.onSilent(silentMs);
      return;
    }
    this.#options.onTick?.(silentMs);
  }
}
