import assert from "node:assert/strict";
import Ajv2020 from "ajv/dist/2020.js";
import {
  configWarnings,
  duplicateJsonKey,
  type HerdConfig,
  herdConfigJsonSchema,
  neighboursOf,
  parseConfig,
  resolvePath,
  serverNamed,
  taskCommand,
} from "../lib/config/config.ts";
import { nearestKey } from "../lib/config/schema.ts";
import { DEFAULT_CONFIG_DIR, DEFAULT_CONFIG_PATH, loadDefaultConfig } from "./testing/default_config.ts";

const FAKE_PATH = "/tmp/x/herd.config.json";
/** The project's own config: the user's to edit, so tests may check only that it is valid, not what it says. */
const ROOT_CONFIG_PATH = new URL("../herd.config.json", import.meta.url).pathname;

// deno-lint-ignore no-explicit-any
type Raw = Record<string, any>;

/** A small valid herd: A — B — C, each with its own client and peer port. */
function sample(): Raw {
  return {
    servers: {
      A: { host: "127.0.0.1", port: 13000, peerPort: 13100 },
      B: { host: "127.0.0.1", port: 13001, peerPort: 13101 },
      C: { host: "127.0.0.1", port: 13002, peerPort: 13102 },
    },
    links: [["A", "B"], ["B", "C"]],
    places: { url: "https://maps.googleapis.com/maps/api/place/nearbysearch/json" },
    logDir: "logs",
  };
}

function parse(raw: Raw): HerdConfig {
  return parseConfig(JSON.stringify(raw), FAKE_PATH);
}

function assertRefused(raw: Raw | string, pattern: RegExp): void {
  const text = typeof raw === "string" ? raw : JSON.stringify(raw);
  assert.throws(() => parseConfig(text, FAKE_PATH), (error: unknown) => {
    assert.ok(error instanceof SyntaxError, `expected a SyntaxError, got ${error}`);
    assert.match(error.message, pattern);
    assert.ok(error.message.includes(FAKE_PATH), `message should name the file: ${error.message}`);
    return true;
  });
}

Deno.test("parseConfig() reads the default herd file (the shipped herd.config.json, copied in tests/testing/default)", async () => {
  const config = await loadDefaultConfig();
  assert.deepEqual([...config.servers.keys()], ["Hill", "Jaquez", "Smith", "Campbell", "Singleton"]);
  assert.equal(config.links.length, 6);
  assert.deepEqual(config.servers.get("Hill"), {
    host: "127.0.0.1",
    port: 12000,
    peerPort: 12100,
    peerDialHost: "127.0.0.1",
    peerDialPort: 12100,
    adminPort: 12200,
  });
  assert.equal(config.logDir, `${DEFAULT_CONFIG_DIR}/logs`);
  assert.equal(config.dataDir, `${DEFAULT_CONFIG_DIR}/data`);
  assert.ok(config.logDir.startsWith("/"));
  assert.equal(config.path, DEFAULT_CONFIG_PATH);
  assert.deepEqual(configWarnings(config), []);
});

Deno.test("the project's herd.config.json, whatever the user has made of it, is a config parseConfig() and its JSON Schema accept", async () => {
  const text = await Deno.readTextFile(ROOT_CONFIG_PATH);
  const config = parseConfig(text, ROOT_CONFIG_PATH);
  assert.ok(config.servers.size > 0);
  // deno-lint-ignore no-explicit-any
  const validate = new (Ajv2020 as any)({ allErrors: true, strict: true }).compile(herdConfigJsonSchema());
  assert.equal(validate(JSON.parse(text)), true, JSON.stringify(validate.errors));
});

Deno.test("parseConfig() fills in defaults for optional settings", () => {
  const config = parse(sample());
  assert.equal(config.maxLineBytes, 8192);
  assert.equal(config.places.timeoutMs, 5000);
  assert.equal(config.places.url, "https://maps.googleapis.com/maps/api/place/nearbysearch/json");
  assert.ok(config.shutdownGraceMs > 0);
  assert.ok(config.peers.reconnectMinMs > 0);
  assert.ok(config.peers.reconnectMaxMs >= config.peers.reconnectMinMs);
  assert.ok(config.peers.ackTimeoutMs > 0);
  assert.equal(config.peers.ackScope, "neighbours");
});

Deno.test("parseConfig() takes peers.ackScope neighbours or herd and refuses anything else", () => {
  assert.equal(parse({ ...sample(), peers: { ackScope: "herd" } }).peers.ackScope, "herd");
  assert.equal(parse({ ...sample(), peers: { ackScope: "neighbours" } }).peers.ackScope, "neighbours");
  for (const bad of ["all", "Herd", "", 1, null]) {
    assert.throws(
      () => parse({ ...sample(), peers: { ackScope: bad } }),
      /peers\.ackScope must be one of neighbours, herd, got /,
      JSON.stringify(bad),
    );
  }
});

