import assert from "node:assert/strict";
import { LogFile } from "../lib/log_file.ts";
import { log, setupLogging, shutdownLogging, WholeText } from "../lib/logging.ts";
import { traffic } from "../lib/traffic_log.ts";
import { waitFor } from "./testing/wait.ts";

const PERMISSIONS: Deno.PermissionOptionsObject = { read: ["/tmp"], write: ["/tmp"] };

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "herd-logfile-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function files(dir: string): Promise<Map<string, number>> {
  const found = new Map<string, number>();
  for await (const entry of Deno.readDir(dir)) found.set(entry.name, (await Deno.stat(`${dir}/${entry.name}`)).size);
  return found;
}

Deno.test({
  name: "LogFile rotates at its size bound and keeps only its number of files",
  permissions: PERMISSIONS,
}, () =>
  withDir(async (dir) => {
    const path = `${dir}/A.log`;
    const log = await LogFile.open(path, { maxBytes: 10_000, files: 3 });
    const line = `${"x".repeat(99)}\n`;
    for (let i = 0; i < 450; i++) log.write(line); // 45,000 bytes: four files and a half
    await log.close();
    const found = await files(dir);
    assert.deepEqual([...found.keys()].sort(), ["A.log", "A.log.1", "A.log.2"]);
    for (const [name, size] of found) assert.ok(size <= 10_000, `${name} holds ${size} bytes`);
    assert.equal(found.get("A.log.1"), 10_000, "a rotated file is full to its bound");
    // Appending to what is there: a reopened log goes on in the current file.
    const again = await LogFile.open(path, { maxBytes: 10_000, files: 3 });
    again.write("last\n");
    await again.close();
    assert.ok((await Deno.readTextFile(path)).endsWith("x\nlast\n"));
  }));

Deno.test({
  name: "LogFile splits one write of many lines at line ends to keep to its bound; a longer line is written alone",
  permissions: PERMISSIONS,
}, () =>
  withDir(async (dir) => {
    const path = `${dir}/A.log`;
    const log = await LogFile.open(path, { maxBytes: 10_000, files: 10 });
    const lines = Array.from({ length: 450 }, (_, i) => `${String(i).padStart(5, "0")}${"x".repeat(94)}\n`);
    log.write(lines.join("")); // 45,000 bytes in one write (a traffic flush carries 10 ms of lines)
    const long = `${"y".repeat(12_000)}\n`;
    log.write(long);
    log.write("after\n");
    await log.close();
    const found = await files(dir);
    const names = [...found.keys()].sort((a, b) => (b.split(".")[2] ?? "0").localeCompare(a.split(".")[2] ?? "0"));
    let text = "";
    for (const name of names) text += await Deno.readTextFile(`${dir}/${name}`);
    assert.equal(text, lines.join("") + long + "after\n", "every line, in order, none cut");
    for (const [name, size] of found) {
      if (size !== long.length) assert.ok(size <= 10_000, `${name} holds ${size} bytes`);
    }
    assert.ok([...found.values()].includes(long.length), "the line longer than the bound is a file alone");
  }));

Deno.test({
  name: "LogFile writes a line longer than one write's size in the room left, without rotating early",
  permissions: PERMISSIONS,
}, () =>
  withDir(async (dir) => {
    const path = `${dir}/A.log`;
    const log = await LogFile.open(path, { maxBytes: 10_000_000, files: 3 });
    log.write("small\n");
    await log.flush();
    const long = `${"z".repeat(300 * 1024)}\n`; // over the 256 KiB a write takes at most
    log.write(long);
    await log.close();
    assert.deepEqual([...(await files(dir)).keys()], ["A.log"], "no rotation: the file had room");
    assert.equal(await Deno.readTextFile(path), "small\n" + long);
  }));

