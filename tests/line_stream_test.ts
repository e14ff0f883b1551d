import assert from "node:assert/strict";
import fc from "fast-check";
import {
  type ByteReader,
  type LineBatch,
  LineReader,
  LineSplitter,
  LineStream,
  TextLineSplitter,
} from "../lib/net/line_stream.ts";
import { EventEmitter } from "node:events";
import type { Socket } from "node:net";
import { LineSocket } from "../lib/net/line_socket.ts";
import { waitFor } from "./testing/wait.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function bytes(text: string): Uint8Array {
  return encoder.encode(text);
}

function texts(lines: Uint8Array[]): string[] {
  return lines.map((line) => decoder.decode(line));
}

async function collect(chunks: string[], maxLineBytes: number): Promise<LineBatch[]> {
  const source = ReadableStream.from(chunks.map(bytes));
  return await Array.fromAsync(source.pipeThrough(new LineStream(maxLineBytes)));
}

// LineSplitter

Deno.test("LineSplitter returns several lines from one chunk", () => {
  const splitter = new LineSplitter(100);
  assert.deepEqual(texts(splitter.push(bytes("one\ntwo\nthree\n")).lines), ["one", "two", "three"]);
  assert.equal(splitter.end(), null);
});

Deno.test("LineSplitter joins a line split across chunks", () => {
  const splitter = new LineSplitter(100);
  assert.deepEqual(splitter.push(bytes("IAMAT ki")).lines, []);
  assert.deepEqual(splitter.push(bytes("wi +34")).lines, []);
  assert.deepEqual(texts(splitter.push(bytes("-118 1\nWHAT")).lines), ["IAMAT kiwi +34-118 1"]);
  assert.deepEqual(texts(splitter.push(bytes("SAT kiwi 10 5\n")).lines), ["WHATSAT kiwi 10 5"]);
});

Deno.test("LineSplitter returns empty lines", () => {
  const splitter = new LineSplitter(100);
  assert.deepEqual(texts(splitter.push(bytes("\n\na\n\n")).lines), ["", "", "a", ""]);
  assert.deepEqual(texts(splitter.push(bytes("\n")).lines), [""]);
});

Deno.test("LineSplitter end() returns a final line without a newline", () => {
  const splitter = new LineSplitter(100);
  assert.deepEqual(texts(splitter.push(bytes("one\ntw")).lines), ["one"]);
  assert.deepEqual(splitter.push(bytes("o")).lines, []);
  assert.equal(decoder.decode(splitter.end()!), "two");
});

Deno.test("LineSplitter end() returns null when the input ended with a newline", () => {
  const splitter = new LineSplitter(100);
  splitter.push(bytes("one\n"));
  assert.equal(splitter.end(), null);
  assert.equal(new LineSplitter(100).end(), null);
});

Deno.test("LineSplitter keeps CR in the line bytes", () => {
  const splitter = new LineSplitter(100);
  const lines = splitter.push(bytes("one\r\ntwo\r"));
  assert.deepEqual(texts(lines.lines), ["one\r"]);
  assert.deepEqual([...lines.lines[0]], [0x6f, 0x6e, 0x65, 0x0d]);
  assert.deepEqual([...splitter.end()!], [0x74, 0x77, 0x6f, 0x0d]);
});

Deno.test("LineSplitter keeps invalid UTF-8 bytes as they are", () => {
  const splitter = new LineSplitter(100);
  const batch = splitter.push(new Uint8Array([0xff, 0xfe, 0x41, 0x0a]));
  assert.deepEqual(batch.lines.map((line) => [...line]), [[0xff, 0xfe, 0x41]]);
});

Deno.test("LineSplitter accepts a line exactly at the cap in one chunk", () => {
  const splitter = new LineSplitter(8);
  const batch = splitter.push(bytes("12345678\n"));
  assert.deepEqual(texts(batch.lines), ["12345678"]);
  assert.ok(!batch.overflow);
  assert.equal(splitter.overflowed, false);
});

Deno.test("LineSplitter accepts a line exactly at the cap across chunks", () => {
  const splitter = new LineSplitter(8);
  assert.ok(!splitter.push(bytes("123")).overflow);
  assert.ok(!splitter.push(bytes("45678")).overflow);
  const batch = splitter.push(bytes("\n"));
  assert.deepEqual(texts(batch.lines), ["12345678"]);
  assert.ok(!batch.overflow);
});

