import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { makePrivateDirectory, pathExists } from "../lib/private_files.ts";
import {
  CorruptDatabaseError,
  DatabaseInUseError,
  DatabaseNotWritableError,
  RecordLog,
} from "../lib/store/record_log.ts";
import type { LocationRecord } from "../lib/protocol.ts";
import { LocationStore } from "../lib/store/store.ts";
import { inspectProcess } from "./testing/process_stats.ts";
import { delay, waitFor } from "./testing/wait.ts";

const PERMISSIONS: Deno.PermissionOptionsObject = { read: ["/tmp"], write: ["/tmp"] };

function record(client: string, time: string, server = "Hill"): LocationRecord {
  return {
    line: `AT ${server} +0.000000001 ${client} +1+1 ${time}`,
    clientId: client,
    clientTime: time,
    location: "+1+1",
  };
}

/** A database at `path` whose table holds `lines`, written by hand, one row each, in order, in one transaction. */
function writeRows(path: string, lines: string[]): void {
  const db = new DatabaseSync(path);
  db.exec("CREATE TABLE records (line TEXT NOT NULL); BEGIN");
  const insert = db.prepare("INSERT INTO records VALUES (?)");
  for (const line of lines) insert.run(line);
  db.exec("COMMIT");
  db.close();
}

async function withDir(fn: (dir: string) => Promise<void> | void): Promise<void> {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "herd-log-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name: "RecordLog keeps what was appended across a reopen, the greatest record per client",
  permissions: PERMISSIONS,
}, () =>
  withDir(async (dir) => {
    const path = `${dir}/sub/A.db`;
    const first = RecordLog.open(path);
    assert.deepEqual(first.records, []);
    await Promise.all([first.log.append(record("a", "1")), first.log.append(record("b", "5"))]);
    await first.log.append(record("a", "2"));
    first.log.close();
    const second = RecordLog.open(path);
    const byClient = new Map(second.records.map((r) => [r.clientId, r.line]));
    assert.deepEqual(byClient, new Map([["a", record("a", "2").line], ["b", record("b", "5").line]]));
    second.log.close();
  }));

Deno.test({
  name: "RecordLog keeps client IDs with a NUL in them whole, across a reopen and a compaction",
  permissions: PERMISSIONS,
}, () =>
  withDir(async (dir) => {
    // Two clients alike up to their NUL, and one with a NUL last: node:sqlite reads text cut at its first NUL.
    const ids = ["nul\u0000one", "nul\u0000two", "trailing\u0000"];
    const path = `${dir}/A.db`;
    const { log } = RecordLog.open(path);
    for (let time = 1; time <= 600; time++) {
      for (const id of ids) assert.equal(await log.append(record(id, String(time))), true);
    }
    await waitFor(() => log.compactIfWorthIt(ids.length), { what: "the worker to take a compaction" });
    assert.equal((await log.compacted())?.deleted, 1797);
    log.close();
    const reopened = RecordLog.open(path);
    assert.deepEqual(
      new Map(reopened.records.map((r) => [r.clientId, r.line])),
      new Map(ids.map((id) => [id, record(id, "600").line])),
    );
    reopened.log.close();
  }));

Deno.test({
  name: "RecordLog.append() resolves only once the record is committed",
  permissions: PERMISSIONS,
}, () =>
  withDir(async (dir) => {
    const path = `${dir}/A.db`;
    const { log } = RecordLog.open(path);
    await log.append(record("x", "7"));
    // Read with a separate connection, as a restarted process would.
    const other = new DatabaseSync(path);
    const rows = other.prepare("SELECT line FROM records").all() as { line: string }[];
    other.close();
    assert.deepEqual(rows.map((row) => row.line), [record("x", "7").line]);
    log.close();
  }));

/** The lines the table holds, read over a connection of the test's own. */
function tableLines(path: string): string[] {
  const db = new DatabaseSync(path);
  try {
    return (db.prepare("SELECT line FROM records ORDER BY rowid").all() as { line: string }[]).map((row) => row.line);
  } finally {
    db.close();
  }
}

Deno.test({
  name: "RecordLog compacts superseded lines away on its worker and keeps the greatest",
  permissions: PERMISSIONS,
}, () =>
  withDir(async (dir) => {
    const path = `${dir}/A.db`;
    const { log } = RecordLog.open(path);
    for (let time = 1; time <= 1200; time++) assert.equal(await log.append(record("busy", String(time))), true);
    assert.equal(log.rows, 1200);
    const latest = record("busy", "1200");
    await waitFor(() => log.compactIfWorthIt(1), { what: "the worker to take a compaction" });
    const report = await log.compacted();
    assert.equal(report?.deleted, 1199);
    assert.equal(log.rows, 1);
    assert.deepEqual(tableLines(path), [latest.line]);
    log.close();
    const reopened = RecordLog.open(path);
    assert.deepEqual(reopened.records.map((r) => r.line), [latest.line]);
    reopened.log.close();
  }));

Deno.test({
  name: "RecordLog compaction deletes a run of superseded rows as one range, and not the kept rows on either side",
  permissions: PERMISSIONS,
}, () =>
  withDir(async (dir) => {
    const path = `${dir}/A.db`;
    const { log } = RecordLog.open(path);
    // One commit each, so rowids 1 (kept), 2-10 (superseded: a run of nine), 11 and 12 (kept).
    assert.equal(await log.append(record("before", "1")), true);
    for (let time = 1; time <= 10; time++) assert.equal(await log.append(record("run", String(time))), true);
    assert.equal(await log.append(record("after", "1")), true);
    await waitFor(() => log.compact(), { what: "the worker to take a compaction" });
    assert.equal((await log.compacted())?.deleted, 9);
    assert.deepEqual(tableLines(path), [
      record("before", "1").line,
      record("run", "10").line,
      record("after", "1").line,
    ]);
    log.close();
  }));

Deno.test({
  name: "RecordLog compaction deletes expired lines, and commits made while it runs are kept",
  permissions: PERMISSIONS,
}, () =>
  withDir(async (dir) => {
    const path = `${dir}/A.db`;
    const { log } = RecordLog.open(path, { expiryCutoff: () => "1000" });
    for (let client = 0; client < 3000; client++) await log.append(record(`old-${client}`, String(client % 1000)));
    for (let time = 1000; time < 1500; time++) await log.append(record("new", String(time)));
    // A client whose every line has expired, the superseded ones included.
    for (let time = 995; time < 1000; time++) await log.append(record("gone", String(time)));
    await waitFor(() => log.compact(), { what: "the worker to take a compaction" });
    const during: Promise<boolean>[] = [];
    for (let client = 0; client < 200; client++) during.push(log.append(record(`during-${client}`, "2000")));
    assert.deepEqual(new Set(await Promise.all(during)), new Set([true]));
    const report = await log.compacted();
    assert.equal(report?.deleted, 3000 + 499 + 5, "every expired line and every superseded one");
    const lines = tableLines(path);
    assert.ok(lines.includes(record("new", "1499").line));
    for (let client = 0; client < 200; client++) assert.ok(lines.includes(record(`during-${client}`, "2000").line));
    assert.equal(lines.length, 201);
    log.close();
  }));

