/** Accepting connections on a listener, for as long as it is open. */

import { log } from "../logging.ts";

/** How long a failed accept waits before trying again, in milliseconds. */
const _RETRY_MS = 100;
/** How often failed accepts are logged at most, in milliseconds. */
const _REPORT_MS = 10_000;

/**
 * What a failed accept means: `stop`, the listener is closed; `next`, one
 * connection went before it was accepted (its client reset or aborted it:
 * the kernel still hands it over, and asking for its address fails), which
 * says nothing of the listener, so the next is accepted at once; `pause`,
 * anything else (out of file descriptors, say): retried after a pause.
 */
export function acceptFailure(error: unknown): "stop" | "next" | "pause" {
  if (error instanceof Deno.errors.BadResource || error instanceof Deno.errors.Interrupted) return "stop";
  if (
    error instanceof Deno.errors.NotConnected || error instanceof Deno.errors.ConnectionReset ||
    error instanceof Deno.errors.ConnectionAborted
  ) return "next";
  return "pause";
}

/** Says that accepting failed, and that it works again; at most once per ten seconds each. */
export interface AcceptReporter {
  /** Accepting failed with `error`; it is tried again every `retryMs`. */
  failed(error: Error, retryMs: number): void;
  /** An accept succeeded after `failures` failed ones. */
  recovered(failures: number): void;
}

/** Closes a socket or listener, which may be closed already (or not there at all). */
export function closeQuietly(resource: { close(): void } | undefined): void {
  try {
    resource?.close();
  } catch { /* closed already */ }
}

/**
 * Accepts on `listener` until it closes, handing each connection (Nagle
 * off) to `onConn`. A connection its client reset before it was accepted
 * is passed over; any other failed accept (out of file descriptors, say) is
 * reported (at most once per ten seconds: to the server's log, or to
 * `reporter`) and retried after a pause: it must not stop the server
 * accepting for good. `what` names the connections in the log.
 */
export async function acceptLoop(
  listener: Deno.TcpListener,
  what: string,
  onConn: (conn: Deno.TcpConn) => void,
  reporter?: AcceptReporter,
): Promise<void> {
  // Failed accepts since a recovery was last said, and when a failure and a recovery were last logged: each at most
  // once per _REPORT_MS, since out of descriptors accepts fail and succeed in turn as connections come and go.
  let failures = 0;
  let reportedAt = -Infinity;
  let recoveredAt = -Infinity;
  while (true) {
    let conn: Deno.TcpConn;
    try {
      conn = await listener.accept();
    } catch (error) {
      const failure = acceptFailure(error);
      if (failure === "stop") return;
      // A client that resets its connection at once must not hold up the clients after it.
      if (failure === "next") continue;
      failures++;
      if (performance.now() - reportedAt >= _REPORT_MS) {
        if (reporter !== undefined) reporter.failed(error as Error, _RETRY_MS);
        else {
          log.server.error(`Accepting {what} failed: {error}; retrying every ${_RETRY_MS} ms`, {
            what,
            error: (error as Error).message,
          });
        }
        reportedAt = performance.now();
      }
      await new Promise((resolve) => setTimeout(resolve, _RETRY_MS));
      continue;
    }
    if (failures > 0 && performance.now() - recoveredAt >= _REPORT_MS) {
      if (reporter !== undefined) reporter.recovered(failures);
      else {
        log.server.warning(
          `Accepting {what} again, after ${failures} failed ${failures === 1 ? "accept" : "accepts"}`,
          { what },
        );
      }
      recoveredAt = performance.now();
      failures = 0;
    }
    try {
      conn.setNoDelay(true);
    } catch {
      // Reset before it could be set (EINVAL on some systems): passed over, as one reset before its accept is.
      closeQuietly(conn);
      continue;
    }
    onConn(conn);
  }
}
