import assert from "node:assert/strict";
import { MAX_WRITE_BYTES, ReplyBudget, ReplyQueue } from "../lib/client/reply_queue.ts";
import { concatBytes, writeParts } from "../lib/net/write.ts";
import { captureLogs } from "./testing/logs.ts";
import { delay } from "./testing/wait.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * A connection that accepts at most `perWrite` bytes a call and finishes
 * each write a macrotask later, reading the caller's buffer only then: a
 * buffer reused while its write is in flight shows up as wrong bytes.
 */
function slowConn(perWrite = Infinity): { conn: Deno.Conn; received: () => string; writes: () => number } {
  const chunks: Uint8Array[] = [];
  let writes = 0;
  const conn = {
    write(bytes: Uint8Array): Promise<number> {
      writes++;
      const n = Math.min(bytes.length, perWrite);
      return new Promise((resolve) =>
        setTimeout(() => {
          chunks.push(bytes.slice(0, n));
          resolve(n);
        }, 0)
      );
    },
  } as unknown as Deno.Conn;
  return { conn, received: () => decoder.decode(concatBytes(chunks)), writes: () => writes };
}

Deno.test("writeParts() writes text and bytes, in order, in one write", async () => {
  const { conn, received, writes } = slowConn();
  await writeParts(conn, ["AT one\n", encoder.encode("? \xff bytes\n"), "é and 🙂\n"]);
  assert.equal(received(), "AT one\n? \xff bytes\né and 🙂\n");
  assert.equal(writes(), 1);
});

Deno.test("writeParts() writes a batch larger than a pooled buffer whole", async () => {
  const { conn, received } = slowConn();
  const big = "x".repeat(40_000) + "\n";
  await writeParts(conn, ["AT small\n", big, "ü".repeat(9_000)]);
  assert.equal(received(), "AT small\n" + big + "ü".repeat(9_000));
});

Deno.test("writeParts() finishes partial writes", async () => {
  const { conn, received, writes } = slowConn(7);
  await writeParts(conn, ["AT Hill +0.1 kiwi +34-118 1\n", "AT Hill +0.2 kiwi +34-118 2\n"]);
  assert.equal(received(), "AT Hill +0.1 kiwi +34-118 1\nAT Hill +0.2 kiwi +34-118 2\n");
  assert.equal(writes(), 8);
});

Deno.test("writeParts() never lends a buffer in flight to another write", async () => {
  const conns = Array.from({ length: 100 }, () => slowConn(5));
  await Promise.all(
    conns.map(({ conn }, i) => writeParts(conn, [`AT reply number ${i}\n`, `and its second line ${i}\n`])),
  );
  conns.forEach(({ received }, i) => assert.equal(received(), `AT reply number ${i}\nand its second line ${i}\n`));
  // And again, now that the pool holds buffers that were used.
  await Promise.all(conns.map(({ conn }, i) => writeParts(conn, [`again ${i}\n`])));
  conns.forEach(({ received }, i) =>
    assert.equal(received(), `AT reply number ${i}\nand its second line ${i}\nagain ${i}\n`)
  );
});

Deno.test("ReplyQueue writes replies in command order, the ready ones behind the head together", async () => {
  const { conn, received, writes } = slowConn();
  const queue = new ReplyQueue(conn);
  let release!: (reply: string) => void;
  queue.push(new Promise<string>((resolve) => release = resolve));
  queue.push("second\n");
  queue.push(encoder.encode("third\n"));
  const flushed = queue.flush();
  await delay(5); // time for a wrong early write to happen
  assert.equal(writes(), 0, "nothing goes out before the head is ready");
  release("first\n");
  await flushed;
  assert.equal(received(), "first\nsecond\nthird\n");
  assert.equal(writes(), 1);
});

