import assert from "node:assert/strict";
import fc from "fast-check";
import { bucketOf, StoreDigest } from "../lib/store/digest.ts";
import type { LocationRecord } from "../lib/protocol.ts";
import { LocationStore, WALK_PAUSE_CLIENTS } from "../lib/store/store.ts";

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

Deno.test("LocationStore.linesInBuckets() yields an empty string (a pause) after each 16,384 clients walked", () => {
  assert.equal(WALK_PAUSE_CLIENTS, 16_384);
  const store = new LocationStore();
  const count = 100_000;
  const ids = Array.from({ length: count }, (_, i) => `c${i}`);
  for (const id of ids) store.offer(record(id, "1"));
  // One bucket's clients, spread through the map (about one in 1,024), and the pauses between them, in the map's order.
  const bucket = bucketOf("c0");
  const expected: string[] = [];
  ids.forEach((id, i) => {
    if (bucketOf(id) === bucket) expected.push(record(id, "1").line);
    if ((i + 1) % WALK_PAUSE_CLIENTS === 0) expected.push("");
  });
  assert.equal(expected.filter((line) => line === "").length, 6);
  assert.deepEqual([...store.linesInBuckets(new Set([bucket]))], expected);
  // A walk of every bucket pauses as often.
  const all = [...store.linesInBuckets(new Set(Array.from({ length: 1024 }, (_, i) => i)))];
  assert.equal(all.length, count + 6);
  assert.equal(all.filter((line) => line === "").length, 6);
});

Deno.test("LocationStore.linesInBuckets() gives the lines of exactly those buckets", () => {
  const store = new LocationStore();
  for (let i = 0; i < 500; i++) store.offer(record(`client-${i}`, "1"));
  const all = [...store.linesInBuckets(new Set(Array.from({ length: 1024 }, (_, i) => i)))];
  assert.equal(all.length, 500);
  assert.deepEqual([...store.linesInBuckets(new Set())], []);
  assert.ok(all.includes(record("client-7", "1").line));
  const some = new Set([bucketOf("client-7"), bucketOf("client-300"), 5]);
  const expected = Array.from({ length: 500 }, (_, i) => `client-${i}`).filter((id) => some.has(bucketOf(id)));
  assert.deepEqual([...store.linesInBuckets(some)].sort(), expected.map((id) => record(id, "1").line).sort());
});

