/** Starting the skeleton herd (bench/skeleton_herd.ts) from a bench script, as a child process. */

import { firstLine } from "./command.ts";

/** A running skeleton herd: its client ports and server pids. */
export interface Skeleton {
  ports: number[];
  pids: number[];
  /** Stops its servers and waits for the child to exit. */
  stop(): Promise<void>;
}

/** Starts bench/skeleton_herd.ts (five processes) and reads their ports and pids. */
export async function startSkeleton(): Promise<Skeleton> {
  const child = new Deno.Command("deno", {
    args: ["run", "--no-prompt", "--allow-net=127.0.0.1", "--allow-run=deno", "bench/skeleton_herd.ts"],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const { ports, pids } = JSON.parse(await firstLine(child, "The skeleton herd"));
  return {
    ports,
    pids,
    async stop() {
      await child.stdin.close().catch(() => {});
      await child.status;
    },
  };
}
