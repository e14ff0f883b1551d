/**
 * `deno task bench:ab REV[:label][@peers-json] ...`: the herd at several
 * git revisions, measured alternately in the same session (these machines
 * drift by tens of percent from hour to hour, so before/after figures are
 * only worth comparing when taken in turns). Each revision is checked out
 * into a temporary worktree; each round measures every revision once
 * (bench/ab_one.ts: scenarios 1, 2, 3, 5 warm, 4 and start-up, one run
 * each), in the order given and then in reverse, round after round, for
 * `HERD_AB_ROUNDS` rounds (4). A revision may carry config for
 * `peers` as JSON after `@`, e.g. `HEAD:flood@{"broadcast":"flood"}`.
 * Prints each run as it ends, then each revision's ranges.
 *
 * Needs bench/.build/loadgen (built by `deno task bench`) and git.
 */

import { checkOut, denoRunArgs, LOADGEN, requireLoadgen } from "./checkouts.ts";

const ONE = new URL("./ab_one.ts", import.meta.url).pathname;
const ROUNDS = Number(Deno.env.get("HERD_AB_ROUNDS") ?? 4);
const decoder = new TextDecoder();

interface Subject {
  commit: string;
  label: string;
  peers: string;
  root: string;
}

if (Deno.args.length === 0) {
  console.error("usage: deno task bench:ab REV[:label][@peers-json] ...   e.g. aea5397:before HEAD:after");
  Deno.exit(2);
}
await requireLoadgen();
const specs = Deno.args.map((spec) => {
  const [head, peers = ""] = spec.split(/@(.*)/s);
  const [rev, label = rev] = head.split(":");
  return { rev, label, peers };
});
const checkouts = await checkOut(specs.map((spec) => spec.rev), "herd-ab-");
const subjects: Subject[] = specs.map(({ label, peers }, i) => ({ ...checkouts.list[i], label, peers }));
/** A scenario's figures in one line of ab_one.ts. */
interface Figures {
  per_s: number;
  cpu_us: number;
}
/** One line of ab_one.ts. */
interface Run {
  s1: Figures;
  s2: Figures;
  s3: Figures;
  s5_warm: Figures;
  s4: { p50_us: number; p99_us: number };
  s7_ms: number;
}
const results = new Map<string, Run[]>();
try {
  for (let round = 1; round <= ROUNDS; round++) {
    // In turns, and in the other order every other round, so that a bias of the slot falls on each revision alike: in
    // two runs of three rounds (2026-12-05), the herd run second was slower in scenario 1 whichever code it ran.
    for (const subject of round % 2 === 1 ? subjects : [...subjects].reverse()) {
      const out = await new Deno.Command("deno", {
        args: [
          ...denoRunArgs(subject.root, ONE, `deno,${LOADGEN}`),
          subject.root,
          subject.label,
          LOADGEN,
          subject.peers,
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const line = decoder.decode(out.stdout).trim().split("\n").at(-1) ?? "";
      if (!out.success) {
        console.log(
          `round ${round} ${subject.label} (${subject.commit}) failed: ${decoder.decode(out.stderr).slice(-500)}`,
        );
        continue;
      }
      console.log(`round ${round} ${subject.label} (${subject.commit}) ${line}`);
      const runs = results.get(subject.label) ?? [];
      runs.push(JSON.parse(line));
      results.set(subject.label, runs);
    }
  }
} finally {
  await checkouts[Symbol.asyncDispose]();
}
const range = (values: number[]) => `${Math.min(...values)}-${Math.max(...values)}`;
console.log("\nranges over the rounds (scenario: per second / server CPU µs per command; 4: p99 µs; 7: ms)");
for (const [label, runs] of results) {
  const pick = (scenario: "s1" | "s2" | "s3" | "s5_warm", field: keyof Figures) =>
    range(runs.map((run) => run[scenario][field]));
  console.log(
    `${label}: 1 ${pick("s1", "per_s")}/s ${pick("s1", "cpu_us")}µs | 2 ${pick("s2", "per_s")}/s ${
      pick("s2", "cpu_us")
    }µs | 3 ${pick("s3", "per_s")}/s ${pick("s3", "cpu_us")}µs | 5 warm ${pick("s5_warm", "per_s")}/s | 4 p99 ${
      range(runs.map((run) => run.s4.p99_us))
    }µs | 7 ${range(runs.map((run) => run.s7_ms))} ms`,
  );
}