Deno.test("LocationStore with the herd's server names keeps lines packed and gives each back to the byte", () => {
  // Lines of every shape a store may hold: the herd's servers and others (a record loaded from a database written
  // under another config), IDs that look like the other fields, Unicode, times that tie with different lines; fields
  // of odd and even lengths (a packed line's last character may hold one of them or two), and fields of characters
  // a packed line has no code for (such a line is kept whole).
  const server = fc.constantFrom("Hill", "Jaquez", "Singleton", "Gone", "Hill2", "H");
  const id = fc.oneof(fc.constantFrom("kiwi", "AT", "+1-2", "5", "Hill", "🥝", "é", "0"), fc.string({ minLength: 1 }))
    .filter((text) => !/\s/.test(text));
  const time = fc.oneof(
    fc.constantFrom("5", "5.0", "5.000000001", "6", "1764680000.123456789", "56", "5.00"),
    fc.stringMatching(/^[0-9]{1,12}(\.[0-9]{1,10})?$/),
  );
  const difference = fc.oneof(
    fc.constantFrom("+0.000000001", "-3.250000000", "+12.000000000", "-0.5"),
    fc.stringMatching(/^[+-][0-9]{1,4}\.[0-9]{1,9}$/),
  );
  const location = fc.oneof(
    fc.constantFrom("+1-2", "+34.068930-118.445127", "-0+0", "+1-2.5"),
    fc.stringMatching(/^[+-][0-9]{1,3}(\.[0-9]{1,7})?[+-][0-9]{1,3}(\.[0-9]{1,7})?$/),
    fc.constantFrom("+1x-2", "+1-2é", "+1-2🥝"),
  );
  const offerOf = (servers: fc.Arbitrary<string>) =>
    fc.tuple(servers, difference, id, location, time).map(([s, d, c, l, t]) => ({
      line: ["AT", s, d, c, l, t].join(" "),
      clientId: c,
      clientTime: t,
      location: l,
    }));
  const offer = offerOf(server);
  // Five servers, or 130: past the 128th, lines are kept whole.
  const many = Array.from({ length: 130 }, (_, i) => `S${i}`);
  const herds = fc.constantFrom(["Hill", "Jaquez", "Smith", "Campbell", "Singleton"], [...many, "Hill", "Jaquez"]);
  const manyOffer = offerOf(fc.constantFrom("S0", "S31", "S32", "S127", "S128", "S129"));
  // Offers, and packing passes started or carried on (a few lines at a time) between them: lines whole and packed mixed.
  const step = fc.oneof(offer, manyOffer, fc.integer({ min: 1, max: 4 }));
  fc.assert(
    fc.property(herds, fc.array(step, { maxLength: 60 }), (servers, steps) => {
      const plain = new LocationStore({ ttlS: 0 });
      const packed = new LocationStore({ servers });
      const records: LocationRecord[] = [];
      for (const s of steps) {
        if (typeof s === "number") {
          packed.startPacking();
          packed.pack(s);
        } else {
          records.push(s);
          assert.equal(packed.offer(s), plain.offer(s), s.line);
        }
      }
      alike(plain, packed, records);
      // Every line packed that can be.
      while (packed.pack(1));
      packed.startPacking();
      while (packed.pack(1));
      for (const r of records) {
        const line = packed.lineOf(r.clientId)!;
        const server = line.split(" ")[1];
        const names: readonly string[] = servers;
        const packable = names.includes(server) && names.indexOf(server) < 128 &&
          /^[0-9+\-. ]*$/.test(line.split(" ").filter((_, i) => i !== 3).slice(2).join(" "));
        assert.equal(packed.isPacked(r.clientId), packable, line);
      }
      alike(plain, packed, records);
    }),
    { numRuns: 300 },
  );
});

/** Whether `packed` holds what `plain` holds, by every reading of it. */
function alike(plain: LocationStore, packed: LocationStore, records: LocationRecord[]): void {
  assert.deepEqual([...packed.lines()], [...plain.lines()]);
  assert.deepEqual(packed.digest.words, plain.digest.words);
  for (const r of records) {
    assert.equal(packed.lineOf(r.clientId), plain.lineOf(r.clientId));
    assert.deepEqual(packed.get(r.clientId), plain.get(r.clientId));
    // A live record's line (seq and wait after it), and the same with each character changed in turn.
    const held = plain.lineOf(r.clientId);
    const live = `${r.line} 7 500`;
    assert.equal(packed.holds(r.clientId, live, r.line.length), held === r.line, live);
    for (let i = 0; i < r.line.length; i++) {
      // Each character changed for one a packed line has no code for, and for one it has.
      for (const other of [live[i] === "x" ? "y" : "x", live[i] === "7" ? "8" : "7"]) {
        const changed = live.slice(0, i) + other + live.slice(i + 1);
        assert.equal(packed.holds(r.clientId, changed, r.line.length), held === changed.slice(0, r.line.length));
      }
    }
    assert.equal(packed.holds(r.clientId, live, r.line.length - 1), false);
    assert.equal(packed.holds(r.clientId, `${r.line}7 500`, r.line.length + 1), false);
  }
  const buckets = new Set(records.map((r) => bucketOf(r.clientId)));
  assert.deepEqual([...packed.linesInBuckets(buckets)], [...plain.linesInBuckets(buckets)]);
}