Deno.test("parseConfig() takes peers.broadcast tree (the default) or flood (the default with ackScope herd), and refuses tree with ackScope herd", () => {
  assert.equal(parse(sample()).peers.broadcast, "tree");
  assert.equal(parse({ ...sample(), peers: { broadcast: "flood" } }).peers.broadcast, "flood");
  assert.equal(parse({ ...sample(), peers: { ackScope: "herd" } }).peers.broadcast, "flood");
  assert.equal(parse({ ...sample(), peers: { broadcast: "tree" } }).peers.broadcast, "tree");
  assert.equal(parse({ ...sample(), peers: { broadcast: "flood", ackScope: "herd" } }).peers.broadcast, "flood");
  assert.throws(
    () => parse({ ...sample(), peers: { broadcast: "tree", ackScope: "herd" } }),
    /peers\.broadcast "tree" cannot be combined with peers\.ackScope "herd"/,
  );
  assert.throws(() => parse({ ...sample(), peers: { broadcast: "gossip" } }), /peers\.broadcast must be one of/);
});

Deno.test("parseConfig() takes peers.heartbeatMs and heartbeatTimeoutMs (1 s and 5 s by default), the timeout at least twice the heartbeat", () => {
  const defaults = parse(sample()).peers;
  assert.equal(defaults.heartbeatMs, 1000);
  assert.equal(defaults.heartbeatTimeoutMs, 5000);
  const set = parse({ ...sample(), peers: { heartbeatMs: 200, heartbeatTimeoutMs: 400 } }).peers;
  assert.deepEqual([set.heartbeatMs, set.heartbeatTimeoutMs], [200, 400]);
  assert.throws(
    () => parse({ ...sample(), peers: { heartbeatMs: 200, heartbeatTimeoutMs: 399 } }),
    /peers\.heartbeatTimeoutMs must be at least twice peers\.heartbeatMs/,
  );
  assert.throws(
    () => parse({ ...sample(), peers: { heartbeatMs: 3000 } }),
    /peers\.heartbeatTimeoutMs must be at least twice peers\.heartbeatMs/,
  );
  assert.throws(
    () => parse({ ...sample(), peers: { heartbeatMs: 0 } }),
    /peers\.heartbeatMs must be a positive integer/,
  );
});

Deno.test("parseConfig() resolves logDir against the config's folder", () => {
  assert.equal(parse(sample()).logDir, "/tmp/x/logs");
  assert.equal(parse({ ...sample(), logDir: "./a/b" }).logDir, "/tmp/x/a/b");
  assert.equal(parse({ ...sample(), logDir: "../logs" }).logDir, "/tmp/logs");
  assert.equal(parse({ ...sample(), logDir: "/var/log/herd" }).logDir, "/var/log/herd");
});

Deno.test("parseConfig() resolves logDir for a config at the filesystem root", () => {
  assert.equal(parseConfig(JSON.stringify(sample()), "/herd.config.json").logDir, "/logs");
});

Deno.test("resolvePath() joins relative paths with single slashes", () => {
  assert.equal(resolvePath("/tmp/x", "logs"), "/tmp/x/logs");
  assert.equal(resolvePath("/tmp/x", "a//b/./c/"), "/tmp/x/a/b/c");
  assert.equal(resolvePath("/tmp/x", "../../../a"), "/a");
  assert.equal(resolvePath("/tmp/x", "/abs"), "/abs");
  assert.equal(resolvePath("/", "logs"), "/logs");
});

Deno.test("parseConfig() keeps links as given", () => {
  assert.deepEqual(parse(sample()).links, [["A", "B"], ["B", "C"]]);
});

Deno.test("parseConfig() allows the same port on different hosts", () => {
  const raw = sample();
  raw.servers.B.host = "127.0.0.2";
  raw.servers.B.port = 13000;
  assert.equal(parse(raw).servers.get("B")?.port, 13000);
});

Deno.test("parseConfig() refuses text that is not JSON", () => {
  assertRefused("{ servers: ", /not JSON/);
  assertRefused("", /not JSON/);
});

Deno.test("parseConfig() refuses a top level that is not an object", () => {
  assertRefused("[]", /top level must be an object/);
  assertRefused("null", /top level must be an object/);
});

Deno.test("parseConfig() refuses a link to an unknown server and lists the valid names", () => {
  const raw = sample();
  raw.links.push(["A", "Hil"]);
  assertRefused(raw, /links\[2\] names unknown server "Hil": expected one of A, B, C/);
});

