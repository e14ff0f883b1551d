/**
 * The dashboard without a browser: what it makes of the servers' answers
 * (link and server states, digests, density cells on the map), its page,
 * its permission flags, and its HTTP server's refusals.
 */

import assert from "node:assert/strict";
import type { StatusReport } from "../lib/admin/status.ts";
import { type HerdConfig, parseConfig } from "../lib/config/config.ts";
import { dashboardRunArgs, MAIN_MODULE } from "../lib/cli/launcher.ts";
import { dashboardNetAddresses, dashboardPermissionFlags } from "../lib/cli/permissions.ts";
import { cellPath, drawWorld } from "../lib/dashboard/map.ts";
import { dashboardPage, graphLayout } from "../lib/dashboard/page.ts";
import { HerdPoller } from "../lib/dashboard/poller.ts";
import { Dashboard, dashboardWarnings } from "../lib/dashboard/server.ts";
import { densityView, herdView, linkState, type StatusAnswer } from "../lib/dashboard/view.ts";
import { freePorts } from "./testing/herd.ts";
import { rawGet } from "./testing/http.ts";
import { waitFor } from "./testing/wait.ts";
import { DEFAULT_CONFIG_PATH as DEFAULT_PATH, loadDefaultConfig as loadDefault } from "./testing/default_config.ts";

const AT = new Date("2026-01-02T03:04:05Z");
const WORLD = drawWorld();

/** A three-server herd A–B–C (a line), with admin ports on A and B only unless `adminC`. */
function lineHerd(options: { adminC?: boolean; adminHost?: string; adminPorts?: number[] } = {}): HerdConfig {
  const [a, b, c] = options.adminPorts ?? [13200, 13201, 13202];
  const host = options.adminHost ?? "127.0.0.1";
  return parseConfig(
    JSON.stringify({
      servers: {
        A: { host, port: 13000, peerPort: 13100, adminPort: a },
        B: { host, port: 13001, peerPort: 13101, adminPort: b },
        C: { host, port: 13002, peerPort: 13102, ...(options.adminC ? { adminPort: c } : {}) },
      },
      links: [["A", "B"], ["B", "C"]],
      places: { provider: "offline", url: "http://127.0.0.1:9/nearby" },
      logDir: "/tmp/x/logs",
      dashboard: { port: 13300 },
    }),
    "/tmp/x/herd.config.json",
  );
}

function report(name: string, links: [string, "up" | "lagging" | "down"][], digest = "00000000000000aa"): StatusReport {
  return {
    name,
    uptimeS: 12.5,
    health: { ok: true, reason: "ok" },
    records: 42,
    digest,
    links: links.map(([neighbour, state]) => ({ neighbour, state, queued: 0, ackWaits: 0, lastReconciliation: null })),
    rates: { commandsPerSecond: 3.5, replyP99Ms: 1.25 },
    places: { provider: "offline", cacheEntries: 0 },
    clientConnections: 1,
    rssBytes: 50_000_000,
  };
}

Deno.test("linkState() shows the worse of what the two ends report, unknown when neither reports", () => {
  assert.equal(linkState("up", "up"), "up");
  assert.equal(linkState("up", "lagging"), "lagging");
  assert.equal(linkState("lagging", "down"), "down");
  assert.equal(linkState("down", "up"), "down");
  assert.equal(linkState(null, "lagging"), "lagging");
  assert.equal(linkState("up", null), "up");
  assert.equal(linkState(null, null), "unknown");
});

Deno.test("herdView() shows a server that does not answer as down, with its links down whatever the other end says", () => {
  const config = lineHerd({ adminC: true });
  const answers = new Map<string, StatusAnswer>([
    ["A", { report: report("A", [["B", "up"]]) }],
    ["B", { error: "no answer within 400 ms" }],
    ["C", { report: report("C", [["B", "up"]]) }],
  ]);
  const view = herdView(config, answers, AT);
  assert.equal(view.at, "2026-01-02T03:04:05.000Z");
  assert.deepEqual(view.servers.map((server) => [server.name, server.state]), [["A", "up"], ["B", "down"], [
    "C",
    "up",
  ]]);
  assert.equal(view.servers[1].reason, "no answer within 400 ms");
  assert.equal(view.servers[1].records, null);
  assert.deepEqual(view.links.map((link) => [link.ends, link.state, link.reported]), [
    [["A", "B"], "down", ["up", "down"]],
    [["B", "C"], "down", ["down", "up"]],
  ]);
  assert.deepEqual(view.servers[0].links, { live: 0, configured: 1 });
  assert.equal(view.whole, false);
});

