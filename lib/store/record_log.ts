/**
 * The store on disk: an append-only table of AT lines in an embedded
 * SQLite database (`node:sqlite`, WAL). Records stored in one turn of the
 * event loop are committed together (group commit, scheduled with
 * `setImmediate`), so pipelined and concurrent IAMATs share one commit;
 * callers that must not reply before the record is on disk await
 * {@linkcode RecordLog.append}. With `synchronous=NORMAL` a commit is in
 * the WAL file when it returns: it survives the process being killed, not
 * the machine losing power. Superseded lines are compacted away once they
 * outnumber the live ones. The WAL is copied into the database
 * (checkpointed) by a worker thread, not by the commit that fills it: a
 * checkpoint syncs the disk, which would stall the server for milliseconds.
 */

import { DatabaseSync, type StatementSync } from "node:sqlite";
import { setImmediate } from "node:timers";
import { log } from "../logging.ts";
import { compareRecords, type LocationRecord, parseRecordFields, splitFields } from "../protocol.ts";

/** Longest a record written behind waits for its commit, in milliseconds. */
export const WRITE_BEHIND_MS = 20;

/** How often the checkpointer thread copies the WAL into the database, in milliseconds. */
export const CHECKPOINT_INTERVAL_MS = 200;

/**
 * The checkpointer: runs in a worker thread, made from this function's
 * source (a blob URL, so it needs no read permission on our code and a
 * compiled binary carries it). It opens its own connection to the database
 * and checkpoints the WAL every interval. A PASSIVE checkpoint never waits
 * on the server's writes, nor they on it; its syncs of the disk happen on
 * this thread, not on the event loop, where they stalled commits
 * (docs/PERFORMANCE.md).
 * Self-contained on purpose: nothing from outside the function exists there.
 */
function _checkpointer(): void {
  const scope = self as unknown as Worker;
  // deno-lint-ignore no-explicit-any
  let db: any;
  scope.onmessage = async (event: MessageEvent) => {
    const { path, intervalMs } = event.data as { path: string; intervalMs: number };
    try {
      const { DatabaseSync } = await import("node:sqlite");
      db = new DatabaseSync(path);
      db.exec("PRAGMA synchronous = NORMAL");
      scope.postMessage({ ready: true });
    } catch (error) {
      scope.postMessage({ error: (error as Error)?.message ?? String(error) });
      return;
    }
    let failed = false;
    setInterval(() => {
      try {
        db.exec("PRAGMA wal_checkpoint(PASSIVE)");
        failed = false;
      } catch (error) {
        if (!failed) scope.postMessage({ error: (error as Error)?.message ?? String(error) });
        failed = true;
      }
    }, intervalMs);
  };
}

const _CHECKPOINTER_URL = URL.createObjectURL(
  new Blob([`(${_checkpointer.toString()})();`], { type: "text/javascript" }),
);

/** A database that cannot be opened or read: the server must not start on it. */
export class CorruptDatabaseError extends Error {
  /** The error's name. */
  override name = "CorruptDatabaseError";
}

/** An append-only, group-committed log of records. */
export class RecordLog {
  /** The database file. */
  readonly path: string;
  #db: DatabaseSync;
  #append: StatementSync;
  #pending = new Map<string, string>();
  #committed: Promise<void> | undefined;
  #release: (() => void) | undefined;
  #rows = 0;
  #closed = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #checkpointer: Worker | undefined;
  #checkpointerDue: ReturnType<typeof setTimeout> | undefined;

  private constructor(path: string, db: DatabaseSync) {
    this.path = path;
    this.#db = db;
    this.#append = db.prepare("INSERT INTO records (line) SELECT value FROM json_each(?)");
  }