Deno.test("LocationStore packs a new client's line at once, a replaced one by the next pass, in slices; whole when read", () => {
  const store = new LocationStore({ servers: ["Hill", "Jaquez"] });
  const line = "AT Jaquez +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503";
  const kiwi = {
    line,
    clientId: "kiwi.cs.ucla.edu",
    clientTime: "1621464827.959498503",
    location: "+34.068930-118.445127",
  };
  store.offer(kiwi);
  for (let i = 0; i < 5; i++) store.offer(record(`client-${i}`, "1"));
  assert.equal(store.isPacked("kiwi.cs.ucla.edu"), true, "a new client's line: packed at once");
  assert.equal(store.isPacked("client-4"), true);
  assert.equal(store.lineOf("kiwi.cs.ucla.edu"), line);
  assert.equal(store.startPacking(), false, "nothing replaced: no pass");
  for (let i = 0; i < 5; i++) store.offer(record(`client-${i}`, "2"));
  store.offer({ ...kiwi, line: line.replace("827.959", "828.959"), clientTime: "1621464828.959498503" });
  assert.equal(store.isPacked("client-0"), false, "a replaced line: whole until a pass");
  assert.equal(store.pack(10), false, "no pass begun: nothing to pack");
  assert.equal(store.isPacked("client-0"), false);
  assert.equal(store.startPacking(), true);
  assert.equal(store.startPacking(), false, "a pass under way is not begun again");
  // Replaced during the pass: a client the pass has is packed in its newest line, another waits for the next pass.
  store.offer(record("client-0", "3"));
  store.offer(record("client-5", "1"));
  store.offer(record("client-5", "2"));
  assert.equal(store.pack(3), true, "three of six packed, three left");
  assert.equal(store.pack(3), false);
  for (let i = 0; i < 5; i++) assert.equal(store.isPacked(`client-${i}`), true);
  assert.equal(store.isPacked("kiwi.cs.ucla.edu"), true);
  assert.equal(store.isPacked("client-5"), false);
  assert.equal(store.lineOf("client-0"), record("client-0", "3").line);
  assert.equal(store.get("kiwi.cs.ucla.edu")?.line, line.replace("827.959", "828.959"));
  assert.deepEqual(store.get("client-3"), record("client-3", "2"));
  assert.equal(store.startPacking(), true);
  assert.equal(store.pack(10), false);
  assert.equal(store.isPacked("client-5"), true);
  assert.deepEqual(store.get("client-5"), record("client-5", "2"));
  assert.equal(store.startPacking(), false, "nothing stored since: no pass");
});

Deno.test("LocationStore with the herd's server names sweeps expired lines, packed or not, out of it and its digest", () => {
  let now = 100n * 1_000_000_000n;
  const store = new LocationStore({ ttlS: 10, nowNs: () => now, servers: ["Hill"] });
  const empty = [...store.digest.words];
  store.offer(record("kiwi", "95"));
  store.offer(record("kiwi", "96", "Elsewhere"));
  store.offer(record("apple", "97"));
  store.offer(record("pear", "96"));
  store.startPacking();
  store.pack(10);
  assert.equal(store.isPacked("pear") && store.isPacked("apple") && !store.isPacked("kiwi"), true);
  now += 6_500_000_000n; // kiwi's and pear's 96 are now 10.5 s old: expired; apple's 97 is not
  assert.equal(store.sweepExpired(10), 2);
  assert.deepEqual([...store.lines()], [record("apple", "97").line]);
  now += 1n * 1_000_000_000n;
  assert.equal(store.sweepExpired(10), 1);
  assert.deepEqual([...store.digest.words], empty);
});

