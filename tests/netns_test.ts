/**
 * A multi-host herd: each server runs in its own network namespace with its
 * own address on a private subnet that exists only inside namespaces this
 * test creates (a bridge in one more namespace joins them; nothing is
 * routed out), clients run from a client namespace, and nftables cuts the
 * B–C link. Needs root, `ip` (iproute2) and `nft` (nftables), and
 * `--allow-run=deno,ip`: `nft` and the servers run through `ip netns exec`.
 * Without them the test is ignored and says why.
 *
 * Steps named "[catch-up]" check that records that missed a server during
 * the cut reach it after the heal.
 */

import assert from "node:assert/strict";
import { makeCertificates } from "../lib/cli/certs.ts";
import { loadConfig } from "../lib/config/config.ts";
import { serverRunArgs } from "../lib/cli/launcher.ts";
import { HERD_TEST_PERMISSIONS, suiteMode } from "./testing/herd.ts";

/** TLS peer links, or plain text when run from plaintext_test.ts. */
const MODE = suiteMode(import.meta.url);
import { waitFor } from "./testing/wait.ts";

/** The test's private subnet; it exists only on the bridge inside the test's namespaces. */
const SUBNET = "10.213.7";
const HOSTS: Record<string, string> = { A: `${SUBNET}.1`, B: `${SUBNET}.2`, C: `${SUBNET}.3` };
const CLIENT_HOST = `${SUBNET}.100`;
/** Each host has its own ports, so every server uses the same two. */
const PORT = 12000;
const PEER_PORT = 12100;
const ACK_TIMEOUT_MS = 300;
const CATCH_UP_TIMEOUT_MS = 10_000;
const ABSENT_MS = 800;

const decoder = new TextDecoder();

/**
 * The client, run inside the client namespace: `ask` prints the reply to one
 * request; `until` repeats the request until the reply matches a pattern;
 * `absent` repeats it for a while and fails if a reply ever matches. It prints
 * `{ "ok": boolean, "reply": string }`. It polls with the tests' wait.ts,
 * imported by its file URL (a static import needs no read permission).
 */
const CLIENT_SCRIPT = `
import { checkThroughout, waitFor } from ${JSON.stringify(import.meta.resolve("./testing/wait.ts"))};

const [mode, host, port, request, pattern = "", ms = "0"] = Deno.args;
const encoder = new TextEncoder();
const decoder = new TextDecoder();
async function ask() {
  try {
    const conn = await Deno.connect({ hostname: host, port: Number(port) });
    try {
      const bytes = encoder.encode(request);
      for (let offset = 0; offset < bytes.length;) offset += await conn.write(bytes.subarray(offset));
      await conn.closeWrite();
      let text = "";
      const buffer = new Uint8Array(65536);
      for (let n; (n = await conn.read(buffer)) !== null;) text += decoder.decode(buffer.subarray(0, n), { stream: true });
      return text;
    } finally {
      conn.close();
    }
  } catch (error) {
    return "connection failed: " + error.message;
  }
}
const regex = new RegExp(pattern);
let reply = "";
let ok = true;
if (mode === "ask") {
  reply = await ask();
} else if (mode === "until") {
  // waitFor rejects only when the time is up: ask() never throws.
  ok = await waitFor(async () => regex.test(reply = await ask()), { timeoutMs: Number(ms), stepMs: 25 })
    .then(() => true, () => false);
} else {
  ok = await checkThroughout(async () => {
    if (regex.test(reply = await ask())) throw new Error("matched");
  }, { durationMs: Number(ms), stepMs: 25 }).then(() => true, () => false);
}
console.log(JSON.stringify({ ok, reply }));
`;

/** Runs a command; resolves to its exit status and output. */
async function run(command: string, args: string[], stdin?: string): Promise<{ ok: boolean; out: string }> {
  const child = new Deno.Command(command, {
    args,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(stdin));
    await writer.close();
  }
  const output = await child.output();
  return { ok: output.success, out: (decoder.decode(output.stdout) + decoder.decode(output.stderr)).trim() };
}

