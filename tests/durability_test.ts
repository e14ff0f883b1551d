/** The store survives its server: kill -9, restarts, whole-herd restarts, and corrupt files. */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { exchange, HERD_TEST_PERMISSIONS, suiteMode, TestHerd } from "./testing/herd.ts";
import { waitFor } from "./testing/wait.ts";

/** TLS peer links, or plain text when run from plaintext_test.ts. */
const MODE = suiteMode(import.meta.url);

const NOWHERE = "http://127.0.0.1:9/unused";

/** A and B linked, and the digest probe linked to both; in this suite's mode. */
function pairWithProbe(extra?: Record<string, unknown>): Promise<TestHerd> {
  return TestHerd.create({
    tls: MODE.tls,
    placesUrl: NOWHERE,
    names: ["A", "B", "Probe"],
    links: [["A", "B"], ["A", "Probe"], ["B", "Probe"]],
    extra,
  });
}

/**
 * Writes A's database with `lines` (from a herd whose config differs), starts A and B, and waits for A's warning
 * (`warning`) and for the two to agree: B refuses what A's config now refuses, so A's store must not hold it either.
 */
async function startWithOldRowsAtA(herd: TestHerd, lines: string[], warning: RegExp): Promise<void> {
  await Deno.mkdir(`${herd.dir}/data`, { recursive: true });
  const db = new DatabaseSync(`${herd.dir}/data/A.db`);
  db.exec("CREATE TABLE records (line TEXT NOT NULL)");
  const insert = db.prepare("INSERT INTO records VALUES (?)");
  for (const line of lines) insert.run(line);
  db.close();
  await herd.start("A");
  await herd.start("B");
  await waitFor(async () => warning.test(await herd.log("A")), { what: `A's warning ${warning}` });
  await waitFor(async () => await herd.digestOf("A") === await herd.digestOf("B"), {
    timeoutMs: 10_000,
    stepMs: 50,
    what: "A and B to agree",
  });
}

/** Polls until `name`'s digest is `expected`; bounded. */
async function waitForDigest(herd: TestHerd, name: string, expected: string, timeoutMs = 30_000): Promise<void> {
  await waitFor(async () => await herd.digestOf(name) === expected, {
    timeoutMs,
    stepMs: 50,
    what: `${name} to reach the expected records`,
  });
}

Deno.test({
  name: "an acknowledged IAMAT survives kill -9 of the server that acknowledged it" + MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await TestHerd.create({ tls: MODE.tls, placesUrl: NOWHERE, names: ["Solo"], links: [] });
  await herd.start("Solo");
  // Every other client ID holds a NUL (PROTOCOL.md: anything but whitespace), which the database must give back whole.
  const ids = Array.from({ length: 20 }, (_, i) => i % 2 === 0 ? `durable-${i}` : `durable\u0000${i}`);
  const replies: string[] = [];
  for (const [i, id] of ids.entries()) {
    replies.push(await exchange(herd.port("Solo"), `IAMAT ${id} +1+1 ${1_700_000_000 + i}\n`));
  }
  // No pause: the reply itself is the promise that the record is on disk.
  await herd.stop("Solo", "SIGKILL");
  await herd.start("Solo");
  for (const [i, id] of ids.entries()) {
    const answer = await exchange(herd.port("Solo"), `WHATSAT ${id} 1 0\n`);
    assert.equal(answer.split("\n")[0] + "\n", replies[i], JSON.stringify(id));
  }
});

Deno.test({
  name: "a whole herd killed and restarted ends with every acknowledged record on every server" + MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  const names = ["A", "B", "C", "Probe"];
  await using herd = await TestHerd.create({
    tls: MODE.tls,
    placesUrl: NOWHERE,
    names,
    links: [["A", "B"], ["B", "C"], ["A", "Probe"], ["B", "Probe"], ["C", "Probe"]],
  });
  const servers = ["A", "B", "C"];
  for (const name of servers) await herd.start(name);
  await herd.waitConverged(servers);
  const latest = new Map<string, string>();
  for (let i = 0; i < 300; i++) {
    const server = servers[i % 3];
    const reply = await exchange(herd.port(server), `IAMAT walker-${i % 50} +2+2 ${1_700_000_000 + i}\n`);
    latest.set(`walker-${i % 50}`, reply.trimEnd());
  }
  for (const name of servers) await herd.stop(name, "SIGKILL");
  for (const name of servers) await herd.start(name);
  // Each acknowledged record was on the disk of the server that acknowledged it; the others may have had it
  // only in memory (written behind), so they get it back by reconciling. Wait for that, bounded.
  await waitFor(async () => new Set(await Promise.all(servers.map((name) => herd.digestOf(name)))).size === 1, {
    timeoutMs: 30_000,
    stepMs: 50,
    what: "the restarted herd to converge",
  });
  for (const name of servers) {
    for (const [client, line] of latest) {
      const answer = await exchange(herd.port(name), `WHATSAT ${client} 1 0\n`);
      assert.equal(answer.split("\n")[0], line, `${client} at ${name}`);
    }
  }
});

