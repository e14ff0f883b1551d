/**
 * herd: a Deno application server herd.
 *
 *   main.ts run NAME      run server NAME in this process
 *   main.ts serve NAME    run server NAME in a child with exactly its permissions
 *   main.ts herd          run every server of the config, output prefixed by name
 *   main.ts compile       build dist/NAME for every server, permissions baked in
 *   main.ts flags NAME    print the permission flags server NAME runs with
 *   main.ts schema [FILE] print the JSON Schema of herd.config.json (or write it to FILE, as `deno task schema` does)
 *   main.ts status        ask every server for its status and print one table (exit 0 when the herd is whole)
 *   main.ts certs [NAME]  make the herd's CA and each server's certificate (or NAME's), in a child with only
 *                         the permissions that takes; --renew remakes the named servers' (rotation)
 *   main.ts dashboard     serve the live dashboard on 127.0.0.1:dashboard.port, in a child with only the
 *                         permissions that takes
 *   main.ts backup [NAME] have each server (or NAME) copy its database into <dataDir>/backups while it serves
 *   main.ts restore NAME FILE  put backup FILE in place as stopped server NAME's database (the old one kept)
 *
 * Options: --config PATH (default herd.config.json; the deno.json tasks, which may read herd.config.json only, run
 * again allowed to read PATH and the .env beside it; every command but schema), --out DIR (compile: default dist;
 * backup: fetch the copies into DIR), --renew (certs). A command refuses another's option.
 */

import { parseArgs } from "node:util";
import {
  ADMIN_TOKEN_VARIABLE,
  certFiles,
  configWarnings,
  type HerdConfig,
  herdConfigJsonSchema,
  loadConfig,
  PLACES_KEY_VARIABLE,
  resolvePath,
  serverNamed,
  taskCommand,
} from "./lib/config/config.ts";
import { HerdServer, StartCancelledError } from "./lib/herd_server.ts";
import { checkCertificates, ensureCertificates, makeCertificates } from "./lib/cli/certs.ts";
import {
  askBackup,
  backupNames,
  backupOutDirectory,
  backupOutProblem,
  fetchBackup,
  FetchFailed,
} from "./lib/cli/backup.ts";
import { RestoreRefused, restoreServer } from "./lib/cli/restore.ts";
import {
  backupInChild,
  compileAll,
  keyBlindSpots,
  keyPresentFor,
  makeCertificatesInChild,
  mayReadConfig,
  rerunAllowingConfig,
  restoreInChild,
  serveAll,
  serveOne,
  statusInChild,
} from "./lib/cli/launcher.ts";
import { askServers, statusTable } from "./lib/cli/status.ts";
import {
  abandonLogFileIfShared,
  log,
  releaseLogFile,
  setupLogging,
  shutdownLogging,
  WholeText,
} from "./lib/logging.ts";
import { DatabaseInUseError } from "./lib/store/record_log.ts";
import { traffic } from "./lib/traffic_log.ts";
import { serverPermissionFlags } from "./lib/cli/permissions.ts";
import { createPlaces } from "./lib/places/factory.ts";
import { keyProblem } from "./lib/places/http.ts";
import { chooseProvider, providerUrl } from "./lib/places/provider.ts";
import { serveDashboard } from "./lib/cli/launcher.ts";
import { warmCrypto } from "./lib/net/warm_crypto.ts";

const USAGE =
  `Usage: main.ts <run|serve|herd|status|compile|flags|schema|dashboard|certs|backup|restore> [NAME] [--config PATH]
       [the command's own options: compile --out DIR, certs --renew, backup --out DIR; no other command takes them]
  run NAME      run server NAME in this process
  serve NAME    run server NAME with exactly the permissions it needs
  herd          run every server of the config
  compile       build dist/NAME for each server (or only the NAMEs given; --out DIR: in DIR/NAME)
  flags NAME    print the permission flags of server NAME
  status        ask every server for its status; one table; exit 0 when all are up and agree
  schema [FILE] print the JSON Schema of herd.config.json (or write it to FILE)
  dashboard     serve the live dashboard of the herd on 127.0.0.1 (dashboard.port)
  certs [NAME]  make the herd's CA and the servers' certificates (--renew: remake NAME's)
  backup [NAME] have each server (or the NAMEs given) copy its database into <dataDir>/backups while it serves
                (--out DIR: then fetch each copy into DIR here, check it, and remove it from the server's host)
  restore NAME FILE  put the backup FILE in place as server NAME's database, NAME stopped (the old one is kept)
--config PATH   another config than herd.config.json: deno task serve NAME --config PATH (any task but schema) runs
                again allowed to read PATH and the .env beside it; with deno run, give --allow-read=PATH`;