Deno.test({
  name: "LogFile keeps to its bound with the note of dropped lines in front of what follows it",
  permissions: PERMISSIONS,
}, () =>
  withDir(async (dir) => {
    const path = `${dir}/A.log`;
    const log = await LogFile.open(path, { maxBytes: 1000, files: 20, maxQueuedBytes: 1000 });
    for (let i = 0; i < 30; i++) log.write(`${String(i).padStart(99, "0")}\n`); // 10 queued, 20 dropped
    await log.flush();
    for (let i = 30; i < 60; i++) log.write(`${String(i).padStart(99, "0")}\n`);
    await log.close();
    const found = await files(dir);
    for (const [name, size] of found) assert.ok(size <= 1000, `${name} holds ${size} bytes`);
    let text = "";
    for (const name of found.keys()) text += await Deno.readTextFile(`${dir}/${name}`);
    assert.match(text, /\d+ log lines were dropped/);
  }));

Deno.test({
  name: "LogFile keeps at most its queue bound in memory, drops the rest, and says how many it dropped",
  permissions: PERMISSIONS,
}, () =>
  withDir(async (dir) => {
    const path = `${dir}/A.log`;
    const log = await LogFile.open(path, { maxBytes: 1 << 30, files: 2, maxQueuedBytes: 10_000 });
    // All written in one turn, before the writer runs: the queue takes 100 of these lines, the rest are dropped.
    for (let i = 0; i < 1000; i++) log.write(`${String(i).padStart(99, "0")}\n`);
    assert.ok(log.queuedBytes <= 10_000);
    const dropped = log.dropped;
    assert.ok(dropped >= 890 && dropped <= 900, `${dropped} dropped`);
    await log.flush();
    log.write("after\n");
    await log.close();
    const text = await Deno.readTextFile(path);
    const lines = text.trimEnd().split("\n");
    assert.equal(lines.length, 1000 - dropped + 1 + 1, "every line kept, one note, and the line after");
    assert.match(
      text,
      new RegExp(`${dropped} log lines were dropped: the log could not keep up, or its disk was full\n`),
    );
    assert.equal(lines.at(-1), "after");
  }));

Deno.test({
  name: "a LogTape line goes to the file behind the traffic lines gathered before it",
  permissions: PERMISSIONS,
}, () =>
  withDir(async (dir) => {
    const path = await setupLogging({ logDir: dir, name: "Order", maxBytes: 1 << 20, files: 2, level: "info" });
    try {
      traffic.event("client", "first, through the traffic log");
      log.server.info("second, through LogTape");
      traffic.event("client", "third, through the traffic log");
    } finally {
      traffic.flush();
      await shutdownLogging();
    }
    const lines = (await Deno.readTextFile(path)).trimEnd().split("\n");
    const order = ["first", "second", "third"].map((word) => lines.findIndex((line) => line.includes(`: ${word},`)));
    assert.ok(order.every((index) => index >= 0), `all three lines: ${lines.join("\n")}`);
    assert.deepEqual([...order].sort((a, b) => a - b), order, `in the order they were logged: ${lines.join("\n")}`);
  }));

/** The permission bits of `path`. */
async function mode(path: string): Promise<number> {
  return (await Deno.stat(path)).mode! & 0o777;
}

Deno.test({
  name: "the log directory is made 0700 and its files 0600, rotated ones too: they hold client IDs and locations",
  permissions: PERMISSIONS,
}, () =>
  withDir(async (dir) => {
    const path = await setupLogging({
      logDir: `${dir}/new/logs`,
      name: "Hill",
      maxBytes: 1000,
      files: 2,
      level: "info",
    });
    try {
      for (let i = 0; i < 30; i++) log.server.info("client {id} is at {location}", { id: `c${i}`, location: "+1+1" });
    } finally {
      await shutdownLogging();
    }
    assert.equal(await mode(`${dir}/new/logs`), 0o700);
    assert.equal(await mode(`${dir}/new`), 0o700, "a parent it made too");
    // Kept out of git wherever the config puts it: everything in it ignored.
    assert.ok((await Deno.readTextFile(`${dir}/new/logs/.gitignore`)).split("\n").includes("*"));
    assert.equal(await mode(`${dir}/new/logs/.gitignore`), 0o600);
    assert.equal(await mode(path), 0o600);
    assert.equal(await mode(`${path}.1`), 0o600, "the log was rotated: the file made then is 0600 too");
  }));

