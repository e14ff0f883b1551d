/**
 * `deno task backup [NAME ...] [--out DIR]`: asks each named server (every
 * server with an admin port when none is named) to copy its database while
 * it serves (`POST /backup` on its admin port; the copy is made by the
 * server, in `<dataDir>/backups` on its own host), one server after the
 * other, and prints where each copy is. With `--out DIR`, each copy is then
 * fetched into `DIR` here (`GET /backups/<file>`, which needs the admin
 * token), checked (its size, SQLite's `quick_check`, its rows) and only then
 * renamed into place and removed from the server's host. Exits 0 when every
 * copy was made (and fetched).
 */

import { adminUrl, fetchFailure, unauthorizedMessage } from "../admin/ask.ts";
import type { BackupResult } from "../admin/server.ts";
import { ADMIN_TOKEN_VARIABLE, type HerdConfig, netAddress } from "../config/config.ts";
import { makePrivateDirectory, pathExists, PRIVATE_FILE_MODE } from "../private_files.ts";
import { checkBackup } from "./restore.ts";
import { dirname, resolve } from "node:path";

/** How long one server may take to answer, in milliseconds: a copy of a large database takes seconds. */
const _TIMEOUT_MS = 120_000;
/** How long a copy being fetched may send nothing before the fetch is given up, in milliseconds. */
const _FETCH_IDLE_MS = 30_000;

/** The names `backup` works on: those given (each must have an admin port), or every server that has one. */
export function backupNames(config: HerdConfig, names: string[]): { names: string[] } | { error: string } {
  if (names.length === 0) {
    const withAdmin = [...config.servers].filter(([, server]) => server.adminPort !== undefined).map(([n]) => n);
    if (withAdmin.length === 0) {
      return { error: "No server has an adminPort: a backup is asked of a server over its admin port" };
    }
    return { names: withAdmin };
  }
  for (const name of names) {
    if (config.servers.get(name)?.adminPort === undefined) {
      return {
        error: `${name} has no adminPort in ${config.path}: a backup is asked of a server over its admin port ` +
          `(or copy <dataDir>/${name}.db after stopping it)`,
      };
    }
  }
  return { names };
}

/** The admin addresses (`host:port`) the backup of `names` reaches. */
export function backupAddresses(config: HerdConfig, names: string[]): string[] {
  return names.map((name) => {
    const server = config.servers.get(name)!;
    return netAddress(server.host, server.adminPort!);
  });
}

function _isBackupResult(value: unknown): value is BackupResult {
  const result = value as BackupResult;
  return typeof value === "object" && value !== null && typeof result.path === "string" &&
    typeof result.rows === "number" && typeof result.bytes === "number" && typeof result.ms === "number";
}

/** What asking a server for a backup came to: the line to print, and the copy when it was made. */
export interface BackupAnswer {
  /** What to print. */
  line: string;
  /** Whether the copy was made. */
  ok: boolean;
  /** The copy, when it was made. */
  result?: BackupResult;
}

/** The error a herd server's JSON answer gives, if it is one. */
function _answerError(text: string): string | undefined {
  try {
    const error = (JSON.parse(text) as { error?: unknown } | undefined)?.error;
    return typeof error === "string" ? error : undefined;
  } catch {
    return undefined;
  }
}

/** Asks server `name` for a backup; the line to print, and the copy when it was made. */
export async function askBackup(
  config: HerdConfig,
  name: string,
  token: string | undefined,
): Promise<BackupAnswer> {
  const server = config.servers.get(name)!;
  let response: Response;
  try {
    response = await fetch(adminUrl(server.host, server.adminPort!, "/backup"), {
      method: "POST",
      headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
      signal: AbortSignal.timeout(_TIMEOUT_MS),
    });
  } catch (error) {
    const failed = fetchFailure(error);
    if (failed.failure === "timeout") return { line: `${name}: no answer within ${_TIMEOUT_MS / 1000} s`, ok: false };
    return { line: `${name}: not reachable (${failed.detail})`, ok: false };
  }
  const text = await response.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  if (response.status === 401) {
    return { line: `${name}: ${unauthorizedMessage(token)}`, ok: false };
  }
  if (response.ok && _isBackupResult(body)) {
    const { path, rows, bytes, ms } = body;
    return {
      line:
        `${name}: ${rows.toLocaleString("en-US")} ${rows === 1 ? "row" : "rows"}, ${
          bytes.toLocaleString("en-US")
        } bytes, in ${ms} ms: ` +
        `${path}`,
      ok: true,
      result: body,
    };
  }
  const error = (body as { error?: unknown } | undefined)?.error;
  if (typeof error === "string") return { line: `${name}: not backed up: ${error}`, ok: false };
  return {
    line: `${name}: HTTP ${response.status}: not a herd server's answer (another program on its adminPort?)`,
    ok: false,
  };
}

