/**
 * The store on disk: an append-only table of AT lines in an embedded
 * SQLite database (`node:sqlite`, WAL). Records stored in one turn of the
 * event loop are committed together (group commit, scheduled with
 * `setImmediate`), so pipelined and concurrent IAMATs share one commit;
 * callers that must not reply before the record is on disk await
 * {@linkcode RecordLog.append}, which says whether the commit succeeded. With
 * `synchronous=NORMAL` a commit is in the WAL file when it returns: it
 * survives the process being killed, not the machine losing power.
 *
 * A failed commit (a full disk, an I/O error) is never reported as done:
 * its records stay pending and are retried with backoff, and
 * {@linkcode RecordLog.healthy} says false until a commit succeeds again.
 *
 * A worker thread keeps the table small and the WAL short, off the event
 * loop: it checkpoints the WAL into the database (a checkpoint syncs the
 * disk, which would stall the server) and compacts the table (superseded
 * and expired lines deleted in small transactions).
 *
 * The database holds every client's location: its directory is made 0700
 * and the file 0600 (private_files.ts), and SQLite gives the `-wal` and
 * `-shm` files it makes the database file's mode.
 */

import { Buffer } from "node:buffer";
import { DatabaseSync, type StatementSync } from "node:sqlite";
import { basename, dirname } from "node:path";
import { setImmediate } from "node:timers";
import { metrics } from "../admin/metrics.ts";
import { log } from "../logging.ts";
import {
  makePrivateDirectory,
  type OpenDirectory,
  openDirectoryWarning,
  pathExists,
  PRIVATE_FILE_MODE,
} from "../private_files.ts";
import {
  compareRecords,
  fitsBytes,
  type LocationRecord,
  parseRecordFields,
  parseStoredRecordLine,
  splitFields,
} from "../protocol.ts";

/** Longest a record written behind waits for its commit, in milliseconds. */
export const WRITE_BEHIND_MS = 20;

/** How often the worker copies the WAL into the database, in milliseconds. */
export const CHECKPOINT_INTERVAL_MS = 200;

/** First and longest pause before a failed commit is tried again, in milliseconds. */
const _RETRY_MIN_MS = 50;
const _RETRY_MAX_MS = 5000;

/** The longest a commit waits for a compaction transaction's turn before it takes its chances on the lock. */
const _TURN_WAIT_MS = 100;
/**
 * How long {@linkcode RecordLog.close} waits for the store's worker to close
 * its connection, in milliseconds. The whole close took 1.3-2.3 ms with the
 * worker idle, 6 ms in a compaction's scan of 180,000 rows (it stops at its
 * next page or batch). A backup being taken runs to its end first (closing
 * the connection under it is not known to be safe; a backup took 0.2 s for
 * 51 MB, 0.8 s for 260 MB)
 * and is then reported failed, its outcome said after the close; a server
 * never closes with one under way, as it stops its admin port, which takes
 * the backups, first. Past the wait, the worker is ended without it, as a
 * process's exit would end it.
 */
const _CLOSE_WAIT_MS = 2000;
/** Rows deleted per compaction transaction: few, so a commit waiting on one waits little (docs/PERFORMANCE.md). */
const _COMPACT_BATCH = 2000;

/**
 * The `line` column as the server reads it: as text, but as the bytes of
 * the text when it holds a NUL. A client ID may hold one (PROTOCOL.md:
 * anything but whitespace), SQLite stores it, and `node:sqlite` in Deno cuts
 * a text value read back at its first NUL, which would leave a row that is
 * no AT record (the server would not start on it) or the wrong client's.
 * Bytes come back whole and are decoded; the test costs no measurable time.
 */
const LINE_COLUMN = "CASE WHEN instr(CAST(line AS BLOB), x'00') > 0 THEN CAST(line AS BLOB) ELSE line END";

/**
 * Frames (pages) the WAL may hold after a checkpoint before the worker holds
 * the server's commits for a moment so that it starts over (4 MiB of 4 KiB
 * pages): see the worker's `checkpoint`.
 */
const _RESTART_FRAMES = 1024;

/**
 * The most frames left to copy for which the worker holds the server's
 * commits (512 KiB of 4 KiB pages), and how many more passes it makes,
 * without holding them, to get there: a WAL written faster than it is
 * copied is left to grow until the commits slow down (or the next interval).
 */
const _HELD_FRAMES = 128;
const _CATCH_UP_PASSES = 3;

/**
 * The fewest consecutive rowids a compaction deletes as one range rather than
 * one by one: about 40% less time in the deletes where most rows are
 * superseded, the same where they are scattered (docs/PERFORMANCE.md).
 */
const _RANGE_ROWS = 8;

/** A compaction checkpoints before one of each this many delete transactions (see the worker's `compact`). */
const _CHECKPOINT_BATCHES = 4;

/**
 * The size the WAL file is cut back to when it starts over, in bytes: a
 * burst of commits (or a compaction) that grew it leaves no file of its
 * size behind.
 */
const _WAL_SIZE_LIMIT = 16 * 2 ** 20;

/** A message from the worker. */
type _WorkerMessage =
  | { kind: "ready" }
  | { kind: "error"; error: string }
  | { kind: "compacted"; rows: number; deleted: number; ms: number; longestBatchMs: number }
  | { kind: "compactionFailed"; error: string }
  | { kind: "backedUp"; rows: number; ms: number }
  | { kind: "backupFailed"; error: string };

/** The slots of the array shared with the worker for its close: the server's ask, and the worker's answer. */
const _CLOSE_ASKED = 0;
const _CLOSE_DONE = 1;

/**
 * The store's worker: runs in a thread, made from this function's source (a
 * blob URL, so it needs no read permission on our code and a compiled binary
 * carries it), with its own connection to the database. Every interval it
 * checkpoints the WAL (PASSIVE: it never waits on the server's commits, nor
 * they on it, but for one short copy when they kept the WAL from starting
 * over). Asked to compact, it reads the table (a read does not block the
 * server's commits), keeps each client's last row (rows of a client are
 * appended in increasing order: a record is written only when it beats the
 * one held) unless that row is expired, and deletes the rest in small
 * transactions, yielding between them so the server's commits interleave.
 * Self-contained on purpose: nothing from outside the function exists there
 * but {@linkcode LINE_COLUMN} and the constants of the WAL
 * ({@linkcode _RESTART_FRAMES}, {@linkcode _HELD_FRAMES},
 * {@linkcode _CATCH_UP_PASSES}, {@linkcode _WAL_SIZE_LIMIT},
 * {@linkcode _CHECKPOINT_BATCHES}) and of the close
 * ({@linkcode _CLOSE_ASKED}, {@linkcode _CLOSE_DONE}), defined ahead of it in
 * the worker's source.
 */
