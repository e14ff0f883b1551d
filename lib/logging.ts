/**
 * Logging with LogTape: every event goes to `<logDir>/<Name>.log` through a
 * non-blocking file sink; start-up, shutdown and warnings also go to the
 * console, where `deno task herd` prefixes them with the server name.
 * Nothing here ever writes to a client socket.
 */

import {
  configure,
  dispose,
  getConsoleSink,
  getLogger,
  getTextFormatter,
  type Logger,
  type LogRecord,
  withFilter,
} from "@logtape/logtape";
import { getFileSink } from "@logtape/file";

/** Loggers by concern. */
export const log: {
  server: Logger;
  client: Logger;
  peer: Logger;
  places: Logger;
} = {
  server: getLogger(["herd", "server"]),
  client: getLogger(["herd", "client"]),
  peer: getLogger(["herd", "peer"]),
  places: getLogger(["herd", "places"]),
};

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
      return JSON.stringify(value);
    case "number":
    case "bigint":
    case "boolean":
      return String(value);
    default:
      return value instanceof Error ? JSON.stringify(value.message) : JSON.stringify(value) ?? String(value);
  }
}

/**
 * One log line per record: ISO time, level, category, message, with string
 * values JSON-quoted so a client's exact line (control characters and all)
 * survives. Cheaper than LogTape's text formatter, which inspects every
 * value: this runs several times per command.
 */
export function formatFileLine(record: LogRecord): string {
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
  /** Directory of the log file; created if missing. */
  logDir: string;
  /** Server name: the file is `<logDir>/<name>.log`. */
  name: string;
}

/** Configures LogTape for one server and returns the log file's path. */
export async function setupLogging(options: LoggingOptions): Promise<string> {
  await Deno.mkdir(options.logDir, { recursive: true });
  const path = `${options.logDir}/${options.name}.log`;
  // The console is read by people: values unquoted. The file keeps them quoted, so a line's exact text survives.
  const consoleFormatter = getTextFormatter({
    timestamp: "time",
    category: ".",
    value: (value, inspect) => typeof value === "string" ? value : inspect(value),
  });
  await configure({
    sinks: {
      file: getFileSink(path, {
        formatter: formatFileLine,
        nonBlocking: true,
        bufferSize: 64 * 1024,
        flushInterval: 100,
      }),
      console: getConsoleSink({ formatter: consoleFormatter }),
      consoleWarnings: withFilter(getConsoleSink({ formatter: consoleFormatter }), "warning"),
    },
    loggers: [
      { category: ["herd"], sinks: ["file"], lowestLevel: "debug" },
      { category: ["herd", "server"], sinks: ["console"] },
      { category: ["herd", "peer"], sinks: ["consoleWarnings"] },
      { category: ["herd", "places"], sinks: ["consoleWarnings"] },
      { category: ["logtape", "meta"], sinks: ["consoleWarnings"], lowestLevel: "warning" },
    ],
  });
  return path;
}

/** Flushes and closes every sink. */
export async function shutdownLogging(): Promise<void> {
  await dispose();
}
