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
import { makePrivateDirectory, PRIVATE_FILE_MODE } from "../private_files.ts";

/** What a restore did. */
export interface RestoreReport {
  /** Rows the restored database holds. */
  rows: number;
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

/** Whether `path` exists (whatever it is). */
function _exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/** The rows of the backup at `file`, once it is found to be a whole herd database; else a {@linkcode RestoreRefused}. */
function _checkBackup(file: string): number {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(file);
  } catch (error) {
    throw new RestoreRefused(`Cannot read the backup ${file}: ${(error as Error).message}`);
  }
  if (!info.isFile) throw new RestoreRefused(`The backup ${file} is not a file`);
  if (_exists(`${file}-wal`) && Deno.statSync(`${file}-wal`).size > 0) {
    throw new RestoreRefused(
      `The backup ${file} has a write-ahead log beside it (${file}-wal): it is a database in use, not a backup. ` +
        "Take one with deno task backup",
    );
  }
  let db: DatabaseSync;
  try {
    db = new DatabaseSync(file, { readOnly: true });
  } catch (error) {
    throw new RestoreRefused(`The backup ${file} cannot be opened as a database: ${(error as Error).message}`);
  }
  try {
    const check = (db.prepare("PRAGMA quick_check").get() as { quick_check: string } | undefined)?.quick_check;
    if (check !== "ok") throw new RestoreRefused(`The backup ${file} is damaged (quick_check: ${check})`);
    const table = db.prepare("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'records'").get();
    if (table === undefined) throw new RestoreRefused(`The backup ${file} is not a herd server's database`);
    return (db.prepare("SELECT count(*) AS n FROM records").get() as { n: number }).n;
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
  if (file === database) throw new RestoreRefused(`${file} is ${name}'s own database`);
  const rows = _checkBackup(file);
  makePrivateDirectory(config.dataDir);
  using lock = Deno.openSync(`${database}.lock`, { read: true, write: true, create: true, mode: PRIVATE_FILE_MODE });
  if (!lock.tryLockSync(true)) {
    throw new RestoreRefused(`${name} is running (it holds ${database}.lock): stop it first, then restore`);
  }
  const stamp = new Date().toISOString().replaceAll(/[-:]/g, "").replace(".", "");
  const temporary = `${database}.restoring-${stamp}`;
  try {
    // Written whole and synced under another name first: a restore cut short leaves the database as it was.
    Deno.copyFileSync(file, temporary);
    Deno.chmodSync(temporary, PRIVATE_FILE_MODE);
    using out = Deno.openSync(temporary, { read: true, write: true });
    out.syncSync();
  } catch (error) {
    try {
      Deno.removeSync(temporary);
    } catch { /* never made */ }
    throw error;
  }
  // What was there is kept, never deleted; its -wal with it (after a crash it holds commits of that file alone).
  let kept: string | undefined;
  for (const suffix of ["-wal", "-shm", ""]) {
    if (!_exists(`${database}${suffix}`)) continue;
    kept = `${database}.before-restore-${stamp}`;
    Deno.renameSync(`${database}${suffix}`, `${kept}${suffix}`);
  }
  Deno.renameSync(temporary, database);
  return { rows, database, kept };
}
