/**
 * `deno task bench:pair REV_A[:label] REV_B[:label]`: two revisions of the
 * herd measured at the same time. Each revision is checked out into a
 * temporary worktree and runs its own five-server herd (bench/pair_herd.ts);
 * then, for `HERD_PAIR_ROUNDS` rounds (5), scenarios 1, 2, 3 and 5 (warm)
 * run against both herds at once, one load generator each, with the same
 * settings as `deno task bench`. The two herds share the machine's cores
 * for the same seconds, so the noise of these machines (tens of percent
 * from minute to minute) falls on both alike: the ratio of what they
 * answered in the same window is the measure, not either figure (each herd
 * gets about half of the machine). Run a revision against itself to see
 * the harness's own spread. Prints each round, then the median ratios.
 *
 * Needs bench/.build/loadgen (built by `deno task bench`) and git.
 */

import { checkOut, denoRunArgs, LOADGEN, requireLoadgen } from "./checkouts.ts";
import { firstLine } from "./command.ts";

const HERD = new URL("./pair_herd.ts", import.meta.url).pathname;
const ROUNDS = Number(Deno.env.get("HERD_PAIR_ROUNDS") ?? 5);
const decoder = new TextDecoder();

if (Deno.args.length !== 2) {
  console.error("usage: deno task bench:pair REV_A[:label] REV_B[:label]   e.g. 84b38f8:before HEAD:after");
  Deno.exit(2);
}
await requireLoadgen();

/** A running herd of one revision. */
interface Side {
  label: string;
  root: string;
  child?: Deno.ChildProcess;
  ports: number[];
  pids: number[];
}

/** Starts the herd of `side` and waits for its ports and pids. */
async function start(side: Side): Promise<void> {
  const child = new Deno.Command("deno", {
    args: [...denoRunArgs(side.root, HERD, "deno"), side.root],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  side.child = child;
  const { ports, pids } = JSON.parse(await firstLine(child, `The ${side.label} herd`));
  side.ports = ports;
  side.pids = pids;
}

/** The fields of the load generator's report used here. */
interface Report {
  throughput_per_s: number;
  server_cpu?: { us_per_command: number };
}

async function load(side: Side, args: string[]): Promise<Report> {
  const targets = side.ports.flatMap((port) => ["--port", String(port)]);
  const pids = side.pids.flatMap((pid) => ["--server-pid", String(pid)]);
  const out = await new Deno.Command(LOADGEN, {
    args: [...args, ...targets, ...pids, "--duration", "3", "--warmup", "1", "--quiet"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(`loadgen ${args.join(" ")} (${side.label}): ${decoder.decode(out.stderr)}`);
  return JSON.parse(decoder.decode(out.stdout).trim().split("\n").at(-1) ?? "");
}

const SCENARIOS: [string, string[]][] = [
  ["1 IAMAT rr", ["rr", "--connections", "50"]],
  ["2 IAMAT pipelined", ["pipelined", "--connections", "50", "--depth", "16"]],
  ["3 one command per connection", ["halfclose", "--concurrency", "50"]],
  ["5 WHATSAT warm", ["rr", "--connections", "50", "--command", "whatsat", "--radius", "10", "--bound", "20"]],
];

const specs = Deno.args.map((spec) => {
  const [rev, label = rev] = spec.split(":");
  return { rev, label };
});
// The same label twice (a revision against itself) is told apart by a prime.
if (specs[1].label === specs[0].label) specs[1].label += "'";
const checkouts = await checkOut(specs.map((spec) => spec.rev), "herd-pair-");
const sides: Side[] = specs.map(({ label }, i) => ({ label, root: checkouts.list[i].root, ports: [], pids: [] }));
const [a, b] = sides;
const ratios = new Map<string, { perS: number[]; cpu: number[] }>();
try {
  // One after the other: each herd takes its ports from the free ones when it starts, and two herds starting at once
  // could be given the same port (a run failed so: "Address already in use").
  for (const side of sides) await start(side);
  // The WHATSAT scenario's cache is warmed by a first pass against each herd, not measured.
  await Promise.all(sides.map((side) => load(side, SCENARIOS[3][1])));
  for (let round = 1; round <= ROUNDS; round++) {
    for (const [name, args] of SCENARIOS) {
      const [ra, rb] = await Promise.all([load(a, args), load(b, args)]);
      const perS = rb.throughput_per_s / ra.throughput_per_s;
      const cpu = (rb.server_cpu?.us_per_command ?? NaN) / (ra.server_cpu?.us_per_command ?? NaN);
      const entry = ratios.get(name) ?? { perS: [], cpu: [] };
      entry.perS.push(perS);
      entry.cpu.push(cpu);
      ratios.set(name, entry);
      console.log(
        `round ${round} ${name}: ${a.label} ${Math.round(ra.throughput_per_s)}/s ` +
          `${Math.round(ra.server_cpu?.us_per_command ?? NaN)} µs, ${b.label} ${Math.round(rb.throughput_per_s)}/s ` +
          `${Math.round(rb.server_cpu?.us_per_command ?? NaN)} µs: ${perS.toFixed(2)}× the commands, ` +
          `${cpu.toFixed(2)}× the CPU per command`,
      );
    }
  }
} finally {
  for (const side of sides) {
    try {
      await side.child?.stdin.close();
      await side.child?.status;
    } catch { /* already gone */ }
  }
  await checkouts[Symbol.asyncDispose]();
}
const median = (values: number[]) => {
  const sorted = [...values].sort((x, y) => x - y);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
};
console.log(`\n${b.label} against ${a.label}, run at the same time: median over ${ROUNDS} rounds (range)`);
for (const [name, { perS, cpu }] of ratios) {
  const range = (values: number[]) => `${Math.min(...values).toFixed(2)}-${Math.max(...values).toFixed(2)}`;
  console.log(
    `${name}: ${median(perS).toFixed(2)}× the commands (${range(perS)}), ` +
      `${median(cpu).toFixed(2)}× the server CPU per command (${range(cpu)})`,
  );
}