function _storeWorker(): void {
  const scope = self as unknown as Worker;
  // deno-lint-ignore no-explicit-any
  let db: any;
  /**
   * Our turn, shared with the server's thread: odd while the server's commits should wait for us (a compaction's
   * transaction wants or holds the write lock, or a checkpoint's last copy runs), counted up at each start and end so
   * that a commit that gave up waiting on one hold does not wait on it again.
   */
  let turn: Int32Array | undefined;
  /**
   * Shared with the server's thread for the close: it sets {@linkcode _CLOSE_ASKED} before asking, so that a
   * compaction's scan, which does not yield, sees it at its next page; we set {@linkcode _CLOSE_DONE} once our
   * connection is closed, and the server, waiting on it, closes its own (the last: the WAL is then copied in and
   * deleted).
   */
  let stop: Int32Array | undefined;
  const closing = () => stop !== undefined && Atomics.load(stop, _CLOSE_ASKED) !== 0;
  const hold = <T>(work: () => T): T => {
    Atomics.add(turn!, 0, 1);
    try {
      return work();
    } finally {
      Atomics.add(turn!, 0, 1);
      Atomics.notify(turn!, 0);
    }
  };
  /** How often the WAL is checkpointed, in milliseconds (given at open), and when it last was (`performance.now()`). */
  let checkpointMs = Infinity;
  let checkpointedAt = -Infinity;
  let checkpointFailed = false;
  // deno-lint-ignore no-explicit-any
  let checkpointStatement: any;
  /**
   * Copies the WAL into the database (PASSIVE), which syncs the WAL first: the commits it holds then survive a power
   * cut. The WAL starts over (its next commit writes from its start) only when a transaction begins with all of it
   * copied, which the server's commits during the copy prevent while they come without a pause: under a steady load
   * the file grew by every commit (447 MB in 30 s of pipelined IAMATs at one server). So when the WAL holds more than
   * {@linkcode _RESTART_FRAMES} frames after a checkpoint, it is copied again, up to {@linkcode _CATCH_UP_PASSES}
   * times, until at most {@linkcode _HELD_FRAMES} are left; then the server's commits are held (our turn) for one
   * last copy of those, and the next commit starts the WAL over. A failure is reported once until one succeeds (the
   * server's commits then checkpoint instead).
   */
  const checkpoint = () => {
    checkpointedAt = performance.now();
    try {
      checkpointStatement ??= db.prepare("PRAGMA wal_checkpoint(PASSIVE)");
      let pass = checkpointStatement.get() as { log: number; checkpointed: number };
      // Each pass copies what the server committed during the one before: the last one, with its commits held, copies
      // only a few frames, so they are held only as long as that takes (and two syncs).
      for (let again = 0; again < _CATCH_UP_PASSES && pass.log - pass.checkpointed > _HELD_FRAMES; again++) {
        pass = checkpointStatement.get() as { log: number; checkpointed: number };
      }
      // The last pass syncs the WAL, and the database once it has copied everything: the pages the passes before it
      // wrote too. Those are not synced ahead through a descriptor of our own: closing it would drop this process's
      // POSIX locks on the file, SQLite's, and let another process take it (and delete the WAL) under the server.
      if (pass.log > _RESTART_FRAMES && pass.log - pass.checkpointed <= _HELD_FRAMES && turn !== undefined) {
        hold(() => checkpointStatement.get());
      }
      checkpointFailed = false;
    } catch (error) {
      if (!checkpointFailed) scope.postMessage({ kind: "error", error: (error as Error)?.message ?? String(error) });
      checkpointFailed = true;
    }
  };
  /** Whether an unsigned decimal `a` is less than `b` (both `whole.fraction`, any lengths). */
  const less = (a: string, b: string): boolean => {
    const [aw, af = ""] = a.split(".");
    const [bw, bf = ""] = b.split(".");
    const awt = aw.replace(/^0+(?=.)/, "");
    const bwt = bw.replace(/^0+(?=.)/, "");
    if (awt.length !== bwt.length) return awt.length < bwt.length;
    if (awt !== bwt) return awt < bwt;
    const width = Math.max(af.length, bf.length);
    return af.padEnd(width, "0") < bf.padEnd(width, "0");
  };
  const compact = async (cutoff: string | null, batchRows: number) => {
    const started = performance.now();
    // Each client's last row so far; negated when that row has expired.
    const last = new Map<string, number>();
    const remove: number[] = [];
    let rows = 0;
    // The last row scanned, not max(rowid) asked afterwards: rows committed since the scan are never deleted.
    let maxRowid = 0;
    // Read a page at a time, each read finished before the next step, so that no read snapshot of this connection
    // is held across the delete transactions. Rows only ever get greater rowids, so paging by rowid sees each once.
    // Rows as arrays, and the fields found with indexOf: half the scan's time of objects and split().
    const scan = db.prepare(`SELECT rowid, ${LINE_COLUMN} FROM records WHERE rowid > ? ORDER BY rowid LIMIT 5000`);
    scan.setReturnArrays(true);
    const decoder = new TextDecoder();
    for (let page = scan.all(0); page.length > 0; page = scan.all(maxRowid)) {
      // The scan does not yield (seconds at a million clients): the interval's checkpoints are taken here meanwhile,
      // and a close asked for stops it.
      if (closing()) return;
      if (performance.now() - checkpointedAt >= checkpointMs) checkpoint();
      for (const [rowid, column] of page as [number, string | Uint8Array][]) {
        const line = typeof column === "string" ? column : decoder.decode(column);
        rows++;
        maxRowid = rowid;
        // AT <server> <skew> <client> <location> <time>: the client is the fourth field, the time the sixth.
        const server = line.indexOf(" ", 3);
        const skew = line.indexOf(" ", server + 1);
        const client = line.indexOf(" ", skew + 1);
        const id = line.slice(skew + 1, client);
        const previous = last.get(id);
        if (previous !== undefined) remove.push(Math.abs(previous));
        let expired = false;
        if (cutoff !== null) {
          const location = line.indexOf(" ", client + 1);
          const time = line.indexOf(" ", location + 1);
          expired = less(line.slice(location + 1, time === -1 ? undefined : time), cutoff);
        }
        last.set(id, expired ? -rowid : rowid);
      }
    }
    for (const rowid of last.values()) if (rowid < 0) remove.push(-rowid);
    last.clear();
    // In rowid order: each transaction touches neighbouring pages, and, the table having no AUTOINCREMENT, a row
    // committed meanwhile takes a rowid above every one still to be deleted (deleting the greatest first could free
    // a rowid for a new row that a later batch would then delete).
    const ids = Float64Array.from(remove).sort();
    remove.length = 0;
    const deleteRows = db.prepare("DELETE FROM records WHERE rowid IN (SELECT value FROM json_each(?))");
    const deleteRange = db.prepare("DELETE FROM records WHERE rowid BETWEEN ? AND ?");
    /**
     * Deletes the sorted `rowids`: a run of at least {@linkcode _RANGE_ROWS} consecutive ones as a range (a
     * walk along the table's leaves, no lookup per row), the rest looked up one by one. Every rowid in such a range
     * was scanned and is to go: rowids between two scanned ones were all scanned, and none is given again while a
     * greater row stays (the greatest rows go last).
     */
    const deleteIds = (rowids: Float64Array) => {
      const singles: number[] = [];
      for (let i = 0; i < rowids.length;) {
        let j = i;
        while (j + 1 < rowids.length && rowids[j + 1] === rowids[j] + 1) j++;
        if (j - i + 1 >= _RANGE_ROWS) deleteRange.run(rowids[i], rowids[j]);
        else for (let k = i; k <= j; k++) singles.push(rowids[k]);
        i = j + 1;
      }
      if (singles.length > 0) deleteRows.run(JSON.stringify(singles));
    };
    let batch = new Float64Array(0);
    let deleted = 0;
    let longestBatchMs = 0;
    let batches = 0;
    const flush = async () => {
      let began = 0;
      // A checkpoint first, every few transactions, so that this one finds the WAL wholly copied and starts it over
      // (syncing its header here, not on the server's thread). Left to the interval's checkpoints, while the server
      // committed too, the WAL was never wholly copied when a transaction began, never started over, and grew by every
      // transaction (47 MB for 600,000 rows deleted). Before each one, it stayed under 0.5 MB, but each transaction
      // added three syncs (and bench:ab's scenario 3 came out lower while it did); every few, it stays at a few MB.
      if (batches++ % _CHECKPOINT_BATCHES === 0) checkpoint();
      // Our turn: the server's commits wait (Atomics.wait) while it is held, so they cannot take the lock from us
      // between its busy retries; at most one delete transaction long.
      hold(() => {
        db.exec("BEGIN IMMEDIATE");
        // Held from here: the longest a commit of the server's can wait on it.
        began = performance.now();
        deleteIds(batch);
        db.exec("COMMIT");
      });
      longestBatchMs = Math.max(longestBatchMs, performance.now() - began);
      deleted += batch.length;
      await new Promise((resolve) => setTimeout(resolve, 0));
    };
    const step = Number.isInteger(batchRows) && batchRows > 0 ? batchRows : 2000;
    for (let start = 0; start < ids.length; start += step) {
      // Stopped between transactions: each deletes only superseded rows, so the table is whole at every one.
      if (closing()) return;
      batch = ids.subarray(start, start + step);
      await flush();
    }
    checkpoint();
    scope.postMessage({ kind: "compacted", rows, deleted, ms: performance.now() - started, longestBatchMs });
  };
  /** Copies the database to `path` (an empty file, or none) in one read transaction, then checks the copy. */
  const backupTo = async (path: string) => {
    const started = performance.now();
    const sqlite = await import("node:sqlite");
    // All pages in one step: one read snapshot, never restarted by the server's commits meanwhile.
    await sqlite.backup(db, path, { rate: -1 });
    const copy = new sqlite.DatabaseSync(path);
    try {
      const check = (copy.prepare("PRAGMA quick_check").get() as { quick_check: string } | undefined)?.quick_check;
      if (check !== "ok") throw new Error(`the copy fails its integrity check (${check})`);
      const rows = (copy.prepare("SELECT count(*) AS n FROM records").get() as { n: number }).n;
      // One file: no -wal or -shm beside the copy once it is closed.
      copy.exec("PRAGMA journal_mode = DELETE");
      scope.postMessage({ kind: "backedUp", rows, ms: performance.now() - started });
    } finally {
      copy.close();
    }
  };
  /** The backups and compactions, one after the other (they share the connection). */
  let work: Promise<void> = Promise.resolve();
  let compacting = false;
  let opened: Promise<void> | undefined;
  let interval: ReturnType<typeof setInterval> | undefined;
  const open = async (path: string, intervalMs: number) => {
    try {
      const { DatabaseSync } = await import("node:sqlite");
      db = new DatabaseSync(path);
      // No checkpoint inside this connection's commits either: a compaction's transaction that crossed the
      // threshold would copy a whole WAL while holding the write lock, stalling the server's commits.
      db.exec("PRAGMA busy_timeout = 2000; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0");
      // Cut back when our own transactions start the WAL over too (a compaction's).
      db.exec(`PRAGMA journal_size_limit = ${_WAL_SIZE_LIMIT}`);
      scope.postMessage({ kind: "ready" });
    } catch (error) {
      // Opened and then failed (a PRAGMA): closed, so that no connection of ours outlives the server's close.
      try {
        db?.close();
      } catch { /* not opened */ }
      db = undefined;
      scope.postMessage({ kind: "error", error: (error as Error)?.message ?? String(error) });
      return;
    }
    checkpointMs = intervalMs;
    interval = setInterval(checkpoint, intervalMs);
  };
  /**
   * Closes our connection once the work in hand is over (a compaction stops at its next page or batch; a backup runs
   * to its end: closing the connection under it is not known to be safe) and tells the server's thread, which waits for it.
   */
  const close = async () => {
    clearInterval(interval);
    await work;
    try {
      db?.close();
    } catch { /* closed already, or never opened */ }
    db = undefined;
    Atomics.store(stop!, _CLOSE_DONE, 1);
    Atomics.notify(stop!, _CLOSE_DONE);
  };
  scope.onmessage = async (event: MessageEvent) => {
    const message = event.data as
      | {
        kind: "open";
        path: string;
        intervalMs: number;
        turn: Int32Array;
        stop: Int32Array;
      }
      | {
        kind: "compact";
        cutoff: string | null;
        batchRows: number;
      }
      | { kind: "backup"; path: string }
      | { kind: "close" };
    if (message.kind === "open") {
      turn = message.turn;
      stop = message.stop;
      opened = open(message.path, message.intervalMs);
      return;
    }
    await opened;
    if (message.kind === "close") return close();
    if (message.kind === "backup") {
      work = work.then(async () => {
        try {
          if (db === undefined) throw new Error("the worker has no connection to the database");
          await backupTo(message.path);
        } catch (error) {
          scope.postMessage({ kind: "backupFailed", error: (error as Error)?.message ?? String(error) });
        }
      });
      return;
    }
    if (compacting) return;
    if (db === undefined) {
      scope.postMessage({ kind: "compactionFailed", error: "the worker has no connection to the database" });
      return;
    }
    compacting = true;
    work = work.then(async () => {
      try {
        await compact(message.cutoff, message.batchRows);
      } catch (error) {
        try {
          db.exec("ROLLBACK");
        } catch { /* no transaction left */ }
        scope.postMessage({ kind: "compactionFailed", error: (error as Error)?.message ?? String(error) });
      } finally {
        compacting = false;
      }
    });
    await work;
  };
}

