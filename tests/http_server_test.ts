/**
 * ResilientHttpServer, the admin port's and the dashboard's HTTP endpoint: its connection cap, request deadline, head
 * and body limits, answers written whole, and its accept loop that lives on after a failed accept.
 */

import assert from "node:assert/strict";
import { type HttpLimits, ResilientHttpServer } from "../lib/net/http_server.ts";
import { waitFor } from "./testing/wait.ts";

const PERMISSIONS: Deno.PermissionOptionsObject = { net: ["127.0.0.1"] };
const encoder = new TextEncoder();
const decoder = new TextDecoder();

function start(
  handler: (request: Request) => Response | Promise<Response> = () => new Response("ok\n"),
  limits: Partial<HttpLimits> = {},
): ResilientHttpServer {
  return new ResilientHttpServer({
    hostname: "127.0.0.1",
    port: 0,
    onFailure: (error) => assert.fail(`a failure reported: ${error.message}`),
    onRecovered: () => assert.fail("recovered without a failure"),
    limits,
  }, handler);
}

/** Everything the server sends on `conn` until it closes it. */
async function readToEnd(conn: Deno.Conn): Promise<string> {
  const chunks: string[] = [];
  const buffer = new Uint8Array(64 * 1024);
  try {
    for (let n = await conn.read(buffer); n !== null; n = await conn.read(buffer)) {
      chunks.push(decoder.decode(buffer.subarray(0, n), { stream: true }));
    }
  } catch { /* reset */ }
  return chunks.join("");
}

async function raw(port: number, request: string): Promise<string> {
  using conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(encoder.encode(request));
  return await readToEnd(conn);
}

Deno.test({
  name: "ResilientHttpServer answers one request per connection with its length, and closes it",
  permissions: PERMISSIONS,
}, async () => {
  const seen: { method: string; url: string; body: string }[] = [];
  const server = start(async (request) => {
    seen.push({ method: request.method, url: request.url, body: await request.text() });
    return new Response("héllo\n", { status: 201, headers: { "x-one": "1" } });
  });
  try {
    const answer = await raw(
      server.addr.port,
      "POST /path?q=1 HTTP/1.1\r\nHost: example.test:99\r\nContent-Length: 5\r\n\r\nabcde",
    );
    assert.equal(
      answer.replace(/\r\ndate: [^\r]+ GMT\r\n/, "\r\n"),
      "HTTP/1.1 201 Created\r\ncontent-type: text/plain;charset=UTF-8\r\nx-one: 1\r\nconnection: close\r\n" +
        "content-length: 7\r\n\r\nhéllo\n",
    );
    assert.match(answer, /\r\ndate: \w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} GMT\r\n/);
    // The URL from the Host header as sent, as Deno.serve makes it.
    assert.deepEqual(seen, [{ method: "POST", url: "http://example.test:99/path?q=1", body: "abcde" }]);
    // fetch() too, twice: nothing is kept alive to be reused.
    for (let i = 0; i < 2; i++) {
      const response = await fetch(`http://127.0.0.1:${server.addr.port}/again`);
      assert.equal(await response.text(), "héllo\n");
    }
    const head = await raw(server.addr.port, "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert.match(head, /^HTTP\/1\.1 201 Created\r\n[^]*content-length: 7\r\n\r\n$/);
  } finally {
    await server.shutdown();
  }
});

