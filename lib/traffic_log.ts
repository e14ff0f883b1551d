/**
 * The traffic log: the per-line and per-record events, formatted at once
 * and handed to LogTape in batches, off the path of replies.
 */

import { beforeFileLine, log, logFile } from "./logging.ts";

/** Where an event happened, as the log's category says it (`herd.client`, ...). */
export type TrafficCategory = "client" | "peer" | "places";

/** How long events gather before they go to the log file together, in ms. */
const _FLUSH_MS = 10;
/**
 * Events gathered up to this many characters go at once, timer or not: under
 * a fill of a million IAMATs, 10 ms of lines made strings and buffers of
 * 180 KB, and a server settled 7 bytes per client larger (buffers of 128 KiB
 * and more are mapped by malloc one by one). Below the scenarios' rates the
 * timer comes first.
 */
const _FLUSH_CHARS = 64 * 1024;

/** The levels traffic events are written at, as the log file writes them. */
export type TrafficLevel = "DBG" | "INF";

/**
 * The high-volume events: every client line and reply, every record stored
 * and forwarded, and per batch the records a peer link read or wrote. A
 * LogTape call per event is too costly at tens of thousands of events a
 * second (CHANGELOG.md, "performance, first pass": traffic log); so each
 * event is formatted at once into a log line of its own (time, level,
 * category, text), and the lines gathered over 10 ms go to the log file
 * together, as they are. Only the file gets them.
 */
export class TrafficLog {
  /**
   * Whether debug events are written (`log.level` `debug`). Callers check it
   * before making the text of a debug event, so at `info` one costs nothing.
   */
  debug = false;
  #lines: string[] = [];
  #chars = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #lastMs = 0;
  #lastIso = "";

  /** Records one event of `category`; `text` is the message, values already quoted (with `quote()` from logging.ts). */
  event(category: TrafficCategory, text: string, level: TrafficLevel = "INF"): void {
    if (level === "DBG" && !this.debug) return;
    const now = Date.now();
    if (now !== this.#lastMs) {
      this.#lastMs = now;
      this.#lastIso = new Date(now).toISOString();
    }
    const line = `${this.#lastIso} [${level}] herd.${category}: ${text}\n`;
    this.#lines.push(line);
    this.#chars += line.length;
    if (this.#chars >= _FLUSH_CHARS) {
      this.flush();
      return;
    }
    if (this.#timer === undefined) {
      // On a timer, not at the end of this turn: the flush (a join) then never sits between a turn's reads and its
      // replies, and one flush carries the turns of the log file's spacing of writes (10 ms).
      this.#timer = setTimeout(() => this.flush(), _FLUSH_MS);
    }
  }

  /** Hands the events so far to LogTape (and stops the timer that would have). */
  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#chars = 0;
    if (this.#lines.length === 0) return;
    const lines = this.#lines.join("");
    this.#lines = [];
    const file = logFile();
    if (file !== undefined) file.write(lines);
    else log.traffic.info("{lines}", { lines });
  }
}

/** The server's traffic log. */
export const traffic: TrafficLog = new TrafficLog();
// What LogTape writes to the file goes behind the traffic gathered before it.
beforeFileLine(() => traffic.flush());
