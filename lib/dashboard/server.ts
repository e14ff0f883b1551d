/**
 * The dashboard server (`main.ts dashboard-run`, started by `deno task
 * dashboard` and `deno task herd`): it polls the servers' admin endpoints
 * ({@linkcode HerdPoller}) and serves, on 127.0.0.1 only, the page, its
 * stylesheet and script, and `/events`: server-sent events with each round
 * of status answers and each new density count. The page and everything it
 * loads come from this server; a strict Content-Security-Policy keeps it
 * that way, and a Host check keeps other sites' pages (DNS rebinding) out.
 */

import { createHmac } from "node:crypto";
import { ADMIN_TOKEN_VARIABLE, type HerdConfig, isLoopback } from "../config/config.ts";
import { DASHBOARD_HOST } from "./address.ts";
import { drawWorld } from "./map.ts";
import {
  BAD_HOST_MESSAGE,
  foreignHostMessage,
  hostHeaderAllowed,
  requestPath,
  sameSecret,
} from "../net/host_header.ts";
import { dashboardPage, FAVICON_SVG } from "./page.ts";
import { HerdPoller, type HerdPollerOptions } from "./poller.ts";
import { PAGE_CSS } from "./page_style.ts";
import { ResilientHttpServer } from "../net/http_server.ts";
// Imported as text into the module graph, so serving it needs no read permission.
import script from "./page_script.js" with { type: "text" };

/** Options for {@linkcode Dashboard.start}. */
export interface DashboardOptions {
  /** The herd to show. */
  config: HerdConfig;
  /** The admin endpoints' bearer token (`HERD_ADMIN_TOKEN`), when set. */
  token?: string;
  /** Port to listen on; `dashboard.port` of the config when omitted, any free port with 0. */
  port?: number;
  /** Polling intervals and timeouts (see {@linkcode HerdPollerOptions}). */
  polling?: Pick<HerdPollerOptions, "statusIntervalMs" | "statusTimeoutMs" | "densityIntervalMs">;
}

/** Events a client may have waiting before it is dropped as not reading. */
const _MAX_QUEUED_EVENTS = 32;

const _SECURITY_HEADERS = {
  "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
};

const _encoder = new TextEncoder();

function _response(body: string | null, status: number, type?: string): Response {
  const headers: Record<string, string> = { ..._SECURITY_HEADERS, "cache-control": "no-store" };
  if (type !== undefined) headers["content-type"] = type;
  return new Response(body, { status, headers });
}

/**
 * The cookie that carries the dashboard's key, once its address with `?key=` has been opened: named by the port, as a
 * browser keeps one set of cookies for every port of 127.0.0.1 (two dashboards would otherwise replace each other's).
 */
function _keyCookieName(port: number): string {
  return `herd_dashboard_key_${port}`;
}

/**
 * The dashboard's key: an HMAC of the admin token, so that it stays the same across restarts (an open page's event
 * stream comes back by itself) and shows nothing of the token; whoever has the token can open the dashboard anyway.
 */
function _dashboardKey(token: string): string {
  return createHmac("sha256", token).update("herd dashboard key").digest("hex").slice(0, 32);
}

/** Whether the `Cookie` header holds a cookie `name` whose value is `key` (any of several of that name). */
function _hasKeyCookie(header: string | null, name: string, key: string): boolean {
  let found = false;
  for (const part of (header ?? "").split(";")) {
    const [cookie, ...value] = part.trim().split("=");
    if (cookie === name && sameSecret(value.join("="), key)) found = true;
  }
  return found;
}

/** One server-sent event. */
function _event(name: string, data: unknown): Uint8Array {
  return _encoder.encode(`event: ${name}\ndata: ${JSON.stringify(data)}\n\n`);
}

