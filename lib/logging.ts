/**
 * Logging with LogTape: every event goes to `<logDir>/<Name>.log` through
 * our own rotating file sink (log_file.ts); start-up, shutdown and warnings also go to the
 * console, where `deno task herd` prefixes them with the server name.
 * Nothing here ever writes to a client socket.
 */

import {
  configure,
  getConsoleSink,
  getLogger,
  getTextFormatter,
  type LogRecord,
  reset,
  withFilter,
} from "@logtape/logtape";
import { LogFile } from "./log_file.ts";
import { makePrivateDirectory, openDirectoryWarning } from "./private_files.ts";

/** The category of the traffic log's batches (see traffic_log.ts): written to the file as they are. */
export const TRAFFIC_CATEGORY = "herd.traffic";

/** Properties of a log message, named in its template: `"Link to {neighbour} is up"`. */
export type LogProperties = Record<string, unknown>;

/** A logger of one concern, at the levels the herd uses (LogTape's `Logger` behind it). */
export interface HerdLogger {
  /** Detail for whoever debugs. */
  debug(message: string, properties?: LogProperties): void;
  /** What happened, in the normal course. */
  info(message: string, properties?: LogProperties): void;
  /** Something an operator should look at. */
  warning(message: string, properties?: LogProperties): void;
  /** Something failed. */
  error(message: string, properties?: LogProperties): void;
}

/** The loggers of the herd, one per concern. */
export interface HerdLoggers {
  /** Start-up, shutdown, the disk. */
  server: HerdLogger;
  /** Client connections. */
  client: HerdLogger;
  /** Peer links and reconciliation. */
  peer: HerdLogger;
  /** The Places service. */
  places: HerdLogger;
  /** The traffic log's batches (traffic_log.ts). */
  traffic: HerdLogger;
}

/** Loggers by concern. */
export const log: HerdLoggers = {
  server: getLogger(["herd", "server"]),
  client: getLogger(["herd", "client"]),
  peer: getLogger(["herd", "peer"]),
  places: getLogger(["herd", "places"]),
  traffic: getLogger(["herd", "traffic"]),
};

/** A value quoted for the log, so a line's exact text (control characters and all) survives. */
export function quote(value: string): string {
  return JSON.stringify(value);
}

/** Longest text value a log line carries whole, in UTF-16 code units; longer ones are cut (see {@linkcode cutForLog}). */
export const LOGGED_VALUE_MAX = 300;

/**
 * `value` cut to `max` code units for the log, its full length noted:
 * a peer or client chooses what it sends, not how much of the log it fills.
 */
export function cutForLog(value: string, max: number = LOGGED_VALUE_MAX): string {
  if (value.length <= max) return value;
  return `${value.slice(0, max)}... (${new TextEncoder().encode(value).length} bytes in all)`;
}

/**
 * A text of the server's own for the log, written whole (quoted and with
 * control characters escaped as any text, but not cut): why a server cannot
 * start, with what to do, is worth every character.
 */
export class WholeText {
  /** The text. */
  readonly text: string;
  /** Wraps `text`. */
  constructor(text: string) {
    this.text = text;
  }
}

// C0 and C1 controls and DEL: a value shown on a terminal must not move its cursor or change its colours.
// deno-lint-ignore no-control-regex
const _CONTROLS = /[\u0000-\u001f\u007f-\u009f]/g;