Deno.test({
  name: "RecordLog never reports a failed commit as done, retries it, and is healthy again once writing works",
  permissions: PERMISSIONS,
}, () =>
  withDir(async (dir) => {
    const path = `${dir}/A.db`;
    const { log } = RecordLog.open(path);
    assert.equal(await log.append(record("before", "1")), true);
    // Another connection makes every insert fail, as a full disk would.
    const saboteur = new DatabaseSync(path);
    saboteur.exec(
      "CREATE TRIGGER no_room BEFORE INSERT ON records BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END",
    );
    try {
      assert.equal(await log.append(record("lost", "2")), false, "the failed commit is not acknowledged");
      assert.equal(log.healthy, false);
      assert.equal(await log.append(record("lost-too", "3")), false);
      assert.ok(log.failures >= 2);
      saboteur.exec("DROP TRIGGER no_room");
      // The retry with backoff commits what was pending, without anyone appending.
      await waitFor(() => log.healthy, { what: "a retried commit to succeed" });
      assert.deepEqual(tableLines(path), [
        record("before", "1").line,
        record("lost", "2").line,
        record("lost-too", "3").line,
      ]);
      assert.equal(await log.append(record("after", "4")), true);
    } finally {
      saboteur.close();
      log.close();
    }
  }));

/** The permission bits of `path`. */
function mode(path: string): number {
  return Deno.statSync(path).mode! & 0o777;
}

Deno.test({
  name: "RecordLog makes its directory 0700 and the database and its -wal and -shm files 0600",
  permissions: PERMISSIONS,
}, () =>
  withDir(async (dir) => {
    const path = `${dir}/data/A.db`;
    const { log } = RecordLog.open(path);
    try {
      assert.equal(await log.append(record("a", "1")), true);
      assert.equal(mode(`${dir}/data`), 0o700);
      assert.ok(Deno.readTextFileSync(`${dir}/data/.gitignore`).split("\n").includes("*"), "kept out of git");
      assert.equal(mode(`${dir}/data/.gitignore`), 0o600);
      for (const file of [path, `${path}-wal`, `${path}-shm`]) assert.equal(mode(file), 0o600, file);
    } finally {
      log.close();
    }
  }));

Deno.test({
  name: "RecordLog leaves the mode of a directory that exists; one other users can enter is reported",
  permissions: PERMISSIONS,
}, () =>
  withDir(async (dir) => {
    const shared = `${dir}/shared`;
    Deno.mkdirSync(shared);
    Deno.chmodSync(shared, 0o755);
    const { log } = RecordLog.open(`${shared}/A.db`);
    try {
      assert.equal(await log.append(record("a", "1")), true);
      assert.equal(mode(shared), 0o755);
      assert.equal(mode(`${shared}/A.db`), 0o600);
    } finally {
      log.close();
    }
    assert.deepEqual(makePrivateDirectory(shared), { path: shared, mode: "755" });
    Deno.chmodSync(shared, 0o700);
    assert.equal(makePrivateDirectory(shared), undefined);
  }));

Deno.test({
  name: "RecordLog refuses a data directory that is a file, saying so (not that the database is damaged)",
  permissions: PERMISSIONS,
}, () =>
  withDir((dir) => {
    // An operator audit's dataDir: a regular file, which was reported as a damaged database to move aside.
    const file = `${dir}/data`;
    Deno.writeTextFileSync(file, "somebody's notes");
    assert.throws(
      () => RecordLog.open(`${file}/A.db`),
      (error: Error) =>
        error instanceof DatabaseNotWritableError &&
        error.message === `Cannot use the database ${file}/A.db: ${file} is not a directory`,
    );
    assert.equal(Deno.readTextFileSync(file), "somebody's notes");
  }));

Deno.test({
  name: "RecordLog refuses a file that is not a database, naming it, and leaves it untouched",
  permissions: PERMISSIONS,
}, () =>
  withDir(async (dir) => {
    const path = `${dir}/A.db`;
    const garbage = "this is not a database, but it is somebody's data ".repeat(200);
    await Deno.writeTextFile(path, garbage);
    assert.throws(() => RecordLog.open(path), (error: unknown) => {
      assert.ok(error instanceof CorruptDatabaseError);
      assert.match(error.message, new RegExp(`Cannot use the database ${path}: .*will not start`));
      return true;
    });
    assert.equal(await Deno.readTextFile(path), garbage);
  }));

Deno.test({
  name: "RecordLog refuses a database holding a row that is not an AT record",
  permissions: PERMISSIONS,
}, () =>
  withDir((dir) => {
    const path = `${dir}/A.db`;
    const db = new DatabaseSync(path);
    db.exec(
      "CREATE TABLE records (line TEXT NOT NULL); INSERT INTO records VALUES ('AT Hill +0.1 a +1+1 1'), ('garbage')",
    );
    db.close();
    assert.throws(
      () => RecordLog.open(path),
      /holds a row that is not an AT record \(row 2\)\. The server will not start on it, .*move the file .*aside/,
    );
  }));

/**
 * Writes a table of `rows` records (`client<i>` at time i, in rowid order 1, 2, ...), then `odd` (if any) in place
 * of the row with rowid `oddAt`; returns the database's path.
 */
function tableOfRows(dir: string, rows: number, odd?: { at: number; value: unknown; nullable?: boolean }): string {
  const path = `${dir}/A.db`;
  const db = new DatabaseSync(path);
  db.exec(`CREATE TABLE records (line TEXT${odd?.nullable ? "" : " NOT NULL"})`);
  db.exec("BEGIN");
  const insert = db.prepare("INSERT INTO records (rowid, line) VALUES (?, ?)");
  for (let i = 1; i <= rows; i++) {
    insert.run(i, i === odd?.at ? odd.value as string : record(`client${i}`, String(i)).line);
  }
  db.exec("COMMIT");
  db.close();
  return path;
}

