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
  const consoleFormatter = getTextFormatter({ timestamp: "time", category: "." });
  await configure({
    sinks: {
      file: getFileSink(path, { nonBlocking: true, bufferSize: 64 * 1024, flushInterval: 100 }),
      console: withFilter(getConsoleSink({ formatter: consoleFormatter }), "info"),
    },
    loggers: [
      { category: ["herd"], sinks: ["file"], lowestLevel: "debug" },
      { category: ["herd", "server"], sinks: ["console"], lowestLevel: "debug" },
      { category: ["herd", "peer"], sinks: ["console"], lowestLevel: "warning" },
      { category: ["logtape", "meta"], sinks: ["console"], lowestLevel: "warning" },
    ],
  });
  return path;
}

/** Flushes and closes every sink. */
export async function shutdownLogging(): Promise<void> {
  await dispose();
}