Deno.test({
  name: "a log directory that other users can enter keeps its mode, and the log says so",
  permissions: PERMISSIONS,
}, () =>
  withDir(async (dir) => {
    const logDir = `${dir}/shared`;
    await Deno.mkdir(logDir);
    await Deno.chmod(logDir, 0o755);
    const path = await setupLogging({ logDir, name: "Hill", maxBytes: 1 << 20, files: 2, level: "info" });
    await shutdownLogging();
    assert.equal(await mode(logDir), 0o755, "left as it was");
    await assert.rejects(Deno.stat(`${logDir}/.gitignore`), Deno.errors.NotFound, "nothing added to it");
    assert.match(
      await Deno.readTextFile(path),
      new RegExp(`\\[WRN\\] herd\\.server: The directory "${logDir}" can be entered by other users \\(mode "755"\\)`),
    );
  }));

Deno.test({
  name: "a WholeText value is logged whole, where a long value from outside is cut",
  permissions: PERMISSIONS,
}, () =>
  withDir(async (dir) => {
    const path = await setupLogging({ logDir: dir, name: "Whole", maxBytes: 1 << 20, files: 2, level: "info" });
    const advice = `${"integrity check says x. ".repeat(30)}Move the file aside to start empty.`;
    try {
      log.server.error("cannot start: {error}", { error: new WholeText(advice) });
      log.server.error("a client sent {line}", { line: "y".repeat(1000) });
    } finally {
      await shutdownLogging();
    }
    const text = await Deno.readTextFile(path);
    assert.ok(text.includes(`cannot start: ${JSON.stringify(advice)}`), "the server's own message, whole");
    assert.match(text, /a client sent "y{300}\.\.\. \(1000 bytes in all\)"/);
  }));

Deno.test({
  name: "LogFile of a file another writer holds (holdWhileShared) writes nothing until released; abandoned, nothing " +
    "at all; released, after the other lets go, in the file the path names then, even rotated meanwhile",
  permissions: PERMISSIONS,
}, () =>
  withDir(async (dir) => {
    const path = `${dir}/A.log`;
    // flock is per open file, so two LogFiles of one process stand for two processes.
    const first = await LogFile.open(path, { maxBytes: 1000, files: 2 });
    first.write("first 1\n");
    await first.flush();
    const refused = await LogFile.open(path, { maxBytes: 1000, files: 2, holdWhileShared: true });
    refused.write("refused 1\n");
    refused.abandonIfShared();
    refused.write("refused 2\n");
    await refused.close();
    const restarted = await LogFile.open(path, { maxBytes: 1000, files: 2, holdWhileShared: true });
    restarted.write("restarted 1\n");
    restarted.release(); // waits for the first to let go
    await new Promise((resolve) => setTimeout(resolve, 120)); // two of its tries: nothing may be written meanwhile
    assert.equal(await Deno.readTextFile(path), "first 1\n");
    // The first fills its file past the bound: rotated, A.log.1 holds its lines, the held one opened the old A.log.
    for (let i = 0; i < 20; i++) first.write(`${"x".repeat(59)}\n`);
    first.write("first last\n");
    await first.close();
    await waitFor(async () => (await Deno.readTextFile(path)).includes("restarted 1"), {
      what: "the held line once the first let go",
    });
    restarted.write("restarted 2\n");
    await restarted.close();
    const current = await Deno.readTextFile(path);
    assert.match(current, /first last\nrestarted 1\nrestarted 2\n$/, current);
    assert.doesNotMatch(await Deno.readTextFile(`${path}.1`), /restarted/);
    assert.doesNotMatch(current + await Deno.readTextFile(`${path}.1`), /refused/);
  }));

Deno.test({
  name: "LogFile of a file nobody else holds writes at once, holdWhileShared or not; abandonIfShared leaves it be",
  permissions: PERMISSIONS,
}, () =>
  withDir(async (dir) => {
    const path = `${dir}/A.log`;
    const log = await LogFile.open(path, { maxBytes: 1000, files: 2, holdWhileShared: true });
    log.write("one\n");
    log.abandonIfShared();
    log.write("two\n");
    await log.close();
    assert.equal(await Deno.readTextFile(path), "one\ntwo\n");
  }));