Deno.test({
  name: "RecordLog loads a table of many chunks row for row, reading alone the rows a chunk would not give back whole",
  permissions: PERMISSIONS,
}, () =>
  withDir((dir) => {
    // 45,000 rows and two more: five chunks of the load, of rowids -5 and 1 to 9,999, 10,000 to 19,999, and so on,
    // the last with 2^62 + 1. Each of the first four holds a row that a chunk joined by newlines would not give back
    // as the row-by-row read does, each found by a check of its own: a NUL last in the first (node:sqlite reads text
    // cut at a NUL, here the chunk's end), a newline in the second (read alone, the line split on whitespace is one
    // record), a byte-order mark before the bytes of a line in the third (read alone as bytes, the mark is dropped),
    // a U+FFFD in the fourth (which also stands for bytes that are not UTF-8). The fifth is split: its lines with
    // other whitespace than single spaces are split on any.
    const path = tableOfRows(dir, 45_000);
    const db = new DatabaseSync(path);
    const insert = db.prepare("INSERT INTO records (rowid, line) VALUES (?, ?)");
    insert.run(-5n, record("negative", "1").line);
    insert.run(2n ** 62n + 1n, record("huge", "1").line);
    const update = db.prepare("UPDATE records SET line = ? WHERE rowid = ?");
    const odd: [number, string | Uint8Array][] = [
      [9_999, record("nul\u0000id", "3").line],
      [12_002, "AT Hill +0.000000001 newline\n+1+1 4"],
      [22_007, new Uint8Array([0xef, 0xbb, 0xbf, ...new TextEncoder().encode(record("marked", "8").line)])],
      [32_003, record("re\uFFFDplaced", "5").line],
      [42_005, "AT Hill  +0.000000001 doubled +1+1 6"],
      [42_006, "AT Hill +0.000000001\ttabbed +1+1 7"],
    ];
    for (const [rowid, line] of odd) update.run(line, rowid);
    db.close();
    const expected = new Map<string, string>();
    for (let i = 1; i <= 45_000; i++) expected.set(`client${i}`, record(`client${i}`, String(i)).line);
    for (const [rowid] of odd) expected.delete(`client${rowid}`);
    const others = {
      negative: "1",
      huge: "1",
      "nul\u0000id": "3",
      newline: "4",
      "re\uFFFDplaced": "5",
      doubled: "6",
      tabbed: "7",
      marked: "8",
    };
    for (const [id, time] of Object.entries(others)) expected.set(id, record(id, time).line);
    const { log, records } = RecordLog.open(path);
    try {
      assert.equal(records.length, expected.size);
      assert.deepEqual(new Map(records.map((r) => [r.clientId, r.line])), expected);
    } finally {
      log.close();
    }
  }));

Deno.test({
  name: "RecordLog loads a table made by hand without row IDs to read by: WITHOUT ROWID, or a column named rowid",
  permissions: PERMISSIONS,
}, async (t) => {
  for (
    const schema of [
      "CREATE TABLE records (line TEXT PRIMARY KEY) WITHOUT ROWID",
      "CREATE TABLE records (rowid TEXT, line TEXT NOT NULL)",
    ]
  ) {
    await t.step(schema, () =>
      withDir((dir) => {
        const path = `${dir}/A.db`;
        const db = new DatabaseSync(path);
        db.exec(schema);
        // More rows than a chunk of the load.
        const insert = db.prepare("INSERT INTO records (line) VALUES (?)");
        db.exec("BEGIN");
        for (let i = 1; i <= 10_005; i++) insert.run(record(`client${i}`, String(i)).line);
        db.exec("COMMIT");
        db.close();
        const { log, records } = RecordLog.open(path);
        log.close();
        assert.equal(records.length, 10_005);
        assert.equal(new Set(records.map((r) => r.clientId)).size, 10_005);
      }));
  }
});

Deno.test({
  name: "RecordLog names the row that is not an AT record in a table of many chunks, whatever it holds",
  permissions: PERMISSIONS,
}, async (t) => {
  // Bytes that are not UTF-8 and whose U+FFFD is as long (F0 90 80: three bytes, one U+FFFD of three); NULL; a
  // number.
  const notUtf8 = new Uint8Array([
    ...new TextEncoder().encode("AT Hill +0.000000001 x"),
    ...[0xf0, 0x90, 0x80],
    ...new TextEncoder().encode(" +1+1 1"),
  ]);
  const odd: [string, unknown][] = [
    ["bytes that are not UTF-8", notUtf8],
    ["NULL", null],
    ["a number", 42],
  ];
  for (const [what, value] of odd) {
    await t.step(what, () =>
      withDir((dir) => {
        const path = tableOfRows(dir, 25_000, { at: 15_003, value, nullable: value === null });
        assert.throws(() => RecordLog.open(path), /holds a row that is not an AT record \(row 15003\)/);
      }));
  }
});

/**
 * How a test makes a directory read-only here: mode 0500, or, where that does not stop this process (root), a
 * tmpfs mounted there and remounted read-only; a string says why neither can be done.
 */
const READ_ONLY_BY: "mode" | "mount" | string = await (async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "herd-readonly-probe-" });
  try {
    await Deno.chmod(dir, 0o500);
    try {
      await Deno.writeTextFile(`${dir}/probe`, "");
    } catch {
      return "mode";
    }
    await Deno.chmod(dir, 0o700);
    await Deno.remove(`${dir}/probe`);
    const mounted = await new Deno.Command("mount", { args: ["-t", "tmpfs", "-o", "size=1m", "tmpfs", dir] }).output();
    if (!mounted.success) {
      return `mode 0500 does not stop us and mount failed: ${new TextDecoder().decode(mounted.stderr)}`;
    }
    await new Deno.Command("umount", { args: [dir] }).output();
    return "mount";
  } catch (error) {
    return `mode 0500 does not stop us and mount cannot be run: ${(error as Error).message}`;
  } finally {
    await Deno.chmod(dir, 0o700);
    await Deno.remove(dir, { recursive: true });
  }
})();

/** Runs `fn` on a directory made read-only (see {@linkcode READ_ONLY_BY}) once `prepare` has written in it. */
function withReadOnlyDir(prepare: (dir: string) => Promise<void> | void, fn: (dir: string) => void): Promise<void> {
  return withDir(async (base) => {
    const dir = `${base}/data`;
    await Deno.mkdir(dir);
    const mount = (...args: string[]) => new Deno.Command("mount", { args: [...args, "tmpfs", dir] }).output();
    if (READ_ONLY_BY === "mount") assert.ok((await mount("-t", "tmpfs", "-o", "size=1m")).success);
    try {
      await prepare(dir);
      if (READ_ONLY_BY === "mount") assert.ok((await mount("-o", "remount,ro")).success);
      else await Deno.chmod(dir, 0o500);
      fn(dir);
    } finally {
      if (READ_ONLY_BY === "mount") await new Deno.Command("umount", { args: [dir] }).output();
      else await Deno.chmod(dir, 0o700);
    }
  });
}

