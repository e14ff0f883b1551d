/** The fault proxy on its own, in front of a plain echo server on loopback. */

import assert from "node:assert/strict";
import { CUT, delay, DROP, FaultProxy, PASS, throttle, UNKNOWN_SOURCE } from "./testing/fault_proxy.ts";
// `delay` here is the proxy's fault; the pause between writes is wait.ts's.
import { checkThroughout, delay as pause, waitFor } from "./testing/wait.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** An echo server that counts connections and remembers the first chunk of each. */
class EchoServer implements AsyncDisposable {
  readonly port: number;
  /** First bytes each connection sent, decoded. */
  readonly firstChunks: string[] = [];
  #listener: Deno.TcpListener;
  #conns = new Set<Deno.TcpConn>();
  #tasks = new Set<Promise<void>>();
  #accepting: Promise<void>;

  constructor() {
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.port = this.#listener.addr.port;
    this.#accepting = this.#accept();
  }

  /** Connections accepted so far. */
  get accepted(): number {
    return this.firstChunks.length;
  }

  async #accept(): Promise<void> {
    for await (const conn of this.#listener) {
      this.#conns.add(conn);
      const task = this.#echo(conn).finally(() => {
        this.#conns.delete(conn);
        this.#tasks.delete(task);
      });
      this.#tasks.add(task);
    }
  }

  async #echo(conn: Deno.TcpConn): Promise<void> {
    const index = this.firstChunks.push("") - 1;
    const buffer = new Uint8Array(64 * 1024);
    try {
      while (true) {
        const n = await conn.read(buffer);
        if (n === null) break;
        if (this.firstChunks[index] === "") this.firstChunks[index] = decoder.decode(buffer.subarray(0, n));
        for (let offset = 0; offset < n;) offset += await conn.write(buffer.subarray(offset, n));
      }
      await conn.closeWrite();
    } catch { /* closed under us */ }
    try {
      conn.close();
    } catch { /* already closed */ }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.#listener.close();
    await this.#accepting;
    for (const conn of this.#conns) {
      try {
        conn.close();
      } catch { /* already closed */ }
    }
    await Promise.all(this.#tasks);
  }
}

/** A client connection that reads in the background, so a test can wait for bytes or for silence. */
class Client implements AsyncDisposable {
  #conn: Deno.TcpConn;
  #chunks: Uint8Array[] = [];
  #ended = false;
  #reading: Promise<void>;

  private constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
    this.#reading = this.#read();
  }

  /** Connects to `port` and, when given, sends `first` at once. */
  static async connect(port: number, first?: string): Promise<Client> {
    const client = new Client(await Deno.connect({ hostname: "127.0.0.1", port }));
    if (first !== undefined) await client.write(first);
    return client;
  }

  /** Everything received so far. */
  get text(): string {
    return decoder.decode(this.bytes);
  }

  /** Everything received so far, as bytes. */
  get bytes(): Uint8Array {
    const out = new Uint8Array(this.#chunks.reduce((sum, chunk) => sum + chunk.length, 0));
    let offset = 0;
    for (const chunk of this.#chunks) {
      out.set(chunk, offset);
      offset += chunk.length;
    }
    return out;
  }

  /** Whether the proxy closed the connection (end of stream or an error). */
  get ended(): boolean {
    return this.#ended;
  }

  async write(text: string | Uint8Array): Promise<void> {
    const bytes = typeof text === "string" ? encoder.encode(text) : text;
    for (let offset = 0; offset < bytes.length;) offset += await this.#conn.write(bytes.subarray(offset));
  }

  closeWrite(): Promise<void> {
    return this.#conn.closeWrite();
  }

  /** Polls until `done()` holds; fails after `timeoutMs`. Returns the milliseconds it took. */
  async until(done: () => boolean, what: string, timeoutMs = 3000): Promise<number> {
    const start = performance.now();
    await waitFor(done, { timeoutMs, stepMs: 5, what: () => `${what}; got ${JSON.stringify(this.text)}` });
    return performance.now() - start;
  }

  /** Waits until the received text is exactly `text`. */
  receive(text: string, timeoutMs = 3000): Promise<number> {
    return this.until(() => this.text === text, `received ${JSON.stringify(text)}`, timeoutMs);
  }

  /** Watches for `ms` and fails if anything arrives or the connection ends. */
  async quietFor(ms: number): Promise<void> {
    const before = this.text;
    await checkThroughout(() => {
      assert.equal(this.text, before, "nothing may arrive");
      assert.ok(!this.#ended, "the connection must stay open");
    }, { durationMs: ms, stepMs: 10 });
  }

  async #read(): Promise<void> {
    const buffer = new Uint8Array(64 * 1024);
    try {
      while (true) {
        const n = await this.#conn.read(buffer);
        if (n === null) break;
        this.#chunks.push(buffer.slice(0, n));
      }
    } catch { /* reset or closed by us */ }
    this.#ended = true;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.#conn.close();
    } catch { /* already closed */ }
    await this.#reading;
  }
}