/**
 * The directory `--out` names (`given`, relative to `cwd`: where `deno task`
 * runs, the project's directory), normalised; or why it is refused: empty,
 * the project's directory itself or the root, however it is written
 * (`./`, `/path/to/project/.`, `//`). A copy of every client's location does
 * not belong in the checkout, nor at the top of the filesystem.
 */
export function backupOutDirectory(given: string, cwd: string): { path: string } | { error: string } {
  const shown = given === "" ? "''" : given;
  if (given === "") return { error: `--out '': give a directory of its own for the copies` };
  const path = resolve(cwd, given);
  if (path === "/") {
    return {
      error: `--out ${shown} is the root directory: give a directory of its own for the copies ` +
        "(each holds every client's location)",
    };
  }
  if (path === resolve(cwd)) {
    return {
      error: `--out ${shown} is the project's directory (${path}, where deno task runs): give a directory of its own ` +
        "for the copies (each holds every client's location, which does not belong in the checkout; a relative " +
        "path is taken from there)",
    };
  }
  return { path };
}

/**
 * Why the copies cannot be fetched into `out`, if they cannot: no admin
 * token (a server sends a copy only to a request with it); or `out` (an
 * absolute path) not a directory we can write, nor one we can make (it is
 * made 0700 when missing, its parent existing, and its parent synced).
 * `warn` is told of an `out` that other users can enter.
 */
export function backupOutProblem(
  out: string,
  token: string | undefined,
  warn: (message: string) => void,
): string | undefined {
  if (token === undefined) {
    return `--out fetches each copy over the admin port, and a server sends one only with its bearer token: set ` +
      `${ADMIN_TOKEN_VARIABLE} (in the environment or the .env next to the config) to the servers' token`;
  }
  try {
    if (!pathExists(out)) {
      const parent = dirname(out);
      if (!pathExists(parent)) return `Cannot fetch the copies into ${out}: ${parent} does not exist`;
      makePrivateDirectory(out);
      // The new directory's entry, before any copy is put in it and removed from its server.
      using directory = Deno.openSync(parent, { read: true });
      directory.syncSync();
    } else {
      if (!Deno.statSync(out).isDirectory) return `Cannot fetch the copies into ${out}: it is not a directory`;
      const open = makePrivateDirectory(out);
      if (open !== undefined) {
        warn(
          `Warning: ${out} can be entered by other users (mode ${open.mode}); the copies (0600) hold every client's ` +
            "location: make it private (chmod 700)",
        );
      }
    }
    // Written to before any copy is asked for: a read-only or full directory is found now, not after the copy.
    const probe = `${out}/.herd-write-probe-${Deno.pid}`;
    Deno.writeFileSync(probe, new Uint8Array(1), { mode: PRIVATE_FILE_MODE });
    Deno.removeSync(probe);
  } catch (error) {
    return `Cannot fetch the copies into ${out}: ${(error as Error).message}`;
  }
  return undefined;
}

/** What fetching a copy came to. */
export interface FetchedBackup {
  /** Where the copy is now, here. */
  path: string;
  /** How long fetching and checking it took, in milliseconds. */
  ms: number;
  /** Why it is still on the server's host too, if removing it there failed. */
  notRemoved?: string;
}

/** Why a copy could not be fetched; the copy stays on the server's host. */
export class FetchFailed extends Error {
  /** The error's name. */
  override name = "FetchFailed";
}

/** Writes all of `chunk` to `file`. */
async function _writeAll(file: Deno.FsFile, chunk: Uint8Array): Promise<void> {
  for (let at = 0; at < chunk.length;) at += await file.write(chunk.subarray(at));
}

/** Runs `step`, a local file operation of fetching a copy; its failure a {@linkcode FetchFailed} naming `what`. */
async function _local<T>(what: string, step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (error) {
    if (error instanceof FetchFailed) throw error;
    throw new FetchFailed(`cannot ${what}: ${(error as Error).message}`);
  }
}

/**
 * Fetches the copy `result` that server `name` made into the directory
 * `out` (which exists): written as `<file>.partial` (0600), synced, its size
 * and rows compared with what the server reported and checked by SQLite,
 * then renamed to its own name; then removed from the server's host. A
 * {@linkcode FetchFailed} saying why when it could not be fetched or was
 * not whole, or `stop` was aborted (Ctrl-C): nothing is left in `out`
 * then, and the server keeps its copy.
 */