Deno.test("parseConfig() refuses two servers on the same address", () => {
  const raw = sample();
  raw.servers.B.port = 13000;
  assertRefused(raw, /duplicate address 127\.0\.0\.1:13000/);
});

Deno.test(
  "parseConfig() refuses a port taken on every address (0.0.0.0, ::) and also on loopback or another wildcard, " +
    "and takes the same port on another host",
  () => {
    for (const [wildcard, other] of [["0.0.0.0", "127.0.0.1"], ["::", "::1"], ["0.0.0.0", "::"], ["::", "127.0.0.9"]]) {
      const raw = sample();
      raw.servers.A.host = wildcard;
      raw.servers.B.host = other;
      raw.servers.B.port = 13000;
      assertRefused(
        raw,
        /duplicate address: servers\.A\.port listens on .*:13000, every address of its machine, and servers\.B\.port on /,
      );
    }
    // Another host; IPv6 loopback beside IPv4's wildcard (0.0.0.0 takes IPv4 addresses only).
    for (const [wildcard, other] of [["0.0.0.0", "10.0.0.2"], ["0.0.0.0", "::1"], ["::", "10.0.0.2"]]) {
      const raw = sample();
      raw.servers.A.host = wildcard;
      raw.servers.B.host = other;
      raw.servers.B.port = 13000;
      assert.doesNotThrow(() => parseConfig(JSON.stringify(raw), FAKE_PATH), `${wildcard} and ${other}`);
    }
  },
);

Deno.test("parseConfig() refuses a client port equal to another server's peer port", () => {
  const raw = sample();
  raw.servers.C.port = 13100;
  assertRefused(raw, /duplicate address 127\.0\.0\.1:13100/);
});

Deno.test("parseConfig() refuses a peer port equal to another server's client port", () => {
  const raw = sample();
  raw.servers.C.peerPort = 13001;
  assertRefused(raw, /duplicate address 127\.0\.0\.1:13001/);
});

Deno.test("parseConfig() refuses a server whose client and peer ports are equal", () => {
  const raw = sample();
  raw.servers.A.peerPort = 13000;
  assertRefused(raw, /duplicate address 127\.0\.0\.1:13000/);
});

Deno.test("parseConfig() refuses a server linked to itself", () => {
  const raw = sample();
  raw.links.push(["B", "B"]);
  assertRefused(raw, /links\[2\] links "B" to itself/);
});

Deno.test("parseConfig() refuses a repeated link, in either direction", () => {
  const same = sample();
  same.links.push(["A", "B"]);
  assertRefused(same, /links\[2\] repeats the link A-B/);
  const reversed = sample();
  reversed.links.push(["B", "A"]);
  assertRefused(reversed, /links\[2\] repeats the link B-A/);
});

Deno.test("parseConfig() takes retiredServers (none by default): names of servers taken out, each once, in no link and not a server", () => {
  assert.deepEqual(parse(sample()).retiredServers, []);
  const retired = sample();
  retired.retiredServers = ["Gone", "Hill.old"];
  assert.deepEqual(parse(retired).retiredServers, ["Gone", "Hill.old"]);
  const still = sample();
  still.retiredServers = ["Gone", "B"];
  assertRefused(still, /retiredServers\[1\] is "B", a server in servers/);
  const twice = sample();
  twice.retiredServers = ["Gone", "Gone"];
  assertRefused(twice, /retiredServers\[1\] repeats "Gone"/);
  const linked = sample();
  linked.retiredServers = ["Gone"];
  linked.links.push(["A", "Gone"]);
  assertRefused(linked, /links\[2\] names "Gone", a retired server/);
  const badName = sample();
  badName.retiredServers = ["-x"];
  assertRefused(badName, /retiredServers\[0\] must be a server name/);
  const notArray = sample();
  notArray.retiredServers = "Gone";
  assertRefused(notArray, /retiredServers must be an array of server names/);
});

Deno.test("parseConfig() refuses a link that is not a pair of names", () => {
  for (const link of [["A"], ["A", "B", "C"], ["A", 1], "A-B", null]) {
    const raw = sample();
    raw.links = [link];
    assertRefused(raw, /links\[0\] must be a pair of server names/);
  }
});

Deno.test("parseConfig() refuses a config without servers", () => {
  const raw = sample();
  delete raw.servers;
  assertRefused(raw, /missing field servers/);
});

Deno.test("parseConfig() refuses an empty set of servers", () => {
  assertRefused({ ...sample(), servers: {}, links: [] }, /at least one server/);
});