/** The dashboard: a poller of the herd and the HTTP server of its page. */
export class Dashboard implements AsyncDisposable {
  /** The page's address (with `?key=` when the dashboard has a key). */
  readonly url: string;
  /**
   * With an admin token set, a key of the dashboard's own ({@linkcode _dashboardKey}): every request must carry it (a
   * cookie set by opening the address with `?key=`), so that what the token keeps from other local users on the
   * admin ports, the dashboard does not show them. Without one, the admin ports on loopback answer anyone, and so
   * does the page.
   */
  #key: string | undefined;
  #server: ResilientHttpServer;
  #poller: HerdPoller;
  #page: string;
  #clients = new Set<ReadableStreamDefaultController<Uint8Array>>();

  private constructor(options: DashboardOptions) {
    const drawing = drawWorld();
    this.#page = dashboardPage(options.config, drawing);
    this.#poller = new HerdPoller(options.config, drawing, {
      ...options.polling,
      token: options.token,
      onStatus: (view) => this.#broadcast(_event("status", view)),
      onDensity: (view) => this.#broadcast(_event("density", view)),
    });
    // Accepting again after a failed accept (out of file descriptors): that must not end the dashboard.
    this.#server = new ResilientHttpServer({
      hostname: DASHBOARD_HOST,
      port: options.port ?? options.config.dashboard.port,
      onFailure: (error, retryMs) =>
        console.error(`The dashboard cannot accept connections: ${error.message}; trying again in ${retryMs} ms`),
      onRecovered: () => console.error("The dashboard accepts again"),
    }, (request) => this.#answer(request));
    this.#key = options.token === undefined ? undefined : _dashboardKey(options.token);
    this.url = `http://${DASHBOARD_HOST}:${this.#server.addr.port}/${
      this.#key === undefined ? "" : `?key=${this.#key}`
    }`;
    this.#poller.start();
  }

  /** Starts polling and serving; throws when the port cannot be had. */
  static start(options: DashboardOptions): Dashboard {
    return new Dashboard(options);
  }

  #answer(request: Request): Response {
    // A page from elsewhere reaching us through a name it rebound to 127.0.0.1 sends its own name here.
    if (!hostHeaderAllowed(request.headers.get("host"), DASHBOARD_HOST)) {
      return _response(foreignHostMessage("The dashboard", DASHBOARD_HOST), 403, "text/plain");
    }
    if (request.method !== "GET") return _response("Only GET\n", 405, "text/plain");
    const path = requestPath(request);
    if (path === undefined) return _response(BAD_HOST_MESSAGE, 400, "text/plain");
    const key = this.#key;
    if (key !== undefined) {
      const given = path === "/" ? URL.parse(request.url)?.searchParams.get("key") : null;
      if (given !== null && given !== undefined && sameSecret(given, key)) {
        // Kept in a cookie, and the address without it in the address bar (and out of the history's later pages).
        return new Response(null, {
          status: 303,
          headers: {
            ..._SECURITY_HEADERS,
            "cache-control": "no-store",
            location: "/",
            // Lax, not Strict: a link to this address followed from another site's page must bring the page (every
            // answer here is a GET that changes nothing, behind the Host check).
            "set-cookie": `${_keyCookieName(this.#server.addr.port)}=${key}; HttpOnly; SameSite=Lax; Path=/`,
          },
        });
      }
      if (!_hasKeyCookie(request.headers.get("cookie"), _keyCookieName(this.#server.addr.port), key)) {
        return _response(
          "The dashboard shows the herd only with its key, since the admin ports ask for a token: open the address " +
            "it printed when it started (with ?key=)\n",
          401,
          "text/plain",
        );
      }
    }
    switch (path) {
      case "/":
        return _response(this.#page, 200, "text/html; charset=utf-8");
      case "/dashboard.css":
        return _response(PAGE_CSS, 200, "text/css; charset=utf-8");
      case "/dashboard.js":
        return _response(script, 200, "text/javascript; charset=utf-8");
      case "/favicon.svg":
        return _response(FAVICON_SVG, 200, "image/svg+xml");
      case "/events":
        return this.#events();
      case "/state":
        return _response(
          JSON.stringify({ status: this.#poller.status ?? null, density: this.#poller.density ?? null }),
          200,
          "application/json; charset=utf-8",
        );
      default:
        return _response("Not found: the dashboard is at /\n", 404, "text/plain");
    }
  }

  /** A stream of server-sent events, starting with the latest status and density. */
  #events(): Response {
    let own: ReadableStreamDefaultController<Uint8Array>;
    const body = new ReadableStream<Uint8Array>({
      start: (controller) => {
        own = controller;
        // Reconnect a second after the dashboard restarts.
        controller.enqueue(_encoder.encode("retry: 1000\n\n"));
        const status = this.#poller.status;
        if (status !== undefined) controller.enqueue(_event("status", status));
        const density = this.#poller.density;
        if (density !== undefined) controller.enqueue(_event("density", density));
        this.#clients.add(controller);
      },
      cancel: () => {
        this.#clients.delete(own);
      },
    }, { highWaterMark: _MAX_QUEUED_EVENTS });
    return new Response(body, {
      headers: { ..._SECURITY_HEADERS, "content-type": "text/event-stream", "cache-control": "no-store" },
    });
  }

  #broadcast(event: Uint8Array): void {
    for (const client of this.#clients) {
      if (client.desiredSize !== null && client.desiredSize <= 0) {
        // It has not read the last _MAX_QUEUED_EVENTS events: it gets what is queued, then the stream ends.
        this.#clients.delete(client);
        client.close();
        continue;
      }
      client.enqueue(event);
    }
  }

  /** Stops polling, ends every event stream and closes the server. */
  async shutdown(): Promise<void> {
    await this.#poller.stop();
    for (const client of this.#clients) client.close();
    this.#clients.clear();
    await this.#server.shutdown();
  }

  /** {@linkcode Dashboard.shutdown}. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.shutdown();
  }
}

/** What the dashboard warns about at start: servers it cannot watch, admin ports off loopback with no token. */
export function dashboardWarnings(config: HerdConfig, tokenSet: boolean): string[] {
  const warnings: string[] = [];
  const unwatched = [...config.servers].filter(([, server]) => server.adminPort === undefined).map(([name]) => name);
  if (unwatched.length > 0) {
    warnings.push(
      `${unwatched.join(", ")} ha${
        unwatched.length === 1 ? "s" : "ve"
      } no adminPort: shown as "no admin port", with links as their neighbours report them`,
    );
  }
  const remote = [...config.servers].filter(([, server]) => server.adminPort !== undefined && !isLoopback(server.host))
    .map(([name]) => name);
  if (remote.length > 0 && !tokenSet) {
    warnings.push(
      `${remote.join(", ")} answer${remote.length === 1 ? "s" : ""} only with a bearer token off loopback: set ` +
        `${ADMIN_TOKEN_VARIABLE} (in the environment or the .env next to the config)`,
    );
  }
  return warnings;
}

/**
 * `main.ts dashboard-run`: serves the dashboard until SIGINT or SIGTERM.
 * Exits with status 1, saying why, when its port cannot be had.
 */
export function runDashboard(config: HerdConfig): void {
  const token = Deno.env.get(ADMIN_TOKEN_VARIABLE) || undefined;
  for (const warning of dashboardWarnings(config, token !== undefined)) console.error(`Warning: ${warning}`);
  let dashboard: Dashboard;
  try {
    dashboard = Dashboard.start({ config, token });
  } catch (error) {
    console.error(
      `Cannot serve the dashboard on ${DASHBOARD_HOST}:${config.dashboard.port}: ${(error as Error).message}` +
        " (dashboard.port in the config sets another port)",
    );
    Deno.exit(1);
  }
  const watched = [...config.servers.values()].filter((server) => server.adminPort !== undefined).length;
  console.log(`Dashboard on ${dashboard.url} (watching ${watched} of ${config.servers.size} servers)`);
  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= dashboard.shutdown().then(() => Deno.exit(0));
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
}