/** Asserts that opening `path` fails saying the directory is not writable, not that the database is damaged. */
function assertNotWritable(path: string, said: RegExp): void {
  assert.throws(() => RecordLog.open(path), (error: unknown) => {
    assert.ok(error instanceof DatabaseNotWritableError, String(error));
    assert.match(error.message, said);
    assert.doesNotMatch(error.message, /move the file aside|restore it from a backup|corrupt|damaged/);
    return true;
  });
}

Deno.test({
  name: "RecordLog in a read-only directory says the directory is not writable, not that the database is damaged",
  permissions: { read: ["/tmp"], write: ["/tmp"], run: ["mount", "umount"] },
  ignore: READ_ONLY_BY !== "mode" && READ_ONLY_BY !== "mount",
}, async () => {
  if (READ_ONLY_BY !== "mode" && READ_ONLY_BY !== "mount") return;
  // No database yet.
  await withReadOnlyDir(() => {}, (dir) => {
    const path = `${dir}/Goloman.db`;
    assertNotWritable(path, new RegExp(`^Cannot use the database ${path}: the directory ${dir} is not writable \\(`));
    assert.deepEqual([...Deno.readDirSync(dir)], [], "nothing made");
  });
  // A good database, closed (so without its -wal and -shm files, which SQLite must then make).
  let bytes: Uint8Array | undefined;
  await withReadOnlyDir(async (dir) => {
    const { log } = RecordLog.open(`${dir}/Goloman.db`);
    assert.equal(await log.append(record("kept", "1")), true);
    log.close();
    bytes = Deno.readFileSync(`${dir}/Goloman.db`);
  }, (dir) => {
    const path = `${dir}/Goloman.db`;
    assertNotWritable(path, new RegExp(`: the directory ${dir} is not writable .*-wal and -shm files beside it`));
    assert.deepEqual(Deno.readFileSync(path), bytes, "the database is left as it was");
  });
  // The data directory missing, its parent read-only.
  await withReadOnlyDir(() => {}, (dir) => {
    assertNotWritable(`${dir}/data/Goloman.db`, new RegExp(`: the directory ${dir}/data cannot be made \\(`));
  });
  console.log(
    `(the directories were made read-only by ${READ_ONLY_BY === "mode" ? "mode 0500" : "a read-only mount"})`,
  );
});

Deno.test({
  name: "RecordLog's checkpointer thread copies the WAL into the database while the commits do not",
  permissions: PERMISSIONS,
}, () =>
  withDir(async (dir) => {
    const path = `${dir}/Hill.db`;
    const { log } = RecordLog.open(path);
    try {
      // Await the checkpointer thread's first checkpoint, which copies the table's creation from the WAL into the
      // database file: the thread is running, so the commits no longer checkpoint. 300 commits stay below SQLite's
      // own threshold of 1,000 pages anyway, so only the checkpointer can move them into the database file.
      const created = Deno.statSync(path).size;
      await waitFor(() => Deno.statSync(path).size > created, {
        timeoutMs: 5000,
        stepMs: 5,
        what: "the checkpointer thread's first checkpoint",
      });
      const before = Deno.statSync(path).size;
      for (let i = 0; i < 300; i++) await log.append(record(`client-${i}`, `${i}.5`));
      const walPages = Deno.statSync(`${path}-wal`).size / 4096;
      assert.ok(walPages >= 300, `each commit wrote a page to the WAL (${walPages})`);
      await waitFor(() => Deno.statSync(path).size > before, {
        timeoutMs: 5000,
        stepMs: 20,
        what: "the database file to grow",
      });
    } finally {
      log.close();
    }
    const { log: reopened, records } = RecordLog.open(path);
    reopened.close();
    assert.equal(records.length, 300);
  }));

Deno.test({
  name: "RecordLog.close() leaves the database one file: its worker's connection closes before ours, the last",
  permissions: PERMISSIONS,
}, () =>
  withDir(async (dir) => {
    // Closed at once (no worker yet: it is made on a 0 ms timer), a timer's tick later (the worker made, starting), after
    // a commit, and once the worker has checkpointed (its connection surely open: without the close's handshake, only
    // this case leaves the -wal and -shm behind).
    for (const wait of [undefined, "tick", "commit", "checkpoint"] as const) {
      for (let round = 0; round < 5; round++) {
        // A new database each time: the worker's first checkpoint makes it grow.
        const path = `${dir}/${wait ?? "at-once"}-${round}.db`;
        const leftBeside = () => [`${path}-wal`, `${path}-shm`].filter((file) => pathExists(file));
        const { log } = RecordLog.open(path);
        const created = Deno.statSync(path).size;
        if (wait === "tick") await delay(0);
        else if (wait !== undefined) await log.append(record(`${wait}-${round}`, String(round)));
        if (wait === "checkpoint") {
          await waitFor(() => Deno.statSync(path).size > created, { stepMs: 5, what: "the worker's first checkpoint" });
        }
        log.close();
        assert.deepEqual(leftBeside(), [], `closed after ${wait ?? "nothing"}, round ${round}`);
        const reopened = RecordLog.open(path);
        reopened.log.close();
        assert.equal(reopened.records.length, wait === undefined || wait === "tick" ? 0 : 1);
      }
    }
  }));

Deno.test({
  name: "RecordLog.close() during a compaction stops it at its next page or batch, and every client's greatest is kept",
  permissions: PERMISSIONS,
}, () =>
  withDir(async (dir) => {
    const clients = 60_000;
    const greatest = (time: number) => Array.from({ length: clients }, (_, c) => record(`client-${c}`, String(time)));
    const rowCount = (path: string) => {
      const reader = new DatabaseSync(path, { readOnly: true });
      try {
        return (reader.prepare("SELECT count(*) AS n FROM records").get() as { n: number }).n;
      } finally {
        reader.close();
      }
    };
    // In its scan (the close asked as it starts to read), then in its deletes (once the first transaction is done).
    for (const when of ["scan", "deletes"] as const) {
      // Three rows a client.
      const path = `${dir}/${when}.db`;
      writeRows(path, [1, 2, 3].flatMap((time) => greatest(time).map((r) => r.line)));
      const { log } = RecordLog.open(path);
      await waitFor(() => log.compact(), { what: "the worker to take a compaction" });
      if (when === "deletes") {
        await waitFor(() => rowCount(path) < 3 * clients, { stepMs: 2, what: "the compaction's first delete" });
      }
      log.close();
      // Before the count's read-only connection, which leaves a -wal and -shm of its own.
      assert.equal(pathExists(`${path}-wal`), false);
      const rows = rowCount(path);
      if (when === "scan") assert.equal(rows, 3 * clients, "nothing deleted");
      else assert.ok(rows > clients && rows < 3 * clients, `stopped part-way: ${rows} rows left`);
      const reopened = RecordLog.open(path);
      reopened.log.close();
      assert.deepEqual(new Set(reopened.records.map((r) => r.line)), new Set(greatest(3).map((r) => r.line)));
    }
  }));