Deno.test("parseConfig() refuses a config without links", () => {
  const raw = sample();
  delete raw.links;
  assertRefused(raw, /missing field links/);
});

Deno.test("parseConfig() refuses links that are not an array", () => {
  assertRefused({ ...sample(), links: { A: "B" } }, /links must be an array/);
});

Deno.test("parseConfig() refuses a config without places", () => {
  const raw = sample();
  delete raw.places;
  assertRefused(raw, /missing field places/);
});

Deno.test("parseConfig() refuses places without a url", () => {
  assertRefused({ ...sample(), places: {} }, /missing field places\.url/);
});

Deno.test("parseConfig() refuses a places url that is not http or https", () => {
  assertRefused({ ...sample(), places: { url: "not a url" } }, /places\.url is not a URL/);
  assertRefused({ ...sample(), places: { url: "ftp://example.com/x" } }, /places\.url must be http or https/);
});

Deno.test("parseConfig() refuses a config without logDir", () => {
  const raw = sample();
  delete raw.logDir;
  assertRefused(raw, /missing field logDir/);
});

Deno.test("parseConfig() refuses a server without host, port or peerPort", () => {
  for (const field of ["host", "port", "peerPort"]) {
    const raw = sample();
    delete raw.servers.B[field];
    assertRefused(raw, new RegExp(`missing field servers\\.B\\.${field}`));
  }
});

Deno.test("parseConfig() refuses a bad port", () => {
  for (const port of [0, -1, 65536, 1.5, "12000", null]) {
    const raw = sample();
    raw.servers.B.port = port;
    assertRefused(raw, /servers\.B\.port must be an integer port from 1 to 65535/);
  }
  const raw = sample();
  raw.servers.A.peerPort = 70000;
  assertRefused(raw, /servers\.A\.peerPort must be an integer port from 1 to 65535, got 70000/);
});

Deno.test("parseConfig() refuses an empty host", () => {
  const raw = sample();
  raw.servers.A.host = "";
  assertRefused(raw, /servers\.A\.host must be a non-empty string/);
});

Deno.test("parseConfig() refuses a server name with spaces", () => {
  const raw = sample();
  raw.servers["Hill Top"] = { host: "127.0.0.1", port: 13005, peerPort: 13105 };
  assertRefused(raw, /server name "Hill Top"/);
});

Deno.test("parseConfig() refuses a server name starting with '-' (an option to the tasks) or over 64 characters", () => {
  const expected = 'letters, digits, "_", "." or "-", not starting with "-", at most 64 characters';
  for (const name of ["-rf", "-", "x".repeat(65)]) {
    const raw = sample();
    raw.servers[name] = { host: "127.0.0.1", port: 13005, peerPort: 13105 };
    assertRefused(raw, new RegExp(`server name "${name}" must be ${expected.replaceAll(".", "\\.")}`));
  }
  for (const name of ["a-", "_x", ".y", "9", "x".repeat(64)]) {
    const raw = sample();
    raw.servers[name] = { host: "127.0.0.1", port: 13005, peerPort: 13105 };
    assert.ok(parse(raw).servers.has(name), name);
  }
});

Deno.test("parseConfig() refuses a NUL character in a directory: no path can hold one", () => {
  for (const key of ["logDir", "dataDir", "certDir"]) {
    assertRefused(
      { ...sample(), [key]: "lo\u0000gs" },
      new RegExp(`${key} holds a NUL character \\(".*"\\): no path can`),
    );
  }
});

Deno.test("parseConfig() refuses a dataDir or logDir that shares certDir or holds the config file", () => {
  // certDir is "certs" by default; the config is /tmp/x/herd.config.json.
  const overlaps: [Record<string, string>, RegExp][] = [
    [{ dataDir: "certs" }, /dataDir \(\/tmp\/x\/certs\) and certDir \(\/tmp\/x\/certs\) overlap/],
    [{ logDir: "certs/logs" }, /logDir \(\/tmp\/x\/certs\/logs\) and certDir \(\/tmp\/x\/certs\) overlap/],
    [{ certDir: "data/certs" }, /dataDir \(\/tmp\/x\/data\) and certDir \(\/tmp\/x\/data\/certs\) overlap/],
    [{ dataDir: "/" }, /dataDir \(\/\) and certDir \(\/tmp\/x\/certs\) overlap/],
    [{ logDir: "/tmp/./x/../x/certs/" }, /logDir .* and certDir \(\/tmp\/x\/certs\) overlap/],
    [
      { dataDir: ".", certDir: "/etc/herd-certs" },
      /dataDir \(\/tmp\/x\) holds the config file \(\/tmp\/x\/herd\.config\.json\)/,
    ],
    [{ logDir: "/tmp", certDir: "/etc/herd-certs" }, /logDir \(\/tmp\) holds the config file/],
  ];
  for (const [dirs, pattern] of overlaps) assertRefused({ ...sample(), ...dirs }, pattern);
  // Apart, or the data and logs together, or a name that only starts like another: taken.
  for (const dirs of [{}, { dataDir: "state", logDir: "state" }, { dataDir: "certs-data" }, { dataDir: "/var/herd" }]) {
    const config = parse({ ...sample(), ...dirs });
    assert.ok(config.dataDir.startsWith("/"), JSON.stringify(dirs));
  }
});