/** Runs `ip` with `args`, failing with its output when it fails. */
async function ip(...args: string[]): Promise<string> {
  const result = await run("ip", args);
  if (!result.ok) throw new Error(`ip ${args.join(" ")} failed: ${result.out}`);
  return result.out;
}

/** Why this machine cannot run the test, or undefined when it can. */
async function whyNotHere(): Promise<string | undefined> {
  if (Deno.build.os !== "linux") return "network namespaces are Linux only";
  const ipGranted = Deno.permissions.querySync({ name: "run", command: "ip" }).state === "granted";
  if (!ipGranted) return "needs --allow-run=deno,ip";
  let uid: number | null = null;
  if (Deno.permissions.querySync({ name: "sys", kind: "uid" }).state === "granted") uid = Deno.uid();
  const probe = `herd-probe-${crypto.randomUUID().slice(0, 8)}`;
  try {
    await run("ip", ["-V"]);
  } catch {
    return "ip is not installed (Debian: apt-get install iproute2)";
  }
  const added = await run("ip", ["netns", "add", probe]);
  if (!added.ok) {
    return uid !== null && uid !== 0
      ? `not root (uid ${uid})`
      : `ip netns add failed (the test needs root): ${added.out}`;
  }
  try {
    const bridge = await run("ip", ["-n", probe, "link", "add", "br0", "type", "bridge"]);
    if (!bridge.ok) return `cannot create a bridge in a namespace: ${bridge.out}`;
    const nft = await run("ip", ["netns", "exec", probe, "nft", "list", "ruleset"]);
    if (!nft.ok) return `nft does not work in a namespace (Debian: apt-get install nftables): ${nft.out}`;
  } finally {
    await run("ip", ["netns", "del", probe]);
  }
  return undefined;
}

/** Servers A, B and C in namespaces of their own, a client namespace, and a bridge namespace joining them. */
class NetnsHerd implements AsyncDisposable {
  readonly dir: string;
  readonly suffix = crypto.randomUUID().slice(0, 8);
  #namespaces: string[] = [];
  #servers = new Map<string, Deno.ChildProcess>();

  private constructor(dir: string) {
    this.dir = dir;
  }

  /** Builds the network and writes the config (`peers` over the test's own); tears down what it built if a step fails. */
  static async create(peers: Record<string, unknown> = {}): Promise<NetnsHerd> {
    const herd = new NetnsHerd(await Deno.makeTempDir({ dir: "/tmp", prefix: "herd-netns-" }));
    try {
      await herd.#build(peers);
    } catch (error) {
      await herd[Symbol.asyncDispose]();
      throw error;
    }
    return herd;
  }

  /** The namespace of `host` (`A`, `B`, `C`, `client` or `bridge`). */
  ns(host: string): string {
    return `herd-${host}-${this.suffix}`;
  }

