/**
 * The bounds a server keeps (issue 12): what a client gets when it hits
 * each, and what every server holds afterwards. The failing-disk test is
 * in disk_test.ts.
 */

import assert from "node:assert/strict";
import { startFakePlaces } from "./testing/fake_places.ts";
import { exchange, HERD_TEST_PERMISSIONS, TestHerd, type TestHerdOptions } from "./testing/herd.ts";
import { writeAll } from "../lib/net/write.ts";
import { inspectProcess } from "./testing/process_stats.ts";
import { delay, waitFor } from "./testing/wait.ts";

/** No key is given, so WHATSAT answers from offline GeoNames data and this URL is never called. */
const NOWHERE = "http://127.0.0.1:9/unused";

/** One server, Solo, answering WHATSAT offline, with `options` added (config keys in `extra`, an admin port). */
function soloHerd(options: Pick<TestHerdOptions, "extra" | "admin"> = {}): Promise<TestHerd> {
  return TestHerd.create({
    placesUrl: NOWHERE,
    names: ["Solo"],
    links: [],
    places: { provider: "offline" },
    ...options,
  });
}

/** Now, in whole POSIX seconds, plus `seconds`. */
function secondsFromNow(seconds: number): number {
  return Math.floor(Date.now() / 1000) + seconds;
}

/** What `name` answers to a WHATSAT for `id`: its first line. */
async function lookup(herd: TestHerd, name: string, id: string): Promise<string> {
  return (await exchange(herd.port(name), `WHATSAT ${id} 1 0\n`)).split("\n")[0];
}

Deno.test({
  name: "IAMATs from the far future, over-long client IDs and new clients past records.max are invalid everywhere",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await TestHerd.create({
    placesUrl: NOWHERE,
    names: ["A", "B"],
    links: [["A", "B"]],
    places: { provider: "offline" },
    extra: { records: { max: 6 } },
  });
  await herd.startAll(); // two probe clients on each server

  // A time from the far future would win over every later report, forever: invalid.
  const forever = "IAMAT victim +10+10 99999999999999999999";
  assert.equal(await exchange(herd.port("A"), `${forever}\n`), `? ${forever}\n`);
  const lateHour = `IAMAT victim +10+10 ${secondsFromNow(3700)}`;
  assert.equal(await exchange(herd.port("A"), `${lateHour}\n`), `? ${lateHour}\n`);
  assert.match(await exchange(herd.port("A"), `IAMAT victim +10+10 ${secondsFromNow(3500)}\n`), /^AT A /);
  // The victim's own report, in the past, is still answered; and a later one still wins.
  await waitFor(async () => (await lookup(herd, "B", "victim")).startsWith("AT A "), { what: "victim at B" });

  // Client IDs: 256 bytes is fine, 257 is not (in UTF-8: 128 two-byte letters are 256).
  const longest = "é".repeat(128);
  const tooLong = `${longest}x`;
  assert.match(await exchange(herd.port("A"), `IAMAT ${longest} +1+1 1700000000\n`), /^AT A /);
  assert.equal(
    await exchange(herd.port("A"), `IAMAT ${tooLong} +1+1 1700000000\n`),
    `? IAMAT ${tooLong} +1+1 1700000000\n`,
  );
  assert.equal(await exchange(herd.port("A"), `WHATSAT ${tooLong} 10 1\n`), `? WHATSAT ${tooLong} 10 1\n`);

  // records.max 6: two probes, the victim, the longest ID, one more; then no new client, known ones update.
  assert.match(await exchange(herd.port("A"), "IAMAT fifth +1+1 1700000000\n"), /^AT A /);
  await waitFor(async () => (await lookup(herd, "B", "fifth")).startsWith("AT A "), { what: "fifth at B" });
  assert.match(await exchange(herd.port("B"), "IAMAT sixth +1+1 1700000000\n"), /^AT B /);
  assert.equal(await exchange(herd.port("B"), "IAMAT seventh +1+1 1700000000\n"), "? IAMAT seventh +1+1 1700000000\n");
  assert.match(await exchange(herd.port("B"), "IAMAT fifth +2+2 1700000001\n"), /^AT B /, "a known client updates");
  await waitFor(() => /records\.max: IAMATs for new clients are invalid/.test(herd.stderr("B")), {
    what: "B's warning that its store is full",
  });

  for (const name of ["A", "B"]) {
    assert.match(await lookup(herd, name, "victim"), /^AT A \S+ victim \+10\+10 \d+$/);
    assert.ok(!(await lookup(herd, name, "victim")).includes("99999999999999999999"), `${name} holds no forever`);
    assert.equal(await lookup(herd, name, tooLong), `? WHATSAT ${tooLong} 1 0`);
    assert.equal(await lookup(herd, name, "seventh"), "? WHATSAT seventh 1 0");
  }
});