/** A text value for the console: cut, with control characters written as `\u001b` escapes. */
function _consoleText(value: string, max?: number): string {
  return cutForLog(value, max).replace(_CONTROLS, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

const _LEVELS: Record<string, string> = {
  trace: "TRC",
  debug: "DBG",
  info: "INF",
  warning: "WRN",
  error: "ERR",
  fatal: "FTL",
};

function _fileValue(value: unknown): string {
  switch (typeof value) {
    case "string":
      return JSON.stringify(cutForLog(value));
    case "number":
    case "bigint":
    case "boolean":
      return String(value);
    default:
      if (value instanceof WholeText) return JSON.stringify(value.text);
      return value instanceof Error ? JSON.stringify(cutForLog(value.message)) : JSON.stringify(value) ?? String(value);
  }
}

/**
 * One log line per record: ISO time, level, category, message, with string
 * values JSON-quoted so a client's exact line (control characters and all)
 * survives. Cheaper than LogTape's text formatter, which inspects every
 * value: this runs several times per command.
 */
function _formatFileLine(record: LogRecord): string {
  if (record.category.join(".") === TRAFFIC_CATEGORY) return record.properties.lines as string;
  let message = "";
  for (let i = 0; i < record.message.length; i++) {
    const part = record.message[i];
    message += i % 2 === 0 ? part as string : _fileValue(part);
  }
  return `${new Date(record.timestamp).toISOString()} [${_LEVELS[record.level]}] ${
    record.category.join(".")
  }: ${message}\n`;
}

/** Options for {@linkcode setupLogging}. */
export interface LoggingOptions {
  /** Directory of the log file; created if missing, mode 0700 (see private_files.ts). */
  logDir: string;
  /** Server name: the file is `<logDir>/<name>.log`. */
  name: string;
  /** Size at which the file is rotated, in bytes. */
  maxBytes: number;
  /** Log files kept, the current one included. */
  files: number;
  /** The lowest level written to the file. */
  level: "info" | "debug";
  /**
   * While another process holds the log file, lines are held back from it
   * until {@linkcode releaseLogFile} (see `LogFileOptions.holdWhileShared`).
   */
  holdWhileShared?: boolean;
}

/** The log file of this process, once {@linkcode setupLogging} opened it. */
let _file: LogFile | undefined;
/** Runs before each of LogTape's lines goes to the file (see {@linkcode beforeFileLine}). */
let _beforeFileLine: (() => void) | undefined;

/**
 * Sets what runs before each of LogTape's lines is queued for the file: the
 * traffic log hands over the lines it gathered first, so the file stays in
 * the order things happened.
 */
export function beforeFileLine(hook: () => void): void {
  _beforeFileLine = hook;
}

/** The log file of this process (for its counters), once opened. */
export function logFile(): LogFile | undefined {
  return _file;
}

/**
 * Configures LogTape for one server and returns the log file's path. A log
 * directory that other users can enter is warned about, once logging works.
 */
export async function setupLogging(options: LoggingOptions): Promise<string> {
  const open = makePrivateDirectory(options.logDir);
  const path = `${options.logDir}/${options.name}.log`;
  const file = await LogFile.open(path, {
    maxBytes: options.maxBytes,
    files: options.files,
    holdWhileShared: options.holdWhileShared,
  });
  _file = file;
  const fileSink = Object.assign((record: LogRecord) => {
    _beforeFileLine?.();
    file.write(_formatFileLine(record));
  }, {
    [Symbol.asyncDispose]: () => file.close(),
  });
  // The console is read by people: values unquoted, but cut and with control characters escaped. The file keeps
  // them quoted, so a line's exact text survives (cut to a bound too).
  const consoleFormatter = getTextFormatter({
    timestamp: "time",
    category: ".",
    value: (value, inspect) =>
      typeof value === "string"
        ? _consoleText(value)
        : value instanceof WholeText
        ? _consoleText(value.text, Infinity)
        : inspect(value),
  });
  await configure({
    sinks: {
      // Our own file sink (log_file.ts): rotated by size, written in the background, bounded in memory. LogTape's
      // file sinks write and fsync per flush on the event loop, and their buffers grow without bound when the
      // disk cannot keep up (CHANGELOG.md, "performance, first pass": log file sink, traffic log).
      file: fileSink,
      console: getConsoleSink({ formatter: consoleFormatter }),
      consoleWarnings: withFilter(getConsoleSink({ formatter: consoleFormatter }), "warning"),
    },
    loggers: [
      { category: ["herd"], sinks: ["file"], lowestLevel: options.level },
      { category: ["herd", "server"], sinks: ["console"] },
      { category: ["herd", "peer"], sinks: ["consoleWarnings"] },
      { category: ["herd", "places"], sinks: ["consoleWarnings"] },
      { category: ["logtape", "meta"], sinks: ["consoleWarnings"], lowestLevel: "warning" },
    ],
  });
  if (open !== undefined) log.server.warning(...openDirectoryWarning(open));
  return path;
}

/** Writes the lines held back from the log file, and the next ones as they come. */
export function releaseLogFile(): void {
  _file?.release();
}

/**
 * When another process holds the log file (the server running under this
 * name), drops the lines held back from it and writes no more to it; the
 * console still has what it showed. Else does nothing.
 */
export function abandonLogFileIfShared(): void {
  _file?.abandonIfShared();
}

/** Flushes and closes every sink, and drops the configuration: {@linkcode setupLogging} may run again. */
export async function shutdownLogging(): Promise<void> {
  await reset();
}