Deno.test("parseConfig() reads a config nested 100,000 deep in linear time, and refuses it by what it is", () => {
  const depth = 100_000;
  const text = `{"servers": ${"[".repeat(depth)}${"]".repeat(depth)}}`;
  assert.throws(() => parseConfig(text, "/tmp/x/herd.config.json"), /servers must be an object/);
  const duplicate = `{"a": ${'{"b": '.repeat(depth)}{"x": 1, "x": 2}${"}".repeat(depth)}}`;
  const path = duplicateJsonKey(duplicate);
  assert.equal(path, ["a", ..."b".repeat(depth), "x"].join("."));
});

Deno.test("parseConfig() refuses a non-positive maxLineBytes", () => {
  assertRefused({ ...sample(), maxLineBytes: 0 }, /maxLineBytes must be an integer of at least 256/);
});

Deno.test("configWarnings() is empty for a connected herd", () => {
  assert.deepEqual(configWarnings(parse(sample())), []);
});

Deno.test("configWarnings() is empty for a single server", () => {
  const raw = sample();
  delete raw.servers.B;
  delete raw.servers.C;
  raw.links = [];
  assert.deepEqual(configWarnings(parse(raw)), []);
});

Deno.test("configWarnings() names the servers a disconnected herd cannot reach", () => {
  const raw = sample();
  raw.servers.D = { host: "127.0.0.1", port: 13003, peerPort: 13103 };
  raw.servers.E = { host: "127.0.0.1", port: 13004, peerPort: 13104 };
  raw.links = [["A", "B"], ["D", "E"]];
  const warnings = configWarnings(parse(raw));
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /not connected/);
  assert.match(warnings[0], /C, D, E cannot be reached from A/);
  assert.doesNotMatch(warnings[0], /\bB\b/);
});

Deno.test("neighboursOf() lists the neighbours of a server in link order", async () => {
  const config = await loadDefaultConfig();
  assert.deepEqual(neighboursOf(config, "Hill"), ["Jaquez", "Smith"]);
  assert.deepEqual(neighboursOf(config, "Smith"), ["Hill", "Campbell", "Singleton"]);
  assert.deepEqual(neighboursOf(config, "Singleton"), ["Jaquez", "Smith", "Campbell"]);
  assert.deepEqual(neighboursOf(config, "Campbell"), ["Smith", "Singleton"]);
  assert.deepEqual(neighboursOf(config, "Nobody"), []);
});

Deno.test("serverNamed() returns the named server", async () => {
  const config = await loadDefaultConfig();
  assert.deepEqual(serverNamed(config, "Singleton"), {
    host: "127.0.0.1",
    port: 12004,
    peerPort: 12104,
    peerDialHost: "127.0.0.1",
    peerDialPort: 12104,
    adminPort: 12204,
  });
});

Deno.test("serverNamed() throws a RangeError listing the valid names", async () => {
  const config = await loadDefaultConfig();
  assert.throws(() => serverNamed(config, "Hil"), (error: unknown) => {
    assert.ok(error instanceof RangeError);
    assert.equal(error.message, 'Unknown server "Hil": expected one of Hill, Jaquez, Smith, Campbell, Singleton');
    return true;
  });
  assert.throws(() => serverNamed(config, "hill"), RangeError);
});

Deno.test("parseConfig() lets peers dial a server through peerAddress, and refuses a malformed one", () => {
  const text = (peerAddress: unknown) =>
    JSON.stringify({
      servers: {
        A: { host: "127.0.0.1", port: 1, peerPort: 2, peerAddress },
        B: { host: "127.0.0.1", port: 3, peerPort: 4 },
      },
      links: [["A", "B"]],
      places: { url: "https://x.example/" },
      logDir: "logs",
    });
  const config = parseConfig(text("127.0.0.2:9002"), "/tmp/c.json");
  assert.equal(config.servers.get("A")!.peerDialHost, "127.0.0.2");
  assert.equal(config.servers.get("A")!.peerDialPort, 9002);
  assert.equal(config.servers.get("A")!.peerPort, 2);
  assert.throws(() => parseConfig(text("nowhere"), "/tmp/c.json"), /servers\.A\.peerAddress must be "host:port"/);
  assert.throws(() => parseConfig(text("h:70000"), "/tmp/c.json"), /servers\.A\.peerAddress must be an integer port/);
});