Deno.test("herdView() is whole when every server answers, is healthy and holds the same records", () => {
  const config = lineHerd({ adminC: true });
  const answers = new Map<string, StatusAnswer>([
    ["A", { report: report("A", [["B", "up"]]) }],
    ["B", { report: report("B", [["A", "up"], ["C", "lagging"]]) }],
    ["C", { report: report("C", [["B", "up"]]) }],
  ]);
  const view = herdView(config, answers, AT);
  assert.equal(view.whole, true);
  assert.deepEqual(view.links.map((link) => link.state), ["up", "lagging"]);
  assert.deepEqual(view.servers[1], {
    name: "B",
    state: "up",
    reason: "ok",
    records: 42,
    commandsPerSecond: 3.5,
    replyP99Ms: 1.25,
    clientConnections: 1,
    digest: "00000000000000aa",
    digestAgrees: true,
    uptimeS: 12.5,
    links: { live: 2, configured: 2 },
  });
});

Deno.test("herdView() marks the server whose digest differs from most, and an unhealthy one", () => {
  const config = lineHerd({ adminC: true });
  const stopping = report("C", [["B", "up"]], "00000000000000bb");
  stopping.health = { ok: false, reason: "stopping" };
  const answers = new Map<string, StatusAnswer>([
    ["A", { report: report("A", [["B", "up"]]) }],
    ["B", { report: report("B", [["A", "up"], ["C", "up"]]) }],
    ["C", { report: stopping }],
  ]);
  const view = herdView(config, answers, AT);
  assert.deepEqual(view.servers.map((server) => [server.state, server.digestAgrees]), [
    ["up", true],
    ["up", true],
    ["unhealthy", false],
  ]);
  assert.equal(view.servers[2].reason, "stopping");
  assert.equal(view.whole, false);
});

Deno.test("herdView() shows a server without an admin port as unwatched, its links as the other end says", () => {
  const config = lineHerd();
  const answers = new Map<string, StatusAnswer>([
    ["A", { report: report("A", [["B", "up"]]) }],
    ["B", { report: report("B", [["A", "up"], ["C", "down"]]) }],
  ]);
  const view = herdView(config, answers, AT);
  assert.equal(view.servers[2].state, "unwatched");
  assert.deepEqual(view.links[1].reported, ["down", null]);
  assert.equal(view.links[1].state, "down");
  assert.equal(view.whole, false);
});

Deno.test("herdView() shows a link down when an answering end does not list it (another config)", () => {
  const config = lineHerd({ adminC: true });
  const answers = new Map<string, StatusAnswer>([
    ["A", { report: report("A", []) }],
    ["B", { report: report("B", [["A", "up"], ["C", "up"]]) }],
    ["C", { report: report("C", [["B", "up"]]) }],
  ]);
  assert.deepEqual(herdView(config, answers, AT).links[0].reported, ["down", "up"]);
});

Deno.test("drawWorld() draws Natural Earth's countries inside the map box", () => {
  assert.ok(WORLD.countries.length >= 170, `${WORLD.countries.length} countries`);
  assert.ok(WORLD.countries.some((country) => country.name === "France"));
  assert.ok(WORLD.sphere.startsWith("M"));
  for (const [longitude, latitude] of [[-180, 0], [180, 0], [0, 90], [0, -90], [-118.4, 34.1]]) {
    const [x, y] = WORLD.project(longitude, latitude)!;
    assert.ok(x >= 0 && x <= WORLD.width && y >= 0 && y <= WORLD.height, `${longitude},${latitude} at ${x},${y}`);
  }
});

