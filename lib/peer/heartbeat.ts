/**
 * The watch on one peer link's silence (`peers.heartbeatMs`,
 * `peers.heartbeatTimeoutMs`): a link whose other end has said nothing for
 * the timeout is given up, so that a neighbour gone without closing its
 * connection (its host powered off, a network that drops packets) is seen
 * as down within seconds, not after the many minutes TCP keeps trying, and
 * the broadcast trees go around it (peer/tree.ts). The dialer asks for a
 * sign of life when the link is quiet (`PING`, answered `PONG`: wire.ts).
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
    const late = now - this.#lastTick > intervalMs * 1.5;
    this.#lastTick = now;
    // This process was held up (a long pause, SIGSTOP): what the other end sent meanwhile may be waiting unread in
    // the socket, so its silence cannot be judged at this look.
    if (late) return;
    const silentMs = now - this.#lastHeard;
    if (silentMs >= timeoutMs) {
      this.stop();
      this.#options.onSilent(silentMs);
      return;
    }
    this.#options.onTick?.(silentMs);
  }
}