/** The options of every command, for parseArgs(); {@linkcode COMMAND_OPTIONS} says which command takes which. */
const _OPTIONS = {
  config: { type: "string", default: "herd.config.json" },
  out: { type: "string" },
  help: { type: "boolean", short: "h" },
  renew: { type: "boolean", default: false },
  "if-missing": { type: "boolean", default: false },
  // Set by rerunAllowingConfig() on the process it starts: that one never runs again itself.
  rerun: { type: "boolean", default: false },
  // Set by the launchers on the servers and the dashboard they start: stop when the launcher's end of stdin closes.
  launched: { type: "boolean", default: false },
} as const;

/** The command `args` name, if any (read loosely: for a refusal's words). */
function _commandOf(args: string[]): string | undefined {
  return parseArgs({ args, allowPositionals: true, options: _OPTIONS, strict: false }).positionals[0];
}

/** The deno.json task that runs `command`: its own, or the launcher's that starts it in a child (flags has none). */
const _TASK_OF: Record<string, string> = {
  serve: "serve",
  herd: "herd",
  compile: "compile",
  status: "status",
  schema: "schema",
  dashboard: "dashboard",
  certs: "certs",
  backup: "backup",
  restore: "restore",
  run: "serve",
  "status-run": "status",
  "backup-run": "backup",
  "restore-run": "restore",
  "make-certs": "certs",
  "dashboard-run": "dashboard",
};

/**
 * What to say when `command` met a permission this process was not given (`deno run` with flags of one's own, not
 * the task's): which permission, and the task that grants it; one line, not a stack trace.
 */
function _notAllowed(command: string | undefined, error: Deno.errors.NotCapable): string {
  // Deno's words: Requires env access to "GOOGLE_PLACES_API_KEY", run again with the --allow-env flag
  const match = /^Requires (.+?), run again with the (--allow-[a-z-]+) flag/.exec(error.message);
  const needs = match === null ? error.message : `needs ${match[1]} (${match[2]})`;
  const task = command === undefined || !Object.hasOwn(_TASK_OF, command) ? undefined : _TASK_OF[command];
  const child = command !== undefined && !LAUNCHERS.has(command) && command !== "schema";
  return `main.ts${command === undefined ? "" : ` ${command}`} ${needs}, which this process was not given: ` +
    (task === undefined ? "the tasks in deno.json grant each command what it needs" : child
      // A launcher's child: its flags come from the config, so the task may be what started it.
      ? `deno task ${task} starts it with the flags its config needs; if that is how it started, what it opened ` +
        "lies outside them (through a link, say)"
      : `the task in deno.json grants it (deno task ${task})`);
}

/** The commands a deno.json task runs, which start children with flags of their own. */
const LAUNCHERS = new Set(["serve", "herd", "compile", "flags", "status", "certs", "dashboard", "backup", "restore"]);

/**
 * The options each command takes besides `--help` (and `--rerun`, which a launcher run again is given): the commands a
 * task runs, and those the launchers run in their children. One command's option given to another is refused, where
 * it was taken and did nothing (`certs --out DIR`, `status --renew`).
 */
const COMMAND_OPTIONS: Record<string, string[]> = {
  run: ["config", "launched"],
  serve: ["config"],
  herd: ["config"],
  compile: ["config", "out"],
  flags: ["config"],
  status: ["config"],
  "status-run": ["config"],
  schema: [],
  dashboard: ["config"],
  "dashboard-run": ["config", "launched"],
  certs: ["config", "renew"],
  "make-certs": ["config", "renew", "if-missing"],
  backup: ["config", "out"],
  "backup-run": ["config", "out"],
  restore: ["config"],
  "restore-run": ["config"],
};

/** How the options a user gives are written in a refusal; `--launched` and `--rerun` are the launchers' own. */
const OPTION_USAGE: Record<string, string> = {
  config: "--config PATH",
  out: "--out DIR",
  renew: "--renew",
  "if-missing": "--if-missing",
};

/** Why `command` does not take option `option` (given as `--option`), naming the options it takes. */
function optionRefusal(command: string, option: string): string {
  const takes = COMMAND_OPTIONS[command].filter((name) => name in OPTION_USAGE).map((name) => OPTION_USAGE[name]);
  return `--${option} is not an option of ${command}: ${
    takes.length === 0 ? `${command} takes none` : `${command} takes ${takes.join(", ")}`
  }`;
}

