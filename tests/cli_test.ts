/** The command line as a user meets it: the deno.json tasks and main.ts's refusals. */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { exchange, freePorts, HERD_TEST_PERMISSIONS, TestHerd } from "./testing/herd.ts";
import { captureLogs } from "./testing/logs.ts";
import { checkThroughout, waitFor } from "./testing/wait.ts";
import { loadConfig, parseConfig } from "../lib/config/config.ts";
import { backupOutProblem, fetchBackup, FetchFailed } from "../lib/cli/backup.ts";
import { makeCertificates } from "../lib/cli/certs.ts";
import { serverRunArgs } from "../lib/cli/launcher.ts";
import { HerdServer } from "../lib/herd_server.ts";
import { CachedPlaces } from "../lib/places/cache.ts";
import { DEFAULT_CONFIG_PATH } from "./testing/default_config.ts";

const _decoder = new TextDecoder();

async function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await new Deno.Command("deno", { args, stdin: "null" }).output();
  return { code: output.code, stdout: _decoder.decode(output.stdout), stderr: _decoder.decode(output.stderr) };
}

/** `deno run` of `main.ts <command> [names]` with the config in `dir`, with the permissions `deno task herd` has. */
function launcherArgs(dir: string, command: string, ...names: string[]): string[] {
  return [
    "run",
    "--no-prompt",
    `--allow-read=${dir}`,
    "--allow-run=deno",
    "main.ts",
    command,
    ...names,
    "--config",
    `${dir}/herd.config.json`,
  ];
}

/** The AT lines a server's database (or a copy of one) at `path` holds. */
function recordLines(path: string): string[] {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    return db.prepare("SELECT line FROM records").all().map((row) => String(row.line));
  } finally {
    db.close();
  }
}

/**
 * Writes `<dir>/herd.config.json` for servers on 127.0.0.1 (each `[port, peerPort]` or `[port, peerPort, adminPort]`),
 * with plain-text links, the offline Places provider, and logs and data in `dir`; `extra` is added at the top level.
 */
async function writeLocalConfig(
  dir: string,
  servers: Record<string, number[]>,
  links: string[][],
  extra: Record<string, unknown> = {},
): Promise<string> {
  const path = `${dir}/herd.config.json`;
  await Deno.writeTextFile(
    path,
    JSON.stringify({
      servers: Object.fromEntries(
        Object.entries(servers).map(([name, [port, peerPort, adminPort]]) => [
          name,
          { host: "127.0.0.1", port, peerPort, ...(adminPort === undefined ? {} : { adminPort }) },
        ]),
      ),
      links,
      places: { provider: "offline", url: "http://127.0.0.1:9/nearby" },
      logDir: "logs",
      dataDir: "data",
      peers: { tls: false },
      ...extra,
    }),
  );
  return path;
}

/** A Places provider that finds nothing, for servers started in the test's own process. */
function noPlaces(): CachedPlaces {
  return new CachedPlaces({
    name: "none",
    search: () => Promise.resolve({ status: "ZERO_RESULTS", results: [], html_attributions: [] }),
  }, { ttlMs: 1000, maxEntries: 1 });
}

const VALID = {
  servers: {
    A: { host: "127.0.0.1", port: 1, peerPort: 2 },
    B: { host: "127.0.0.1", port: 3, peerPort: 4 },
  },
  links: [["A", "B"]],
  places: { url: "http://127.0.0.1:9/nearby" },
  logDir: "logs",
};

Deno.test({
  name: "deno task serve with an unknown name prints the valid names and exits non-zero",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  // The shipped default herd's names: the project's own config is the user's to rename.
  const { code, stderr } = await run(["task", "-q", "serve", "Hil", "--config", DEFAULT_CONFIG_PATH]);
  assert.equal(code, 2);
  assert.match(stderr, /Unknown server "Hil": expected one of Hill, Jaquez, Smith, Campbell, Singleton/);
});

