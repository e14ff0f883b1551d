/**
 * Hostile clients against one real server process: each attack gets its
 * clear outcome, and while it goes on a normal client keeps being served
 * (a real IAMAT and WHATSAT, each answered within a generous bound).
 */

import { concatBytes, writeAll } from "../lib/net/write.ts";
import assert from "node:assert/strict";
import { exchangeBytes, HERD_TEST_PERMISSIONS, TestHerd } from "./testing/herd.ts";
import { inspectProcess, type ProcessStats } from "./testing/process_stats.ts";
import { delay, waitFor } from "./testing/wait.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** No key is given, so WHATSAT answers from offline GeoNames data and this URL is never called. */
const UNUSED_PLACES_URL = "http://127.0.0.1:9/maps/api/place/nearbysearch/json";
/** How long a normal client may wait during an attack: generous, for a loaded 2-core CI machine. */
const SERVED_WITHIN_MS = 5_000;
/** The default `maxLineBytes`. */
const MAX_LINE_BYTES = 8192;
const UCLA = "+34.068930-118.445127";
/** {@linkcode UCLA} inside a regular expression. */
const UCLA_PATTERN = UCLA.replace(/[+.]/g, "\\$&");

/** Whether `promise` settles (either way) within `ms`. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([promise.then(() => true, () => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** What a client read before the server closed: `reset` when the close was a TCP reset rather than a FIN. */
interface Received {
  bytes: Uint8Array;
  reset: boolean;
}

async function readUntilClosed(conn: Deno.Conn): Promise<Received> {
  const chunks: Uint8Array[] = [];
  const buffer = new Uint8Array(64 * 1024);
  let reset = false;
  while (true) {
    let n: number | null;
    try {
      n = await conn.read(buffer);
    } catch (error) {
      if (!(error instanceof Deno.errors.ConnectionReset)) throw error;
      reset = true;
      break;
    }
    if (n === null) break;
    chunks.push(buffer.slice(0, n));
  }
  return { bytes: concatBytes(chunks), reset };
}

/** Like the harness's `exchange`, but closes the socket and fails when the answer is not complete within `ms`. */
async function timedExchange(port: number, request: string, ms = SERVED_WITHIN_MS): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    conn.close();
  }, ms);
  try {
    await writeAll(conn, encoder.encode(request));
    await conn.closeWrite();
    const { bytes, reset } = await readUntilClosed(conn);
    assert.ok(!reset, `the server reset the connection of ${JSON.stringify(request)}`);
    return decoder.decode(bytes);
  } catch (error) {
    if (timedOut) throw new Error(`No complete answer to ${JSON.stringify(request)} within ${ms} ms`);
    throw error;
  } finally {
    clearTimeout(timer);
    if (!timedOut) conn.close();
  }
}

let probes = 0;

/**
 * A normal client: an IAMAT, then a WHATSAT about it, each on its own
 * connection; asserts both answers and that each came within
 * {@linkcode SERVED_WITHIN_MS}. Returns the milliseconds both took.
 */
async function assertServed(port: number): Promise<number> {
  const n = ++probes;
  const id = `normal-${n}`;
  const time = `${1700000000 + n}.25`;
  const started = performance.now();
  const at = await timedExchange(port, `IAMAT ${id} ${UCLA} ${time}\n`);
  assert.match(at, new RegExp(`^AT Solo [+-][0-9]+\\.[0-9]{9} ${id} ${UCLA_PATTERN} ${time.replace(".", "\\.")}\\n$`));
  const whatsat = await timedExchange(port, `WHATSAT ${id} 10 3\n`);
  assert.ok(whatsat.startsWith(at + "{"), `WHATSAT must start with the stored AT line: ${whatsat.slice(0, 200)}`);
  assert.ok(whatsat.endsWith("}\n\n"), "a WHATSAT reply ends with two newlines");
  const json = JSON.parse(whatsat.slice(at.length));
  assert.equal(json.status, "OK");
  assert.equal(json.results.length, 3);
  return performance.now() - started;
}