const _WORKER_URL = URL.createObjectURL(
  new Blob([
    `const LINE_COLUMN = ${JSON.stringify(LINE_COLUMN)};\nconst _RESTART_FRAMES = ${_RESTART_FRAMES};\n` +
    `const _HELD_FRAMES = ${_HELD_FRAMES};\nconst _CATCH_UP_PASSES = ${_CATCH_UP_PASSES};\n` +
    `const _WAL_SIZE_LIMIT = ${_WAL_SIZE_LIMIT};\nconst _CHECKPOINT_BATCHES = ${_CHECKPOINT_BATCHES};\n` +
    `const _CLOSE_ASKED = ${_CLOSE_ASKED};\nconst _CLOSE_DONE = ${_CLOSE_DONE};\nconst _RANGE_ROWS = ${_RANGE_ROWS};\n` +
    `(${_storeWorker.toString()})();`,
  ], {
    type: "text/javascript",
  }),
);

/** A database that cannot be opened or read: the server must not start on it. */
export class CorruptDatabaseError extends Error {
  /** The error's name. */
  override name = "CorruptDatabaseError";
}

/**
 * A database another process is using: it holds the lock file beside it
 * (`<database>.lock`). Two servers writing one database would interleave
 * their rows, and a compaction could keep the older of two acknowledged
 * records.
 */
export class DatabaseInUseError extends Error {
  /** The error's name. */
  override name = "DatabaseInUseError";
}

/**
 * A database the server cannot write: its directory or the file is not
 * writable (permissions, a read-only file system). Nothing is wrong with the
 * file: the server must not start until it can write it.
 */
export class DatabaseNotWritableError extends Error {
  /** The error's name. */
  override name = "DatabaseNotWritableError";
}

/** Whether `error` says the process may not write there: permissions, a read-only file system, Deno's permissions. */
function _refusedWrite(error: unknown): boolean {
  const code = (error as { code?: unknown })?.code;
  return error instanceof Deno.errors.PermissionDenied || error instanceof Deno.errors.NotCapable ||
    code === "EROFS" || code === "EACCES" || code === "EPERM";
}

/** What the start's write probe writes: a few pages, as SQLite's first writes would be. */
const _PROBE_BYTES = 64 * 1024;