Deno.test("ReplyQueue: a handler that fails is logged as an error, and the replies behind it still go out", async () => {
  await using logs = await captureLogs();
  const { conn, received } = slowConn();
  const queue = new ReplyQueue(conn);
  queue.push("first\n");
  queue.push(Promise.reject(new RangeError("Invalid string length")));
  queue.push("third\n");
  await queue.flush();
  assert.equal(received(), "first\nthird\n");
  assert.equal(
    logs.count(/^error A command's handler failed, and its client gets no reply: RangeError: Invalid string length/),
    1,
  );
});

Deno.test("ReplyQueue gathers at most MAX_WRITE_BYTES a write (a larger reply alone), in order, whatever the text", async () => {
  const sizes: number[] = [];
  const chunks: Uint8Array[] = [];
  const conn = {
    write(bytes: Uint8Array): Promise<number> {
      sizes.push(bytes.length);
      chunks.push(bytes.slice());
      return Promise.resolve(bytes.length);
    },
  } as unknown as Deno.Conn;
  const queue = new ReplyQueue(conn);
  // 256 WHATSAT-like replies of about 7.3 KB, their body shared, as a cached answer's is; then 100 echoes of lines of
  // 2,700 "日" (8,100 bytes in UTF-8, 2,700 UTF-16 units); a 100 KB reply among the first.
  const body = encoder.encode(`\n${"x".repeat(7_300)}\n\n`);
  const expected: string[] = [];
  // The most bytes each may take, as the queue reckons it without encoding: text at three bytes a UTF-16 unit.
  const bounds: number[] = [];
  for (let i = 0; i < 256; i++) {
    const line = `AT Hill +0.1 c${i} +1+1 ${i}`;
    if (i === 100) {
      const big = `${line}\n${"y".repeat(100_000)}\n\n`;
      queue.push(big);
      expected.push(big);
      bounds.push(big.length * 3);
    } else {
      queue.push([line, body]);
      expected.push(line + decoder.decode(body));
      bounds.push(line.length * 3 + body.length);
    }
  }
  for (let i = 0; i < 100; i++) {
    const echo = `? ${"日".repeat(2_700)}\n`;
    queue.push(echo);
    expected.push(echo);
    bounds.push(echo.length * 3);
  }
  await queue.flush();
  const all = expected.join("");
  assert.equal(decoder.decode(concatBytes(chunks)), all);
  assert.equal(sizes.reduce((a, b) => a + b, 0), encoder.encode(all).length);
  for (const size of sizes) {
    assert.ok(size <= MAX_WRITE_BYTES || size === encoder.encode(expected[100]).length, `a write of ${size} bytes`);
  }
  assert.ok(sizes.includes(encoder.encode(expected[100]).length), "the 100 KB reply went in a write of its own");
  // Gathered while their bounds fit: 8 WHATSAT-like replies a write, 8 echoes (65 KB of UTF-8 against a 202 KB write
  // when text was counted in UTF-16 units).
  let writes = 0;
  let gathered = 0;
  for (const bound of bounds) {
    if (gathered > 0 && gathered + bound > MAX_WRITE_BYTES) {
      writes++;
      gathered = 0;
    }
    gathered += bound;
  }
  assert.equal(sizes.length, writes + 1);
  assert.ok(sizes.length > 40, `${sizes.length} writes`);
});

Deno.test("ReplyBudget counts each queue's replies from ready until written, a shared body once, a released queue's not at all", async () => {
  // A connection whose writes finish only when the test says so, each taking all its bytes.
  const finish: (() => void)[] = [];
  const conn = {
    write(bytes: Uint8Array): Promise<number> {
      return new Promise((resolve) => finish.push(() => resolve(bytes.length)));
    },
  } as unknown as Deno.Conn;
  const overs: number[] = [];
  const budget = new ReplyBudget(40, () => overs.push(budget.held));
  const a = new ReplyQueue(conn, () => {}, budget);
  const b = new ReplyQueue(conn, () => {}, budget);
  a.push("AT one\n"); // 7 characters
  a.push(encoder.encode("? \xff\n")); // 5 bytes (the "\xff" is two in UTF-8)
  let resolve!: (reply: string) => void;
  a.push(new Promise<string>((r) => resolve = r)); // nothing until it is ready
  assert.equal(a.heldBytes, 12);
  // Two WHATSAT-like replies sharing one body (a cached answer's): its 9 bytes count once.
  const body = encoder.encode('\n{"a":1}\n');
  b.push(["AT two", body]);
  b.push(["AT three", body.subarray(0, 3), body.subarray(7)]);
  assert.deepEqual([a.heldBytes, b.heldBytes, budget.held], [12, 6 + 8 + 9, 35]);
  assert.deepEqual(overs, []);
  resolve("x".repeat(20)); // 20 more: past 40
  await Promise.resolve();
  assert.deepEqual([a.heldBytes, budget.held], [32, 55]);
  assert.deepEqual(overs, [55]);
  const flushedA = a.flush();
  await delay(0);
  assert.equal(finish.length, 1, "the three ready replies go out in one write");
  assert.equal(a.heldBytes, 32, "counted until that write is done");
  finish.shift()!();
  await flushedA;
  assert.deepEqual([a.heldBytes, budget.held], [0, 23]);
  // Another write in flight when the connection closes: out of the count at once, and nothing later counts again.
  a.push("again\n");
  const again = a.flush();
  await delay(0);
  assert.deepEqual([a.heldBytes, budget.held], [6, 29]);
  a.release();
  assert.deepEqual([a.heldBytes, budget.held], [0, 23]);
  a.push("late\n");
  assert.deepEqual([a.heldBytes, budget.held], [0, 23]);
  finish.shift()!();
  await delay(0);
  finish.shift()!(); // "late" (the fake connection does not close)
  await again;
  assert.deepEqual([a.heldBytes, budget.held], [0, 23]);
  // The body counts until the last reply holding it is written.
  const flushedB = b.flush();
  await delay(0);
  finish.shift()!();
  await flushedB;
  b.push(["AT four", body]);
  assert.deepEqual([b.heldBytes, budget.held], [7 + 9, 16]);
  const flushedB2 = b.flush();
  b.push(["AT five", body]); // behind the write in flight
  await delay(0);
  assert.deepEqual([b.heldBytes, budget.held], [7 + 7 + 9, 23]);
  finish.shift()!();
  await delay(0);
  assert.deepEqual([b.heldBytes, budget.held], [7 + 9, 16], "the body is still held by the reply behind");
  finish.shift()!();
  await flushedB2;
  assert.deepEqual([b.heldBytes, budget.held], [0, 0]);
});
