import assert from "node:assert/strict";
import { type HerdConfig, parseConfig } from "../lib/config/config.ts";
import {
  backupRunArgs,
  certificateRunArgs,
  envTextSetsKey,
  MAIN_MODULE,
  restoreRunArgs,
  serverCompileArgs,
  serverRunArgs,
  statusRunArgs,
} from "../lib/cli/launcher.ts";
import { serverNetAddresses, serverPermissionFlags, urlAddress } from "../lib/cli/permissions.ts";
import { realDirectoriesInChild } from "../lib/cli/launcher.ts";
import { adminAddresses, clientAddressesWithoutAdmin } from "../lib/cli/status.ts";
import {
  DEFAULT_CONFIG_DIR as DEFAULT_DIR,
  DEFAULT_CONFIG_PATH as DEFAULT_PATH,
  loadDefaultConfig as loadDefault,
} from "./testing/default_config.ts";

/** Hill in the default herd (tests/testing/default) with no key: `auto` is `offline`, so no Places host at all. */
const HILL_FLAGS = [
  "--allow-net=127.0.0.1:12000,127.0.0.1:12100,127.0.0.1:12200,127.0.0.1:12101,127.0.0.1:12102",
  `--allow-read=${DEFAULT_PATH},${DEFAULT_DIR}/data,${DEFAULT_DIR}/logs,${DEFAULT_DIR}/certs/ca.crt,${DEFAULT_DIR}/certs/Hill.crt,${DEFAULT_DIR}/certs/Hill.key`,
  `--allow-write=${DEFAULT_DIR}/logs,${DEFAULT_DIR}/data`,
  "--allow-sys=statfs",
  "--allow-env=GOOGLE_PLACES_API_KEY,HERD_ADMIN_TOKEN",
];

/** Hill with a key: `auto` is `google-new`. */
const HILL_FLAGS_KEYED = [
  "--allow-net=127.0.0.1:12000,127.0.0.1:12100,127.0.0.1:12200,127.0.0.1:12101,127.0.0.1:12102,places.googleapis.com:443",
  ...HILL_FLAGS.slice(1),
];

const NO_KEY = { keyPresent: false };
const KEY = { keyPresent: true };

function httpHerd(): HerdConfig {
  return parseConfig(
    JSON.stringify({
      servers: {
        A: { host: "127.0.0.1", port: 13000, peerPort: 13100 },
        B: { host: "::1", port: 13001, peerPort: 13101 },
      },
      links: [["A", "B"]],
      places: { provider: "google-legacy", url: "http://127.0.0.1:8080/maps/api/place/nearbysearch/json" },
      logDir: "/tmp/x/logs",
    }),
    "/tmp/x/herd.config.json",
  );
}

Deno.test("urlAddress() makes the scheme's default port explicit", () => {
  assert.equal(urlAddress("https://maps.googleapis.com/maps/api/place/nearbysearch/json"), "maps.googleapis.com:443");
  assert.equal(urlAddress("http://example.com/places"), "example.com:80");
  assert.equal(urlAddress("https://maps.googleapis.com:443/x"), "maps.googleapis.com:443");
});

Deno.test("urlAddress() keeps an explicit port", () => {
  assert.equal(urlAddress("http://127.0.0.1:8080/places?x=1"), "127.0.0.1:8080");
  assert.equal(urlAddress("https://places.example:8443/"), "places.example:8443");
  assert.equal(urlAddress("http://example.com:443/"), "example.com:443");
});

Deno.test("serverPermissionFlags() gives Hill exactly what it needs, with and without a key", async () => {
  assert.deepEqual(serverPermissionFlags(await loadDefault(), "Hill", NO_KEY), HILL_FLAGS);
  assert.deepEqual(serverPermissionFlags(await loadDefault(), "Hill", KEY), HILL_FLAGS_KEYED);
});

Deno.test("serverNetAddresses() lists Hill's own ports, its neighbours' peer ports and the chosen provider's host", async () => {
  const own = ["127.0.0.1:12000", "127.0.0.1:12100", "127.0.0.1:12200", "127.0.0.1:12101", "127.0.0.1:12102"];
  const config = await loadDefault();
  assert.deepEqual(serverNetAddresses(config, "Hill", NO_KEY), own);
  assert.deepEqual(serverNetAddresses(config, "Hill", KEY), [...own, "places.googleapis.com:443"]);
  config.places.provider = "google-legacy";
  assert.deepEqual(serverNetAddresses(config, "Hill", NO_KEY), [...own, "maps.googleapis.com:443"]);
  config.places.provider = "offline";
  assert.deepEqual(serverNetAddresses(config, "Hill", KEY), own);
});

