/**
 * Test helpers that build the real thing cheaply: a herd of real server
 * processes on loopback with a generated config and its certificates,
 * started with exactly the permission flags `deno task serve` gives them,
 * optionally with a fault proxy on every directed link, and small TCP
 * clients.
 */

import { makeCertificates } from "../../lib/cli/certs.ts";
import { certFiles, type HerdConfig, loadConfig } from "../../lib/config/config.ts";
import { envFileFor, serverRunArgs } from "../../lib/cli/launcher.ts";
import { concatBytes, writeAll } from "../../lib/net/write.ts";
import { type Fault, FaultProxy } from "./fault_proxy.ts";
import { PeerProbe } from "./peer_probe.ts";
import type { PeerTlsFiles } from "../../lib/peer/transport.ts";
import { waitFor } from "./wait.ts";

/** The default herd's names. */
export const DEFAULT_NAMES = ["Hill", "Jaquez", "Smith", "Campbell", "Singleton"];
/** The default herd's links. */
export const DEFAULT_LINKS: [string, string][] = [
  ["Hill", "Jaquez"],
  ["Hill", "Smith"],
  ["Smith", "Campbell"],
  ["Singleton", "Jaquez"],
  ["Singleton", "Smith"],
  ["Singleton", "Campbell"],
];

/** Permissions an integration test needs; tests narrow to these with `Deno.test({ permissions })`. */
export const HERD_TEST_PERMISSIONS: Deno.PermissionOptionsObject = {
  net: ["127.0.0.1"],
  run: ["deno"],
  read: [".", "/tmp"],
  write: ["/tmp"],
  env: false,
};

const _encoder = new TextEncoder();
const _decoder = new TextDecoder();

/** How a suite module runs: with TLS peer links, or (imported with `?plain`) with plain-text ones. */
export interface SuiteMode {
  /** The `peers.tls` its herds get. */
  tls: boolean;
  /** What its test names end with, so the two runs are told apart. */
  suffix: string;
}

/**
 * The mode of the suite at `moduleUrl` (its `import.meta.url`): the
 * protocol and fault suites run as themselves with TLS peer links, and
 * again from tests/plaintext_test.ts with `"tls": false`.
 */
export function suiteMode(moduleUrl: string): SuiteMode {
  const plain = new URL(moduleUrl).searchParams.has("plain");
  return { tls: !plain, suffix: plain ? " [plain-text peer links]" : "" };
}

/** Distinct free TCP ports on 127.0.0.1. */
export function freePorts(count: number): number[] {
  const listeners = Array.from({ length: count }, () => Deno.listen({ hostname: "127.0.0.1", port: 0 }));
  const ports = listeners.map((listener) => listener.addr.port);
  listeners.forEach((listener) => listener.close());
  return ports;
}

/** Options for {@linkcode TestHerd.create}. */
export interface TestHerdOptions {
  /** Places URL (the fake's). */
  placesUrl: string;
  /** Places API key given to the servers; none when undefined. */
  key?: string;
  /** Server names; {@linkcode DEFAULT_NAMES} when omitted. */
  names?: string[];
  /** Links between them; {@linkcode DEFAULT_LINKS} when omitted. */
  links?: [string, string][];
  /** Extra fields of the config's `places` (provider, newUrl, timeout and cache settings). */
  places?: {
    provider?: "auto" | "google-legacy" | "google-new" | "offline";
    url?: string;
    newUrl?: string;
    timeoutMs?: number;
    cacheTtlMs?: number;
    cacheEntries?: number;
    maxConcurrent?: number;
    maxQueued?: number;
    errorTtlMs?: number;
  };
  /** Fields of the config's `peers` (ackTimeoutMs, ackScope, broadcast, ...) over the harness's fast reconnects. */
  peers?: {
    reconnectMinMs?: number;
    reconnectMaxMs?: number;
    ackTimeoutMs?: number;
    ackScope?: "neighbours" | "herd";
    reconcileIntervalMs?: number;
    tls?: boolean;
    broadcast?: "tree" | "flood";
    heartbeatMs?: number;
    heartbeatTimeoutMs?: number;
  };
  /**
   * Puts a {@linkcode FaultProxy} on every directed link: each server dials
   * each neighbour through a proxy of its own (its config's `peerAddress`
   * for that neighbour), so faults are set per link even though TLS hides
   * who is dialling.
   */
  faultProxies?: boolean;
  /** Proxies keep a copy of this many bytes they forward (see {@linkcode FaultProxy.captured}). */
  captureBytes?: number;
  /** Peer links over TLS (the default) or plain text: the config's `peers.tls`. */
  tls?: boolean;
  /** Gives every server an admin port (`servers.<Name>.adminPort`): `/metrics`, `/healthz`, `/status`, `/density`. */
  admin?: boolean;
  /** Extra top-level config fields; they replace what the options above wrote. */
  extra?: Record<string, unknown>;
}

