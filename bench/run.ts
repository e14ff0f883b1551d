/**
 * `deno task bench`: the herd against its references on this machine, in
 * one run. Builds the C load generator; starts a five-server herd with
 * the shipped defaults (and the same herd with plain-text links, and with
 * records flooded), a Redis herd (five `redis-server`s
 * replicating along a spanning tree of the same graph over mutually
 * authenticated TLS, with AOF; `redis_herd.ts`), a plain Redis
 * (persistence off), a bare Deno line echo, a single server for memory
 * and start-up, and the fake Places server; runs the scenarios of
 * docs/PERFORMANCE.md; writes bench/results/latest.json, latest.md and two
 * SVG charts. Bounded to a few minutes.
 *
 * Needs gcc, redis-server, redis-benchmark, redis-cli and openssl (Debian:
 * `apt-get install gcc redis-server redis-tools openssl`). Whatever is
 * missing is named in the results, and the ratios it would have given are
 * not reported: a timing without its reference from the same run is not a
 * result. The Redis herd's certificates are made with openssl in a
 * temporary directory, unless HERD_BENCH_CERTS names a certificate
 * directory (`ca.crt`, `<Name>.crt`, `<Name>.key`; see `certs.ts`).
 *
 * The servers' CPU time is read by the load generator from
 * /proc/<pid>/stat (`--server-pid`): Deno would need to read all of /proc.
 */

import { startFakePlaces } from "../tests/testing/fake_places.ts";
import { exchange, freePorts, TestHerd } from "../tests/testing/herd.ts";
import { checkCertificateDir, makeCertificateDir } from "./certs.ts";
import { commandExists, delay, firstLine, runCommand as run } from "./command.ts";
import { measureStartups } from "./startup.ts";
import { RedisHerd } from "./redis_herd.ts";
import { type Skeleton, startSkeleton } from "./skeleton.ts";
import { barChart } from "./svg.ts";
import { waitFor } from "../tests/testing/wait.ts";

const LOADGEN = "bench/.build/loadgen";
const RESULTS = "bench/results";
const SECONDS = Number(Deno.env.get("HERD_BENCH_SECONDS") ?? 3);
const REPEATS = 3;
/**
 * Seconds of load each of the three herds takes before its measured runs of
 * scenarios 1 and 2, half request/response and half pipelined; none by
 * default. V8 compiles a server's hot paths while they run, and a lone herd
 * under this load was still compiling, and getting faster, 20 s in; in the
 * bench a 20 s warm-up did not raise the measured runs (docs/PERFORMANCE.md,
 * "Third round"). With a warm-up, the TLS herd's first runs after start-up
 * are measured before it and reported on their own (`cold`).
 */
const WARMUP_SECONDS = Number(Deno.env.get("HERD_BENCH_WARMUP_SECONDS") ?? 0);
/** A certificate directory for the Redis herd's TLS; a temporary one is made when unset. */
const CERT_DIR = Deno.env.get("HERD_BENCH_CERTS");
/** How long a write to the Redis herd waits for its replicas' acknowledgements (`WAIT n ACK_TIMEOUT_MS`). */
const ACK_TIMEOUT_MS = 500;

/**
 * The bars (issue 14): scenarios 1 and 2 against the Redis herd, 3 against
 * the Deno echo, 4 in absolute terms, and 5, 6 and 7 no worse than the run
 * of 2026-11-23 (29,917 WHATSAT/s warm, 171 B per client, 72 ms).
 */
const BARS = {
  rrVsRedisHerd: 0.6,
  pipelinedVsRedisHerd: 1.0,
  halfcloseVsEcho: 0.5,
  propagationUnloadedP99Ms: 2,
  propagationHalfLoadP99Ms: 5,
  whatsatWarmPerS: 29_917,
  memoryBytesPerClient: 171,
  startupMs: 72,
};
const decoder = new TextDecoder();

// deno-lint-ignore no-explicit-any
type Json = any;