Deno.test("LineSplitter accepts a final line exactly at the cap without a newline", () => {
  const splitter = new LineSplitter(8);
  assert.ok(!splitter.push(bytes("1234")).overflow);
  assert.ok(!splitter.push(bytes("5678")).overflow);
  assert.equal(decoder.decode(splitter.end()!), "12345678");
});

Deno.test("LineSplitter overflows on a line one byte over the cap in one chunk", () => {
  const splitter = new LineSplitter(8);
  const batch = splitter.push(bytes("123456789\n"));
  assert.equal(batch.overflow, true);
  assert.deepEqual(batch.lines, []);
  assert.equal(splitter.overflowed, true);
});

Deno.test("LineSplitter overflows on an unfinished line one byte over the cap", () => {
  const splitter = new LineSplitter(8);
  const batch = splitter.push(bytes("123456789"));
  assert.equal(batch.overflow, true);
  assert.equal(splitter.overflowed, true);
});

Deno.test("LineSplitter overflows on a line that passes the cap across chunks", () => {
  const splitter = new LineSplitter(8);
  assert.ok(!splitter.push(bytes("1234")).overflow);
  assert.ok(!splitter.push(bytes("5678")).overflow);
  const batch = splitter.push(bytes("9"));
  assert.equal(batch.overflow, true);
  assert.equal(splitter.overflowed, true);
});

Deno.test("LineSplitter overflows when the newline arrives after the cap was passed across chunks", () => {
  const splitter = new LineSplitter(8);
  assert.ok(!splitter.push(bytes("12345678")).overflow);
  const batch = splitter.push(bytes("9\nnext\n"));
  assert.equal(batch.overflow, true);
  assert.deepEqual(batch.lines, []);
});

Deno.test("LineSplitter counts CR toward the cap", () => {
  const splitter = new LineSplitter(8);
  assert.equal(splitter.push(bytes("12345678\r\n")).overflow, true);
});

Deno.test("LineSplitter returns the lines before an overflow in the same chunk", () => {
  const splitter = new LineSplitter(8);
  const batch = splitter.push(bytes("short\nalso ok\n123456789\nafter\n"));
  assert.equal(batch.overflow, true);
  assert.deepEqual(texts(batch.lines), ["short", "also ok"]);
});

Deno.test("LineSplitter returns earlier lines when a chunk ends in an unfinished overlong line", () => {
  const splitter = new LineSplitter(8);
  const batch = splitter.push(bytes("ok\n123456789"));
  assert.equal(batch.overflow, true);
  assert.deepEqual(texts(batch.lines), ["ok"]);
});

Deno.test("LineSplitter returns nothing after an overflow", () => {
  const splitter = new LineSplitter(8);
  splitter.push(bytes("abc"));
  assert.equal(splitter.push(bytes("123456789\n")).overflow, true);
  assert.deepEqual(splitter.push(bytes("fine\n")), { lines: [], overflow: true });
  assert.equal(splitter.end(), null);
});

Deno.test("LineSplitter is safe when the caller reuses the chunk's buffer", () => {
  const splitter = new LineSplitter(100);
  const buffer = new Uint8Array(16);
  function pushText(text: string): LineBatch {
    const n = encoder.encodeInto(text, buffer).written;
    return splitter.push(buffer.subarray(0, n));
  }
  const first = pushText("one\ntwo\nthr");
  assert.deepEqual(texts(first.lines), ["one", "two"]);
  buffer.fill(0x58); // "X"
  const second = pushText("ee\nfour");
  buffer.fill(0x59); // "Y"
  assert.deepEqual(texts(first.lines), ["one", "two"]);
  assert.deepEqual(texts(second.lines), ["three"]);
  assert.equal(decoder.decode(splitter.end()!), "four");
});

Deno.test("LineSplitter lines do not share memory with the chunk", () => {
  const splitter = new LineSplitter(100);
  const chunk = bytes("abc\n");
  const [line] = splitter.push(chunk).lines;
  chunk[0] = 0x5a;
  assert.equal(decoder.decode(line), "abc");
});

// LineStream

Deno.test("LineStream splits a byte stream into batches of lines", async () => {
  const batches = await collect(["IAMAT kiwi +34-118 1\nWHAT", "SAT kiwi 10 5\n", "\n", "last"], 100);
  assert.deepEqual(batches.map((batch) => texts(batch.lines)), [
    ["IAMAT kiwi +34-118 1"],
    ["WHATSAT kiwi 10 5"],
    [""],
    ["last"],
  ]);
  assert.ok(batches.every((batch) => !batch.overflow));
});

