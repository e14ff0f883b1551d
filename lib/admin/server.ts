/**
 * A server's admin endpoint, on its own port (`servers.<Name>.adminPort`),
 * served by `net/http_server.ts` (a connection cap and deadlines):
 * `GET /metrics` (Prometheus text), `GET /healthz`
 * (200 while the server accepts clients and can commit, 503 with the reason
 * otherwise), `GET /status` (JSON) and `GET /density` (where clients are, as
 * counts per grid cell), and `POST /backup` (a copy of the server's
 * database, taken while it serves, into `<dataDir>/backups`; JSON of where
 * and how big; refused to a request from a web page, one with an `Origin`,
 * so that a page cannot fill the disk through a visitor's browser);
 * `GET /backups` lists the copies kept there, and `GET /backups/<file>`
 * and `DELETE /backups/<file>` send one and remove it, only to a request
 * with the bearer token (a copy holds every client's location, which the
 * other endpoints never show), so never on a server without one. A
 * request whose `Host` names another site is
 * refused (403), as the dashboard refuses it (DNS rebinding,
 * `lib/net/host_header.ts`). On a host other than loopback every request
 * needs `Authorization: Bearer <HERD_ADMIN_TOKEN>`, and without a token set
 * the endpoint does not start.
 */

import { ADMIN_TOKEN_VARIABLE, isLoopback } from "../config/config.ts";
import {
  BAD_HOST_MESSAGE,
  foreignHostMessage,
  hostHeaderAllowed,
  requestPath,
  sameSecret,
} from "../net/host_header.ts";
import type { BackupFile, OpenBackup } from "./backup_files.ts";
import type { DensityReport } from "./density.ts";
import { registry } from "./metrics.ts";
import { ResilientHttpServer } from "../net/http_server.ts";
import { log } from "../logging.ts";

/** Whether the server is fit for clients, and why not. */
export interface Health {
  /** True while it accepts clients and can commit. */
  ok: boolean;
  /** Why not (starting, stopping, cannot commit), or "ok". */
  reason: string;
}

/** A backup taken (`POST /backup`). */
export interface BackupResult {
  /** The copy's path, absolute. */
  path: string;
  /** Rows it holds. */
  rows: number;
  /** Its size in bytes. */
  bytes: number;
  /** How long it took, in milliseconds. */
  ms: number;
}

/**
 * A backup not taken because of the server's state: not running, another
 * one being taken (HTTP 409), or too little free space for it (507); or a
 * copy not sent or removed: none by that name (404), or being written (409).
 */
export class BackupRefused extends Error {
  /** The error's name. */
  override name = "BackupRefused";
  /** The HTTP status that answers it. */
  readonly status: 404 | 409 | 507;

  /** A refusal saying `message`, answered with `status`. */
  constructor(message: string, status: 404 | 409 | 507 = 409) {
    super(message);
    this.status = status;
  }
}

/** What the admin endpoint reads of its server. */
export interface AdminSource {
  /** Copies the database into the backup directory (`POST /backup`). */
  backup(): Promise<BackupResult>;
  /** The copies in the backup directory (`GET /backups`). */
  backups(): BackupFile[];
  /** One of them, opened to be sent (`GET /backups/<file>`); rejects with a {@linkcode BackupRefused} when none. */
  openBackup(file: string): Promise<OpenBackup>;
  /** Removes one of them (`DELETE /backups/<file>`); rejects with a {@linkcode BackupRefused} when none. */
  removeBackup(file: string): Promise<void>;
  /** Health now. */
  health(): Health;
  /** The status report (`GET /status`). */
  status(): unknown;
  /** The density report (`GET /density`). */
  density(): DensityReport;
}

/** Options for {@linkcode serveAdmin}. */
export interface AdminOptions {
  /** Host to listen on (the server's). */
  host: string;
  /** Port to listen on. */
  port: number;
  /** The bearer token every request must carry; needed on a host other than loopback. */
  token: string | undefined;
  /** The server it reports on. */
  source: AdminSource;
}

/** Whether `request` carries the bearer token (compared in constant time). */
function _authorized(request: Request, token: string | undefined): boolean {
  if (token === undefined) return true;
  const header = request.headers.get("authorization") ?? "";
  return sameSecret(header.startsWith("Bearer ") ? header.slice(7) : "", token);
}

function _json(value: unknown, status = 200): Response {
  return new Response(JSON.stringify(value, null, 2) + "\n", {
    status,
    headers: { "content-type": "application/json; charset=utf-8", "cache-control": "no-store" },
  });
}

/** Answers `POST /backup`. */
async function _backup(request: Request, source: AdminSource): Promise<Response> {
  await request.body?.cancel();
  // A browser sends Origin with every POST; the CLI and curl do not. A page may not have a visitor's browser take
  // backups (a form can post to 127.0.0.1 with our own Host), each a copy of the whole database on our disk.
  if (request.headers.has("origin")) {
    return _json({ error: "a backup is not taken for a web page (the request has an Origin header)" }, 403);
  }
  try {
    return _json(await source.backup());
  } catch (error) {
    return _json({ error: (error as Error).message }, error instanceof BackupRefused ? error.status : 500);
  }
}