Deno.test("serverNetAddresses() gives Singleton its neighbours' peer ports and not Hill's", async () => {
  const addresses = serverNetAddresses(await loadDefault(), "Singleton", KEY);
  assert.deepEqual(addresses, [
    "127.0.0.1:12004",
    "127.0.0.1:12104",
    "127.0.0.1:12204",
    "127.0.0.1:12101",
    "127.0.0.1:12102",
    "127.0.0.1:12103",
    "places.googleapis.com:443",
  ]);
  assert.ok(!addresses.includes("127.0.0.1:12100"));
  assert.ok(!addresses.includes("127.0.0.1:12000"));
});

Deno.test("serverNetAddresses() never includes a neighbour's client port", async () => {
  const config = await loadDefault();
  for (const name of config.servers.keys()) {
    const addresses = serverNetAddresses(config, name, KEY);
    for (const [other, server] of config.servers) {
      if (other !== name) assert.ok(!addresses.includes(`${server.host}:${server.port}`), `${name} → ${other}`);
    }
  }
});

Deno.test("serverNetAddresses() uses an http Places URL with its explicit port, and brackets IPv6 hosts", () => {
  const config = httpHerd();
  assert.deepEqual(serverNetAddresses(config, "A", NO_KEY), [
    "127.0.0.1:13000",
    "127.0.0.1:13100",
    "[::1]:13101",
    "127.0.0.1:8080",
  ]);
  assert.deepEqual(serverPermissionFlags(config, "B", NO_KEY), [
    "--allow-net=[::1]:13001,[::1]:13101,127.0.0.1:13100,127.0.0.1:8080",
    "--allow-read=/tmp/x/herd.config.json,/tmp/x/data,/tmp/x/logs,/tmp/x/certs/ca.crt,/tmp/x/certs/B.crt,/tmp/x/certs/B.key",
    "--allow-write=/tmp/x/logs,/tmp/x/data",
    "--allow-env=GOOGLE_PLACES_API_KEY",
  ]);
});

Deno.test("serverPermissionFlags() throws a RangeError for an unknown server", async () => {
  const config = await loadDefault();
  assert.throws(() => serverPermissionFlags(config, "Hil", NO_KEY), RangeError);
});

Deno.test("serverRunArgs() runs Hill with its flags and its name", async () => {
  const config = await loadDefault();
  assert.deepEqual(serverRunArgs(config, "Hill", NO_KEY), [
    "run",
    "--no-prompt",
    ...HILL_FLAGS,
    MAIN_MODULE,
    "run",
    "Hill",
    "--config",
    DEFAULT_PATH,
  ]);
});

Deno.test("serverRunArgs() passes an env file before the module", async () => {
  const config = await loadDefault();
  const args = serverRunArgs(config, "Hill", { envFile: "/tmp/x/.env", keyPresent: false });
  assert.ok(args.includes("--env-file=/tmp/x/.env"));
  assert.ok(args.indexOf("--env-file=/tmp/x/.env") < args.indexOf(MAIN_MODULE));
  for (const flag of HILL_FLAGS) assert.ok(args.includes(flag), flag);
});

Deno.test("serverCompileArgs() bakes Hill's flags into dist/Hill, allowing google-new since the key comes at run time", async () => {
  const config = await loadDefault();
  const args = serverCompileArgs(config, "Hill", "dist");
  assert.equal(args[0], "compile");
  for (const flag of HILL_FLAGS_KEYED) assert.ok(args.includes(flag), flag);
  const output = args.indexOf("--output");
  assert.ok(output > 0);
  assert.equal(args[output + 1], "dist/Hill");
  assert.deepEqual(args.slice(-5), [MAIN_MODULE, "run", "Hill", "--config", DEFAULT_PATH]);
});

Deno.test("serverRunArgs() and serverCompileArgs() throw a RangeError for an unknown server", async () => {
  const config = await loadDefault();
  assert.throws(() => serverRunArgs(config, "Nobody", NO_KEY), RangeError);
  assert.throws(() => serverCompileArgs(config, "Nobody", "dist"), RangeError);
});

