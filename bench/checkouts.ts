/**
 * What `bench:ab` (ab.ts) and `bench:pair` (ab_pair.ts) share: the load
 * generator's path, git revisions checked out into temporary worktrees, and
 * the `deno run` that runs a script with one checkout's own config.
 */

/** The load generator `deno task bench` builds. */
export const LOADGEN: string = new URL("./.build/loadgen", import.meta.url).pathname;
const REPO = new URL("../", import.meta.url).pathname;
const decoder = new TextDecoder();

/** Exits with a message when the load generator has not been built. */
export async function requireLoadgen(): Promise<void> {
  await Deno.stat(LOADGEN).catch(() => {
    console.error(`${LOADGEN} is missing: deno task bench builds it`);
    Deno.exit(2);
  });
}

async function git(args: string[]): Promise<string> {
  const out = await new Deno.Command("git", { args: ["-C", REPO, ...args], stdout: "piped", stderr: "piped" }).output();
  if (!out.success) throw new Error(`git ${args.join(" ")}: ${decoder.decode(out.stderr)}`);
  return decoder.decode(out.stdout).trim();
}

/** One revision checked out: its commit (8 digits) and the worktree's root. */
export interface Checkout {
  /** The commit, its first 8 hex digits. */
  commit: string;
  /** The worktree's directory. */
  root: string;
}

/** Revisions checked out into worktrees under one temporary directory; disposing removes them. */
export interface Checkouts extends AsyncDisposable {
  /** One per revision, in the order given. */
  list: Checkout[];
}

/** Checks each of `revs` out into a worktree of its own under a new `/tmp/<prefix>...` directory. */
export async function checkOut(revs: string[], prefix: string): Promise<Checkouts> {
  const scratch = await Deno.makeTempDir({ dir: "/tmp", prefix });
  const list: Checkout[] = [];
  const checkouts: Checkouts = {
    list,
    async [Symbol.asyncDispose]() {
      for (const { root } of list) await git(["worktree", "remove", "--force", root]).catch(() => {});
      await Deno.remove(scratch, { recursive: true }).catch(() => {});
    },
  };
  try {
    for (const rev of revs) {
      const commit = await git(["rev-parse", "--verify", `${rev}^{commit}`]);
      const root = `${scratch}/${list.length}-${commit.slice(0, 8)}`;
      await git(["worktree", "add", "--detach", "-f", root, commit]);
      list.push({ commit: commit.slice(0, 8), root });
    }
  } catch (error) {
    await checkouts[Symbol.asyncDispose]();
    throw error;
  }
  return checkouts;
}

/**
 * `deno run` of `script` with the config of the checkout at `root`, allowed
 * to read it and `/tmp`, write `/tmp`, use loopback and run `allowRun`.
 */
export function denoRunArgs(root: string, script: string, allowRun: string): string[] {
  return [
    "run",
    "--no-prompt",
    "--config",
    `${root}/deno.json`,
    `--allow-read=${root},/tmp`,
    "--allow-write=/tmp",
    `--allow-run=${allowRun}`,
    "--allow-net=127.0.0.1",
    script,
  ];
}
