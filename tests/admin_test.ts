/**
 * Seeing the herd: each server's admin endpoint (`/metrics` checked by a real
 * Prometheus parser, `/healthz`, `/status`, `/density`) and `deno task
 * status` over the whole herd.
 */

import assert from "node:assert/strict";
import { type AdminSource, answerAdmin, BackupRefused, type BackupResult, serveAdmin } from "../lib/admin/server.ts";
import { BackupFiles } from "../lib/admin/backup_files.ts";
import { isLoopback, parseConfig } from "../lib/config/config.ts";
import { askServers, statusTable } from "../lib/cli/status.ts";
import { isStatusReport, type StatusReport } from "../lib/admin/status.ts";
import { Counter, Gauge, Histogram, Registry } from "../lib/admin/prometheus.ts";
import { MAIN_MODULE } from "../lib/cli/launcher.ts";
import { hostHeaderAllowed } from "../lib/net/host_header.ts";
import { exchange, HERD_TEST_PERMISSIONS, TestHerd } from "./testing/herd.ts";
import { rawGet } from "./testing/http.ts";
import { waitFor } from "./testing/wait.ts";

const NOWHERE = "http://127.0.0.1:9/unused";

/** What an admin endpoint reads of a server "Hill" that holds nothing and has no backups; `parts` replace some. */
function quietSource(parts: Partial<AdminSource> = {}): AdminSource {
  const notHere = () => Promise.reject(new Error("not in this test"));
  return {
    health: () => ({ ok: true, reason: "ok" }),
    status: () => ({ name: "Hill" }),
    density: () => ({ cellDegrees: 2, records: 0, cells: [], computedAt: null }),
    backup: notHere,
    backups: () => [],
    openBackup: notHere,
    removeBackup: notHere,
    ...parts,
  };
}
const decoder = new TextDecoder();