Deno.test("envTextSetsKey() sees the key set in dotenv text, and only when it is non-empty", () => {
  assert.equal(envTextSetsKey("GOOGLE_PLACES_API_KEY=abc\n"), true);
  assert.equal(envTextSetsKey("# comment\nexport GOOGLE_PLACES_API_KEY = 'abc'\r\n"), true);
  assert.equal(envTextSetsKey('OTHER=1\nGOOGLE_PLACES_API_KEY="x y"'), true);
  assert.equal(envTextSetsKey("GOOGLE_PLACES_API_KEY=\n"), false);
  assert.equal(envTextSetsKey('GOOGLE_PLACES_API_KEY=""'), false);
  assert.equal(envTextSetsKey("# GOOGLE_PLACES_API_KEY=abc"), false);
  assert.equal(envTextSetsKey("GOOGLE_PLACES_API_KEY_OLD=abc"), false);
  assert.equal(envTextSetsKey(""), false);
});

Deno.test("serverPermissionFlags() reads exactly its own TLS files, and none with plain-text links", async () => {
  const config = await loadDefault();
  const read = (name: string) => serverPermissionFlags(config, name, NO_KEY)[1].split("=")[1].split(",");
  assert.deepEqual(read("Smith").slice(3), [
    `${DEFAULT_DIR}/certs/ca.crt`,
    `${DEFAULT_DIR}/certs/Smith.crt`,
    `${DEFAULT_DIR}/certs/Smith.key`,
  ]);
  assert.ok(
    !read("Smith").some((path) => path.includes("ca.key") || path.includes("Hill")),
    "no CA key, no one else's",
  );
  config.peers.tls = false;
  assert.deepEqual(read("Smith"), [DEFAULT_PATH, `${DEFAULT_DIR}/data`, `${DEFAULT_DIR}/logs`]);
});

Deno.test("certificateRunArgs() lets make-certs read the config and read and write certDir, nothing more", async () => {
  const config = await loadDefault();
  const args = certificateRunArgs(config, { names: ["Hill"], renew: true });
  assert.deepEqual(args.slice(0, 4), [
    "run",
    "--no-prompt",
    `--allow-read=${DEFAULT_PATH},${DEFAULT_DIR}/certs`,
    `--allow-write=${DEFAULT_DIR}/certs`,
  ]);
  assert.deepEqual(args.slice(4), [MAIN_MODULE, "make-certs", "Hill", "--renew", "--config", DEFAULT_PATH]);
});

Deno.test("statusRunArgs() reaches the admin ports, and the client port of a server without one, nothing more", () => {
  const config = parseConfig(
    JSON.stringify({
      servers: {
        A: { host: "127.0.0.1", port: 13000, peerPort: 13100, adminPort: 13200 },
        B: { host: "::1", port: 13001, peerPort: 13101 },
      },
      links: [["A", "B"]],
      places: { url: "http://127.0.0.1:8080/nearby" },
      logDir: "/tmp/x/logs",
    }),
    "/tmp/x/herd.config.json",
  );
  assert.deepEqual(clientAddressesWithoutAdmin(config), ["[::1]:13001"]);
  const args = statusRunArgs(config);
  assert.deepEqual(args.filter((arg) => arg.startsWith("--allow-")), [
    "--allow-read=/tmp/x/herd.config.json",
    "--allow-net=127.0.0.1:13200,[::1]:13001",
    "--allow-env=HERD_ADMIN_TOKEN",
  ]);
});