Deno.test("FaultProxy passes bytes both ways and learns the source from the HELLO line", async () => {
  await using echo = new EchoServer();
  await using proxy = new FaultProxy({ targetPort: echo.port });
  assert.equal(proxy.address, `127.0.0.1:${proxy.port}`);
  await using client = await Client.connect(proxy.port, "HELLO Hill\nAT one\n");
  await client.receive("HELLO Hill\nAT one\n");
  await client.write("AT two\n");
  await client.receive("HELLO Hill\nAT one\nAT two\n");
  const stats = proxy.stats("Hill");
  assert.equal(stats.connections, 1);
  assert.equal(stats.open, 1);
  assert.equal(stats.forwardedBytes, 2 * "HELLO Hill\nAT one\nAT two\n".length);
  assert.equal(stats.droppedBytes, 0);
});

Deno.test("FaultProxy carries megabytes intact in both directions", async () => {
  await using echo = new EchoServer();
  await using proxy = new FaultProxy({ targetPort: echo.port });
  await using client = await Client.connect(proxy.port, "HELLO Bulk\n");
  const payload = new Uint8Array(3 << 20).map((_, i) => (i * 7 + 3) % 251);
  await client.write(payload);
  await client.until(() => client.bytes.length === "HELLO Bulk\n".length + payload.length, "3 MiB echoed", 20_000);
  assert.deepEqual(client.bytes.subarray("HELLO Bulk\n".length), payload);
});

Deno.test("FaultProxy gives a connection without HELLO the unknown source and the whole-proxy fault", async () => {
  await using echo = new EchoServer();
  await using proxy = new FaultProxy({ targetPort: echo.port });
  proxy.setAll(delay(0));
  await using client = await Client.connect(proxy.port, "GET / HTTP/1.0\n");
  await client.receive("GET / HTTP/1.0\n");
  assert.equal(proxy.stats(UNKNOWN_SOURCE).connections, 1);
  assert.deepEqual(proxy.faultFor("anyone"), delay(0));
});

Deno.test("FaultProxy reads a first line split over several writes", async () => {
  await using echo = new EchoServer();
  await using proxy = new FaultProxy({ targetPort: echo.port });
  proxy.set("Split", DROP);
  await using client = await Client.connect(proxy.port, "HEL");
  await pause(20); // the first piece arrives on its own: the first line comes in two reads
  await client.write("LO Split\nlost\n");
  await client.until(() => proxy.stats("Split").droppedBytes === 5, "the record after HELLO dropped");
  assert.equal(echo.accepted, 0);
});

Deno.test("FaultProxy delay holds each chunk in each direction and keeps their order", async () => {
  await using echo = new EchoServer();
  await using proxy = new FaultProxy({ targetPort: echo.port });
  await using fast = await Client.connect(proxy.port, "HELLO Fast\n");
  await fast.receive("HELLO Fast\n");
  proxy.set("Slow", delay(150));
  await using slow = await Client.connect(proxy.port, "HELLO Slow\n");
  const helloMs = await slow.receive("HELLO Slow\n");
  assert.ok(helloMs >= 290, `a round trip through a 150 ms delay takes 300 ms, took ${helloMs}`);

  const start = performance.now();
  await slow.write("first\n");
  await fast.write("other source\n");
  const fastMs = await fast.receive("HELLO Fast\nother source\n");
  assert.ok(fastMs < 100, `another source is not delayed, took ${fastMs}`);
  await slow.receive("HELLO Slow\nfirst\n");
  assert.ok(performance.now() - start >= 290);

  // A chunk sent after the delay is lifted must not overtake the ones still held.
  for (let i = 0; i < 10; i++) {
    await slow.write(`held ${i}\n`);
    await pause(5);
  }
  proxy.set("Slow", PASS);
  await slow.write("after\n");
  const expected = "HELLO Slow\nfirst\n" + Array.from({ length: 10 }, (_, i) => `held ${i}\n`).join("") + "after\n";
  await slow.receive(expected);
});

