/**
 * What the tests read of a process from `/proc`: resident memory and file
 * descriptors, to check that nothing grows without bound or leaks.
 */

import assert from "node:assert/strict";

const decoder = new TextDecoder();

/** Resident memory, open descriptors and descriptor limit of a process. */
export interface ProcessStats {
  /** Resident memory (`VmRSS`), in kB. */
  rssKb: number;
  /** Open file descriptors. */
  openFiles: number;
  /** The soft limit on open file descriptors; 1e9 when unlimited. */
  maxOpenFiles: number;
}

/**
 * Reads `/proc/<pid>`. Deno lets only `--allow-all` read `/proc`, so a
 * short `deno eval` child (which runs with all permissions) reads it.
 */
export async function inspectProcess(pid: number): Promise<ProcessStats> {
  const script = `
    const status = Deno.readTextFileSync("/proc/${pid}/status");
    const limits = Deno.readTextFileSync("/proc/${pid}/limits");
    let openFiles = 0;
    for (const _ of Deno.readDirSync("/proc/${pid}/fd")) openFiles++;
    const max = /^Max open files\\s+(\\S+)/m.exec(limits)[1];
    console.log(JSON.stringify({
      rssKb: Number(/^VmRSS:\\s+(\\d+) kB$/m.exec(status)[1]),
      openFiles,
      maxOpenFiles: max === "unlimited" ? 1e9 : Number(max),
    }));`;
  const output = await new Deno.Command("deno", {
    args: ["eval", "--no-config", "--quiet", script],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(output.success, `reading /proc/${pid} failed: ${decoder.decode(output.stderr)}`);
  return JSON.parse(decoder.decode(output.stdout));
}
