import assert from "node:assert/strict";
import { type HerdConfig, parseConfig } from "../lib/config.ts";
import { MAIN_MODULE, serverCompileArgs, serverRunArgs } from "../lib/launcher.ts";
import { serverNetAddresses, serverPermissionFlags, urlAddress } from "../lib/permissions.ts";

const DEFAULT_PATH = new URL("../herd.config.json", import.meta.url).pathname;
const DEFAULT_DIR = DEFAULT_PATH.slice(0, DEFAULT_PATH.lastIndexOf("/"));

const HILL_FLAGS = [
  "--allow-net=127.0.0.1:12000,127.0.0.1:12100,127.0.0.1:12101,127.0.0.1:12102,maps.googleapis.com:443",
  `--allow-read=${DEFAULT_PATH}`,
  `--allow-write=${DEFAULT_DIR}/logs`,
  "--allow-env=GOOGLE_PLACES_API_KEY",
];

async function loadDefault(): Promise<HerdConfig> {
  return parseConfig(await Deno.readTextFile(DEFAULT_PATH), DEFAULT_PATH);
}

function httpHerd(): HerdConfig {
  return parseConfig(
    JSON.stringify({
      servers: {
        A: { host: "127.0.0.1", port: 13000, peerPort: 13100 },
        B: { host: "localhost", port: 13001, peerPort: 13101 },
      },
      links: [["A", "B"]],
      places: { url: "http://127.0.0.1:8080/maps/api/place/nearbysearch/json" },
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

Deno.test("serverPermissionFlags() gives Hill exactly what it needs", async () => {
  assert.deepEqual(serverPermissionFlags(await loadDefault(), "Hill"), HILL_FLAGS);
});

Deno.test("serverNetAddresses() lists Hill's own ports, its neighbours' peer ports and Places", async () => {
  assert.deepEqual(serverNetAddresses(await loadDefault(), "Hill"), [
    "127.0.0.1:12000",
    "127.0.0.1:12100",
    "127.0.0.1:12101",
    "127.0.0.1:12102",
    "maps.googleapis.com:443",
  ]);
});

Deno.test("serverNetAddresses() gives Singleton its neighbours' peer ports and not Hill's", async () => {
  const addresses = serverNetAddresses(await loadDefault(), "Singleton");
  assert.deepEqual(addresses, [
    "127.0.0.1:12004",
    "127.0.0.1:12104",
    "127.0.0.1:12101",
    "127.0.0.1:12102",
    "127.0.0.1:12103",
    "maps.googleapis.com:443",
  ]);
  assert.ok(!addresses.includes("127.0.0.1:12100"));
  assert.ok(!addresses.includes("127.0.0.1:12000"));
});

Deno.test("serverNetAddresses() never includes a neighbour's client port", async () => {
  const config = await loadDefault();
  for (const name of config.servers.keys()) {
    const addresses = serverNetAddresses(config, name);
    for (const [other, server] of config.servers) {
      if (other !== name) assert.ok(!addresses.includes(`${server.host}:${server.port}`), `${name} → ${other}`);
    }
  }
});

Deno.test("serverNetAddresses() uses an http Places URL with its explicit port", () => {
  const config = httpHerd();
  assert.deepEqual(serverNetAddresses(config, "A"), [
    "127.0.0.1:13000",
    "127.0.0.1:13100",
    "localhost:13101",
    "127.0.0.1:8080",
  ]);
  assert.deepEqual(serverPermissionFlags(config, "B"), [
    "--allow-net=localhost:13001,localhost:13101,127.0.0.1:13100,127.0.0.1:8080",
    "--allow-read=/tmp/x/herd.config.json",
    "--allow-write=/tmp/x/logs",
    "--allow-env=GOOGLE_PLACES_API_KEY",
  ]);
});

Deno.test("serverPermissionFlags() throws a RangeError for an unknown server", async () => {
  const config = await loadDefault();
  assert.throws(() => serverPermissionFlags(config, "Hil"), RangeError);
});

Deno.test("serverRunArgs() runs Hill with its flags and its name", async () => {
  const config = await loadDefault();
  assert.deepEqual(serverRunArgs(config, "Hill"), [
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
  const args = serverRunArgs(config, "Hill", "/tmp/x/.env");
  assert.ok(args.includes("--env-file=/tmp/x/.env"));
  assert.ok(args.indexOf("--env-file=/tmp/x/.env") < args.indexOf(MAIN_MODULE));
  for (const flag of HILL_FLAGS) assert.ok(args.includes(flag), flag);
});

Deno.test("serverCompileArgs() bakes Hill's flags into dist/Hill", async () => {
  const config = await loadDefault();
  const args = serverCompileArgs(config, "Hill", "dist");
  assert.equal(args[0], "compile");
  for (const flag of HILL_FLAGS) assert.ok(args.includes(flag), flag);
  const output = args.indexOf("--output");
  assert.ok(output > 0);
  assert.equal(args[output + 1], "dist/Hill");
  assert.deepEqual(args.slice(-5), [MAIN_MODULE, "run", "Hill", "--config", DEFAULT_PATH]);
});

Deno.test("serverRunArgs() and serverCompileArgs() throw a RangeError for an unknown server", async () => {
  const config = await loadDefault();
  assert.throws(() => serverRunArgs(config, "Nobody"), RangeError);
  assert.throws(() => serverCompileArgs(config, "Nobody", "dist"), RangeError);
});
