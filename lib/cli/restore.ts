/**
 * `deno task restore NAME FILE`: puts a backup (`deno task backup`, or any
 * copy of a server's database) in place as server NAME's database, while
 * that server is stopped. The copy is checked first (SQLite's `quick_check`
 * and the herd's table); the database it replaces, with its `-wal` and
 * `-shm`, is kept beside it under a name of its own, never deleted; the new
 * file is written under a temporary name, synced and renamed into place, so
 * a restore cut short leaves the old database as it was. The server's lock
 * (`<Name>.db.lock`, the one a running server holds) is held throughout: a
 * running server is refused, and none can start meanwhile.
 */

import { DatabaseSync } from "node:sqlite";
import type { HerdConfig } from "../config/config.ts";
import { fileTimestamp, makePrivateDirectory, pathExists, PRIVATE_FILE_MODE } from "../private_files.ts";
import { removeStoppedRestores, rowsByServer } from "../store/record_log.ts";

/** What a restore did. */
export interface RestoreReport {
  /** Rows the restored database holds. */
  rows: number;
  /**
   * Rows naming servers the config has neither in `servers` nor in
   * `retiredServers`, by server: the server deletes them when it starts.
   */
  unknown: Map<string, number>;
  /** The database path it was restored to. */
  database: string;
  /** Where the database it replaced is kept (its `-wal` and `-shm` beside it), if there was one. */
  kept: string | undefined;
}

/** Why a restore was not done: the message says what to do. */
export class RestoreRefused extends Error {
  /** The error's name. */
  override name = "RestoreRefused";
}

/**
 * The rows of `copy` (of the backup `file`), by the server each names, once
 * it is found to be a whole herd database; else a {@linkcode RestoreRefused}.
 */
export function checkBackup(copy: string, file: string): Map<string, number> {
  let db: DatabaseSync;
  try {
    db = new DatabaseSync(copy);
  } catch (error) {
    throw new RestoreRefused(`The backup ${file} cannot be opened as a database: ${(error as Error).message}`);
  }
  try {
    const check = (db.prepare("PRAGMA quick_check").get() as { quick_check: string } | undefined)?.quick_check;
    if (check !== "ok") throw new RestoreRefused(`The backup ${file} is damaged (quick_check: ${check})`);
    const table = db.prepare("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'records'").get();
    if (table === undefined) throw new RestoreRefused(`The backup ${file} is not a herd server's database`);
    try {
      // Every row read as the server reads them at start: a copy it would refuse is not put in place.
      return rowsByServer(db);
    } catch (error) {
      if (!(error instanceof RangeError)) throw error;
      throw new RestoreRefused(`The backup ${file} holds ${error.message}: the server would refuse to start on it`);
    }
  } catch (error) {
    if (error instanceof RestoreRefused) throw error;
    throw new RestoreRefused(`The backup ${file} cannot be read as a database: ${(error as Error).message}`);
  } finally {
    db.close();
  }
}

/**
 * Restores server `name` of `config` from the backup at `file` (absolute).
 * Throws a {@linkcode RestoreRefused} saying why when the server is running,
 * or the backup is missing, damaged or not a herd database.
 */
export function restoreServer(config: HerdConfig, name: string, file: string): RestoreReport {
  const database = `${config.dataDir}/${name}.db`;
  let source: string;
  try {
    source = Deno.realPathSync(file);
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) {
      throw new RestoreRefused(`Deno lets no program read ${file} without --allow-all: copy it elsewhere first`);
    }
    throw new RestoreRefused(`Cannot read the backup ${file}: ${(error as Error).message}`);
  }
  // The file itself: SQLite would look for a -wal beside the link's target, not beside the link.
  if (source !== file) throw new RestoreRefused(`${file} is a link to ${source}: give the path of the file itself`);
  const same = (a: string, b: string) => {
    try {
      const [x, y] = [Deno.statSync(a), Deno.statSync(b)];
      return x.dev === y.dev && x.ino === y.ino;
    } catch {
      return false;
    }
  };
  if (!Deno.statSync(file).isFile) throw new RestoreRefused(`The backup ${file} is not a file`);
  if (same(file, database)) throw new RestoreRefused(`${file} is ${name}'s own database`);
  if (pathExists(`${source}-wal`) && Deno.statSync(`${source}-wal`).size > 0) {
    throw new RestoreRefused(
      `The backup ${file} has a write-ahead log beside it (${source}-wal): it is a database in use, not a backup. ` +
        "Take one with deno task backup",
    );
  }
  makePrivateDirectory(config.dataDir);
  using lock = Deno.openSync(`${database}.lock`, { read: true, write: true, create: true, mode: PRIVATE_FILE_MODE });
  if (!lock.tryLockSync(true)) {
    throw new RestoreRefused(`${name} is running (it holds ${database}.lock): stop it first, then restore`);
  }
  // Our pid where a server looks for the holder's, for a server started meanwhile to name (record_log.ts).
  lock.truncateSync(0);
  lock.writeSync(new TextEncoder().encode(`${Deno.pid}\n`));
  // Left by a restore stopped half-way (Ctrl-C): under the lock, none is in use.
  removeStoppedRestores(database);
  const stamp = fileTimestamp();
  const temporary = `${database}.restoring-${stamp}`;
  let rows: Map<string, number>;
  try {
    // 0600 from the start; the bytes checked are the bytes put in place.
    {
      using out = Deno.openSync(temporary, { write: true, createNew: true, mode: PRIVATE_FILE_MODE });
      using input = Deno.openSync(file, { read: true });
      const buffer = new Uint8Array(1 << 20);
      for (let n; (n = input.readSync(buffer)) !== null;) {
        for (let at = 0; at < n;) at += out.writeSync(buffer.subarray(at, n));
      }
      out.syncSync();
    }
    rows = checkBackup(temporary, file);
  } catch (error) {
    for (const suffix of ["", "-wal", "-shm"]) {
      try {
        Deno.removeSync(`${temporary}${suffix}`);
      } catch { /* never made */ }
    }
    throw error;
  }
  // The database first: cut short after it, its -wal left alone makes the server refuse rather than start without it.
  let kept: string | undefined;
  for (const suffix of ["", "-wal", "-shm"]) {
    if (!pathExists(`${database}${suffix}`)) continue;
    kept = `${database}.before-restore-${stamp}`;
    Deno.renameSync(`${database}${suffix}`, `${kept}${suffix}`);
  }
  Deno.renameSync(temporary, database);
  using directory = Deno.openSync(config.dataDir, { read: true });
  directory.syncSync();
  const known = new Set([...config.servers.keys(), ...config.retiredServers]);
  const unknown = new Map([...rows].filter(([server]) => !known.has(server)));
  return { rows: [...rows.values()].reduce((a, b) => a + b, 0), unknown, database, kept };
}