Deno.test({
  name: "a server restarted after missing updates catches up with its neighbour" + MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await pairWithProbe();
  await herd.start("A");
  await herd.start("B");
  await herd.waitConverged(["A", "B"]);
  await herd.stop("B", "SIGKILL");
  const lines: string[] = [];
  for (let i = 0; i < 5000; i++) lines.push(`IAMAT missed-${i} +3.${i % 100}-4.5 ${1_700_000_000 + i}`);
  const replies = (await exchange(herd.port("A"), lines.join("\n") + "\n")).split("\n");
  assert.equal(replies.filter((reply) => reply.startsWith("AT A ")).length, 5000);
  await herd.start("B");
  await waitForDigest(herd, "B", await herd.digestOf("A"));
  const sample = await exchange(herd.port("B"), "WHATSAT missed-4321 1 0\n");
  assert.equal(sample.split("\n")[0], replies[4321]);
  // B stores the records before it logs the reconciliation, and the log is written behind: await the line.
  await waitFor(async () => /Reconciled with "A": received \d+ records, stored \d+/.test(await herd.log("B")), {
    timeoutMs: 5_000,
    what: "B's log to report the reconciliation with A",
  });
});

Deno.test({
  name: "a server with a corrupt database refuses to start, names the file, and leaves it as it was" + MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await TestHerd.create({ tls: MODE.tls, placesUrl: NOWHERE, names: ["Solo"], links: [] });
  const path = `${herd.dir}/data/Solo.db`;
  await Deno.mkdir(`${herd.dir}/data`, { recursive: true });
  const garbage = new Uint8Array(8192).map((_, i) => (i * 7919) & 0xff);
  await Deno.writeFile(path, garbage);
  await assert.rejects(herd.start("Solo"), /exited with code 1 before listening/);
  assert.deepEqual(await Deno.readFile(path), garbage);
  assert.match(await herd.log("Solo"), /Cannot use the database .*Solo\.db/);
});