/** `promtool check metrics` of `text`: its exit status and what it said; undefined when promtool is not installed. */
async function promtool(text: string): Promise<{ ok: boolean; said: string } | undefined> {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command("promtool", {
      args: ["check", "metrics"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch {
    return undefined;
  }
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(text));
  await writer.close();
  const output = await child.output();
  return { ok: output.success, said: decoder.decode(output.stdout) + decoder.decode(output.stderr) };
}

const promtoolHere = (await promtool("")) !== undefined;
if (!promtoolHere) console.log("admin_test.ts: promtool is not installed (Debian: prometheus); its check is skipped");

/** The value of the sample `name{labels}` in Prometheus text, or undefined. */
function sample(text: string, series: string): number | undefined {
  const line = text.split("\n").find((line) => line.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

Deno.test("the metrics module prints what a Prometheus parser takes, escapes labels, and sums histograms", async () => {
  const registry = new Registry();
  const counter = registry.add(new Counter("t_events_total", "Events\nwith a newline.", ["kind"]));
  counter.labels('a "quoted" \\ kind').inc(3);
  registry.add(new Gauge("t_level", "A level.", [], () => [[[], 1.5]]));
  const histogram = registry.add(new Histogram("t_seconds", "Durations.", [0.1, 1]));
  for (const value of [0.05, 0.1, 0.5, 5]) histogram.labels().observe(value);
  const text = registry.render();
  assert.equal(sample(text, 't_events_total{kind="a \\"quoted\\" \\\\ kind"}'), 3);
  assert.equal(sample(text, 't_seconds_bucket{le="0.1"}'), 2, "le includes its bound");
  assert.equal(sample(text, 't_seconds_bucket{le="1"}'), 3);
  assert.equal(sample(text, 't_seconds_bucket{le="+Inf"}'), 4);
  assert.equal(sample(text, "t_seconds_count"), 4);
  assert.equal(sample(text, "t_seconds_sum"), 5.65);
  assert.throws(() => registry.add(new Counter("t_events_total", "again")), RangeError);
  if (promtoolHere) {
    const checked = await promtool(text);
    assert.ok(checked?.ok, checked?.said);
  }
});

Deno.test({
  name: "a herd's /metrics passes promtool, and its counters move as the IAMATs and WHATSATs say",
  permissions: { ...HERD_TEST_PERMISSIONS, run: ["deno", "promtool"] },
}, async () => {
  await using herd = await TestHerd.create({
    placesUrl: NOWHERE,
    names: ["A", "B"],
    links: [["A", "B"]],
    places: { provider: "offline" },
    admin: true,
  });
  await herd.startAll();
  const before = (await herd.admin("A", "/metrics")).body;
  const ok = (name: string) => sample(before, `herd_commands_total{command="${name}",outcome="ok"}`) ?? 0;
  // waitConverged's WHATSATs for probes not there yet were answered "?": counted as invalid before the test's own.
  const invalid = (name: string) => sample(before, `herd_commands_total{command="${name}",outcome="invalid"}`) ?? 0;
  const iamatsBefore = ok("IAMAT");
  const whatsatsBefore = ok("WHATSAT");
  const lines = [
    "IAMAT m1 +34.068930-118.445127 1700000000",
    "IAMAT m2 +34.068930-118.445127 1700000000",
    "IAMAT m3 +1+1 99999999999999",
    "WHATSAT m1 10 2",
    "WHATSAT nobody 10 2",
    "LLL",
  ];
  await exchange(herd.port("A"), lines.join("\n") + "\n");
  const response = await herd.admin("A", "/metrics");
  assert.equal(response.status, 200);
  const text = response.body;
  assert.equal(sample(text, 'herd_commands_total{command="IAMAT",outcome="ok"}'), iamatsBefore + 2);
  assert.equal(
    sample(text, 'herd_commands_total{command="IAMAT",outcome="invalid"}'),
    invalid("IAMAT") + 1,
    "the far-future one",
  );
  assert.equal(sample(text, 'herd_commands_total{command="WHATSAT",outcome="ok"}'), whatsatsBefore + 1);
  assert.equal(sample(text, 'herd_commands_total{command="WHATSAT",outcome="invalid"}'), invalid("WHATSAT") + 1);
  assert.equal(sample(text, 'herd_commands_total{command="other",outcome="invalid"}'), invalid("other") + 1);
  assert.ok((sample(text, 'herd_reply_seconds_count{command="IAMAT"}') ?? 0) >= iamatsBefore + 3);
  assert.equal(sample(text, 'herd_peer_link_up{neighbour="B"}'), 1);
  assert.ok((sample(text, "herd_records") ?? 0) >= 2);
  assert.ok((sample(text, 'herd_records_forwarded_total{kind="live"}') ?? 0) >= 2);
  assert.ok((sample(text, 'herd_places_requests_total{provider="offline",status="OK"}') ?? 0) >= 1);
  assert.ok((sample(text, "process_resident_memory_bytes") ?? 0) > 1_000_000);
  assert.ok((sample(text, 'herd_commits_total{outcome="ok"}') ?? 0) >= 1);
  await waitFor(async () => {
    const metricsB = (await herd.admin("B", "/metrics")).body;
    return (sample(metricsB, 'herd_peer_records_total{event="stored"}') ?? 0) >= 2;
  }, { what: "B to count the records A flooded" });
  if (promtoolHere) {
    const checked = await promtool(text);
    assert.ok(checked?.ok, checked?.said);
  }
});

Deno.test({
  name: "/healthz, /status and /density tell how a server is, never a client's own location",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await TestHerd.create({
    placesUrl: NOWHERE,
    names: ["A", "B"],
    links: [["A", "B"]],
    places: { provider: "offline" },
    admin: true,
  });
  await herd.startAll();
  assert.deepEqual(await herd.admin("A", "/healthz"), { status: 200, body: "ok\n" });
  // The start-up line gives the address whole, to copy from the log file.
  const started = `"A" admin endpoint on "http://127.0.0.1:${
    herd.adminPort("A")
  }/" (/metrics, /healthz, /status, /density, POST /backup, /backups)\n`;
  await waitFor(async () => (await herd.log("A")).includes(started), { what: `the log line ${started}` });
  await exchange(herd.port("A"), "IAMAT dense +34.068930-118.445127 1700000000\n");
  const status = JSON.parse((await herd.admin("A", "/status")).body);
  assert.equal(status.name, "A");
  assert.equal(status.health.ok, true);
  assert.ok(status.records >= 3);
  assert.match(status.digest, /^[0-9a-f]{16}$/);
  assert.deepEqual(status.links.map((link: { neighbour: string; state: string }) => [link.neighbour, link.state]), [
    ["B", "up"],
  ]);
  assert.equal(status.places.provider, "offline");
  await waitFor(async () => JSON.parse((await herd.admin("B", "/status")).body).digest === status.digest, {
    what: "B's digest to equal A's",
  });
  const density = await waitFor(async () => {
    const report = JSON.parse((await herd.admin("A", "/density")).body);
    return report.records >= 3 ? report : undefined;
  }, { what: "a density count" });
  assert.equal(density.cellDegrees, 2);
  // +34.07 -118.45 is in the cell from +34 to +36 and from -120 to -118.
  assert.ok(density.cells.some(([row, column, count]: number[]) => row === 62 && column === 30 && count >= 1));
  assert.ok(!JSON.stringify(density).includes("34.068930"), "no client location, only counts");
  assert.equal((await herd.admin("A", "/nowhere")).status, 404);
  // A page that rebound its name to the server's address is refused; fetch by address (above) was answered.
  const adminPort = herd.adminPort("A");
  assert.match(await rawGet(adminPort, "/status", `attacker.example:${adminPort}`), /^HTTP\/1\.1 403 /);
  await herd.stop("B", "SIGKILL");
  await waitFor(async () => JSON.parse((await herd.admin("A", "/status")).body).links[0].state === "down", {
    what: "A to report its link to B down",
  });
});

Deno.test("the admin endpoint needs a bearer token off loopback, and refuses to start without one", async () => {
  assert.equal(isLoopback("127.0.0.1"), true);
  assert.equal(isLoopback("127.1.2.3"), true);
  assert.equal(isLoopback("::1"), true);
  assert.equal(isLoopback("10.0.0.2"), false);
  assert.equal(isLoopback("0.0.0.0"), false);
  const source = quietSource();
  assert.throws(
    () => serveAdmin({ host: "0.0.0.0", port: 1, token: undefined, source }),
    /faces the network and needs a bearer token: set HERD_ADMIN_TOKEN/,
  );
  const ask = (authorization?: string) =>
    answerAdmin(
      new Request("http://x/healthz", {
        headers: { host: "10.0.0.2:12200", ...authorization === undefined ? {} : { authorization } },
      }),
      { host: "10.0.0.2", token: "s3cret", source },
    );
  for (const response of await Promise.all([ask(), ask("Bearer wrong!"), ask("Basic s3cret"), ask("Bearer s3cre")])) {
    assert.equal(response.status, 401);
    await response.body?.cancel();
  }
  const allowed = await ask("Bearer s3cret");
  assert.equal(allowed.status, 200);
  assert.equal(await allowed.text(), "ok\n");
});

Deno.test("the admin endpoint answers only a Host naming it by address, localhost or its configured host", async () => {
  for (
    const [host, listen, allowed] of [
      ["127.0.0.1:12200", "127.0.0.1", true],
      ["localhost:12200", "127.0.0.1", true],
      ["LOCALHOST", "127.0.0.1", true],
      ["[::1]:12200", "::1", true],
      ["10.0.0.2:9100", "0.0.0.0", true], // scraped by address through a port mapping
      ["herd1.internal:12200", "herd1.internal", true],
      ["Herd1.Internal", "herd1.internal", true],
      ["attacker.example:12200", "127.0.0.1", false],
      ["attacker.example", "herd1.internal", false],
      ["127.0.0.1.attacker.example:12200", "127.0.0.1", false],
      ["127.0.0.1.:12200", "127.0.0.1", false],
      ["256.0.0.1:12200", "0.0.0.0", false],
      ["localhost.attacker.example", "127.0.0.1", false],
      ["127.0.0.1:12200:1", "127.0.0.1", false],
      ["", "127.0.0.1", false],
      [null, "127.0.0.1", false],
    ] as const
  ) {
    assert.equal(hostHeaderAllowed(host, listen), allowed, `Host ${JSON.stringify(host)} on ${listen}`);
  }
  // With a token (off loopback) a rebound page cannot give it, so a name is not refused: a scraper may use DNS names.
  const source = quietSource();
  const byName = (authorization: string) =>
    answerAdmin(
      new Request("http://x/healthz", { headers: { host: "herd1.example:12200", authorization } }),
      { host: "10.0.0.2", token: "s3cret", source },
    );
  assert.equal((await byName("Bearer s3cret")).status, 200);
  assert.equal((await byName("Bearer wrong")).status, 401);
  // Without one (loopback), a name other than the server's is refused.
  const rebound = await answerAdmin(
    new Request("http://x/healthz", { headers: { host: "attacker.example:12200" } }),
    { host: "127.0.0.1", token: undefined, source },
  );
  assert.equal(rebound.status, 403);
  assert.match(await rebound.text(), /^The admin endpoint answers only a request whose Host header names it as an IP /);
});

/** An admin endpoint on 127.0.0.1 (a free port, no token) of a server "Hill" that holds nothing. */
function serveHill(backup: () => Promise<BackupResult> = () => Promise.reject(new Error("no backups here"))) {
  return serveAdmin({ host: "127.0.0.1", port: 0, token: undefined, source: quietSource({ backup }) });
}

Deno.test({
  name: "an admin endpoint refuses a page that rebound its name to it (DNS rebinding), on every path",
  permissions: { net: ["127.0.0.1"] },
}, async () => {
  const server = serveHill();
  try {
    const { port } = server.addr as Deno.NetAddr;
    for (const path of ["/metrics", "/healthz", "/status", "/density"]) {
      const refused = await rawGet(port, path, `attacker.example:${port}`);
      assert.match(refused, /^HTTP\/1\.1 403 /, path);
      assert.match(
        refused,
        /The admin endpoint answers only a request whose Host header names it as an IP address or localhost/,
      );
      assert.doesNotMatch(refused, /Hill/);
      for (const host of [`127.0.0.1:${port}`, `localhost:${port}`]) {
        assert.match(await rawGet(port, path, host), /^HTTP\/1\.1 200 /, `${path} as ${host}`);
      }
    }
  } finally {
    await server.shutdown();
  }
});

Deno.test({
  name: "an admin endpoint answers 400, not a 500 with a stack trace, to a Host that makes no URL",
  permissions: { net: ["127.0.0.1"] },
}, async () => {
  const server = serveHill();
  try {
    const { port } = server.addr as Deno.NetAddr;
    for (const host of ["127.0.0.1:99999", "[1:2:3:4:5:6:7:8:9]"]) {
      const answer = await rawGet(port, "/healthz", host);
      assert.match(answer, /^HTTP\/1\.1 400 /, host);
      assert.match(answer, /the Host header is not a valid host/, host);
    }
    assert.match(await rawGet(port, "/healthz", `127.0.0.1:${port}`), /^HTTP\/1\.1 200 /);
  } finally {
    await server.shutdown();
  }
});

/** Runs `main.ts status` for `herd` (or another config of it) the way `deno task status` does: exit code and output. */
async function status(
  herd: TestHerd,
  configPath = herd.configPath,
): Promise<{ code: number; out: string; ms: number }> {
  const started = performance.now();
  const output = await new Deno.Command("deno", {
    args: [
      "run",
      "--no-prompt",
      `--allow-read=${herd.dir}`,
      "--allow-run=deno",
      MAIN_MODULE,
      "status",
      "--config",
      configPath,
    ],
    stdin: "null",
  }).output();
  return {
    code: output.code,
    out: decoder.decode(output.stdout) + decoder.decode(output.stderr),
    ms: performance.now() - started,
  };
}

/** A herd A - B - C with admin ports, started. */
async function lineOfThree(): Promise<TestHerd> {
  const herd = await TestHerd.create({
    placesUrl: NOWHERE,
    names: ["A", "B", "C"],
    links: [["A", "B"], ["B", "C"]],
    places: { provider: "offline" },
    admin: true,
  });
  await herd.startAll();
  return herd;
}

/** `status` once it exits 0: the herd is whole. */
function statusWhole(herd: TestHerd, configPath?: string): Promise<{ code: number; out: string; ms: number }> {
  return waitFor(async () => {
    const result = await status(herd, configPath);
    return result.code === 0 ? result : undefined;
  }, { what: "the status command to find the herd whole" });
}

Deno.test({
  name: "deno task status exits 0 on a whole herd, and non-zero showing a killed server down",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await lineOfThree();
  await exchange(herd.port("A"), "IAMAT seen +1+1 1700000000\n");
  // Whole once the record reached C: all digests agree.
  const whole = await statusWhole(herd);
  assert.match(whole.out, /^server +state +records +digest +links +cmd\/s +p99 ms +places$/m);
  for (const name of ["A", "B", "C"]) assert.match(whole.out, new RegExp(`^${name} +up +\\d+ +[0-9a-f]{16} = `, "m"));
  assert.match(whole.out, /^B .* 2\/2 /m);
  assert.match(whole.out, /All 3 servers up; their records agree\./);
  assert.ok(whole.ms < 3000, `it answered in ${whole.ms.toFixed(0)} ms`);
  await herd.stop("C", "SIGKILL");
  const broken = await status(herd);
  assert.equal(broken.code, 1);
  assert.match(broken.out, /^C +down \(not reachable\)/m);
  assert.match(broken.out, /^B .* 1\/2 /m);
  assert.match(broken.out, /2 of 3 servers up and healthy/);
  await herd.stop("A", "SIGKILL");
  await herd.stop("B", "SIGKILL");
  assert.match((await status(herd)).out, /None of the 3 servers is up and healthy\./);
});

Deno.test({
  name: "deno task status shows a server without an admin port up when its client port accepts, and exits 0 " +
    "when the others are whole; down when it does not",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await lineOfThree();
  // The same herd as a config that gives C no admin port.
  const config = JSON.parse(await Deno.readTextFile(herd.configPath));
  delete config.servers.C.adminPort;
  const path = `${herd.dir}/no-admin-for-c.json`;
  await Deno.writeTextFile(path, JSON.stringify(config));
  const whole = await statusWhole(herd, path);
  assert.match(whole.out, /^C +up \(no adminPort: its client port accepts\) +- +- +\?\/1 /m);
  assert.match(
    whole.out,
    /All 3 servers up; the records of the 2 with an admin port agree \(1 has none: only its client/,
  );
  await herd.stop("C", "SIGKILL");
  const broken = await status(herd, path);
  assert.equal(broken.code, 1, broken.out);
  assert.match(broken.out, /^C +down \(no adminPort in the config; its client port is not reachable\)/m);
});

/** The sum over `herd`'s servers of the sample `series` in their /metrics. */
Deno.test({
  name: "down its broadcast tree a record is sent once per server (4 sends in the default herd); flooded, 8",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  const sends: Record<string, number> = {};
  for (const broadcast of ["tree", "flood"] as const) {
    // Reconciliation is out of the way: only live records are counted, and no link falls behind in this test.
    await using herd = await TestHerd.create({
      placesUrl: NOWHERE,
      places: { provider: "offline" },
      admin: true,
      peers: { broadcast, reconcileIntervalMs: 600_000 },
    });
    await herd.startAll();
    // A link counts for the trees once it has been up a second, and records are flooded for a second after the link
    // state changed.
    if (broadcast === "tree") {
      await herd.waitLinksInUse();
      await herd.waitTreesSettled();
    }
    const series = 'herd_records_forwarded_total{kind="live"}';
    const before = await herd.metricSum(series);
    const ids = Array.from({ length: 20 }, (_, i) => `tree-${broadcast}-${i}`);
    for (const [i, id] of ids.entries()) {
      // From each server in turn: each has its own tree.
      await exchange(herd.port(herd.names[i % herd.names.length]), `IAMAT ${id} +34-118 1700000000\n`);
    }
    await waitFor(async () => {
      for (const name of herd.names) {
        for (const id of ids) {
          if (!(await exchange(herd.port(name), `WHATSAT ${id} 1 0\n`)).startsWith("AT ")) return false;
        }
      }
      return true;
    }, { what: `the ${broadcast} broadcast to reach every server` });
    sends[broadcast] = await herd.metricSum(series) - before;
  }
  assert.equal(sends.tree, 20 * 4, "one send per server but the origin, per record");
  // Flooding: each server sends to every neighbour but the one it got the record from, 12 link ends less 4.
  assert.equal(sends.flood, 20 * 8, "flooding sends each record 8 times in the default herd");
});

Deno.test({
  name: "deno task status shows a server whose admin port answers no herd status, an HTTP error, or wants a token, " +
    "as unknown, not as a stack trace or as unreachable",
  permissions: { net: ["127.0.0.1"] },
}, async () => {
  const answers: Record<string, () => Response> = {
    A: () => Response.json({ hello: "another program" }),
    B: () => new Response("<html>another program</html>"),
    C: () => new Response("A bearer token is required (HERD_ADMIN_TOKEN)\n", { status: 401 }),
    D: () => new Response("Not Found\n", { status: 404 }),
    E: () => new Response("Service Unavailable\n", { status: 503 }),
  };
  const servers = Object.entries(answers).map(([name, answer]) => ({
    name,
    server: Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, answer),
  }));
  try {
    const config = parseConfig(
      JSON.stringify({
        servers: Object.fromEntries(servers.map(({ name, server }, i) => [name, {
          host: "127.0.0.1",
          port: 1 + 2 * i,
          peerPort: 2 + 2 * i,
          adminPort: server.addr.port,
        }])),
        links: [["A", "B"], ["B", "C"], ["C", "D"], ["D", "E"]],
        places: { url: NOWHERE },
        logDir: "logs",
      }),
      "/tmp/herd-status-test/herd.config.json",
    );
    const { text, whole } = statusTable(config, await askServers(config, undefined));
    assert.equal(whole, false);
    const row = (name: string) => text.split("\n").find((line) => line.startsWith(`${name} `)) ?? "";
    assert.match(
      row("A"),
      /unknown \(its \/status is not a herd server's status: another program on its adminPort\?\)/,
    );
    assert.match(row("B"), /unknown \(its \/status is not JSON: another program on its adminPort\?\)/);
    assert.match(row("C"), /unknown \(HTTP 401: its admin endpoint wants a bearer token; set HERD_ADMIN_TOKEN\)/);
    // Something answered, if not a herd server: not down.
    assert.match(row("D"), /unknown \(HTTP 404: it has no \/status: another program on its adminPort\?\)/);
    assert.match(row("E"), /unknown \(HTTP 503\)/);
  } finally {
    for (const { server } of servers) await server.shutdown();
  }
});

Deno.test("isStatusReport() takes a server's /status and refuses one without a field that status or the dashboard reads", () => {
  const report: StatusReport = {
    name: "Hill",
    uptimeS: 12,
    health: { ok: true, reason: "ok" },
    records: 3,
    digest: "ab12",
    links: [{ neighbour: "Smith", state: "up", queued: 0, ackWaits: 0, lastReconciliation: null }],
    rates: { commandsPerSecond: 1.5, replyP99Ms: null },
    places: { provider: "offline", cacheEntries: 0 },
    clientConnections: 1,
    rssBytes: 1,
  };
  assert.equal(isStatusReport(report), true);
  assert.equal(isStatusReport({ ...report, rates: { commandsPerSecond: 1, replyP99Ms: 2.5 } }), true);
  for (const field of ["uptimeS", "health", "records", "digest", "links", "rates", "places", "clientConnections"]) {
    const { [field as keyof StatusReport]: _, ...without } = report;
    assert.equal(isStatusReport(without), false, field);
  }
  assert.equal(isStatusReport({ ...report, links: [{ neighbour: "Smith" }] }), false, "a link without its state");
  assert.equal(isStatusReport({ ...report, health: { ok: "yes", reason: "" } }), false, "health.ok not a boolean");
  for (const other of [null, [], "status", 1, {}]) assert.equal(isStatusReport(other), false, JSON.stringify(other));
});

Deno.test({
  name: "POST /backup answers the backup as JSON, 409 when refused, 500 on failure; not to a web page (Origin), " +
    "nor to GET",
  permissions: { net: ["127.0.0.1"] },
}, async () => {
  const answers: (() => Promise<BackupResult>)[] = [
    () => Promise.resolve({ path: "/data/backups/Hill-1.db", rows: 3, bytes: 8192, ms: 2 }),
    () => Promise.reject(new BackupRefused("a backup is being taken already")),
    () => Promise.reject(new Error("No space left on device (os error 28)")),
  ];
  let taken = 0;
  const server = serveHill(() => answers[taken++]());
  try {
    const { port } = server.addr as Deno.NetAddr;
    const post = async (headers: Record<string, string> = {}) => {
      const response = await fetch(`http://127.0.0.1:${port}/backup`, { method: "POST", headers });
      return { status: response.status, body: await response.json() };
    };
    assert.deepEqual(await post(), {
      status: 200,
      body: { path: "/data/backups/Hill-1.db", rows: 3, bytes: 8192, ms: 2 },
    });
    assert.deepEqual(await post(), { status: 409, body: { error: "a backup is being taken already" } });
    assert.deepEqual(await post(), { status: 500, body: { error: "No space left on device (os error 28)" } });
    // A form on a page posting to 127.0.0.1 gives our own Host, but its Origin says where it comes from.
    const fromPage = await post({ origin: "https://attacker.example" });
    assert.equal(fromPage.status, 403);
    assert.match(fromPage.body.error, /not taken for a web page/);
    const get = await fetch(`http://127.0.0.1:${port}/backup`);
    assert.equal(get.status, 405);
    assert.equal(get.headers.get("allow"), "POST");
    await get.body?.cancel();
    assert.match(await rawGet(port, "/backup", `attacker.example:${port}`), /^HTTP\/1\.1 403 /);
    assert.equal(taken, 3, "the page, GET and the rebound name took no backup");
  } finally {
    await server.shutdown();
  }
});

Deno.test({
  name: "GET /backups lists the server's copies; GET and DELETE /backups/<file> send and remove one, only with the " +
    "bearer token, never the copy being written, a name a backup does not give, a link, or to a web page",
  permissions: { net: ["127.0.0.1"], read: ["/tmp"], write: ["/tmp"], run: ["deno"] },
}, async () => {
  const directory = await Deno.makeTempDir({ prefix: "herd-backups-" });
  const files = new BackupFiles(directory, "Hill");
  const copy = "Hill-20261204T014315384Z.db";
  const bytes = new Uint8Array(100_000).map((_, i) => i % 251);
  await Deno.writeFile(`${directory}/${copy}`, bytes);
  // Not Hill's copies, or not copies at all: never listed, sent or removed.
  await Deno.writeTextFile(`${directory}/Jaquez-20261204T014315384Z.db`, "another server's");
  await Deno.writeTextFile(`${directory}/Hill-notes.db`, "not a backup's name");
  await Deno.writeTextFile(`${directory}/secret`, "outside");
  // Deno.symlink() wants unscoped permissions, which the test runs without: a child makes the link.
  const link = await new Deno.Command("deno", {
    args: ["eval", `Deno.symlinkSync("${directory}/secret", "${directory}/Hill-20261204T014315385Z.db")`, "-A"],
  }).output();
  assert.ok(link.success, decoder.decode(link.stderr));
  await Deno.mkdir(`${directory}/Hill-20261204T014315387Z.db`);
  const source = quietSource({
    backups: () => files.list(),
    openBackup: (file) => files.open(file),
    removeBackup: (file) => files.remove(file),
  });
  const withToken = serveAdmin({ host: "127.0.0.1", port: 0, token: "s3cret", source });
  const without = serveAdmin({ host: "127.0.0.1", port: 0, token: undefined, source });
  try {
    const base = `http://127.0.0.1:${(withToken.addr as Deno.NetAddr).port}`;
    const authorization = "Bearer s3cret";
    const ask = async (path: string, init: RequestInit = {}, url = base) => {
      const response = await fetch(`${url}${path}`, init);
      return { status: response.status, headers: response.headers, body: new Uint8Array(await response.arrayBuffer()) };
    };
    const json = (body: Uint8Array) => JSON.parse(decoder.decode(body));

    const listed = await ask("/backups", { headers: { authorization } });
    assert.equal(listed.status, 200);
    assert.deepEqual(json(listed.body).backups.map((b: { file: string; bytes: number }) => [b.file, b.bytes]), [
      [copy, bytes.length],
    ]);
    assert.equal((await ask(`/backups/${copy}`)).status, 401, "no token");

    const sent = await ask(`/backups/${copy}`, { headers: { authorization } });
    assert.equal(sent.status, 200);
    assert.equal(sent.headers.get("content-length"), String(bytes.length));
    assert.equal(sent.headers.get("content-type"), "application/vnd.sqlite3");
    assert.deepEqual(sent.body, bytes);
    const head = await ask(`/backups/${copy}`, { method: "HEAD", headers: { authorization } });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get("content-length"), String(bytes.length));
    assert.equal(head.body.length, 0);

    for (
      const name of [
        "Jaquez-20261204T014315384Z.db",
        "Hill-notes.db",
        "secret",
        "..%2Fsecret",
        "Hill-20261204T014315385Z.db", // the link
        "Hill-20261204T014315387Z.db", // a directory
        "Hill-20261204T014315386Z.db", // none by that name
      ]
    ) {
      const refused = await ask(`/backups/${name}`, { headers: { authorization } });
      assert.equal(refused.status, 404, name);
      assert.match(json(refused.body).error, /not the name of a backup of Hill|not a file|no backup/, name);
      assert.equal((await ask(`/backups/${name}`, { method: "DELETE", headers: { authorization } })).status, 404);
    }
    const page = await ask(`/backups/${copy}`, { headers: { authorization, origin: "https://attacker.example" } });
    assert.equal(page.status, 403);
    assert.match(json(page.body).error, /not sent or removed for a web page/);
    const put = await ask(`/backups/${copy}`, { method: "PUT", headers: { authorization }, body: "x" });
    assert.equal(put.status, 405);
    assert.equal(put.headers.get("allow"), "GET, HEAD, DELETE");

    // A server without a token lists its copies but never sends or removes one, even on loopback.
    const open = `http://127.0.0.1:${(without.addr as Deno.NetAddr).port}`;
    assert.equal((await ask("/backups", {}, open)).status, 200);
    for (const method of ["GET", "DELETE"]) {
      const refused = await ask(`/backups/${copy}`, { method }, open);
      assert.equal(refused.status, 403, method);
      assert.match(
        json(refused.body).error,
        /only with a bearer token, and this server has none: set HERD_ADMIN_TOKEN/,
      );
    }

    // The copy being written is neither listed nor sent nor removed.
    files.inProgress = copy;
    assert.deepEqual(json((await ask("/backups", { headers: { authorization } })).body).backups, []);
    const writing = await ask(`/backups/${copy}`, { headers: { authorization } });
    assert.equal(writing.status, 409);
    assert.match(json(writing.body).error, /is being written/);
    assert.equal((await ask(`/backups/${copy}`, { method: "DELETE", headers: { authorization } })).status, 409);
    files.inProgress = undefined;

    const removed = await ask(`/backups/${copy}`, { method: "DELETE", headers: { authorization } });
    assert.equal(removed.status, 200);
    assert.deepEqual(json(removed.body), { removed: copy });
    assert.equal((await ask(`/backups/${copy}`, { headers: { authorization } })).status, 404);
    assert.deepEqual([...Deno.readDirSync(directory)].map((entry) => entry.name).sort(), [
      "Hill-20261204T014315385Z.db",
      "Hill-20261204T014315387Z.db",
      "Hill-notes.db",
      "Jaquez-20261204T014315384Z.db",
      "secret",
    ]);
  } finally {
    await withToken.shutdown();
    await without.shutdown();
    await Deno.remove(directory, { recursive: true });
  }
});