/** Answers a request for one backup copy, `/backups/<file>`: sends it (GET, HEAD) or removes it (DELETE). */
async function _backupFile(
  request: Request,
  file: string,
  options: Pick<AdminOptions, "token" | "source">,
): Promise<Response> {
  await request.body?.cancel();
  if (request.method !== "GET" && request.method !== "HEAD" && request.method !== "DELETE") {
    return new Response("Only GET, HEAD or DELETE\n", { status: 405, headers: { allow: "GET, HEAD, DELETE" } });
  }
  // A copy is every client's ID and location: never to anybody who can merely reach a loopback port.
  if (options.token === undefined) {
    return _json({
      error:
        `a backup is sent or removed only with a bearer token, and this server has none: set ${ADMIN_TOKEN_VARIABLE} ` +
        "for it (a copy holds every client's location)",
    }, 403);
  }
  if (request.headers.has("origin")) {
    return _json({ error: "a backup is not sent or removed for a web page (the request has an Origin header)" }, 403);
  }
  try {
    if (request.method === "DELETE") {
      await options.source.removeBackup(file);
      return _json({ removed: file });
    }
    const { body, bytes } = await options.source.openBackup(file);
    if (request.method === "HEAD") await body.cancel();
    return new Response(request.method === "HEAD" ? null : body, {
      headers: {
        "content-type": "application/vnd.sqlite3",
        "content-length": String(bytes),
        "content-disposition": `attachment; filename="${file}"`,
        "cache-control": "no-store",
      },
    });
  } catch (error) {
    return _json({ error: (error as Error).message }, error instanceof BackupRefused ? error.status : 500);
  }
}

/** Answers one admin request. */
export function answerAdmin(
  request: Request,
  options: Pick<AdminOptions, "host" | "token" | "source">,
): Response | Promise<Response> {
  // A page from elsewhere reaching us through a name it rebound to our address sends its own name here. With a token
  // (off loopback) the page cannot give it, so any name is answered: Prometheus may scrape a server by a DNS name.
  if (options.token === undefined && !hostHeaderAllowed(request.headers.get("host"), options.host)) {
    return new Response(foreignHostMessage("The admin endpoint", options.host), {
      status: 403,
      headers: { "content-type": "text/plain; charset=utf-8" },
    });
  }
  if (!_authorized(request, options.token)) {
    return new Response("A bearer token is required (HERD_ADMIN_TOKEN)\n", {
      status: 401,
      headers: { "www-authenticate": 'Bearer realm="herd"' },
    });
  }
  const pathname = requestPath(request);
  if (pathname === undefined) {
    return new Response(BAD_HOST_MESSAGE, { status: 400, headers: { "content-type": "text/plain; charset=utf-8" } });
  }
  const { source } = options;
  if (pathname === "/backup") {
    if (request.method === "POST") return _backup(request, source);
    return new Response("Only POST\n", { status: 405, headers: { allow: "POST" } });
  }
  if (pathname.startsWith("/backups/")) return _backupFile(request, pathname.slice("/backups/".length), options);
  if (request.method !== "GET" && request.method !== "HEAD") {
    return new Response("Only GET\n", { status: 405, headers: { allow: "GET, HEAD" } });
  }
  switch (pathname) {
    case "/metrics":
      return new Response(registry.render(), {
        headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8", "cache-control": "no-store" },
      });
    case "/healthz": {
      const health = source.health();
      return new Response(`${health.reason}\n`, {
        status: health.ok ? 200 : 503,
        headers: { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" },
      });
    }
    case "/status":
      return _json(source.status());
    case "/density":
      return _json(source.density());
    case "/backups":
      return _json({ backups: source.backups() });
    default:
      return new Response("Not found: try /metrics, /healthz, /status, /density, /backups or POST /backup\n", {
        status: 404,
      });
  }
}

/**
 * Starts the admin endpoint. Throws, saying so plainly, when the host is
 * not loopback and no token is set: the endpoint shows how busy the herd is
 * and where its clients are, so it is never open to a network by default.
 */
export function serveAdmin(options: AdminOptions): ResilientHttpServer {
  if (!isLoopback(options.host) && (options.token === undefined || options.token === "")) {
    throw new Error(
      `The admin endpoint on ${options.host}:${options.port} faces the network and needs a bearer token: ` +
        `set ${ADMIN_TOKEN_VARIABLE} (in the environment or the .env next to the config)`,
    );
  }
  const token = options.token === "" ? undefined : options.token;
  // Accepting again after a failed accept (out of file descriptors): that must not end the server (net/http_server.ts).
  return new ResilientHttpServer({
    hostname: options.host,
    port: options.port,
    onFailure: (error, retryMs) =>
      log.server.error("The admin endpoint cannot accept connections: {error}; trying again in {ms} ms", {
        error: error.message,
        ms: retryMs,
      }),
    onRecovered: () => log.server.warning("The admin endpoint accepts again"),
  }, (request) => answerAdmin(request, { host: options.host, token, source: options.source }));
}