Deno.test({
  name: "RecordLog.close() during a backup reports it failed, and leaves the database one file and the copy whole",
  permissions: PERMISSIONS,
}, () =>
  withDir(async (dir) => {
    const path = `${dir}/A.db`;
    const clients = 100_000;
    writeRows(path, Array.from({ length: clients }, (_, c) => record(`client-${c}`, "1").line));
    const { log } = RecordLog.open(path);
    // The worker is made on a 0 ms timer; it takes the backup once its connection is open.
    await log.append(record("last", "1"));
    await delay(0);
    const taking = log.backup(`${dir}/copy.db`);
    log.close();
    await assert.rejects(taking, /the database was closed/);
    assert.equal(pathExists(`${path}-wal`), false);
    const reopened = RecordLog.open(path);
    reopened.log.close();
    assert.equal(reopened.records.length, clients + 1);
    // The copy, finished before the worker closed its connection, is whole. (The worker's close waits for the backup
    // in hand; this test cannot tell that wait from none: Deno's backup of every page in one step was found finished
    // either way.)
    assert.equal(tableLines(`${dir}/copy.db`).length, clients + 1);
  }));

Deno.test({
  name: "RecordLog opened and closed 100 times leaves no file descriptor open",
  permissions: { ...PERMISSIONS, run: ["deno"] },
}, () =>
  withDir(async (dir) => {
    const path = `${dir}/Hill.db`;
    const openFds = async () => (await inspectProcess(Deno.pid)).openFiles;
    const cycle = async () => {
      const { log } = RecordLog.open(path);
      await log.append(record("kiwi", `${Math.random()}`.slice(2)));
      await delay(5); // the checkpointer thread is started (a 0 ms timer), so the close has a thread to end
      log.close();
    };
    await cycle(); // the first open loads SQLite and the worker runtime
    const before = await openFds();
    for (let i = 0; i < 100; i++) await cycle();
    // The workers' connections are closed before each close returns.
    const after = await openFds();
    assert.ok(after <= before + 2, `file descriptors: ${before} before, ${after} after`);
  }));

Deno.test({
  name: "RecordLog compaction of many batches succeeds while the server commits all along",
  permissions: PERMISSIONS,
}, () =>
  withDir(async (dir) => {
    const path = `${dir}/A.db`;
    const { log } = RecordLog.open(path, {});
    // 20,000 superseded rows (a commit each: a turn's appends for one client are one row): ten delete transactions,
    // each of which must get the write lock between the server's commits.
    for (let time = 1; time <= 20_001; time++) assert.equal(await log.append(record("busy", String(time))), true);
    await waitFor(() => log.compact(), { what: "the worker to take a compaction" });
    let done = false;
    const report = log.compacted().finally(() => done = true);
    let committed = 0;
    while (!done) {
      assert.equal(await log.append(record(`during-${committed}`, "30000")), true);
      committed++;
    }
    assert.ok(committed > 10, `the server committed all along (${committed} commits)`);
    assert.equal((await report)?.deleted, 20_000, `the compaction finished (${log.lastCompaction ? "ran" : "failed"})`);
    assert.equal(tableLines(path).length, 1 + committed);
    log.close();
  }));

Deno.test({
  name: "RecordLog compaction keeps the write-ahead log small while the server commits all along: it starts over",
  permissions: PERMISSIONS,
}, () =>
  withDir(async (dir) => {
    const path = `${dir}/A.db`;
    // Three rows for each of 120,000 clients: 240,000 to delete, in 120 transactions, while the server commits.
    const clients = 120_000;
    const db = new DatabaseSync(path);
    db.exec("PRAGMA journal_mode = WAL; CREATE TABLE records (line TEXT NOT NULL)");
    const insert = db.prepare("INSERT INTO records (line) VALUES (?)");
    db.exec("BEGIN");
    for (let time = 1; time <= 3; time++) {
      for (let client = 0; client < clients; client++) insert.run(record(`client-${client}`, String(time)).line);
    }
    db.exec("COMMIT");
    db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
    db.close();
    const { log, records } = RecordLog.open(path);
    assert.equal(records.length, clients);
    await waitFor(() => log.compact(), { what: "the worker to take a compaction" });
    let done = false;
    const report = log.compacted().finally(() => done = true);
    let committed = 0;
    let largest = 0;
    while (!done) {
      // A commit every millisecond or two, as a busy server's turns make them.
      assert.equal(await log.append(record(`client-${committed % clients}`, String(4 + committed))), true);
      committed++;
      largest = Math.max(largest, Deno.statSync(`${path}-wal`).size);
      await delay(1);
    }
    // Rows committed before the scan reached them are compacted too.
    const deleted = (await report)?.deleted ?? 0;
    assert.ok(deleted >= 2 * clients, `the compaction finished, ${deleted} rows deleted`);
    assert.ok(committed > 10, `the server committed all along (${committed} commits)`);
    // The file keeps its largest size: every delete transaction's pages written to it without starting over took it
    // to 15.7 MB; starting over every four transactions, it holds their pages (about 8,000 rows') and the commits
    // meanwhile, up to the 4 MiB after which the worker has the server's commits start it over: 4.5 MB.
    assert.ok(largest < 8 * 2 ** 20, `the write-ahead log grew to ${largest} bytes`);
    assert.equal(tableLines(path).length, 3 * clients + committed - deleted);
    log.close();
  }));

Deno.test({
  name: "RecordLog's write-ahead log starts over while the server commits all the time",
  permissions: PERMISSIONS,
}, () =>
  withDir(async (dir) => {
    const path = `${dir}/A.db`;
    const { log } = RecordLog.open(path);
    // A commit of 200 lines every millisecond or two for 3 s: each checkpoint copies the WAL while commits come.
    const started = performance.now();
    let largest = 0;
    let commits = 0;
    while (performance.now() - started < 3000) {
      const appends = [];
      for (let client = 0; client < 200; client++) appends.push(log.append(record(`c-${client}`, String(commits + 1))));
      assert.deepEqual(new Set(await Promise.all(appends)), new Set([true]));
      commits++;
      largest = Math.max(largest, Deno.statSync(`${path}-wal`).size);
      await delay(1);
    }
    // Never started over, the file grew by every commit: 26 MB in the 3 s; started over, 5-7 MB.
    assert.ok(largest < 12 * 2 ** 20, `the write-ahead log grew to ${largest} bytes in ${commits} commits`);
    assert.equal(tableLines(path).length, 200 * commits);
    log.close();
  }));