interface _Running {
  child: Deno.ChildProcess;
  /** What the server wrote to stderr so far. */
  stderr: string;
  /** Reads stderr until the server exits. */
  reading: Promise<void>;
  /** Its exit code, once it exited. */
  exitCode?: number;
}

/** A herd of server processes for one test. */
export class TestHerd implements AsyncDisposable {
  /** The test's temporary directory: config, logs and databases. */
  readonly dir: string;
  /** The generated config file. */
  readonly configPath: string;
  /** The configured servers, started or not. */
  readonly names: string[];
  #ports = new Map<string, { port: number; peerPort: number; adminPort: number | undefined }>();
  /** The proxy of each directed link, by `dialler>target`. */
  #proxies = new Map<string, FaultProxy>();
  /** Each server's own config file, when the servers see different peer addresses (proxied links). */
  #configPaths = new Map<string, string>();
  #config: HerdConfig | undefined;
  #running = new Map<string, _Running>();
  #key: string | undefined;

  private constructor(dir: string, names: string[], key: string | undefined) {
    this.dir = dir;
    this.configPath = `${dir}/herd.config.json`;
    this.names = names;
    this.#key = key;
  }

  /** Writes a config for a herd on free loopback ports in a new temporary directory. */
  static async create(options: TestHerdOptions): Promise<TestHerd> {
    const names = options.names ?? DEFAULT_NAMES;
    const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "herd-test-" });
    const herd = new TestHerd(dir, names, options.key);
    const links = options.links ?? DEFAULT_LINKS;
    // One batch for every port the herd uses, the proxies' too: a proxy listening on port 0 after the batch was
    // released could be given a server's port, and the server would then fail to bind while the proxy accepts for it.
    const ports = freePorts(names.length * 3 + (options.faultProxies ? 2 * links.length : 0));
    const proxyPorts = ports.slice(names.length * 3);
    const servers: Record<
      string,
      { host: string; port: number; peerPort: number; peerAddress?: string; adminPort?: number }
    > = {};
    names.forEach((name, index) => {
      const entry = { host: "127.0.0.1", port: ports[3 * index], peerPort: ports[3 * index + 1] };
      const adminPort = options.admin ? ports[3 * index + 2] : undefined;
      herd.#ports.set(name, { port: entry.port, peerPort: entry.peerPort, adminPort });
      servers[name] = adminPort === undefined ? entry : { ...entry, adminPort };
    });
    const config = {
      servers,
      links,
      // Both Google endpoints point at the fake: a test never reaches past loopback.
      places: {
        url: options.placesUrl,
        newUrl: new URL("/v1/places:searchNearby", options.placesUrl).href,
        timeoutMs: 1000,
        ...options.places,
      },
      logDir: "logs",
      peers: {
        reconnectMinMs: 20,
        reconnectMaxMs: 200,
        ...(options.tls === undefined ? {} : { tls: options.tls }),
        ...options.peers,
      },
      ...options.extra,
    };
    await Deno.writeTextFile(herd.configPath, JSON.stringify(config, null, 2));
    herd.#config = await loadConfig(herd.configPath);
    if (herd.#config.peers.tls) await makeCertificates(herd.#config);
    if (options.faultProxies) {
      for (const dialler of names) {
        const own = structuredClone(servers);
        for (const [a, b] of links) {
          if (a !== dialler && b !== dialler) continue;
          const target = a === dialler ? b : a;
          const proxy = new FaultProxy({
            port: proxyPorts.pop(),
            targetPort: servers[target].peerPort,
            source: dialler,
            captureBytes: options.captureBytes,
          });
          herd.#proxies.set(`${dialler}>${target}`, proxy);
          own[target] = { ...own[target], peerAddress: proxy.address };
        }
        const path = `${dir}/herd.config.${dialler}.json`;
        await Deno.writeTextFile(path, JSON.stringify({ ...config, servers: own }, null, 2));
        herd.#configPaths.set(dialler, path);
      }
    }
    return herd;
  }

  /** The config file `name` runs with: the herd's, or its own when links are proxied. */
  configPathOf(name: string): string {
    return this.#configPaths.get(name) ?? this.configPath;
  }

  /**
   * Gives `name` a config of its own from now on: the herd's file as JSON,
   * changed by `edit` (a server not told of a change yet, as when a change
   * is rolled out one server at a time).
   */
  async configureOnly(name: string, edit: (config: Record<string, unknown>) => void): Promise<void> {
    const config = JSON.parse(await Deno.readTextFile(this.configPathOf(name)));
    edit(config);
    const path = `${this.dir}/herd.config.${name}.json`;
    await Deno.writeTextFile(path, JSON.stringify(config, null, 2));
    this.#configPaths.set(name, path);
  }

  /** The herd's config, as the servers read it. */
  get config(): HerdConfig {
    return this.#config!;
  }

  /** Client port of `name`. */
  port(name: string): number {
    return this.#ports.get(name)!.port;
  }

  /**
   * Starts `name` with the same flags `deno task serve` uses (a `.env`
   * beside its config read with `--env-file`) and waits until
   * its client port accepts (within `timeoutMs`, 10 s by default); with
   * `fileLimit`, under `prlimit` allowed that many open files (the test must
   * be allowed to run `prlimit`).
   */
  async start(name: string, options: { fileLimit?: number; timeoutMs?: number } = {}): Promise<void> {
    const config = await loadConfig(this.configPathOf(name));
    // A .env beside the config is read as deno task serve reads it (--env-file).
    const args = serverRunArgs(config, name, { keyPresent: this.#key !== undefined, envFile: envFileFor(config) });
    const limit = options.fileLimit;
    const child = new Deno.Command(limit === undefined ? "deno" : "prlimit", {
      args: limit === undefined ? args : [`--nofile=${limit}:${limit}`, "deno", ...args],
      env: this.#key === undefined ? {} : { GOOGLE_PLACES_API_KEY: this.#key },
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const running: _Running = { child, stderr: "", reading: Promise.resolve() };
    running.reading = (async () => {
      for await (const text of child.stderr.pipeThrough(new TextDecoderStream())) running.stderr += text;
    })();
    this.#running.set(name, running);
    let exited: number | undefined;
    child.status.then((status) => exited = running.exitCode = status.code);
    let listening = false;
    try {
      await waitFor(async () => (listening = await _accepts(this.port(name))) || exited !== undefined, {
        timeoutMs: options.timeoutMs ?? 10_000,
        stepMs: 20,
        what: `${name} to listen on its client port`,
      });
    } catch (error) {
      await this.stop(name, "SIGKILL");
      throw error;
    }
    if (!listening) {
      const { stderr } = await this.stop(name, "SIGKILL");
      throw new Error(`${name} exited with code ${exited} before listening: ${stderr}`);
    }
  }

  /** Starts every server, then waits until every server's records reach every other server. */
  async startAll(): Promise<void> {
    await Promise.all(this.names.map((name) => this.start(name)));
    await this.waitConverged(this.names);
  }

  /**
   * Waits (polling, bounded) until a probe IAMAT at each of `names` is
   * visible by WHATSAT at each of the others: the links between them are up.
   * A record flooded while a link is still down skips that link, so each
   * round sends newer probes.
   */
  async waitConverged(names: string[], timeoutMs = 10_000): Promise<void> {
    const probes = names.map((name) => `probe-${name}-${crypto.randomUUID()}`);
    // Times of now, each round later by a nanosecond: not expired under records.ttlS, not from the future.
    const now = Math.floor(Date.now() / 1000);
    let round = 0;
    let missing: string[] = [];
    await waitFor(async () => {
      round++;
      const time = `${now}.${String(round).padStart(9, "0")}`;
      await Promise.all(names.map((name, i) => exchange(this.port(name), `IAMAT ${probes[i]} +0+0 ${time}\n`)));
      missing = [];
      for (const name of names) {
        for (const probe of probes) {
          const reply = await exchange(this.port(name), `WHATSAT ${probe} 1 0\n`);
          if (!reply.startsWith(`AT `) || !reply.split("\n")[0].endsWith(` ${time}`)) {
            missing.push(`${probe} at ${name}`);
          }
        }
      }
      return missing.length === 0;
    }, { timeoutMs, what: () => `the herd to converge; missing ${missing.join(", ")}${this.#postMortem(names)}` });
  }

  /** For a failure message: which of `names` exited, and what each wrote to stderr. */
  #postMortem(names: string[]): string {
    let text = "";
    for (const name of names) {
      const running = this.#running.get(name);
      if (running === undefined) text += `\n${name} is not running`;
      else if (running.exitCode !== undefined || running.stderr !== "") {
        const exited = running.exitCode === undefined ? "running" : `exited with code ${running.exitCode}`;
        text += `\n${name} (${exited}) wrote to stderr: ${running.stderr.slice(-2000)}`;
      }
    }
    return text;
  }

  /** Sends `signal` to `name` and waits for it to exit; returns its status and what it wrote to stderr. */
  async stop(name: string, signal: Deno.Signal = "SIGTERM"): Promise<{ code: number; stderr: string }> {
    const running = this.#running.get(name);
    if (running === undefined) throw new Error(`${name} is not running`);
    this.#running.delete(name);
    try {
      running.child.kill(signal);
    } catch { /* already exited */ }
    const status = await running.child.status;
    await running.reading;
    return { code: status.code, stderr: running.stderr };
  }

  /** The exit code of `name`, started and not stopped, once it exited by itself; undefined while it runs. */
  exitCode(name: string): number | undefined {
    const running = this.#running.get(name);
    if (running === undefined) throw new Error(`${name} is not running`);
    return running.exitCode;
  }

  /** What `name`, running, has written to stderr so far (its warnings, such as a lagging link). */
  stderr(name: string): string {
    const running = this.#running.get(name);
    if (running === undefined) throw new Error(`${name} is not running`);
    return running.stderr;
  }

  /** Admin port of `name`; the herd must be created with `admin`. */
  adminPort(name: string): number {
    const port = this.#ports.get(name)?.adminPort;
    if (port === undefined) throw new Error(`${name} has no admin port: create the herd with admin: true`);
    return port;
  }

  /** `GET` of an admin path of `name` (`/metrics`, `/healthz`, `/status`, `/density`): status and body. */
  async admin(name: string, path: string): Promise<{ status: number; body: string }> {
    const response = await fetch(`http://127.0.0.1:${this.adminPort(name)}${path}`);
    return { status: response.status, body: await response.text() };
  }

  /** Peer port of `name`. */
  peerPort(name: string): number {
    return this.#ports.get(name)!.peerPort;
  }

  /** Process id of `name`. */
  pid(name: string): number {
    return this.#running.get(name)!.child.pid;
  }

  /** Sends `signal` to `name` without waiting (SIGSTOP, SIGCONT). */
  signal(name: string, signal: Deno.Signal): void {
    this.#running.get(name)!.child.kill(signal);
  }

  /** The log file of `name`. */
  log(name: string): Promise<string> {
    return Deno.readTextFile(`${this.dir}/logs/${name}.log`);
  }

  /**
   * Waits until every running server counts on each of its links for the
   * broadcast trees, both ways (`herd_peer_link_in_use`: up for a second and
   * keeping up; `herd_peer_link_from_live`: the neighbour's link into it up
   * for a second), so that its link state holds still; the herd must be
   * created with `admin`. A server with a lagging link is sent an IAMAT of a
   * client of its own (`settle-...`) at each look, to let the link catch up
   * without waiting for its heartbeat's probe.
   */
  async waitLinksInUse(timeoutMs = 30_000): Promise<void> {
    // A generous limit: a herd just started on a loaded machine takes a while to have every link up for a second.
    let notYet: string[] = [];
    await waitFor(async () => {
      notYet = [];
      const lagging = new Set<string>();
      for (const name of this.#running.keys()) {
        for (const [series, value] of await this.metrics(name)) {
          const counted = series.startsWith("herd_peer_link_in_use{") || series.startsWith("herd_peer_link_from_live{");
          if (counted && value === 0) notYet.push(`${name}: ${series}`);
          if (series.startsWith("herd_peer_link_lagging{") && value === 1) lagging.add(name);
        }
      }
      // A link marked lagging (an acknowledgement of waitConverged()'s probes came late on a loaded machine) catches up
      // when a record it sends is acknowledged in time: the probe at its next heartbeat, or at once a record of a
      // client of its server's own (for the tests whose heartbeats are too slow to wait for).
      await Promise.all(
        [...lagging].map((name) =>
          exchange(this.port(name), `IAMAT settle-${crypto.randomUUID().slice(0, 8)} +0+0 ${Date.now() / 1000}\n`)
        ),
      );
      return notYet.length === 0;
    }, { timeoutMs, stepMs: 200, what: () => `every link in use (not yet: ${notYet.join(", ")})` });
  }

  /**
   * Waits until every running server sends records down its broadcast
   * trees (`herd_broadcast_flooding` 0: a second after the link state last
   * changed); the herd must be created with `admin` and trees.
   */
  async waitTreesSettled(timeoutMs = 10_000): Promise<void> {
    await waitFor(async () => {
      for (const name of this.#running.keys()) {
        if ((await this.metrics(name)).get("herd_broadcast_flooding") !== 0) return false;
      }
      return true;
    }, { timeoutMs, what: "every server to send down its trees" });
  }

  /** `name`'s `/metrics` samples, by series (the name and its labels, as printed); the herd must have `admin`. */
  async metrics(name: string): Promise<Map<string, number>> {
    const samples = new Map<string, number>();
    for (const line of (await this.admin(name, "/metrics")).body.split("\n")) {
      if (line === "" || line.startsWith("#")) continue;
      const space = line.lastIndexOf(" ");
      samples.set(line.slice(0, space), Number(line.slice(space + 1)));
    }
    return samples;
  }

  /**
   * The sum over `names` (every running server by default) of the samples
   * of series `series`, or of every series of a metric when `series` is a
   * bare metric name; 0 where there are none.
   */
  async metricSum(series: string, names: Iterable<string> = this.#running.keys()): Promise<number> {
    let sum = 0;
    for (const name of [...names]) {
      for (const [key, value] of await this.metrics(name)) {
        if (key === series || key.startsWith(`${series}{`)) sum += value;
      }
    }
    return sum;
  }

  /** The store digest of running `name`, asked over its peer port by a probe introduced as `as`, a configured neighbour that is never started. */
  async digestOf(name: string, as = "Probe"): Promise<string> {
    await using probe = await PeerProbe.connect({
      server: name,
      port: this.peerPort(name),
      as,
      files: this.tlsFiles(as),
    });
    return await probe.digest();
  }

  /** The TLS files of `name` (certificate, key, the herd's CA), or null when the herd's links are plain text. */
  tlsFiles(name: string): PeerTlsFiles | null {
    if (!this.config.peers.tls) return null;
    const files = certFiles(this.config);
    return { ca: files.ca, cert: files.cert(name), key: files.key(name) };
  }

  /** The proxy of the link `dialler` dials to `target`; the herd must be created with `faultProxies`. */
  linkProxy(dialler: string, target: string): FaultProxy {
    const proxy = this.#proxies.get(`${dialler}>${target}`);
    if (proxy === undefined) {
      throw new Error(`No proxy on ${dialler}'s link to ${target}: create the herd with faultProxies: true`);
    }
    return proxy;
  }

  /** Every link proxy, by `dialler>target`. */
  get linkProxies(): ReadonlyMap<string, FaultProxy> {
    return this.#proxies;
  }

  /** The proxies in front of `name`'s peer port, seen as one proxy whose sources are the neighbours dialling it. */
  proxy(name: string): TargetProxies {
    return new TargetProxies((source) => this.linkProxy(source, name));
  }

  /** Sets `fault` on the link between `a` and `b`, both ways: `a`'s connection to `b` and `b`'s to `a`. */
  link(a: string, b: string, fault: Fault): void {
    this.linkProxy(a, b).setAll(fault);
    this.linkProxy(b, a).setAll(fault);
  }

  /** Kills every server still running, closes the fault proxies and removes the directory. */
  async [Symbol.asyncDispose](): Promise<void> {
    await Promise.all([...this.#running.keys()].map((name) => this.stop(name, "SIGKILL")));
    await Promise.all([...this.#proxies.values()].map((proxy) => proxy.close()));
    await Deno.remove(this.dir, { recursive: true });
  }
}

/** The link proxies into one server, by dialler: a fault or counters per neighbour. */
export class TargetProxies {
  #of: (source: string) => FaultProxy;

  /** A view over the proxies `of` gives for each dialler. */
  constructor(of: (source: string) => FaultProxy) {
    this.#of = of;
  }

  /** Sets the fault of `source`'s link to the server. */
  set(source: string, fault: Fault): void {
    this.#of(source).setAll(fault);
  }

  /** Counters of `source`'s link to the server. */
  stats(source: string): ReturnType<FaultProxy["stats"]> {
    return this.#of(source).stats();
  }
}

/** Whether something accepts a connection on `port` now. */
async function _accepts(port: number): Promise<boolean> {
  try {
    (await Deno.connect({ hostname: "127.0.0.1", port })).close();
    return true;
  } catch {
    return false;
  }
}

/** Connects, sends `request`, half-closes, and reads everything until the server closes. */
export async function exchangeBytes(port: number, request: string | Uint8Array): Promise<Uint8Array> {
  using conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const bytes = typeof request === "string" ? _encoder.encode(request) : request;
  await writeAll(conn, bytes);
  await conn.closeWrite();
  const chunks: Uint8Array[] = [];
  const buffer = new Uint8Array(64 * 1024);
  while (true) {
    const n = await conn.read(buffer);
    if (n === null) break;
    chunks.push(buffer.slice(0, n));
  }
  return concatBytes(chunks);
}

/** {@linkcode exchangeBytes}, decoded as UTF-8. */
export async function exchange(port: number, request: string | Uint8Array): Promise<string> {
  return _decoder.decode(await exchangeBytes(port, request));
}