function fail(message: string, code = 2): never {
  console.error(message);
  Deno.exit(code);
}

function requireName(config: HerdConfig, name: string | undefined): string {
  const known = [...config.servers.keys()].join(", ");
  if (name === undefined) fail(`Missing server name: expected one of ${known}`);
  if (config.retiredServers.includes(name)) {
    fail(`Server "${name}" is retired (in retiredServers of ${config.path}): expected one of ${known}`);
  }
  if (!config.servers.has(name)) fail(`Unknown server "${name}": expected one of ${known}`);
  return name;
}

/** The one server name `command` takes: none, or more than one, is refused (a second name was silently left out). */
function oneName(config: HerdConfig, command: string, names: string[]): string {
  if (names.length > 1) {
    fail(
      `${command} takes one server name, got ${names.length}: to start every server, run ${
        taskCommand(config, "herd")
      }`,
    );
  }
  return requireName(config, names[0]);
}

/** Refuses server names given to `command`, which works on the whole herd. */
function noNames(command: string, names: string[]): void {
  if (names.length > 0) {
    fail(`${command} works on every server of the config and takes no name, got ${names.join(" ")}`);
  }
}

/** What stops a server whose launcher is gone, in place of a signal's name. */
const _LAUNCHER_GONE = "launcher gone";

/**
 * Calls `then` once stdin ends: a process started by a launcher (`serve`,
 * `herd`, `dashboard`) has a pipe from it there, which nobody writes to and
 * which closes when the launcher is gone, however it went (killed, or its
 * terminal closed: SIGHUP ends the launcher, which has no use for it, while a
 * server takes it as "reload the certificates" and would run on, orphaned).
 */
function whenLauncherGone(then: () => void): void {
  (async () => {
    const buffer = new Uint8Array(256);
    try {
      while (await Deno.stdin.read(buffer) !== null) { /* nothing is sent: only the end counts */ }
    } catch { /* a closed or broken pipe is an end too */ }
    then();
  })();
}

/**
 * Whether a server of `config` will make TLS connections: its peer links, or
 * HTTPS requests to the Places provider it will use (none for `offline`).
 */
function makesTlsConnections(config: HerdConfig, key: string | undefined): boolean {
  const { provider } = chooseProvider(config.places.provider, Boolean(key));
  return config.peers.tls || providerUrl(config.places, provider)?.startsWith("https:") === true;
}