Deno.test({
  name: "with records.ttlS, records expire by client time on every server and are neither resent nor accepted",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await TestHerd.create({
    placesUrl: NOWHERE,
    names: ["A", "B", "Probe"],
    links: [["A", "B"], ["A", "Probe"], ["B", "Probe"]],
    places: { provider: "offline" },
    peers: { reconcileIntervalMs: 500 },
    extra: { records: { ttlS: 3 } },
  });
  await herd.start("A");
  await herd.start("B");
  await herd.waitConverged(["A", "B"]);
  const soon = Date.now() / 1000 - 1; // expires two seconds from now
  const reply = await exchange(herd.port("A"), `IAMAT brief +1+1 ${soon.toFixed(3)}\n`);
  assert.match(reply, /^AT A /);
  assert.match(await lookup(herd, "B", "brief"), /^AT A /, "B holds it while it lasts");
  // An IAMAT already older than the TTL is answered, like any other, but stored nowhere.
  assert.match(await exchange(herd.port("A"), `IAMAT stale +1+1 ${secondsFromNow(-10)}\n`), /^AT A /);
  assert.equal(await lookup(herd, "A", "stale"), "? WHATSAT stale 1 0");
  assert.equal(await lookup(herd, "B", "stale"), "? WHATSAT stale 1 0");
  // Expired: gone from both, swept from both stores, and the digests (which reconciliation compares) agree.
  await waitFor(async () => (await lookup(herd, "A", "brief")).startsWith("? "), { what: "brief to expire at A" });
  await waitFor(async () => (await lookup(herd, "B", "brief")).startsWith("? "), { what: "brief to expire at B" });
  for (const name of ["A", "B"]) {
    await waitFor(async () => /Removed \d+ expired records/.test(await herd.log(name)), {
      what: `${name} to sweep its expired records`,
    });
  }
  await waitFor(async () => await herd.digestOf("A") === await herd.digestOf("B"), { what: "A and B to agree" });
  // Reconciliation runs every 500 ms: those after the expiry have not brought the expired record back anywhere. The
  // logs hold reconciliations from the links' start too, so only lines written after this mark count, and two of them
  // (the first may have begun before the mark): exchanges a server started, or answered (a server does not start its
  // own while its neighbour keeps starting them, each going both ways).
  const marks = { A: (await herd.log("A")).length, B: (await herd.log("B")).length };
  const reconciledSince = async (name: "A" | "B") =>
    (await herd.log(name)).slice(marks[name]).match(
      /(Reconciled|Reconciling) with "?[AB]"?:/g,
    )?.length ?? 0;
  await waitFor(async () => await reconciledSince("A") >= 2 && await reconciledSince("B") >= 2, {
    what: "two reconciliations at A and at B after the expiry",
  });
  assert.equal(await lookup(herd, "A", "brief"), "? WHATSAT brief 1 0");
  assert.equal(await lookup(herd, "B", "brief"), "? WHATSAT brief 1 0");
});