Deno.test({
  name: "records over a limit the config lowered are deleted at load, and the herd still agrees" + MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await pairWithProbe({ limits: { maxClientIdBytes: 16 } });
  // A's database from before limits.maxClientIdBytes went down to 16: one client's ID is 24 bytes.
  const kept = "AT A +0.100000000 c1 +1+1 1700000050";
  await startWithOldRowsAtA(
    herd,
    [
      kept,
      "AT A +0.100000000 an-id-of-24-bytes-long.. +2+2 1700000100",
      "AT A +0.100000000 an-id-of-24-bytes-long.. +2+2 1700000101",
    ],
    /deleted 2 rows of .*A\.db.* whose client ID or line is longer than the config allows \(limits\.maxClientIdBytes 16,/,
  );
  for (const name of ["A", "B"]) {
    assert.equal((await exchange(herd.port(name), "WHATSAT c1 1 0\n")).split("\n")[0], kept, `c1 at ${name}`);
  }
});

Deno.test({
  name: "records of a server removed from the config are deleted at load, and the herd still agrees" + MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await pairWithProbe();
  // A's database from a herd that had a server "Gone": c1's newest record is Gone's, its older one A's own.
  const ownOlder = "AT A +0.100000000 c1 +1+1 1700000050";
  await startWithOldRowsAtA(
    herd,
    [
      ownOlder,
      "AT Gone +0.100000000 c1 +2+2 1700000100",
      "AT Gone +0.100000000 c3 +3+3 1700000100",
      "AT B +0.100000000 c2 +1+1 1700000010",
    ],
    /deleted 2 rows of .*A\.db.* no longer in the config \("?Gone: 2"?\)/,
  );
  for (const name of ["A", "B"]) {
    assert.equal((await exchange(herd.port(name), "WHATSAT c1 1 0\n")).split("\n")[0], ownOlder, `c1 at ${name}`);
    assert.equal(await exchange(herd.port(name), "WHATSAT c3 1 0\n"), "? WHATSAT c3 1 0\n", `c3 at ${name}`);
  }
});

Deno.test({
  name: "records of a server listed in retiredServers are kept at load and passed on to neighbours that never had " +
    "them" + MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  // The herd of the test above, with "Gone" taken out the way that keeps its records.
  await using herd = await pairWithProbe({ retiredServers: ["Gone"] });
  const gones = ["AT Gone +0.100000000 c1 +2+2 1700000100", "AT Gone +0.100000000 c3 +3+3 1700000100"];
  await Deno.mkdir(`${herd.dir}/data`, { recursive: true });
  const db = new DatabaseSync(`${herd.dir}/data/A.db`);
  db.exec("CREATE TABLE records (line TEXT NOT NULL)");
  const insert = db.prepare("INSERT INTO records VALUES (?)");
  for (const line of ["AT A +0.100000000 c1 +1+1 1700000050", ...gones]) insert.run(line);
  db.close();
  await herd.start("A");
  await herd.start("B");
  // B starts empty: it gets Gone's records from A over their link (a reconciliation), and keeps them.
  for (const name of ["A", "B"]) {
    for (const line of gones) {
      const client = line.split(" ")[3];
      await waitFor(
        async () => (await exchange(herd.port(name), `WHATSAT ${client} 1 0\n`)).split("\n")[0] === line,
        { timeoutMs: 10_000, stepMs: 50, what: `${name} to hold ${line}` },
      );
    }
  }
  assert.equal(await herd.digestOf("A"), await herd.digestOf("B"));
  // And a newer report of c3, taken at B, replaces Gone's record at A.
  const newer = await exchange(herd.port("B"), "IAMAT c3 +4+4 1700000200\n");
  assert.match(newer, /^AT B \S+ c3 \+4\+4 1700000200\n$/);
  assert.equal((await exchange(herd.port("A"), "WHATSAT c3 1 0\n")).split("\n")[0], newer.trimEnd());
  assert.doesNotMatch(await herd.log("A"), /deleted \d+ rows/);
});

Deno.test({
  name: "POST /backup copies a serving server's database: every record acknowledged before it, one private file, " +
    "from which a server starts with them" + MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await TestHerd.create({ tls: MODE.tls, placesUrl: NOWHERE, names: ["A"], links: [], admin: true });
  await herd.start("A");
  const post = async () => {
    const response = await fetch(`http://127.0.0.1:${herd.adminPort("A")}/backup`, { method: "POST" });
    return { status: response.status, body: await response.json() };
  };
  const acknowledged: string[] = [];
  for (let i = 0; i < 200; i++) acknowledged.push(await exchange(herd.port("A"), `IAMAT b${i} +1+1 1700000000.${i}\n`));
  // IAMATs go on while the backup is taken, and a second backup asked meanwhile is refused, not taken twice.
  let stop = false;
  const load = (async () => {
    for (let i = 0; !stop; i++) await exchange(herd.port("A"), `IAMAT later${i % 50} +2+2 1700000001.${i}\n`);
  })();
  const [first, second] = await Promise.all([post(), post()]);
  stop = true;
  await load;
  const [taken, refused] = first.status === 200 ? [first, second] : [second, first];
  assert.equal(taken.status, 200, JSON.stringify(taken.body));
  assert.deepEqual(refused, { status: 409, body: { error: "a backup is being taken already" } });
  const { path, rows, bytes } = taken.body;
  assert.match(path, new RegExp(`^${herd.dir}/data/backups/A-\\d{8}T\\d{9}Z\\.db$`));
  assert.ok(rows >= 200, `${rows} rows`);
  assert.equal((await Deno.stat(path)).size, bytes);
  assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
  assert.equal((await Deno.stat(`${herd.dir}/data/backups`)).mode! & 0o777, 0o700);
  // One file: nothing beside it to copy with it.
  assert.deepEqual(
    [...Deno.readDirSync(`${herd.dir}/data/backups`)].map((entry) => entry.name).sort(),
    [".gitignore", path.slice(path.lastIndexOf("/") + 1)],
  );
  const logged = new RegExp(`"A" backed up ".*/A\\.db" to "${path}": ${rows} rows, ${bytes} bytes, in \\d+ ms`);
  await waitFor(async () => logged.test(await herd.log("A")), { what: "A's log line of the backup" });
  const metrics = await herd.metrics("A");
  assert.equal(metrics.get('herd_backups_total{outcome="ok"}'), 1);
  assert.equal(metrics.get('herd_backups_total{outcome="refused"}'), 1);
  assert.equal(metrics.get('herd_backups_total{outcome="failed"}'), 0);
  const finished = metrics.get("herd_backup_last_success_timestamp_seconds")!;
  assert.ok(Math.abs(finished - (await Deno.stat(path)).mtime!.getTime() / 1000) < 5, `finished at ${finished}`);

  // Restored: a server of another herd started on the copy holds every record acknowledged before the backup.
  await using restored = await TestHerd.create({ tls: MODE.tls, placesUrl: NOWHERE, names: ["A"], links: [] });
  await Deno.mkdir(`${restored.dir}/data`, { recursive: true });
  await Deno.copyFile(path, `${restored.dir}/data/A.db`);
  await restored.start("A");
  for (const [i, reply] of acknowledged.entries()) {
    assert.equal((await exchange(restored.port("A"), `WHATSAT b${i} 1 0\n`)).split("\n")[0], reply.trimEnd());
  }
});
