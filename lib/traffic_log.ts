/**
 * The traffic log: the per-line and per-record events, formatted at once
 * and handed to LogTape in batches, off the path of replies.
 */

import { log } from "./logging.ts";

/**
 * The high-volume events: every client line and reply, every record
 * received, stored, dropped and forwarded. A LogTape call per event is too
 * costly at tens of thousands of events a second (docs/PERFORMANCE.md,
 * "What logging, the disk and the store cost"); so each event is formatted at once into a log line of its
 * own (time, level, category, text), and the lines gathered until the
 * next timer tick (about a millisecond) go to LogTape together, as one
 * record the file sink writes out as it is. Only the file gets them.
 */
/** Where an event happened, as the log's category says it (`herd.client`, ...). */
export type TrafficCategory = "client" | "peer" | "places";

/** The levels traffic events are written at, as the log file writes them. */
export type TrafficLevel = "DBG" | "INF";

/** The batched log of high-volume events. */
export class TrafficLog {
  #lines: string[] = [];
  #scheduled = false;
  #lastMs = 0;
  #lastIso = "";

  /** Records one event of `category`; `text` is the message, values already quoted (with `quote()` from logging.ts). */
  event(category: TrafficCategory, text: string, level: TrafficLevel = "INF"): void {
    const now = Date.now();
    if (now !== this.#lastMs) {
      this.#lastMs = now;
      this.#lastIso = new Date(now).toISOString();
    }
    this.#lines.push(`${this.#lastIso} [${level}] herd.${category}: ${text}\n`);
    if (!this.#scheduled) {
      this.#scheduled = true;
      // On a timer, not at the end of this turn: the flush (a join and a file write) then never sits between a
      // turn's reads and its replies, and one flush carries a millisecond or so of turns.
      setTimeout(() => this.flush(), 0);
    }
  }

  /** Hands the events so far to LogTape. */
  flush(): void {
    this.#scheduled = false;
    if (this.#lines.length === 0) return;
    const lines = this.#lines.join("");
    this.#lines = [];
    log.traffic.info("{lines}", { lines });
  }
}

/** The server's traffic log. */
export const traffic: TrafficLog = new TrafficLog();