Deno.test({
  name: "ResilientHttpServer streams a body of a given length, and an event stream until it ends",
  permissions: PERMISSIONS,
}, async () => {
  let events!: ReadableStreamDefaultController<Uint8Array>;
  const server = start((request) => {
    if (request.url.endsWith("/file")) {
      const body = ReadableStream.from([encoder.encode("ab"), encoder.encode("cd")]);
      return new Response(body, { headers: { "content-length": "4" } });
    }
    return new Response(new ReadableStream({ start: (controller) => events = controller }), {
      headers: { "content-type": "text/event-stream" },
    });
  });
  try {
    assert.match(
      await raw(server.addr.port, "GET /file HTTP/1.1\r\nHost: x\r\n\r\n"),
      /content-length: 4\r\n\r\nabcd$/,
    );
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
    await conn.write(encoder.encode("GET /events HTTP/1.1\r\nHost: x\r\n\r\n"));
    const all = readToEnd(conn);
    await waitFor(() => events !== undefined, { what: "the event stream to start" });
    events.enqueue(encoder.encode("data: 1\n\n"));
    events.enqueue(encoder.encode("data: 2\n\n"));
    events.close();
    const answer = await all;
    conn.close();
    assert.doesNotMatch(answer, /content-length/);
    assert.match(answer, /\r\n\r\ndata: 1\n\ndata: 2\n\n$/);
  } finally {
    await server.shutdown();
  }
});

Deno.test({
  name: "ResilientHttpServer past maxConnections closes the oldest connection whose request is still being read, " +
    "and answers 503 when every one is being answered",
  permissions: PERMISSIONS,
}, async () => {
  const waiting: (() => void)[] = [];
  const server = start(async (request) => {
    if (request.url.endsWith("/slow")) await new Promise<void>((resolve) => waiting.push(resolve));
    return new Response("ok\n");
  }, { maxConnections: 3 });
  const held: Deno.Conn[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
      await conn.write(encoder.encode("GET / HTTP/1.1\r\n")); // half a head
      held.push(conn);
    }
    await waitFor(() => server.connections === 3, { what: "three connections open" });
    const oldest = readToEnd(held[0]);
    assert.match(await raw(server.addr.port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"), /^HTTP\/1\.1 200 OK\r\n[^]*ok\n$/);
    assert.equal(await oldest, "", "the oldest half-sent request gave way, unanswered");
    for (const conn of held) conn.close();
    held.length = 0;
    await waitFor(() => server.connections === 0, { what: "the closed ones to leave" });
    // Three requests being answered: a fourth is refused, and served once one of them is done.
    const slow = [0, 1, 2].map(() => raw(server.addr.port, "GET /slow HTTP/1.1\r\n\r\n"));
    await waitFor(() => waiting.length === 3, { what: "three requests in the handler" });
    assert.match(await raw(server.addr.port, "GET / HTTP/1.1\r\n\r\n"), /^HTTP\/1\.1 503 Service Unavailable\r\n/);
    waiting.shift()!();
    await waitFor(() => server.connections === 2, { what: "the answered one to leave" });
    assert.match(await raw(server.addr.port, "GET / HTTP/1.1\r\n\r\n"), /^HTTP\/1\.1 200 /);
    for (const release of waiting) release();
    await Promise.all(slow);
  } finally {
    for (const conn of held) conn.close();
    await server.shutdown();
  }
});

Deno.test({
  name: "ResilientHttpServer closes a connection whose request has not come whole within requestTimeoutMs",
  permissions: PERMISSIONS,
}, async () => {
  const server = start(undefined, { requestTimeoutMs: 300 });
  try {
    for (const partial of ["", "GET / HTTP/1.1\r\nHost: x\r\n", "POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nabc"]) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
      const started = performance.now();
      if (partial !== "") await conn.write(encoder.encode(partial));
      assert.equal(await readToEnd(conn), "", "closed with no answer");
      const ms = performance.now() - started;
      conn.close();
      assert.ok(ms >= 250 && ms < 5_000, `closed after ${Math.round(ms)} ms`);
    }
    await waitFor(() => server.connections === 0, { what: "no connection left open" });
  } finally {
    await server.shutdown();
  }
});

