/** Running the bench's helper programs (gcc, openssl, redis-cli, the load generator) to completion. */

const _decoder = new TextDecoder();

/** What a finished command printed, and its exit code. */
export interface CommandOutput {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `command` with `args` and no input; resolves when it exits, whatever its exit code. */
export async function runCommand(command: string, args: string[]): Promise<CommandOutput> {
  const output = await new Deno.Command(command, { args, stdin: "null" }).output();
  return { code: output.code, stdout: _decoder.decode(output.stdout), stderr: _decoder.decode(output.stderr) };
}

/** Whether `name` can be started at all (found on PATH and allowed); its exit code does not matter. */
export async function commandExists(name: string): Promise<boolean> {
  try {
    await new Deno.Command(name, { args: ["--version"], stdin: "null", stdout: "null", stderr: "null" }).output();
    return true;
  } catch {
    return false;
  }
}

/** Sleeps `ms` milliseconds. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * The first line `child` writes to its standard output (a helper announcing
 * itself once it is up: its ports, its pids, "ready"); the rest of its
 * output is not read. Throws, naming `what`, if the child ends first.
 */
export async function firstLine(child: Deno.ChildProcess, what: string): Promise<string> {
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  try {
    while (!text.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`${what} exited before it was up (exit code ${(await child.status).code})`);
      text += value;
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
  return text.slice(0, text.indexOf("\n"));
}