async function loadgen(args: string[]): Promise<Json> {
  const { code, stdout, stderr } = await run(LOADGEN, args);
  if (code !== 0) throw new Error(`loadgen ${args.join(" ")} failed (${code}): ${stderr}`);
  return JSON.parse(stdout.trim().split("\n").at(-1)!);
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/** The run whose `metric` is the median of the runs'. */
function medianBy(runs: Json[], metric: (run: Json) => number): Json {
  const middle = median(runs.map(metric));
  return runs.find((run) => metric(run) === middle);
}

function log(message: string): void {
  console.error(`[bench] ${message}`);
}

async function rssBytes(pid: number): Promise<number> {
  const { stdout } = await run("ps", ["-o", "rss=", "-p", String(pid)]);
  return Number(stdout.trim()) * 1024;
}

// --- Redis -------------------------------------------------------------------------------------------------------

interface Redis {
  port: number;
  pid: number;
  stop(): Promise<void>;
}

async function startRedis(): Promise<Redis> {
  const [port] = freePorts(1);
  const child = new Deno.Command("redis-server", {
    args: ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "no"],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const deadline = Date.now() + 5000;
  while ((await run("redis-cli", ["-p", String(port), "ping"])).stdout.trim() !== "PONG") {
    if (Date.now() > deadline) throw new Error("redis-server did not start");
    await delay(20);
  }
  return {
    port,
    pid: child.pid,
    async stop() {
      child.kill("SIGTERM");
      await child.status;
    },
  };
}

async function redisSet(redis: Redis, clients: number, pipeline: number): Promise<Json> {
  // Sized for a few seconds at Redis's speed on this machine.
  const requests = pipeline === 1 ? Math.max(20_000, 40_000 * SECONDS * Math.min(clients, 50) / 10) : 400_000 * SECONDS;
  const { stdout, code, stderr } = await run("redis-benchmark", [
    "-h",
    "127.0.0.1",
    "-p",
    String(redis.port),
    "-t",
    "set",
    "-c",
    String(clients),
    "-P",
    String(pipeline),
    "-n",
    String(Math.round(requests)),
    "-r",
    "100000",
    "--csv",
  ]);
  if (code !== 0) throw new Error(`redis-benchmark failed: ${stderr}`);
  const row = stdout.trim().split("\n").find((line) => line.startsWith('"SET"'))!;
  const [, rps, avg, , p50, , p99, max] = row.split(",").map((cell) => Number(cell.replaceAll('"', "")));
  return { throughput_per_s: rps, latency_us: { mean: avg * 1000, p50: p50 * 1000, p99: p99 * 1000, max: max * 1000 } };
}

async function redisMemory(redis: Redis): Promise<Json> {
  const info = async () => {
    const { stdout } = await run("redis-cli", ["-p", String(redis.port), "info", "memory"]);
    return Number(/used_memory:(\d+)/.exec(stdout)![1]);
  };
  await run("redis-cli", ["-p", String(redis.port), "flushall"]);
  const usedBefore = await info();
  const rssBefore = await rssBytes(redis.pid);
  const value = "v".repeat(77);
  const lines: string[] = [];
  for (let i = 0; i < 1_000_000; i++) {
    const key = `client-${i}`;
    lines.push(`*3\r\n$3\r\nSET\r\n$${key.length}\r\n${key}\r\n$77\r\n${value}\r\n`);
  }
  const child = new Deno.Command("redis-cli", {
    args: ["-p", String(redis.port), "--pipe"],
    stdin: "piped",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(lines.join("")));
  await writer.close();
  const { code, stderr } = await child.output();
  if (code !== 0) throw new Error(`redis-cli --pipe failed: ${decoder.decode(stderr)}`);
  const usedAfter = await info();
  const rssAfter = await rssBytes(redis.pid);
  return {
    keys: 1_000_000,
    used_memory_per_key: (usedAfter - usedBefore) / 1_000_000,
    rss_per_key: (rssAfter - rssBefore) / 1_000_000,
  };
}

// --- the Redis herd ----------------------------------------------------------------------------------------------

/**
 * Starts the Redis herd on the graph of the herd's config, rooted at its
 * first server (the one taking the writes), with certificates from
 * HERD_BENCH_CERTS or made in `scratch`. Returns undefined, with the reason
 * in `info.error`, when it cannot run here.
 */
async function startRedisHerd(
  herd: TestHerd,
  tools: Set<string>,
  scratch: string,
  info: Json,
): Promise<RedisHerd | undefined> {
  const config = JSON.parse(await Deno.readTextFile(herd.configPath));
  const names: string[] = Object.keys(config.servers);
  const links: [string, string][] = config.links;
  info.root = names[0];
  // The herd's own certificates (its TestHerd made them with `deno task certs`' code), unless HERD_BENCH_CERTS names
  // others; openssl makes a set only for a herd running without TLS.
  const herdCerts = herd.config.peers.tls ? herd.config.certDir : undefined;
  const given = CERT_DIR ?? herdCerts;
  const needed = ["redis-server", "redis-cli", ...(given === undefined ? ["openssl"] : [])];
  const missing = needed.filter((tool) => !tools.has(tool));
  if (missing.length > 0) {
    info.error = `${missing.join(", ")} not found`;
    return undefined;
  }
  let certDir = given;
  try {
    if (certDir === undefined) {
      certDir = `${scratch}/certs`;
      info.certificates = "made by openssl in a temporary directory";
      await Deno.mkdir(certDir);
      await makeCertificateDir(certDir, names);
    } else {
      info.certificates = certDir === herdCerts ? `the herd's own, ${certDir}` : certDir;
    }
    if (tools.has("openssl")) await checkCertificateDir(certDir, names);
    const redisHerd = await RedisHerd.start({ names, links, root: names[0], certDir });
    info.tree = Object.fromEntries(redisHerd.tree.parent);
    info.wait = { replicas: redisHerd.rootReplicas, timeout_ms: ACK_TIMEOUT_MS };
    return redisHerd;
  } catch (error) {
    info.error = (error as Error).message;
    return undefined;
  }
}

async function redisHerdRr(redisHerd: RedisHerd, connections: number, depth: number): Promise<Json> {
  return await loadgen([
    "rr",
    "--protocol",
    "resp",
    "--port",
    String(redisHerd.port(redisHerd.tree.root)),
    "--connections",
    String(connections),
    "--depth",
    String(depth),
    "--wait-replicas",
    String(redisHerd.rootReplicas),
    "--wait-timeout-ms",
    String(ACK_TIMEOUT_MS),
    "--duration",
    String(SECONDS),
    "--warmup",
    "1",
    ...serverPids(redisHerd.names.map((name) => redisHerd.pid(name))),
  ]);
}

// --- the Deno echo -----------------------------------------------------------------------------------------------

interface Echo {
  port: number;
  pid: number;
  stop(): Promise<void>;
}

/** Starts bench/echo_server.ts and reads the port it listens on. */
async function startEcho(): Promise<Echo> {
  const child = new Deno.Command("deno", {
    args: ["run", "--no-prompt", "--allow-net=127.0.0.1", "bench/echo_server.ts"],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const { port } = JSON.parse(await firstLine(child, "The echo server"));
  return {
    port,
    pid: child.pid,
    async stop() {
      child.kill("SIGTERM");
      await child.status;
    },
  };
}

// --- the skeleton herd -------------------------------------------------------------------------------------------

// --- the herd ----------------------------------------------------------------------------------------------------

/** loadgen arguments that report these processes' CPU over the measured window. */
function serverPids(pids: number[]): string[] {
  return pids.flatMap((pid) => ["--server-pid", String(pid)]);
}

/** A median over runs, of the figures that are there. */
function medianOf(runs: Json[], metric: (run: Json) => number | undefined | null): number | undefined {
  const values = runs.map(metric).filter((value): value is number => typeof value === "number");
  return values.length === 0 ? undefined : median(values);
}

const KEY = "bench-key";

/** Client connections held open, idle, for scenario 9. */
const IDLE_CONNECTIONS = 4000;

/** Reads `conn` until a newline has come, and returns what came; throws if it closes first. */
async function readLine(conn: Deno.Conn): Promise<string> {
  const buffer = new Uint8Array(4096);
  let text = "";
  while (true) {
    const n = await conn.read(buffer);
    if (n === null) throw new Error("the connection closed before a line came back");
    text += decoder.decode(buffer.subarray(0, n));
    if (text.includes("\n")) return text;
  }
}

/**
 * Scenario 9: the resident memory an idle client connection costs the
 * server `pid` on `port`. {@linkcode IDLE_CONNECTIONS} connections are
 * opened and left idle, then `probe` is sent on the last and its answer
 * read, which must start with `answer` (a server past its limit of clients
 * says so instead): a server accepts in order, so it has taken them all.
 * The RSS before and after, over the connections.
 */
export async function idleConnections(port: number, pid: number, probe: string, answer: string): Promise<Json> {
  const conns: Deno.Conn[] = [];
  try {
    const before = await rssBytes(pid);
    for (let i = 0; i < IDLE_CONNECTIONS; i++) conns.push(await Deno.connect({ hostname: "127.0.0.1", port }));
    const last = conns.at(-1)!;
    await last.write(new TextEncoder().encode(probe));
    const said = await readLine(last);
    if (!said.startsWith(answer)) throw new Error(`the last one was answered ${JSON.stringify(said.slice(0, 100))}`);
    const after = await rssBytes(pid);
    return {
      connections: conns.length,
      rss_before: before,
      rss_after: after,
      bytes_per_connection: (after - before) / conns.length,
    };
  } catch (error) {
    return { error: `after ${conns.length} connections: ${(error as Error).message}` };
  } finally {
    for (const conn of conns) conn.close();
  }
}

async function herdRr(ports: number[], connections: number, depth: number, extra: string[] = []): Promise<Json> {
  return await loadgen([
    "rr",
    ...ports.flatMap((port) => ["--port", String(port)]),
    "--connections",
    String(connections),
    "--depth",
    String(depth),
    "--duration",
    String(SECONDS),
    "--warmup",
    "1",
    "--command",
    "iamat",
    ...extra,
  ]);
}

/** Load on `ports` for WARMUP_SECONDS, not measured: half one command in flight per connection, half 16. */
async function warmUp(ports: number[]): Promise<void> {
  const seconds = String(WARMUP_SECONDS / 2);
  await herdRr(ports, 50, 1, ["--duration", seconds, "--warmup", "0", "--quiet"]);
  await herdRr(ports, 50, 16, ["--duration", seconds, "--warmup", "0", "--quiet"]);
}

async function main(): Promise<void> {
  const started = Date.now();
  await Deno.mkdir("bench/.build", { recursive: true });
  const build = await run("gcc", ["-O2", "-Wall", "-Wextra", "-o", LOADGEN, "bench/loadgen.c"]);
  if (build.code !== 0) throw new Error(`Building the load generator failed:\n${build.stderr}`);
  const tools = new Set<string>();
  for (const tool of ["redis-server", "redis-benchmark", "redis-cli", "openssl"]) {
    if (await commandExists(tool)) tools.add(tool);
  }
  const missingTools = ["redis-server", "redis-benchmark", "redis-cli", "openssl"].filter((tool) => !tools.has(tool));
  const hasRedis = tools.has("redis-server") && tools.has("redis-benchmark") && tools.has("redis-cli");
  if (missingTools.length > 0) log(`not found: ${missingTools.join(", ")}; what needs them is not measured`);

  const result: Json = {
    date: new Date().toISOString(),
    machine: { cores: navigator.hardwareConcurrency, deno: Deno.version.deno },
    seconds_per_run: SECONDS,
    repeats: REPEATS,
    missing_tools: missingTools,
    scenarios: {},
    /** Every run of the scenarios repeated beyond 1 and 2 (each scenario above holds the median one). */
    repeated: {},
    /** The reference for scenarios 1 and 2: see redis_herd.ts. */
    redis_herd: {},
    /** Plain Redis (no persistence, no replication) with redis-benchmark, a second reference for 1 and 2. */
    redis: hasRedis ? {} : { error: "redis-server, redis-benchmark or redis-cli not found" },
    /** The reference for scenario 3: bench/echo_server.ts. */
    echo: {},
    /** A reference for scenarios 1 and 2: the herd's messages alone (bench/skeleton_herd.ts). */
    skeleton: {},
    /** Median server CPU (user + system, summed over the servers) per write or exchange in the measured window, µs. */
    cpu_per_write_us: {},
    ratios: {},
  };

  await using fake = startFakePlaces({ key: KEY, results: 20 });
  const herd = await TestHerd.create({
    placesUrl: fake.url,
    key: KEY,
    places: { provider: "google-new" },
  });
  log("starting a five-server herd (TLS peer links, the default)");
  await herd.startAll();
  const ports = herd.names.map((name) => herd.port(name));
  const herdPids = serverPids(herd.names.map((name) => herd.pid(name)));
  // The same herd with plain-text peer links, for what TLS costs (scenarios 1, 2 and 4, interleaved).
  const plainHerd = await TestHerd.create({
    placesUrl: fake.url,
    key: KEY,
    places: { provider: "google-new" },
    tls: false,
  });
  log("starting a five-server herd with plain-text peer links");
  await plainHerd.startAll();
  const plainPorts = plainHerd.names.map((name) => plainHerd.port(name));
  const plainPids = serverPids(plainHerd.names.map((name) => plainHerd.pid(name)));
  result.tls_off = {};
  // The same herd with records flooded (peers.broadcast flood, trees being the default), scenarios 1 and 2, interleaved.
  const floodHerd = await TestHerd.create({
    placesUrl: fake.url,
    key: KEY,
    places: { provider: "google-new" },
    peers: { broadcast: "flood" },
  });
  log("starting a five-server herd flooding its records");
  await floodHerd.startAll();
  const floodPorts = floodHerd.names.map((name) => floodHerd.port(name));
  const floodPids = serverPids(floodHerd.names.map((name) => floodHerd.pid(name)));
  result.flooding = {};
  const redis = hasRedis ? await startRedis() : undefined;
  log("starting the Redis herd");
  const scratch = await Deno.makeTempDir({ dir: "/tmp", prefix: "herd-bench-" });
  let redisHerd = await startRedisHerd(herd, tools, scratch, result.redis_herd);
  if (redisHerd === undefined) log(`Redis herd not measured: ${result.redis_herd.error}`);
  /** Runs one measurement of the Redis herd; a failure is reported and ends the Redis herd's part of the run. */
  const onRedisHerd = async (measure: (redisHerd: RedisHerd) => Promise<Json>): Promise<Json | undefined> => {
    if (redisHerd === undefined) return undefined;
    try {
      return await measure(redisHerd);
    } catch (error) {
      result.redis_herd.error = `stopped measuring: ${(error as Error).message}`;
      log(`Redis herd ${result.redis_herd.error}`);
      await redisHerd[Symbol.asyncDispose]();
      redisHerd = undefined;
      return undefined;
    }
  };

  let skeleton: Skeleton | undefined;
  try {
    log("starting the skeleton herd");
    skeleton = await startSkeleton();
  } catch (error) {
    result.skeleton.error = (error as Error).message;
  }
  try {
    // The first runs after start-up, on a cold JIT, then every herd warmed up before the measured runs.
    if (WARMUP_SECONDS > 0) {
      log("scenarios 1 and 2 once each, cold, on the TLS herd");
      result.cold = {
        iamat_rr: await herdRr(ports, 50, 1, herdPids),
        iamat_pipelined: await herdRr(ports, 50, 16, herdPids),
      };
      log(`warming the three herds up, ${WARMUP_SECONDS} s each`);
      for (const warmPorts of [ports, plainPorts, floodPorts]) await warmUp(warmPorts);
    }
    result.warmup_seconds = WARMUP_SECONDS;
    // 1 and 2: request/response and pipelined, at 50 connections, interleaved with the Redis herd and plain
    // Redis, repeated.
    const s1: Json[] = [];
    const s2: Json[] = [];
    const h1: Json[] = [];
    const h16: Json[] = [];
    const r1: Json[] = [];
    const r16: Json[] = [];
    const p1: Json[] = [];
    const p16: Json[] = [];
    const t1: Json[] = [];
    const t16: Json[] = [];
    const k1: Json[] = [];
    const k16: Json[] = [];
    for (let repeat = 0; repeat < REPEATS; repeat++) {
      log(`scenario 1 and 2, repeat ${repeat + 1}/${REPEATS}`);
      // The three herds take turns at going first: a herd's leftover work from its runs (the compaction of the rows it
      // wrote, checked for every 10 s) falls in whichever runs come next, so a fixed order put it in the same herd's
      // windows in every repeat (docs/PERFORMANCE.md, "Fifth round").
      const herds: [number[], string[], Json[], Json[]][] = [
        [ports, herdPids, s1, s2],
        [plainPorts, plainPids, p1, p16],
        [floodPorts, floodPids, t1, t16],
      ];
      for (let turn = 0; turn < herds.length; turn++) {
        const [herdPorts, pids, rr, pipelined] = herds[(repeat + turn) % herds.length];
        rr.push(await herdRr(herdPorts, 50, 1, pids));
        pipelined.push(await herdRr(herdPorts, 50, 16, pids));
      }
      if (skeleton) {
        try {
          k1.push(await herdRr(skeleton.ports, 50, 1, serverPids(skeleton.pids)));
          k16.push(await herdRr(skeleton.ports, 50, 16, serverPids(skeleton.pids)));
        } catch (error) {
          // A reference that fails is reported and left out; it does not end the bench.
          result.skeleton.error = `stopped measuring: ${(error as Error).message}`;
          const failed = skeleton;
          skeleton = undefined;
          await failed.stop();
        }
      }
      const rr = await onRedisHerd((redisHerd) => redisHerdRr(redisHerd, 50, 1));
      const pipelined = await onRedisHerd((redisHerd) => redisHerdRr(redisHerd, 50, 16));
      if (rr !== undefined && pipelined !== undefined) {
        h1.push(rr);
        h16.push(pipelined);
      }
      if (redis) {
        r1.push(await redisSet(redis, 50, 1));
        r16.push(await redisSet(redis, 50, 16));
      }
    }
    const pick = (runs: Json[]) => runs.find((r) => r.throughput_per_s === median(runs.map((x) => x.throughput_per_s)));
    result.scenarios.iamat_rr = { runs: s1, median: pick(s1) };
    result.scenarios.iamat_pipelined = { runs: s2, median: pick(s2) };
    result.cpu_per_write_us.iamat_rr = medianOf(s1, (run) => run.server_cpu?.us_per_command);
    result.cpu_per_write_us.iamat_pipelined = medianOf(s2, (run) => run.server_cpu?.us_per_command);
    result.tls_off.iamat_rr = { runs: p1, median: pick(p1) };
    result.tls_off.iamat_pipelined = { runs: p16, median: pick(p16) };
    result.tls_off.cpu_per_write_us = {
      iamat_rr: medianOf(p1, (run) => run.server_cpu?.us_per_command),
      iamat_pipelined: medianOf(p16, (run) => run.server_cpu?.us_per_command),
    };
    result.flooding.iamat_rr = { runs: t1, median: pick(t1) };
    result.flooding.iamat_pipelined = { runs: t16, median: pick(t16) };
    result.flooding.cpu_per_write_us = {
      iamat_rr: medianOf(t1, (run) => run.server_cpu?.us_per_command),
      iamat_pipelined: medianOf(t16, (run) => run.server_cpu?.us_per_command),
    };
    await floodHerd[Symbol.asyncDispose]();
    const done = skeleton;
    skeleton = undefined;
    await done?.stop();
    if (k1.length === REPEATS) {
      result.skeleton.iamat_rr = { runs: k1, median: pick(k1) };
      result.skeleton.iamat_pipelined = { runs: k16, median: pick(k16) };
      result.cpu_per_write_us.skeleton_rr = medianOf(k1, (run) => run.server_cpu?.us_per_command);
      result.cpu_per_write_us.skeleton_pipelined = medianOf(k16, (run) => run.server_cpu?.us_per_command);
    }
    if (h1.length === REPEATS) {
      result.redis_herd.set_wait_rr = { runs: h1, median: pick(h1) };
      result.redis_herd.set_wait_pipelined = { runs: h16, median: pick(h16) };
      result.redis_herd.short_acks = [...h1, ...h16].reduce((sum, run) => sum + run.short_acks, 0);
      result.cpu_per_write_us.redis_herd_rr = medianOf(h1, (run) => run.server_cpu?.us_per_command);
      result.cpu_per_write_us.redis_herd_pipelined = medianOf(h16, (run) => run.server_cpu?.us_per_command);
      result.ratios.iamat_rr_vs_redis_herd = pick(s1).throughput_per_s / pick(h1).throughput_per_s;
      result.ratios.iamat_pipelined_vs_redis_herd = pick(s2).throughput_per_s / pick(h16).throughput_per_s;
    }
    if (redis) {
      result.redis.set_p1 = { runs: r1, median: pick(r1) };
      result.redis.set_p16 = { runs: r16, median: pick(r16) };
      result.ratios.iamat_rr_vs_redis_p1 = pick(s1).throughput_per_s / pick(r1).throughput_per_s;
      result.ratios.iamat_pipelined_vs_redis_p16 = pick(s2).throughput_per_s / pick(r16).throughput_per_s;
    }

    // Throughput by connection count, for the chart.
    const counts = [1, 10, 50, 100];
    result.by_connections = { counts, herd: [], redis_herd: [], redis: [] };
    for (const count of counts) {
      log(`throughput at ${count} connections`);
      result.by_connections.herd.push((await herdRr(ports, count, 1)).throughput_per_s);
      const run = await onRedisHerd((redisHerd) => redisHerdRr(redisHerd, count, 1));
      if (run !== undefined) result.by_connections.redis_herd.push(run.throughput_per_s);
      if (redis) result.by_connections.redis.push((await redisSet(redis, count, 1)).throughput_per_s);
    }
    if (result.by_connections.redis_herd.length < counts.length) result.by_connections.redis_herd = [];
    await redisHerd?.[Symbol.asyncDispose]();
    redisHerd = undefined;

    // 3: one command per connection, half-closed, interleaved with the Deno echo, repeated.
    const halfclose = (targets: number[], pids: string[], extra: string[] = []) =>
      loadgen([
        "halfclose",
        ...targets.flatMap((port) => ["--port", String(port)]),
        "--concurrency",
        "50",
        "--duration",
        String(SECONDS),
        "--warmup",
        "1",
        ...pids,
        ...extra,
      ]);
    let echo: Echo | undefined;
    try {
      echo = await startEcho();
    } catch (error) {
      result.echo.error = (error as Error).message;
    }
    const s3: Json[] = [];
    const e3: Json[] = [];
    try {
      for (let repeat = 0; repeat < REPEATS; repeat++) {
        log(`scenario 3: half-close, repeat ${repeat + 1}/${REPEATS}`);
        s3.push(await halfclose(ports, herdPids));
        if (echo) e3.push(await halfclose([echo.port], serverPids([echo.pid]), ["--echo"]));
      }
    } finally {
      await echo?.stop();
    }
    result.scenarios.halfclose = medianBy(s3, (run) => run.throughput_per_s);
    result.repeated.halfclose = s3;
    result.cpu_per_write_us.halfclose = medianOf(s3, (run) => run.server_cpu?.us_per_command);
    if (echo) {
      result.echo.halfclose = { runs: e3, median: medianBy(e3, (run) => run.throughput_per_s) };
      result.cpu_per_write_us.echo_halfclose = medianOf(e3, (run) => run.server_cpu?.us_per_command);
      result.ratios.halfclose_vs_echo = result.scenarios.halfclose.throughput_per_s /
        result.echo.halfclose.median.throughput_per_s;
    }

    // 4: propagation Hill -> Campbell (two hops), unloaded and at half of scenario 1's maximum.
    log("scenario 4: propagation");
    const propagation = [
      "propagation",
      "--from-port",
      String(herd.port("Hill")),
      "--to-port",
      String(herd.port("Campbell")),
    ];
    // Repeated like scenarios 1 and 2; the run with the median p99 (the bar's figure) is reported, all are kept.
    const unloaded: Json[] = [];
    const halfLoad: Json[] = [];
    const plainUnloaded: Json[] = [];
    const half = Math.round(pick(s1).throughput_per_s / 2);
    const plainPropagation = [
      "propagation",
      "--from-port",
      String(plainHerd.port("Hill")),
      "--to-port",
      String(plainHerd.port("Campbell")),
    ];
    for (let repeat = 0; repeat < REPEATS; repeat++) {
      unloaded.push(await loadgen([...propagation, "--samples", "2000", "--id-prefix", `prop${repeat}-`]));
      plainUnloaded.push(await loadgen([...plainPropagation, "--samples", "2000", "--id-prefix", `prop${repeat}-`]));
      const background = herdRr(ports, 50, 1, ["--rate", String(half), "--duration", String(SECONDS + 3)]);
      await delay(1500);
      const run = await loadgen([...propagation, "--samples", "1000", "--id-prefix", `propload${repeat}-`]);
      halfLoad.push({ ...run, background_rate_per_s: half, background: await background });
    }
    result.scenarios.propagation_unloaded = medianBy(unloaded, (run) => run.latency_us.p99);
    result.tls_off.propagation_unloaded = medianBy(plainUnloaded, (run) => run.latency_us.p99);
    result.repeated.propagation_unloaded_tls_off = plainUnloaded;
    await plainHerd[Symbol.asyncDispose]();
    result.scenarios.propagation_half_load = medianBy(halfLoad, (run) => run.latency_us.p99);
    result.repeated.propagation_unloaded = unloaded;
    result.repeated.propagation_half_load = halfLoad;

    // 5: WHATSAT against the fake Places, cache cold and warm.
    log("scenario 5: WHATSAT");
    await exchange(herd.port("Hill"), "IAMAT bench-whatsat +34.068930-118.445127 1700000000\n");
    await herd.waitConverged(herd.names);
    const whatsat = ["rr", ...ports.flatMap((port) => ["--port", String(port)]), "--connections", "50", "--depth", "1"];
    const upstreamBefore = fake.requests.length;
    result.scenarios.whatsat_cold = await loadgen([
      ...whatsat,
      "--duration",
      String(SECONDS),
      "--warmup",
      "0",
      "--command",
      "whatsat",
      "--whatsat-id",
      "bench-whatsat",
      "--whatsat-cold",
      "--bound",
      "20",
    ]);
    result.scenarios.whatsat_cold.upstream_requests = fake.requests.length - upstreamBefore;
    const warm: Json[] = [];
    for (let repeat = 0; repeat < REPEATS; repeat++) {
      warm.push(
        await loadgen([
          ...whatsat,
          "--duration",
          String(SECONDS),
          "--warmup",
          "1",
          "--command",
          "whatsat",
          "--whatsat-id",
          "bench-whatsat",
          "--radius",
          "10",
          "--bound",
          "20",
        ]),
      );
    }
    result.scenarios.whatsat_warm = medianBy(warm, (run) => run.throughput_per_s);
    result.repeated.whatsat_warm = warm;
  } finally {
    await skeleton?.stop();
    await redisHerd?.[Symbol.asyncDispose]();
    await Deno.remove(scratch, { recursive: true });
    await herd[Symbol.asyncDispose]();
  }

  // 6 and 7: one server alone, for memory per client and start-up.
  // Twenty log files: the compaction's log line must outlast the lines of the million IAMATs after it (see below).
  await using solo = await TestHerd.create({
    placesUrl: fake.url,
    names: ["Solo"],
    links: [],
    extra: { log: { files: 20 } },
  });
  log("scenario 7: start-up");
  const startups = await measureStartups(solo, "Solo", loadgen);
  result.scenarios.startup = { runs_ms: startups, median_ms: median(startups) };

  log(`scenario 9: ${IDLE_CONNECTIONS} idle client connections`);
  await solo.start("Solo");
  // Warmed as a server in use is: its connection path compiled, its heap grown.
  for (let i = 0; i < 200; i++) await exchange(solo.port("Solo"), `IAMAT idle-warm-${i} +1+1 1\n`);
  result.scenarios.idle = await idleConnections(solo.port("Solo"), solo.pid("Solo"), "IAMAT idle +1+1 1\n", "AT Solo ");
  await solo.stop("Solo", "SIGTERM");
  try {
    const echo = await startEcho();
    try {
      for (let i = 0; i < 200; i++) await exchange(echo.port, "warm\n");
      result.echo.idle = await idleConnections(echo.port, echo.pid, "idle\n", "idle\n");
    } finally {
      await echo.stop();
    }
  } catch (error) {
    result.echo.idle = { error: (error as Error).message };
  }
  if (redis) result.redis.idle = await idleConnections(redis.port, redis.pid, "PING\r\n", "+PONG");

  log("scenario 6: memory with 1,000,000 clients");
  await Deno.remove(`${solo.dir}/data`, { recursive: true }).catch(() => {});
  await solo.start("Solo");
  await exchange(solo.port("Solo"), "IAMAT warm +1+1 1\n");
  const before = await rssBytes(solo.pid("Solo"));
  const fill = await loadgen([
    "fill",
    "--port",
    String(solo.port("Solo")),
    "--clients",
    "1000000",
    "--connections",
    "8",
    "--depth",
    "64",
  ]);
  // Right after the fill, RSS still holds the garbage of a million commands; V8's memory reducer gives it
  // back once the server has been idle a while (docs/PERFORMANCE.md, scenario 6). Report both: the lowest RSS seen over the
  // next 40 s is the settled figure.
  const justAfter = await rssBytes(solo.pid("Solo"));
  let settled = justAfter;
  for (let second = 0; second < 40; second++) {
    await delay(1000);
    settled = Math.min(settled, await rssBytes(solo.pid("Solo")));
  }
  result.scenarios.memory = {
    clients: 1_000_000,
    fill,
    rss_before: before,
    rss_just_after_fill: justAfter,
    rss_settled: settled,
    bytes_per_client_just_after_fill: (justAfter - before) / 1_000_000,
    bytes_per_client: (settled - before) / 1_000_000,
  };

  // Compaction at 1,000,000 clients: two more fills (newer times) leave 3,000,000 rows for 1,000,000 live records,
  // past the compaction threshold. While the store's worker compacts, one client sends IAMATs back to back: its
  // slowest reply is the stall a client sees. The server logs the compaction and its longest write transaction.
  log("compaction with 1,000,000 clients");
  for (let fillRound = 0; fillRound < 2; fillRound++) {
    await loadgen([
      "fill",
      "--port",
      String(solo.port("Solo")),
      "--clients",
      "1000000",
      "--connections",
      "8",
      "--depth",
      "64",
    ]);
  }
  const rssBeforeCompaction = await rssBytes(solo.pid("Solo"));
  const probe = loadgen([
    "rr",
    "--port",
    String(solo.port("Solo")),
    "--connections",
    "1",
    "--duration",
    "15",
    "--warmup",
    "0",
  ]);
  // The compaction may start during the last fill, and a million IAMATs' lines rotate the log (log.maxBytes): its line
  // is looked for in the rotated files too, newest first.
  const compacted = await waitFor(async () => {
    for (const suffix of ["", ...Array.from({ length: 19 }, (_, i) => `.${i + 1}`)]) {
      const text = await Deno.readTextFile(`${solo.dir}/logs/Solo.log${suffix}`).catch(() => "");
      const line = text.split("\n").findLast((entry) => entry.includes("Compacted "));
      if (line !== undefined) return line;
    }
    return undefined;
  }, { timeoutMs: 60_000, stepMs: 250, what: "the compaction" });
  const during = await probe;
  const match = /(\d+) of (\d+) rows deleted in (\d+) ms.*longest write transaction ([0-9.]+) ms/.exec(compacted);
  result.scenarios.compaction = {
    clients: 1_000_000,
    rows: match === null ? undefined : Number(match[2]),
    deleted: match === null ? undefined : Number(match[1]),
    worker_ms: match === null ? undefined : Number(match[3]),
    longest_transaction_ms: match === null ? undefined : Number(match[4]),
    client_during: { latency_us: during.latency_us, commands: during.commands },
    rss_before_compaction: rssBeforeCompaction,
    log_line: compacted.slice(0, 300),
  };
  await solo.stop("Solo", "SIGTERM");
  // 6 again, restarted: the same million clients, loaded from the database at start-up (each client's greatest row;
  // the compaction above may have left older ones too). Settled as after the fill: the lowest RSS over 20 s.
  log("scenario 6: memory after a restart with 1,000,000 clients");
  const restarting = performance.now();
  await solo.start("Solo", { timeoutMs: 120_000 });
  const restartMs = performance.now() - restarting;
  let restarted = await rssBytes(solo.pid("Solo"));
  for (let second = 0; second < 20; second++) {
    await delay(1000);
    restarted = Math.min(restarted, await rssBytes(solo.pid("Solo")));
  }
  result.scenarios.memory.restarted = {
    listening_after_ms: restartMs,
    rss_settled: restarted,
    bytes_per_client: (restarted - before) / 1_000_000,
  };
  await solo.stop("Solo", "SIGTERM");
  if (redis) {
    log("Redis memory with 1,000,000 keys of 77 bytes");
    result.redis.memory = await redisMemory(redis);
    result.ratios.memory_vs_redis = result.scenarios.memory.bytes_per_client / result.redis.memory.rss_per_key;
    await redis.stop();
  }
  result.elapsed_s = Math.round((Date.now() - started) / 1000);
  await report(result);
}

function fmt(value: number | undefined, digits = 0): string {
  return value === undefined || Number.isNaN(value) ? "n/a" : value.toFixed(digits);
}

function ratioText(ratio: number | undefined): string {
  return ratio === undefined || !Number.isFinite(ratio) ? "n/a" : `${fmt(ratio, 2)}×`;
}

/** "Hill → Jaquez, Smith; Jaquez → Singleton; …" from each replica's parent. */
function treeText(root: string, parents: Record<string, string>): string {
  const children = new Map<string, string[]>([[root, []]]);
  for (const [child, parent] of Object.entries(parents)) {
    children.set(parent, [...(children.get(parent) ?? []), child]);
  }
  return [...children].filter(([, list]) => list.length > 0).map(([parent, list]) => `${parent} → ${list.join(", ")}`)
    .join("; ");
}

/** One bar: what it asks, what this run measured, and whether that meets it (undefined: not measured). */
interface BarResult {
  bar: string;
  target: string;
  measured: string;
  vs_plain_redis?: string;
  met?: boolean;
}

function barResults(result: Json): BarResult[] {
  const s = result.scenarios;
  const ratios = result.ratios;
  const check = (
    bar: string,
    target: string,
    value: number | undefined,
    met: (value: number) => boolean,
    text: (value: number) => string,
    vsPlainRedis?: string,
  ): BarResult => {
    const measured = value !== undefined && !Number.isNaN(value);
    return {
      bar,
      target,
      measured: measured ? text(value) : "n/a",
      ...(vsPlainRedis === undefined ? {} : { vs_plain_redis: vsPlainRedis }),
      met: measured ? met(value) : undefined,
    };
  };
  const ms = (us: number) => `${fmt(us / 1000, 2)} ms`;
  return [
    check(
      "1 vs Redis herd",
      `≥ ${fmt(BARS.rrVsRedisHerd, 1)}×`,
      ratios.iamat_rr_vs_redis_herd,
      (ratio) => ratio >= BARS.rrVsRedisHerd,
      ratioText,
      `${ratioText(ratios.iamat_rr_vs_redis_p1)} (-P 1)`,
    ),
    check(
      "2 vs Redis herd",
      `≥ ${fmt(BARS.pipelinedVsRedisHerd, 1)}×`,
      ratios.iamat_pipelined_vs_redis_herd,
      (ratio) => ratio >= BARS.pipelinedVsRedisHerd,
      ratioText,
      `${ratioText(ratios.iamat_pipelined_vs_redis_p16)} (-P 16)`,
    ),
    check(
      "3 vs Deno echo",
      `≥ ${fmt(BARS.halfcloseVsEcho, 1)}×`,
      ratios.halfclose_vs_echo,
      (ratio) => ratio >= BARS.halfcloseVsEcho,
      ratioText,
    ),
    check(
      "4 p99 unloaded",
      `≤ ${BARS.propagationUnloadedP99Ms} ms`,
      s.propagation_unloaded?.latency_us?.p99,
      (us) => us <= BARS.propagationUnloadedP99Ms * 1000,
      ms,
    ),
    check(
      "4 p99 half load",
      `≤ ${BARS.propagationHalfLoadP99Ms} ms`,
      s.propagation_half_load?.latency_us?.p99,
      (us) => us <= BARS.propagationHalfLoadP99Ms * 1000,
      ms,
    ),
    check(
      "5 warm",
      `≥ ${BARS.whatsatWarmPerS}/s`,
      s.whatsat_warm?.throughput_per_s,
      (rate) => rate >= BARS.whatsatWarmPerS,
      (rate) => `${fmt(rate)}/s`,
    ),
    check(
      "6 memory",
      `≤ ${BARS.memoryBytesPerClient} B/client`,
      s.memory?.bytes_per_client,
      (bytes) => bytes <= BARS.memoryBytesPerClient,
      (bytes) => `${fmt(bytes)} B`,
    ),
    check(
      "7 start-up",
      `≤ ${BARS.startupMs} ms`,
      s.startup?.median_ms,
      (ms) => ms <= BARS.startupMs,
      (ms) => `${fmt(ms)} ms`,
    ),
  ];
}

/** Scenario 9's figure for one server, or why there is none. */
function idleText(idle: Json | undefined): string {
  if (idle === undefined) return "not measured";
  return idle.error === undefined ? fmt(idle.bytes_per_connection) : `not measured (${idle.error})`;
}

async function report(result: Json): Promise<void> {
  result.bars = barResults(result);
  const s = result.scenarios;
  const r = result.redis;
  const h = result.redis_herd;
  const e = result.echo;
  const cpu = result.cpu_per_write_us;
  const ratios = result.ratios;
  const row = (name: string, x: Json, serverCpu?: number, herdRatio?: number) =>
    `| ${name} | ${fmt(x?.throughput_per_s)} | ${fmt(x?.latency_us?.p50)} | ${fmt(x?.latency_us?.p99)} | ${
      fmt(x?.latency_us?.p999)
    } | ${x?.loadgen_cpu ? fmt(x.loadgen_cpu.cpu_percent_of_one_core) + "%" : "n/a"} | ${fmt(serverCpu)} | ${
      herdRatio === undefined ? "" : ratioText(herdRatio)
    } |`;
  const replicas = h.wait?.replicas;
  const notMeasured = [
    ...(result.missing_tools.length > 0 ? [`not found on this machine: ${result.missing_tools.join(", ")}`] : []),
    ...(h.error ? [`Redis herd: ${h.error}`] : []),
    ...(r.error ? [`plain Redis: ${r.error}`] : []),
    ...(e.error ? [`Deno echo: ${e.error}`] : []),
    ...(result.skeleton?.error ? [`skeleton herd: ${result.skeleton.error}`] : []),
  ];
  const lines = [
    `Benchmark run ${result.date} (${result.machine.cores} cores, Deno ${result.machine.deno}, ${result.seconds_per_run} s per run, medians of ${result.repeats}).`,
    "",
    "| scenario | per second | p50 µs | p99 µs | p99.9 µs | loadgen CPU | server CPU µs per command | herd ÷ this |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    row("1. IAMAT request/response, 50 conns", s.iamat_rr.median, cpu.iamat_rr),
    ...(result.cold === undefined ? [] : [
      row(
        "1. the same, cold: the first run after start-up",
        result.cold.iamat_rr,
        result.cold.iamat_rr.server_cpu?.us_per_command,
        s.iamat_rr.median.throughput_per_s / result.cold.iamat_rr.throughput_per_s,
      ),
    ]),
    row(
      "1. the same, plain-text peer links",
      result.tls_off?.iamat_rr?.median,
      result.tls_off?.cpu_per_write_us?.iamat_rr,
      s.iamat_rr.median.throughput_per_s / result.tls_off?.iamat_rr?.median?.throughput_per_s,
    ),
    row(
      "1. the same, records flooded",
      result.flooding?.iamat_rr?.median,
      result.flooding?.cpu_per_write_us?.iamat_rr,
      s.iamat_rr.median.throughput_per_s / result.flooding?.iamat_rr?.median?.throughput_per_s,
    ),
    row(
      "1. skeleton herd: the herd's messages alone, plain TCP",
      result.skeleton?.iamat_rr?.median,
      cpu.skeleton_rr,
      s.iamat_rr.median.throughput_per_s / result.skeleton?.iamat_rr?.median?.throughput_per_s,
    ),
    row(
      `1. Redis herd: SET + WAIT ${replicas ?? "n"} at ${h.root}, 50 conns`,
      h.set_wait_rr?.median,
      cpu.redis_herd_rr,
      ratios.iamat_rr_vs_redis_herd,
    ),
    row("1. plain Redis: redis-benchmark SET -P 1, 50 conns", r.set_p1?.median, undefined, ratios.iamat_rr_vs_redis_p1),
    row("2. IAMAT pipelined, 50 conns × 16", s.iamat_pipelined.median, cpu.iamat_pipelined),
    ...(result.cold === undefined ? [] : [
      row(
        "2. the same, cold: the first run after start-up",
        result.cold.iamat_pipelined,
        result.cold.iamat_pipelined.server_cpu?.us_per_command,
        s.iamat_pipelined.median.throughput_per_s / result.cold.iamat_pipelined.throughput_per_s,
      ),
    ]),
    row(
      "2. the same, plain-text peer links",
      result.tls_off?.iamat_pipelined?.median,
      result.tls_off?.cpu_per_write_us?.iamat_pipelined,
      s.iamat_pipelined.median.throughput_per_s / result.tls_off?.iamat_pipelined?.median?.throughput_per_s,
    ),
    row(
      "2. the same, records flooded",
      result.flooding?.iamat_pipelined?.median,
      result.flooding?.cpu_per_write_us?.iamat_pipelined,
      s.iamat_pipelined.median.throughput_per_s / result.flooding?.iamat_pipelined?.median?.throughput_per_s,
    ),
    row(
      "2. skeleton herd: the herd's messages alone, plain TCP",
      result.skeleton?.iamat_pipelined?.median,
      cpu.skeleton_pipelined,
      s.iamat_pipelined.median.throughput_per_s / result.skeleton?.iamat_pipelined?.median?.throughput_per_s,
    ),
    row(
      `2. Redis herd: SET + WAIT ${replicas ?? "n"} at ${h.root}, 50 conns × 16`,
      h.set_wait_pipelined?.median,
      cpu.redis_herd_pipelined,
      ratios.iamat_pipelined_vs_redis_herd,
    ),
    row(
      "2. plain Redis: redis-benchmark SET -P 16, 50 conns",
      r.set_p16?.median,
      undefined,
      ratios.iamat_pipelined_vs_redis_p16,
    ),
    row("3. one command per connection, half-close", s.halfclose, cpu.halfclose),
    row("3. Deno line echo, half-close", e.halfclose?.median, cpu.echo_halfclose, ratios.halfclose_vs_echo),
    row("4. propagation Hill → Campbell, unloaded", s.propagation_unloaded),
    row("4. the same, plain-text peer links", result.tls_off?.propagation_unloaded),
    row("4. propagation Hill → Campbell, half load", s.propagation_half_load),
    row("5. WHATSAT, cache cold", s.whatsat_cold),
    row("5. WHATSAT, cache warm", s.whatsat_warm),
    "",
    ...(h.tree
      ? [
        `Redis herd: five redis-server replicating along a spanning tree of the herd's graph (${
          treeText(h.root, h.tree)
        }), over TLS with both ends authenticated (certificates ${h.certificates}), AOF with appendfsync everysec; ` +
        `each write is SET and WAIT ${replicas} ${h.wait.timeout_ms} to ${h.root}'s plain port` +
        (h.short_acks === undefined
          ? "."
          : `: ${h.short_acks} short acks (WAIT below ${replicas}) in the measured windows.`),
        "",
      ]
      : []),
    "Server CPU: user + system time of the server processes (the five of each herd, the one echo), read from " +
    "/proc/<pid>/stat at the start and end of each run's measured window, per command answered in it; median of the runs.",
    "",
    `6. Memory: ${fmt(s.memory.bytes_per_client)} resident bytes per client with 1,000,000 clients, once settled (${
      fmt(s.memory.bytes_per_client_just_after_fill)
    } right after the fill${
      s.memory.restarted === undefined
        ? ""
        : `; ${fmt(s.memory.restarted.bytes_per_client)} restarted, loaded from its database, listening after ${
          fmt(s.memory.restarted.listening_after_ms / 1000, 1)
        } s`
    })` +
    (r.memory
      ? `; Redis ${fmt(r.memory.rss_per_key)} (used_memory ${fmt(r.memory.used_memory_per_key)}) per key`
      : "") +
    ".",
    `7. Start-up: median ${fmt(s.startup.median_ms)} ms from process start to an accepting client port (${
      s.startup.runs_ms.map((v: number) => fmt(v)).join(", ")
    }).`,
    `9. Idle client connections: ${idleText(s.idle)} resident bytes per connection of one server holding ${
      fmt(s.idle?.connections ?? IDLE_CONNECTIONS)
    } idle ones; the Deno echo (1 KiB read buffer) ${idleText(e.idle)}${
      r.error ? "" : `, plain Redis ${idleText(r.idle)}`
    }.`,
    ...(s.compaction
      ? [
        `Compaction at 1,000,000 clients (${fmt(s.compaction.rows)} rows, ${fmt(s.compaction.deleted)} deleted): ${
          fmt(s.compaction.worker_ms)
        } ms on the store's worker, longest write transaction ${s.compaction.longest_transaction_ms} ms; a client sending IAMATs meanwhile saw p99 ${
          fmt(s.compaction.client_during.latency_us.p99)
        } µs, ` +
        `slowest ${fmt(s.compaction.client_during.latency_us.max)} µs.`,
      ]
      : []),
    "",
    "The herd runs with the shipped defaults (TLS peer links, records down broadcast trees) unless a row says " +
    'otherwise; "herd ÷ this" on a plain-text row is the TLS herd over the plain one (what TLS leaves of the ' +
    "throughput), on a flooding row the tree herd over the flooding one, on a skeleton row the herd over the skeleton " +
    "herd" +
    (result.cold === undefined ? "." : ", on a cold row the herd's median over its first run."),
    ...(result.skeleton?.iamat_rr === undefined ? [] : [
      "",
      "Skeleton herd (`bench/skeleton_herd.ts`): five Deno processes on the same links doing only the herd's " +
      "messages: an IAMAT becomes an AT line sent to every neighbour, flooded on and acknowledged, and the reply goes " +
      "once the neighbours acknowledged; plain TCP, one `conn.read()` loop per socket, one write per socket per turn, " +
      "no checks, no disk, no log, no deadline on acknowledgements. What the herd does beyond it is the herd's own " +
      "work, the log, the disk and TLS among it.",
    ]),
    ...(result.cold === undefined ? [] : [
      "",
      `Warm-up (HERD_BENCH_WARMUP_SECONDS): the "cold" rows are the TLS herd's first run of each scenario after ` +
      `start-up; then each of the three herds took ${result.warmup_seconds} s of unmeasured load (half one command ` +
      "in flight per connection, half 16) before the measured runs.",
    ]),
    "",
    ...(notMeasured.length > 0 ? [`Not measured: ${notMeasured.join("; ")}.`, ""] : []),
    "| bar | target | measured | vs plain Redis | |",
    "| --- | --- | --- | --- | --- |",
    ...result.bars.map((b: BarResult) =>
      `| ${b.bar} | ${b.target} | ${b.measured} | ${b.vs_plain_redis ?? ""} | ${
        b.met === undefined ? "not measured" : b.met ? "met" : "**missed**"
      } |`
    ),
    "",
  ];
  const markdown = lines.join("\n");
  console.log(markdown);
  await Deno.mkdir(RESULTS, { recursive: true });
  await Deno.writeTextFile(`${RESULTS}/latest.json`, JSON.stringify(result, null, 2) + "\n");
  await Deno.writeTextFile(`${RESULTS}/latest.md`, markdown);
  const counts: number[] = result.by_connections.counts;
  await Deno.writeTextFile(
    `${RESULTS}/throughput.svg`,
    barChart({
      title: "Writes per second by connections (one in flight each)",
      groups: counts.map((count) => `${count} conns`),
      series: [
        { name: "herd IAMAT (5 servers)", values: result.by_connections.herd },
        ...(result.by_connections.redis_herd.length > 0
          ? [{ name: "Redis herd SET + WAIT (5 servers)", values: result.by_connections.redis_herd }]
          : []),
        ...(result.by_connections.redis.length > 0
          ? [{ name: "plain Redis SET", values: result.by_connections.redis }]
          : []),
      ],
      unit: "commands per second",
    }),
  );
  const scenarios: [string, Json][] = [
    ["1 rr", s.iamat_rr.median],
    ["2 pipelined", s.iamat_pipelined.median],
    ["3 half-close", s.halfclose],
    ["4 prop. idle", s.propagation_unloaded],
    ["4 prop. half", s.propagation_half_load],
    ["5 cold", s.whatsat_cold],
    ["5 warm", s.whatsat_warm],
  ];
  await Deno.writeTextFile(
    `${RESULTS}/latency.svg`,
    barChart({
      title: "Latency percentiles by scenario (µs, log scale)",
      groups: scenarios.map(([name]) => name),
      series: ["p50", "p99", "p999"].map((p) => ({ name: p, values: scenarios.map(([, x]) => x.latency_us[p] ?? 0) })),
      unit: "microseconds",
      log: true,
    }),
  );
}

if (import.meta.main) await main();
