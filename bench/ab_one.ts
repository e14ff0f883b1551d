/**
 * One A/B measurement of the herd at one checkout, for bench/ab.ts: a
 * five-server herd from that checkout's own test harness, then scenarios 1,
 * 2, 3, 5 (warm) and 4 as `deno task bench` runs them (3 s after 1 s of
 * warm-up, one run each), and start-up (median of 5). Prints one line of
 * JSON. Run by ab.ts with the checkout's own deno.json:
 *
 *   deno run --config <root>/deno.json ... bench/ab_one.ts <root> <label> <loadgen> [peers JSON]
 */

import { measureStartups } from "./startup.ts";

const [root, label, loadgen, peers] = Deno.args;
const { TestHerd } = await import(`${root}/tests/testing/herd.ts`);
const { startFakePlaces } = await import(`${root}/tests/testing/fake_places.ts`);
const KEY = "k-ab-test-key";
const decoder = new TextDecoder();

/** The fields of the load generator's report this script reads. */
interface LoadgenReport {
  throughput_per_s: number;
  server_cpu?: { us_per_command: number };
  latency_us: { p50: number; p99: number };
  connected_at_unix_us: number;
}

async function run(args: string[]): Promise<LoadgenReport> {
  const out = await new Deno.Command(loadgen, { args: [...args, "--quiet"], stdout: "piped", stderr: "piped" })
    .output();
  const last = decoder.decode(out.stdout).trim().split("\n").at(-1) ?? "";
  if (!out.success) throw new Error(`loadgen ${args.join(" ")}: ${decoder.decode(out.stderr)}`);
  return JSON.parse(last);
}

const fake = startFakePlaces({ key: KEY, results: 20 });
const herd = await TestHerd.create({
  placesUrl: fake.url,
  key: KEY,
  places: { provider: "google-new" },
  ...(peers ? { peers: JSON.parse(peers) } : {}),
});
await herd.startAll();
const targets = (herd.names as string[]).flatMap((name) => ["--port", String(herd.port(name))]);
const pids = (herd.names as string[]).flatMap((name) => ["--server-pid", String(herd.pid(name))]);
const timed = ["--duration", "3", "--warmup", "1"];
const result: Record<string, unknown> = { label };
const figures = (r: LoadgenReport) => ({
  per_s: Math.round(r.throughput_per_s),
  cpu_us: Math.round(r.server_cpu?.us_per_command ?? NaN),
});
result.s1 = figures(await run(["rr", "--connections", "50", ...targets, ...pids, ...timed]));
result.s2 = figures(await run(["pipelined", "--connections", "50", "--depth", "16", ...targets, ...pids, ...timed]));
result.s3 = figures(await run(["halfclose", "--concurrency", "50", ...targets, ...pids, ...timed]));
const whatsat = ["rr", "--connections", "50", "--command", "whatsat", "--radius", "10", "--bound", "20"];
result.s5_warm = figures(await run([...whatsat, ...targets, ...pids, ...timed]));
const propagation = await run([
  "propagation",
  "--from-port",
  String(herd.port("Hill")),
  "--to-port",
  String(herd.port("Campbell")),
  "--samples",
  "1000",
]);
result.s4 = { p50_us: Math.round(propagation.latency_us.p50), p99_us: Math.round(propagation.latency_us.p99) };
await herd[Symbol.asyncDispose]();
await fake.close();

const solo = await TestHerd.create({ placesUrl: fake.url, names: ["Solo"], links: [] });
const startups = await measureStartups(solo, "Solo", run);
result.s7_ms = Math.round(startups.sort((a, b) => a - b)[2]);
await solo[Symbol.asyncDispose]();
console.log(JSON.stringify(result));
Deno.exit(0);