/** Runs {@linkcode assertServed} over and over until `done()`; returns each round's milliseconds. */
async function serveUntil(port: number, done: () => boolean): Promise<number[]> {
  const times: number[] = [];
  do {
    times.push(await assertServed(port));
    await delay(20);
  } while (!done());
  return times;
}

function summary(times: number[]): string {
  return `${times.length} normal IAMAT+WHATSAT rounds, slowest ${Math.round(Math.max(...times))} ms`;
}

/** Polls until `test` passes on the server's process stats; returns them. */
async function waitForStats(
  pid: number,
  test: (stats: ProcessStats) => boolean,
  what: string,
  ms = 15_000,
): Promise<ProcessStats> {
  let last: ProcessStats | undefined;
  return await waitFor(async () => {
    last = await inspectProcess(pid);
    return test(last) && last;
  }, { timeoutMs: ms, stepMs: 100, what: () => `${what}; last: ${JSON.stringify(last)}` });
}

/** How much of the server's log exists now: later lookups read only what comes after. */
async function logMark(herd: TestHerd): Promise<number> {
  return (await herd.log("Solo")).length;
}

/**
 * Polls the log after `mark` (it is written through a buffered sink) until
 * `test` passes; returns that part of the log. Reading only what follows
 * the mark keeps an earlier connection that had the same client port out.
 */
async function waitForLog(
  herd: TestHerd,
  mark: number,
  test: (log: string) => boolean,
  what: string,
  ms = 10_000,
): Promise<string> {
  return await waitFor(async () => {
    const log = (await herd.log("Solo")).slice(mark);
    return test(log) && log;
  }, { timeoutMs: ms, stepMs: 100, what: `the log to show ${what}` });
}

/** The log lines about client `port` (log values are quoted: `Client "127.0.0.1:5000" ...`). */
function logLinesOf(log: string, port: number): string[] {
  return log.split("\n").filter((line) => line.includes(`127.0.0.1:${port}"`));
}

function disconnectedOf(log: string, port: number): string | undefined {
  return logLinesOf(log, port).find((line) => / disconnected /.test(line));
}

/** A pipeline written until the server stopped reading it. */
interface BlockedPipeline {
  /** Commands and bytes whose writes completed (the kernel's buffers hold most of them). */
  commands: number;
  bytes: number;
  /** The write that stays blocked. */
  blocked: Promise<void>;
}

/**
 * Writes `commands` over and over until a write stays blocked for 2 s: the
 * server has stopped reading (the kernel's buffers are finite). Fails if
 * 256 MB go through without blocking.
 */
async function pipelineUntilBlocked(conn: Deno.Conn, commands: string[]): Promise<BlockedPipeline> {
  const chunk = encoder.encode(commands.join("\n") + "\n");
  let chunks = 0;
  while (chunks * chunk.length < 256 * 1024 * 1024) {
    const write = writeAll(conn, chunk);
    if (!(await settlesWithin(write, 2_000))) {
      assert.ok(!(await settlesWithin(write, 1_000)), "the blocked write stays blocked");
      return { commands: chunks * commands.length, bytes: chunks * chunk.length, blocked: write };
    }
    await write;
    chunks++;
  }
  assert.fail(`the server kept reading: ${chunks * chunk.length} bytes accepted from a client that never reads`);
}

/**
 * Lines the server logged (after `mark`) as received from client `port`,
 * and replies it logged as written (after each write completes), once the
 * log stops changing for 300 ms: received − answered is what it holds for
 * that client.
 */
async function settledCounts(
  herd: TestHerd,
  mark: number,
  port: number,
): Promise<{ received: number; answered: number }> {
  let last = "";
  return await waitFor(async () => {
    const lines = logLinesOf((await herd.log("Solo")).slice(mark), port);
    const counts = {
      received: lines.filter((line) => line.includes(`" < "`)).length,
      answered: lines.filter((line) => line.includes(`" > "`)).length,
    };
    const settled = JSON.stringify(counts) === last;
    last = JSON.stringify(counts);
    return settled && counts;
  }, { timeoutMs: 30_000, stepMs: 300, what: () => `the log about client ${port} to stop changing; last: ${last}` });
}

