/**
 * Starting servers as child processes with exactly the permissions each
 * needs: `serve` runs one, `herd` runs them all with their output prefixed
 * by name, `compile` bakes one binary per server.
 */

import { ADMIN_TOKEN_VARIABLE, type HerdConfig, PLACES_KEY_VARIABLE, serverNamed } from "../config/config.ts";
import { adminAddresses, clientAddressesWithoutAdmin } from "./status.ts";
import { backupAddresses } from "./backup.ts";
import { LineStream } from "../net/line_stream.ts";
import { dirname } from "node:path";
import { dashboardPermissionFlags, serverPermissionFlags } from "./permissions.ts";

/** The Deno executable children run with, by name: `--allow-run=deno` grants exactly this. */
const DENO = "deno";

/** Path of the program's entry point. */
export const MAIN_MODULE: string = decodeURIComponent(new URL("../../main.ts", import.meta.url).pathname);

/** The `.env` file next to the config, if there is one. */
export function envFileFor(config: HerdConfig): string | undefined {
  const path = _envPathFor(config);
  try {
    return Deno.statSync(path).isFile ? path : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Whether dotenv text sets the Places key to something non-empty. Only
 * presence matters here (it picks the provider, hence the permissions);
 * the value itself reaches the server through Deno's own `--env-file`.
 */
export function envTextSetsKey(text: string): boolean {
  for (const raw of text.split(/\r?\n/)) {
    const match = /^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(raw);
    if (match === null || match[1] !== PLACES_KEY_VARIABLE) continue;
    const value = match[2].replace(/\s+#.*$/, "").trim().replace(/^(['"])(.*)\1$/, "$2");
    if (value !== "") return true;
  }
  return false;
}

/**
 * Whether the servers will have a Places key, as they will see it: the
 * variable when it is exported, even empty (Deno's `--env-file` overrides no
 * variable, so the `.env` is not read then), else the `.env` next to the config.
 */
export function keyPresentFor(config: HerdConfig): boolean {
  try {
    const value = Deno.env.get(PLACES_KEY_VARIABLE);
    if (value !== undefined) return value !== "";
  } catch { /* no env permission: only the .env file can tell */ }
  const envFile = envFileFor(config);
  if (envFile === undefined) return false;
  try {
    return envTextSetsKey(Deno.readTextFileSync(envFile));
  } catch {
    return false;
  }
}

/** The `.env` next to the config, whether or not it is there. */
function _envPathFor(config: HerdConfig): string {
  return config.path.replace(/[^/]*$/, ".env");
}

/**
 * Where {@linkcode keyPresentFor} could not look for a Places key, for want of
 * a permission: the variable, the `.env` next to the config, both or neither.
 */
export function keyBlindSpots(config: HerdConfig): string[] {
  const spots: string[] = [];
  if (Deno.permissions.querySync({ name: "env", variable: PLACES_KEY_VARIABLE }).state !== "granted") {
    spots.push(PLACES_KEY_VARIABLE);
  }
  const envPath = _envPathFor(config);
  if (Deno.permissions.querySync({ name: "read", path: envPath }).state !== "granted") spots.push(envPath);
  return spots;
}

/** Options for {@linkcode serverRunArgs}. */
export interface RunOptions {
  /** A dotenv file for `--env-file`. */
  envFile?: string;
  /**
   * Started by a launcher (`serve`, `herd`) that holds the other end of its
   * stdin: the server stops when that closes, so that a launcher gone
   * (killed, or its terminal closed) leaves no server behind.
   */
  launched?: boolean;
  /** Whether the server will have a Places key (see {@linkcode serverPermissionFlags}). */
  keyPresent: boolean;
  /** The real paths of `dataDir` and `logDir`, from {@linkcode realDirectoriesInChild}. */
  realDirectories?: string[];
}

/** The `deno run` arguments that start server `name` with its own permissions. */
export function serverRunArgs(config: HerdConfig, name: string, options: RunOptions): string[] {
  serverNamed(config, name);
  return [
    "run",
    "--no-prompt",
    ...serverPermissionFlags(config, name, {
      keyPresent: options.keyPresent,
      realDirectories: options.realDirectories,
    }),
    ...(options.envFile === undefined ? [] : [`--env-file=${options.envFile}`]),
    MAIN_MODULE,
    "run",
    name,
    "--config",
    config.path,
    ...(options.launched ? ["--launched"] : []),
  ];
}

/**
 * The `deno compile` arguments that build `dist/<name>` with that server's
 * name and permissions baked in. The key is given at run time, so with
 * `auto` the binary may use `google-new`: its host is allowed.
 */
export function serverCompileArgs(config: HerdConfig, name: string, outDir: string): string[] {
  serverNamed(config, name);
  return [
    "compile",
    "--no-prompt",
    ...serverPermissionFlags(config, name, { keyPresent: true }),
    "--output",
    `${outDir}/${name}`,
    MAIN_MODULE,
    "run",
    name,
    "--config",
    config.path,
  ];
}

/**
 * Starts `deno` with `args`; its output piped to us or shared. A child given
 * `--launched` gets a pipe for its stdin that we never write to: it ends
 * when this process does, however it ends, and the child stops then.
 */
function _spawn(args: string[], piped: boolean): Deno.ChildProcess {
  return new Deno.Command(DENO, {
    args,
    stdin: args.includes("--launched") ? "piped" : "null",
    stdout: piped ? "piped" : "inherit",
    stderr: piped ? "piped" : "inherit",
  }).spawn();
}

/** How often a launcher looks whether its parent is still there, in milliseconds. */
const _PARENT_CHECK_MS = 1000;

/**
 * Passes SIGINT and SIGTERM on to `children`, and SIGTERM when this
 * launcher's parent is gone (`deno task`, or the launcher that started this
 * one, killed with SIGKILL: nothing else would tell its children; they watch
 * their stdin for this launcher, see `--launched`); returns what undoes
 * that, whether a signal came, and a child's exit code counting its end by a
 * signal passed on as a clean exit. Set up before the children are started
 * (see `add`): Deno's listener takes a moment to be in place, and a signal
 * before that would end the launcher, not reach them.
 */
function _forwardSignals(children: Deno.ChildProcess[]): {
  add: (child: Deno.ChildProcess) => Deno.ChildProcess;
  stop: () => void;
  signalled: () => boolean;
  exitCode: (status: Deno.CommandStatus) => number;
} {
  const passedOn = new Set<Deno.Signal>();
  let last: Deno.Signal | undefined;
  const killAll = (signal: Deno.Signal) => {
    passedOn.add(signal);
    last = signal;
    for (const child of children) {
      try {
        child.kill(signal);
      } catch { /* already gone */ }
    }
  };
  const handlers = (["SIGINT", "SIGTERM"] as const).map((signal) => {
    const handler = () => killAll(signal);
    Deno.addSignalListener(signal, handler);
    return [signal, handler] as const;
  });
  const parent = Deno.ppid;
  const watch = setInterval(() => {
    if (Deno.ppid === parent) return;
    clearInterval(watch);
    killAll("SIGTERM");
  }, _PARENT_CHECK_MS);
  return {
    // A child started after a signal came gets it at once.
    add: (child) => {
      children.push(child);
      if (last !== undefined) killAll(last);
      return child;
    },
    stop: () => {
      clearInterval(watch);
      handlers.forEach(([signal, handler]) => Deno.removeSignalListener(signal, handler));
    },
    signalled: () => passedOn.size > 0,
    // A child that a signal we passed on ended before it listened for it (Ctrl-C in its first moments) did as asked.
    exitCode: (status) => status.signal !== null && passedOn.has(status.signal) ? 0 : status.code,
  };
}

/**
 * The `deno run` arguments of `main.ts status-run`: it may read the config
 * (and the `.env` with the admin token) and reach the servers' admin ports,
 * and the client port of a server without one, nothing more.
 */
export function statusRunArgs(config: HerdConfig): string[] {
  const envFile = envFileFor(config);
  // A server without an admin port: its client port, to see whether it is up at all.
  const addresses = [...adminAddresses(config), ...clientAddressesWithoutAdmin(config)];
  return [
    "run",
    "--no-prompt",
    `--allow-read=${config.path}`,
    ...(addresses.length === 0 ? [] : [`--allow-net=${addresses.join(",")}`]),
    `--allow-env=${ADMIN_TOKEN_VARIABLE}`,
    ...(envFile === undefined ? [] : [`--env-file=${envFile}`]),
    MAIN_MODULE,
    "status-run",
    "--config",
    config.path,
  ];
}

/** Runs `main.ts status-run` in a child with its permissions; resolves to its exit code. */
export async function statusInChild(config: HerdConfig): Promise<number> {
  return (await _spawn(statusRunArgs(config), false).status).code;
}

/**
 * The `deno run` arguments of `main.ts backup-run NAMES`: it may read the
 * config (and the `.env` with the admin token) and reach those servers'
 * admin ports, nothing more: the servers make the copies. With `out` (an
 * absolute path), it fetches them there, and may read and write `out` too.
 */
export function backupRunArgs(config: HerdConfig, names: string[], out?: string): string[] {
  const envFile = envFileFor(config);
  return [
    "run",
    "--no-prompt",
    // The parent of `out` too: a directory made there is synced into it.
    `--allow-read=${config.path}${out === undefined ? "" : `,${out},${dirname(out)}`}`,
    ...(out === undefined ? [] : [`--allow-write=${out}`]),
    `--allow-net=${backupAddresses(config, names).join(",")}`,
    `--allow-env=${ADMIN_TOKEN_VARIABLE}`,
    ...(envFile === undefined ? [] : [`--env-file=${envFile}`]),
    MAIN_MODULE,
    "backup-run",
    ...names,
    ...(out === undefined ? [] : ["--out", out]),
    "--config",
    config.path,
  ];
}

/** Runs `main.ts backup-run` in a child with its permissions; resolves to its exit code. */
export async function backupInChild(config: HerdConfig, names: string[], out?: string): Promise<number> {
  return (await _spawn(backupRunArgs(config, names, out), false).status).code;
}

/**
 * The `deno run` arguments of `main.ts restore-run NAME FILE`: it may read
 * the config, the backup (and a `-wal` beside it, to refuse a database in
 * use) and read and write `dataDir`, nothing more.
 */
export function restoreRunArgs(config: HerdConfig, name: string, file: string): string[] {
  return [
    "run",
    "--no-prompt",
    `--allow-read=${config.path},${file},${file}-wal,${config.dataDir}`,
    `--allow-write=${config.dataDir}`,
    MAIN_MODULE,
    "restore-run",
    name,
    file,
    "--config",
    config.path,
  ];
}

/** Runs `main.ts restore-run` in a child with its permissions; resolves to its exit code. */
export async function restoreInChild(config: HerdConfig, name: string, file: string): Promise<number> {
  return (await _spawn(restoreRunArgs(config, name, file), false).status).code;
}

/** Options for {@linkcode makeCertificatesInChild}. */
export interface CertificateRunOptions {
  /** The servers whose key and certificate to make or renew; every server when empty. */
  names?: string[];
  /** Remake the named servers' keys and certificates (rotation). */
  renew?: boolean;
  /**
   * Only make what is missing (first start, or a server new to the herd), and only when the CA's key is in `certDir`;
   * safe when several processes start at once.
   */
  ifMissing?: boolean;
}

/**
 * The `deno run` arguments of `main.ts make-certs`: it may read the config
 * and read and write `certDir`, nothing more.
 */
export function certificateRunArgs(config: HerdConfig, options: CertificateRunOptions = {}): string[] {
  return [
    "run",
    "--no-prompt",
    `--allow-read=${config.path},${config.certDir}`,
    `--allow-write=${config.certDir}`,
    MAIN_MODULE,
    "make-certs",
    ...(options.names ?? []),
    ...(options.renew ? ["--renew"] : []),
    ...(options.ifMissing ? ["--if-missing"] : []),
    "--config",
    config.path,
  ];
}

/**
 * Makes the herd's certificates in a child process with exactly the
 * permissions that takes (the launcher itself may not touch `certDir`);
 * resolves to its exit code.
 */
export async function makeCertificatesInChild(
  config: HerdConfig,
  options: CertificateRunOptions = {},
): Promise<number> {
  const child = _spawn(certificateRunArgs(config, options), false);
  return (await child.status).code;
}

/** The module {@linkcode realDirectoriesInChild} runs. */
const _REAL_DIRECTORIES_MODULE = decodeURIComponent(new URL("./real_directories.ts", import.meta.url).pathname);

/**
 * The real paths of `dataDir` and `logDir` (links followed), learnt in a
 * child allowed to read and write those two directories, as the server is,
 * and nothing else (this process may not even read them), which makes them
 * first when missing, as the server would: a server whose `dataDir` or
 * `logDir` is a link, or lies under one, needs them in its flags. None when
 * the child fails: the flags are then as they were.
 */
export async function realDirectoriesInChild(config: HerdConfig): Promise<string[]> {
  const directories = [...new Set([config.dataDir, config.logDir])];
  const output = await new Deno.Command(DENO, {
    args: [
      "run",
      "--no-prompt",
      `--allow-read=${directories.join(",")}`,
      `--allow-write=${directories.join(",")}`,
      _REAL_DIRECTORIES_MODULE,
      ...directories,
    ],
    stdin: "null",
    stderr: "inherit",
  }).output();
  if (!output.success) return [];
  let real: unknown;
  try {
    real = JSON.parse(new TextDecoder().decode(output.stdout));
  } catch {
    return [];
  }
  if (!Array.isArray(real)) return [];
  return [...new Set(real.filter((path): path is string => typeof path === "string" && path.startsWith("/")))].filter(
    (path) => {
      if (!path.includes(",")) return true;
      // A flag's list is split at commas: the server will be refused its files there, and says which.
      console.error(
        `Warning: a data or log directory of ${config.path} leads to ${path}, which no permission flag ` +
          "can name (a comma): its server cannot use it; move it, or point the config at a path without a comma",
      );
      return false;
    },
  );
}

/** Runs server `name` in a child process with its permissions; resolves to its exit code. */
export async function serveOne(config: HerdConfig, name: string): Promise<number> {
  if (config.peers.tls) {
    // Only this server's: on another host of the herd, certDir holds the CA's certificate and this server's files.
    const code = await makeCertificatesInChild(config, { names: [name], ifMissing: true });
    if (code !== 0) return code;
  }
  const forwarding = _forwardSignals([]);
  const child = forwarding.add(_spawn(
    serverRunArgs(config, name, {
      envFile: envFileFor(config),
      keyPresent: keyPresentFor(config),
      realDirectories: await realDirectoriesInChild(config),
      launched: true,
    }),
    false,
  ));
  const status = await child.status;
  forwarding.stop();
  return forwarding.exitCode(status);
}

async function _prefix(stream: ReadableStream<Uint8Array>, prefix: string, out: (line: string) => void) {
  const decoder = new TextDecoder();
  for await (const batch of stream.pipeThrough(new LineStream(1 << 20))) {
    for (const line of batch.lines) out(`${prefix}${decoder.decode(line)}`);
  }
}

/**
 * Runs every server of the herd, and the dashboard when a server has an
 * admin port, prefixing their output with their names (the dashboard prints
 * its URL); Ctrl-C stops them all. A server that exits is reported and the
 * others keep running; once no server runs, the dashboard is stopped too.
 * Resolves to the first non-zero exit code of a server (or the dashboard),
 * 0 when all exited cleanly.
 */
export async function serveAll(config: HerdConfig): Promise<number> {
  if (config.peers.tls) {
    const code = await makeCertificatesInChild(config, { ifMissing: true });
    if (code !== 0) return code;
  }
  const names = [...config.servers.keys()];
  const dashboard = [...config.servers.values()].some((server) => server.adminPort !== undefined);
  const labels = dashboard ? [...names, "dashboard"] : names;
  const width = Math.max(...labels.map((label) => label.length));
  const forwarding = _forwardSignals([]);
  const options = {
    envFile: envFileFor(config),
    keyPresent: keyPresentFor(config),
    realDirectories: await realDirectoriesInChild(config),
    launched: true,
  };
  const children = names.map((name) => forwarding.add(_spawn(serverRunArgs(config, name, options), true)));
  if (dashboard) children.push(forwarding.add(_spawn([...dashboardRunArgs(config), "--launched"], true)));
  else console.log("No server has an adminPort: the dashboard is not started");
  const done = children.map(async (child, index) => {
    const prefix = `${labels[index].padEnd(width)} | `;
    await Promise.all([
      _prefix(child.stdout, prefix, console.log),
      _prefix(child.stderr, prefix, console.error),
    ]);
    const code = forwarding.exitCode(await child.status);
    // Also a clean exit that we did not ask for (a server stopped on its own, by a signal of an operator's).
    if (code !== 0 || (index < names.length && !forwarding.signalled())) {
      console.error(`${prefix}exited with code ${code}`);
    }
    return code;
  });
  const serverCodes = await Promise.all(done.slice(0, names.length));
  const failed = serverCodes.find((code) => code !== 0);
  if (dashboard) {
    // Nothing is left for the dashboard to show: stop it rather than keep a herd of none running.
    if (failed !== undefined) console.error(`No server is running: stopping the dashboard`);
    try {
      children[names.length].kill("SIGTERM");
    } catch { /* already gone */ }
  }
  const dashboardCode = dashboard ? await done[names.length] : 0;
  forwarding.stop();
  // The dashboard stopped by us exits 0 on SIGTERM; a code of its own only counts when every server exited cleanly.
  return failed ?? (dashboardCode === 0 || dashboardCode === 143 ? 0 : dashboardCode);
}

/** Compiles one binary per server into `outDir`; explains plainly when Deno's runtime cannot be had. */
export async function compileAll(config: HerdConfig, outDir: string, names: string[]): Promise<number> {
  for (const name of names) {
    const output = await new Deno.Command(DENO, {
      args: serverCompileArgs(config, name, outDir),
      stdin: "null",
    }).output();
    const text = new TextDecoder().decode(output.stderr);
    if (output.success) {
      console.log(`Built ${outDir}/${name}`);
      continue;
    }
    // Deno's own words, without the backtrace of its Rust code (a frame of `<unknown>` that tells a user nothing).
    console.error(text.replace(/\n*Stack backtrace:[\s\S]*$/, "").trimEnd());
    const missing = /Could not find denort at '([^']*)'/.exec(text);
    if (missing !== null) {
      console.error(
        `\nDENORT_BIN names ${missing[1]}, which is not there: point it at a denort binary of Deno ` +
          `${Deno.version.deno} for this platform.`,
      );
    } else if (/denort|dns error|failed to lookup|download/i.test(text)) {
      console.error(
        "\ndeno compile needs Deno's `denort` runtime for this platform, which it downloads from Deno's servers," +
          " and they cannot be reached from here. Copy a denort binary of the same Deno version onto this" +
          " machine and point DENORT_BIN at it, or run the compile task where Deno's servers are reachable.",
      );
    }
    return output.code || 1;
  }
  return 0;
}

/**
 * The `deno run` arguments of `main.ts dashboard-run`: the flags of
 * {@linkcode dashboardPermissionFlags}, and the `.env` next to the config
 * (where the admin token may be).
 */
export function dashboardRunArgs(config: HerdConfig): string[] {
  const envFile = envFileFor(config);
  return [
    "run",
    "--no-prompt",
    ...dashboardPermissionFlags(config),
    ...(envFile === undefined ? [] : [`--env-file=${envFile}`]),
    MAIN_MODULE,
    "dashboard-run",
    "--config",
    config.path,
  ];
}

/**
 * Whether this process may read the config at `path` (absolute). The deno.json
 * tasks allow `herd.config.json` and `.env` only; a config named with
 * `--config` needs {@linkcode rerunAllowingConfig}.
 */
export function mayReadConfig(path: string): boolean {
  return Deno.permissions.querySync({ name: "read", path }).state === "granted";
}

/**
 * Runs `main.ts` again with `args`, in a child allowed to read the config at
 * `path` (absolute) and the `.env` beside it instead of `herd.config.json`
 * and `.env`, with this process's other permissions (running `deno`, and the
 * Places key variable if it has it): how `deno task serve NAME --config
 * other.json` works with flags that name only what that config needs.
 * Resolves to the child's exit code; undefined when this process may not run
 * `deno` either, or `path` cannot be named in a flag (a comma splits the
 * list: the child could not read it either, and would run again, and again),
 * and cannot do it. The child is told it was run so (`--rerun`), and does
 * not run again itself whatever it finds.
 */
export async function rerunAllowingConfig(path: string, args: string[]): Promise<number | undefined> {
  if (path.includes(",") || args.includes(RERUN_FLAG)) return undefined;
  if (Deno.permissions.querySync({ name: "run", command: DENO }).state !== "granted") return undefined;
  const env = Deno.permissions.querySync({ name: "env", variable: PLACES_KEY_VARIABLE }).state === "granted";
  // Listening before the child starts, as serveOne does: a Ctrl-C in its first moments is passed on, not fatal here.
  const forwarding = _forwardSignals([]);
  const child = forwarding.add(_spawn([
    "run",
    "--no-prompt",
    `--allow-read=${path},${path.replace(/[^/]*$/, ".env")}`,
    ...(env ? [`--allow-env=${PLACES_KEY_VARIABLE}`] : []),
    `--allow-run=${DENO}`,
    MAIN_MODULE,
    ...args,
    RERUN_FLAG,
  ], false));
  const status = await child.status;
  forwarding.stop();
  return forwarding.exitCode(status);
}

/** What {@linkcode rerunAllowingConfig} adds to the arguments of the process it starts. */
export const RERUN_FLAG = "--rerun";

/** Runs the dashboard in a child process with its permissions; resolves to its exit code. */
export async function serveDashboard(config: HerdConfig): Promise<number> {
  const forwarding = _forwardSignals([]);
  const child = forwarding.add(_spawn([...dashboardRunArgs(config), "--launched"], false));
  const status = await child.status;
  forwarding.stop();
  return forwarding.exitCode(status);
}
