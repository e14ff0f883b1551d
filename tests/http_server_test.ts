/** ResilientHttpServer: Deno.serve served again after its accepting fails, with a doubling pause, until shut down. */

import assert from "node:assert/strict";
import { FIRST_RETRY_MS, ResilientHttpServer } from "../lib/net/http_server.ts";
import { waitFor } from "./testing/wait.ts";

/** A stand-in for Deno.serve: each server's accepting can be failed by hand; `refusals` serves throw first. */
function fakeServe(refusals: number) {
  const servers: { fail: (error: Error) => void; finished: Promise<void>; shutdowns: number }[] = [];
  let calls = 0;
  const serve = (options: Deno.ServeTcpOptions): Deno.HttpServer<Deno.NetAddr> => {
    calls++;
    if (calls > 1 && refusals-- > 0) throw new Error("Too many open files (os error 24)");
    let fail!: (error: Error) => void;
    const finished = new Promise<void>((_, reject) => fail = reject);
    const entry = { fail, finished, shutdowns: 0 };
    servers.push(entry);
    return {
      addr: { transport: "tcp", hostname: options.hostname!, port: options.port === 0 ? 4321 : options.port! },
      finished,
      shutdown: () => {
        entry.shutdowns++;
        return Promise.resolve();
      },
    } as unknown as Deno.HttpServer<Deno.NetAddr>;
  };
  return { serve, servers, calls: () => calls };
}

Deno.test("ResilientHttpServer serves again on the same address after its accepting fails, pausing longer each time", async () => {
  const fake = fakeServe(2);
  const failures: [string, number][] = [];
  let recovered = 0;
  const server = new ResilientHttpServer({
    hostname: "127.0.0.1",
    port: 0,
    onFailure: (error, retryMs) => failures.push([error.message, retryMs]),
    onRecovered: () => recovered++,
    serve: fake.serve,
  }, () => new Response("ok"));
  assert.deepEqual(server.addr, { transport: "tcp", hostname: "127.0.0.1", port: 4321 });
  fake.servers[0].fail(new Error("Too many open files (os error 24)"));
  await waitFor(() => recovered === 1, { what: "the endpoint served again" });
  // The first failure, then two serves refused, each pausing twice as long.
  assert.deepEqual(failures, [
    ["Too many open files (os error 24)", FIRST_RETRY_MS],
    ["Too many open files (os error 24)", FIRST_RETRY_MS * 2],
    ["Too many open files (os error 24)", FIRST_RETRY_MS * 4],
  ]);
  assert.equal(fake.calls(), 4);
  assert.equal(fake.servers.length, 2);
  await server.shutdown();
  assert.equal(fake.servers[1].shutdowns, 1, "the serving one is shut down");
  assert.equal(fake.servers[0].shutdowns, 0);
});

Deno.test("ResilientHttpServer shut down while it waits to serve again serves no more", async () => {
  const fake = fakeServe(0);
  const failures: number[] = [];
  const server = new ResilientHttpServer({
    hostname: "127.0.0.1",
    port: 8080,
    onFailure: (_, retryMs) => failures.push(retryMs),
    onRecovered: () => assert.fail("served again after shutdown"),
    serve: fake.serve,
  }, () => new Response("ok"));
  fake.servers[0].fail(new Error("Too many open files (os error 24)"));
  await waitFor(() => failures.length === 1, { what: "the failure reported" });
  await server.shutdown();
  // The retry's timer is cleared: the test's sanitizer fails it if a timer is left, and no second serve is made.
  assert.equal(fake.calls(), 1);
});

Deno.test("ResilientHttpServer: a clean shutdown of the server is no failure", async () => {
  const fake = fakeServe(0);
  const server = new ResilientHttpServer({
    hostname: "127.0.0.1",
    port: 8080,
    onFailure: () => assert.fail("a failure reported"),
    onRecovered: () => assert.fail("served again"),
    serve: fake.serve,
  }, () => new Response("ok"));
  await server.shutdown();
  fake.servers[0].fail(new Error("closed"));
  // Handlers run in the order they were added: the server's own, added first, has run once ours has.
  await fake.servers[0].finished.catch(() => {});
  assert.equal(fake.calls(), 1);
});