Deno.test("FaultProxy throttle carries bytes intact, paced at its rate, each way", async () => {
  await using echo = new EchoServer();
  await using proxy = new FaultProxy({ targetPort: echo.port });
  proxy.set("Narrow", throttle(100_000));
  await using client = await Client.connect(proxy.port, "HELLO Narrow\n");
  await client.receive("HELLO Narrow\n");
  // 50 kB up and the same back down through 100 kB/s each way: at least half a second, whole and in order.
  const body = Array.from({ length: 1000 }, (_, i) => `line ${String(i).padStart(42, "0")}\n`).join("");
  const start = performance.now();
  await client.write(body);
  await client.receive("HELLO Narrow\n" + body);
  const ms = performance.now() - start;
  assert.ok(ms >= 450, `50 kB through 100 kB/s took ${ms.toFixed(0)} ms`);
  assert.throws(() => throttle(0), RangeError);
});

Deno.test("FaultProxy drop black-holes an open connection both ways, then passes new bytes again", async () => {
  await using echo = new EchoServer();
  await using proxy = new FaultProxy({ targetPort: echo.port });
  await using client = await Client.connect(proxy.port, "HELLO Hole\n");
  await client.receive("HELLO Hole\n");
  proxy.set("Hole", DROP);
  await client.write("lost 1\n");
  await client.write("lost 2\n");
  await client.quietFor(300);
  assert.equal(proxy.stats("Hole").droppedBytes, 14);
  assert.equal(proxy.stats("Hole").open, 1, "a black hole keeps the connection");
  proxy.set("Hole", PASS);
  await client.write("back\n");
  await client.receive("HELLO Hole\nback\n");
  assert.equal(echo.accepted, 1, "the same upstream connection carried on");
});

Deno.test("FaultProxy drop also discards what the server sends", async () => {
  // A server that greets at once and speaks again 200 ms later, unasked.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serving = (async () => {
    using conn = await listener.accept();
    await conn.read(new Uint8Array(100));
    await conn.write(encoder.encode("hi\n"));
    await pause(200);
    await conn.write(encoder.encode("late\n"));
    await conn.read(new Uint8Array(100)); // until the proxy closes
  })();
  try {
    await using proxy = new FaultProxy({ targetPort: listener.addr.port });
    await using client = await Client.connect(proxy.port, "HELLO Hole\n");
    await client.receive("hi\n");
    proxy.set("Hole", DROP);
    await client.quietFor(400);
    assert.equal(proxy.stats("Hole").droppedBytes, 5);
  } finally {
    listener.close();
    await serving;
  }
});

Deno.test("FaultProxy holds a new connection's HELLO during drop and sends it first when passing again", async () => {
  await using echo = new EchoServer();
  await using proxy = new FaultProxy({ targetPort: echo.port });
  proxy.set("Late", DROP);
  await using client = await Client.connect(proxy.port, "HELLO Late\nAT lost\n");
  await client.until(() => proxy.stats("Late").droppedBytes === 8, "the record dropped");
  assert.equal(echo.accepted, 0, "nothing reaches the server during a black hole");
  proxy.set("Late", PASS);
  await client.receive("HELLO Late\n");
  await client.write("AT kept\n");
  await client.receive("HELLO Late\nAT kept\n");
  assert.equal(echo.firstChunks[0], "HELLO Late\n");
});

