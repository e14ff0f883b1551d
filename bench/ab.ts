/**
 * `deno task bench:ab REV[:label][@peers-json] ...`: the herd at several
 * git revisions, measured alternately in the same session (these machines
 * drift by tens of percent from hour to hour, so before/after figures are
 * only worth comparing when taken in turns). Each revision is checked out
 * into a temporary worktree; each round measures every revision once
 * (bench/ab_one.ts: scenarios 1, 2, 3, 5 warm, 4 and start-up, one run
 * each), for `HERD_AB_ROUNDS` rounds (3). A revision may carry config for
 * `peers` as JSON after `@`, e.g. `HEAD:flood@{"broadcast":"flood"}`.
 * Prints each run as it ends, then each revision's ranges.
 *
 * Needs bench/.build/loadgen (built by `deno task bench`) and git.
 */

const LOADGEN = new URL("./.build/loadgen", import.meta.url).pathname;
const ONE = new URL("./ab_one.ts", import.meta.url).pathname;
const REPO = new URL("../", import.meta.url).pathname;
const ROUNDS = Number(Deno.env.get("HERD_AB_ROUNDS") ?? 3);
const decoder = new TextDecoder();

interface Subject {
  rev: string;
  label: string;
  peers: string;
  root: string;
}

async function git(args: string[]): Promise<string> {
  const out = await new Deno.Command("git", { args: ["-C", REPO, ...args], stdout: "piped", stderr: "piped" }).output();
  if (!out.success) throw new Error(`git ${args.join(" ")}: ${decoder.decode(out.stderr)}`);
  return decoder.decode(out.stdout).trim();
}

if (Deno.args.length === 0) {
  console.error("usage: deno task bench:ab REV[:label][@peers-json] ...   e.g. aea5397:before HEAD:after");
  Deno.exit(2);
}
await Deno.stat(LOADGEN).catch(() => {
  console.error(`${LOADGEN} is missing: deno task bench builds it`);
  Deno.exit(2);
});
const scratch = await Deno.makeTempDir({ dir: "/tmp", prefix: "herd-ab-" });
const subjects: Subject[] = [];
for (const spec of Deno.args) {
  const [head, peers = ""] = spec.split(/@(.*)/s);
  const [rev, label = rev] = head.split(":");
  const commit = await git(["rev-parse", "--verify", `${rev}^{commit}`]);
  const root = `${scratch}/${subjects.length}-${commit.slice(0, 8)}`;
  await git(["worktree", "add", "--detach", "-f", root, commit]);
  subjects.push({ rev: commit.slice(0, 8), label, peers, root });
}
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
    for (const subject of subjects) {
      const out = await new Deno.Command("deno", {
        args: [
          "run",
          "--no-prompt",
          "--config",
          `${subject.root}/deno.json`,
          `--allow-read=${subject.root},/tmp`,
          "--allow-write=/tmp",
          `--allow-run=deno,${LOADGEN}`,
          "--allow-net=127.0.0.1",
          ONE,
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
          `round ${round} ${subject.label} (${subject.rev}) failed: ${decoder.decode(out.stderr).slice(-500)}`,
        );
        continue;
      }
      console.log(`round ${round} ${subject.label} (${subject.rev}) ${line}`);
      const runs = results.get(subject.label) ?? [];
      runs.push(JSON.parse(line));
      results.set(subject.label, runs);
    }
  }
} finally {
  for (const subject of subjects) await git(["worktree", "remove", "--force", subject.root]).catch(() => {});
  await Deno.remove(scratch, { recursive: true }).catch(() => {});
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
