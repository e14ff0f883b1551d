/**
 * The herd's log lines in the test's own process: LogTape configured with a
 * sink that keeps each line's text (values as they are, unquoted), and reset
 * when the capture is disposed. One capture at a time: LogTape's
 * configuration is global.
 */

import { configure, type LogRecord, reset } from "@logtape/logtape";

/** Log lines captured so far, and the means to stop capturing. */
export interface CapturedLogs extends AsyncDisposable {
  /** Each line as `<level> <message>`, in order. */
  readonly lines: string[];
  /** How many lines match `pattern`. */
  count(pattern: RegExp): number;
}

function _text(record: LogRecord): string {
  return record.message.map((part) => typeof part === "string" ? part : String(part)).join("");
}

/** Captures every line of the `herd` loggers, debug and up, until disposed. */
export async function captureLogs(): Promise<CapturedLogs> {
  const lines: string[] = [];
  await configure({
    sinks: { memory: (record: LogRecord) => void lines.push(`${record.level} ${_text(record)}`) },
    loggers: [
      { category: ["herd"], sinks: ["memory"], lowestLevel: "debug" },
      { category: ["logtape", "meta"], sinks: [], lowestLevel: "warning" },
    ],
  });
  return {
    lines,
    count: (pattern) => lines.filter((line) => pattern.test(line)).length,
    [Symbol.asyncDispose]: () => reset(),
  };
}