Deno.test("parseConfig() refuses an unknown key, naming its path and the nearest known key", () => {
  assertRefused({ ...sample(), logdir: "x" }, /Unknown key logdir: did you mean logDir\?/);
  assertRefused(
    { ...sample(), places: { ...sample().places, provder: "offline" } },
    /Unknown key places\.provder: did you mean places\.provider\?/,
  );
  assertRefused(
    { ...sample(), peers: { ackTimeout: 5 } },
    /Unknown key peers\.ackTimeout: did you mean peers\.ackTimeoutMs\?/,
  );
  const raw = sample();
  raw.servers.A.peerprot = 1;
  assertRefused(raw, /Unknown key servers\.A\.peerprot: did you mean servers\.A\.peerPort\?/);
  assertRefused(
    { ...sample(), zzzzzzzz: 1 },
    /Unknown key zzzzzzzz: expected one of servers, retiredServers, links, places, logDir/,
  );
});

Deno.test("parseConfig() names the path and the value of a wrong type or range", () => {
  assertRefused(
    { ...sample(), places: { ...sample().places, timeoutMs: "5000" } },
    /places\.timeoutMs must be a positive integer, got "5000"/,
  );
  assertRefused(
    { ...sample(), peers: { reconnectMinMs: 1.5 } },
    /peers\.reconnectMinMs must be a positive integer, got 1\.5/,
  );
  assertRefused(
    { ...sample(), places: { ...sample().places, provider: "google" } },
    /places\.provider must be one of auto, google-legacy, google-new, offline, got "google"/,
  );
  assertRefused({ ...sample(), logDir: null }, /logDir must be a non-empty string, got null/);
  assertRefused({ ...sample(), peers: [] }, /peers must be an object/);
});

Deno.test("parseConfig() accepts the $schema key editors use", () => {
  assert.equal(parse({ ...sample(), $schema: "./herd.config.schema.json" }).maxLineBytes, 8192);
});

Deno.test("nearestKey() suggests only a key near enough to be meant", () => {
  assert.equal(nearestKey("provder", ["provider", "url"]), "provider");
  assert.equal(nearestKey("URL", ["provider", "url"]), "url");
  assert.equal(nearestKey("something", ["provider", "url"]), undefined);
});

Deno.test("herd.config.schema.json is the schema the config is checked with (deno task schema remakes it)", async () => {
  const shipped = JSON.parse(await Deno.readTextFile(new URL("../herd.config.schema.json", import.meta.url)));
  assert.deepEqual(shipped, herdConfigJsonSchema());
});

Deno.test("herd.config.schema.json accepts the default config and refuses a typo, in a real JSON Schema validator", async () => {
  // deno-lint-ignore no-explicit-any
  const ajv = new (Ajv2020 as any)({ allErrors: true, strict: true });
  const validate = ajv.compile(herdConfigJsonSchema());
  const config = JSON.parse(await Deno.readTextFile(DEFAULT_CONFIG_PATH));
  assert.equal(validate(config), true, JSON.stringify(validate.errors));
  assert.equal(config.$schema, "./herd.config.schema.json");
  config.places.provder = "offline";
  assert.equal(validate(config), false);
  assert.equal(validate.errors[0].params.additionalProperty, "provder");
});

Deno.test("parseConfig() refuses a server named like the CA, in any case: its files would be the CA's", () => {
  for (const name of ["ca", "CA", "Ca"]) {
    const raw = sample();
    raw.servers[name] = { host: "127.0.0.1", port: 13005, peerPort: 13105 };
    assertRefused(
      raw,
      new RegExp(`server name "${name}" is taken by the herd's CA, whose files in certDir are ca\\.crt and ca\\.key`),
    );
  }
  const raw = sample();
  raw.servers.cab = { host: "127.0.0.1", port: 13005, peerPort: 13105 };
  assert.ok(parse(raw).servers.has("cab"));
});

Deno.test("parseConfig() refuses two server names that differ only in case: their files would clash", () => {
  const raw = sample();
  raw.servers.a = { host: "127.0.0.1", port: 13005, peerPort: 13105 };
  assertRefused(raw, /server names "A" and "a" differ only in case/);
});