  /**
   * Hands checkpoints to the checkpointer thread. Until it says it is
   * ready, and again if it fails, SQLite checkpoints in the commits as it
   * does by default, so the WAL never grows without bound.
   */
  #startCheckpointer(): void {
    const worker = new Worker(_CHECKPOINTER_URL, { type: "module", name: `checkpointer ${this.path}` });
    this.#checkpointer = worker;
    const failed = (error: string | undefined) => {
      if (this.#closed) return;
      log.server.warning("Checkpointing {path} in the background failed: {error}; the commits checkpoint it instead", {
        path: this.path,
        error,
      });
      this.#db.exec("PRAGMA wal_autocheckpoint = 1000");
    };
    worker.onmessage = (event: MessageEvent) => {
      const message = event.data as { ready?: boolean; error?: string };
      if (!message.ready) failed(message.error);
      else if (!this.#closed) this.#db.exec("PRAGMA wal_autocheckpoint = 0");
    };
    worker.onerror = (event: ErrorEvent) => {
      event.preventDefault();
      failed(event.message);
    };
    worker.postMessage({ path: this.path, intervalMs: CHECKPOINT_INTERVAL_MS });
  }

  /**
   * Opens (creating if missing) the database at `path` and reads every
   * record in it, greatest per client. Throws a {@linkcode CorruptDatabaseError}
   * naming the file when it cannot be opened, checked or read.
   */
  static open(path: string): { log: RecordLog; records: LocationRecord[] } {
    const directory = path.slice(0, path.lastIndexOf("/"));
    if (directory !== "") Deno.mkdirSync(directory, { recursive: true });
    let db: DatabaseSync | undefined;
    try {
      db = new DatabaseSync(path);
      // A lock held a moment by the checkpointer thread (of an earlier open, closing) is waited for, not an error.
      db.exec("PRAGMA busy_timeout = 2000; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL");
      const check = db.prepare("PRAGMA quick_check").get() as { quick_check: string } | undefined;
      if (check?.quick_check !== "ok") throw new Error(`integrity check says ${JSON.stringify(check?.quick_check)}`);
      db.exec("CREATE TABLE IF NOT EXISTS records (line TEXT NOT NULL)");
      const recordLog = new RecordLog(path, db);
      const records = recordLog.#load();
      // Started once the caller is done starting (listening, for a server): a thread is not free on two cores.
      recordLog.#checkpointerDue = setTimeout(() => recordLog.#startCheckpointer(), 0);
      return { log: recordLog, records };
    } catch (error) {
      try {
        db?.close();
      } catch { /* already failed */ }
      if (error instanceof CorruptDatabaseError) throw error;
      throw new CorruptDatabaseError(
        `Cannot use the database ${path}: ${(error as Error).message}. The server will not start on it, ` +
          "so nothing is silently lost: move the file aside to start empty (neighbours fill the store back in), " +
          "or restore it from a backup.",
      );
    }
  }

  #load(): LocationRecord[] {
    const latest = new Map<string, LocationRecord>();
    let row = 0;
    for (const { line } of this.#db.prepare("SELECT line FROM records").iterate() as Iterable<{ line: unknown }>) {
      row++;
      const record = typeof line === "string" ? parseRecordFields(splitFields(line)) : null;
      if (record === null) {
        throw new CorruptDatabaseError(`The database ${this.path} holds a row that is not an AT record (row ${row})`);
      }
      const current = latest.get(record.clientId);
      if (current === undefined || compareRecords(record, current) > 0) latest.set(record.clientId, record);
    }
    this.#rows = row;
    const records = [...latest.values()];
    if (this.#rows > 2 * records.length + 1000) this.#compact(records.map((record) => record.line));
    return records;
  }

  /** Lines in the table, superseded ones included. */
  get rows(): number {
    return this.#rows;
  }

  /**
   * Queues `record` for the next group commit and resolves once it is in
   * the database (or the commit failed, which is logged: the record is
   * still in memory and on the neighbours).
   */
  append(record: LocationRecord): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#pending.set(record.clientId, record.line);
    if (this.#committed === undefined) {
      this.#committed = new Promise<void>((resolve) => this.#release = resolve);
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

  /** Commits what is pending now. */
  commit(): void {
    const release = this.#release;
    this.#committed = undefined;
    this.#release = undefined;
    if (this.#pending.size > 0 && !this.#closed) {
      const lines = [...this.#pending.values()];
      try {
        this.#db.exec("BEGIN");
        this.#append.run(JSON.stringify(lines));
        this.#db.exec("COMMIT");
        this.#pending.clear();
        this.#rows += lines.length;
      } catch (error) {
        try {
          this.#db.exec("ROLLBACK");
        } catch { /* no transaction left */ }
        // Kept pending (one line per client at most) and retried with the next commit.
        log.server.error("Writing {count} records to {path} failed: {error}", {
          count: lines.length,
          path: this.path,
          error: (error as Error).message,
        });
      }
    }
    release?.();
  }

  /** Rewrites the table to hold exactly `lines` once superseded lines outnumber the live ones. */
  compactIfWorthIt(lines: () => Iterable<string>, live: number): void {
    if (this.#rows > 2 * live + 1000) this.#compact([...lines()]);
  }

  #compact(lines: string[]): void {
    const started = performance.now();
    try {
      this.#db.exec("BEGIN");
      this.#db.exec("DELETE FROM records");
      this.#append.run(JSON.stringify(lines));
      this.#db.exec("COMMIT");
      log.server.info("Compacted {path}: {before} rows to {after} in {ms} ms", {
        path: this.path,
        before: this.#rows,
        after: lines.length,
        ms: Math.round(performance.now() - started),
      });
      this.#rows = lines.length;
    } catch (error) {
      try {
        this.#db.exec("ROLLBACK");
      } catch { /* no transaction left */ }
      log.server.error("Compacting {path} failed: {error}", { path: this.path, error: (error as Error).message });
    }
  }

  /** Commits what is pending and closes the database. */
  close(): void {
    if (this.#closed) return;
    clearTimeout(this.#timer);
    clearTimeout(this.#checkpointerDue);
    this.commit();
    this.#closed = true;
    this.#checkpointer?.terminate();
    this.#db.close();
  }
}