Deno.test("backupRunArgs() and restoreRunArgs() grant the admin ports, the backup and the directories named, nothing more", () => {
  const config = parseConfig(
    JSON.stringify({
      servers: {
        A: { host: "127.0.0.1", port: 13000, peerPort: 13100, adminPort: 13200 },
        B: { host: "127.0.0.1", port: 13001, peerPort: 13101, adminPort: 13201 },
      },
      links: [["A", "B"]],
      places: { url: "http://127.0.0.1:8080/nearby" },
      logDir: "/tmp/x/logs",
      dataDir: "/tmp/x/data",
    }),
    "/tmp/x/herd.config.json",
  );
  const flags = (args: string[]) => args.filter((arg) => arg.startsWith("--allow-"));
  assert.deepEqual(flags(backupRunArgs(config, ["A"])), [
    "--allow-read=/tmp/x/herd.config.json",
    "--allow-net=127.0.0.1:13200",
    "--allow-env=HERD_ADMIN_TOKEN",
  ]);
  // With --out: that directory (and its parent, where a directory made is synced).
  const out = backupRunArgs(config, ["A", "B"], "/srv/offsite/herd");
  assert.deepEqual(flags(out), [
    "--allow-read=/tmp/x/herd.config.json,/srv/offsite/herd,/srv/offsite",
    "--allow-write=/srv/offsite/herd",
    "--allow-net=127.0.0.1:13200,127.0.0.1:13201",
    "--allow-env=HERD_ADMIN_TOKEN",
  ]);
  assert.deepEqual(out.slice(out.indexOf("backup-run")), [
    "backup-run",
    "A",
    "B",
    "--out",
    "/srv/offsite/herd",
    "--config",
    "/tmp/x/herd.config.json",
  ]);
  assert.deepEqual(flags(restoreRunArgs(config, "A", "/srv/b/A-1.db")), [
    "--allow-read=/tmp/x/herd.config.json,/srv/b/A-1.db,/srv/b/A-1.db-wal,/tmp/x/data",
    "--allow-write=/tmp/x/data",
  ]);
});

Deno.test("adminAddresses() (deno task status's --allow-net) brackets an IPv6 host", () => {
  const config = parseConfig(
    JSON.stringify({
      servers: { A: { host: "::1", port: 13000, peerPort: 13100, adminPort: 13200 } },
      links: [],
      places: { url: "http://127.0.0.1:8080/nearby" },
      logDir: "/tmp/x/logs",
    }),
    "/tmp/x/herd.config.json",
  );
  assert.deepEqual(adminAddresses(config), ["[::1]:13200"]);
});

Deno.test("serverPermissionFlags() lets Hill read and write the real paths of its directories, when they differ", async () => {
  const flags = serverPermissionFlags(await loadDefault(), "Hill", {
    keyPresent: false,
    realDirectories: ["/tmp/real/data", `${DEFAULT_DIR}/logs`],
  });
  assert.ok(flags.includes(`--allow-write=${DEFAULT_DIR}/logs,${DEFAULT_DIR}/data,/tmp/real/data`), flags.join(" "));
  assert.ok(flags.some((flag) => flag.startsWith("--allow-read=") && flag.includes(`/logs,/tmp/real/data,`)));
});

Deno.test({
  name: "realDirectoriesInChild() makes dataDir and logDir as a server would and says where they lead, links followed",
  permissions: { read: ["/tmp"], write: ["/tmp"], run: ["deno"] },
}, async () => {
  const dir = Deno.realPathSync(await Deno.makeTempDir({ dir: "/tmp", prefix: "herd-real-dirs-" }));
  try {
    Deno.mkdirSync(`${dir}/disk`);
    // Deno.symlink() wants unscoped permissions, which the test runs without: a child makes the link.
    const link = `Deno.symlinkSync(${JSON.stringify(`${dir}/disk`)}, ${JSON.stringify(`${dir}/link`)});`;
    assert.ok((await new Deno.Command("deno", { args: ["eval", link] }).output()).success);
    const config = parseConfig(
      JSON.stringify({
        servers: { A: { host: "127.0.0.1", port: 1, peerPort: 2 } },
        links: [],
        places: { url: "http://127.0.0.1:9/unused" },
        dataDir: `${dir}/link/data`, // under a link, not made yet
        logDir: `${dir}/logs`, // no link
      }),
      `${dir}/herd.config.json`,
    );
    assert.deepEqual(await realDirectoriesInChild(config), [`${dir}/disk/data`, `${dir}/logs`]);
    // Made as the server makes them: 0700, with a .gitignore.
    assert.equal(Deno.statSync(`${dir}/disk/data`).mode! & 0o777, 0o700);
    assert.ok(Deno.statSync(`${dir}/disk/data/.gitignore`).isFile);
    // The flags name both the config's path and where it leads; the logs' own path once.
    const flags = serverPermissionFlags(config, "A", {
      keyPresent: false,
      realDirectories: await realDirectoriesInChild(config),
    });
    assert.ok(flags.includes(`--allow-write=${dir}/logs,${dir}/link/data,${dir}/disk/data`), flags.join(" "));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
