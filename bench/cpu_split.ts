/**
 * Where a write's CPU goes, in user and system time, for the herd and its
 * references: `deno task bench:cpu-split`. Scenario 1's shape (50
 * connections, one command in flight each) and scenario 2's (16 each), on
 *
 * - the herd with the shipped defaults, load spread over the five client
 *   ports (as `deno task bench` does);
 * - the same herd with every IAMAT at Hill (the Redis herd's shape: all
 *   writes at one server);
 * - the skeleton herd (bench/skeleton_herd.ts), load spread;
 * - the Redis herd (bench/redis_herd.ts), `SET` + `WAIT` at Hill.
 *
 * Each in turn, `HERD_SPLIT_ROUNDS` rounds (2 by default) of 4 s after 1 s
 * of unmeasured load; for each, the servers' user and system time from
 * `/proc/<pid>/stat` over the writes answered, summed over the five
 * processes, per round. It needs the load generator `deno task bench`
 * builds (bench/.build/loadgen) and `redis-server` for the Redis herd.
 */

import { TestHerd } from "../tests/testing/herd.ts";
import { startFakePlaces } from "../tests/testing/fake_places.ts";
import { RedisHerd } from "./redis_herd.ts";
import { commandExists, runCommand } from "./command.ts";
import { startSkeleton } from "./skeleton.ts";

const LOADGEN = "bench/.build/loadgen";
const ROUNDS = Number(Deno.env.get("HERD_SPLIT_ROUNDS") ?? "2");
const SECONDS = 4;
const KEY = "bench-split-key";
/** The ticks of /proc/<pid>/stat: 100 a second on Linux. */
const TICK_US = 10_000;

type Json = Record<string, unknown>;

/** User and system time of each of `pids` so far, in µs (through `cat`: Deno reads /proc/<pid> only with -A). */
async function cpuOf(pids: number[]): Promise<{ user: number; system: number }[]> {
  const { code, stdout, stderr } = await runCommand("cat", pids.map((pid) => `/proc/${pid}/stat`));
  if (code !== 0) throw new Error(`cat /proc/<pid>/stat failed: ${stderr}`);
  return stdout.trim().split("\n").map((stat) => {
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return { user: Number(fields[11]) * TICK_US, system: Number(fields[12]) * TICK_US };
  });
}

/** Runs the load generator with `args` for `seconds`, no warm-up of its own; its JSON. */
async function loadgen(args: string[], seconds: number): Promise<Json> {
  const { code, stdout, stderr } = await runCommand(LOADGEN, [...args, "--warmup", "0", "--duration", `${seconds}`]);
  if (code !== 0) throw new Error(`loadgen failed (${code}): ${stderr}`);
  return JSON.parse(stdout.trim().split("\n").at(-1)!) as Json;
}

/** One run after a second of warm-up: writes a second, and the servers' user and system µs per write. */
async function measure(args: string[], pids: number[]): Promise<{ perSecond: number; user: number; system: number }> {
  await loadgen(args, 1);
  const before = await cpuOf(pids);
  const result = await loadgen(args, SECONDS);
  const after = await cpuOf(pids);
  const writes = result.commands as number;
  const sum = (key: "user" | "system") => after.reduce((total, cpu, i) => total + cpu[key] - before[i][key], 0);
  return { perSecond: result.throughput_per_s as number, user: sum("user") / writes, system: sum("system") / writes };
}

if (!(await Deno.stat(LOADGEN).catch(() => null))) {
  console.error(
    `${LOADGEN} is missing: run \`deno task bench\` once (it builds it), or build it with gcc (bench/LOADGEN.md)`,
  );
  Deno.exit(1);
}

const fake = startFakePlaces({ key: KEY, results: 20 });
await using herd = await TestHerd.create({ placesUrl: fake.url, key: KEY, places: { provider: "google-new" } });
await herd.startAll();
const herdPorts = herd.names.map((name) => herd.port(name));
const herdPids = herd.names.map((name) => herd.pid(name));

const skeleton = await startSkeleton();

let redisHerd: RedisHerd | undefined;
if (await commandExists("redis-server")) {
  const config = JSON.parse(await Deno.readTextFile(herd.configPath));
  const names = Object.keys(config.servers);
  redisHerd = await RedisHerd.start({ names, links: config.links, root: names[0], certDir: herd.config.certDir });
} else {
  console.error("redis-server not found: the Redis herd is left out");
}

const ports = (list: number[]) => list.flatMap((port) => ["--port", String(port)]);
const setups: [string, (depth: number) => [string[], number[]]][] = [
  [
    "herd, load spread",
    (depth) => [["rr", ...ports(herdPorts), "--connections", "50", "--depth", `${depth}`], herdPids],
  ],
  [
    "herd, all at Hill",
    (depth) => [["rr", ...ports(herdPorts.slice(0, 1)), "--connections", "50", "--depth", `${depth}`], herdPids],
  ],
  ["skeleton herd, spread", (depth) => [
    ["rr", ...ports(skeleton.ports), "--connections", "50", "--depth", `${depth}`],
    skeleton.pids,
  ]],
];
if (redisHerd !== undefined) {
  const redis = redisHerd;
  setups.push(["Redis herd, at Hill", (depth) => [
    [
      "rr",
      "--protocol",
      "resp",
      "--port",
      String(redis.port(redis.tree.root)),
      "--connections",
      "50",
      "--depth",
      `${depth}`,
      "--wait-replicas",
      String(redis.rootReplicas),
      "--wait-timeout-ms",
      String(herd.config.peers.ackTimeoutMs),
    ],
    redis.names.map((name) => redis.pid(name)),
  ]]);
}

try {
  for (const depth of [1, 16]) {
    console.log(
      `\n${depth === 1 ? "One command in flight per connection" : "16 in flight per connection"}, 50 connections`,
    );
    console.log("| setup | round | writes/s | user µs per write | system µs per write | total |");
    console.log("| --- | --- | ---: | ---: | ---: | ---: |");
    for (let round = 1; round <= ROUNDS; round++) {
      for (const [label, setup] of setups) {
        const [args, pids] = setup(depth);
        const { perSecond, user, system } = await measure(args, pids);
        console.log(
          `| ${label} | ${round} | ${Math.round(perSecond)} | ${user.toFixed(1)} | ${system.toFixed(1)} | ${
            (user + system).toFixed(1)
          } |`,
        );
      }
    }
  }
} finally {
  await redisHerd?.[Symbol.asyncDispose]();
  await skeleton.stop();
  await fake.close();
}