Deno.test("parseConfig() refuses a host that is a name, localhost with the address to use instead", () => {
  for (const host of ["localhost", "LOCALHOST", "db.localhost"]) {
    const raw = sample();
    raw.servers.A.host = host;
    assertRefused(raw, /servers\.A\.host must be an IP address, got .*: use 127\.0\.0\.1 \(or ::1\)/);
  }
  for (const host of ["hill.example.com", "127.1", "256.0.0.1", "[127.0.0.1]", "::1:"]) {
    const raw = sample();
    raw.servers.A.host = host;
    assertRefused(raw, /servers\.A\.host must be the IP address the server listens on .* goes in peerAddress/);
  }
});

Deno.test("parseConfig() takes an IPv6 host with or without brackets, in canonical form, and a bracketed IPv6 peerAddress", () => {
  const raw = sample();
  raw.servers.A.host = "::1";
  raw.servers.B.host = "[0:0::1]";
  raw.servers.C.peerAddress = "[::1]:13200";
  const config = parse(raw);
  assert.equal(config.servers.get("A")!.host, "::1");
  assert.equal(config.servers.get("B")!.host, "::1");
  assert.equal(config.servers.get("B")!.peerDialHost, "::1");
  assert.equal(config.servers.get("C")!.peerDialHost, "::1");
  assert.equal(config.servers.get("C")!.peerDialPort, 13200);
  raw.servers.B.port = 13000;
  assertRefused(raw, /duplicate address \[::1\]:13000: used by servers\.A\.port and servers\.B\.port/);
  raw.servers.B.port = 13001;
  raw.servers.C.peerAddress = "::1:13200";
  assertRefused(raw, /servers\.C\.peerAddress must be "host:port", an IPv6 host in brackets/);
});

Deno.test("parseConfig() lets neighbours dial a server by name through peerAddress", () => {
  const raw = sample();
  raw.servers.A.peerAddress = "hill.example.com:13100";
  assert.equal(parse(raw).servers.get("A")!.peerDialHost, "hill.example.com");
});

Deno.test("parseConfig() refuses a millisecond setting longer than a timer can wait (2147483647), naming it", () => {
  const settings: [string, string][] = [
    ["places", "timeoutMs"],
    ["places", "cacheTtlMs"],
    ["places", "errorTtlMs"],
    ["limits", "idleTimeoutMs"],
    ["limits", "sendTimeoutMs"],
    ["peers", "reconnectMinMs"],
    ["peers", "reconnectMaxMs"],
    ["peers", "ackTimeoutMs"],
    ["peers", "reconcileIntervalMs"],
    ["peers", "heartbeatMs"],
    ["peers", "heartbeatTimeoutMs"],
  ];
  for (const [section, key] of settings) {
    const raw = sample();
    raw[section] = { ...raw[section], [key]: 3_000_000_000 };
    assertRefused(
      raw,
      new RegExp(`${section}\\.${key} must be at most 2147483647 milliseconds \\(about 24\\.8 days.*got 3000000000`),
    );
  }
  assertRefused({ ...sample(), shutdownGraceMs: 2 ** 31 }, /shutdownGraceMs must be at most 2147483647 milliseconds/);
  // Too large to count exactly is too large for a timer, said so too.
  assertRefused({ ...sample(), shutdownGraceMs: 1e20 }, /shutdownGraceMs must be at most 2147483647 milliseconds/);
  const raw = sample();
  raw.places.timeoutMs = 2_147_483_647;
  assert.equal(parse(raw).places.timeoutMs, 2_147_483_647);
});

