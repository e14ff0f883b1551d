/**
 * Polling the herd's admin endpoints for the dashboard: every server's
 * `/status` every `statusIntervalMs` (each with a short timeout, so a server
 * that died or froze shows as down within a second), and `/density` from one
 * answering server every `densityIntervalMs` (every server holds every
 * record, so one count is the herd's).
 */

import { adminUrl, askAdminJson } from "../admin/ask.ts";
import { isDensityReport } from "../admin/density.ts";
import { isStatusReport } from "../admin/status.ts";
import type { HerdConfig } from "../config/config.ts";
import type { WorldDrawing } from "./map.ts";
import { type DensityView, densityView, type HerdView, herdView, type StatusAnswer } from "./view.ts";

/** Options for {@linkcode HerdPoller}. */
export interface HerdPollerOptions {
  /** The bearer token for admin endpoints off loopback (`HERD_ADMIN_TOKEN`). */
  token?: string;
  /**
   * How often every server's `/status` is asked for, in milliseconds.
   * @default {500}
   */
  statusIntervalMs?: number;
  /**
   * How long a server has to answer `/status` before it is shown down, in milliseconds.
   * @default {400}
   */
  statusTimeoutMs?: number;
  /**
   * How often `/density` is asked for, in milliseconds.
   * @default {5000}
   */
  densityIntervalMs?: number;
  /** Called after every round of `/status` answers. */
  onStatus(view: HerdView): void;
  /** Called with every new density count. */
  onDensity(view: DensityView): void;
}

/** {@linkcode askAdminJson}, each failure in words that name `url`: the value, or what failed. */
async function _getJson<T>(
  url: string,
  token: string | undefined,
  timeoutMs: number,
  valid: (value: unknown) => value is T,
): Promise<{ value: T } | { error: string }> {
  const answer = await askAdminJson(url, token, timeoutMs, valid);
  if (answer.ok) return { value: answer.value };
  switch (answer.failure) {
    case "http":
      return { error: `${url} answered HTTP ${answer.status}` };
    case "not-json":
      return { error: `${url} answered something that is not JSON: another program on the adminPort?` };
    case "not-herd":
      return { error: `${url} answered JSON that is not a herd server's: another program on the adminPort?` };
    case "timeout":
      return { error: `no answer from ${url} within ${timeoutMs} ms` };
    case "unreachable":
      return { error: `${url} is not reachable: ${answer.detail}` };
  }
}

/** Polls the herd's admin endpoints until stopped. */
export class HerdPoller {
  #config: HerdConfig;
  #drawing: WorldDrawing;
  #options: HerdPollerOptions;
  #stopping = new AbortController();
  #loops: Promise<void>[] = [];
  #status: HerdView | undefined;
  #density: DensityView | undefined;

  /** A poller of `config`'s servers whose density cells are projected onto `drawing`. */
  constructor(config: HerdConfig, drawing: WorldDrawing, options: HerdPollerOptions) {
    this.#config = config;
    this.#drawing = drawing;
    this.#options = options;
  }

  /** The latest round of `/status` answers, if any. */
  get status(): HerdView | undefined {
    return this.#status;
  }

  /** The latest density count, if any. */
  get density(): DensityView | undefined {
    return this.#density;
  }

  /** Starts polling. */
  start(): void {
    this.#loops.push(this.#statusLoop(), this.#densityLoop());
  }

  /** Stops polling; resolves once no request is in flight. */
  async stop(): Promise<void> {
    this.#stopping.abort();
    await Promise.all(this.#loops);
  }

  /** Resolves after `ms`, or at once when stopping. */
  #pause(ms: number): Promise<void> {
    const signal = this.#stopping.signal;
    if (signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener("abort", done);
    });
  }

  async #statusLoop(): Promise<void> {
    const interval = this.#options.statusIntervalMs ?? 500;
    const timeout = this.#options.statusTimeoutMs ?? 400;
    while (!this.#stopping.signal.aborted) {
      const started = performance.now();
      const answers = new Map<string, StatusAnswer>();
      await Promise.all([...this.#config.servers].map(async ([name, server]) => {
        if (server.adminPort === undefined) return;
        const answer = await _getJson(
          adminUrl(server.host, server.adminPort, "/status"),
          this.#options.token,
          timeout,
          isStatusReport,
        );
        answers.set(name, "value" in answer ? { report: answer.value } : answer);
      }));
      if (this.#stopping.signal.aborted) return;
      this.#status = herdView(this.#config, answers, new Date());
      this.#options.onStatus(this.#status);
      await this.#pause(Math.max(0, interval - (performance.now() - started)));
    }
  }

  /** The answering server with the most records: the fullest count of where clients are. */
  #densitySource(): string | undefined {
    let best: { name: string; records: number } | undefined;
    for (const server of this.#status?.servers ?? []) {
      if (server.records === null) continue;
      if (best === undefined || server.records > best.records) best = { name: server.name, records: server.records };
    }
    return best?.name;
  }

  async #densityLoop(): Promise<void> {
    const interval = this.#options.densityIntervalMs ?? 5000;
    // A server counts when asked, so its first answer may have no count yet: ask again soon.
    const retry = this.#options.statusIntervalMs ?? 500;
    while (!this.#stopping.signal.aborted) {
      const name = this.#densitySource();
      if (name === undefined) {
        await this.#pause(retry);
        continue;
      }
      const server = this.#config.servers.get(name)!;
      const answer = await _getJson(
        adminUrl(server.host, server.adminPort!, "/density"),
        this.#options.token,
        Math.max(interval / 2, 1000),
        isDensityReport,
      );
      if (this.#stopping.signal.aborted) return;
      if ("error" in answer || answer.value.computedAt === null) {
        await this.#pause(retry);
        continue;
      }
      const report = answer.value;
      if (this.#density?.from !== name || this.#density.computedAt !== report.computedAt) {
        this.#density = densityView(this.#drawing, report, name);
        this.#options.onDensity(this.#density);
      }
      await this.#pause(interval);
    }
  }
}