Deno.test({
  name:
    "RecordLog cuts its write-ahead log back to 16 MiB once it starts over: a burst leaves no file of its size behind",
  permissions: PERMISSIONS,
}, () =>
  withDir(async (dir) => {
    const path = `${dir}/A.db`;
    const { log } = RecordLog.open(path);
    // One commit of 600,000 lines: about 30 MB of frames at once.
    const appends = [];
    for (let client = 0; client < 600_000; client++) appends.push(log.append(record(`client-${client}`, "1")));
    assert.deepEqual(new Set(await Promise.all(appends)), new Set([true]));
    const burst = Deno.statSync(`${path}-wal`).size;
    assert.ok(burst > 24 * 2 ** 20, `the burst wrote ${burst} bytes to the write-ahead log`);
    // Copied by the worker's checkpoints, the log starts over at the next commit, which cuts the file back.
    let time = 1;
    await waitFor(async () => {
      assert.equal(await log.append(record("after", String(time++))), true);
      return Deno.statSync(`${path}-wal`).size <= 16 * 2 ** 20;
    }, { what: () => `the write-ahead log cut back from ${burst} bytes (${Deno.statSync(`${path}-wal`).size} now)` });
    assert.equal(tableLines(path).length, 600_000 + time - 1);
    log.close();
  }));

Deno.test({
  name: "RecordLog.pendingFor() brings a client's written-behind line's commit forward and resolves once it is in",
  permissions: PERMISSIONS,
}, () =>
  withDir(async (dir) => {
    const path = `${dir}/A.db`;
    const { log } = RecordLog.open(path);
    log.writeBehind(record("peer", "5"));
    assert.equal(log.pendingFor("other"), undefined, "nothing of another client waits");
    const committed = log.pendingFor("peer");
    assert.ok(committed !== undefined, "the written-behind line waits for its commit");
    // Brought forward: in by the end of this turn of the event loop (the next setImmediate), where written behind alone
    // it would wait for the write-behind timer (WRITE_BEHIND_MS).
    let settled = false;
    committed.then(() => settled = true);
    await new Promise((resolve) => setImmediate(resolve));
    assert.ok(settled, "the commit came at the end of the turn, not at the write-behind timer");
    assert.equal(await committed, true);
    assert.deepEqual(tableLines(path), [record("peer", "5").line]);
    assert.equal(log.pendingFor("peer"), undefined, "once committed, nothing waits");
    log.close();
  }));

Deno.test({
  name: "RecordLog refuses a write-ahead log whose database was moved away, and leaves it as it is",
  permissions: PERMISSIONS,
}, () =>
  withDir(async (dir) => {
    // What a kill -9 leaves (commits in the -wal, not yet in the database), then only the .db moved aside.
    const path = `${dir}/A.db`;
    const wal = new Uint8Array([1, 2, 3, 4]);
    await Deno.writeFile(`${path}-wal`, wal);
    assert.throws(() => RecordLog.open(path), (error: Error) => {
      assert.ok(error instanceof CorruptDatabaseError);
      assert.match(error.message, /A\.db is missing but its write-ahead log .*A\.db-wal is there/);
      return true;
    });
    assert.deepEqual(await Deno.readFile(`${path}-wal`), wal, "the write-ahead log is left as it was");
    await assert.rejects(Deno.stat(path), Deno.errors.NotFound);
  }));

Deno.test({
  name:
    "RecordLog on a full disk says the disk is full, not that the database is damaged, and starts once there is room",
  permissions: { read: ["/tmp"], write: ["/tmp"], run: ["mount", "umount"] },
  // A disk that fills needs a small file system of the test's own: a tmpfs, mounted as root.
  ignore: READ_ONLY_BY !== "mount",
}, async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "herd-full-" });
  assert.ok(
    (await new Deno.Command("mount", { args: ["-t", "tmpfs", "-o", "size=1m", "tmpfs", dir] }).output()).success,
  );
  try {
    const path = `${dir}/A.db`;
    const first = RecordLog.open(path);
    await first.log.append(record("kept", "5"));
    first.log.close();
    const before = await Deno.readFile(path);
    // Fill what is left.
    const filler = await Deno.open(`${dir}/filler`, { write: true, create: true });
    try {
      while (true) await filler.write(new Uint8Array(16 * 1024));
    } catch (error) {
      assert.match(String(error), /No space left on device/);
    } finally {
      filler.close();
    }
    assert.throws(() => RecordLog.open(path), (error: Error) => {
      assert.ok(error instanceof DatabaseNotWritableError, `${error.name}: ${error.message}`);
      assert.match(error.message, new RegExp(`^Cannot use the database ${path}: the disk holding ${dir} is full`));
      assert.doesNotMatch(error.message, /move the file aside/);
      return true;
    });
    assert.deepEqual(await Deno.readFile(path), before, "the database is left as it was");
    await Deno.remove(`${dir}/filler`);
    const again = RecordLog.open(path);
    assert.deepEqual(again.records.map((r) => r.line), [record("kept", "5").line]);
    again.log.close();
  } finally {
    await new Deno.Command("umount", { args: [dir] }).output();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "RecordLog refuses a database another RecordLog holds open, naming the holder, and opens it once that one closed",
  permissions: PERMISSIONS,
}, () =>
  withDir(async (dir) => {
    const path = `${dir}/A.db`;
    const first = RecordLog.open(path);
    try {
      assert.equal(await first.log.append(record("a", "1")), true);
      assert.throws(() => RecordLog.open(path), (error: Error) => {
        assert.ok(error instanceof DatabaseInUseError, `${error.name}: ${error.message}`);
        assert.equal(
          error.message,
          `Cannot use the database ${path}: this process (pid ${Deno.pid}) is already using it (it holds ${path}.lock). ` +
            "Two servers writing one database would mix their records: stop the other one, or give this server its " +
            "own dataDir in the config.",
        );
        return true;
      });
      assert.equal(await first.log.append(record("a", "2")), true, "the holder writes on");
    } finally {
      first.log.close();
    }
    const second = RecordLog.open(path);
    assert.deepEqual(second.records.map((r) => r.line), [record("a", "2").line]);
    second.log.close();
  }));

/** A copy of `path` and its -wal taken while `log` has commits not yet checkpointed: what a kill -9 leaves. */
function crashCopy(path: string, to: string): void {
  Deno.copyFileSync(path, to);
  Deno.copyFileSync(`${path}-wal`, `${to}-wal`);
}