Deno.test("cellPath() projects a grid cell to a quadrilateral where its corners fall, and nothing for an empty cell", () => {
  // Row 62, column 30 with 2-degree cells: latitude 34 to 36, longitude -120 to -118 (Los Angeles).
  const d = cellPath(WORLD, 62, 30, 2);
  const points = [...d.matchAll(/(-?[0-9.]+),(-?[0-9.]+)/g)].map((match) => [Number(match[1]), Number(match[2])]);
  assert.equal(points.length, 4);
  const [x, y] = WORLD.project(-119, 35)!;
  assert.ok(Math.min(...points.map((p) => p[0])) < x && x < Math.max(...points.map((p) => p[0])));
  assert.ok(Math.min(...points.map((p) => p[1])) < y && y < Math.max(...points.map((p) => p[1])));
  // The grid's last row starts at latitude 90: no area.
  assert.equal(cellPath(WORLD, 90, 10, 2), "");
});

Deno.test("densityView() keeps each cell's grid position and count, and the largest count", () => {
  const view = densityView(WORLD, {
    cellDegrees: 2,
    cells: [[62, 30, 7], [45, 90, 2], [90, 10, 1]],
    records: 10,
    computedAt: "2026-01-02T03:04:05.000Z",
  }, "Hill");
  assert.equal(view.from, "Hill");
  assert.equal(view.max, 7);
  assert.deepEqual(view.cells.map((cell) => [cell.row, cell.column, cell.count]), [[62, 30, 7], [45, 90, 2]]);
  assert.equal(view.cells[0].d, cellPath(WORLD, 62, 30, 2));
});

Deno.test("graphLayout() puts the servers on a circle inside the box, the first at the top", () => {
  const layout = graphLayout(["A", "B", "C", "D"], 400, 400, 50);
  assert.deepEqual(layout.get("A"), { x: 200, y: 50 });
  assert.deepEqual(layout.get("B"), { x: 350, y: 200 });
  assert.deepEqual(layout.get("C"), { x: 200, y: 350 });
  assert.deepEqual(layout.get("D"), { x: 50, y: 200 });
  assert.deepEqual(graphLayout(["A"], 400, 400, 50).get("A"), { x: 200, y: 200 });
});