/** Opens a connection to `port` and returns it with a promise of what it reads until the server closes it. */
async function idleConnection(port: number): Promise<{ conn: Deno.TcpConn; closed: Promise<number> }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const closed = (async () => {
    const started = performance.now();
    const buffer = new Uint8Array(1024);
    try {
      while (await conn.read(buffer) !== null) { /* nothing is sent to an idle client */ }
    } catch { /* reset */ }
    return performance.now() - started;
  })();
  return { conn, closed };
}

Deno.test({
  name: "connections past limits.maxConnections are closed at once, idle ones time out, and a working client is served",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await soloHerd({ extra: { limits: { maxConnections: 20, idleTimeoutMs: 1500 } } });
  await herd.start("Solo");
  const port = herd.port("Solo");
  // The working client: one persistent connection, one IAMAT and WHATSAT every 200 ms throughout.
  const worker = await Deno.connect({ hostname: "127.0.0.1", port });
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();
  let served = 0;
  let working = true;
  const work = (async () => {
    const buffer = new Uint8Array(64 * 1024);
    for (let i = 0; working; i++) {
      await worker.write(encoder.encode(`IAMAT worker +1+1 1700000000.${i}\n`));
      const n = await worker.read(buffer);
      assert.ok(n !== null, "the working client's connection stays open");
      assert.match(decoder.decode(buffer.subarray(0, n)), /^AT Solo /);
      served++;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  })();
  try {
    // Thirty more: nineteen fit beside the working client, the rest are closed at once. (A connection of the
    // harness's start-up check may still be closing: one more may be refused.)
    const opened = await Promise.all(Array.from({ length: 30 }, () => idleConnection(port)));
    const lasted = await Promise.all(opened.map(({ closed }) => closed));
    const refused = lasted.filter((ms) => ms < 1000);
    const idled = lasted.filter((ms) => ms >= 1000);
    assert.ok(refused.length >= 11 && refused.length <= 12, `${refused.length} refused at once`);
    for (const ms of idled) assert.ok(ms >= 1400 && ms < 10_000, `an idle connection closed after ${ms} ms`);
    await waitFor(
      async () => /Refused \d+ client connections: 20 are open, limits\.maxConnections/.test(await herd.log("Solo")),
      { what: "the refusal in the log" },
    );
    // Said on the console too (stderr, where the console sink writes warnings): the server is full.
    await waitFor(
      () => /Refused \d+ client connections: 20 are open, limits\.maxConnections/.test(herd.stderr("Solo")),
      {
        what: "the refusal on the console",
      },
    );
    await waitFor(async () => /disconnected \("idle for 1500 ms"\)/.test(await herd.log("Solo")), {
      what: "the idle connections' close in the log",
    });
    assert.ok(served >= 5, `the working client was served ${served} times`);
    for (const { conn } of opened) conn.close();
    // Room again: a new client is served.
    assert.match(await exchange(port, "IAMAT after +1+1 1700000000\n"), /^AT Solo /);
  } finally {
    working = false;
    await work;
    worker.close();
  }
});

Deno.test({
  name:
    "a client sending one line a byte at a time for longer than limits.idleTimeoutMs is answered, not closed as idle",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await soloHerd({ extra: { limits: { idleTimeoutMs: 1000 } } });
  await herd.start("Solo");
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: herd.port("Solo") });
  const line = new TextEncoder().encode("IAMAT trickle +1+1 1700000000\n");
  // 30 bytes, one every 100 ms: three idle timeouts in all, and never one without a byte. A write to a connection the
  // server closed fails, and so does the read below.
  for (const byte of line) {
    await conn.write(Uint8Array.of(byte));
    await delay(100);
  }
  const buffer = new Uint8Array(1024);
  const n = await conn.read(buffer);
  assert.match(new TextDecoder().decode(buffer.subarray(0, n ?? 0)), /^AT Solo \S+ trickle \+1\+1 1700000000\n$/);
  assert.doesNotMatch(await herd.log("Solo"), /idle for 1000 ms/);
});