/** Whether `error` says the disk is full. */
function _diskFull(error: unknown): boolean {
  return (error as { code?: unknown })?.code === "ENOSPC" || /No space left on device/i.test(String(error));
}

/**
 * Why the database at `path` cannot be written, if it cannot: its
 * directory (where SQLite makes the `-wal` and `-shm` files) or the file
 * is not writable. Undefined when both are: the trouble is in the file.
 */
function _notWritable(path: string): string | undefined {
  const slash = path.lastIndexOf("/");
  const directory = slash < 0 ? "." : path.slice(0, slash) || "/";
  // Tried, not worked out from modes: a read-only mount, root, ACLs and Deno's permissions all have their say. A few
  // pages are written, as SQLite would to start: an empty file can still be made on a full disk.
  const probe = `${directory}/.${path.slice(slash + 1)}.${Deno.pid}.writable`;
  let made = false;
  try {
    const file = Deno.openSync(probe, { write: true, createNew: true });
    made = true;
    try {
      file.writeSync(new Uint8Array(_PROBE_BYTES));
      file.syncSync();
    } finally {
      file.close();
    }
  } catch (error) {
    if (_refusedWrite(error)) {
      return `the directory ${directory} is not writable (${(error as Error).message}); the server writes the ` +
        "database there, and the -wal and -shm files beside it";
    }
    if (_diskFull(error)) {
      return `the disk holding ${directory} is full (${(error as Error).message}): free space there and start ` +
        "again; nothing says the database is damaged";
    }
  } finally {
    if (made) {
      try {
        Deno.removeSync(probe);
      } catch { /* gone already */ }
    }
  }
  try {
    Deno.openSync(path, { write: true }).close();
  } catch (error) {
    if (_refusedWrite(error)) return `the file is not writable (${(error as Error).message})`;
  }
  return undefined;
}

/**
 * The lock files this process holds (device and inode), to tell "this
 * process" from another in a refusal: flock is per open file, and the pid
 * in a lock file is written only once its holder has loaded the database
 * (the one there before may be this process's, or, across PID namespaces,
 * anybody's).
 */
const _heldHere = new Set<string>();

function _identity(file: Deno.FsFile): string {
  const { dev, ino } = file.statSync();
  return `${dev}:${ino}`;
}

/** " (pid N)" from a held lock file, when its holder has written it; else nothing. */
function _lockHolder(lock: Deno.FsFile): string {
  try {
    const bytes = new Uint8Array(32);
    lock.seekSync(0, Deno.SeekMode.Start);
    const read = lock.readSync(bytes) ?? 0;
    const pid = new TextDecoder().decode(bytes.subarray(0, read)).trim();
    // Ours is what this process wrote when it held the file before: the new holder has not written its own yet.
    return /^[0-9]{1,10}$/.test(pid) && pid !== String(Deno.pid) ? ` (pid ${pid})` : "";
  } catch {
    return "";
  }
}

/** The server a record names: its line's second field (`AT <server> ...`). */
function _serverOf(record: LocationRecord): string {
  return record.line.slice(3, record.line.indexOf(" ", 3));
}

/** The server of `record` when `options` leave out its rows (a server no longer in the config); else undefined. */
function _leftOutServer(record: LocationRecord, options: RecordLogOptions): string | undefined {
  if (options.isKnownServer === undefined) return undefined;
  const server = _serverOf(record);
  return options.isKnownServer(server) ? undefined : server;
}

/** Whether `record`'s client ID or line is over the limits `options` give. */
function _overLimits(record: LocationRecord, options: RecordLogOptions): boolean {
  const limits = options.limits;
  return limits !== undefined &&
    (!fitsBytes(record.clientId, limits.maxClientIdBytes) || !fitsBytes(record.line, limits.maxLineBytes));
}

/**
 * Deletes the rows the load left out ({@linkcode RecordLogOptions}
 * `isKnownServer` and `limits`), in one transaction; returns how many.
 */
function _deleteLeftOut(db: DatabaseSync, options: RecordLogOptions): number {
  const decoder = new TextDecoder();
  const scan = db.prepare(`SELECT rowid AS id, ${LINE_COLUMN} AS line FROM records`);
  const doomed: number[] = [];
  for (const { id, line: column } of scan.iterate() as Iterable<{ id: number; line: string | Uint8Array }>) {
    const line = typeof column === "string" ? column : decoder.decode(column);
    // Every row was read as a record by the load, on the same file under our lock.
    const record = parseRecordFields(splitFields(line))!;
    if (_leftOutServer(record, options) !== undefined || _overLimits(record, options)) doomed.push(id);
  }
  const remove = db.prepare("DELETE FROM records WHERE rowid = ?");
  db.exec("BEGIN IMMEDIATE");
  try {
    for (const id of doomed) remove.run(id);
    db.exec("COMMIT");
  } catch (error) {
    db.exec("ROLLBACK");
    throw error;
  }
  return doomed.length;
}

/** Rows in the table. */
function _rowCount(db: DatabaseSync): number {
  return Number((db.prepare("SELECT count(*) AS n FROM records").get() as { n: number | bigint }).n);
}

/** Rows read at once at start-up ({@linkcode _lineColumns}). */
const _LOAD_CHUNK_ROWS = 10_000;

/**
 * Most bytes of lines read at once at start-up: a chunk of more (rows of
 * long client IDs) is read row by row. A string past V8's longest (about
 * 537 million characters) made Deno panic in node:sqlite, and SQLite
 * refuses to join more than a billion bytes.
 */
const _LOAD_CHUNK_BYTES = 8 * 2 ** 20;

/**
 * Every row's `line` column, as {@linkcode LINE_COLUMN} gives it, in one
 * read transaction: newest row first, as a rule (then `order.newestFirst`
 * is set), so that each client's greatest record, its last row as a rule,
 * comes before the rows it supersedes; a store loaded from them then makes
 * a line for each client once, not once per row. Rows are read a chunk at
 * a time, joined by SQLite into one string with a newline between them and
 * split here: node:sqlite makes an object of each row it returns, which
 * took 2.4 s for a million rows, where the chunks take 0.6 s. A chunk is
 * split only when that gives back every row as the row-by-row read does:
 * no more than {@linkcode _LOAD_CHUNK_BYTES}, as many lines as rows (a
 * newline in a row makes two, a NULL none), as many UTF-8 bytes as SQLite
 * counts in them (a row with a NUL comes back cut short there), no U+FFFD
 * (which also stands for bytes that are not UTF-8) and no U+FEFF (a
 * byte-order mark, which the row-by-row read drops from the start of a
 * BLOB). Any other chunk (none of which the server writes) is read row by
 * row, and a table that has no row IDs to read by (a WITHOUT ROWID table,
 * made by hand) is read in one go, in its own order.
 */