  async #build(peers: Record<string, unknown>): Promise<void> {
    const bridge = this.ns("bridge");
    await ip("netns", "add", bridge);
    this.#namespaces.push(bridge);
    await ip("-n", bridge, "link", "add", "br0", "type", "bridge");
    await ip("-n", bridge, "link", "set", "br0", "up");
    const hosts: [string, string][] = [...Object.entries(HOSTS), ["client", CLIENT_HOST]];
    for (const [index, [host, address]] of hosts.entries()) {
      const ns = this.ns(host);
      await ip("netns", "add", ns);
      this.#namespaces.push(ns);
      // Both ends are made inside namespaces: no interface ever appears in the root namespace.
      await ip("-n", bridge, "link", "add", `veth${index}`, "type", "veth", "peer", "name", "eth0", "netns", ns);
      await ip("-n", bridge, "link", "set", `veth${index}`, "master", "br0", "up");
      await ip("-n", ns, "link", "set", "lo", "up");
      await ip("-n", ns, "addr", "add", `${address}/24`, "dev", "eth0");
      await ip("-n", ns, "link", "set", "eth0", "up");
    }
    const servers: Record<string, unknown> = {};
    for (const [name, host] of Object.entries(HOSTS)) servers[name] = { host, port: PORT, peerPort: PEER_PORT };
    const config = {
      servers,
      links: [["A", "B"], ["B", "C"]],
      places: { provider: "offline", url: "http://127.0.0.1:9/unused" },
      logDir: "logs",
      // Periodic reconciliation well inside the [catch-up] timeout (the default is 5 s).
      peers: {
        reconnectMinMs: 20,
        reconnectMaxMs: 200,
        ackTimeoutMs: ACK_TIMEOUT_MS,
        reconcileIntervalMs: 1000,
        tls: MODE.tls,
        ...peers,
      },
    };
    await Deno.writeTextFile(`${this.dir}/herd.config.json`, JSON.stringify(config, null, 2));
    // Peer links over TLS, as by default: each certificate names its server's host address.
    if (MODE.tls) await makeCertificates(await loadConfig(`${this.dir}/herd.config.json`));
    await Deno.writeTextFile(`${this.dir}/client.ts`, CLIENT_SCRIPT);
  }

  /** Starts server `name` inside its namespace with the flags `deno task serve` gives it, and waits until it answers. */
  async start(name: string): Promise<void> {
    const config = await loadConfig(`${this.dir}/herd.config.json`);
    // `ip netns exec` execs the command, so the child is the server itself and a signal reaches it.
    const child = new Deno.Command("ip", {
      args: ["netns", "exec", this.ns(name), "deno", ...serverRunArgs(config, name, { keyPresent: false })],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    this.#servers.set(name, child);
    const ready = await this.client("until", name, "WHATSAT nobody 1 0\n", "^\\? ", 15_000);
    assert.ok(ready.ok, `${name} did not answer within 15 s: ${ready.reply}`);
  }

  /** Runs the client script in the client namespace against server `name`. */
  async client(
    mode: "ask" | "until" | "absent",
    name: string,
    request: string,
    pattern = "",
    ms = 0,
  ): Promise<{ ok: boolean; reply: string }> {
    const address = `${HOSTS[name]}:${PORT}`;
    const result = await run("ip", [
      "netns",
      "exec",
      this.ns("client"),
      "deno",
      "run",
      "--no-config",
      "--no-prompt",
      `--allow-net=${address}`,
      `${this.dir}/client.ts`,
      mode,
      HOSTS[name],
      String(PORT),
      request,
      pattern,
      String(ms),
    ]);
    assert.ok(result.ok, `client failed: ${result.out}`);
    return JSON.parse(result.out);
  }

  /** The log file of server `name`. */
  log(name: string): Promise<string> {
    return Deno.readTextFile(`${this.dir}/logs/${name}.log`);
  }

  /** Applies an nftables ruleset inside namespace `host`. */
  async nft(host: string, ruleset: string): Promise<void> {
    const result = await run("ip", ["netns", "exec", this.ns(host), "nft", "-f", "-"], ruleset);
    if (!result.ok) throw new Error(`nft in ${host} failed: ${result.out}\n${ruleset}`);
  }

  /** Kills the servers, then deletes every namespace (and with them the bridge and the veths) and the directory. */
  async [Symbol.asyncDispose](): Promise<void> {
    const problems: string[] = [];
    for (const child of this.#servers.values()) {
      try {
        child.kill("SIGKILL");
      } catch { /* already exited */ }
    }
    await Promise.all([...this.#servers.values()].map((child) => child.status));
    this.#servers.clear();
    for (const ns of this.#namespaces.reverse()) {
      const result = await run("ip", ["netns", "del", ns]);
      if (!result.ok) problems.push(`ip netns del ${ns}: ${result.out}`);
    }
    this.#namespaces = [];
    await Deno.remove(this.dir, { recursive: true });
    if (problems.length > 0) throw new Error(`Teardown left things behind: ${problems.join("; ")}`);
  }
}

let clock = 1_700_100_000;

/** Sends an IAMAT for `id` at `name` from the client namespace; returns its AT line. */
async function iamat(herd: NetnsHerd, name: string, id: string): Promise<string> {
  const time = ++clock;
  const { reply } = await herd.client("ask", name, `IAMAT ${id} +1+1 ${time}\n`);
  assert.match(reply, new RegExp(`^AT ${name} \\S+ ${id} \\+1\\+1 ${time}\\n$`));
  return reply.trimEnd();
}

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** Polls until `name` holds `line` (its record for the client in it). */
async function waitHolds(herd: NetnsHerd, name: string, line: string, ms: number): Promise<void> {
  const id = line.split(" ")[3];
  const { ok, reply } = await herd.client("until", name, `WHATSAT ${id} 1 0\n`, `^${escape(line)}\\n`, ms);
  assert.ok(ok, `${name} did not get ${line} within ${ms} ms; it answers ${reply.split("\n")[0]}`);
}

/** Watches `name` for a while and fails if it ever learns of `id`. */
async function assertStaysAway(herd: NetnsHerd, name: string, id: string): Promise<void> {
  const { ok, reply } = await herd.client("absent", name, `WHATSAT ${id} 1 0\n`, "^AT ", ABSENT_MS);
  assert.ok(ok, `${id} crossed the cut to ${name}: ${reply.split("\n")[0]}`);
}

/** Waits until a fresh record from `from` reaches `to`; each round sends a newer one in case a link was reconnecting. */
async function waitFlowing(herd: NetnsHerd, from: string, to: string, ms: number): Promise<void> {
  const id = `flow-${from}-${to}-${crypto.randomUUID().slice(0, 8)}`;
  let reply = "";
  await waitFor(async () => {
    const line = await iamat(herd, from, id);
    const answer = await herd.client("until", to, `WHATSAT ${id} 1 0\n`, `^${escape(line)}\\n`, 1000);
    reply = answer.reply;
    return answer.ok;
  }, {
    timeoutMs: ms,
    stepMs: 0,
    what: () => `a record from ${from} to reach ${to}; it answers ${reply.split("\n")[0]}`,
  });
}

/** Drops every packet between B and C on the bridge: a black hole in the network. */
function bridgeCut(herd: NetnsHerd): Promise<void> {
  return herd.nft(
    "bridge",
    `table bridge herd_cut {
  chain forward {
    type filter hook forward priority 0; policy accept;
    ip saddr ${HOSTS.B} ip daddr ${HOSTS.C} drop
    ip saddr ${HOSTS.C} ip daddr ${HOSTS.B} drop
  }
}
`,
  );
}

/**
 * Makes `host` answer every TCP segment from `other` with a reset, so open connections die and new ones are
 * refused. Resets themselves pass: with the rule on both hosts, each host's reset must reach the other.
 */
function hostReject(herd: NetnsHerd, host: string, other: string): Promise<void> {
  return herd.nft(
    host,
    `table inet herd_reject {
  chain input {
    type filter hook input priority 0; policy accept;
    ip saddr ${HOSTS[other]} tcp flags & rst == 0 reject with tcp reset
  }
}
`,
  );
}

const skipped = await whyNotHere();
if (skipped !== undefined) console.log(`netns_test.ts: skipped: ${skipped}`);

Deno.test({
  name: `a herd on three hosts in network namespaces survives nftables cuts of the B–C link${
    skipped === undefined ? "" : ` (skipped: ${skipped})`
  }${MODE.suffix}`,
  ignore: skipped !== undefined,
  permissions: { ...HERD_TEST_PERMISSIONS, run: ["deno", "ip"] },
}, async (t) => {
  await using herd = await NetnsHerd.create();
  await Promise.all(["A", "B", "C"].map((name) => herd.start(name)));
  for (const [from, to] of [["A", "C"], ["C", "A"]]) await waitFlowing(herd, from, to, 15_000);

  // 1. A black hole on the bridge: packets between B and C vanish; their TCP connections stay open.
  await bridgeCut(herd);
  const blackHoled: string[] = [];
  await t.step("with B–C black-holed on the bridge, an IAMAT at A reaches B and not C", async () => {
    const line = await iamat(herd, "A", "hole-a");
    blackHoled.push(line);
    await waitHolds(herd, "B", line, 2_000);
    await assertStaysAway(herd, "C", "hole-a");
  });
  await t.step("with B–C black-holed, an IAMAT at C stays on C", async () => {
    const line = await iamat(herd, "C", "hole-c");
    blackHoled.push(line);
    await assertStaysAway(herd, "B", "hole-c");
    await assertStaysAway(herd, "A", "hole-c");
  });
  await herd.nft("bridge", "delete table bridge herd_cut\n");
  await t.step("after the black hole heals, new records flow both ways", async () => {
    await waitFlowing(herd, "A", "C", 15_000);
    await waitFlowing(herd, "C", "A", 15_000);
  });
  // TCP itself may deliver these: the records sat in the kernel's send buffer and are retransmitted after the heal.
  // Had the link been closed and reopened in between, catch-up (reconciliation) would bring them.
  await t.step(
    "[catch-up] after the black hole heals, every server holds the records from during the cut",
    async () => {
      for (const line of blackHoled) {
        for (const name of ["A", "B", "C"]) await waitHolds(herd, name, line, CATCH_UP_TIMEOUT_MS);
      }
    },
  );

  // 2. Host firewalls that reset: B and C's connections die and reconnections are refused, so records flooded during
  // the cut are never written to any connection.
  await hostReject(herd, "B", "C");
  await hostReject(herd, "C", "B");
  const refused: string[] = [];
  await t.step("with B and C refusing each other, an IAMAT at A reaches B and not C", async () => {
    const line = await iamat(herd, "A", "reset-a");
    refused.push(line);
    await waitHolds(herd, "B", line, 2_000);
    await assertStaysAway(herd, "C", "reset-a");
  });
  await t.step("with B and C refusing each other, an IAMAT at C stays on C", async () => {
    const line = await iamat(herd, "C", "reset-c");
    refused.push(line);
    await assertStaysAway(herd, "B", "reset-c");
  });
  await herd.nft("B", "delete table inet herd_reject\n");
  await herd.nft("C", "delete table inet herd_reject\n");
  await t.step("after the firewalls open, the links reconnect and new records flow both ways", async () => {
    await waitFlowing(herd, "A", "C", 15_000);
    await waitFlowing(herd, "C", "A", 15_000);
  });
  await t.step("[catch-up] after the firewalls open, every server holds the records from during the cut", async () => {
    for (const line of refused) {
      for (const name of ["A", "B", "C"]) await waitHolds(herd, name, line, CATCH_UP_TIMEOUT_MS);
    }
  });
});

Deno.test({
  name:
    `a real black hole between B and C (nftables) is found by the heartbeats: each end closes its silent links, and they come back after the heal${
      skipped === undefined ? "" : ` (skipped: ${skipped})`
    }${MODE.suffix}`,
  ignore: skipped !== undefined,
  permissions: { ...HERD_TEST_PERMISSIONS, run: ["deno", "ip"] },
}, async (t) => {
  // Heartbeats fast enough for a test; reconciliation rare, so that only the links coming back bring what was missed.
  await using herd = await NetnsHerd.create({
    heartbeatMs: 200,
    heartbeatTimeoutMs: 1000,
    reconcileIntervalMs: 600_000,
  });
  await Promise.all(["A", "B", "C"].map((name) => herd.start(name)));
  for (const [from, to] of [["A", "C"], ["C", "A"]]) await waitFlowing(herd, from, to, 15_000);

  await bridgeCut(herd);
  await t.step(
    "each end gives up on its silent links to and from the other: no close gets through to tell it",
    async () => {
      // Unlike the fault proxy, the network drops the FIN and RST too: each of B and C must find out for itself.
      for (const [name, other] of [["B", "C"], ["C", "B"]]) {
        for (const pattern of [`Link to "${other}" heard nothing`, `Link from "${other}" sent nothing`]) {
          await waitFor(async () => (await herd.log(name)).includes(pattern), {
            timeoutMs: 10_000,
            what: `${name}'s log to say ${pattern}`,
          });
        }
      }
    },
  );
  const line = await iamat(herd, "A", "dark-a");
  await waitHolds(herd, "B", line, 2_000);
  await herd.nft("bridge", "delete table bridge herd_cut\n");
  await t.step(
    "after the heal the links come back, records flow both ways, and the one from during the cut arrives",
    async () => {
      await waitFlowing(herd, "A", "C", 15_000);
      await waitFlowing(herd, "C", "A", 15_000);
      await waitHolds(herd, "C", line, CATCH_UP_TIMEOUT_MS);
    },
  );
});