Deno.test("dashboardPage() has a node and a row per server, a line and a row per link, and loads only from its origin", async () => {
  const config = await loadDefault();
  const page = dashboardPage(config, WORLD);
  for (const name of config.servers.keys()) {
    assert.equal(page.split(`data-server="${name}"`).length - 1, 2, `${name}: a node and a table row`);
  }
  for (const [a, b] of config.links) {
    assert.equal(page.split(`data-link="${a} ${b}"`).length - 1, 2, `${a}-${b}: a line and a table row`);
  }
  const urls = [...page.matchAll(/(?:src|href)="([^"]*)"/g)].map((match) => match[1]);
  assert.deepEqual(urls, ["/favicon.svg", "/dashboard.css", "/dashboard.js"]);
  assert.ok(!/https?:\/\//.test(page.replaceAll('xmlns="http://www.w3.org/2000/svg"', "")));
});

Deno.test("dashboardPermissionFlags() allows its own port, each admin port, the config and the token variable", async () => {
  const config = await loadDefault();
  const admin = ["12200", "12201", "12202", "12203", "12204"].map((port) => `127.0.0.1:${port}`);
  assert.deepEqual(dashboardNetAddresses(config), ["127.0.0.1:12300", ...admin]);
  assert.deepEqual(dashboardPermissionFlags(config), [
    `--allow-net=127.0.0.1:12300,${admin.join(",")}`,
    `--allow-read=${DEFAULT_PATH}`,
    "--allow-env=HERD_ADMIN_TOKEN",
  ]);
});

Deno.test("dashboardNetAddresses() leaves out servers without an admin port and brackets IPv6 hosts", () => {
  assert.deepEqual(dashboardNetAddresses(lineHerd()), ["127.0.0.1:13300", "127.0.0.1:13200", "127.0.0.1:13201"]);
  assert.deepEqual(dashboardNetAddresses(lineHerd({ adminHost: "::1" })), [
    "127.0.0.1:13300",
    "[::1]:13200",
    "[::1]:13201",
  ]);
});

Deno.test("dashboardRunArgs() runs main.ts dashboard-run with the dashboard's flags and nothing else", () => {
  const config = lineHerd();
  assert.deepEqual(dashboardRunArgs(config), [
    "run",
    "--no-prompt",
    ...dashboardPermissionFlags(config),
    MAIN_MODULE,
    "dashboard-run",
    "--config",
    "/tmp/x/herd.config.json",
  ]);
});

Deno.test("dashboardWarnings() names servers without an admin port, and admin ports off loopback without a token", () => {
  assert.deepEqual(dashboardWarnings(lineHerd({ adminC: true }), false), []);
  assert.deepEqual(dashboardWarnings(lineHerd(), false), [
    'C has no adminPort: shown as "no admin port", with links as their neighbours report them',
  ]);
  const remote = lineHerd({ adminC: true, adminHost: "10.0.0.5" });
  assert.deepEqual(dashboardWarnings(remote, true), []);
  assert.match(
    dashboardWarnings(remote, false)[0],
    /^A, B, C answer only with a bearer token off loopback: set HERD_ADMIN_TOKEN/,
  );
});

Deno.test({
  name: "Dashboard serves its page with a strict CSP and refuses a request that names another host (DNS rebinding)",
  permissions: { net: ["127.0.0.1"] },
}, async () => {
  // Admin ports nothing listens on: every server is shown down.
  const [dashboardPort, ...adminPorts] = freePorts(4);
  const config = lineHerd({ adminC: true, adminPorts });
  await using dashboard = Dashboard.start({ config, port: dashboardPort });
  assert.equal(dashboard.url, `http://127.0.0.1:${dashboardPort}/`);
  const page = await fetch(dashboard.url);
  assert.equal(page.status, 200);
  assert.match(page.headers.get("content-security-policy")!, /^default-src 'none'; script-src 'self'/);
  assert.match(await page.text(), /data-server="C"/);
  const refused = await rawGet(dashboardPort, "/", "dashboard.attacker.example");
  assert.match(refused, /^HTTP\/1\.1 403 /);
  assert.match(
    refused,
    /The dashboard answers only a request whose Host header names it as an IP address or localhost/,
  );
  assert.match(await rawGet(dashboardPort, "/", `localhost:${dashboardPort}`), /^HTTP\/1\.1 200 /);
  const missing = await fetch(new URL("/nothing", dashboard.url));
  assert.equal(missing.status, 404);
  await missing.body?.cancel();
});

Deno.test({
  name: "Dashboard with an admin token shows the herd only with its key, kept in a cookie once its address is opened",
  permissions: { net: ["127.0.0.1"] },
}, async () => {
  const [dashboardPort, ...adminPorts] = freePorts(4);
  await using dashboard = Dashboard.start({
    config: lineHerd({ adminC: true, adminPorts }),
    port: dashboardPort,
    token: "admin-token",
  });
  const key = /^http:\/\/127\.0\.0\.1:\d+\/\?key=([0-9a-f]{32})$/.exec(dashboard.url)?.[1];
  assert.ok(key !== undefined, dashboard.url);
  const get = async (path: string, cookie?: string) => {
    const response = await fetch(new URL(path, dashboard.url), {
      redirect: "manual",
      headers: cookie === undefined ? {} : { cookie },
    });
    await response.body?.cancel();
    return response;
  };
  // Without it, or with another: nothing of the herd (the admin ports would ask for the token).
  for (const path of ["/", "/state", "/events", "/dashboard.js"]) assert.equal((await get(path)).status, 401, path);
  assert.equal((await get("/?key=0123")).status, 401);
  assert.equal((await get("/state", `herd_dashboard_key_${dashboardPort}=${"0".repeat(32)}`)).status, 401);
  // Another port's cookie is another dashboard's.
  assert.equal((await get("/state", `herd_dashboard_key_1=${key}`)).status, 401);
  // Its address: the key goes into a cookie, and the page is shown without it in the address.
  const opened = await get(dashboard.url);
  assert.equal(opened.status, 303);
  assert.equal(opened.statusText, "See Other");
  assert.equal(opened.headers.get("location"), "/");
  assert.equal(
    opened.headers.get("set-cookie"),
    `herd_dashboard_key_${dashboardPort}=${key}; HttpOnly; SameSite=Lax; Path=/`,
  );
  const cookie = `other=1; herd_dashboard_key_${dashboardPort}=stale; herd_dashboard_key_${dashboardPort}=${key}`;
  for (const path of ["/", "/state", "/dashboard.js"]) assert.equal((await get(path, cookie)).status, 200, path);
  // The same key after a restart (an open page's event stream comes back by itself), another with another token.
  const [otherPort] = freePorts(1);
  await using again = Dashboard.start({
    config: lineHerd({ adminC: true, adminPorts }),
    port: otherPort,
    token: "admin-token",
  });
  assert.ok(again.url.endsWith(`?key=${key}`), again.url);
  await using other = Dashboard.start({ config: lineHerd({ adminC: true, adminPorts }), port: 0, token: "another" });
  assert.ok(!other.url.endsWith(`?key=${key}`), other.url);
});

Deno.test({
  name: "Dashboard answers 400, not a 500 with a stack trace, to a Host it lets through that makes no URL",
  permissions: { net: ["127.0.0.1"] },
}, async () => {
  const [dashboardPort, ...adminPorts] = freePorts(4);
  await using _dashboard = Dashboard.start({ config: lineHerd({ adminC: true, adminPorts }), port: dashboardPort });
  for (const host of ["127.0.0.1:99999", "[1:2:3:4:5:6:7:8:9]"]) {
    const answer = await rawGet(dashboardPort, "/state", host);
    assert.match(answer, /^HTTP\/1\.1 400 /, host);
    assert.match(answer, /the Host header is not a valid host/, host);
  }
  assert.match(await rawGet(dashboardPort, "/state", `127.0.0.1:${dashboardPort}`), /^HTTP\/1\.1 200 /);
});

Deno.test({
  name: "Dashboard's /events starts with the latest status: servers that do not answer are down",
  permissions: { net: ["127.0.0.1"] },
}, async () => {
  const [dashboardPort, ...adminPorts] = freePorts(4);
  const config = lineHerd({ adminC: true, adminPorts });
  await using dashboard = Dashboard.start({ config, port: dashboardPort, polling: { statusIntervalMs: 50 } });
  const response = await fetch(new URL("/events", dashboard.url));
  assert.equal(response.headers.get("content-type"), "text/event-stream");
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!/event: status\ndata: .*\n\n/.test(text)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`The event stream ended before a status event: ${JSON.stringify(text)}`);
    text += value;
  }
  await reader.cancel();
  const status = JSON.parse(/event: status\ndata: (.*)\n\n/.exec(text)![1]);
  assert.deepEqual(status.servers.map((server: { state: string }) => server.state), ["down", "down", "down"]);
  assert.deepEqual(status.links.map((link: { state: string }) => link.state), ["down", "down"]);
});