function* _lineColumns(db: DatabaseSync, order: { newestFirst: boolean }): Generator<unknown> {
  const statements = (() => {
    try {
      const stats = (where: string) => {
        const statement = db.prepare(
          "SELECT min(_rowid_) AS first, max(_rowid_) AS last, count(*) AS rows, sum(octet_length(line)) AS bytes " +
            `FROM (SELECT _rowid_, line FROM records ${where} ORDER BY _rowid_ DESC LIMIT ${_LOAD_CHUNK_ROWS})`,
        );
        // Row IDs as they are: a table written by hand may hold any 64-bit one.
        statement.setReadBigInts(true);
        return statement;
      };
      return {
        first: stats(""),
        next: stats("WHERE _rowid_ < ?"),
        joined: db.prepare(
          "SELECT group_concat(line, char(10)) AS joined " +
            "FROM (SELECT line FROM records WHERE _rowid_ BETWEEN ? AND ? ORDER BY _rowid_ DESC)",
        ),
        rows: db.prepare(
          `SELECT ${LINE_COLUMN} AS line FROM records WHERE _rowid_ BETWEEN ? AND ? ORDER BY _rowid_ DESC`,
        ),
      };
    } catch {
      return undefined;
    }
  })();
  if (statements === undefined) {
    for (const { line } of db.prepare(`SELECT ${LINE_COLUMN} AS line FROM records`).iterate()) yield line;
    return;
  }
  order.newestFirst = true;
  let before: bigint | undefined;
  db.exec("BEGIN");
  try {
    while (true) {
      const chunk = (before === undefined ? statements.first.get() : statements.next.get(before)) as {
        first: bigint | null;
        last: bigint | null;
        rows: bigint;
        bytes: bigint | null;
      };
      if (chunk.first === null || chunk.last === null) return;
      before = chunk.first;
      let whole: string[] | undefined;
      if (chunk.bytes !== null && chunk.bytes + chunk.rows <= _LOAD_CHUNK_BYTES) {
        const { joined } = statements.joined.get(chunk.first, chunk.last) as { joined: string | null };
        if (joined !== null && !joined.includes("\uFFFD") && !joined.includes("\uFEFF")) {
          const split = joined.split("\n");
          const bytes = Buffer.byteLength(joined, "utf8");
          if (BigInt(split.length) === chunk.rows && BigInt(bytes) === chunk.bytes + chunk.rows - 1n) whole = split;
        }
      }
      if (whole !== undefined) yield* whole;
      else {
        for (const { line } of statements.rows.iterate(chunk.first, chunk.last) as Iterable<{ line: unknown }>) {
          yield line;
        }
      }
    }
  } finally {
    db.exec("COMMIT");
  }
}

/**
 * Removes the copies a `deno task restore` stopped half-way left beside the
 * database (`<database>.restoring-<time>`: it is killed outright by Ctrl-C,
 * before its database is touched), saying so. Under the database's lock,
 * which a restore holds throughout: none is in use.
 */
export function removeStoppedRestores(path: string): void {
  const directory = dirname(path);
  const prefix = `${basename(path)}.restoring-`;
  for (const entry of Deno.readDirSync(directory)) {
    if (!entry.name.startsWith(prefix)) continue;
    const copy = `${directory}/${entry.name}`;
    try {
      Deno.removeSync(copy);
      log.server.warning("Removed {copy}, left by a restore stopped before it put the copy in place", { copy });
    } catch (error) {
      log.server.warning("Cannot remove {copy}, left by a stopped restore: {error}", {
        copy,
        error: (error as Error).message,
      });
    }
  }
}

/** A row's line column (text, or bytes when it holds a NUL) as the record it is, or null when it is none. */
function _storedRecord(column: unknown, decoder: TextDecoder): LocationRecord | null {
  let line = column;
  if (column instanceof Uint8Array) {
    try {
      line = decoder.decode(column);
    } catch {
      return null;
    }
  }
  return typeof line === "string" ? parseStoredRecordLine(line) : null;
}

/**
 * The server each row of `db`'s records table names, as a server reads the
 * rows at start; throws naming the count of rows before it when a row is no
 * AT record (a server would refuse the database). For a copy about to be put
 * in place (`deno task restore`), which must not be one the server refuses.
 */
export function rowsByServer(db: DatabaseSync): Map<string, number> {
  const rows = new Map<string, number>();
  const decoder = new TextDecoder("utf-8", { fatal: true });
  let read = 0;
  for (const column of _lineColumns(db, { newestFirst: false })) {
    const record = _storedRecord(column, decoder);
    if (record === null) throw new RangeError(`a row that is not an AT record (after ${read} that are)`);
    read++;
    const server = _serverOf(record);
    rows.set(server, (rows.get(server) ?? 0) + 1);
  }
  return rows;
}

/**
 * Checks the database at `path` and reads every record in it, greatest
 * per client, expired ones left out (or hands each to `options.onRecord`,
 * as it is read), on a read-only connection: closing it
 * writes nothing, so a file it refuses is left as it was. Throws a
 * {@linkcode CorruptDatabaseError} for a row that is not an AT record,
 * and SQLite's error for a file it cannot open or check.
 */
function _checkAndLoad(
  path: string,
  options: RecordLogOptions,
): { records: LocationRecord[]; rows: number; leftOut: Map<string, number>; overLimits: number } {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    db.exec("PRAGMA busy_timeout = 2000");
    const check = db.prepare("PRAGMA quick_check").get() as { quick_check: string } | undefined;
    if (check?.quick_check !== "ok") throw new Error(`integrity check says ${JSON.stringify(check?.quick_check)}`);
    const table = db.prepare("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'records'").get();
    const leftOut = new Map<string, number>();
    if (table === undefined) return { records: [], rows: 0, leftOut, overLimits: 0 };
    const latest = new Map<string, LocationRecord>();
    const onRecord = options.onRecord;
    let overLimits = 0;
    let row = 0;
    const decoder = new TextDecoder("utf-8", { fatal: true });
    const order = { newestFirst: false };
    for (const column of _lineColumns(db, order)) {
      row++;
      const record = _storedRecord(column, decoder);
      if (record === null) {
        throw new CorruptDatabaseError(
          `The database ${path} holds a row that is not an AT record (row ${
            // Counted from the first row, as a reader of the table counts, in the load's read transaction.
            order.newestFirst ? _rowCount(db) - row + 1 : row}). The server will not start on it, ` +
            "so nothing is silently lost: move the file (and its -wal and -shm) aside to start empty (neighbours " +
            "fill the store back in), or restore it from a backup.",
        );
      }
      // Before the greatest is chosen: a left-out newer record must not hide a kept older one.
      const server = _leftOutServer(record, options);
      if (server !== undefined) {
        leftOut.set(server, (leftOut.get(server) ?? 0) + 1);
        continue;
      }
      if (_overLimits(record, options)) {
        overLimits++;
        continue;
      }
      if (onRecord !== undefined) {
        // Left out here, not after the greatest is chosen: a client's rows before an expired one are expired too.
        if (options.isExpired === undefined || !options.isExpired(record.clientTime)) onRecord(record);
        continue;
      }
      const current = latest.get(record.clientId);
      if (current === undefined || compareRecords(record, current) > 0) latest.set(record.clientId, record);
    }
    const isExpired = options.isExpired;
    const records = [...latest.values()];
    return {
      records: isExpired === undefined ? records : records.filter((r) => !isExpired(r.clientTime)),
      rows: row,
      leftOut,
      overLimits,
    };
  } finally {
    db.close();
  }
}