Deno.test({
  name: "RecordLog refusing a database leaves it and its -wal byte for byte as they were (nothing checkpointed in)",
  permissions: PERMISSIONS,
}, () =>
  withDir(async (dir) => {
    // Commits in the -wal, one of them a row that is not an AT record, as a kill -9 leaves them.
    const db = new DatabaseSync(`${dir}/live.db`);
    db.exec("PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0; CREATE TABLE records (line TEXT NOT NULL)");
    db.exec("INSERT INTO records VALUES ('AT Hill +0.1 a +1+1 1'), ('garbage')");
    const path = `${dir}/A.db`;
    crashCopy(`${dir}/live.db`, path);
    db.close();
    const before = [await Deno.readFile(path), await Deno.readFile(`${path}-wal`)];
    assert.ok(before[1].length > 0, "the commits are in the -wal");
    assert.throws(() => RecordLog.open(path), /holds a row that is not an AT record \(row 2\)/);
    assert.deepEqual([await Deno.readFile(path), await Deno.readFile(`${path}-wal`)], before);
  }));

Deno.test({
  name: "RecordLog refuses an empty database file that a server has used before, and opens a new empty one",
  permissions: PERMISSIONS,
}, () =>
  withDir(async (dir) => {
    const path = `${dir}/A.db`;
    const first = RecordLog.open(path);
    assert.equal(await first.log.append(record("a", "1")), true);
    first.log.close();
    await Deno.truncate(path, 0);
    assert.throws(() => RecordLog.open(path), (error: Error) => {
      assert.ok(error instanceof CorruptDatabaseError, `${error.name}: ${error.message}`);
      assert.match(error.message, new RegExp(`^The database ${path} is empty \\(0 bytes\\), but a server has used it`));
      return true;
    });
    assert.equal((await Deno.stat(path)).size, 0, "left as it was");
    // An empty file that no server has used (made by hand, or by a start killed before SQLite wrote to it) is new.
    await Deno.remove(`${path}.lock`);
    const again = RecordLog.open(path);
    assert.deepEqual(again.records, []);
    assert.equal(await again.log.append(record("b", "1")), true);
    again.log.close();
  }));