export async function fetchBackup(
  config: HerdConfig,
  name: string,
  token: string,
  result: BackupResult,
  out: string,
  stop?: AbortSignal,
): Promise<FetchedBackup> {
  const started = performance.now();
  const server = config.servers.get(name)!;
  const file = result.path.slice(result.path.lastIndexOf("/") + 1);
  const target = `${out}/${file}`;
  if (pathExists(target)) throw new FetchFailed(`${target} exists already`);
  const url = adminUrl(server.host, server.adminPort!, `/backups/${encodeURIComponent(file)}`);
  const headers = { authorization: `Bearer ${token}` };
  const partial = `${target}.partial`;
  const idle = new AbortController();
  let timer = setTimeout(() => idle.abort(), _FETCH_IDLE_MS);
  const stillGoing = () => {
    clearTimeout(timer);
    timer = setTimeout(() => idle.abort(), _FETCH_IDLE_MS);
  };
  const signal = stop === undefined ? idle.signal : AbortSignal.any([idle.signal, stop]);
  const failure = (error: unknown) => stop?.aborted ? "interrupted" : _fetchError(error);
  let made = false;
  try {
    let response: Response;
    try {
      response = await fetch(url, { headers, signal });
    } catch (error) {
      throw new FetchFailed(`not fetched: ${failure(error)}`);
    }
    if (!response.ok) {
      const text = await response.text();
      if (response.status === 401) throw new FetchFailed(`not fetched: ${unauthorizedMessage(token)}`);
      throw new FetchFailed(`not fetched: HTTP ${response.status}: ${_answerError(text) ?? text.trim()}`);
    }
    let received = 0;
    const reader = response.body!.getReader();
    try {
      using output = await _local(
        `write ${partial}`,
        () => Deno.open(partial, { write: true, createNew: true, mode: PRIVATE_FILE_MODE }),
      );
      made = true;
      while (true) {
        let next: ReadableStreamReadResult<Uint8Array>;
        try {
          next = await reader.read();
        } catch (error) {
          throw new FetchFailed(`fetch cut short after ${received} of ${result.bytes} bytes: ${failure(error)}`);
        }
        if (next.done) break;
        stillGoing();
        received += next.value.length;
        // Never more than the server said: a copy is not left to fill the disk here.
        if (received > result.bytes) {
          throw new FetchFailed(`the server sent more than the ${result.bytes} bytes it made`);
        }
        await _local(`write ${partial}`, () => _writeAll(output, next.value));
      }
      if (received !== result.bytes) {
        throw new FetchFailed(`fetched ${received} bytes where the server made ${result.bytes}`);
      }
      await _local(`sync ${partial}`, () => output.sync());
    } finally {
      await reader.cancel().catch(() => {});
    }
    let rows: number;
    try {
      rows = [...checkBackup(partial, target).values()].reduce((a, b) => a + b, 0);
    } catch (error) {
      throw new FetchFailed(`the copy fetched is not whole: ${(error as Error).message}`);
    }
    if (rows !== result.rows) {
      throw new FetchFailed(`the copy fetched has ${rows} rows where the server's has ${result.rows}`);
    }
    if (stop?.aborted) throw new FetchFailed("interrupted");
    await _local(`rename ${partial} to ${target}`, () => Deno.rename(partial, target));
    made = false;
    await _local(`sync ${out}`, async () => {
      using directory = await Deno.open(out, { read: true });
      await directory.sync();
    });
  } finally {
    clearTimeout(timer);
    if (made) {
      for (const suffix of ["", "-journal"]) {
        try {
          await Deno.remove(`${partial}${suffix}`);
        } catch { /* never made */ }
      }
    }
  }
  const ms = Math.round(performance.now() - started);
  // Fetched, whole, synced: the server's copy is no longer needed.
  try {
    const response = await fetch(url, { method: "DELETE", headers, signal: AbortSignal.timeout(_TIMEOUT_MS) });
    const text = await response.text();
    if (!response.ok) {
      return { path: target, ms, notRemoved: `HTTP ${response.status}: ${_answerError(text) ?? text.trim()}` };
    }
  } catch (error) {
    return { path: target, ms, notRemoved: _fetchError(error) };
  }
  return { path: target, ms };
}

/** What a fetch that threw met, in words. */
function _fetchError(error: unknown): string {
  if (error instanceof DOMException && error.name === "AbortError") {
    return `nothing came for ${_FETCH_IDLE_MS / 1000} s`;
  }
  const failed = fetchFailure(error);
  return failed.failure === "timeout" ? `no answer within ${_TIMEOUT_MS / 1000} s` : failed.detail;
}
