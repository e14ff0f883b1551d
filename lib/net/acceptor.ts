/** Accepting connections on a listener, for as long as it is open. */

import { log } from "../logging.ts";

/** How long a failed accept waits before trying again, in milliseconds. */
const _RETRY_MS = 100;

/**
 * Accepts on `listener` until it closes, handing each connection (Nagle
 * off) to `onConn`. A failed accept (out of file descriptors, say) is
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
      if (error instanceof Deno.errors.BadResource || error instanceof Deno.errors.Interrupted) return;
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