Deno.test({
  name: "connections holding half a request on the admin port take no more than 64 descriptors, and give way to " +
    "whole requests; clients are served meanwhile",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await soloHerd({ admin: true });
  await herd.start("Solo");
  const before = await inspectProcess(herd.pid("Solo"));
  const held: Deno.Conn[] = [];
  try {
    // With Deno.serve, each of these stayed open as long as its caller kept it (20,000 starved the client port).
    for (let i = 0; i < 300; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: herd.adminPort("Solo") });
      await conn.write(new TextEncoder().encode("GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n"));
      held.push(conn);
    }
    assert.deepEqual(await herd.admin("Solo", "/healthz"), { status: 200, body: "ok\n" });
    assert.match(await exchange(herd.port("Solo"), "IAMAT beside-the-flood +1+1 1\n"), /^AT Solo /);
    const during = await inspectProcess(herd.pid("Solo"));
    assert.ok(
      during.openFiles <= before.openFiles + 64 + 8,
      `descriptors: ${before.openFiles} before, ${during.openFiles} with 300 half-sent requests`,
    );
  } finally {
    for (const conn of held) conn.close();
  }
});

Deno.test({
  name: "limits.maxBackups: a new backup removes the oldest copies past it, and says so",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await soloHerd({ extra: { limits: { maxBackups: 2 } }, admin: true });
  await herd.start("Solo");
  assert.match(await exchange(herd.port("Solo"), "IAMAT kept +1+1 1\n"), /^AT Solo /);
  const made: string[] = [];
  for (let i = 0; i < 4; i++) {
    const response = await fetch(`http://127.0.0.1:${herd.adminPort("Solo")}/backup`, { method: "POST" });
    const body = await response.json();
    assert.equal(response.status, 200, JSON.stringify(body));
    made.push(body.path.slice(body.path.lastIndexOf("/") + 1));
  }
  assert.equal(new Set(made).size, 4, `four copies of their own: ${made}`);
  const left = [...Deno.readDirSync(`${herd.dir}/data/backups`)].map((entry) => entry.name).filter((name) =>
    name.endsWith(".db")
  ).sort();
  assert.deepEqual(left, made.slice(2), "the newest two are kept");
  for (const file of made.slice(0, 2)) {
    const said = new RegExp(`removed the backup ".*/${file}": limits\\.maxBackups keeps the newest 2`);
    await waitFor(async () => said.test(await herd.log("Solo")), { what: `the removal of ${file} in the log` });
  }
  // Asked by three callers at once, over and over: each backup is taken or refused (409) while another is being
  // taken, its removals of older copies included; never two at once (a 500, or two copies of one name).
  const statuses = new Map<number, number>();
  await Promise.all([0, 1, 2].map(async () => {
    for (let i = 0; i < 15; i++) {
      const response = await fetch(`http://127.0.0.1:${herd.adminPort("Solo")}/backup`, { method: "POST" });
      await response.body?.cancel();
      statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
    }
  }));
  assert.deepEqual([...statuses.keys()].sort(), [200, 409], JSON.stringify([...statuses]));
  assert.equal([...Deno.readDirSync(`${herd.dir}/data/backups`)].filter((e) => e.name.endsWith(".db")).length, 2);
});