Deno.test("parseConfig() refuses a comma in a directory, the config's path, a peerAddress or a Places host: the permission flags' lists are comma-separated", () => {
  const comma = "which Deno's permission flags cannot name \\(their lists are comma-separated\\): choose one without";
  for (const key of ["logDir", "dataDir", "certDir"]) {
    assertRefused(
      { ...sample(), [key]: "/tmp/x/logs,y" },
      new RegExp(`${key} holds a comma \\("/tmp/x/logs,y"\\), ${comma}`),
    );
  }
  assertRefused({ ...sample(), dataDir: "a,b/data" }, /dataDir holds a comma \("\/tmp\/x\/a,b\/data"\)/);
  const raw = sample();
  raw.servers.A.peerAddress = "a,b.example:13100";
  assertRefused(raw, /servers\.A\.peerAddress holds a comma/);
  assertRefused({ ...sample(), places: { url: "http://a,b/nearby" } }, /places\.url's host holds a comma/);
  assert.throws(
    () => parseConfig(JSON.stringify(sample()), "/tmp/x,y/herd.config.json"),
    /the path of the config file holds a comma/,
  );
});

Deno.test("parseConfig() refuses a dashboard port that a server on 127.0.0.1 (or a wildcard) listens on too", () => {
  for (const field of ["port", "peerPort", "adminPort"]) {
    const raw = sample();
    raw.servers.B.adminPort = 13201;
    raw.servers.B[field] = 12300;
    assertRefused(
      raw,
      new RegExp(`duplicate address 127\\.0\\.0\\.1:12300: used by dashboard\\.port .* and servers\\.B\\.${field}`),
    );
  }
  const wildcard = sample();
  wildcard.servers.A = { host: "0.0.0.0", port: 13000, peerPort: 13100, adminPort: 14000 };
  wildcard.dashboard = { port: 13100 };
  assertRefused(wildcard, /used by dashboard\.port .* and servers\.A\.peerPort \(on 0\.0\.0\.0\)/);
  const elsewhere = sample();
  elsewhere.servers.A = { host: "127.0.0.2", port: 12300, peerPort: 13100, adminPort: 14000 };
  assert.equal(parse(elsewhere).servers.get("A")!.port, 12300, "another address: no clash");
  const noDashboard = sample();
  noDashboard.servers.A.port = 12300;
  assert.equal(parse(noDashboard).servers.get("A")!.port, 12300, "no admin port, no dashboard: no clash");
});

Deno.test("parseConfig() refuses a key given twice in one object, naming its path, wherever it is", () => {
  const text = JSON.stringify(sample(), null, 2);
  assert.doesNotThrow(() => parseConfig(text, "/tmp/herd.config.json"));
  // JSON.parse would keep the second value of each silently.
  assertRefused(text.replace('"logDir":', '"logDir": "elsewhere", "logDir":'), /logDir is given twice: keep one/);
  assertRefused(
    text.replace(/"peerPort": (\d+)/, '"peerPort": $1, "peerPort": 9'),
    /servers\.A\.peerPort is given twice: keep one/,
  );
  assertRefused(text.replace('"servers": {', '"servers": { "B": {}, '), /servers\.B is given twice/);
  // Equal keys in different objects, equal strings as values, escapes and brackets inside strings are fine.
  assert.equal(duplicateJsonKey('{"a": {"x": 1}, "b": {"x": "a"}, "c": ["a", "a"], "d": "\\"}"}'), undefined);
  assert.equal(duplicateJsonKey('{"a": [{"x": 1, "y": 2}, {"x": 1, "x": 2}]}'), "a.1.x");
  assert.equal(duplicateJsonKey('{"a\\u0062": 1, "ab": 2}'), "ab", "keys compared as JSON reads them");
});

Deno.test("taskCommand() names the config with --config unless it is the one the tasks read, quoted for a shell", () => {
  const at = (path: string) => parseConfig(JSON.stringify(sample()), path);
  assert.equal(
    taskCommand(at(decodeURIComponent(ROOT_CONFIG_PATH)), "certs", "A --renew"),
    "deno task certs A --renew",
  );
  assert.equal(taskCommand(at(ROOT_CONFIG_PATH), "certs"), "deno task certs");
  assert.equal(
    taskCommand(at("/tmp/walk/herd.config.json"), "certs", "A --renew"),
    "deno task certs A --renew --config /tmp/walk/herd.config.json",
  );
  assert.equal(
    taskCommand(at("/tmp/my herd's/h.json"), "certs"),
    `deno task certs --config '/tmp/my herd'\\''s/h.json'`,
  );
});

Deno.test("parseConfig() takes limits.maxReplyBytes from 16 MiB up, 256 MiB when left out", () => {
  assert.equal(parse(sample()).limits.maxReplyBytes, 256 * 1024 * 1024);
  const raw = sample();
  raw.limits = { ...raw.limits, maxReplyBytes: 16 * 1024 * 1024 };
  assert.equal(parse(raw).limits.maxReplyBytes, 16 * 1024 * 1024);
  raw.limits.maxReplyBytes = 16 * 1024 * 1024 - 1;
  assertRefused(raw, /limits\.maxReplyBytes must be an integer of at least 16777216 \(16 MiB\), got 16777215/);
  raw.limits.maxReplyBytes = 1.5e9 + 0.5;
  assertRefused(raw, /limits\.maxReplyBytes must be an integer of at least 16777216/);
});

Deno.test("parseConfig() refuses a maxLineBytes too short for a command (below 256), naming it", () => {
  assert.throws(
    () => parse({ ...sample(), maxLineBytes: 1 }),
    /maxLineBytes must be an integer of at least 256, got 1/,
  );
  assert.throws(() => parse({ ...sample(), maxLineBytes: 255 }), /maxLineBytes must be an integer of at least 256/);
  assert.equal(parse({ ...sample(), maxLineBytes: 256 }).maxLineBytes, 256);
});
