/** Accepting connections on a listener, for as long as it is open. */

import { log } from "../logging.ts";

/** How long a failed accept waits before trying again, in milliseconds. */
const _RETRY_MS = 100;

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

/**
 * Accepts on `listener` until it closes, handing each connection (Nagle
 * off) to `onConn`. A connection its client reset before it was accepted
 * is passed over; any other failed accept (out of file descriptors, say) is
 * logged once and retried after a pause: it must not stop the server
 * accepting for good. `what` names the connections in the log.
 */
export async function acceptLoop(
  listener: Deno.TcpListener,
  what: string,
  onConn: (conn: Deno.TcpConn) => void,
): Promise<void> {
  let failing = false;
  while (true) {
    let conn: Deno.TcpConn;
    try {
      conn = await listener.accept();
    } catch (error) {
      const failure = acceptFailure(error);
      if (failure === "stop") return;
      // A client that resets its connection at once must not hold up the clients after it.
      if (failure === "next") continue;
      if (!failing) {
        log.server.error("Accepting {what} failed: {error}; retrying", { what, error: (error as Error).message });
      }
      failing = true;
      await new Promise((resolve) => setTimeout(resolve, _RETRY_MS));
      continue;
    }
    failing = false;
    conn.setNoDelay(true);
    onConn(conn);
  }
}