async function runServer(config: HerdConfig, name: string, launched = false): Promise<void> {
  const key = Deno.env.get(PLACES_KEY_VARIABLE);
  // Not awaited: Deno's crypto set-up (40 ms of CPU) runs on another thread while this one starts the server. Not at
  // all for a server that makes no TLS connection: it would only spend the CPU.
  if (makesTlsConnections(config, key)) warmCrypto();
  try {
    await setupLogging({
      logDir: config.logDir,
      name,
      maxBytes: config.log.maxBytes,
      files: config.log.files,
      level: config.log.level,
      // Another server of this name may be running and writing this file: ours wait until we hold the database.
      holdWhileShared: true,
    });
    traffic.debug = config.log.level === "debug";
  } catch (error) {
    fail(`${name} cannot open its log in ${config.logDir}: ${(error as Error).message}`, 1);
  }
  log.server.info("{name} starting with config {path}", { name, path: config.path });
  for (const warning of configWarnings(config)) log.server.warning(warning);
  const places = createPlaces(config.places, key);
  log.server.info("Places provider: {provider} ({reason})", { provider: places.provider, reason: places.reason });
  const problem = keyProblem(key);
  // keyProblem()'s words, no key or one that cannot be sent, are what WHATSAT's error_message says too.
  if (problem !== undefined && places.provider !== "offline") {
    log.server.warning(`${problem}: WHATSAT will answer REQUEST_DENIED`);
  }
  const server = new HerdServer({
    config,
    name,
    places: places.places,
    // Read only with an admin port: only then is the server allowed the variable.
    adminToken: serverNamed(config, name).adminPort === undefined
      ? undefined
      : Deno.env.get(ADMIN_TOKEN_VARIABLE) || undefined,
  });
  // Signal handlers before start-up, so that a SIGTERM while the server loads its records or opens its ports stops it
  // cleanly once it is up, instead of killing it. `deno task herd` delivers Ctrl-C twice (the terminal's and the
  // launcher's): shut down once.
  let started = false;
  let signalledEarly: string | undefined;
  let stopping: Promise<void> | undefined;
  const stop = (signal: string) => {
    if (!started) {
      signalledEarly ??= signal;
      // A start waiting for a database another process holds (up to shutdownGraceMs + 3 s) gives up now.
      server.cancelStart();
      return;
    }
    stopping ??= (async () => {
      if (signal === _LAUNCHER_GONE) log.server.info("{name}: the launcher that started it is gone", { name });
      else log.server.info("{name} received {signal}", { name, signal });
      await server.shutdown();
      traffic.flush();
      await shutdownLogging();
      Deno.exit(0);
    })();
  };
  Deno.addSignalListener("SIGINT", () => stop("SIGINT"));
  Deno.addSignalListener("SIGTERM", () => stop("SIGTERM"));
  if (launched) whenLauncherGone(() => stop(_LAUNCHER_GONE));
  // SIGHUP: a rotated certificate is read now rather than within the minute.
  Deno.addSignalListener("SIGHUP", () => {
    if (started) server.reloadCertificates();
  });
  try {
    await server.start();
  } catch (error) {
    // Its database held by another process (a server of this name already running): if that one writes this log
    // file too, it gets nothing of ours; the console has it all.
    if (error instanceof StartCancelledError || error instanceof DatabaseInUseError) abandonLogFileIfShared();
    else releaseLogFile();
    if (error instanceof StartCancelledError) {
      log.server.info(
        signalledEarly === _LAUNCHER_GONE
          ? "{name}: the launcher that started it is gone while it waited for its database: not started"
          : "{name} received {signal} while waiting for its database: not started",
        { name, signal: signalledEarly },
      );
      await shutdownLogging();
      Deno.exit(0);
    }
    // Whole: the message says what to do, after the cause (an integrity check's report can be long).
    log.server.error("{name} cannot start: {error}", { name, error: new WholeText((error as Error).message) });
    await shutdownLogging();
    Deno.exit(1);
  }
  releaseLogFile();
  started = true;
  if (signalledEarly !== undefined) stop(signalledEarly);
  // After listening, so start-up stays fast, and after the signal handlers: loading the offline index takes a while
  // before its first await. The first WHATSAT waits for it.
  places.warm().catch(() => {});
}

/** `make-certs`: the work of `certs`, in this process (which may read and write `certDir`). */
async function makeCertificatesHere(
  config: HerdConfig,
  names: string[],
  flags: { renew: boolean; "if-missing": boolean },
): Promise<void> {
  try {
    if (flags["if-missing"]) {
      const { outcome, written } = await ensureCertificates(config, names.length === 0 ? undefined : names);
      if (outcome !== "made") return;
      if (written.includes(certFiles(config).ca)) {
        console.log(`Made the herd's certificates in ${config.certDir} (first start)`);
      } else {
        console.log(`Made the missing certificates, as \`deno task certs\` would: ${written.join(", ")}`);
      }
      return;
    }
    if (flags.renew && names.length === 0) fail("--renew needs the names of the servers whose certificates to remake");
    const written = await makeCertificates(config, {
      names: names.length === 0 ? undefined : names,
      renew: flags.renew,
    });
    const { problems, notes } = await checkCertificates(config, names.length === 0 ? undefined : names);
    for (const note of notes) console.log(note);
    if (problems.length > 0) {
      if (written.length > 0) console.log(`Wrote ${written.join(", ")}`);
      fail(`A server cannot use what is in ${config.certDir}:\n${problems.map((line) => `  ${line}`).join("\n")}`, 1);
    }
    console.log(
      written.length === 0 ? `Nothing to make: ${config.certDir} is complete` : `Wrote ${written.join(", ")}`,
    );
  } catch (error) {
    const message = (error as Error).message;
    // Most of certs.ts's refusals name the directory themselves ("The certificate directory ... lacks ..."): once is enough.
    fail(
      message.includes(config.certDir) ? message : `Cannot make the certificates in ${config.certDir}: ${message}`,
      1,
    );
  }
}