Deno.test("FaultProxy cut closes the source's connections, refuses new ones, and spares other sources", async () => {
  await using echo = new EchoServer();
  await using proxy = new FaultProxy({ targetPort: echo.port });
  await using victim = await Client.connect(proxy.port, "HELLO Victim\n");
  await using bystander = await Client.connect(proxy.port, "HELLO Bystander\n");
  await victim.receive("HELLO Victim\n");
  await bystander.receive("HELLO Bystander\n");
  proxy.set("Victim", CUT);
  await victim.until(() => victim.ended, "the open connection closed");
  await using again = await Client.connect(proxy.port, "HELLO Victim\nAT x\n");
  await again.until(() => again.ended, "a new connection closed at once");
  assert.equal(again.text, "");
  await bystander.write("still here\n");
  await bystander.receive("HELLO Bystander\nstill here\n");
  assert.equal(proxy.stats("Victim").open, 0);
  proxy.set("Victim", PASS);
  await using healed = await Client.connect(proxy.port, "HELLO Victim\n");
  await healed.receive("HELLO Victim\n");
});

Deno.test("FaultProxy whole-proxy cut turns every connection away, and whole-proxy pass clears per-source faults", async () => {
  await using echo = new EchoServer();
  await using proxy = new FaultProxy({ targetPort: echo.port });
  proxy.set("A", delay(5000));
  await using open = await Client.connect(proxy.port, "HELLO B\n");
  await open.receive("HELLO B\n");
  proxy.setAll(CUT);
  await open.until(() => open.ended, "an open connection closed");
  await using silent = await Client.connect(proxy.port);
  await silent.until(() => silent.ended, "a new connection closed before it says anything");
  proxy.setAll(PASS);
  assert.deepEqual(proxy.faultFor("A"), PASS);
  await using back = await Client.connect(proxy.port, "HELLO A\n");
  await back.receive("HELLO A\n", 1000);
});

Deno.test("FaultProxy whole-proxy drop with one source excepted", async () => {
  await using echo = new EchoServer();
  await using proxy = new FaultProxy({ targetPort: echo.port });
  proxy.setAll(DROP);
  proxy.set("Friend", PASS);
  await using friend = await Client.connect(proxy.port, "HELLO Friend\n");
  await using stranger = await Client.connect(proxy.port, "HELLO Stranger\nhello?\n");
  await friend.receive("HELLO Friend\n");
  await stranger.quietFor(200);
  assert.equal(proxy.stats("Stranger").droppedBytes, 7);
  assert.equal(proxy.stats().connections, 2);
});

Deno.test("FaultProxy passes half-closes through, and closes when the server is down", async () => {
  await using echo = new EchoServer();
  await using proxy = new FaultProxy({ targetPort: echo.port });
  await using client = await Client.connect(proxy.port, "HELLO Half\nlast line\n");
  await client.closeWrite();
  await client.until(() => client.ended, "the echo server's close reached the client");
  assert.equal(client.text, "HELLO Half\nlast line\n");
  await client.until(() => proxy.stats("Half").open === 0, "the proxy closed both sides");

  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  closed.close();
  await using nowhere = new FaultProxy({ targetPort: closed.addr.port });
  await using orphan = await Client.connect(nowhere.port, "HELLO Orphan\n");
  await orphan.until(() => orphan.ended, "closed when the target refuses");
});

Deno.test("FaultProxy close() ends open, delayed and black-holed connections", async () => {
  await using echo = new EchoServer();
  const proxy = new FaultProxy({ targetPort: echo.port });
  proxy.set("Slow", delay(10_000));
  proxy.set("Hole", DROP);
  await using slow = await Client.connect(proxy.port, "HELLO Slow\n");
  await using hole = await Client.connect(proxy.port, "HELLO Hole\n");
  await using fine = await Client.connect(proxy.port, "HELLO Fine\n");
  await fine.receive("HELLO Fine\n");
  await slow.until(() => proxy.stats("Slow").open === 1, "the slow connection identified");
  await hole.until(() => proxy.stats("Hole").open === 1, "the black-holed connection identified");
  await proxy.close();
  for (const client of [slow, hole, fine]) await client.until(() => client.ended, "closed by the proxy");
  await proxy.close(); // twice is fine
});

Deno.test("delay() rejects a negative or infinite delay", () => {
  assert.throws(() => delay(-1), RangeError);
  assert.throws(() => delay(Infinity), RangeError);
  assert.deepEqual(delay(0), { kind: "delay", ms: 0 });
});
