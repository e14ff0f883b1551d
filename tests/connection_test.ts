/** A client connection closed while lines it already read wait: they are not routed. */

import assert from "node:assert/strict";
import { ClientConnection } from "../lib/client/connection.ts";
import { ReplyBudget } from "../lib/client/reply_queue.ts";
import type { RouterContext } from "../lib/client/router.ts";
import { LocationStore } from "../lib/store/store.ts";
import { traffic } from "../lib/traffic_log.ts";

const encoder = new TextEncoder();

/**
 * A connection that hands out `input` as reads of the reader's buffer size, then waits for more until closed; whose
 * writes never finish until it is closed, and then fail.
 */
function stuckConn(input: Uint8Array): { conn: Deno.Conn; closed: () => boolean } {
  let offset = 0;
  let closed = false;
  const waiting: (() => void)[] = [];
  const whenClosed = () => new Promise<void>((resolve) => waiting.push(resolve));
  const conn = {
    remoteAddr: { transport: "tcp", hostname: "127.0.0.1", port: 40000 },
    async read(buffer: Uint8Array): Promise<number | null> {
      if (closed) throw new Deno.errors.BadResource("closed");
      if (offset === input.length) {
        await whenClosed();
        return null;
      }
      const n = Math.min(buffer.length, input.length - offset);
      buffer.set(input.subarray(offset, offset + n));
      offset += n;
      return n;
    },
    async write(): Promise<number> {
      if (!closed) await whenClosed();
      throw new Deno.errors.BrokenPipe("closed");
    },
    close(): void {
      if (closed) throw new Deno.errors.BadResource("closed twice");
      closed = true;
      for (const resolve of waiting.splice(0)) resolve();
    },
  } as unknown as Deno.Conn;
  return { conn, closed: () => closed };
}

Deno.test("a client closed for the reply budget has none of the lines it already sent routed: their IAMATs are not stored", async () => {
  const store = new LocationStore();
  const context: RouterContext = {
    name: "Hill",
    store,
    places: { name: "none", result: () => Promise.reject(new Error("no WHATSAT here")) },
    publish: () => Promise.resolve(),
    limits: { maxClientIdBytes: 256, maxClockSkewS: 3600, maxRecords: 1000 },
    canCommit: () => true,
    heldSettled: () => undefined,
  };
  // 40 invalid lines of 100 bytes, each answered at once with its echo (4 KB, past a 2,000-byte budget at the 20th),
  // then 100 IAMATs. Two reads: the connection's first 1 KiB (ten lines), then the rest, in which the budget is passed
  // and the IAMATs come, in the same read.
  const now = Math.floor(Date.now() / 1000);
  const lines = [
    ...Array.from({ length: 40 }, (_, i) => `junk ${i} `.padEnd(99, "x")),
    ...Array.from({ length: 100 }, (_, i) => `IAMAT after-close-${i} +1+1 ${now}`),
  ];
  const input = encoder.encode(lines.map((line) => `${line}\n`).join(""));
  assert.ok(input.length - 1024 <= 16 * 1024, "two reads");
  const { conn, closed } = stuckConn(input);
  let overs = 0;
  const budget = new ReplyBudget(2_000, () => {
    overs++;
    client.close("over the budget");
  });
  const client = new ClientConnection(conn, context, 8192, budget);
  await client.done;
  traffic.flush(); // the connection's log lines, and its flush timer
  assert.ok(closed());
  assert.equal(overs, 1);
  assert.equal(budget.held, 0);
  assert.equal(store.size, 0, "no IAMAT after the close was routed");
});