Deno.test({
  name: "ResilientHttpServer refuses a head over maxHeadBytes (431), a body over maxBodyBytes (413), a chunked one " +
    "(411) and a bad request line (400), without asking the handler",
  permissions: PERMISSIONS,
}, async () => {
  let asked = 0;
  const server = start(() => {
    asked++;
    return new Response("ok\n");
  }, { maxHeadBytes: 1024, maxBodyBytes: 10 });
  try {
    const port = server.addr.port;
    assert.match(await raw(port, `GET / HTTP/1.1\r\nX-Big: ${"a".repeat(2000)}\r\n\r\n`), /^HTTP\/1\.1 431 /);
    assert.match(await raw(port, "POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n"), /^HTTP\/1\.1 413 /);
    assert.match(await raw(port, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"), /^HTTP\/1\.1 411 /);
    assert.match(await raw(port, "GET /  HTTP/1.1\r\n\r\n"), /^HTTP\/1\.1 400 /);
    assert.match(await raw(port, "GET http://elsewhere/ HTTP/1.1\r\n\r\n"), /^HTTP\/1\.1 400 /);
    assert.match(await raw(port, "GET / HTTP/1.1\r\nbad header\r\n\r\n"), /^HTTP\/1\.1 400 /);
    assert.match(await raw(port, "GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), /^HTTP\/1\.1 400 /);
    assert.equal(asked, 0);
    // Within the limits, answered.
    assert.match(await raw(port, "POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789"), /^HTTP\/1\.1 200 /);
    assert.equal(asked, 1);
  } finally {
    await server.shutdown();
  }
});

Deno.test({
  name: "ResilientHttpServer answers 500 when its handler throws, and serves on",
  permissions: PERMISSIONS,
}, async () => {
  const server = start((request) => {
    if (request.url.endsWith("/throw")) throw new Error("boom");
    return new Response("ok\n");
  });
  try {
    assert.match(await raw(server.addr.port, "GET /throw HTTP/1.1\r\n\r\n"), /^HTTP\/1\.1 500 /);
    assert.match(await raw(server.addr.port, "GET / HTTP/1.1\r\n\r\n"), /^HTTP\/1\.1 200 /);
  } finally {
    await server.shutdown();
  }
});

Deno.test({
  name: "ResilientHttpServer sends no length with a 204, answers Expect: 100-continue (HTTP/1.1 only), and makes a " +
    "URL of its own address when there is no Host, as Deno.serve",
  permissions: PERMISSIONS,
}, async () => {
  const urls: string[] = [];
  const server = start(async (request) => {
    urls.push(request.url);
    const body = await request.text();
    return body === "" ? new Response(null, { status: 204 }) : new Response(`got ${body}\n`);
  });
  try {
    const port = server.addr.port;
    const empty = await raw(port, "GET /nohost HTTP/1.1\r\n\r\n");
    assert.match(empty, /^HTTP\/1\.1 204 No Content\r\n/);
    assert.doesNotMatch(empty, /content-length/);
    assert.deepEqual(urls, [`http://localhost:${port}/nohost`]);
    // The client waits for 100 Continue before its body: it gets it, sends the body, and is answered.
    using conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.write(encoder.encode("POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"));
    const buffer = new Uint8Array(1024);
    const n = await conn.read(buffer);
    assert.equal(decoder.decode(buffer.subarray(0, n ?? 0)), "HTTP/1.1 100 Continue\r\n\r\n");
    await conn.write(encoder.encode("abc"));
    assert.match(await readToEnd(conn), /^HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\ngot abc\n$/);
    // HTTP/1.0: the expectation is ignored; the body comes unasked.
    const old = await raw(port, "POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nxyz");
    assert.match(old, /^HTTP\/1\.1 200 OK\r\n[^]*got xyz\n$/);
    assert.doesNotMatch(old, /100 Continue/);
  } finally {
    await server.shutdown();
  }
});

/** A listener whose accepts fail with `error()` `failures` times, then are the real one's. */
function failingListen(failures: number, error: () => Error) {
  let accepts = 0;
  const listen = (options: Deno.TcpListenOptions & { transport: "tcp" }): Deno.TcpListener => {
    const real = Deno.listen(options);
    return {
      addr: real.addr,
      accept: () => {
        accepts++;
        return failures-- > 0 ? Promise.reject(error()) : real.accept();
      },
      close: () => real.close(),
    } as unknown as Deno.TcpListener;
  };
  return { listen, accepts: () => accepts };
}

Deno.test({
  name: "ResilientHttpServer accepts again after its accepts fail, and says so once, not at every failure",
  permissions: PERMISSIONS,
}, async () => {
  const fake = failingListen(3, () => new Error("Too many open files (os error 24)"));
  const failures: [string, number][] = [];
  let recovered = 0;
  const server = new ResilientHttpServer({
    hostname: "127.0.0.1",
    port: 0,
    onFailure: (error, retryMs) => failures.push([error.message, retryMs]),
    onRecovered: () => recovered++,
    listen: fake.listen,
  }, () => new Response("ok\n"));
  try {
    assert.match(await raw(server.addr.port, "GET / HTTP/1.1\r\n\r\n"), /^HTTP\/1\.1 200 /);
    assert.deepEqual(failures, [["Too many open files (os error 24)", 100]]);
    assert.equal(recovered, 1);
    assert.ok(fake.accepts() >= 4, `${fake.accepts()} accepts`);
  } finally {
    await server.shutdown();
  }
});

Deno.test({
  name: "ResilientHttpServer passes over a connection reset before it was accepted, at once and without a word",
  permissions: PERMISSIONS,
}, async () => {
  const fake = failingListen(5, () => new Deno.errors.NotConnected("Socket is not connected (os error 107)"));
  const server = new ResilientHttpServer({
    hostname: "127.0.0.1",
    port: 0,
    onFailure: (error) => assert.fail(`a failure reported: ${error.message}`),
    onRecovered: () => assert.fail("recovered without a failure"),
    listen: fake.listen,
  }, () => new Response("ok\n"));
  try {
    const started = performance.now();
    assert.match(await raw(server.addr.port, "GET / HTTP/1.1\r\n\r\n"), /^HTTP\/1\.1 200 /);
    // Paused after each, as for a failure, it would take 500 ms.
    assert.ok(performance.now() - started < 400, `answered after ${Math.round(performance.now() - started)} ms`);
    assert.ok(fake.accepts() >= 6, `${fake.accepts()} accepts`);
  } finally {
    await server.shutdown();
  }
});

Deno.test({
  name: "ResilientHttpServer shut down while it pauses after a failed accept accepts no more",
  permissions: PERMISSIONS,
}, async () => {
  const fake = failingListen(1, () => new Error("Too many open files (os error 24)"));
  const failures: number[] = [];
  const server = new ResilientHttpServer({
    hostname: "127.0.0.1",
    port: 0,
    onFailure: (_, retryMs) => failures.push(retryMs),
    onRecovered: () => assert.fail("accepted again after the shutdown"),
    listen: fake.listen,
  }, () => new Response("ok\n"));
  await waitFor(() => failures.length === 1, { what: "the failure reported" });
  await server.shutdown();
  await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port: server.addr.port }));
});

Deno.test({
  name: "ResilientHttpServer's shutdown closes connections whose request is still coming in at once",
  permissions: PERMISSIONS,
}, async () => {
  const server = start();
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
  await conn.write(encoder.encode("GET / HTTP/1.1\r\n"));
  await waitFor(() => server.connections === 1, { what: "the connection open" });
  const started = performance.now();
  await server.shutdown();
  // Not the 5 s an answer being written is given.
  assert.ok(performance.now() - started < 2_000, `shut down in ${Math.round(performance.now() - started)} ms`);
  assert.equal(await readToEnd(conn), "");
});

Deno.test({
  name: "ResilientHttpServer answers 400 to a request that makes no Request, and to a target that is not a path",
  permissions: PERMISSIONS,
}, async () => {
  let asked = 0;
  const seen: string[] = [];
  const server = start(async (request) => {
    asked++;
    seen.push(`${request.method} ${new URL(request.url).pathname} ${JSON.stringify(await request.text())}`);
    return new Response("ok\n");
  });
  try {
    for (
      const request of [
        "CONNECT /x HTTP/1.1\r\n\r\n",
        "TRACE / HTTP/1.1\r\n\r\n",
        "GET * HTTP/1.1\r\n\r\n",
        "GET /a\x01b HTTP/1.1\r\n\r\n",
      ]
    ) {
      assert.match(await raw(server.addr.port, request), /^HTTP\/1\.1 400 Bad Request\r\n/, JSON.stringify(request));
    }
    assert.equal(asked, 0);
    // A lowercase method of the standard ones is made upper case by Request, as by Deno.serve (a GET's body is left).
    assert.match(await raw(server.addr.port, "get / HTTP/1.1\r\nContent-Length: 2\r\n\r\nab"), /^HTTP\/1\.1 200 /);
    // And a path that starts with two slashes is a path, not a host.
    assert.match(await raw(server.addr.port, "GET //a:99999/ HTTP/1.1\r\n\r\n"), /^HTTP\/1\.1 200 /);
    assert.match(await raw(server.addr.port, "GET //[ HTTP/1.1\r\n\r\n"), /^HTTP\/1\.1 200 /);
    assert.match(await raw(server.addr.port, "Post / HTTP/1.1\r\nContent-Length: 2\r\n\r\nab"), /^HTTP\/1\.1 200 /);
    assert.equal(asked, 4);
    assert.deepEqual(seen, ['GET / ""', 'GET //a:99999/ ""', 'GET //[ ""', 'POST / "ab"']);
  } finally {
    await server.shutdown();
  }
});

Deno.test({
  name: "ResilientHttpServer past maxConnections closes the oldest event stream when no request is coming in",
  permissions: PERMISSIONS,
}, async () => {
  const server = start((request) => {
    if (!request.url.endsWith("/events")) return new Response("ok\n");
    return new Response(new ReadableStream({ start: (c) => c.enqueue(encoder.encode("data: hi\n\n")) }), {
      headers: { "content-type": "text/event-stream" },
    });
  }, { maxConnections: 2 });
  const streams: Deno.Conn[] = [];
  try {
    for (let i = 0; i < 2; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
      await conn.write(encoder.encode("GET /events HTTP/1.1\r\n\r\n"));
      const buffer = new Uint8Array(1024);
      assert.match(decoder.decode(buffer.subarray(0, (await conn.read(buffer)) ?? 0)), /^HTTP\/1\.1 200 /);
      streams.push(conn);
    }
    const ended = [false, false];
    readToEnd(streams[0]).then(() => ended[0] = true);
    readToEnd(streams[1]).then(() => ended[1] = true);
    assert.match(await raw(server.addr.port, "GET / HTTP/1.1\r\n\r\n"), /^HTTP\/1\.1 200 [^]*ok\n$/);
    await waitFor(() => ended[0], { what: "the oldest stream to be closed" });
    assert.equal(ended[1], false, "the newer stream is kept");
  } finally {
    for (const conn of streams) conn.close();
    await server.shutdown();
  }
});

Deno.test({
  name: "ResilientHttpServer's shutdown lets the answer being written finish",
  permissions: PERMISSIONS,
}, async () => {
  let release!: () => void;
  const server = start(async () => {
    await new Promise<void>((resolve) => release = resolve);
    return new Response("late\n");
  });
  const answer = raw(server.addr.port, "GET / HTTP/1.1\r\n\r\n");
  await waitFor(() => release !== undefined, { what: "the request in the handler" });
  const stopped = server.shutdown();
  release();
  await stopped;
  assert.match(await answer, /\r\n\r\nlate\n$/);
});