Deno.test("LineStream emits no batch for a chunk without a complete line", async () => {
  const batches = await collect(["ab", "cd", "ef\n"], 100);
  assert.deepEqual(batches.map((batch) => texts(batch.lines)), [["abcdef"]]);
});

Deno.test("LineStream ends with an overflow batch when a line passes the cap", async () => {
  const batches = await collect(["ok\n1234", "56789", "\nnever\n"], 8);
  assert.deepEqual(batches.map((batch) => texts(batch.lines)), [["ok"], []]);
  assert.equal(batches.at(-1)!.overflow, true);
});

Deno.test("LineStream returns the lines before an overflow in the same chunk", async () => {
  const batches = await collect(["a\nb\n123456789\nc\n", "d\n"], 8);
  assert.equal(batches.length, 1);
  assert.deepEqual(texts(batches[0].lines), ["a", "b"]);
  assert.equal(batches[0].overflow, true);
});

Deno.test("LineStream is safe when the writer reuses its buffer", async () => {
  const stream = new LineStream(100);
  const writer = stream.writable.getWriter();
  const reading = Array.fromAsync(stream.readable);
  const buffer = new Uint8Array(32);
  for (const text of ["one\ntw", "o\nthree", "\n"]) {
    const n = encoder.encodeInto(text, buffer).written;
    await writer.write(buffer.subarray(0, n));
    buffer.fill(0x58);
  }
  await writer.close();
  const batches = await reading;
  assert.deepEqual(batches.flatMap((batch) => texts(batch.lines)), ["one", "two", "three"]);
});

// LineReader

/**
 * A socket for {@linkcode LineReader}: each read takes what is left of the
 * next chunk, as much as the buffer holds (the rest stays for the next
 * read); then the end, or `error`. Records each read's buffer size.
 */
class FakeSocket implements ByteReader {
  readonly bufferSizes: number[] = [];
  /** Reads that have come back. */
  answered = 0;
  #chunks: Uint8Array[];
  #error: Error | undefined;
  /** Resolves the read waiting, when `hold` keeps reads waiting until `release()`. */
  #held: (() => void) | undefined;
  hold = false;

  constructor(chunks: (string | Uint8Array)[], error?: Error) {
    this.#chunks = chunks.map((chunk) => typeof chunk === "string" ? bytes(chunk) : chunk);
    this.#error = error;
  }

  get reads(): number {
    return this.bufferSizes.length;
  }

