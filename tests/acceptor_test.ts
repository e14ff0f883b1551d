/** The accept loop: what a failed accept means, and a client that resets its connection before it is accepted. */

import assert from "node:assert/strict";
import net from "node:net";
import { acceptFailure, acceptLoop } from "../lib/net/acceptor.ts";
import { captureLogs } from "./testing/logs.ts";
import { waitFor } from "./testing/wait.ts";

Deno.test("acceptFailure() stops on a closed listener, passes over a connection gone, pauses on anything else", () => {
  assert.equal(acceptFailure(new Deno.errors.BadResource("closed")), "stop");
  assert.equal(acceptFailure(new Deno.errors.Interrupted("closed")), "stop");
  assert.equal(
    acceptFailure(new Deno.errors.NotConnected("Transport endpoint is not connected (os error 107)")),
    "next",
  );
  assert.equal(acceptFailure(new Deno.errors.ConnectionReset("reset")), "next");
  assert.equal(acceptFailure(new Deno.errors.ConnectionAborted("aborted")), "next");
  assert.equal(acceptFailure(new Error("Too many open files (os error 24)")), "pause");
});

Deno.test({
  name: "a connection reset by its client before it is accepted is passed over: no failure logged, the next accepted",
  permissions: { net: ["127.0.0.1"] },
}, async () => {
  await using logs = await captureLogs();
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  // Both wait in the listener's queue before the loop runs: the first reset (an RST: SO_LINGER 0), the second open.
  await new Promise<void>((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1", () => {
      socket.resetAndDestroy();
      resolve();
    });
    socket.on("error", reject);
  });
  const good = await Deno.connect({ hostname: "127.0.0.1", port });
  const accepted: Deno.TcpConn[] = [];
  const loop = acceptLoop(listener, "clients", (conn) => accepted.push(conn));
  await waitFor(() => accepted.length > 0, { what: "the open connection to be accepted" });
  assert.equal(accepted.length, 1);
  assert.equal(accepted[0].remoteAddr.port, good.localAddr.port, "the open one, not the reset one");
  assert.equal(logs.count(/Accepting clients failed/), 0, logs.lines.join("\n"));
  for (const conn of [...accepted, good]) conn.close();
  listener.close();
  await loop;
});