Deno.test({
  name: "HerdPoller shows an admin port that answers no herd status as down, and survives a malformed /density",
  permissions: { net: ["127.0.0.1"] },
}, async () => {
  // A: another program on the admin port. B: a server whose /status is fine and whose /density is not.
  const other = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => Response.json({ hello: 1 }));
  let densityAsked = 0;
  const b = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (request) => {
    if (new URL(request.url).pathname === "/density") {
      densityAsked++;
      return Response.json({ cellDegrees: 2, records: 1, computedAt: "2026-01-02T03:04:05Z", cells: "not a list" });
    }
    return Response.json(report("B", [["A", "down"], ["C", "up"]]));
  });
  const views: ReturnType<typeof herdView>[] = [];
  const poller = new HerdPoller(lineHerd({ adminPorts: [other.addr.port, b.addr.port] }), WORLD, {
    statusIntervalMs: 20,
    onStatus: (view) => views.push(view),
    onDensity: () => assert.fail("a malformed /density was drawn"),
  });
  poller.start();
  try {
    await waitFor(() => densityAsked >= 2 && views.length >= 2, { what: "two /density requests and two rounds" });
    const a = views.at(-1)!.servers.find((server) => server.name === "A")!;
    assert.equal(a.state, "down");
    assert.match(String(a.reason), /answered JSON that is not a herd server's: another program on the adminPort\?/);
    assert.equal(views.at(-1)!.servers.find((server) => server.name === "B")!.state, "up");
  } finally {
    await poller.stop();
    await other.shutdown();
    await b.shutdown();
  }
});
