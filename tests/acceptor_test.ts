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

Deno.test("failed accepts are retried, logged at most once per ten seconds, and the recovery said with their count", async () => {
  await using logs = await captureLogs();
  const emfile = () => new Error("Too many open files (os error 24)");
  const conn = (port: number) => ({ remoteAddr: { port }, setNoDelay: () => {} }) as unknown as Deno.TcpConn;
  // Three failures, a connection, two failures, a connection, then the listener closes.
  const script: (Error | Deno.TcpConn)[] = [emfile(), emfile(), emfile(), conn(1), emfile(), emfile(), conn(2)];
  const listener = {
    accept: () => {
      const next = script.shift() ?? new Deno.errors.BadResource("closed");
      return next instanceof Error ? Promise.reject(next) : Promise.resolve(next);
    },
  } as unknown as Deno.TcpListener;
  const accepted: number[] = [];
  await acceptLoop(listener, "clients", (conn) => accepted.push(conn.remoteAddr.port));
  assert.deepEqual(accepted, [1, 2]);
  // The first failure is said; the rest of both runs of failures, within ten seconds of it, only counted. The recovery
  // after the first run is said with its count; the second, within ten seconds of that, is not said again.
  assert.deepEqual(logs.lines.filter((line) => /Accepting clients/.test(line)), [
    "error Accepting clients failed: Too many open files (os error 24); retrying every 100 ms",
    "warning Accepting clients again, after 3 failed accepts",
  ]);
});