Deno.test({
  name: "a client that does not read its replies is closed after limits.sendTimeoutMs, and the server serves others",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await soloHerd({ extra: { limits: { sendTimeoutMs: 1500 } }, admin: true });
  await herd.start("Solo");
  const port = herd.port("Solo");
  assert.match(await exchange(port, `IAMAT unread +34.068930-118.445127 ${secondsFromNow(0)}\n`), /^AT Solo /);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  // 20,000 twenty-result WHATSATs, 7 KB of JSON each, never read: 140 MB, more than any socket buffers hold (here
  // they took about 540 replies: Linux's default tcp_wmem lets a send buffer grow to 4 MB). Then a write waits, and
  // with 256 replies outstanding the server stops reading, so only what the buffers take is ever computed. With 300,
  // every reply fitted in the buffers, and the connection was closed as idle instead.
  const writing = writeAll(conn, new TextEncoder().encode("WHATSAT unread 50 20\n".repeat(20_000))).catch(() => {});
  try {
    await waitFor(
      async () => /disconnected \("a reply waited 1500 ms for it to read"\)/.test(await herd.log("Solo")),
      { what: "the connection that does not read to be closed", timeoutMs: 15_000 },
    );
    assert.match(await exchange(port, `IAMAT other +1+1 ${secondsFromNow(0)}\n`), /^AT Solo /);
    const { body } = await herd.admin("Solo", "/metrics");
    assert.match(body, /^herd_client_timeouts_total\{kind="send"\} 1$/m);
    assert.match(body, /^herd_client_timeouts_total\{kind="idle"\} 0$/m);
  } finally {
    conn.close();
    await writing;
  }
});