Deno.test("LocationStore with the herd's server names gives back lines of long fields and long or non-ASCII IDs", () => {
  const servers = ["Hill", "Hill", "Jaquez"]; // a name twice: one character for it
  const plain = new LocationStore({ ttlS: 0 });
  const packed = new LocationStore({ servers });
  const records: LocationRecord[] = [];
  const at = (server: string, client: string, location: string, time: string): LocationRecord => ({
    line: ["AT", server, "+0.000000001", client, location, time].join(" "),
    clientId: client,
    clientTime: time,
    location,
  });
  const ids = ["é".repeat(12), "é".repeat(13), "🥝".repeat(7), "x".repeat(14), "é".repeat(1025), "k".repeat(3000)];
  // Fields of hundreds of characters (packed: more codes than the digest's first buffer), and lines too long to pack.
  const locations = ["+1-2", `+1.${"3".repeat(300)}-2.${"4".repeat(301)}`, `+1.${"5".repeat(2000)}-2`];
  for (const [i, id] of ids.entries()) {
    for (const [j, location] of locations.entries()) {
      // Each time greater than the one before, so each line replaces the last (a packed one among them).
      const times = [`${5 + 2 * j}`, `${5 + 2 * j}.${"0".repeat(j * 150)}1`];
      if (j === 2) times.push(`1${"0".repeat(300_000)}`);
      for (const time of times) {
        const r = at(i % 2 === 0 ? "Jaquez" : "Hill", id, location, time);
        records.push(r);
        assert.equal(plain.offer(r), true);
        assert.equal(packed.offer(r), true, r.line.slice(0, 80));
        packed.startPacking();
        while (packed.pack(2));
      }
    }
    assert.equal(packed.lineOf(id), plain.lineOf(id));
  }
  // What alike() checks, but holds() only for the line itself and one change (these lines are long).
  assert.deepEqual([...packed.lines()], [...plain.lines()]);
  assert.deepEqual(packed.digest.words, plain.digest.words);
  for (const id of ids) {
    assert.deepEqual(packed.get(id), plain.get(id));
    const held = plain.lineOf(id)!;
    assert.equal(packed.holds(id, `${held} 7 500`, held.length), true);
    const changed = held.slice(0, held.length - 2) + (held.endsWith("1") ? "2" : "1") + held.slice(-1);
    assert.equal(packed.holds(id, changed, held.length), false);
  }
  assert.deepEqual([...packed.linesInBuckets(new Set(ids.map(bucketOf)))], [
    ...plain.linesInBuckets(new Set(ids.map(bucketOf))),
  ]);
  // Lines of seven fields and of five (none the herd makes) are kept whole, and read as a whole-line store reads them.
  for (const line of ["AT Hill +0.1 seven +1-2 5 6", "AT Hill +0.1 five +1-2"]) {
    const [, , , clientId, location, clientTime] = line.split(" ");
    const r = { line, clientId, location, clientTime };
    assert.equal(packed.offer(r), plain.offer(r));
    assert.equal(packed.isPacked(clientId), false);
    assert.deepEqual(packed.get(clientId), plain.get(clientId));
  }
  assert.equal(packed.isPacked("é".repeat(12)), false, "a line of 300,000 digits is kept whole");
  assert.equal(packed.isPacked("k".repeat(3000)), false);
});

Deno.test("LocationStore compares a client time with a packed one written otherwise (the point elsewhere) as numbers", () => {
  const cases = [["100", "9.0", false, false], ["9.0", "100", true, false], ["5.0", "05", false, true]] as const;
  for (const [held, offered, stored, later] of cases) {
    for (const servers of [[], ["Hill"]]) {
      const store = new LocationStore({ servers });
      store.offer(record("kiwi", held));
      assert.equal(store.offer(record("kiwi", offered)), stored, `${offered} after ${held}`);
      assert.equal(store.offer(record("kiwi", "10.5")), later, `10.5 after ${held}, ${offered}`);
    }
  }
});

Deno.test("LocationStore with a TTL and the herd's server names leaves expired packed lines out of every read", () => {
  let now = 100n * 1_000_000_000n;
  const store = new LocationStore({ ttlS: 10, nowNs: () => now, servers: ["Hill"] });
  store.offer(record("kiwi", "95"));
  store.offer(record("apple", "97"));
  store.offer(record("apple", "98")); // replaced: whole until a pass
  assert.equal(store.isPacked("kiwi") && !store.isPacked("apple"), true);
  now += 6_000_000_000n; // kiwi's 95 is 11 s old, apple's 98 8 s
  assert.equal(store.get("kiwi"), undefined);
  assert.deepEqual(store.get("apple"), record("apple", "98"));
  assert.deepEqual([...store.lines()], [record("apple", "98").line]);
  assert.deepEqual(
    [...store.linesInBuckets(new Set([bucketOf("kiwi"), bucketOf("apple")]))],
    [record("apple", "98").line],
  );
  // A sweep in the middle of a pass: the pass skips the client it took out.
  store.offer(record("kiwi", "105"));
  store.offer(record("kiwi", "96")); // older: refused
  store.offer(record("pear", "99"));
  store.offer(record("pear", "99.5"));
  assert.equal(store.startPacking(), true);
  now += 4_000_000_000n; // apple's 98 and pear's 99.5 now 12 and 10.5 s old
  assert.equal(store.sweepExpired(10), 2);
  assert.equal(store.pack(10), false);
  assert.deepEqual([...store.lines()], [record("kiwi", "105").line]);
});