  async read(buffer: Uint8Array): Promise<number | null> {
    this.bufferSizes.push(buffer.length);
    if (this.hold) await new Promise<void>((resolve) => this.#held = resolve);
    this.answered++;
    const chunk = this.#chunks.shift();
    if (chunk === undefined) {
      if (this.#error !== undefined) throw this.#error;
      return null;
    }
    const n = Math.min(chunk.length, buffer.length);
    buffer.set(chunk.subarray(0, n));
    if (n < chunk.length) this.#chunks.unshift(chunk.subarray(n));
    return n;
  }

  release(): void {
    this.#held?.();
  }
}

/** Every batch `reader` gives until it ends. */
async function readAll(reader: LineReader): Promise<LineBatch[]> {
  const batches: LineBatch[] = [];
  for (let batch = await reader.read(); batch !== null; batch = await reader.read()) batches.push(batch);
  return batches;
}

Deno.test("LineReader gives the lines of each read that completes one, and a last line without its newline", async () => {
  const socket = new FakeSocket(["IAMAT kiwi +34-118 1\nWHAT", "SAT kiwi 10 5\n", "ab", "cd", "\n\n", "last"]);
  let partial = 0;
  const reader = new LineReader(socket, 100, undefined, () => partial++);
  const batches = await readAll(reader);
  assert.deepEqual(batches.map((batch) => texts(batch.lines)), [
    ["IAMAT kiwi +34-118 1"],
    ["WHATSAT kiwi 10 5"],
    ["abcd", ""],
    ["last"],
  ]);
  assert.ok(batches.every((batch) => !batch.overflow));
  assert.equal(socket.reads, 7, "one read per chunk, and the one that found the end");
  assert.equal(partial, 3, "reads of bytes that complete no line are told: ab, cd and last");
  assert.equal(await reader.read(), null, "and null again after the end");
  assert.equal(socket.reads, 7);
});

Deno.test("LineReader reads the socket only when asked for a batch", async () => {
  const socket = new FakeSocket(["one\ntwo\n", "three\n"]);
  const reader = new LineReader(socket, 100);
  assert.equal(socket.reads, 0);
  assert.deepEqual(texts((await reader.read())!.lines), ["one", "two"]);
  assert.equal(socket.reads, 1);
  assert.deepEqual(texts((await reader.read())!.lines), ["three"]);
  assert.equal(socket.reads, 2);
});

Deno.test("LineReader reads into 1 KiB until a read fills it, then into the whole buffer, and cuts lines alike", async () => {
  // A one-command client's line, then pipelined lines of 3 KB, cut at every buffer's end.
  const long = Array.from({ length: 40 }, (_, i) => `IAMAT client-${i} +34.068930-118.445127 ${"7".repeat(i * 60)}`);
  const socket = new FakeSocket(["IAMAT kiwi +34-118 1\n", long.join("\n") + "\n"]);
  const batches = await readAll(new LineReader(socket, 4096, 4096));
  assert.deepEqual(batches.flatMap((batch) => texts(batch.lines)), ["IAMAT kiwi +34-118 1", ...long]);
  assert.deepEqual(socket.bufferSizes.slice(0, 3), [1024, 1024, 4096], "grown once the second read filled 1 KiB");
  assert.ok(socket.bufferSizes.slice(2).every((size) => size === 4096), `buffers: ${socket.bufferSizes}`);
  // A buffer asked for under 1 KiB is never grown past it.
  const small = new FakeSocket(["x".repeat(100) + "\n"]);
  assert.deepEqual((await readAll(new LineReader(small, 200, 64))).flatMap((batch) => texts(batch.lines)), [
    "x".repeat(100),
  ]);
  assert.ok(small.bufferSizes.every((size) => size === 64), `buffers: ${small.bufferSizes}`);
});

Deno.test("LineReader ends with an overflow batch when a line passes the cap, and reads no more", async () => {
  const socket = new FakeSocket(["ok\n1234", "56789", "\nnever\n"]);
  const reader = new LineReader(socket, 8);
  const batches = await readAll(reader);
  assert.deepEqual(batches.map((batch) => [texts(batch.lines), batch.overflow === true]), [[["ok"], false], [
    [],
    true,
  ]]);
  assert.equal(socket.reads, 2);
});

Deno.test("LineReader.cancel() gives null to the read waiting on the socket, and to every read after", async () => {
  const socket = new FakeSocket(["on", "e\n"]);
  const reader = new LineReader(socket, 100);
  socket.hold = true;
  const waiting = reader.read();
  await waitFor(() => socket.reads === 1, { what: "the socket read" });
  await assert.rejects(reader.read(), /a read is already waiting/);
  reader.cancel();
  assert.equal(await waiting, null);
  // The socket's read comes back after: what it read is given to no one, and the socket is not read again.
  socket.hold = false;
  socket.release();
  await waitFor(() => socket.answered === 1, { what: "the socket read to come back" });
  assert.equal(await reader.read(), null);
  assert.equal(socket.reads, 1);
});

Deno.test("LineReader rejects the read waiting when the socket's read fails, then gives null", async () => {
  const reset = new Deno.errors.ConnectionReset("Connection reset by peer (os error 104)");
  const reader = new LineReader(new FakeSocket(["one\n", "tw"], reset), 100);
  assert.deepEqual(texts((await reader.read())!.lines), ["one"]);
  await assert.rejects(reader.read(), reset);
  assert.equal(await reader.read(), null);
});

// TextLineSplitter

Deno.test("TextLineSplitter gives LineSplitter's lines decoded, whatever the bytes, chunks and cap", () => {
  // Bytes rich in newlines, multi-byte UTF-8 (whole and cut), invalid bytes and byte order marks.
  const piece = fc.oneof(
    fc.constantFrom(..."\n\nAT ab\r".split("").map((c) => encoder.encode(c))),
    fc.constantFrom(encoder.encode("é"), encoder.encode("🥝"), encoder.encode("\uFEFF"), Uint8Array.of(0xf0, 0x9f)),
    fc.uint8Array({ minLength: 1, maxLength: 3 }),
  );
  const input = fc.array(piece, { maxLength: 60 }).map((pieces) => {
    const all = new Uint8Array(pieces.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of pieces) all.set(p, (at += p.length) - p.length);
    return all;
  });
  const decode = new TextDecoder("utf-8", { ignoreBOM: true });
  fc.assert(
    fc.property(input, fc.array(fc.nat(40), { maxLength: 8 }), fc.integer({ min: 0, max: 12 }), (all, cuts, max) => {
      const bytesSplitter = new LineSplitter(max);
      const textSplitter = new TextLineSplitter(max);
      const points = [...new Set(cuts.map((cut) => Math.min(cut, all.length)))].sort((a, b) => a - b);
      let from = 0;
      for (const to of [...points, all.length]) {
        const chunk = all.slice(from, to);
        from = to;
        const expected = bytesSplitter.push(chunk);
        const actual = textSplitter.push(chunk);
        assert.deepEqual(actual.lines, expected.lines.map((line) => decode.decode(line)));
        assert.equal(actual.overflow ?? false, expected.overflow ?? false);
      }
      const last = bytesSplitter.end();
      assert.equal(textSplitter.end(), last === null ? null : decode.decode(last));
    }),
    { numRuns: 500 },
  );
});

Deno.test("TextLineSplitter decodes a line split inside a character across chunks", () => {
  const splitter = new TextLineSplitter(100);
  const kiwi = encoder.encode("AT 🥝 x\nnext\n");
  assert.deepEqual(splitter.push(kiwi.subarray(0, 5)).lines, []);
  assert.deepEqual(splitter.push(kiwi.subarray(5)).lines, ["AT 🥝 x", "next"]);
  assert.equal(splitter.end(), null);
});

Deno.test("TextLineSplitter stops at the first line over the cap, after the lines before it", () => {
  const splitter = new TextLineSplitter(4);
  assert.deepEqual(splitter.push(bytes("abcd\nabcde\nab\n")), { lines: ["abcd"], overflow: true });
  assert.deepEqual(splitter.push(bytes("ab\n")), { lines: [], overflow: true });
});

Deno.test("LineSocket.bulk() stops reading for a breath after 10 ms of bulk reads back to back, never for spaced ones", async () => {
  const calls: string[] = [];
  // A TLS socket as Deno's node:tls makes one: its events, and under them the reads of the TCP socket.
  const socket = Object.assign(new EventEmitter(), {
    destroyed: false,
    pause: () => calls.push("pause"),
    resume: () => calls.push("resume"),
    _handle: { _parent: { readStop: () => calls.push("readStop"), readStart: () => calls.push("readStart") } },
  });
  const conn = new LineSocket(socket as unknown as Socket, { maxLineBytes: 100, onLines: () => {} });
  const busyFor = (ms: number) => {
    const until = performance.now() + ms;
    while (performance.now() < until) { /* a read being handled */ }
  };
  // Reads 15 ms apart (a live link, or a slow catch-up): each starts a run of its own.
  for (let i = 0; i < 8; i++) {
    conn.bulk();
    await new Promise((resolve) => setTimeout(resolve, 15));
  }
  assert.deepEqual(calls, []);
  // Back to back, a millisecond each: paused once the run passes 10 ms, and only once however many more come.
  const started = performance.now();
  while (performance.now() - started < 80) {
    busyFor(1);
    conn.bulk();
  }
  assert.deepEqual(calls, ["pause", "readStop"]);
  await waitFor(() => Promise.resolve(calls.length === 4), {
    timeoutMs: 1000,
    stepMs: 1,
    what: "the socket to resume",
  });
  assert.deepEqual(calls, ["pause", "readStop", "resume", "readStart"]);
  // A new run after the breath: not paused again before another 10 ms.
  conn.bulk();
  assert.deepEqual(calls, ["pause", "readStop", "resume", "readStart"]);
});

Deno.test("LineSocket.write() of nothing writes nothing and says it was taken (a write to wait on would never drain)", () => {
  const written: unknown[] = [];
  const socket = Object.assign(new EventEmitter(), {
    destroyed: false,
    write: (data: unknown) => written.push(data) && false,
  });
  const conn = new LineSocket(socket as unknown as Socket, { maxLineBytes: 100, onLines: () => {} });
  assert.equal(conn.write(""), true);
  assert.equal(conn.write(new Uint8Array(0)), true);
  assert.deepEqual(written, []);
  assert.equal(conn.write("x\n"), false, "a real write still says what the socket said");
  assert.equal(written.length, 1);
});
