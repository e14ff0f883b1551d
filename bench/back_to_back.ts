/**
 * Runs of one scenario back to back on one fresh herd, to see a herd warm up
 * (docs/PERFORMANCE.md, "Third round"): a five-server herd with the shipped
 * defaults (the offline Places provider), then `RUNS` runs of scenario 1
 * (50 connections spread over the five client ports, one IAMAT in flight
 * each; `--depth 16` for scenario 2), 3 s after 1 s of warm-up each, as
 * `deno task bench` runs them. Prints each run's IAMATs per second and the
 * servers' CPU per IAMAT.
 *
 *   deno run --no-prompt --allow-read=.,/tmp --allow-write=/tmp --allow-net=127.0.0.1 \
 *     --allow-run=deno,bench/.build/loadgen bench/back_to_back.ts [RUNS] [--depth D]
 *
 * Needs bench/.build/loadgen (built by `deno task bench`).
 */

import { parseArgs } from "node:util";
import { TestHerd } from "../tests/testing/herd.ts";

const LOADGEN = "bench/.build/loadgen";

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    options: { depth: { type: "string", default: "1" } },
    allowPositionals: true,
  });
  const runs = Number(positionals[0] ?? 8);
  await using herd = await TestHerd.create({ placesUrl: "http://127.0.0.1:9/unused", places: { provider: "offline" } });
  await herd.startAll();
  await herd.waitConverged(herd.names);
  const ports = herd.names.flatMap((name) => ["--port", String(herd.port(name))]);
  const pids = herd.names.flatMap((name) => ["--server-pid", String(herd.pid(name))]);
  console.log(
    `scenario ${values.depth === "1" ? 1 : 2} (depth ${values.depth}), ${runs} runs back to back on one herd`,
  );
  for (let run = 1; run <= runs; run++) {
    const { code, stdout, stderr } = await new Deno.Command(LOADGEN, {
      args: [
        "rr",
        ...ports,
        "--connections",
        "50",
        "--depth",
        values.depth,
        "--duration",
        "3",
        "--warmup",
        "1",
        ...pids,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (code !== 0) throw new Error(`loadgen failed: ${new TextDecoder().decode(stderr)}`);
    const result = JSON.parse(new TextDecoder().decode(stdout));
    console.log(
      `run ${run}: ${Math.round(result.throughput_per_s)} IAMAT/s, ` +
        `${Math.round(result.server_cpu.us_per_command)} µs of server CPU per IAMAT`,
    );
  }
}

if (import.meta.main) await main();