/** A small deterministic PRNG (mulberry32), so a failure can be replayed. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const ASCII_WHITESPACE = new Set([0x20, 0x09, 0x0b, 0x0c, 0x0d]);

/** What the server must answer to one line without its `\n`: nothing for a blank line, else `? ` and its bytes. */
function expectedEcho(line: Uint8Array): Uint8Array {
  if (line.every((byte) => ASCII_WHITESPACE.has(byte))) return new Uint8Array(0);
  return concatBytes([encoder.encode("? "), line, Uint8Array.of(10)]);
}

function firstDifference(a: Uint8Array, b: Uint8Array): string {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  const show = (bytes: Uint8Array) => JSON.stringify(decoder.decode(bytes.subarray(Math.max(0, i - 40), i + 40)));
  return `first difference at byte ${i} of ${a.length} (got) / ${b.length} (expected): got ${show(a)}, expected ${
    show(b)
  }`;
}

/** Lines of random bytes: any byte but `\n`, NUL and 0xFF included. */
function garbageLines(seed: number, count: number): Uint8Array[] {
  const next = random(seed);
  const lines: Uint8Array[] = [];
  for (let i = 0; i < count; i++) {
    const line = new Uint8Array(Math.floor(next() * 120));
    for (let j = 0; j < line.length; j++) {
      let byte = Math.floor(next() * 256);
      if (byte === 10) byte = next() < 0.5 ? 0 : 0xff;
      line[j] = byte;
    }
    lines.push(line);
  }
  return lines;
}

/** Byte sequences a UTF-8 decoder must reject or handle with care, and blank lines of every ASCII whitespace. */
const TRICKY_LINES: Uint8Array[] = [
  [0x00],
  [0x00, 0x00, 0x00],
  [0xff],
  [0xfe, 0xff],
  [0x80], // lone continuation byte
  [0xc0, 0xaf], // overlong "/"
  [0xe0, 0x80, 0xaf], // overlong "/"
  [0xed, 0xa0, 0x80], // UTF-16 surrogate D800
  [0xf4, 0x90, 0x80, 0x80], // above U+10FFFF
  [0xf8, 0x88, 0x80, 0x80, 0x80], // five-byte form
  [0xe2, 0x82], // truncated euro sign at the end of the line
  [0x49, 0x41, 0x4d, 0x41, 0x54, 0x20, 0xff, 0x20, 0x2b, 0x31, 0x2b, 0x31, 0x20, 0x31], // "IAMAT \xff +1+1 1"
  [0x49, 0x41, 0x4d, 0x41, 0x54, 0x00, 0x6b, 0x20, 0x2b, 0x31, 0x2b, 0x31, 0x20, 0x31], // "IAMAT\0k +1+1 1"
  [0xc2, 0xa0], // U+00A0 alone: not whitespace
  [0xe2, 0x80, 0xa8], // U+2028 alone: not whitespace
  [0xc2, 0x85], // U+0085 (NEL) alone: not whitespace
  [0x85], // a Latin-1 NEL: not UTF-8
  [0x1c, 0x1d, 0x1e, 0x1f], // FS GS RS US: Python's split() calls them whitespace, the protocol does not
  [0xef, 0xbf, 0xbd], // U+FFFD itself
  [0xef, 0xbf, 0xbe], // U+FFFE, a noncharacter but valid UTF-8
  [0xef, 0xbb, 0xbf], // a UTF-8 byte order mark alone: U+FEFF is not whitespace, and a decoder must not drop it
  [0xef, 0xbb, 0xbf, 0x4c, 0x4c, 0x4c], // "\uFEFFLLL"
  // "\uFEFFIAMAT bom +1+1 1": the verb is not IAMAT
  [0xef, 0xbb, 0xbf, 0x49, 0x41, 0x4d, 0x41, 0x54, 0x20, 0x62, 0x6f, 0x6d, 0x20, 0x2b, 0x31, 0x2b, 0x31, 0x20, 0x31],
  [0x61, 0xef, 0xbb, 0xbf], // a byte order mark after the first character
  [],
  [0x20],
  [0x09, 0x0b, 0x0c, 0x0d, 0x20],
  [0x0d],
  [0x0b, 0x0b],
].map((bytes) => Uint8Array.from(bytes));