Deno.test({
  name: "RecordLog refused because another process took the database this process used before does not call that " +
    "process this one, nor give it our pid",
  permissions: { ...PERMISSIONS, run: ["deno"] },
}, () =>
  withDir(async (dir) => {
    const path = `${dir}/A.db`;
    RecordLog.open(path).log.close();
    assert.equal(Deno.readTextFileSync(`${path}.lock`).trim(), String(Deno.pid), "the lock file says our pid");
    // Another process takes the lock, as a server does at open, and has not written its pid yet (it loads first).
    const child = new Deno.Command("deno", {
      args: [
        "eval",
        `const f = Deno.openSync(${JSON.stringify(`${path}.lock`)}, { read: true, write: true }); f.lockSync(true); ` +
        `console.log("locked"); await new Promise((r) => setTimeout(r, 30_000));`,
      ],
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const reader = child.stdout.getReader();
    try {
      await reader.read();
      assert.throws(() => RecordLog.open(path), (error: Error) => {
        assert.ok(error instanceof DatabaseInUseError, `${error.name}: ${error.message}`);
        assert.match(error.message, /: another process is using it \(it holds /);
        return true;
      });
    } finally {
      child.kill();
      reader.releaseLock();
      await child.stdout.cancel();
      await child.status;
    }
  }));

Deno.test({
  name: "RecordLog leaves out the records of servers it is told are unknown before choosing each client's greatest, " +
    "and deletes them at open",
  permissions: PERMISSIONS,
}, () =>
  withDir((dir) => {
    const path = `${dir}/A.db`;
    const older = record("c1", "50").line;
    writeRows(path, [older, record("c1", "100", "Gone").line, record("c2", "7", "Gone").line]);
    const { log, records, leftOut } = RecordLog.open(path, { isKnownServer: (server) => server !== "Gone" });
    try {
      assert.deepEqual(records.map((r) => r.line), [older]);
      assert.deepEqual([...leftOut], [["Gone", 2]]);
      assert.equal(log.rows, 1);
    } finally {
      log.close();
    }
    const all = RecordLog.open(path);
    assert.deepEqual(all.records.map((r) => r.line), [older], "deleted from the file");
    assert.equal(all.log.rows, 1);
    all.log.close();
  }));

Deno.test({
  name:
    "RecordLog hands each row it loads to onRecord as it reads it, newest first, rows left out, over the limits or " +
    "expired not among them; a store fed so holds what the collected load holds",
  permissions: PERMISSIONS,
}, () =>
  withDir((dir) => {
    const path = `${dir}/A.db`;
    // c1's rows out of order (the greatest first, as two servers' floods can leave them), a left-out server's newer
    // row, a client ID over the limit, and c2 twice, its first row expired.
    const lines = [
      record("c1", "9").line,
      record("c1", "3").line,
      record("c1", "12", "Gone").line,
      record("far-too-long-a-client", "1").line,
      record("c2", "1").line,
      record("c2", "2").line,
    ];
    writeRows(path, lines);
    const options = {
      isKnownServer: (server: string) => server !== "Gone",
      limits: { maxClientIdBytes: 8, maxLineBytes: 100 },
      isExpired: (time: string) => time === "1",
    };
    const given: string[] = [];
    const store = new LocationStore({ servers: ["Hill"] });
    const streamed = RecordLog.open(path, {
      ...options,
      onRecord: (r) => {
        given.push(r.line);
        store.offer(r);
      },
    });
    try {
      assert.deepEqual(given, [lines[5], lines[1], lines[0]]);
      assert.deepEqual(streamed.records, [], "none collected");
      assert.deepEqual([streamed.overLimits, [...streamed.leftOut]], [1, [["Gone", 1]]]);
    } finally {
      streamed.log.close();
    }
    const collected = RecordLog.open(path, options);
    try {
      assert.deepEqual([...store.lines()].sort(), collected.records.map((r) => r.line).sort());
      assert.deepEqual([...store.lines()].sort(), [lines[0], lines[5]]);
    } finally {
      collected.log.close();
    }
  }));

Deno.test({
  name: "RecordLog rows left out at open are gone for good: a config changed back does not bring one back over the " +
    "greater row appended since, nor does a compaction then delete the row held",
  permissions: PERMISSIONS,
}, () =>
  withDir(async (dir) => {
    const path = `${dir}/A.db`;
    // c's greatest row is one a lowered limit refuses (a 41-byte line), then one of a server taken out.
    const first = RecordLog.open(path);
    await first.log.append(record("c", "1"));
    await first.log.append(record("c", "1234567890123"));
    await first.log.append(record("c", "1234567890124", "Gone"));
    first.log.close();
    const lowered = RecordLog.open(path, {
      limits: { maxClientIdBytes: 8, maxLineBytes: 40 },
      isKnownServer: (server) => server !== "Gone",
    });
    assert.deepEqual(lowered.records.map((r) => r.line), [record("c", "1").line]);
    assert.deepEqual([lowered.overLimits, [...lowered.leftOut]], [1, [["Gone", 1]]]);
    // A record greater than the one held, smaller than the left-out ones, is stored.
    assert.equal(await lowered.log.append(record("c", "2")), true);
    lowered.log.close();
    // The config changes back: what is held is the row stored last, and a compaction keeps it.
    const back = RecordLog.open(path);
    assert.deepEqual(back.records.map((r) => r.line), [record("c", "2").line]);
    await waitFor(() => back.log.compact(), { what: "the worker to take a compaction" });
    assert.equal((await back.log.compacted())?.deleted, 1, "c's row before it");
    back.log.close();
    const again = RecordLog.open(path);
    assert.deepEqual(again.records.map((r) => r.line), [record("c", "2").line]);
    assert.equal(again.log.rows, 1);
    again.log.close();
  }));

Deno.test({
  name: "RecordLog leaves out rows over the limits it is given before choosing each client's greatest, and deletes " +
    "them and nothing else",
  permissions: PERMISSIONS,
}, () =>
  withDir(async (dir) => {
    const path = `${dir}/A.db`;
    // "AT Hill +0.000000001 c +1+1 " is 28 bytes: a time of 13 digits makes a 41-byte line.
    const limits = { maxClientIdBytes: 8, maxLineBytes: 40 };
    const first = RecordLog.open(path);
    await first.log.append(record("long-id-é", "1")); // 10 bytes in UTF-8, 9 characters
    await first.log.append(record("c", "2"));
    await first.log.append(record("c", "1234567890123")); // c's newest, one byte too long a line
    await first.log.append(record("d", "5"));
    first.log.close();
    const second = RecordLog.open(path, { limits });
    assert.deepEqual(second.records.map((r) => r.line).sort(), [record("c", "2").line, record("d", "5").line]);
    assert.equal(second.overLimits, 2);
    assert.equal(second.log.rows, 2);
    second.log.close();
    const third = RecordLog.open(path);
    assert.deepEqual(third.records.map((r) => r.line).sort(), [record("c", "2").line, record("d", "5").line]);
    assert.equal(third.log.rows, 2, "c's older row kept, the two over the limits deleted");
    third.log.close();
  }));

Deno.test({
  name: "RecordLog opens a database with a hot rollback journal, rolled back, as SQLite would",
  permissions: PERMISSIONS,
}, () =>
  withDir((dir) => {
    const source = `${dir}/source.db`;
    const db = new DatabaseSync(source);
    db.exec("PRAGMA journal_mode = DELETE; CREATE TABLE records (line TEXT NOT NULL)");
    db.prepare("INSERT INTO records VALUES (?)").run(record("c", "1").line);
    // A transaction that spills pages into the file, copied with its journal while open: a crash mid-commit.
    db.exec("PRAGMA cache_size = 1; BEGIN");
    const insert = db.prepare("INSERT INTO records VALUES (?)");
    for (let i = 0; i < 2000; i++) insert.run(record(`x${i}`, "2").line);
    Deno.copyFileSync(source, `${dir}/A.db`);
    Deno.copyFileSync(`${source}-journal`, `${dir}/A.db-journal`);
    db.exec("ROLLBACK");
    db.close();
    const { log, records } = RecordLog.open(`${dir}/A.db`);
    assert.deepEqual(records.map((r) => r.line), [record("c", "1").line]);
    log.close();
  }));

Deno.test({
  name: "RecordLog refuses an empty database file beside a write-ahead log, with no lock file, leaving the log",
  permissions: PERMISSIONS,
}, () =>
  withDir((dir) => {
    const source = `${dir}/source.db`;
    const db = new DatabaseSync(source);
    db.exec("PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0; CREATE TABLE records (line TEXT NOT NULL)");
    db.prepare("INSERT INTO records VALUES (?)").run(record("c", "1").line);
    Deno.copyFileSync(`${source}-wal`, `${dir}/A.db-wal`);
    db.close();
    Deno.writeFileSync(`${dir}/A.db`, new Uint8Array());
    const wal = Deno.readFileSync(`${dir}/A.db-wal`);
    assert.throws(() => RecordLog.open(`${dir}/A.db`), CorruptDatabaseError);
    assert.deepEqual(Deno.readFileSync(`${dir}/A.db-wal`), wal);
  }));

Deno.test({
  name:
    "RecordLog.close() leaves every committed line in the database file itself, the worker's connection open or not",
  permissions: PERMISSIONS,
}, () =>
  withDir(async (dir) => {
    const path = `${dir}/A.db`;
    const { log } = RecordLog.open(path);
    for (let time = 1; time <= 3; time++) assert.equal(await log.append(record("kept", String(time))), true);
    // The worker has its own connection once it takes a compaction; it checkpoints, then sits idle.
    await waitFor(() => log.compact(), { what: "the worker to take a compaction" });
    await log.compacted();
    // Committed after the worker's checkpoint: in the write-ahead log until a checkpoint moves it.
    assert.equal(await log.append(record("last", "9")), true);
    log.close();
    // A copy of the database file alone (a backup taken after a clean stop) holds everything.
    await Deno.copyFile(path, `${dir}/copy.db`);
    assert.deepEqual(tableLines(`${dir}/copy.db`), [record("kept", "3").line, record("last", "9").line]);
  }));

Deno.test({
  name:
    "RecordLog.backup copies the table as of one moment while a compaction runs, one at a time, and not once closed",
  permissions: PERMISSIONS,
}, async () => {
  await withDir(async (dir) => {
    const path = `${dir}/A.db`;
    const { log } = RecordLog.open(path);
    for (let time = 1; time <= 3000; time++) await log.append(record("busy", String(time)));
    await log.append(record("other", "1"));
    await waitFor(() => log.compact(), { what: "the worker to take a compaction" });
    // Asked during the compaction: taken before or after it, never inside one of its transactions.
    const compaction = log.compacted();
    const copy = `${dir}/copy.db`;
    const taking = log.backup(copy);
    await assert.rejects(log.backup(`${dir}/second.db`), /a backup is being taken already/);
    const report = await taking;
    assert.equal((await compaction)?.deleted, 2999);
    const copied = tableLines(copy);
    assert.equal(report.rows, copied.length);
    assert.ok(copied.length === 3001 || copied.length === 2, `${copied.length} rows: before or after the compaction`);
    assert.deepEqual(copied.slice(-2), [record("busy", "3000").line, record("other", "1").line]);
    assert.deepEqual([...Deno.readDirSync(dir)].map((entry) => entry.name).filter((name) => name.startsWith("c")), [
      "copy.db",
    ]);
    // Later appends are the next backup's.
    await log.append(record("after", "1"));
    await log.backup(`${dir}/copy2.db`);
    assert.deepEqual(tableLines(`${dir}/copy2.db`).at(-1), record("after", "1").line);
    log.close();
    await assert.rejects(log.backup(`${dir}/copy3.db`), /the store's worker is not running/);
  });
});