/** Options for {@linkcode RecordLog.open}. */
export interface RecordLogOptions {
  /** Whether a record with this client time has expired: such records are not loaded, and are compacted away. */
  isExpired?(clientTime: string): boolean;
  /** The decimal client time before which records have expired, for the worker's compaction; none without a TTL. */
  expiryCutoff?(): string | null;
  /**
   * Whether records taken by this server are loaded: the rows of a server
   * since removed from the config are not (the herd refuses them); they are
   * deleted at open and counted in {@linkcode RecordLog.open}'s `leftOut`.
   * All are loaded, without it.
   */
  isKnownServer?(server: string): boolean;
  /**
   * The longest client ID and AT line, in UTF-8 bytes, of the records
   * loaded: rows over them (written before the config lowered a limit) are
   * not, as the herd refuses such records; they are deleted at open and
   * counted in {@linkcode RecordLog.open}'s `overLimits`. All are loaded,
   * without it.
   */
  limits?: { maxClientIdBytes: number; maxLineBytes: number };
  /** Whether a data directory other users can enter is warned about (yes unless false: a retry has said so). */
  warnOpenDirectory?: boolean;
  /**
   * Where the records read go, one by one as they are read (newest row
   * first, as a rule), instead of into {@linkcode RecordLog.open}'s
   * `records` (then empty): every row loaded and not expired, not only each
   * client's greatest, which the caller keeps (as the store's `offer` does;
   * it may be given a record twice). A million records collected first
   * outlived the load for as long as the process ran: promoted to V8's old
   * space while they were collected, they were garbage that nothing
   * collected once the server was idle, 300 MB of them
   * (docs/PERFORMANCE.md, "The session of 2026-12-04 23:54"). When open
   * throws (a file refused), the records already given are the caller's to
   * drop.
   */
  onRecord?(record: LocationRecord): void;
}

/** What a compaction did, as the worker reported it. */
export interface CompactionReport {
  /** Rows the table held when it started. */
  rows: number;
  /** Rows deleted. */
  deleted: number;
  /** How long it took, in milliseconds (on the worker). */
  ms: number;
  /** The longest of its write transactions, in milliseconds: the longest a commit of the server could wait on it. */
  longestBatchMs: number;
}

/** What a backup ({@linkcode RecordLog.backup}) did. */
export interface BackupReport {
  /** Rows the copy holds (superseded ones among them, until a compaction). */
  rows: number;
  /** How long the copy and its check took, in milliseconds (on the worker). */
  ms: number;
}

/** An append-only, group-committed log of records. */
export class RecordLog {
  /** The backup being taken, waiting for the worker's word. */
  #backup: { resolve(report: BackupReport): void; reject(error: Error): void } | undefined;
  /** The database file. */
  readonly path: string;
  #db: DatabaseSync;
  /** The lock file, held (flock, exclusive) from open to close. */
  #lock: Deno.FsFile;
  /** The lock file's identity in {@linkcode _heldHere}. */
  #held: string;
  #append: StatementSync;
  #options: RecordLogOptions;
  #pending = new Map<string, string>();
  #committed: Promise<boolean> | undefined;
  #release: ((ok: boolean) => void) | undefined;
  #rows = 0;
  #closed = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #worker: Worker | undefined;
  #workerDue: ReturnType<typeof setTimeout> | undefined;
  #failing = false;
  #failures = 0;
  #retry: ReturnType<typeof setTimeout> | undefined;
  #retryMs = _RETRY_MIN_MS;
  #compacting = false;
  #lastCompaction: CompactionReport | undefined;
  #compactionWaiters: ((report: CompactionReport | undefined) => void)[] = [];
  /**
   * Held by the worker (odd; counted up at each start and end of a hold)
   * while one of its compaction transactions wants or holds the write lock,
   * or a checkpoint's last copy runs: a commit then waits for it (a few
   * milliseconds at most, the bench's "longest write transaction"; at most
   * {@linkcode _TURN_WAIT_MS}, once per hold) rather than take the lock back
   * between the worker's busy retries. Without it, commits made back to back
   * under load starved the worker, whose BEGIN IMMEDIATE gave up after
   * busy_timeout and failed the compaction.
   */
  #turn = new Int32Array(new SharedArrayBuffer(4));
  /** The hold of the worker's turn a commit last gave up waiting on: later commits do not wait on it again. */
  #turnGivenUp = -1;
  /** Shared with the worker for {@linkcode close}: our ask, at {@linkcode _CLOSE_ASKED}, its answer at {@linkcode _CLOSE_DONE}. */
  #stop = new Int32Array(new SharedArrayBuffer(8));

  private constructor(path: string, db: DatabaseSync, lock: Deno.FsFile, held: string, options: RecordLogOptions) {
    this.path = path;
    this.#db = db;
    this.#lock = lock;
    this.#held = held;
    this.#options = options;
    this.#append = db.prepare("INSERT INTO records (line) SELECT value FROM json_each(?)");
  }

