import assert from "node:assert/strict";
import { StoreDigest } from "../lib/store/digest.ts";
import type { LocationRecord } from "../lib/protocol.ts";
import { LocationStore } from "../lib/store/store.ts";

function record(client: string, time: string, server = "Hill"): LocationRecord {
  return {
    line: ["AT", server, "+0.000000001", client, "+1-2", time].join(" "),
    clientId: client,
    clientTime: time,
    location: "+1-2",
  };
}

Deno.test("LocationStore keeps the greatest record per client and finds it again", () => {
  const store = new LocationStore();
  assert.equal(store.offer(record("kiwi", "5")), true);
  assert.equal(store.offer(record("kiwi", "4")), false, "an older record is refused");
  assert.equal(store.offer(record("kiwi", "5")), false, "the same record is not newer");
  assert.equal(store.offer(record("kiwi", "5", "Jaquez")), true, "a tie goes to the greater line");
  assert.deepEqual(store.get("kiwi"), record("kiwi", "5", "Jaquez"));
  assert.equal(store.get("kiw"), undefined);
  assert.equal(store.get("kiwi2"), undefined);
  assert.equal(store.size, 1);
});

Deno.test("LocationStore tells apart IDs that are prefixes of each other or collide, across growth", () => {
  const store = new LocationStore();
  const ids: string[] = [];
  for (let i = 0; i < 50_000; i++) ids.push(`c${i}`, `c${i}x`, `🥝${i}`);
  for (const [n, id] of ids.entries()) assert.equal(store.offer(record(id, String(n))), true);
  assert.equal(store.size, ids.length);
  for (const [n, id] of ids.entries()) assert.equal(store.get(id)?.line, record(id, String(n)).line, id);
  assert.equal(store.get("c50000"), undefined);
});

Deno.test("LocationStore's digest matches the digest of its records, whatever the order they came in", () => {
  const a = new LocationStore();
  const b = new LocationStore();
  const records = Array.from({ length: 2000 }, (_, i) => record(`client-${i % 300}`, String(i)));
  for (const r of records) a.offer(r);
  for (const r of [...records].reverse()) b.offer(r);
  const expected = new StoreDigest();
  for (const line of a.lines()) expected.toggle(line.split(" ")[3], line);
  assert.deepEqual(a.digest.words, expected.words);
  assert.deepEqual(b.digest.words, a.digest.words);
});

Deno.test("LocationStore.inBuckets() returns the records of exactly those buckets", () => {
  const store = new LocationStore();
  for (let i = 0; i < 500; i++) store.offer(record(`client-${i}`, "1"));
  const all = store.inBuckets(new Set(Array.from({ length: 1024 }, (_, i) => i)));
  assert.equal(all.length, 500);
  assert.deepEqual(store.inBuckets(new Set()), []);
  assert.deepEqual(all.find((r) => r.clientId === "client-7"), record("client-7", "1"));
});
