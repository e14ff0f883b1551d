/**
 * `deno task backup [NAME ...]`: asks each named server (every server with
 * an admin port when none is named) to copy its database while it serves
 * (`POST /backup` on its admin port; the copy is made by the server, in
 * `<dataDir>/backups` on its own host), one server after the other, and
 * prints where each copy is. Exits 0 when every copy was made.
 */

import { adminUrl, fetchFailure, unauthorizedMessage } from "../admin/ask.ts";
import type { BackupResult } from "../admin/server.ts";
import { type HerdConfig, netAddress } from "../config/config.ts";

/** How long one server may take to answer, in milliseconds: a copy of a large database takes seconds. */
const _TIMEOUT_MS = 120_000;

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

/** Asks server `name` for a backup; the line to print, and whether the copy was made. */
export async function askBackup(
  config: HerdConfig,
  name: string,
  token: string | undefined,
): Promise<{ line: string; ok: boolean }> {
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
    };
  }
  const error = (body as { error?: unknown } | undefined)?.error;
  if (typeof error === "string") return { line: `${name}: not backed up: ${error}`, ok: false };
  return {
    line: `${name}: HTTP ${response.status}: not a herd server's answer (another program on its adminPort?)`,
    ok: false,
  };
}