  /**
   * Starts the worker. Until it says it is ready, and again if it fails,
   * SQLite checkpoints in the commits as it does by default, so the WAL
   * never grows without bound.
   */
  #startWorker(): void {
    const worker = new Worker(_WORKER_URL, { type: "module", name: `store worker ${this.path}` });
    this.#worker = worker;
    const failed = (error: string | undefined) => {
      if (this.#closed) return;
      log.server.warning("Checkpointing {path} in the background failed: {error}; the commits checkpoint it instead", {
        path: this.path,
        error,
      });
      this.#db.exec("PRAGMA wal_autocheckpoint = 1000");
    };
    worker.onmessage = (event: MessageEvent) => {
      // Said once closed (the close has answered every waiter): nothing is left to do with it.
      if (this.#closed) return;
      const message = event.data as _WorkerMessage;
      switch (message.kind) {
        case "ready":
          if (!this.#closed) this.#db.exec("PRAGMA wal_autocheckpoint = 0");
          return;
        case "error":
          return failed(message.error);
        case "compacted":
          return this.#compacted(message);
        case "compactionFailed":
          log.server.error("Compacting {path} failed: {error}", { path: this.path, error: message.error });
          return this.#compacted(undefined);
        case "backedUp":
          return this.#backedUp({ rows: message.rows, ms: message.ms });
        case "backupFailed":
          return this.#backedUp(new Error(message.error));
      }
    };
    worker.onerror = (event: ErrorEvent) => {
      // The worker is gone: commits checkpoint again, no compaction runs, and a turn it held is given back.
      event.preventDefault();
      worker.terminate();
      if (this.#worker === worker) this.#worker = undefined;
      Atomics.store(this.#turn, 0, 0);
      failed(event.message);
      this.#compacted(undefined);
      this.#backedUp(new Error(`the store's worker failed: ${event.message}`));
    };
    worker.postMessage({
      kind: "open",
      path: this.path,
      intervalMs: CHECKPOINT_INTERVAL_MS,
      turn: this.#turn,
      stop: this.#stop,
    });
  }

  #compacted(report: CompactionReport | undefined): void {
    this.#compacting = false;
    if (report !== undefined) {
      this.#rows = Math.max(0, this.#rows - report.deleted);
      this.#lastCompaction = report;
      log.server.info(
        "Compacted {path}: {deleted} of {rows} rows deleted in {ms} ms, on the store's worker " +
          "(longest write transaction {longest} ms)",
        {
          path: this.path,
          deleted: report.deleted,
          rows: report.rows,
          ms: Math.round(report.ms),
          longest: Number(report.longestBatchMs.toFixed(2)),
        },
      );
    }
    for (const waiter of this.#compactionWaiters.splice(0)) waiter(report);
  }

  /**
   * Opens (creating if missing) the database at `path` and reads every
   * record in it, greatest per client, expired ones left out (with
   * `options.onRecord`, hands each record to it instead). Throws a
   * {@linkcode DatabaseNotWritableError} naming the directory or the file
   * when the server may not write them, else a
   * {@linkcode CorruptDatabaseError} naming the file when it cannot be
   * opened, checked or read.
   */
  static open(
    path: string,
    options: RecordLogOptions = {},
  ): { log: RecordLog; records: LocationRecord[]; leftOut: Map<string, number>; overLimits: number } {
    const directory = path.slice(0, path.lastIndexOf("/"));
    if (directory !== "") {
      let open: OpenDirectory | undefined;
      try {
        open = makePrivateDirectory(directory);
      } catch (error) {
        throw new DatabaseNotWritableError(
          `Cannot use the database ${path}: ${(error as Error).message}`,
        );
      }
      if (open !== undefined && options.warnOpenDirectory !== false) log.server.warning(...openDirectoryWarning(open));
    }
    let lock: Deno.FsFile | undefined;
    let held: string | undefined;
    let db: DatabaseSync | undefined;
    try {
      // Held until close: a second server (another config, the same name and dataDir) is refused, not let in to
      // interleave its rows with ours. flock, so it goes with the process however that ends.
      lock = Deno.openSync(`${path}.lock`, { read: true, write: true, create: true, mode: PRIVATE_FILE_MODE });
      if (!lock.tryLockSync(true)) {
        // flock is per open file, so this process may hold it too (a second RecordLog on one path).
        const who = _heldHere.has(_identity(lock))
          ? `this process (pid ${Deno.pid}) is already using it`
          : `another process${_lockHolder(lock)} is using it`;
        throw new DatabaseInUseError(
          `Cannot use the database ${path}: ${who} (it holds ${path}.lock). ` +
            "Two servers writing one database would mix their records: stop the other one, or give this server " +
            "its own dataDir in the config.",
        );
      }
      held = _identity(lock);
      _heldHere.add(held);
      removeStoppedRestores(path);
      // A write-ahead log with no database beside it is records committed and not yet copied into a database file
      // that was moved away (half of "move the file aside"): SQLite would delete it and start empty, silently.
      const exists = pathExists(path);
      if (!exists && pathExists(`${path}-wal`)) {
        throw new CorruptDatabaseError(
          `The database ${path} is missing but its write-ahead log ${path}-wal is there, holding commits not yet in ` +
            "it: put the database back beside it, or move the -wal and -shm files aside too to start empty " +
            "(neighbours fill the store back in).",
        );
      }
      const empty = exists && Deno.statSync(path).size === 0;
      // The lock file holds the pid of the last server that opened the database, written once SQLite had written the
      // file's first page: an empty database file beside it was truncated or replaced, not new.
      if (empty && lock.statSync().size > 0) {
        throw new CorruptDatabaseError(
          `The database ${path} is empty (0 bytes), but a server has used it before (${path}.lock says so): it was ` +
            "truncated or replaced. The server will not start on it, so nothing is silently lost: restore it from a " +
            "backup, or remove it and its .lock file to start empty (neighbours fill the store back in).",
        );
      }
      // An empty file beside a write-ahead log (whatever the lock file says: one from before the lock existed is
      // missing): SQLite deletes the log of a 0-byte database on open, and the commits in it with it.
      if (empty && pathExists(`${path}-wal`) && Deno.statSync(`${path}-wal`).size > 0) {
        throw new CorruptDatabaseError(
          `The database ${path} is empty (0 bytes) but its write-ahead log ${path}-wal is there, holding commits not ` +
            "in it: restore the database beside it, or move the -wal and -shm files aside too to start empty " +
            "(neighbours fill the store back in).",
        );
      }
      // Made here, 0600, when missing: SQLite would make it with the process's umask (0644, as a rule), and it makes
      // the -wal and -shm files (now, or whenever they are next needed) with the database file's mode. An empty file
      // is an empty database. A file that exists keeps its mode.
      if (!exists) Deno.openSync(path, { write: true, create: true, mode: PRIVATE_FILE_MODE }).close();
      // Checked and read on a read-only connection, which leaves the file and its -wal byte for byte as they were
      // when it refuses them: a read-write connection's close copies the -wal into the file.
      let loaded;
      try {
        loaded = _checkAndLoad(path, options);
      } catch (error) {
        // SQLITE_READONLY_ROLLBACK: a hot rollback journal (a transaction cut short in rollback-journal mode), which
        // only a read-write connection may roll back. Rolling it back is SQLite's own recovery: nothing committed
        // is lost. There is no -wal in that mode for the read-write connection's close to copy in.
        if ((error as { errcode?: unknown })?.errcode !== 776) throw error;
        const recovering = new DatabaseSync(path);
        try {
          recovering.exec("PRAGMA busy_timeout = 2000; SELECT count(*) FROM sqlite_schema");
        } finally {
          recovering.close();
        }
        loaded = _checkAndLoad(path, options);
      }
      const { records, rows, leftOut, overLimits } = loaded;
      db = new DatabaseSync(path);
      // A lock held a moment by the worker (of an earlier open, closing, or compacting) is waited for, not an error.
      db.exec("PRAGMA busy_timeout = 2000; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL");
      db.exec(`PRAGMA journal_size_limit = ${_WAL_SIZE_LIMIT}`);
      db.exec("CREATE TABLE IF NOT EXISTS records (line TEXT NOT NULL)");
      // Rows left out are deleted now, before a record is appended: compaction keeps each client's last row, which
      // is its greatest only as long as every row in the table may be loaded (rows are appended in increasing order).
      // A left-out row kept a while could be loaded again (the config changed back) and lost to one appended since.
      const deleted = leftOut.size > 0 || overLimits > 0 ? _deleteLeftOut(db, options) : 0;
      lock.truncateSync(0);
      lock.writeSync(new TextEncoder().encode(`${Deno.pid}\n`));
      const recordLog = new RecordLog(path, db, lock, held, options);
      recordLog.#rows = rows - deleted;
      // Started once the caller is done starting (listening, for a server): a thread is not free on two cores.
      recordLog.#workerDue = setTimeout(() => recordLog.#startWorker(), 0);
      return { log: recordLog, records, leftOut, overLimits };
    } catch (error) {
      try {
        db?.close();
      } catch { /* already failed */ }
      if (held !== undefined) _heldHere.delete(held);
      lock?.close();
      if (error instanceof CorruptDatabaseError || error instanceof DatabaseInUseError) throw error;
      const notWritable = _notWritable(path);
      if (notWritable !== undefined) {
        throw new DatabaseNotWritableError(
          notWritable.startsWith("the disk holding")
            ? `Cannot use the database ${path}: ${notWritable}; the database file is left as it is.`
            : `Cannot use the database ${path}: ${notWritable}. Let the user the server runs as write there, or ` +
              "point dataDir in the config elsewhere; the database file is left as it is.",
        );
      }
      throw new CorruptDatabaseError(
        `Cannot use the database ${path}: ${(error as Error).message}. The server will not start on it, ` +
          "so nothing is silently lost: move the file aside to start empty (neighbours fill the store back in), " +
          "or restore it from a backup.",
      );
    }
  }

  /** Lines in the table, superseded ones included. */
  get rows(): number {
    return this.#rows;
  }

  /** Whether commits succeed: false from a failed commit until one succeeds again. */
  get healthy(): boolean {
    return !this.#failing;
  }

  /** Commits that failed since the log was opened. */
  get failures(): number {
    return this.#failures;
  }

  /** What the last compaction did, if one ran. */
  get lastCompaction(): CompactionReport | undefined {
    return this.#lastCompaction;
  }

  /**
   * Queues `record` for the next group commit; resolves to true once it is
   * in the database, to false if that commit failed (the record is then
   * not acknowledged; it stays pending and is retried).
   */
  append(record: LocationRecord): Promise<boolean> {
    if (this.#closed) return Promise.resolve(false);
    this.#pending.set(record.clientId, record.line);
    if (this.#committed === undefined) {
      this.#committed = new Promise<boolean>((resolve) => this.#release = resolve);
      setImmediate(() => this.commit());
    }
    return this.#committed;
  }

  /**
   * When `clientId`'s latest line is still waiting for its commit (an
   * append's, or written behind), a promise of that commit, brought forward
   * to the end of this turn: true once it is in the database, false if the
   * commit failed. Undefined when nothing of the client's is waiting.
   */
  pendingFor(clientId: string): Promise<boolean> | undefined {
    if (this.#closed || !this.#pending.has(clientId)) return undefined;
    if (this.#committed === undefined) {
      this.#committed = new Promise<boolean>((resolve) => this.#release = resolve);
      setImmediate(() => this.commit());
    }
    return this.#committed;
  }

  /**
   * Queues `record` for a commit within {@linkcode WRITE_BEHIND_MS}, or with
   * the next awaited append, whichever comes first: for records nobody is
   * waiting on (those from peers), so a busy server commits far less often.
   */
  writeBehind(record: LocationRecord): void {
    if (this.#closed) return;
    this.#pending.set(record.clientId, record.line);
    this.#timer ??= setTimeout(() => {
      this.#timer = undefined;
      this.commit();
    }, WRITE_BEHIND_MS);
  }

  /** Commits what is pending now; returns whether it succeeded (true with nothing to commit). */
  commit(): boolean {
    const release = this.#release;
    this.#committed = undefined;
    this.#release = undefined;
    let ok = true;
    if (this.#pending.size > 0 && !this.#closed) {
      const lines = [...this.#pending.values()];
      const started = performance.now();
      try {
        // Odd: held. A hold that outlasts one wait (a slow disk's sync) then costs one commit the wait, not every one.
        const held = Atomics.load(this.#turn, 0);
        if ((held & 1) === 1 && held !== this.#turnGivenUp) {
          if (Atomics.wait(this.#turn, 0, held, _TURN_WAIT_MS) === "timed-out") this.#turnGivenUp = held;
        }
        this.#db.exec("BEGIN");
        this.#append.run(JSON.stringify(lines));
        this.#db.exec("COMMIT");
        metrics.commitSeconds.observe((performance.now() - started) / 1000);
        metrics.commitOk.inc();
        this.#pending.clear();
        this.#rows += lines.length;
        if (this.#failing) this.#recovered();
      } catch (error) {
        ok = false;
        metrics.commitFailed.inc();
        try {
          this.#db.exec("ROLLBACK");
        } catch { /* no transaction left */ }
        this.#failed(lines.length, error as Error);
      }
    }
    release?.(ok);
    return ok;
  }

  /** A commit failed: its records stay pending (one per client), IAMATs are refused, and a retry is scheduled. */
  #failed(count: number, error: Error): void {
    this.#failures++;
    if (!this.#failing) {
      log.server.error(
        "Writing {count} records to {path} failed: {error}; no IAMAT is acknowledged until a commit succeeds again",
        { count, path: this.path, error: error.message },
      );
    }
    this.#failing = true;
    clearTimeout(this.#retry);
    this.#retry = setTimeout(() => {
      this.#retry = undefined;
      this.commit();
    }, this.#retryMs);
    this.#retryMs = Math.min(this.#retryMs * 2, _RETRY_MAX_MS);
  }

  #recovered(): void {
    log.server.warning("Writing to {path} succeeds again after {failures} failed commits; IAMATs are acknowledged", {
      path: this.path,
      failures: this.#failures,
    });
    this.#failing = false;
    this.#retryMs = _RETRY_MIN_MS;
    clearTimeout(this.#retry);
    this.#retry = undefined;
  }

  /**
   * Asks the worker to compact the table once superseded (or expired) lines
   * outnumber the live ones; `live` is how many clients the store holds.
   * Returns whether a compaction was started.
   */
  compactIfWorthIt(live: number): boolean {
    if (this.#rows <= 2 * live + 1000) return false;
    return this.compact();
  }

  /** Asks the worker to compact the table now; false when one is already running or the worker is not up. */
  compact(): boolean {
    if (this.#compacting || this.#worker === undefined || this.#closed) return false;
    this.#compacting = true;
    this.#worker.postMessage({
      kind: "compact",
      cutoff: this.#options.expiryCutoff?.() ?? null,
      batchRows: _COMPACT_BATCH,
    });
    return true;
  }

  /**
   * Copies the database to `path` (an empty file, or none) on the worker,
   * in one read transaction, so the copy holds every commit up to one
   * moment and the server's commits go on meanwhile; checks the copy
   * (`quick_check`) and leaves it as one file. Rejects when the worker is
   * not running, a backup is being taken already, or the copy fails.
   */
  backup(path: string): Promise<BackupReport> {
    if (this.#worker === undefined || this.#closed) {
      return Promise.reject(new Error("the store's worker is not running"));
    }
    if (this.#backup !== undefined) return Promise.reject(new Error("a backup is being taken already"));
    return new Promise((resolve, reject) => {
      this.#backup = { resolve, reject };
      this.#worker!.postMessage({ kind: "backup", path });
    });
  }

  #backedUp(outcome: BackupReport | Error): void {
    const waiter = this.#backup;
    this.#backup = undefined;
    if (outcome instanceof Error) waiter?.reject(outcome);
    else waiter?.resolve(outcome);
  }

  /** Resolves with the report of the compaction running now (undefined if it failed, or none is running). */
  compacted(): Promise<CompactionReport | undefined> {
    if (!this.#compacting) return Promise.resolve(undefined);
    return new Promise((resolve) => this.#compactionWaiters.push(resolve));
  }

  /**
   * Has the worker close its connection, and ends it. Waited for (the
   * thread blocked, at most {@linkcode _CLOSE_WAIT_MS}): a worker's
   * connection outliving {@linkcode close} would keep the -wal and -shm
   * files after it, and the database open after its lock is let go.
   */
  #closeWorker(): void {
    const worker = this.#worker;
    if (worker === undefined) return;
    this.#worker = undefined;
    Atomics.store(this.#stop, _CLOSE_ASKED, 1);
    worker.postMessage({ kind: "close" });
    const started = performance.now();
    if (Atomics.wait(this.#stop, _CLOSE_DONE, 0, _CLOSE_WAIT_MS) === "timed-out") {
      log.server.warning(
        "The store's worker had not closed its connection to {path} after {ms} ms: ended without it (the next " +
          "start replays what its write-ahead log holds)",
        { path: this.path, ms: Math.round(performance.now() - started) },
      );
    }
    worker.terminate();
  }

  /** Commits what is pending, has the worker close its connection, and closes the database. */
  close(): void {
    if (this.#closed) return;
    clearTimeout(this.#timer);
    clearTimeout(this.#workerDue);
    clearTimeout(this.#retry);
    this.commit();
    if (this.#pending.size > 0) {
      log.server.error("Closing {path} with {count} records not written: the disk kept failing", {
        path: this.path,
        count: this.#pending.size,
      });
    }
    this.#closed = true;
    this.#closeWorker();
    Atomics.store(this.#turn, 0, 0);
    this.#compacted(undefined);
    this.#backedUp(new Error("the database was closed"));
    // Everything into the database file itself, the write-ahead log emptied: SQLite does so when the last connection
    // closes, which ours is once the worker has closed its own. Asked for here too, in case the worker was ended
    // without closing: a copy of the file alone after a clean stop (a backup) then holds every record. Not waited
    // for: a compaction the worker was in when it ended may hold its lock a while, and then the log stays for the
    // next open to replay, as before.
    try {
      this.#db.exec("PRAGMA busy_timeout = 0; PRAGMA wal_checkpoint(TRUNCATE)");
    } catch { /* the next open replays the log */ }
    this.#db.close();
    _heldHere.delete(this.#held);
    this.#lock.close();
  }
}