Deno.test({
  name: "deno task serve with a retired name says it is retired, names the config, and exits non-zero",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "herd-retired-name-" });
  try {
    const [a, aPeer, b, bPeer] = freePorts(4);
    const path = await writeLocalConfig(dir, { A: [a, aPeer], B: [b, bPeer] }, [["A", "B"]], {
      retiredServers: ["Gone"],
    });
    const { code, stderr } = await run(launcherArgs(dir, "serve", "Gone"));
    assert.equal(code, 2);
    assert.equal(stderr, `Server "Gone" is retired (in retiredServers of ${path}): expected one of A, B\n`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "deno task serve refuses a second server name, and deno task herd any name, rather than leaving them out",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  const serve = await run(["task", "-q", "serve", "Hill", "Jaquez"]);
  assert.equal(serve.code, 2);
  assert.match(serve.stderr, /^serve takes one server name, got 2: to start every server, run deno task herd\n$/);
  const herd = await run(["task", "-q", "herd", "Hill"]);
  assert.equal(herd.code, 2);
  assert.match(herd.stderr, /^herd works on every server of the config and takes no name, got Hill\n$/);
  // With another herd's config, the command it gives names that config.
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "herd-two-names-" });
  try {
    const [a, aPeer, b, bPeer] = freePorts(4);
    const path = await writeLocalConfig(dir, { A: [a, aPeer], B: [b, bPeer] }, [["A", "B"]]);
    const other = await run(launcherArgs(dir, "serve", "A", "B"));
    assert.equal(other.code, 2);
    assert.equal(
      other.stderr,
      `serve takes one server name, got 2: to start every server, run deno task herd --config ${path}\n`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "each command takes only its own options: another command's is refused (exit 2), naming the command and the " +
    "options it takes, rather than taken and ignored",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "herd-own-options-" });
  try {
    const [a, aPeer, aAdmin] = freePorts(3);
    // No server runs: an option taken and ignored would do no harm here.
    await writeLocalConfig(dir, { A: [a, aPeer, aAdmin] }, []);
    await Deno.writeTextFile(`${dir}/A.db`, "");
    const cases: [string[], string][] = [
      [["certs", "A", "--out", `${dir}/x`], "--out is not an option of certs: certs takes --config PATH, --renew"],
      [["status", "--out", `${dir}/x`], "--out is not an option of status: status takes --config PATH"],
      [["status", "--renew"], "--renew is not an option of status: status takes --config PATH"],
      [["backup", "--renew"], "--renew is not an option of backup: backup takes --config PATH, --out DIR"],
      [
        ["restore", "A", `${dir}/A.db`, "--out", `${dir}/x`],
        "--out is not an option of restore: restore takes --config PATH",
      ],
      [["serve", "A", "--launched"], "--launched is not an option of serve: serve takes --config PATH"],
      [["compile", "--renew"], "--renew is not an option of compile: compile takes --config PATH, --out DIR"],
    ];
    for (const [[command, ...rest], refusal] of cases) {
      const { code, stdout, stderr } = await run(launcherArgs(dir, command, ...rest));
      assert.equal(code, 2, `${command} ${rest.join(" ")}: ${stdout}`);
      assert.equal(stderr, `${refusal}\n`);
    }
    // The schema is the same for every config: it takes none.
    const schema = await run(["run", "--no-prompt", "main.ts", "schema", "--config", `${dir}/herd.config.json`]);
    assert.equal(schema.code, 2);
    assert.equal(schema.stderr, "--config is not an option of schema: schema takes none\n");
    assert.deepEqual([...Deno.readDirSync(dir)].map((entry) => entry.name).sort(), ["A.db", "herd.config.json"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "deno task schema writes herd.config.schema.json as shipped, and refuses what is given after it, the file " +
    "left as it was",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "herd-schema-task-" });
  try {
    // The project's schema task, run in a directory of its own (a test writes in /tmp only): main.ts named by its path.
    const project = JSON.parse(await Deno.readTextFile("deno.json"));
    const task = String(project.tasks.schema);
    assert.ok(task.includes(" main.ts "), task);
    await Deno.writeTextFile(
      `${dir}/deno.json`,
      JSON.stringify({ ...project, tasks: { schema: task.replaceAll(" main.ts ", ` ${Deno.cwd()}/main.ts `) } }),
    );
    await Deno.copyFile("deno.lock", `${dir}/deno.lock`);
    const schemaTask = async (...args: string[]) => {
      const output = await new Deno.Command("deno", {
        args: ["task", "-q", "schema", ...args],
        cwd: dir,
        stdin: "null",
      })
        .output();
      return { code: output.code, stderr: _decoder.decode(output.stderr) };
    };
    const made = await schemaTask();
    assert.equal(made.code, 0, made.stderr);
    assert.equal(
      await Deno.readTextFile(`${dir}/herd.config.schema.json`),
      await Deno.readTextFile("herd.config.schema.json"),
    );
    await Deno.writeTextFile(`${dir}/herd.config.schema.json`, "as it was\n");
    const withConfig = await schemaTask("--config", `${dir}/other.json`);
    assert.equal(withConfig.code, 2);
    assert.equal(withConfig.stderr, "--config is not an option of schema: schema takes none\n");
    const withFile = await schemaTask("other.json");
    assert.equal(withFile.code, 2);
    assert.equal(
      withFile.stderr,
      "schema takes one file to write the schema to, or none to print it: got herd.config.schema.json other.json\n",
    );
    assert.equal(await Deno.readTextFile(`${dir}/herd.config.schema.json`), "as it was\n");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "a command run with a permission missing says which, and the task that grants it, in one line (exit 1), not a " +
    "stack trace",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "herd-not-allowed-" });
  try {
    const [a, aPeer, aAdmin] = freePorts(3);
    const path = await writeLocalConfig(dir, { A: [a, aPeer, aAdmin] }, []);
    // Allowed to read the config, nothing more: not to run deno, nor to read the Places key.
    const cases: [string[], string][] = [
      [["run", "A"], 'run needs env access to "GOOGLE_PLACES_API_KEY" (--allow-env)'],
      [["serve", "A"], 'serve needs run access to "deno" (--allow-run)'],
      [["status"], 'status needs run access to "deno" (--allow-run)'],
      [["backup"], 'backup needs run access to "deno" (--allow-run)'],
    ];
    for (const [[command, ...names], needs] of cases) {
      const { code, stderr } = await run([
        "run",
        "--no-prompt",
        `--allow-read=${path}`,
        "main.ts",
        command,
        ...names,
        "--config",
        path,
      ]);
      assert.equal(code, 1, command);
      // `run` is the child `deno task serve` starts with flags from the config: the task may be what started it.
      assert.equal(
        stderr,
        `main.ts ${needs}, which this process was not given: ` +
          (command === "run"
            ? "deno task serve starts it with the flags its config needs; if that is how it started, what it opened " +
              "lies outside them (through a link, say)\n"
            : `the task in deno.json grants it (deno task ${command})\n`),
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "main.ts refuses a bad config at start with a message that names the problem",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "herd-cli-" });
  try {
    const cases: [string, unknown, RegExp][] = [
      [
        "unknown server in a link",
        { ...VALID, links: [["A", "Zed"]] },
        /links\[0\] names unknown server "Zed": expected one of A, B/,
      ],
      ["self-link", { ...VALID, links: [["A", "A"]] }, /links\[0\] links "A" to itself/],
      [
        "duplicate address",
        { ...VALID, servers: { ...VALID.servers, B: { host: "127.0.0.1", port: 2, peerPort: 5 } } },
        /duplicate address 127\.0\.0\.1:2/,
      ],
      [
        "missing field",
        { ...VALID, servers: { A: { host: "127.0.0.1", port: 1 } } },
        /missing field servers\.A\.peerPort/,
      ],
      ["missing places", { ...VALID, places: undefined }, /missing field places/],
      [
        "misspelt key",
        { ...VALID, places: { ...VALID.places, provder: "offline" } },
        /Unknown key places\.provder: did you mean places\.provider\?/,
      ],
      ["misspelt top-level key", { ...VALID, logdir: "x" }, /Unknown key logdir: did you mean logDir\?/],
      [
        "wrong type",
        { ...VALID, places: { ...VALID.places, timeoutMs: "5000" } },
        /places\.timeoutMs must be a positive integer, got "5000"/,
      ],
      [
        "server named like the CA",
        { ...VALID, servers: { ...VALID.servers, ca: { host: "127.0.0.1", port: 5, peerPort: 6 } } },
        /server name "ca" is taken by the herd's CA/,
      ],
      [
        "localhost",
        { ...VALID, servers: { ...VALID.servers, B: { host: "localhost", port: 3, peerPort: 4 } } },
        /servers\.B\.host must be an IP address, got "localhost": use 127\.0\.0\.1 \(or ::1\)/,
      ],
      [
        "millisecond setting past a timer's longest wait",
        { ...VALID, places: { ...VALID.places, timeoutMs: 3000000000 } },
        /places\.timeoutMs must be at most 2147483647 milliseconds/,
      ],
      ["comma in a directory", { ...VALID, logDir: "/tmp/x/logs,y" }, /logDir holds a comma \("\/tmp\/x\/logs,y"\)/],
    ];
    for (const [what, config, message] of cases) {
      const path = `${dir}/config.json`;
      await Deno.writeTextFile(path, JSON.stringify(config));
      const { code, stderr } = await run([
        "run",
        "--no-prompt",
        `--allow-read=${dir}`,
        "main.ts",
        "run",
        "A",
        "--config",
        path,
      ]);
      assert.equal(code, 1, what);
      assert.match(stderr, message, what);
      assert.equal(stderr.trim().split("\n").length, 1, `${what}: one line, no stack trace: ${stderr}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "a herd whose graph is not connected starts, with a warning",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await TestHerd.create({
    placesUrl: "http://127.0.0.1:9/nearby",
    names: ["A", "B", "C"],
    links: [["A", "B"]],
  });
  await herd.start("C");
  const { code } = await herd.stop("C", "SIGTERM");
  assert.equal(code, 0);
  assert.match(await herd.log("C"), /The herd is not connected: C cannot be reached from A/);
});

Deno.test({
  name: "deno task compile builds one binary per server, or says plainly what it lacks",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  const out = await Deno.makeTempDir({ dir: "/tmp", prefix: "herd-dist-" });
  try {
    // The shipped default herd's Hill: the project's own config is the user's to rename.
    const args = ["task", "-q", "compile", "--out", out, "Hill", "--config", DEFAULT_CONFIG_PATH];
    const { code, stdout, stderr } = await run(args);
    if (code === 0) {
      assert.match(stdout, new RegExp(`Built ${out}/Hill`));
      assert.ok((await Deno.stat(`${out}/Hill`)).isFile);
    } else {
      assert.ok(stderr.includes(`${out}/Hill`), `compiles to the --out directory: ${stderr}`);
      assert.match(stderr, /deno compile needs Deno's `denort` runtime/);
      assert.match(stderr, /DENORT_BIN/);
      assert.doesNotMatch(stderr, /Stack backtrace/, "Deno's Rust backtrace is left out");
    }
    // DENORT_BIN naming a file that is not there is said so, not taken for a network failure.
    const named = await new Deno.Command("deno", {
      args,
      env: { DENORT_BIN: `${out}/no-denort` },
      stdin: "null",
    }).output();
    const namedErr = _decoder.decode(named.stderr);
    assert.notEqual(named.code, 0);
    assert.match(namedErr, new RegExp(`DENORT_BIN names ${out}/no-denort, which is not there`));
    assert.doesNotMatch(namedErr, /cannot be reached/);
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test({
  name: "two servers on ::1 (one written [::1]) listen and link up over TLS: their flags bracket IPv6",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "herd-ipv6-" });
  const [aPort, aPeer, bPort, bPeer, bAdmin] = freePorts(5);
  await Deno.writeTextFile(
    `${dir}/herd.config.json`,
    JSON.stringify({
      servers: {
        A: { host: "::1", port: aPort, peerPort: aPeer },
        B: { host: "[::1]", port: bPort, peerPort: bPeer, adminPort: bAdmin },
      },
      links: [["A", "B"]],
      places: { provider: "offline", url: "http://127.0.0.1:9/nearby" },
      logDir: "logs",
    }),
  );
  const config = await loadConfig(`${dir}/herd.config.json`);
  await makeCertificates(config);
  const children = ["A", "B"].map((name) => {
    const child = new Deno.Command("deno", {
      args: serverRunArgs(config, name, { keyPresent: false }),
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const stderr = new Response(child.stderr).text();
    let exited = false;
    const status = child.status.then((status) => {
      exited = true;
      return status;
    });
    return { child, stderr, status, exited: () => exited };
  });
  const logOf = (name: string) => Deno.readTextFile(`${dir}/logs/${name}.log`).catch(() => "");
  try {
    await waitFor(async () => {
      if (children.some((child) => child.exited())) return true;
      return /Link to "B" is up/.test(await logOf("A")) && /Link to "A" is up/.test(await logOf("B"));
    }, { what: "a link between A and B on ::1" });
    for (const [index, child] of children.entries()) {
      assert.equal(child.exited(), false, `${"AB"[index]} exited: ${child.exited() ? await child.stderr : ""}`);
    }
    assert.ok((await logOf("B")).includes(`admin endpoint on "http://[::1]:${bAdmin}/"`), await logOf("B"));
  } finally {
    for (const { child } of children) {
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
    }
    await Promise.all(children.map(async (child) => [await child.status, await child.stderr]));
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "deno task herd exits non-zero, dashboard stopped, once every server has failed at start",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "herd-cli-" });
  try {
    const [a, aPeer, aAdmin, b, bPeer, bAdmin, dashboard] = freePorts(7);
    await Deno.writeTextFile(`${dir}/data`, "a regular file, not a directory\n");
    await Deno.writeTextFile(
      `${dir}/herd.config.json`,
      JSON.stringify({
        servers: {
          A: { host: "127.0.0.1", port: a, peerPort: aPeer, adminPort: aAdmin },
          B: { host: "127.0.0.1", port: b, peerPort: bPeer, adminPort: bAdmin },
        },
        links: [["A", "B"]],
        places: { provider: "offline", url: "http://127.0.0.1:9/nearby" },
        logDir: "logs",
        dataDir: "data",
        dashboard: { port: dashboard },
        peers: { tls: false },
      }),
    );
    const child = new Deno.Command("deno", {
      args: launcherArgs(dir, "herd"),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const output = child.output();
    const guard = setTimeout(() => child.kill("SIGKILL"), 30_000);
    const { code, stderr } = await output;
    clearTimeout(guard);
    const text = _decoder.decode(stderr);
    assert.notEqual(code, 0, text);
    assert.notEqual(code, 137, `killed by the test's guard, still running after 30 s: ${text}`);
    assert.match(text, /A +\| exited with code 1/);
    assert.match(text, /B +\| exited with code 1/);
    assert.match(text, /No server is running: stopping the dashboard/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

for (
  const [command, signal, killed] of [
    ["herd", "SIGHUP", "the launcher"],
    ["serve", "SIGKILL", "the launcher"],
    ["serve", "SIGKILL", "the launcher's parent"],
  ] as const
) {
  Deno.test({
    name: `the servers ${command} started stop cleanly when ${killed} is gone (${signal}: ` +
      (signal === "SIGHUP" ? "its terminal closed" : "killed") + "), and leave their databases free",
    permissions: HERD_TEST_PERMISSIONS,
  }, async () => {
    const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "herd-cli-" });
    try {
      const [a, aPeer, b, bPeer] = freePorts(4);
      await writeLocalConfig(dir, { A: [a, aPeer], B: [b, bPeer] }, [["A", "B"]]);
      const names = command === "herd" ? ["A", "B"] : ["A"];
      const args = launcherArgs(dir, command, ...(command === "serve" ? ["A"] : []));
      // The launcher's parent, as deno task is: a process that starts it and waits.
      const parentScript = `await new Deno.Command("deno", { args: ${JSON.stringify(args)} }).spawn().status;`;
      const launcher = new Deno.Command("deno", {
        args: killed === "the launcher" ? args : ["eval", parentScript],
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
      const logOf = (name: string) => Deno.readTextFile(`${dir}/logs/${name}.log`).catch(() => "");
      for (const name of names) {
        await waitFor(async () => /listening for clients/.test(await logOf(name)), { what: `${name} to listen` });
      }
      // Its launcher's own stdin is /dev/null: the server's is the launcher's pipe, and it serves on.
      await checkThroughout(async () => assert.match(await exchange(a, "IAMAT kiwi +1+1 1\n"), /^AT A /), {
        durationMs: 1000,
        stepMs: 100,
      });
      launcher.kill(signal);
      await launcher.status;
      for (const name of names) {
        await waitFor(async () => /"[AB]" stopped/.test(await logOf(name)), {
          what: `${name} to stop once its launcher is gone`,
        });
        // Its launcher gone, the server sees its stdin end; the launcher's parent gone, the launcher sends SIGTERM.
        assert.match(
          await logOf(name),
          killed === "the launcher"
            ? new RegExp(`"${name}": the launcher that started it is gone`)
            : new RegExp(`"${name}" received "?SIGTERM"?`),
        );
      }
      // Nothing is left holding a port or a database: the same servers start again at once.
      await waitFor(async () => {
        try {
          (await Deno.connect({ hostname: "127.0.0.1", port: a })).close();
          return false;
        } catch {
          return true;
        }
      }, { what: "A's client port to be closed" });
      const config = await loadConfig(`${dir}/herd.config.json`);
      const again = new Deno.Command("deno", {
        args: serverRunArgs(config, "A", { keyPresent: false }),
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
      try {
        await waitFor(async () => (await logOf("A")).match(/listening for clients/g)?.length === 2, {
          what: "A to start again",
        });
      } finally {
        again.kill("SIGTERM");
        await again.status;
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test({
  name: "deno task serve starts a server whose dataDir and logDir are links (its flags name where they lead too), " +
    "and one whose dataDir is not made yet under a link",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "herd-cli-" });
  try {
    const [a, aPeer, b, bPeer] = freePorts(4);
    await Deno.mkdir(`${dir}/real/data`, { recursive: true, mode: 0o700 });
    await Deno.mkdir(`${dir}/real/logs`, { mode: 0o700 });
    // Deno.symlink() wants unscoped permissions, which the test runs without: a child makes the links.
    const links = [["real/data", "data"], ["real/logs", "logs"], ["real", "elsewhere"]]
      .map(([target, link]) => `Deno.symlinkSync("${dir}/${target}", "${dir}/${link}");`).join(" ");
    assert.ok((await new Deno.Command("deno", { args: ["eval", links] }).output()).success);
    await writeLocalConfig(dir, { A: [a, aPeer], B: [b, bPeer] }, [["A", "B"]]);
    for (const [name, port, dataDir] of [["A", a, "data"], ["B", b, "elsewhere/new-data"]] as const) {
      const path = `${dir}/${name}.json`;
      const config = JSON.parse(await Deno.readTextFile(`${dir}/herd.config.json`));
      await Deno.writeTextFile(path, JSON.stringify({ ...config, dataDir }));
      const launcher = new Deno.Command("deno", {
        args: [...launcherArgs(dir, "serve", name).slice(0, -1), path],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const output = launcher.output();
      let exited = false;
      output.finally(() => exited = true);
      const logOf = () => Deno.readTextFile(`${dir}/real/logs/${name}.log`).catch(() => "");
      await waitFor(async () => exited || /listening for clients/.test(await logOf()), { what: `${name} to listen` });
      const started = !exited;
      if (started) {
        assert.match(await exchange(port, "IAMAT kiwi +1+1 1\n"), new RegExp(`^AT ${name} `));
        launcher.kill("SIGINT");
      }
      const { code, stderr } = await output;
      assert.ok(started, `${name} did not start: ${_decoder.decode(stderr)}`);
      assert.equal(code, 0, _decoder.decode(stderr));
      assert.ok((await Deno.stat(`${dir}/real/${dataDir.replace("elsewhere/", "")}/${name}.db`)).isFile);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "deno task herd interrupted at once (its servers not yet listening for signals) exits 0 and reports no server",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "herd-cli-" });
  try {
    const [a, aPeer, b, bPeer] = freePorts(4);
    await writeLocalConfig(dir, { A: [a, aPeer], B: [b, bPeer] }, [["A", "B"]]);
    const launcher = new Deno.Command("deno", {
      args: launcherArgs(dir, "herd"),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const stderr = new Response(launcher.stderr).text();
    // Printed once the servers are started and the launcher passes signals on, in one synchronous step.
    const { promise: started, resolve } = Promise.withResolvers<void>();
    const reading = (async () => {
      for await (const text of launcher.stdout.pipeThrough(new TextDecoderStream())) {
        if (/the dashboard is not started/.test(text)) resolve();
      }
      resolve();
    })();
    await started;
    launcher.kill("SIGINT");
    const status = await launcher.status;
    await reading;
    const text = await stderr;
    assert.doesNotMatch(text, /exited with code/);
    assert.equal(status.code, 0, `${text} ${JSON.stringify(status)}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "deno task herd reports a server that exits while the herd runs, even cleanly (SIGTERM to it alone), and not " +
    "the servers it stops itself",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "herd-cli-" });
  try {
    const [a, aPeer, b, bPeer] = freePorts(4);
    await writeLocalConfig(dir, { A: [a, aPeer], B: [b, bPeer] }, [["A", "B"]]);
    const launcher = new Deno.Command("deno", {
      args: launcherArgs(dir, "herd"),
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    let stderr = "";
    const reading = (async () => {
      for await (const text of launcher.stderr.pipeThrough(new TextDecoderStream())) stderr += text;
    })();
    const logOf = (name: string) => Deno.readTextFile(`${dir}/logs/${name}.log`).catch(() => "");
    for (const name of ["A", "B"]) {
      await waitFor(async () => /listening for clients/.test(await logOf(name)), { what: `${name} to listen` });
    }
    // A's pid, from the lock file it holds on its database; signalled by a deno of its own (this test may run deno,
    // not signal any process).
    const pid = Number((await Deno.readTextFile(`${dir}/data/A.db.lock`)).trim());
    const kill = await new Deno.Command("deno", { args: ["eval", `Deno.kill(${pid}, "SIGTERM")`] }).output();
    assert.ok(kill.success, _decoder.decode(kill.stderr));
    await waitFor(() => /A +\| exited with code 0/.test(stderr), { what: "the launcher to report A's exit" });
    launcher.kill("SIGINT");
    assert.equal((await launcher.status).code, 0);
    await reading;
    assert.match(await logOf("B"), /"B" stopped/);
    assert.doesNotMatch(stderr, /B +\| exited/, "B was stopped by the launcher: nothing to report");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "main.ts flags says when it was not allowed to look for the Places key, and gives the key's flags when it was",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "herd-cli-" });
  try {
    const path = `${dir}/herd.config.json`;
    await Deno.writeTextFile(path, JSON.stringify(VALID));
    await Deno.writeTextFile(`${dir}/.env`, "GOOGLE_PLACES_API_KEY=k-in-dotenv\n");
    const blind = await run(["run", "--no-prompt", `--allow-read=${path}`, "main.ts", "flags", "A", "--config", path]);
    assert.equal(blind.code, 0, blind.stderr);
    assert.equal(
      blind.stderr.trim(),
      `Not allowed to look for a Places key in GOOGLE_PLACES_API_KEY or ${dir}/.env: these are the flags of a server ` +
        `without one (run it with --allow-env=GOOGLE_PLACES_API_KEY --allow-read=${path},${dir}/.env to see a key's)`,
    );
    assert.doesNotMatch(blind.stdout, /places\.googleapis\.com/);
    const seeing = await run([
      "run",
      "--no-prompt",
      `--allow-read=${path},${dir}/.env`,
      "--allow-env=GOOGLE_PLACES_API_KEY",
      "main.ts",
      "flags",
      "A",
      "--config",
      path,
    ]);
    assert.equal(seeing.code, 0, seeing.stderr);
    assert.equal(seeing.stderr, "");
    assert.match(seeing.stdout, /--allow-net=\S*places\.googleapis\.com:443/);
    // The variable exported empty wins over the .env, as in the server (Deno's --env-file overrides no variable).
    const emptied = await new Deno.Command("deno", {
      args: ["run", "--no-prompt", `--allow-read=${path},${dir}/.env`, "--allow-env=GOOGLE_PLACES_API_KEY", "main.ts"]
        .concat(["flags", "A", "--config", path]),
      env: { GOOGLE_PLACES_API_KEY: "" },
      stdin: "null",
    }).output();
    assert.equal(emptied.code, 0, _decoder.decode(emptied.stderr));
    assert.doesNotMatch(_decoder.decode(emptied.stdout), /places\.googleapis\.com/);
    // A provider the key does not choose: nothing to say.
    await Deno.writeTextFile(path, JSON.stringify({ ...VALID, places: { ...VALID.places, provider: "offline" } }));
    const offline = await run([
      "run",
      "--no-prompt",
      `--allow-read=${path}`,
      "main.ts",
      "flags",
      "A",
      "--config",
      path,
    ]);
    assert.equal(offline.stderr, "");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "the deno tasks take --config PATH: they run again allowed to read PATH, and only that config's files",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "herd-cli-" });
  try {
    const path = `${dir}/other.json`;
    await Deno.writeTextFile(path, JSON.stringify(VALID));
    const certs = await run(["task", "-q", "certs", "--config", path]);
    assert.equal(certs.code, 0, certs.stderr);
    assert.match(certs.stdout, new RegExp(`Wrote ${dir}/certs/ca\\.key`));
    await Deno.writeTextFile(path, JSON.stringify({ ...VALID, links: [["A", "Zed"]] }));
    const refused = await run(["task", "-q", "serve", "A", "--config", path]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /links\[0\] names unknown server "Zed"/);
    assert.equal(refused.stderr.trim().split("\n").length, 1, refused.stderr);
    const bare = await run(["run", "--no-prompt", "main.ts", "flags", "A", "--config", path]);
    assert.equal(bare.code, 1);
    assert.equal(
      bare.stderr.trim(),
      `Cannot read herd config ${path}: this process is not allowed to (give deno run --allow-read=${path}; the ` +
        "deno task commands allow the file given with --config by themselves)",
    );
    // A comma splits a permission flag's list: the process run again could not read the path either, and ran again,
    // and again (150 processes in 6 s). It is refused at once.
    await Deno.mkdir(`${dir}/a,b`);
    const comma = `${dir}/a,b/herd.config.json`;
    await Deno.writeTextFile(comma, JSON.stringify(VALID));
    const split = await run(["task", "-q", "status", "--config", comma]);
    assert.equal(split.code, 1);
    assert.equal(
      split.stderr.trim(),
      `Cannot use herd config ${comma}: a path with a comma cannot be named in a permission flag`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "a server whose certificate is garbled does not start: it names the file and the command that remakes it for " +
    "this config, and says nothing of an admin endpoint",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "herd-bad-cert-" });
  try {
    const [a, aPeer, aAdmin] = freePorts(3);
    await writeLocalConfig(dir, { A: [a, aPeer, aAdmin] }, [], { peers: { tls: true } });
    const config = await loadConfig(`${dir}/herd.config.json`);
    await makeCertificates(config);
    await Deno.writeTextFile(`${config.certDir}/A.crt`, "garbage\n");
    const { code, stdout, stderr } = await new Deno.Command("deno", {
      args: serverRunArgs(config, "A", { keyPresent: false }),
      stdin: "null",
    }).output();
    const text = _decoder.decode(stdout) + _decoder.decode(stderr);
    assert.equal(code, 1, text);
    assert.ok(
      text.includes(
        `A cannot start: This server's certificate ${config.certDir}/A.crt is not a PEM certificate (no whole ` +
          `-----BEGIN CERTIFICATE----- ... -----END CERTIFICATE----- block) (\`deno task certs A --renew --config ${config.path}\` remakes`,
      ),
      text,
    );
    assert.doesNotMatch(text, /admin endpoint/, text);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "a second server of the same config is refused, and writes nothing into the running one's log file",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "herd-same-log-" });
  const [a, aPeer, aAdmin] = freePorts(3);
  await writeLocalConfig(dir, { A: [a, aPeer, aAdmin] }, [], { shutdownGraceMs: 100 });
  const config = await loadConfig(`${dir}/herd.config.json`);
  const start = () =>
    new Deno.Command("deno", {
      args: serverRunArgs(config, "A", { keyPresent: false }),
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
  const logOf = () => Deno.readTextFile(`${dir}/logs/A.log`).catch(() => "");
  const first = start();
  const firstStderr = new Response(first.stderr).text();
  try {
    await waitFor(async () => /listening for clients/.test(await logOf()), { what: "the first A" });
    const before = await logOf();
    const { code, stderr } = await start().output();
    const text = _decoder.decode(stderr);
    assert.equal(code, 1, text);
    assert.match(text, /cannot start: Cannot use the database .*another process \(pid \d+\) is using it/);
    assert.match(text, /did not start its admin endpoint/, "the console has all of it");
    // The first one's own lines (a reconciliation, say) may have come meanwhile: none of the second's.
    const after = await logOf();
    assert.ok(after.startsWith(before));
    assert.doesNotMatch(after, /cannot start|did not start its admin endpoint|is held by another process/, after);
    assert.equal(after.match(/starting with config/g)?.length, 1, after);
  } finally {
    first.kill("SIGTERM");
    await first.status;
    await firstStderr;
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "a second server on the same database (another config, same name and dataDir) is refused while the first runs; " +
    "one restarted at once waits for it, with its admin endpoint; a signal while it waits stops it",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "herd-shared-data-" });
  const ports = freePorts(9);
  const admin = ports[8];
  // Two configs in one directory, so "data" is one directory for both; their own ports and logs, one admin port (as
  // the same server restarted would have).
  const configs = await Promise.all([0, 1].map(async (index) => {
    const [a, aPeer, b, bPeer] = ports.slice(index * 4, index * 4 + 4);
    const path = `${dir}/herd${index}.config.json`;
    await Deno.writeTextFile(
      path,
      JSON.stringify({
        servers: {
          A: { host: "127.0.0.1", port: a, peerPort: aPeer, adminPort: admin },
          B: { host: "127.0.0.1", port: b, peerPort: bPeer },
        },
        links: [["A", "B"]],
        places: { provider: "offline", url: "http://127.0.0.1:9/nearby" },
        logDir: `logs${index}`,
        dataDir: "data",
        peers: { tls: false },
      }),
    );
    return await loadConfig(path);
  }));
  const start = (index: number) =>
    new Deno.Command("deno", {
      args: serverRunArgs(configs[index], "A", { keyPresent: false }),
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
  const logOf = (index: number) => Deno.readTextFile(`${dir}/logs${index}/A.log`).catch(() => "");
  // A data directory other users can enter: each start warns of it once, not once per try of the lock.
  await Deno.mkdir(`${dir}/data`, { mode: 0o755 });
  await Deno.chmod(`${dir}/data`, 0o755);
  /** How many times the second config's A has said it waits for the lock: its processes share one log. */
  const waits = async () => (await logOf(1)).match(/is held by another process: waiting/g)?.length ?? 0;
  const first = start(0);
  const firstStderr = new Response(first.stderr).text();
  let firstExited = false;
  const firstStatus = first.status.then((status) => (firstExited = true, status));
  try {
    await waitFor(async () => firstExited || /loaded 0 records/.test(await logOf(0)), { what: "the first A" });
    assert.equal(firstExited, false, firstExited ? `the first A exited: ${await firstStderr}` : "");
    const second = start(1);
    const guard = setTimeout(() => second.kill("SIGKILL"), 30_000);
    const { code, stderr } = await second.output();
    clearTimeout(guard);
    const text = _decoder.decode(stderr);
    assert.equal(code, 1, text);
    assert.match(
      text,
      new RegExp(
        `cannot start: Cannot use the database .*/data/A\\.db: another process \\(pid ${first.pid}\\) ` +
          "is using it .*give this server its own dataDir",
      ),
    );
    assert.match(text, /is held by another process: waiting up to 5000 ms for it to let go/, "it waited first");
    assert.equal(await waits(), 1);
    assert.equal(firstExited, false, "the first A runs on");
    // A signal while it waits (Ctrl-C under deno task herd): it stops at once, exit 0, having opened nothing.
    const waiter = start(1);
    const waiterOutput = waiter.output();
    await waitFor(async () => await waits() === 2, { what: "the next A to wait for the lock" });
    const signalled = performance.now();
    waiter.kill("SIGTERM");
    const waited = await waiterOutput;
    assert.equal(waited.code, 0, _decoder.decode(waited.stderr));
    assert.ok(performance.now() - signalled < 3000, "it stopped well before its wait was over");
    assert.match(await logOf(1), /received "?SIGTERM"? while waiting for its database: not started/);
    // A restart at once (SIGTERM, then start, as a supervisor does) waits for the server before to let go, then starts,
    // its admin endpoint too (the server before held that port as well).
    const again = start(1);
    const againStderr = new Response(again.stderr).text();
    let againExited = false;
    const againStatus = again.status.then((status) => (againExited = true, status));
    await waitFor(async () => againExited || await waits() === 3, { what: "the restarted A to wait for the lock" });
    first.kill("SIGTERM");
    assert.equal((await firstStatus).code, 0);
    await waitFor(async () => againExited || /loaded 0 records/.test(await logOf(1)), { what: "the restarted A" });
    assert.equal(againExited, false, againExited ? `the restarted A exited: ${await againStderr}` : "");
    await waitFor(async () => (await fetch(`http://127.0.0.1:${admin}/healthz`).then(async (response) => {
      await response.body?.cancel();
      return response.status === 200;
    }).catch(() => false)), { what: "the restarted A's admin endpoint" });
    again.kill("SIGTERM");
    assert.equal((await againStatus).code, 0);
    await againStderr;
    const warnings = (await logOf(1)).match(/can be entered by other users/g)?.length;
    assert.equal(warnings, 3, "the open data directory, once by each of the three starts");
  } finally {
    try {
      first.kill("SIGKILL");
    } catch { /* already gone */ }
    await firstStatus;
    await firstStderr;
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "a server whose admin port is taken starts without it, and its log says which port",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "herd-port-taken-" });
  const [a, aPeer, aAdmin] = freePorts(3);
  await writeLocalConfig(dir, { A: [a, aPeer, aAdmin] }, []);
  const config = await loadConfig(`${dir}/herd.config.json`);
  const places = noPlaces();
  const taken = Deno.listen({ hostname: "127.0.0.1", port: aAdmin });
  try {
    await using logs = await captureLogs();
    const server = new HerdServer({ config, name: "A", places });
    await server.start();
    try {
      // Tried at start, and again once the database is ours (a server restarted at once finds the one before still
      // holding the port): each says which port.
      const failures = logs.lines.filter((line) => line.includes("did not start its admin endpoint"));
      assert.equal(failures.length, 2, logs.lines.join("\n"));
      for (const line of failures) {
        assert.match(line, new RegExp(`endpoint: admin port 127\\.0\\.0\\.1:${aAdmin}: Address already in use`));
      }
    } finally {
      await server.shutdown();
    }
  } finally {
    taken.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "a server whose client port is taken lets its database go, and starts in the same process once the port is free",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "herd-port-taken-" });
  const [a, aPeer, b, bPeer] = freePorts(4);
  await writeLocalConfig(dir, { A: [a, aPeer], B: [b, bPeer] }, [["A", "B"]]);
  const config = await loadConfig(`${dir}/herd.config.json`);
  const places = noPlaces();
  const taken = Deno.listen({ hostname: "127.0.0.1", port: a });
  try {
    const first = new HerdServer({ config, name: "A", places });
    // Which port: Deno's message alone says "Address already in use (os error 98)".
    await assert.rejects(first.start(), (error) => {
      assert.ok(error instanceof Deno.errors.AddrInUse);
      assert.match(error.message, new RegExp(`^client port 127\\.0\\.0\\.1:${a}: Address already in use`));
      return true;
    });
    taken.close();
    const second = new HerdServer({ config, name: "A", places });
    await second.start();
    try {
      assert.match(await exchange(a, "IAMAT kiwi +1+1 1\n"), /^AT A \+\d+\.\d+ kiwi \+1\+1 1\n$/);
    } finally {
      await second.shutdown();
    }
  } finally {
    try {
      taken.close();
    } catch { /* closed above */ }
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "a server packs a client's replaced line by its next pass (each second), and the lines it loads at start",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "herd-packs-" });
  const [a, aPeer, b, bPeer] = freePorts(4);
  await writeLocalConfig(dir, { A: [a, aPeer], B: [b, bPeer] }, [["A", "B"]]);
  const config = await loadConfig(`${dir}/herd.config.json`);
  const places = noPlaces();
  try {
    let line = "";
    for (const start of ["replaced", "loaded at start"]) {
      const server = new HerdServer({ config, name: "A", places });
      await server.start();
      try {
        if (start === "replaced") {
          await exchange(a, "IAMAT kiwi +34.068930-118.445127 1621464827.959498503\n");
          line = (await exchange(a, "IAMAT kiwi +34.068930-118.445127 1621464828.959498503\n")).trim();
          assert.match(line, /^AT A \+\d+\.\d+ kiwi \+34\.068930-118\.445127 1621464828\.959498503$/);
        }
        await waitFor(() => Promise.resolve(server.store.isPacked("kiwi")), { what: `kiwi's line packed, ${start}` });
        assert.equal(server.store.lineOf("kiwi"), line);
        assert.equal(server.store.get("kiwi")?.location, "+34.068930-118.445127");
      } finally {
        await server.shutdown();
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "deno task backup has each server with an admin port copy its database, says where, and exits 1 when one " +
    "could not; a name without an admin port is refused",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await TestHerd.create({
    placesUrl: "http://127.0.0.1:9/unused",
    names: ["A", "B"],
    links: [["A", "B"]],
    admin: true,
  });
  await herd.start("A");
  await herd.start("B");
  await herd.waitConverged(["A", "B"]);
  const reply = await exchange(herd.port("A"), "IAMAT kept +1+1 1700000000\n");
  await waitFor(async () => (await exchange(herd.port("B"), "WHATSAT kept 1 0\n")).startsWith(reply), {
    what: "B to hold the record",
  });
  const both = await run(launcherArgs(herd.dir, "backup"));
  assert.equal(both.code, 0, both.stderr);
  const lines = both.stdout.trimEnd().split("\n");
  assert.equal(lines.length, 2, both.stdout);
  for (const [i, name] of ["A", "B"].entries()) {
    // waitConverged() stored records of its own too.
    const match = new RegExp(
      `^${name}: (\\d+) rows, [0-9,]+ bytes, in \\d+ ms: (${herd.dir}/data/backups/${name}-\\S+\\.db)$`,
    ).exec(lines[i]);
    assert.ok(match !== null, lines[i]);
    const rows = recordLines(match[2]);
    assert.equal(rows.length, Number(match[1]));
    assert.ok(rows.includes(reply.trimEnd()), `${name}'s copy holds ${rows.join(", ")}`);
  }
  await herd.stop("B");
  const oneDown = await run(launcherArgs(herd.dir, "backup"));
  assert.equal(oneDown.code, 1);
  assert.match(oneDown.stdout, /^A: \d+ rows, /);
  assert.match(oneDown.stderr, /^B: not reachable \(Connection refused/);
});

Deno.test({
  name: "deno task backup --out DIR fetches each copy into DIR (0600), checks it and removes it from the server's " +
    "host; without the admin token it is refused before a copy is made",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await TestHerd.create({
    placesUrl: "http://127.0.0.1:9/unused",
    names: ["A", "B"],
    links: [["A", "B"]],
    admin: true,
  });
  // The servers and the backup's child read it from the .env beside the config.
  await Deno.writeTextFile(`${herd.dir}/.env`, "HERD_ADMIN_TOKEN=s3cret-token\n");
  await herd.start("A");
  await herd.start("B");
  const reply = (await exchange(herd.port("A"), "IAMAT offsite +1+1 1700000000\n")).trimEnd();
  await waitFor(async () => (await exchange(herd.port("B"), "WHATSAT offsite 1 0\n")).startsWith(reply), {
    what: "B to hold the record",
  });
  const out = `${herd.dir}/offsite`;
  const fetched = await run([...launcherArgs(herd.dir, "backup"), "--out", out]);
  assert.equal(fetched.code, 0, fetched.stderr);
  const lines = fetched.stdout.trimEnd().split("\n");
  assert.equal(lines.length, 2, fetched.stdout);
  assert.equal((await Deno.stat(out)).mode! & 0o777, 0o700);
  for (const [i, name] of ["A", "B"].entries()) {
    const match = new RegExp(
      `^${name}: (\\d+) rows?, [0-9,]+ bytes, in \\d+ ms: (${out}/${name}-\\d{8}T\\d{9}Z\\.db) ` +
        `\\(fetched and checked in \\d+ ms; removed from ${name}'s host\\)$`,
    ).exec(lines[i]);
    assert.ok(match !== null, lines[i]);
    assert.equal((await Deno.stat(match[2])).mode! & 0o777, 0o600);
    const rows = recordLines(match[2]);
    assert.equal(rows.length, Number(match[1]));
    assert.ok(rows.includes(reply), `${name}'s copy holds ${rows.join(", ")}`);
  }
  assert.deepEqual([...Deno.readDirSync(out)].map((entry) => entry.name).filter((n) => !n.endsWith(".db")), [
    ".gitignore",
  ]);
  // Removed from the servers' hosts (the herd's dataDir is shared by A and B).
  assert.deepEqual([...Deno.readDirSync(`${herd.dir}/data/backups`)].map((entry) => entry.name), [".gitignore"]);

  // Without the token the servers want, nothing is asked: no copy is left behind on a host.
  await Deno.remove(`${herd.dir}/.env`);
  const refused = await run([...launcherArgs(herd.dir, "backup", "A"), "--out", out]);
  assert.equal(refused.code, 2);
  assert.match(refused.stderr, /^--out fetches each copy over the admin port, .* set HERD_ADMIN_TOKEN/);
  assert.deepEqual([...Deno.readDirSync(`${herd.dir}/data/backups`)].map((entry) => entry.name), [".gitignore"]);
});

Deno.test({
  name: "deno task backup --out refuses an empty path, and the project's directory and the root however they are " +
    "written, saying why",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "herd-backup-out-" });
  try {
    const [a, aPeer, aAdmin] = freePorts(3);
    // No server runs and there is no token: a refusal missed here would write nothing (the child refuses at once).
    await writeLocalConfig(dir, { A: [a, aPeer, aAdmin] }, []);
    const backup = (given: string) => run([...launcherArgs(dir, "backup", "A"), "--out", given]);
    const empty = await backup("");
    assert.equal(empty.code, 2);
    assert.equal(empty.stderr, "--out '': give a directory of its own for the copies\n");
    // Where deno task runs: the checkout, however it is written.
    const cwd = Deno.cwd();
    for (const given of [".", "./", `${cwd}/`, `${cwd}/.`, `${cwd}//lib/..`]) {
      const checkout = await backup(given);
      assert.equal(checkout.code, 2, given);
      assert.equal(
        checkout.stderr,
        `--out ${given} is the project's directory (${cwd}, where deno task runs): give a directory of its own for ` +
          "the copies (each holds every client's location, which does not belong in the checkout; a relative path " +
          "is taken from there)\n",
      );
    }
    for (const given of ["/", "//", "/tmp/..", "///."]) {
      const root = await backup(given);
      assert.equal(root.code, 2, given);
      assert.equal(
        root.stderr,
        `--out ${given} is the root directory: give a directory of its own for the copies (each holds every ` +
          "client's location)\n",
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "a server stopping while a client reads a backup copy slowly cuts the copy off and stops, rather than wait " +
    "for the reader",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await TestHerd.create({
    placesUrl: "http://127.0.0.1:9/unused",
    names: ["A"],
    links: [],
    admin: true,
  });
  await Deno.writeTextFile(`${herd.dir}/.env`, "HERD_ADMIN_TOKEN=s3cret-token\n");
  // 100,000 rows, some 10 MB: more than the sockets between here and A hold, so the copy cannot be sent whole at once.
  await Deno.mkdir(`${herd.dir}/data`, { recursive: true });
  const db = new DatabaseSync(`${herd.dir}/data/A.db`);
  db.exec("CREATE TABLE records (line TEXT NOT NULL)");
  db.exec("BEGIN");
  const insert = db.prepare("INSERT INTO records VALUES (?)");
  for (let i = 0; i < 100_000; i++) insert.run(`AT A +0.100000000 slow-reader-${i} +1+1 1700000000.${i}`);
  db.exec("COMMIT");
  db.close();
  await herd.start("A");
  const authorization = "Bearer s3cret-token";
  const admin = `http://127.0.0.1:${herd.adminPort("A")}`;
  const made = await (await fetch(`${admin}/backup`, { method: "POST", headers: { authorization } })).json();
  const file = made.path.slice(made.path.lastIndexOf("/") + 1);
  const response = await fetch(`${admin}/backups/${file}`, { headers: { authorization } });
  assert.equal(response.status, 200);
  const reader = response.body!.getReader();
  assert.ok(((await reader.read()).value?.length ?? 0) > 0, "the copy starts coming");
  // The reader stalls; A is asked to stop, and stops.
  let timer: ReturnType<typeof setTimeout> | undefined;
  const stopped = await Promise.race([
    herd.stop("A").then(({ code }) => code),
    new Promise<string>((resolve) => timer = setTimeout(() => resolve("still running after 20 s"), 20_000)),
  ]);
  clearTimeout(timer);
  assert.equal(stopped, 0);
  // What was sent before the cut is all the reader gets: the rest fails, not a short copy passed off as whole.
  let received = 0;
  await assert.rejects(async () => {
    for (let chunk; !(chunk = await reader.read()).done;) received += chunk.value.length;
  });
  assert.ok(received < made.bytes, `${received} of ${made.bytes} bytes`);
});

Deno.test({
  name: "backup --out makes a missing directory 0700 (its parent must exist), refuses a file, warns of one others " +
    "can enter, and wants the admin token",
  permissions: { read: ["/tmp"], write: ["/tmp"] },
}, () => {
  const dir = Deno.makeTempDirSync({ prefix: "herd-out-" });
  try {
    const warnings: string[] = [];
    const warn = (message: string) => warnings.push(message);
    assert.match(backupOutProblem(`${dir}/new`, undefined, warn)!, /^--out fetches each copy .* HERD_ADMIN_TOKEN/);
    assert.equal(backupOutProblem(`${dir}/new`, "t", warn), undefined);
    assert.equal(Deno.statSync(`${dir}/new`).mode! & 0o777, 0o700);
    assert.deepEqual([...Deno.readDirSync(`${dir}/new`)].map((entry) => entry.name), [".gitignore"], "probe removed");
    assert.match(
      backupOutProblem(`${dir}/no/such`, "t", warn)!,
      /^Cannot fetch the copies into .*: .*\/no does not exist$/,
    );
    Deno.writeTextFileSync(`${dir}/file`, "");
    assert.match(
      backupOutProblem(`${dir}/file`, "t", warn)!,
      /^Cannot fetch the copies into .*file: it is not a directory$/,
    );
    Deno.mkdirSync(`${dir}/open`, { mode: 0o755 });
    Deno.chmodSync(`${dir}/open`, 0o755);
    assert.equal(backupOutProblem(`${dir}/open`, "t", warn), undefined);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0], /open can be entered by other users \(mode 755\)/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test({
  name: "a copy fetched short, damaged, of other rows or not at all is not kept in the --out directory and stays on " +
    "the server's host; a copy whose removal there fails is kept, saying so",
  permissions: { net: ["127.0.0.1"], read: ["/tmp"], write: ["/tmp"] },
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "herd-fetch-" });
  // A real copy of one row, as a server's backup makes it.
  const good = `${dir}/good.db`;
  const db = new DatabaseSync(good);
  db.exec("CREATE TABLE records (line TEXT NOT NULL)");
  db.exec("INSERT INTO records VALUES ('AT A +0.100000000 a +1+1 1')");
  db.exec("PRAGMA journal_mode = DELETE");
  db.close();
  const bytes = await Deno.readFile(good);
  let answer: (request: Request) => Response = () => new Response("unset", { status: 500 });
  const asked: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (request) => {
    asked.push(`${request.method} ${new URL(request.url).pathname}`);
    return answer(request);
  });
  try {
    const config = parseConfig(
      JSON.stringify({
        servers: { A: { host: "127.0.0.1", port: 1, peerPort: 2, adminPort: server.addr.port } },
        links: [],
        places: { url: "http://127.0.0.1:9/unused" },
        logDir: "logs",
      }),
      `${dir}/herd.config.json`,
    );
    const file = "A-20261204T014315384Z.db";
    const result = { path: `/far/data/backups/${file}`, rows: 1, bytes: bytes.length, ms: 1 };
    const out = `${dir}/out`;
    await Deno.mkdir(out);
    const attempt = async (respond: (request: Request) => Response, expected: RegExp, claimed = result) => {
      answer = respond;
      asked.length = 0;
      await assert.rejects(fetchBackup(config, "A", "t", claimed, out), (error: Error) => {
        assert.ok(error instanceof FetchFailed, error.message);
        assert.match(error.message, expected);
        return true;
      });
      assert.deepEqual([...Deno.readDirSync(out)], [], "nothing left in --out");
      assert.deepEqual(asked, [`GET /backups/${file}`], "no DELETE: the server keeps its copy");
    };
    const damaged = bytes.slice();
    damaged.fill(0x55, 100, 4000);
    await attempt(() => new Response(bytes.subarray(0, 1000)), /^fetched 1000 bytes where the server made \d+$/);
    await attempt(() => new Response(damaged), /^the copy fetched is not whole: /);
    await attempt(() => new Response(bytes), /^the copy fetched has 1 rows where the server's has 2$/, {
      ...result,
      rows: 2,
    });
    await attempt(
      () => Response.json({ error: "no backup there" }, { status: 404 }),
      /^not fetched: HTTP 404: no backup there$/,
    );
    await attempt(() => new Response("", { status: 401 }), /^not fetched: HTTP 401: its admin endpoint wants/);
    // More than the server said it made: not written on until the disk is full.
    const more = new Uint8Array(bytes.length + 70_000);
    more.set(bytes);
    await attempt(() => new Response(more), /^the server sent more than the \d+ bytes it made$/);
    // Interrupted (Ctrl-C) half-way: the part written is removed.
    {
      const stop = new AbortController();
      answer = () =>
        new Response(
          new ReadableStream({
            start(controller) {
              controller.enqueue(bytes.subarray(0, 1000));
              setTimeout(() => stop.abort(), 50); // and nothing more comes
            },
          }),
        );
      asked.length = 0;
      await assert.rejects(fetchBackup(config, "A", "t", result, out, stop.signal), /^FetchFailed: .*interrupted$/);
      assert.deepEqual([...Deno.readDirSync(out)], [], "nothing left in --out");
    }
    // A failure here (the directory gone) is said as such, not thrown as a stack trace.
    answer = () => new Response(bytes);
    await assert.rejects(
      fetchBackup(config, "A", "t", result, `${dir}/gone`),
      (error: Error) => error instanceof FetchFailed && /^cannot write .*gone.*\.partial: /.test(error.message),
    );

    // Fetched whole, but not removed from the host: kept here, and the line says where the other copy is.
    answer = (request) =>
      request.method === "GET" ? new Response(bytes) : Response.json({ error: "disk gone" }, { status: 500 });
    asked.length = 0;
    const kept = await fetchBackup(config, "A", "t", result, out);
    assert.deepEqual(asked, [`GET /backups/${file}`, `DELETE /backups/${file}`]);
    assert.equal(kept.path, `${out}/${file}`);
    assert.equal(kept.notRemoved, "HTTP 500: disk gone");
    assert.deepEqual(await Deno.readFile(kept.path), bytes);
    await assert.rejects(fetchBackup(config, "A", "t", result, out), /exists already/);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "deno task restore puts a backup in place as a stopped server's database, keeping the one it replaces; it " +
    "refuses a running server and a file that is no herd database",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await TestHerd.create({
    placesUrl: "http://127.0.0.1:9/unused",
    names: ["A"],
    links: [],
    admin: true,
  });
  await herd.start("A");
  const before = (await exchange(herd.port("A"), "IAMAT early +1+1 1700000000\n")).trimEnd();
  const backedUp = await run(launcherArgs(herd.dir, "backup", "A"));
  assert.equal(backedUp.code, 0, backedUp.stderr);
  const backup = backedUp.stdout.trimEnd().split(": ").at(-1)!;
  // After the backup: gone once the backup is restored.
  assert.match(await exchange(herd.port("A"), "IAMAT late +1+1 1700000001\n"), /^AT A /);

  const running = await run(launcherArgs(herd.dir, "restore", "A", backup));
  assert.equal(running.code, 1);
  assert.match(running.stderr, /^A is running \(it holds .*\/data\/A\.db\.lock\): stop it first, then restore\n$/);
  const notHerd = `${herd.dir}/not-a-backup.db`;
  await Deno.writeTextFile(notHerd, "some text");
  await herd.stop("A");
  const refused = await run(launcherArgs(herd.dir, "restore", "A", notHerd));
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /^The backup .*not-a-backup\.db (cannot be|is not)/);

  // A database of a herd that had a server "Gone": restored, with a warning that A will delete its rows.
  const other = `${herd.dir}/other-herd.db`;
  const db = new DatabaseSync(other);
  db.exec("CREATE TABLE records (line TEXT NOT NULL)");
  db.exec("INSERT INTO records VALUES ('AT Gone +0.100000000 g +1+1 1700000000'), ('AT A +0.100000000 a +1+1 1')");
  db.close();
  const foreign = await run(launcherArgs(herd.dir, "restore", "A", other));
  assert.equal(foreign.code, 0, foreign.stderr);
  assert.match(
    foreign.stderr,
    /^Warning: 1 row of the backup name servers .* does not have \(Gone: 1\): A will delete them when it starts, unless they are listed in retiredServers\n$/,
  );
  assert.match(foreign.stdout, /^Restored A from .*other-herd\.db: 2 rows in /);

  // A herd table holding a row the server would refuse at start (an operator audit's: restored, then A would not
  // start): refused, A's database left as it was.
  const garbled = `${herd.dir}/garbled.db`;
  const bad = new DatabaseSync(garbled);
  bad.exec("CREATE TABLE records (line TEXT NOT NULL)");
  bad.exec("INSERT INTO records VALUES ('AT A +0.100000000 a +1+1 1'), ('hello world')");
  bad.close();
  const databaseBefore = await Deno.readFile(`${herd.dir}/data/A.db`);
  const garbledRestore = await run(launcherArgs(herd.dir, "restore", "A", garbled));
  assert.equal(garbledRestore.code, 1, garbledRestore.stdout);
  assert.match(
    garbledRestore.stderr,
    /^The backup .*garbled\.db holds a row that is not an AT record \(after \d that are\): the server would refuse to start on it\n$/,
  );
  assert.deepEqual(await Deno.readFile(`${herd.dir}/data/A.db`), databaseBefore);
  assert.deepEqual(
    [...Deno.readDirSync(`${herd.dir}/data`)].filter((entry) => entry.name.includes(".restoring-")),
    [],
    "the refused copy is removed",
  );

  const restored = await run(launcherArgs(herd.dir, "restore", "A", backup));
  assert.equal(restored.code, 0, restored.stderr);
  // The first restore (of the other herd's database) kept A's own, the later record in it.
  const kept = /the database it replaced is kept as (\S+)\. Start it with/.exec(foreign.stdout)?.[1];
  assert.ok(kept !== undefined, foreign.stdout);
  assert.match(restored.stdout, new RegExp(`^Restored A from ${backup}: \\d+ rows? in ${herd.dir}/data/A\\.db;`));
  assert.equal((await Deno.stat(`${herd.dir}/data/A.db`)).mode! & 0o777, 0o600);
  // What a restore killed half-way (Ctrl-C) leaves: the server removes it at start, and says so.
  const stopped = `${herd.dir}/data/A.db.restoring-20261205-000000`;
  await Deno.writeTextFile(stopped, "half a copy");
  await herd.start("A");
  await assert.rejects(Deno.stat(stopped), Deno.errors.NotFound);
  assert.match(await herd.log("A"), /Removed ".*A\.db\.restoring-20261205-000000", left by a restore stopped before/);
  assert.equal((await exchange(herd.port("A"), "WHATSAT early 1 0\n")).split("\n")[0], before);
  assert.equal(await exchange(herd.port("A"), "WHATSAT late 1 0\n"), "? WHATSAT late 1 0\n");
  // The database it replaced, kept, holds the later record.
  const lines = recordLines(kept);
  assert.ok(lines.some((line) => line.includes(" late ")), lines.join(", "));
});