async function main(args: string[]): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs({ args, allowPositionals: true, options: _OPTIONS, tokens: true });
  } catch (error) {
    fail(`${(error as Error).message}\n${USAGE}`);
  }
  const [command, ...names] = parsed.positionals;
  if (parsed.values.help || command === undefined) fail(USAGE, parsed.values.help ? 0 : 2);
  if (!Object.hasOwn(COMMAND_OPTIONS, command)) fail(`Unknown command "${command}"\n${USAGE}`);
  for (const token of parsed.tokens) {
    if (token.kind !== "option" || token.name === "help") continue;
    if (token.name === "rerun" && LAUNCHERS.has(command)) continue;
    if (!COMMAND_OPTIONS[command].includes(token.name)) fail(optionRefusal(command, token.name));
  }
  if (command === "schema") {
    // As deno fmt writes it. The task names the file here, not in a redirect followed by `deno fmt`: what is given
    // after `deno task schema` is added to the task's last command, which then refuses it, the file untouched.
    const json = JSON.stringify(herdConfigJsonSchema(), null, 2);
    if (names.length > 1) {
      fail(`schema takes one file to write the schema to, or none to print it: got ${names.join(" ")}`);
    }
    if (names.length === 0) {
      console.log(json);
      return;
    }
    try {
      Deno.writeTextFileSync(names[0], `${json}\n`);
    } catch (error) {
      fail(`Cannot write the schema to ${names[0]}: ${(error as Error).message}`, 1);
    }
    return;
  }
  const configPath = resolvePath(Deno.cwd(), parsed.values.config);
  if (!mayReadConfig(configPath)) {
    // The tasks may read herd.config.json only: a launcher given another config runs again, allowed to read it.
    if (LAUNCHERS.has(command)) {
      const code = await rerunAllowingConfig(configPath, args);
      if (code !== undefined) return Deno.exit(code);
    }
    if (configPath.includes(",")) {
      fail(`Cannot use herd config ${configPath}: a path with a comma cannot be named in a permission flag`, 1);
    }
    fail(
      `Cannot read herd config ${configPath}: this process is not allowed to (give deno run ` +
        `--allow-read=${configPath}; the deno task commands allow the file given with --config by themselves)`,
      1,
    );
  }
  let config: HerdConfig;
  try {
    config = await loadConfig(configPath);
  } catch (error) {
    fail((error as Error).message, 1);
  }
  switch (command) {
    case "run":
      return await runServer(config, oneName(config, command, names), parsed.values.launched);
    case "serve":
      return Deno.exit(await serveOne(config, oneName(config, command, names)));
    case "herd":
      noNames(command, names);
      for (const warning of configWarnings(config)) console.error(`Warning: ${warning}`);
      return Deno.exit(await serveAll(config));
    case "compile":
      return Deno.exit(
        await compileAll(
          config,
          parsed.values.out ?? "dist",
          names.length === 0 ? [...config.servers.keys()] : names.map((n) => requireName(config, n)),
        ),
      );
    case "status":
      noNames(command, names);
      return Deno.exit(await statusInChild(config));
    case "status-run": {
      const { text, whole } = statusTable(
        config,
        await askServers(config, Deno.env.get(ADMIN_TOKEN_VARIABLE) || undefined),
      );
      console.log(text);
      return Deno.exit(whole ? 0 : 1);
    }
    case "backup": {
      const chosen = backupNames(config, names.map((n) => requireName(config, n)));
      if ("error" in chosen) fail(chosen.error);
      let out: string | undefined;
      if (parsed.values.out !== undefined) {
        const directory = backupOutDirectory(parsed.values.out, Deno.cwd());
        if ("error" in directory) fail(directory.error);
        out = directory.path;
      }
      if (out?.includes(",")) fail(`Cannot use ${out}: a path with a comma cannot be named in a permission flag`);
      return Deno.exit(await backupInChild(config, chosen.names, out));
    }
    case "backup-run": {
      const token = Deno.env.get(ADMIN_TOKEN_VARIABLE) || undefined;
      const out = parsed.values.out;
      const problem = out === undefined ? undefined : backupOutProblem(out, token, console.error);
      if (problem !== undefined) fail(problem);
      // Ctrl-C (or SIGTERM) while a copy is fetched: its part-written file is removed before we exit.
      const interrupt = new AbortController();
      if (out !== undefined) {
        for (const signal of ["SIGINT", "SIGTERM"] as const) {
          Deno.addSignalListener(signal, () => interrupt.abort());
        }
      }
      let allOk = true;
      // One after the other: each copy is a read of a whole database on its host's disk.
      for (const name of names.map((n) => requireName(config, n))) {
        if (interrupt.signal.aborted) break;
        const { line, ok, result } = await askBackup(config, name, token);
        if (!ok || result === undefined || out === undefined || interrupt.signal.aborted) {
          (ok && !interrupt.signal.aborted ? console.log : console.error)(
            ok && out !== undefined ? `${line}, kept there: interrupted` : line,
          );
          allOk &&= ok;
          continue;
        }
        try {
          const fetched = await fetchBackup(config, name, token!, result, out, interrupt.signal);
          console.log(
            line.slice(0, line.length - result.path.length) + fetched.path +
              ` (fetched and checked in ${fetched.ms} ms; ` +
              (fetched.notRemoved === undefined
                ? `removed from ${name}'s host)`
                : `still on ${name}'s host too, at ${result.path}: removing it failed: ${fetched.notRemoved})`),
          );
        } catch (error) {
          if (!(error instanceof FetchFailed)) throw error;
          console.error(`${line}, kept there: ${error.message}`);
          allOk = false;
        }
      }
      return Deno.exit(interrupt.signal.aborted ? 130 : allOk ? 0 : 1);
    }
    case "restore":
    case "restore-run": {
      if (names.length !== 2) {
        fail(
          `restore takes a server name and a backup file, got ${names.length} ${
            names.length === 1 ? "argument" : "arguments"
          }`,
        );
      }
      const name = requireName(config, names[0]);
      const file = resolvePath(Deno.cwd(), names[1]);
      if (command === "restore") {
        if (file.includes(",")) fail(`Cannot use ${file}: a path with a comma cannot be named in a permission flag`);
        return Deno.exit(await restoreInChild(config, name, file));
      }
      try {
        const { rows, database, kept, unknown } = restoreServer(config, name, file);
        if (unknown.size > 0) {
          const count = [...unknown.values()].reduce((a, b) => a + b, 0);
          console.error(
            `Warning: ${count} ${count === 1 ? "row" : "rows"} of the backup name servers ` +
              `${config.path} does not have (${[...unknown].map(([server, n]) => `${server}: ${n}`).join(", ")}): ` +
              `${name} will delete them when it starts, unless they are listed in retiredServers`,
          );
        }
        console.log(
          `Restored ${name} from ${file}: ${rows.toLocaleString("en-US")} ${
            rows === 1 ? "row" : "rows"
          } in ${database}` +
            (kept === undefined ? "" : `; the database it replaced is kept as ${kept}`) +
            `. Start it with ${taskCommand(config, "serve", name)}`,
        );
        return Deno.exit(0);
      } catch (error) {
        return fail(
          error instanceof RestoreRefused
            ? (error as Error).message
            : `Cannot restore ${name}: ${(error as Error).message}`,
          1,
        );
      }
    }
    case "certs":
      return Deno.exit(
        await makeCertificatesInChild(config, {
          names: names.map((n) => requireName(config, n)),
          renew: parsed.values.renew,
        }),
      );
    case "make-certs":
      return await makeCertificatesHere(config, names.map((n) => requireName(config, n)), parsed.values);
    case "flags": {
      const name = oneName(config, command, names);
      const keyPresent = keyPresentFor(config);
      // Only with auto does a key change the flags (it picks google-new, whose host is then allowed).
      const blind = keyPresent || config.places.provider !== "auto" ? [] : keyBlindSpots(config);
      // Said on stderr, so that stdout stays the flags alone.
      if (blind.length > 0) {
        const give = blind.map((spot) =>
          spot === PLACES_KEY_VARIABLE ? `--allow-env=${spot}` : `--allow-read=${config.path},${spot}`
        );
        console.error(
          `Not allowed to look for a Places key in ${blind.join(" or ")}: these are the flags of a server without ` +
            `one (run it with ${give.join(" ")} to see a key's)`,
        );
      }
      console.log(serverPermissionFlags(config, name, { keyPresent }).join(" "));
      return;
    }
    case "dashboard":
      noNames(command, names);
      return Deno.exit(await serveDashboard(config));
    case "dashboard-run": {
      // Loaded here only: the servers need none of the map and the page.
      const { runDashboard } = await import("./lib/dashboard/server.ts");
      if (parsed.values.launched) whenLauncherGone(() => Deno.exit(0));
      return runDashboard(config);
    }
    default:
      fail(`Unknown command "${command}"\n${USAGE}`);
  }
}

if (import.meta.main) {
  try {
    await main(Deno.args);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotCapable)) throw error;
    fail(_notAllowed(_commandOf(Deno.args), error), 1);
  }
}
