/**
 * What `GET /status` reports of one server, and the recent rates in it:
 * commands per second and the 99th percentile reply time over the last ten
 * seconds, from snapshots of the metrics taken every second.
 */

import { metrics, replyHistogram } from "./metrics.ts";
import { quantileOf } from "./prometheus.ts";
import type { Health } from "./server.ts";

/** One link as `/status` reports it. */
export interface LinkStatus {
  /** The neighbour's name. */
  neighbour: string;
  /** `up`, `lagging` (up, but not waited on) or `down`. */
  state: "up" | "lagging" | "down";
  /** Records queued for it. */
  queued: number;
  /** Acknowledgements of it being waited on. */
  ackWaits: number;
  /** When our link last started a reconciliation with it (ISO time), or null. */
  lastReconciliation: string | null;
}

/** The JSON of `GET /status`. */
export interface StatusReport {
  /** The server's name. */
  name: string;
  /** Seconds since it started. */
  uptimeS: number;
  /** Whether it accepts clients and can commit. */
  health: Health;
  /** Records (clients) held. */
  records: number;
  /** A fingerprint of the store's digest: equal on two servers when they hold the same records. */
  digest: string;
  /** Each neighbour's link. */
  links: LinkStatus[];
  /** Client commands per second, and the 99th percentile reply time in ms (null with no replies), last 10 s. */
  rates: { commandsPerSecond: number; replyP99Ms: number | null };
  /** The Places provider answering WHATSAT, and its cache. */
  places: { provider: string; cacheEntries: number };
  /** Client connections open. */
  clientConnections: number;
  /** Resident memory, in bytes. */
  rssBytes: number;
}

function _object(value: unknown): Record<string, unknown> | undefined {
  return typeof value === "object" && value !== null && !Array.isArray(value)
    ? value as Record<string, unknown>
    : undefined;
}

/**
 * Whether `value` (parsed JSON) has the fields of a {@linkcode StatusReport}
 * that `deno task status` and the dashboard read, of the right types: an
 * admin port may be answered by another program, or by a server of another
 * version, and what reads the answer must not crash on it.
 */
export function isStatusReport(value: unknown): value is StatusReport {
  const report = _object(value);
  const health = _object(report?.health);
  const rates = _object(report?.rates);
  const places = _object(report?.places);
  return report !== undefined && typeof report.records === "number" && typeof report.digest === "string" &&
    typeof report.uptimeS === "number" && typeof report.clientConnections === "number" &&
    Array.isArray(report.links) &&
    report.links.every((link) => typeof _object(link)?.state === "string" && typeof link.neighbour === "string") &&
    typeof health?.ok === "boolean" && typeof health.reason === "string" &&
    typeof rates?.commandsPerSecond === "number" &&
    (rates.replyP99Ms === null || typeof rates.replyP99Ms === "number") && typeof places?.provider === "string";
}

/** How many one-second snapshots the window spans. */
const _WINDOW_S = 10;

function _commandsTotal(): number {
  let total = 0;
  for (const series of Object.values(metrics.commands)) total += series.value;
  return total;
}

function _replyCounts(): Float64Array {
  const counts = new Float64Array(replyHistogram.bounds.length + 1);
  for (const { series } of replyHistogram.series()) {
    for (let i = 0; i < counts.length; i++) counts[i] += series.counts[i];
  }
  return counts;
}

/** Snapshots of the command counters and reply histogram, one a second, for rates over the last ten seconds. */
export class RecentRates {
  #snapshots: { at: number; commands: number; replies: Float64Array }[] = [];
  #timer: ReturnType<typeof setInterval> | undefined;

  /** Starts taking a snapshot every second. */
  start(): void {
    this.#take();
    this.#timer = setInterval(() => this.#take(), 1000);
  }

  /** Stops taking snapshots. */
  stop(): void {
    clearInterval(this.#timer);
  }

  #take(): void {
    this.#snapshots.push({ at: performance.now(), commands: _commandsTotal(), replies: _replyCounts() });
    if (this.#snapshots.length > _WINDOW_S + 1) this.#snapshots.shift();
  }

  /** Commands per second and p99 reply time (ms) between the oldest snapshot and now. */
  rates(): { commandsPerSecond: number; replyP99Ms: number | null } {
    const oldest = this.#snapshots[0];
    if (oldest === undefined) return { commandsPerSecond: 0, replyP99Ms: null };
    const seconds = Math.max((performance.now() - oldest.at) / 1000, 0.001);
    const p99 = quantileOf(replyHistogram.bounds, oldest.replies, _replyCounts(), 0.99);
    return {
      commandsPerSecond: Math.round((_commandsTotal() - oldest.commands) / seconds * 10) / 10,
      replyP99Ms: Number.isNaN(p99) ? null : p99 * 1000,
    };
  }
}