Deno.test({
  name:
    "past limits.maxReplyBytes across clients, the client holding the most unread replies is closed; the rest are not",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  const limit = 16 * 1024 * 1024; // the least allowed
  await using herd = await soloHerd({
    extra: { limits: { maxReplyBytes: limit }, maxLineBytes: 65536 },
    admin: true,
  });
  await herd.start("Solo");
  const port = herd.port("Solo");
  const metric = async (series: string) => {
    const { body } = await herd.admin("Solo", "/metrics");
    const line = body.split("\n").find((line) => line.startsWith(`${series} `));
    assert.ok(line !== undefined, `${series} in /metrics`);
    return Number(line.slice(series.length + 1));
  };
  assert.match(await exchange(port, `IAMAT unread +34.068930-118.445127 ${secondsFromNow(0)}\n`), /^AT Solo /);
  const closedForBudget = async () => (await herd.log("Solo")).match(/past limits\.maxReplyBytes"\)/g)?.length ?? 0;
  // Two clients that never read, each sending 700 lines of 48,000 bytes (34 MB), echoed as invalid: once the sockets'
  // buffers are full (a few MB), the server holds 256 echoes for each, 12.3 MB: under the limit alone, over it together.
  const reply = 48_002; // "? ", the line's 47,999 bytes, "\n"
  // Meanwhile, from before they connect until one is closed, a client that reads: batches of 200 pipelined
  // twenty-result WHATSATs, every one answered. Their replies share one cached body, counted once.
  let reading = true;
  let batches = 0;
  const reader = (async () => {
    while (reading) {
      const answers = await exchange(port, "WHATSAT unread 50 20\n".repeat(200));
      assert.equal(answers.match(/^AT Solo /gm)?.length, 200, `batch ${batches}`);
      batches++;
    }
  })();
  const conns = [
    await Deno.connect({ hostname: "127.0.0.1", port }),
    await Deno.connect({ hostname: "127.0.0.1", port }),
  ];
  const writing = conns.map((conn, c) => {
    const lines = Array.from({ length: 700 }, (_, i) => `${c}-${i}-`.padEnd(47_999, "x") + "\n");
    return writeAll(conn, new TextEncoder().encode(lines.join(""))).catch(() => {});
  });
  try {
    await waitFor(async () => await closedForBudget() > 0, {
      what: "a client that does not read to be closed",
      timeoutMs: 15_000,
    });
    reading = false;
    await reader;
    assert.ok(batches > 0);
    // The other keeps its 256 replies, under the limit, and is not closed.
    await waitFor(async () => await metric("herd_client_reply_bytes") === 256 * reply, {
      what: "the other client that does not read to hold 256 replies",
      timeoutMs: 15_000,
    });
    assert.equal(await closedForBudget(), 1);
    assert.equal(await metric("herd_client_reply_budget_closed_total"), 1);
    const log = await herd.log("Solo");
    const held = Number(/disconnected \("its unread replies held (\d+) bytes, the most of any client/.exec(log)?.[1]);
    assert.ok(held > limit / 2 && held <= 256 * reply, `${held} bytes held by the client closed`);
    assert.match(
      herd.stderr("Solo"),
      /Closed client 127\.0\.0\.1:\d+, holding the most unread replies \(\d+ bytes\): all clients' unread replies held more than limits\.maxReplyBytes \(16777216 bytes\)/,
    );
    assert.match(await exchange(port, `IAMAT other +1+1 ${secondsFromNow(0)}\n`), /^AT Solo /);
    assert.equal(await metric('herd_client_timeouts_total{kind="send"}'), 0);
  } finally {
    for (const conn of conns) conn.close();
    await Promise.all(writing);
  }
  // Closed, the other's replies are out of the count.
  await waitFor(async () => await metric("herd_client_reply_bytes") === 0, { what: "nothing counted once all closed" });
});

Deno.test({
  name: "the log rotates at log.maxBytes, keeping log.files files, and cuts long client lines",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await soloHerd({ extra: { log: { maxBytes: 65536, files: 3 } } });
  await herd.start("Solo");
  const long = `IAMAT ${"k".repeat(200)} +1+1 1700000000 ${"x".repeat(7000)}`;
  const lines = Array.from({ length: 2000 }, (_, i) => `IAMAT rotating-${i} +1+1 1700000000.${i}`);
  await exchange(herd.port("Solo"), `${lines.join("\n")}\n${long}\n`);
  await herd.stop("Solo");
  const files = new Map<string, number>();
  for await (const entry of Deno.readDir(`${herd.dir}/logs`)) {
    if (entry.name !== ".gitignore") files.set(entry.name, (await Deno.stat(`${herd.dir}/logs/${entry.name}`)).size);
  }
  assert.deepEqual([...files.keys()].sort(), ["Solo.log", "Solo.log.1", "Solo.log.2"]);
  for (const [name, size] of files) assert.ok(size <= 65536, `${name}: ${size} bytes`);
  const oldest = await Deno.readTextFile(`${herd.dir}/logs/Solo.log.2`);
  const all = oldest + await Deno.readTextFile(`${herd.dir}/logs/Solo.log.1`) + await herd.log("Solo");
  assert.match(all, /"Solo" stopped/);
  // The 7 KB line: cut, with its length; and its "? " reply too.
  assert.match(all, /"IAMAT k{200} \+1\+1 1700000000 x{70,}\.\.\. \(\d{4} bytes in all\)"/);
  assert.ok(!all.includes("x".repeat(1000)), "no line is logged whole past the bound");
});

Deno.test({
  name: "WHATSAT radii a fraction of a metre apart share one upstream call, and upstream calls are bounded",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using fake = startFakePlaces({ key: "limits-test-key" });
  await using herd = await TestHerd.create({
    placesUrl: fake.url,
    key: "limits-test-key",
    names: ["Solo"],
    links: [],
    places: { provider: "google-new", timeoutMs: 5000, maxConcurrent: 4, maxQueued: 100 },
  });
  await herd.start("Solo");
  const port = herd.port("Solo");
  assert.match(await exchange(port, "IAMAT kiwi +34.068930-118.445127 1700000000\n"), /^AT Solo /);
  // Ten radii within half a metre of 10 km: one search.
  const near = Array.from({ length: 10 }, (_, i) => `WHATSAT kiwi 10.000000${i} 1`);
  const replies = await exchange(port, near.join("\n") + "\n");
  assert.equal(replies.split("\n\n").filter((reply) => reply.startsWith("AT Solo")).length, 10);
  assert.equal(fake.requests.length, 1);
  assert.equal(fake.requests[0].radius, "10000");
  // Forty different radii while the fake holds every request: never more than four at the fake at once.
  fake.mode = "hang";
  const many = exchange(port, Array.from({ length: 40 }, (_, i) => `WHATSAT kiwi ${i + 11} 1`).join("\n") + "\n");
  await waitFor(() => fake.inFlight === 4, { what: "four searches to reach the fake" });
  fake.mode = "ok";
  while (fake.requests.length < 41) {
    fake.release();
    await waitFor(() => fake.inFlight > 0 || fake.requests.length >= 41, { what: "the next searches" });
  }
  fake.release();
  const answered = await many;
  assert.equal(answered.split("\n\n").filter((reply) => reply.startsWith("AT Solo")).length, 40);
  assert.equal(fake.maxInFlight, 4, "places.maxConcurrent upstream calls at most");
  assert.equal(fake.requests.length, 41);
  // A failed answer is kept for errorTtlMs: a client retrying does not call again.
  fake.mode = "http-429";
  const first = await exchange(port, "WHATSAT kiwi 9 1\n");
  assert.match(first, /"status" : "OVER_QUERY_LIMIT"/);
  for (let i = 0; i < 5; i++) assert.equal(await exchange(port, "WHATSAT kiwi 9 1\n"), first);
  assert.equal(fake.requests.length, 42, "one upstream call for six searches");
});

/** Why the file-descriptor test cannot run here (no `prlimit`, from util-linux), or undefined when it can. */
async function whyNoPrlimit(): Promise<string | undefined> {
  try {
    const out = await new Deno.Command("prlimit", { args: ["--version"], stdout: "null", stderr: "null" }).output();
    return out.success ? undefined : "prlimit --version failed";
  } catch (error) {
    return `prlimit (util-linux) cannot be run: ${(error as Error).message}`;
  }
}
const NO_PRLIMIT = await whyNoPrlimit();
if (NO_PRLIMIT !== undefined) console.log(`limits_test.ts: the file-descriptor test is skipped: ${NO_PRLIMIT}`);

Deno.test({
  name:
    "out of file descriptors, the server lives on: clients and the admin endpoint are served again once some close" +
    (NO_PRLIMIT === undefined ? "" : ` (skipped: ${NO_PRLIMIT})`),
  ignore: NO_PRLIMIT !== undefined,
  permissions: { ...HERD_TEST_PERMISSIONS, run: ["deno", "prlimit"] },
}, async () => {
  await using herd = await soloHerd({ admin: true });
  // 64 open files: the runtime, the database, the log and the listeners take about 40.
  await herd.start("Solo", { fileLimit: 64 });
  const held: Deno.Conn[] = [];
  try {
    // Idle clients until the server can take no more: it says so.
    await waitFor(async () => {
      for (let i = 0; i < 10; i++) held.push(await Deno.connect({ hostname: "127.0.0.1", port: herd.port("Solo") }));
      return /Accepting clients failed: Too many open files/.test(herd.stderr("Solo"));
    }, { what: "Solo to run out of file descriptors", stepMs: 50 });
    // Connections to the admin endpoint now, until one's accept fails too (another file may have come free for a
    // moment). That ended the process (an unhandled rejection in Deno.serve); now the endpoint accepts again once it
    // can.
    await waitFor(async () => {
      // Refused (or left in the kernel's queue) while the endpoint cannot accept.
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: herd.adminPort("Solo") }).catch(() => undefined);
      if (conn !== undefined) held.push(conn);
      return /The admin endpoint cannot accept connections: Too many open files/.test(herd.stderr("Solo")) ||
        herd.exitCode("Solo") !== undefined;
    }, { what: () => `Solo to say its admin endpoint cannot accept; it said: ${herd.stderr("Solo")}`, stepMs: 50 });
    assert.equal(herd.exitCode("Solo"), undefined, "the server still runs");
  } finally {
    for (const conn of held) conn.close();
  }
  await waitFor(() => /The admin endpoint accepts again/.test(herd.stderr("Solo")), {
    what: "the admin endpoint back",
  });
  assert.deepEqual(await herd.admin("Solo", "/healthz"), { status: 200, body: "ok\n" });
  assert.match(await exchange(herd.port("Solo"), "IAMAT after-exhaustion +1+1 1\n"), /^AT Solo /);
  assert.equal(herd.exitCode("Solo"), undefined);
});
