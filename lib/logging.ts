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
      file: getFileSink(path, { nonBlocking: true, bufferSize: 64 * 1024, flushInterval: 100 }),
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
