import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { CorruptDatabaseError, RecordLog } from "../lib/record_log.ts";
import type { LocationRecord } from "../lib/protocol.ts";

const PERMISSIONS: Deno.PermissionOptionsObject = { read: ["/tmp"], write: ["/tmp"] };

function record(client: string, time: string, server = "Hill"): LocationRecord {
  return {
    line: `AT ${server} +0.000000001 ${client} +1+1 ${time}`,
    clientId: client,
    clientTime: time,
    location: "+1+1",
  };
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

Deno.test({
  name: "RecordLog compacts superseded lines away and keeps the greatest",
  permissions: PERMISSIONS,
}, () =>
  withDir(async (dir) => {
    const path = `${dir}/A.db`;
    const { log } = RecordLog.open(path);
    for (let time = 1; time <= 1200; time++) await log.append(record("busy", String(time)));
    assert.equal(log.rows, 1200);
    const latest = record("busy", "1200");
    log.compactIfWorthIt(() => [latest.line], 1);
    assert.equal(log.rows, 1);
    log.close();
    const reopened = RecordLog.open(path);
    assert.deepEqual(reopened.records.map((r) => r.line), [latest.line]);
    reopened.log.close();
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
    assert.throws(() => RecordLog.open(path), /holds a row that is not an AT record \(row 2\)/);
  }));