function joinLines(lines: Uint8Array[]): Uint8Array {
  return concatBytes(lines.flatMap((line) => [line, Uint8Array.of(10)]));
}

Deno.test({
  name: "hostile clients each get their outcome and never stall a normal client",
  permissions: HERD_TEST_PERMISSIONS,
}, async (t) => {
  await using herd = await TestHerd.create({ placesUrl: UNUSED_PLACES_URL, names: ["Solo"], links: [] });
  await herd.start("Solo");
  const port = herd.port("Solo");
  const pid = herd.pid("Solo");
  // A client known to the server, so WHATSATs about it get the largest replies (20 results).
  assert.match(await timedExchange(port, `IAMAT hog ${UCLA} 1700000000\n`), /^AT Solo /);
  const warmed = await assertServed(port); // also loads the offline place index
  const start = await inspectProcess(pid);
  console.log(
    `server at start: RSS ${start.rssKb} kB, ${start.openFiles} descriptors; first round ${Math.round(warmed)} ms`,
  );

  await t.step("a client that pipelines without reading is throttled and memory stays bounded", async () => {
    const commands: string[] = [];
    for (let i = 0; commands.length < 4000; i++) {
      commands.push(i % 2 === 0 ? "WHATSAT hog 50 20" : `IAMAT hog ${UCLA} ${1700000000 + i}`);
    }
    const before = await inspectProcess(pid);
    const mark = await logMark(herd);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    let blocked: Promise<void> | undefined;
    try {
      const pipeline = await pipelineUntilBlocked(conn, commands);
      blocked = pipeline.blocked;
      const times: number[] = [];
      for (let i = 0; i < 5; i++) times.push(await assertServed(port));
      assert.ok(!(await settlesWithin(pipeline.blocked, 100)), "the hostile client is still throttled");
      const during = await inspectProcess(pid);
      const { received, answered } = await settledCounts(herd, mark, conn.localAddr.port);
      const growthMb = (during.rssKb - before.rssKb) / 1024;
      console.log(
        `pipeliner: ${pipeline.commands} commands (${(pipeline.bytes / 1e6).toFixed(1)} MB) written before writes ` +
          `blocked; server logged ${received} received, ${answered} answered (${received - answered} outstanding); ` +
          `RSS ${before.rssKb} -> ${during.rssKb} kB (+${growthMb.toFixed(1)} MB); ${summary(times)}`,
      );
      assert.ok(growthMb < 100, `server RSS grew by ${growthMb.toFixed(1)} MB`);
    } finally {
      conn.close();
      await blocked?.catch(() => {});
    }
    await waitForLog(herd, mark, (log) => disconnectedOf(log, conn.localAddr.port) !== undefined, "the disconnect");
  });

  await t.step("thousands of idle connections, then a normal client is served, then they all close", async () => {
    const base = await inspectProcess(pid);
    const self = await inspectProcess(Deno.pid);
    const mark = await logMark(herd);
    // Both processes hold one descriptor per connection; leave room for everything else.
    const count = Math.min(2000, Math.min(base.maxOpenFiles, self.maxOpenFiles) - self.openFiles - 200);
    assert.ok(count >= 500, `descriptor limit too low for this test: ${JSON.stringify({ base, self })}`);
    const conns: Deno.TcpConn[] = [];
    try {
      const started = performance.now();
      while (conns.length < count) {
        const batch = Math.min(100, count - conns.length);
        conns.push(
          ...await Promise.all(Array.from({ length: batch }, () => Deno.connect({ hostname: "127.0.0.1", port }))),
        );
      }
      const connectMs = performance.now() - started;
      const holding = await waitForStats(
        pid,
        (stats) => stats.openFiles >= base.openFiles + count,
        `the server to hold ${count} more descriptors`,
      );
      const times: number[] = [];
      for (let i = 0; i < 3; i++) times.push(await assertServed(port));
      for (const conn of [conns[0], conns[Math.floor(count / 2)], conns[count - 1]]) {
        await writeAll(conn, encoder.encode("still here?\n"));
        const buffer = new Uint8Array(64);
        const n = await conn.read(buffer);
        assert.equal(decoder.decode(buffer.subarray(0, n ?? 0)), "? still here?\n", "an idle connection is served");
      }
      console.log(
        `idle: ${count} connections opened in ${Math.round(connectMs)} ms; server descriptors ${base.openFiles} -> ` +
          `${holding.openFiles}, RSS ${base.rssKb} -> ${holding.rssKb} kB; ${summary(times)}`,
      );
    } finally {
      for (const conn of conns) conn.close();
    }
    const after = await waitForStats(
      pid,
      (stats) => stats.openFiles <= base.openFiles + 2,
      `the server to close all ${count} connections`,
    );
    const ports = new Set(conns.map((conn) => conn.localAddr.port));
    await waitForLog(herd, mark, (log) => {
      const closed = log.matchAll(/Client "127\.0\.0\.1:([0-9]+)" disconnected \("closed its side"\)/g);
      const seen = new Set([...closed].map((match) => Number(match[1])).filter((port) => ports.has(port)));
      return seen.size === ports.size;
    }, `all ${count} disconnects as "closed its side"`);
    console.log(`idle: after closing, server descriptors ${after.openFiles}, RSS ${after.rssKb} kB`);
  });

  await t.step("slowloris clients sending a byte at a time are answered, and others are served meanwhile", async () => {
    async function slowClient(i: number): Promise<void> {
      using conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.setNoDelay(true);
      const id = `slow-🥝-${i}`; // the emoji's four bytes arrive in four segments
      const request = `IAMAT ${id} ${UCLA} 1700000000.${i}\nWHATSAT ${id} 5 1\n`;
      for (const byte of encoder.encode(request)) {
        await conn.write(Uint8Array.of(byte));
        await delay(15);
      }
      await conn.closeWrite();
      const { bytes, reset } = await readUntilClosed(conn);
      assert.ok(!reset);
      const reply = decoder.decode(bytes);
      const at = reply.slice(0, reply.indexOf("\n") + 1);
      assert.match(at, new RegExp(`^AT Solo [+-][0-9]+\\.[0-9]{9} ${id} ${UCLA_PATTERN} 1700000000\\.${i}\\n$`));
      assert.ok(reply.slice(at.length).startsWith(at + "{"), "the WHATSAT reply carries the stored AT line");
      assert.equal(JSON.parse(reply.slice(2 * at.length)).results.length, 1);
    }
    let done = false;
    const started = performance.now();
    const slow = Promise.all(Array.from({ length: 10 }, (_, i) => slowClient(i))).finally(() => {
      done = true;
    });
    const [, times] = await Promise.all([slow, serveUntil(port, () => done)]);
    console.log(`slowloris: 10 clients took ${Math.round(performance.now() - started)} ms; ${summary(times)}`);
    assert.ok(times.length >= 3, "normal clients were served while the slow ones were sending");
  });

  await t.step("an over-long line: the lines before it are answered, then that connection is closed", async () => {
    const mark = await logMark(herd);
    using conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const request = `IAMAT before-long ${UCLA} 1\nbefore\n` + "x".repeat(MAX_LINE_BYTES + 1) +
      `\nIAMAT after-long ${UCLA} 2\n` + "y".repeat(200_000) + "\n";
    const writing = writeAll(conn, encoder.encode(request)).catch((error) => error);
    const [received, times] = await Promise.all([readUntilClosed(conn), serveUntil(port, () => true)]);
    await writing;
    const reply = decoder.decode(received.bytes);
    assert.match(
      reply,
      new RegExp(`^AT Solo [+-][0-9]+\\.[0-9]{9} before-long ${UCLA_PATTERN} 1\\n\\? before\\n$`),
      `the replies before the long line, then the close (closed by ${received.reset ? "reset" : "FIN"})`,
    );
    assert.equal(await timedExchange(port, "WHATSAT after-long 1 1\n"), "? WHATSAT after-long 1 1\n");
    await waitForLog(
      herd,
      mark,
      (log) => logLinesOf(log, conn.localAddr.port).some((line) => /longer than 8192 bytes/.test(line)),
      "the over-long line",
    );
    console.log(`over-long line: closed by ${received.reset ? "reset" : "FIN"}; ${summary(times)}`);
  });

  await t.step("a line of exactly maxLineBytes is answered and the connection stays open", async () => {
    const line = "z".repeat(MAX_LINE_BYTES);
    const reply = await timedExchange(port, `${line}\nIAMAT exact-limit ${UCLA} 3\n`);
    assert.ok(reply.startsWith(`? ${line}\nAT Solo `), reply.slice(0, 80));
    assert.match(reply.slice(line.length + 3), new RegExp(`^AT Solo \\S+ exact-limit ${UCLA_PATTERN} 3\\n$`));
  });

  await t.step("an endless line without a newline is cut off, not buffered", async () => {
    const mark = await logMark(herd);
    using conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const piece = encoder.encode("w".repeat(64 * 1024));
    let written = 0;
    const writing = (async () => {
      try {
        while (written < 256 * 1024 * 1024) {
          await writeAll(conn, piece);
          written += piece.length;
        }
        return "never cut off";
      } catch (error) {
        return (error as Error).name;
      }
    })();
    const [received, times] = await Promise.all([readUntilClosed(conn), serveUntil(port, () => true)]);
    const outcome = await writing;
    assert.equal(received.bytes.length, 0, "nothing is answered");
    assert.notEqual(outcome, "never cut off");
    console.log(
      `endless line: connection ended after ${written} bytes written (${outcome}, read side ${
        received.reset ? "reset" : "FIN"
      }); ${summary(times)}`,
    );
    await waitForLog(
      herd,
      mark,
      (log) => logLinesOf(log, conn.localAddr.port).some((line) => /longer than 8192 bytes/.test(line)),
      "the endless line",
    );
  });

  await t.step(
    "binary garbage and invalid UTF-8: every line gets ? and its exact bytes, blank lines nothing",
    async () => {
      const connections = Array.from({ length: 8 }, (_, i) => {
        const lines = [...TRICKY_LINES, ...garbageLines(1000 + i, 400), ...TRICKY_LINES];
        return { lines, request: joinLines(lines) };
      });
      const [replies, times] = await Promise.all([
        Promise.all(connections.map(({ request }) => exchangeBytes(port, request))),
        serveUntil(port, () => true),
      ]);
      connections.forEach(({ lines }, i) => {
        const expected = concatBytes(lines.map(expectedEcho));
        assert.ok(
          replies[i].length === expected.length && replies[i].every((byte, j) => byte === expected[j]),
          firstDifference(replies[i], expected),
        );
      });
      const echoed = connections.flatMap(({ lines }) => lines).filter((line) => expectedEcho(line).length > 0).length;
      console.log(`garbage: 8 connections, ${echoed} lines echoed byte for byte; ${summary(times)}`);
    },
  );

  await t.step("clients that reset the connection mid-pipeline are logged, and others keep being served", async () => {
    // Each pipeline's replies (about 14 MB) are more than the kernel buffers hold: the server is mid-pipeline.
    const pipeline = encoder.encode("WHATSAT hog 50 3\n".repeat(10_000));
    const resetters = 2;
    const mark = await logMark(herd);
    async function resetter(): Promise<number> {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      const localPort = conn.localAddr.port;
      const writing = writeAll(conn, pipeline).catch(() => {});
      const n = await conn.read(new Uint8Array(1024)); // replies are flowing
      assert.ok(n !== null && n > 0);
      conn.close(); // with replies unread: the kernel sends a reset
      await writing;
      return localPort;
    }
    let done = false;
    const resetting = Promise.all(Array.from({ length: resetters }, () => resetter())).finally(() => {
      done = true;
    });
    const [ports, times] = await Promise.all([resetting, serveUntil(port, () => done)]);
    // A reset is a failure, not a half-close: "disconnected ("failed: Connection reset by peer ...")".
    const failed = (log: string, port: number) =>
      logLinesOf(log, port).find((line) => /disconnected \("failed/.test(line));
    const log = await waitForLog(
      herd,
      mark,
      (log) => ports.every((port) => failed(log, port) !== undefined),
      "every reset connection's disconnect as a failure",
    );
    const reasons = new Set(ports.map((port) => failed(log, port)!.replace(/^.* disconnected /, "")));
    const answered = ports.map((port) => logLinesOf(log, port).filter((line) => line.includes(`" > "`)).length);
    for (const count of answered) assert.ok(count < 10_000, "the reset came before the last reply");
    console.log(
      `reset: ${resetters} clients, replies written before the reset ${answered.join(", ")} of 10000; ` +
        `disconnect reasons ${[...reasons].join(" | ")}; ${summary(times)}`,
    );
    for (let i = 0; i < 3; i++) await assertServed(port);
  });

  const end = await waitForStats(
    pid,
    (stats) => stats.openFiles <= start.openFiles + 2,
    "every connection to be closed",
  );
  console.log(`server at end: RSS ${end.rssKb} kB, ${end.openFiles} descriptors`);
  const { code, stderr } = await herd.stop("Solo", "SIGTERM");
  assert.equal(code, 0, stderr);
  assert.doesNotMatch(stderr, /uncaught|panic/i);
});

Deno.test({
  name: "a client that pipelines large WHATSATs without reading has at most 256 replies outstanding",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await TestHerd.create({ placesUrl: UNUSED_PLACES_URL, names: ["Solo"], links: [] });
  await herd.start("Solo");
  const port = herd.port("Solo");
  const pid = herd.pid("Solo");
  assert.match(await timedExchange(port, `IAMAT hog ${UCLA} 1700000000\n`), /^AT Solo /);
  await assertServed(port);
  const before = await inspectProcess(pid);
  const mark = await logMark(herd);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  let blocked: Promise<void> | undefined;
  try {
    // 20 results: about 7 KB a reply, so what the server holds per reply matters.
    const pipeline = await pipelineUntilBlocked(conn, Array(4000).fill("WHATSAT hog 50 20"));
    blocked = pipeline.blocked;
    const during = await inspectProcess(pid);
    const { received, answered } = await settledCounts(herd, mark, conn.localAddr.port);
    const growthMb = (during.rssKb - before.rssKb) / 1024;
    // README and lib/client/connection.ts: at most 256 replies may be outstanding per connection. The server stopped
    // reading only once it held that many, so it logged more than 256 lines received: fewer would mean the counts
    // below are not what the log says (0 - 0 would pass).
    assert.ok(received > 256, `the log shows ${received} lines received from the pipelining client`);
    assert.ok(
      received - answered <= 256 && growthMb < 100,
      `the server computed ${received} replies and wrote ${answered}: ${received - answered} outstanding; ` +
        `RSS ${before.rssKb} -> ${during.rssKb} kB (+${growthMb.toFixed(1)} MB)`,
    );
  } finally {
    conn.close();
    await blocked?.catch(() => {});
  }
});
