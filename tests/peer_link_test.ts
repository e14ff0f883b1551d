import assert from "node:assert/strict";
import type { PeerHost } from "../lib/peer/host.ts";
import { TextLineSplitter } from "../lib/net/line_stream.ts";
import { startReading, stopReading } from "../lib/net/line_socket.ts";
import type { Socket } from "node:net";
import { Heartbeat } from "../lib/peer/heartbeat.ts";
import { PEER_MAX_LINE_BYTES } from "../lib/peer/wire.ts";
import { BULK_WINDOW_START } from "../lib/peer/bulk_window.ts";
import { PeerLink, type PeerLinkOptions } from "../lib/peer/outbound.ts";
import { servePeer } from "../lib/peer/inbound.ts";
import { Reconciler } from "../lib/peer/reconcile.ts";
import { PeerTransport } from "../lib/peer/transport.ts";
import { BroadcastTrees } from "../lib/peer/tree.ts";
import { type LocationRecord, recordOfLine } from "../lib/protocol.ts";
import { bucketOf, parseDigestHex } from "../lib/store/digest.ts";
import { LocationStore } from "../lib/store/store.ts";
import { traffic } from "../lib/traffic_log.ts";
import { captureLogs } from "./testing/logs.ts";
import { loadDefaultConfig } from "./testing/default_config.ts";
import { checkThroughout, delay, waitFor } from "./testing/wait.ts";
import { HERD_TEST_PERMISSIONS, TestHerd } from "./testing/herd.ts";

/** A server with an empty store that never gets anything from the neighbour. */
const HOST: PeerHost = {
  name: "A",
  reconciler: new Reconciler(new LocationStore()),
  recordRules: { servers: new Set(["A", "Frozen"]), maxClientIdBytes: 256, maxLineBytes: 8192 },
  isNeighbour: () => true,
  receive: () => false,
  receiveNotNewer: () => false,
  catchUp: () => false,
  dialledBy: () => {},
  dialledByLasting: () => {},
  dialledByClosed: () => {},
  linkState: () => {},
};

function record(client: string, time: number): LocationRecord {
  return {
    line: `AT A +0.000000001 ${client} +1+1 ${time} ${"padding-to-fill-buffers-".repeat(4)}`.slice(0, 200),
    clientId: client,
    clientTime: String(time),
    location: "+1+1",
  };
}

Deno.test({
  name:
    "PeerLink to a neighbour that never reads coalesces its queue to one record per client, and nobody waits forever",
  permissions: { net: ["127.0.0.1"] },
}, async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of listener) accepted.push(conn); // a frozen neighbour: accepts, never reads
  })();
  const link = new PeerLink({
    host: HOST,
    transport: new PeerTransport({ files: null, handshakeTimeoutMs: 1000 }),
    neighbour: "Frozen",
    dialHost: "127.0.0.1",
    dialPort: listener.addr.port,
    reconnectMinMs: 20,
    reconnectMaxMs: 100,
    ackTimeoutMs: 200,
    // Not closed for its silence while the test runs: what a silent neighbour costs is the test below.
    heartbeatMs: 60_000,
    heartbeatTimeoutMs: 120_000,
  });
  link.start();
  await waitFor(() => link.up, { stepMs: 5, what: "the link to come up" });
  const waits: Promise<void>[] = [];
  for (let i = 0; i < 200_000; i++) {
    let release = () => {};
    const released = new Promise<void>((resolve) => release = resolve);
    const waiting = link.sendAcknowledged(record(`client-${i % 10}`, i), 200, release);
    if (i % 1000 === 0 && waiting) waits.push(released); // false once lagging: nothing to wait for
    if (i % 5000 === 0) await delay(0); // let the writer fill the socket
  }
  assert.ok(link.queued <= 10, `queued ${link.queued} records for 10 clients`);
  assert.ok(waits.length > 0, "the first sends, before the link was found lagging, wait for an acknowledgement");
  await Promise.all(waits); // released by the ack timeout, not by the frozen neighbour
  assert.equal(link.lagging, true);
  await link.close();
  listener.close();
  await accepting;
  accepted.forEach((conn) => conn.close());
  traffic.flush(); // the link's writes were logged: their lines wait on a timer, which this stops
});

/**
 * A neighbour's peer port on 127.0.0.1 that reads each connection's lines,
 * and answers `PING` with `PONG` while `answer` is set; it notes when each
 * connection was accepted and when it was closed by the other end. With
 * `refuseFirst`, it answers the `HELLO` of that many first connections with
 * `REFUSED not-a-neighbour` and closes them; `onHello` is called at each
 * other connection's `HELLO`, before anything is answered on it.
 */
function heartbeatNeighbour(answer: boolean, options: { refuseFirst?: number; onHello?: () => void } = {}) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const state = {
    answer,
    /** The complete lines received, over every connection. */
    received: [] as string[],
    /** Per connection: when it was accepted, and when the dialer closed it (`performance.now()`). */
    acceptedAt: [] as number[],
    closedAt: [] as (number | undefined)[],
  };
  const conns: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of listener) {
      conns.push(conn);
      const index = state.acceptedAt.push(performance.now()) - 1;
      state.closedAt.push(undefined);
      (async () => {
        const buffer = new Uint8Array(65536);
        const splitter = new TextLineSplitter(PEER_MAX_LINE_BYTES);
        try {
          while (true) {
            const n = await conn.read(buffer);
            if (n === null) break;
            const { lines } = splitter.push(buffer.subarray(0, n));
            state.received.push(...lines);
            if (lines.some((line) => line.startsWith("HELLO "))) {
              if (index < (options.refuseFirst ?? 0)) {
                await conn.write(new TextEncoder().encode("REFUSED not-a-neighbour\n"));
                conn.close();
                break;
              }
              options.onHello?.();
            }
            const pings = lines.filter((line) => line === "PING").length;
            if (state.answer && pings > 0) await conn.write(new TextEncoder().encode("PONG\n".repeat(pings)));
          }
        } catch {
          // closed under us at the end of the test
        }
        state.closedAt[index] = performance.now();
      })();
    }
  })();
  return {
    port: listener.addr.port,
    state,
    async close() {
      listener.close();
      await accepting;
      conns.forEach((conn) => {
        try {
          conn.close();
        } catch {
          // already closed
        }
      });
    },
  };
}

function heartbeatLink(port: number, changes: { count: number }, options: Partial<PeerLinkOptions> = {}): PeerLink {
  return new PeerLink({
    host: HOST,
    transport: new PeerTransport({ files: null, handshakeTimeoutMs: 1000 }),
    neighbour: "Frozen",
    dialHost: "127.0.0.1",
    dialPort: port,
    reconnectMinMs: 60_000,
    reconnectMaxMs: 60_000,
    ackTimeoutMs: 200,
    heartbeatMs: 50,
    heartbeatTimeoutMs: 300,
    onStateChange: () => changes.count++,
    ...options,
  });
}

Deno.test({
  name: "PeerLink asks a quiet neighbour for a sign of life (PING), and closes the link when none comes in time",
  permissions: { net: ["127.0.0.1"] },
}, async () => {
  const neighbour = heartbeatNeighbour(false);
  const changes = { count: 0 };
  const link = heartbeatLink(neighbour.port, changes);
  link.start();
  await waitFor(() => link.up, { stepMs: 5, what: "the link to come up" });
  await waitFor(() => !link.up, { timeoutMs: 5000, stepMs: 5, what: "the silent link to be closed" });
  const { received, acceptedAt, closedAt } = neighbour.state;
  assert.equal(received[0], "HELLO A");
  assert.ok(received.includes("PING"), `no PING among ${JSON.stringify(received)}`);
  await waitFor(() => closedAt[0] !== undefined, { stepMs: 5, what: "the neighbour to see the link closed" });
  // Not before the timeout (300 ms) from the connection (less what the neighbour's accept may have lagged).
  assert.ok(closedAt[0]! - acceptedAt[0] >= 250, `closed after ${closedAt[0]! - acceptedAt[0]} ms`);
  assert.equal(changes.count, 2, "the link said it came up, then went down");
  await link.close();
  await neighbour.close();
});

Deno.test({
  name: "PeerLink keeps a quiet link to a neighbour that answers its PINGs",
  permissions: { net: ["127.0.0.1"] },
}, async () => {
  const neighbour = heartbeatNeighbour(true);
  const changes = { count: 0 };
  const link = heartbeatLink(neighbour.port, changes);
  link.start();
  await waitFor(() => link.up, { stepMs: 5, what: "the link to come up" });
  const { received, closedAt } = neighbour.state;
  // Five timeouts' worth of PINGs answered: the link is never closed, and only pings were sent.
  await waitFor(() => received.filter((line) => line === "PING").length >= 30, {
    timeoutMs: 10_000,
    stepMs: 10,
    what: "30 PINGs",
  });
  assert.equal(link.up, true);
  assert.equal(closedAt[0], undefined);
  // Besides HELLO, the reconciliation the link starts on coming up (DIGEST), and PINGs.
  const others = received.filter((line) => line !== "PING" && !line.startsWith("DIGEST "));
  assert.deepEqual(others, ["HELLO A"]);
  await link.close();
  await neighbour.close();
});

Deno.test({
  name:
    "PeerLink does not count on a link (in use) before the neighbour has said something on it, however long it lasts",
  permissions: { net: ["127.0.0.1"] },
}, async () => {
  const neighbour = heartbeatNeighbour(false);
  const changes = { count: 0 };
  // Heartbeats that never give up on the link while the test runs.
  const link = heartbeatLink(neighbour.port, changes, { heartbeatMs: 100, heartbeatTimeoutMs: 60_000 });
  link.start();
  await waitFor(() => link.up, { stepMs: 5, what: "the link to come up" });
  // Half again the second after which a link that answers is counted on (outbound.ts _PROVEN_MS).
  await checkThroughout(() => assert.equal(link.inUse, false), { durationMs: 1500 });
  neighbour.state.answer = true;
  await waitFor(() => link.inUse, { stepMs: 5, what: "the link to be counted on once the neighbour answers" });
  await link.close();
  await neighbour.close();
});

Deno.test({
  name: "PeerLink keeps backing off from a neighbour whose connections are accepted and then say nothing",
  permissions: { net: ["127.0.0.1"] },
}, async () => {
  const neighbour = heartbeatNeighbour(false);
  const changes = { count: 0 };
  // Each silent session lasts the 300 ms timeout, longer than reconnectMaxMs: only having heard the neighbour may
  // reset the backoff, so each redial still waits 50-200 ms.
  const link = heartbeatLink(neighbour.port, changes, { reconnectMinMs: 100, reconnectMaxMs: 200 });
  link.start();
  const { acceptedAt, closedAt } = neighbour.state;
  await waitFor(() => acceptedAt.length >= 4, { timeoutMs: 10_000, stepMs: 5, what: "four connections" });
  await link.close();
  for (let i = 1; i < 4; i++) {
    const pause = acceptedAt[i] - closedAt[i - 1]!;
    assert.ok(pause >= 40, `connection ${i + 1} came ${pause.toFixed(1)} ms after connection ${i} closed`);
  }
  await neighbour.close();
});

Deno.test("Heartbeat gives up on silence after the timeout, once, and not before", async () => {
  const started = performance.now();
  let silentAt = 0;
  let silentCalls = 0;
  const heartbeat = new Heartbeat({
    intervalMs: 20,
    timeoutMs: 100,
    onSilent: () => {
      silentAt = performance.now();
      silentCalls++;
    },
  });
  await waitFor(() => silentCalls > 0, { stepMs: 5, what: "the silence to be given up on" });
  assert.ok(silentAt - started >= 100, `gave up after ${silentAt - started} ms`);
  await delay(100);
  assert.equal(silentCalls, 1);
  heartbeat.stop();
});

Deno.test("Heartbeat does not count a pause of its own process as the other end's silence, and still ticks after it", async () => {
  let silent = false;
  let ticks = 0;
  const heartbeat = new Heartbeat({
    intervalMs: 50,
    timeoutMs: 300,
    onTick: () => ticks++,
    onSilent: () => silent = true,
  });
  const hearing = setInterval(() => heartbeat.heard(), 10);
  await waitFor(() => ticks >= 3, { stepMs: 5, what: "three ticks" });
  clearInterval(hearing);
  // The process is held up for longer than the timeout (a pause, SIGSTOP); the other end is heard again 100 ms after.
  const stalled = performance.now();
  while (performance.now() - stalled < 400) { /* held up */ }
  const ticksBefore = ticks;
  await delay(100);
  heartbeat.heard();
  const resumed = setInterval(() => heartbeat.heard(), 10);
  await waitFor(() => ticks >= ticksBefore + 6, { stepMs: 5, what: "six more ticks" });
  clearInterval(resumed);
  heartbeat.stop();
  assert.equal(silent, false, "a pause of our own is not the other end's silence");
});

Deno.test("Heartbeat still gives up on a silent link when its own timers always run late (an event loop kept busy)", async () => {
  let silentAt: number | undefined;
  const heartbeat = new Heartbeat({ intervalMs: 50, timeoutMs: 200, onSilent: () => silentAt = performance.now() });
  const started = performance.now();
  // Busy in turns of 100 ms: every look comes twice its interval late, and nothing is ever heard.
  while (silentAt === undefined && performance.now() - started < 5000) {
    const turn = performance.now();
    while (performance.now() - turn < 100) { /* busy */ }
    await delay(0);
  }
  heartbeat.stop();
  assert.ok(silentAt !== undefined, "never gave up");
  assert.ok(silentAt - started < 1000, `gave up after ${(silentAt - started).toFixed(0)} ms`);
});

Deno.test("BroadcastTrees are the breadth-first trees of the graph, one per server, the same on every server", async () => {
  const config = await loadDefaultConfig();
  const trees = new BroadcastTrees(config);
  const childrenOf = (root: string) =>
    Object.fromEntries([...config.servers.keys()].map((name) => [name, [...trees.children(root, name)]]));
  assert.deepEqual(childrenOf("Hill"), {
    Hill: ["Jaquez", "Smith"],
    Jaquez: ["Singleton"],
    Smith: ["Campbell"],
    Campbell: [],
    Singleton: [],
  });
  assert.deepEqual(childrenOf("Campbell"), {
    Hill: [],
    Jaquez: [],
    Smith: ["Hill"],
    Campbell: ["Smith", "Singleton"],
    Singleton: ["Jaquez"],
  });
  assert.equal(trees.parent("Hill", "Hill"), undefined);
  assert.equal(trees.parent("Hill", "Singleton"), "Jaquez");
  assert.equal(trees.parent("Campbell", "Hill"), "Smith");
  // Every tree spans the herd with one edge less than it has servers: each server gets a record once.
  for (const root of config.servers.keys()) {
    const edges = [...config.servers.keys()].reduce((sum, name) => sum + trees.children(root, name).length, 0);
    assert.equal(edges, config.servers.size - 1, root);
  }
});

Deno.test("BroadcastTrees leave out a link its dialler reports out or its other end reports not live, and go around a server nobody reaches", async () => {
  const config = await loadDefaultConfig();
  const trees = new BroadcastTrees(config);
  const childrenOf = (root: string) =>
    Object.fromEntries([...config.servers.keys()].map((name) => [name, [...trees.children(root, name)]]));
  const report = (server: string, version: number, up: string[], inbound: string[]) => ({
    server,
    version,
    up,
    inbound,
  });
  // Smith dies: its neighbours' links to it and from it drop, and their reports say so (Smith's last word was that
  // all was well).
  const all = ["Hill", "Campbell", "Singleton"];
  assert.equal(trees.apply(report("Smith", 5, all, all)), true);
  assert.equal(trees.apply(report("Hill", 10, ["Jaquez"], ["Jaquez"])), true);
  assert.equal(trees.apply(report("Campbell", 10, ["Singleton"], ["Singleton"])), true);
  assert.equal(trees.apply(report("Singleton", 10, ["Jaquez", "Campbell"], ["Jaquez", "Campbell"])), true);
  // Campbell hung below Smith in Hill's tree; now it hangs below Singleton, and nobody sends to Smith.
  assert.deepEqual(childrenOf("Hill"), {
    Hill: ["Jaquez"],
    Jaquez: ["Singleton"],
    Smith: [],
    Campbell: [],
    Singleton: ["Campbell"],
  });
  assert.equal(trees.parent("Hill", "Campbell"), "Singleton");
  assert.equal(trees.parent("Hill", "Smith"), undefined);
  // An older report changes nothing; a later one puts Hill's link to Smith back (Smith's last report has Hill's link
  // into it live). Campbell reports no live link from Smith, so Smith's link to Campbell stays out whatever Smith said.
  assert.equal(trees.apply(report("Hill", 9, ["Jaquez", "Smith"], ["Jaquez"])), false);
  assert.equal(trees.apply(report("Hill", 11, ["Jaquez", "Smith"], ["Jaquez"])), true);
  assert.deepEqual(trees.children("Hill", "Hill"), ["Jaquez", "Smith"]);
  assert.deepEqual(trees.children("Hill", "Smith"), []);
  assert.equal(trees.parent("Hill", "Campbell"), "Singleton");
  // Smith is back but can dial nobody: it cannot say so, its neighbours say it for it (no live link from Smith
  // into them). Smith is a leaf of every tree; links to it are used.
  assert.equal(trees.apply(report("Hill", 12, ["Jaquez", "Smith"], ["Jaquez"])), true);
  assert.equal(trees.apply(report("Campbell", 12, ["Smith", "Singleton"], ["Singleton"])), true);
  assert.equal(trees.apply(report("Singleton", 12, ["Jaquez", "Smith", "Campbell"], ["Jaquez", "Campbell"])), true);
  for (const root of ["Hill", "Jaquez", "Campbell", "Singleton"]) {
    assert.deepEqual(trees.children(root, "Smith"), [], root);
  }
  assert.deepEqual(trees.children("Campbell", "Campbell"), ["Smith", "Singleton"]);
  assert.equal(trees.parent("Hill", "Campbell"), "Singleton");
  // A report's names that are not the server's neighbours (here, or in a config that knows a server ours does not) are
  // left out of the trees, not of the report passed on; an unknown server's report is not taken.
  const campbell = report("Campbell", 13, ["Singleton", "Smith", "Hill", "New"], ["Hill", "Singleton"]);
  assert.equal(trees.apply(campbell), true);
  assert.deepEqual(trees.children("Campbell", "Campbell"), ["Smith", "Singleton"]);
  assert.equal(trees.parent("Hill", "Campbell"), "Singleton");
  assert.equal(trees.reports().find((r) => r.server === "Campbell"), campbell);
  assert.equal(trees.knows("Nobody"), false);
  assert.equal(trees.apply(report("Nobody", 14, [], [])), false);
});

/**
 * A neighbour's peer port on 127.0.0.1 that takes one connection and
 * answers the first digest it reads with `answer`; `closedByDialer` says
 * whether the dialler closed it.
 */
function digestAnswerer(answer: string) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let closedByDialer = false;
  const serving = (async () => {
    const conn = await listener.accept();
    const buffer = new Uint8Array(65536);
    const splitter = new TextLineSplitter(PEER_MAX_LINE_BYTES);
    let answered = false;
    try {
      while (true) {
        const n = await conn.read(buffer);
        if (n === null) break;
        if (!answered && splitter.push(buffer.subarray(0, n)).lines.some((line) => line.startsWith("DIGEST "))) {
          answered = true;
          await conn.write(new TextEncoder().encode(answer));
        }
      }
      closedByDialer = true;
    } catch {
      closedByDialer = true; // reset by the dialler
    }
    conn.close();
  })();
  return {
    port: listener.addr.port,
    closedByDialer: () => closedByDialer,
    /** Stops listening and waits for the connection to end (close the link first). */
    async close() {
      listener.close();
      await serving;
    },
  };
}

/** A link to `neighbour` at `port` that dials once in the test's time, with heartbeats too slow to fire. */
function oneSessionLink(
  port: number,
  host: PeerHost = HOST,
  neighbour = "Frozen",
  transport = new PeerTransport({ files: null, handshakeTimeoutMs: 1000 }),
  options: Partial<PeerLinkOptions> = {},
): PeerLink {
  return new PeerLink({
    host,
    transport,
    neighbour,
    dialHost: "127.0.0.1",
    dialPort: port,
    reconnectMinMs: 60_000,
    reconnectMaxMs: 60_000,
    ackTimeoutMs: 200,
    heartbeatMs: 60_000,
    heartbeatTimeoutMs: 120_000,
    ...options,
  });
}

const ZERO_DIGEST_LINE = `DIGEST ${"0".repeat(16384)}\n`;

Deno.test({
  name: "PeerLink takes one digest back for each of its own, and closes a link that sends it 16 lines it should not",
  permissions: { net: ["127.0.0.1"] },
}, async () => {
  // A neighbour that answers our digest with seventeen of its own: one answers, sixteen more would each have us walk
  // the store and send what they say it lacks.
  const neighbour = digestAnswerer(ZERO_DIGEST_LINE.repeat(17));
  const link = oneSessionLink(neighbour.port);
  link.start();
  await waitFor(() => neighbour.closedByDialer(), { what: "the dialer to close the link" });
  await link.close();
  await neighbour.close();
});

Deno.test({
  name:
    "PeerLink closes a link that sends back 16 AT lines of no form the herd writes: only config refusals are let off",
  permissions: { net: ["127.0.0.1"] },
}, async () => {
  // Not nine decimals, and a server we do not have: refused for its form first, so it counts.
  const neighbour = digestAnswerer("AT Mallory +0.1 junk +1+1 5\n".repeat(16));
  const caughtUp: string[] = [];
  const link = oneSessionLink(neighbour.port, { ...HOST, catchUp: (record) => caughtUp.push(record.clientId) < 0 });
  link.start();
  await waitFor(() => neighbour.closedByDialer(), { what: "the dialer to close the link" });
  assert.deepEqual(caughtUp, []);
  await link.close();
  await neighbour.close();
});

Deno.test({
  name: "PeerLink drops records of the neighbour's that its rules refuse, logging a few, and keeps the link",
  permissions: { net: ["127.0.0.1"] },
}, async () => {
  // A neighbour whose store holds records of a server since taken out of the config: it answers our digest with 20 of
  // them, then one we take, then its digest. Each exchange would bring them again: they are no reason to close.
  const neighbour = digestAnswerer(
    "AT Mallory +0.000000001 gone +1+1 5\n".repeat(20) + "AT A +0.000000001 kept +1+1 5\n" + ZERO_DIGEST_LINE,
  );
  await using logs = await captureLogs();
  const caughtUp: string[] = [];
  const link = oneSessionLink(neighbour.port, { ...HOST, catchUp: (record) => caughtUp.push(record.clientId) < 0 });
  link.start();
  await waitFor(() => caughtUp.includes("kept"), { what: "the record after the refused ones to be taken" });
  assert.equal(link.up, true, "the link is kept");
  assert.equal(neighbour.closedByDialer(), false);
  // A few logged one by one (16 a second), the rest counted, and said once the link is closed.
  const dropped =
    /^warning Dropped a record from Frozen on our link \(names a server the herd does not have\): AT Mallory /;
  assert.equal(logs.count(dropped), 16, logs.lines.join("\n"));
  await link.close();
  assert.equal(logs.count(/^warning Dropped 4 more records from Frozen on our link that our config refuses/), 1);
  assert.equal(logs.count(/Unexpected line/), 0, "none counted toward closing the link");
  await neighbour.close();
});

Deno.test(
  "Reconciler shows a neighbour the records of its that our config refused in its digest, so that an exchange " +
    "sends neither side that bucket again, until ours is the greater one",
  () => {
    const at = (server: string, client: string, time: number) =>
      recordOfLine(`AT ${server} +0.000000001 ${client} +1+1 ${time}`);
    // B's config has New, ours not: B holds New's record of c1, we hold an older one of A's; both hold c2 (same bucket
    // or not, it must not matter).
    const ours = new LocationStore({ servers: ["A", "B"] });
    const theirs = new LocationStore({ servers: ["A", "B", "New"] });
    for (const store of [ours, theirs]) store.offer(at("A", "c2", 7));
    ours.offer(at("A", "c1", 5));
    theirs.offer(at("New", "c1", 6));
    const reconciler = new Reconciler(ours);
    const sent = () =>
      [...reconciler.answer("B", theirs.digest.words)].filter((line) => line.startsWith("AT ")).map((line) =>
        line.trimEnd()
      );
    const shown = () => parseDigestHex(reconciler.request("B").trimEnd().slice("DIGEST ".length));
    assert.deepEqual(sent(), [at("A", "c1", 5).line], "before we know: c1's bucket differs, and we send ours");
    reconciler.refused("B", `${at("New", "c1", 6).line} 12 0`); // as it came live: a sequence number and a wait
    assert.deepEqual(sent(), [], "the bucket agrees now");
    // An older one of B's, come late over its other link: the greater is kept.
    reconciler.refused("B", at("New", "c1", 5).line.replace("+0.000000001", "+0.000000002"));
    assert.deepEqual(sent(), []);
    assert.deepEqual(shown(), theirs.digest.words, "the digest B is shown is its own");
    assert.deepEqual([...reconciler.finish("B", theirs.digest.words, 0, 0)], []);
    assert.notDeepEqual(shown(), ours.digest.words, "only B is shown it");
    assert.deepEqual(parseDigestHex(reconciler.request("C").trimEnd().slice(7)), ours.digest.words);
    // A record of ours greater than New's: B takes it, so it is sent, and the refused one forgotten.
    ours.offer(at("A", "c1", 8));
    assert.deepEqual(sent(), [at("A", "c1", 8).line]);
    theirs.offer(at("A", "c1", 8));
    assert.deepEqual(sent(), []);
    assert.deepEqual(shown(), ours.digest.words);
    // A link with B came up again: what B holds may have changed.
    theirs.offer(at("New", "c3", 9));
    reconciler.refused("B", at("New", "c3", 9).line);
    assert.deepEqual(sent(), []);
    reconciler.forget("B");
    assert.deepEqual(shown(), ours.digest.words);
  },
);

Deno.test("Reconciler forgets a refused record once it has expired: the neighbour's store drops it too", () => {
  let nowNs = 1_700_000_100n * 1_000_000_000n;
  const ours = new LocationStore({ servers: ["A"], ttlS: 60, nowNs: () => nowNs });
  const reconciler = new Reconciler(ours);
  reconciler.refused("B", "AT New +0.000000001 c1 +1+1 1700000090");
  const shown = () => parseDigestHex(reconciler.request("B").trimEnd().slice("DIGEST ".length));
  assert.notDeepEqual(shown(), ours.digest.words, "shown while it lives");
  nowNs += 60n * 1_000_000_000n;
  assert.deepEqual(shown(), ours.digest.words);
});

Deno.test(
  "Reconciler remembers a neighbour's refused records up to its cap, says once that it is full, and takes more once " +
    "some are forgotten",
  async () => {
    await using logs = await captureLogs();
    const newRecord = (client: string) => `AT New +0.000000001 ${client} +1+1 5`;
    const ours = new LocationStore({ servers: ["A", "B"] });
    // Three records and their client IDs fit (32 characters each), not a fourth.
    const reconciler = new Reconciler(ours, 100);
    const shown = () => parseDigestHex(reconciler.request("B").trimEnd().slice("DIGEST ".length));
    /** The digest of a store holding `lines`: what B is shown when we remember exactly those. */
    const digestOf = (...lines: string[]) => {
      const store = new LocationStore({ servers: ["A", "B", "New"] });
      for (const line of lines) store.offer(recordOfLine(line));
      return store.digest.words;
    };
    const full = /^warning Remembering no more of the records B holds that our config refuses \(3, 0 MB\)/;
    for (const client of ["c1", "c2", "c3", "c4", "c5"]) reconciler.refused("B", newRecord(client));
    assert.deepEqual(shown(), digestOf(newRecord("c1"), newRecord("c2"), newRecord("c3")), "c4 and c5 left out");
    assert.equal(logs.count(full), 1, logs.lines.join("\n"));
    reconciler.refused("B", newRecord("c6"));
    assert.equal(logs.count(/Remembering no more/), 1, "said once");
    // Ours becomes the greater for c1: B takes it, c1's refused record is forgotten, and its room is taken by c4.
    const oursC1 = "AT A +0.000000001 c1 +1+1 9";
    ours.offer(recordOfLine(oursC1));
    assert.deepEqual(shown(), digestOf(oursC1, newRecord("c2"), newRecord("c3")));
    reconciler.refused("B", newRecord("c4"));
    assert.deepEqual(shown(), digestOf(oursC1, newRecord("c2"), newRecord("c3"), newRecord("c4")));
    // A new link with B starts from nothing remembered, and says so again if it fills up.
    reconciler.forget("B");
    for (const client of ["c7", "c8", "c9", "c10"]) reconciler.refused("B", newRecord(client));
    assert.equal(logs.count(/Remembering no more/), 2);
  },
);

Deno.test({
  name: 'PeerLink refused twice in a row says so once and is not "up" in between: it is up again once the ' +
    "neighbour answers otherwise",
  permissions: { net: ["127.0.0.1"] },
}, async () => {
  await using logs = await captureLogs();
  const ups = () => logs.count(/^info Link to Frozen is up$/);
  // Refuses the first two connections' HELLO, then answers PINGs; notes how many "is up" lines there were when the
  // third connection's HELLO came, before it answered anything.
  let upsAtThirdHello: number | undefined;
  const neighbour = heartbeatNeighbour(true, { refuseFirst: 2, onHello: () => upsAtThirdHello = ups() });
  const link = heartbeatLink(neighbour.port, { count: 0 }, {
    reconnectMinMs: 20,
    reconnectMaxMs: 100,
    heartbeatMs: 60_000,
    heartbeatTimeoutMs: 120_000,
  });
  link.start();
  await waitFor(() => logs.count(/^warning Frozen refused our link \(not-a-neighbour\)/) === 1, {
    what: "the link to say it was refused",
  });
  // Its wait after a refusal is 30 s: the test cuts each short, as a neighbour dialling us does.
  await waitFor(() => (link.poke(), neighbour.state.acceptedAt.length === 3), {
    stepMs: 5,
    what: "a third connection",
  });
  // "Up" is said once the neighbour answers the third connection's PING (it notes the HELLO before it answers):
  // `link.up`, true from the connection on, could come first on a loaded machine, before the neighbour read the HELLO.
  await waitFor(() => link.up && ups() >= 2, { what: "the link to come up and say so" });
  assert.equal(upsAtThirdHello, 1, "up once, before the first refusal: not again at the second");
  assert.equal(ups(), 2, "up again once the neighbour answered");
  assert.equal(logs.count(/refused our link/), 1, "the refusal said once");
  assert.equal(logs.count(/Link to Frozen is down/), 0, "a session refused is not said to be down");
  await link.close();
  await neighbour.close();
});

/** Server S, with a store of its own and one neighbour, F (played by a test). */
function serverS(neighbour = "F"): { store: LocationStore; host: PeerHost } {
  const store = new LocationStore();
  const host: PeerHost = {
    ...HOST,
    name: "S",
    reconciler: new Reconciler(store),
    recordRules: { servers: new Set(["S", neighbour]), maxClientIdBytes: 256, maxLineBytes: 8192 },
    isNeighbour: (name) => name === neighbour,
    catchUp: (record) => store.offer(record),
  };
  return { store, host };
}

/**
 * `host`'s peer port on 127.0.0.1, serving each link dialled to it, and a
 * neighbour's link dialled into it, played here: the connection, the lines
 * read from it (until it closes: `reading`), and `close()`, which closes the
 * connection and the port and settles once the served links have ended.
 */
async function dialledPeerPort(host: PeerHost, transport: PeerTransport) {
  const inbound: Promise<void>[] = [];
  const server = await transport.listen({
    host: "127.0.0.1",
    port: 0,
    maxConnections: 10,
    onPeer: (peer) =>
      inbound.push(
        servePeer(peer, host, {
          helloTimeoutMs: 5000,
          minExchangeIntervalMs: 100,
          heartbeatMs: 60_000,
          heartbeatTimeoutMs: 120_000,
          current: new Map(),
        }).done,
      ),
    onRefused: () => {},
  });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: (server.address() as { port: number }).port });
  const lines: string[] = [];
  const reading = read(conn, lines);
  return {
    conn,
    lines,
    reading,
    async close(): Promise<void> {
      try {
        conn.close();
      } catch { /* closed already */ }
      server.close();
      await reading;
      await Promise.all(inbound);
    },
  };
}

/** Lines read from `conn` into `into`, until it closes. */
async function read(conn: Deno.Conn, into: string[]): Promise<void> {
  const buffer = new Uint8Array(65536);
  const splitter = new TextLineSplitter(PEER_MAX_LINE_BYTES);
  try {
    for (let n; (n = await conn.read(buffer)) !== null;) into.push(...splitter.push(buffer.subarray(0, n)).lines);
  } catch { /* closed */ }
}

Deno.test({
  name: "each exchange a neighbour starts while its answer to ours is coming gets a digest of its own, once that " +
    "answer is whole",
  permissions: { net: ["127.0.0.1"] },
}, async () => {
  const zero = `DIGEST ${"0".repeat(16384)}\n`;
  const encoder = new TextEncoder();
  const { store, host } = serverS();
  // F, played here: its peer port takes S's link, and it dials S's.
  const fListener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const onSLink: string[] = [];
  let sLink: Deno.Conn | undefined;
  const accepting = (async () => {
    sLink = await fListener.accept();
    await read(sLink, onSLink);
  })();
  const transport = new PeerTransport({ files: null, handshakeTimeoutMs: 1000 });
  const sPort = await dialledPeerPort(host, transport);
  const { conn: fLink, lines: onFLink } = sPort;
  const link = oneSessionLink(fListener.addr.port, host, "F", transport);
  link.start();
  const digests = () => onFLink.filter((line) => line.startsWith("DIGEST ")).length;
  try {
    await waitFor(() => Promise.resolve(onSLink.some((line) => line.startsWith("DIGEST "))), { what: "S's digest" });
    // F starts answering S's exchange: a record, its digest not yet.
    await sLink!.write(encoder.encode("AT F +0.100000000 c1 +1.5+2.5 1700000000.5\n"));
    await waitFor(() => Promise.resolve(store.lineOf("c1") !== undefined), { what: "c1 at S" });
    // Two exchanges of F's meanwhile, a read apart: neither answered while F's answer is still coming.
    await fLink.write(encoder.encode("HELLO F\n" + zero));
    await waitFor(() => Promise.resolve(host.reconciler.underway("F") && true), { what: "S's exchange under way" });
    await fLink.write(encoder.encode(zero));
    await checkThroughout(() => assert.equal(digests(), 0, "answered while F's answer was coming"), {
      durationMs: 300,
    });
    // F's answer ends: each of F's exchanges is answered, with a line of its own.
    await sLink!.write(encoder.encode(zero));
    await waitFor(() => Promise.resolve(digests() === 2), { timeoutMs: 2000, what: "two digests back to F" });
    assert.equal(host.reconciler.underway("F"), false);
  } finally {
    await link.close();
    fListener.close();
    await accepting;
    sLink?.close();
    await sPort.close();
  }
});

/**
 * S with one neighbour, `neighbour`, played here: its peer port takes S's
 * link (`sLink`, and what S sends on it, `onSLink`), and it dials S's
 * (`nLink`, and what S sends back on it, `onNLink`) once S's digest came, as
 * two links that come up at once do. S holds one record the neighbour lacks.
 * Returns once S answered the neighbour's exchange (with its digest alone).
 */
async function crossedExchanges(neighbour: string) {
  const { store, host } = serverS(neighbour);
  const ours = `AT S +0.100000000 ours +1.5+2.5 1700000000.5`;
  store.offer(recordOfLine(ours));
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const onSLink: string[] = [];
  const sLink = Promise.withResolvers<Deno.Conn>();
  const accepting = (async () => {
    const conn = await listener.accept();
    sLink.resolve(conn);
    await read(conn, onSLink);
  })();
  const transport = new PeerTransport({ files: null, handshakeTimeoutMs: 1000 });
  const sPort = await dialledPeerPort(host, transport);
  const { conn: nLink, lines: onNLink } = sPort;
  const link = oneSessionLink(listener.addr.port, host, neighbour, transport);
  link.start();
  await waitFor(() => Promise.resolve(onSLink.some((line) => line.startsWith("DIGEST "))), { what: "S's digest" });
  await nLink.write(new TextEncoder().encode(`HELLO ${neighbour}\n${ZERO_DIGEST_LINE}`));
  await waitFor(() => Promise.resolve(onNLink.length > 0), { what: "S's answer to the neighbour's exchange" });
  const conn = await sLink.promise;
  return {
    ours,
    host,
    store,
    link,
    sLink: conn,
    onSLink,
    nLink,
    onNLink,
    /** The neighbour's side of its exchange begins (a record, `theirs`, stored at S), then S's link is cut. */
    async theirSideBeganOursCut(): Promise<void> {
      await nLink.write(new TextEncoder().encode(`AT ${neighbour} +0.100000000 theirs +1.5+2.5 1700000000.5\n`));
      await waitFor(() => Promise.resolve(store.lineOf("theirs") !== undefined), {
        what: "the neighbour's record at S",
      });
      conn.close();
      await waitFor(() => Promise.resolve(!link.up), { what: "S's link down" });
    },
    /** Settles once S closed F's link (or the test did). */
    nClosed: sPort.reading,
    async [Symbol.asyncDispose]() {
      await link.close();
      listener.close();
      try {
        conn.close();
      } catch { /* closed by the test */ }
      await accepting;
      await sPort.close();
    },
  };
}

/** The first word of each line: `AT`, `DIGEST`. */
function kinds(lines: string[]): string[] {
  return lines.map((line) => line.split(" ")[0]);
}

Deno.test({
  name: "when exchanges cross, the neighbour's is answered with our digest alone at once; once ours is answered, " +
    "nothing more goes on its link, and its late side on ours is stored",
  permissions: { net: ["127.0.0.1"] },
}, async () => {
  await using x = await crossedExchanges("F");
  assert.deepEqual(kinds(x.onNLink), ["DIGEST"]);
  assert.equal(x.host.reconciler.underway("F"), true);
  // F answers S's exchange (F's empty digest): S sends its record down its own link, and nothing on F's.
  await x.sLink.write(new TextEncoder().encode(ZERO_DIGEST_LINE));
  await waitFor(() => Promise.resolve(x.onSLink.includes(x.ours)), { what: "S's side of its exchange" });
  await checkThroughout(() => assert.deepEqual(kinds(x.onNLink), ["DIGEST"]), { durationMs: 300 });
  // F's own side, sent late on S's link (no digest of S's awaits an answer there): stored, not an unexpected line,
  // and not the beginning of an answer to S's next exchange.
  const late = "AT F +0.100000000 late-c +1.5+2.5 1700000000.5";
  await x.sLink.write(new TextEncoder().encode(late + "\n"));
  await waitFor(() => Promise.resolve(x.store.lineOf("late-c") === late), { what: "F's late record at S" });
  const digests = () => x.onSLink.filter((line) => line.startsWith("DIGEST ")).length;
  x.link.reconcile();
  await waitFor(() => Promise.resolve(digests() === 2), { what: "S's next exchange" });
  assert.equal(x.host.reconciler.beingAnswered("F"), false, "F's late side taken for the answer to S's next exchange");
});

Deno.test({
  name: "when exchanges cross and our link goes down before ours is answered, our side goes to the neighbour late, " +
    "on its link: our records, and no digest (the neighbour's link may be the only one that works)",
  permissions: { net: ["127.0.0.1"] },
}, async () => {
  await using x = await crossedExchanges("F");
  assert.deepEqual(kinds(x.onNLink), ["DIGEST"]);
  // S's link goes down, its exchange unanswered: without a late side, F would never get S's record.
  x.sLink.close();
  await waitFor(() => Promise.resolve(x.onNLink.includes(x.ours)), { what: "S's late side" });
  await checkThroughout(() => assert.deepEqual(kinds(x.onNLink), ["DIGEST", "AT"]), { durationMs: 300 });
});

Deno.test({
  name: "when exchanges cross and our link goes down before ours is answered, our side still goes to the neighbour " +
    "late once its records stop coming, though our link dialled again meanwhile and started exchanges that failed",
  permissions: { net: ["127.0.0.1"] },
}, async () => {
  await using x = await crossedExchanges("F");
  // F's side of its exchange begins (a record of F's): S's late side waits for it to stop coming (a second).
  await x.theirSideBeganOursCut();
  // Meanwhile S's link dials again twice, says its digest, and goes down: exchanges that send F nothing.
  for (let i = 0; i < 2; i++) {
    x.host.reconciler.started("F");
    x.host.reconciler.dropped("F");
  }
  await waitFor(() => Promise.resolve(x.onNLink.includes(x.ours)), { what: "S's late side" });
  assert.deepEqual(kinds(x.onNLink), ["DIGEST", "AT"]);
});

Deno.test({
  name: "a late side waits for an exchange of ours that began again meanwhile, and is not sent once that one is " +
    "answered (it sent our side)",
  permissions: { net: ["127.0.0.1"] },
}, async () => {
  await using x = await crossedExchanges("F");
  await x.theirSideBeganOursCut();
  // S's link comes back and starts an exchange while the late side waits for F's records to stop coming.
  x.host.reconciler.started("F");
  await checkThroughout(() => assert.deepEqual(kinds(x.onNLink), ["DIGEST"]), { durationMs: 1500 });
  // That exchange is answered: S sends its side on its own link, and the late side is called off.
  assert.deepEqual([...x.host.reconciler.finish("F", x.store.digest.words, 0, 0)], []);
  await checkThroughout(() => assert.deepEqual(kinds(x.onNLink), ["DIGEST"]), { durationMs: 500 });
});

Deno.test({
  name: "when exchanges cross and the answer to ours never begins, our side goes to the neighbour late, on its link, " +
    "once ours is taken for lost",
  permissions: { net: ["127.0.0.1"] },
}, async () => {
  await using x = await crossedExchanges("F");
  // F never answers S's exchange, and keeps S's link open (S's digest went into a black hole): 3 s on, S takes its
  // exchange for lost, with nothing else asking, and sends its side on F's link.
  const started = performance.now();
  await waitFor(() => Promise.resolve(x.onNLink.includes(x.ours)), { timeoutMs: 6000, what: "S's late side" });
  assert.ok(performance.now() - started >= 2500, "sent before S's exchange was taken for lost");
  assert.deepEqual(kinds(x.onNLink), ["DIGEST", "AT"]);
  assert.equal(x.host.reconciler.underway("F"), false);
});

Deno.test({
  name:
    "a neighbour that starts exchange after exchange while none can be answered has its link closed when it starts " +
    "one more with 16 waiting",
  permissions: { net: ["127.0.0.1"] },
}, async () => {
  await using x = await crossedExchanges("F");
  // F begins answering S's exchange (a record, no digest yet): F's exchanges now wait for that answer to be whole.
  await x.sLink.write(new TextEncoder().encode("AT F +0.100000000 c1 +1.5+2.5 1700000000.5\n"));
  await waitFor(() => Promise.resolve(x.store.lineOf("c1") !== undefined), { what: "c1 at S" });
  let closed = false;
  x.nClosed.then(() => closed = true);
  await x.nLink.write(new TextEncoder().encode(ZERO_DIGEST_LINE.repeat(16)));
  await checkThroughout(() => assert.equal(closed, false, "closed with 16 waiting"), { durationMs: 300 });
  await x.nLink.write(new TextEncoder().encode(ZERO_DIGEST_LINE));
  await waitFor(() => Promise.resolve(closed), { what: "F's link closed" });
  // None of the 17 was answered meanwhile.
  assert.deepEqual(kinds(x.onNLink), ["DIGEST"]);
});

Deno.test({
  name: "the records of a few buckets among many clients go out whole, answer and dialler's side alike, through the " +
    "pauses of the store's walk",
  permissions: { net: ["127.0.0.1"] },
}, async () => {
  const { store, host } = serverS();
  // S and F hold the same 40,000 clients, none in bucket 5; S holds one more, in bucket 5, at the end of its map:
  // either walk for bucket 5 passes over 40,000 clients (two pauses) before its one line.
  const theirs = new LocationStore();
  const line = (id: string) => `AT S +0.100000000 ${id} +1.5+2.5 1700000000.5`;
  for (let i = 0, n = 0; n < 40_000; i++) {
    if (bucketOf(`c${i}`) === 5) continue;
    store.offer(recordOfLine(line(`c${i}`)));
    theirs.offer(recordOfLine(line(`c${i}`)));
    n++;
  }
  let x = 0;
  while (bucketOf(`x${x}`) !== 5) x++;
  const only = line(`x${x}`);
  store.offer(recordOfLine(only));
  const fDigest = new TextEncoder().encode(`DIGEST ${theirs.digest.toHex()}\n`);
  const transport = new PeerTransport({ files: null, handshakeTimeoutMs: 1000 });
  const sPort = await dialledPeerPort(host, transport);
  const { conn: fLink, lines: onFLink } = sPort;
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const link = oneSessionLink(listener.addr.port, host, "F", transport);
  const onSLink: string[] = [];
  let sLink: Deno.Conn | undefined;
  try {
    // F's exchange: S answers with its one record, then its digest.
    await fLink.write(new TextEncoder().encode("HELLO F\n"));
    await fLink.write(fDigest);
    await waitFor(() => Promise.resolve(onFLink.some((l) => l.startsWith("DIGEST "))), { what: "S's answer" });
    assert.deepEqual(onFLink.map((l) => l.startsWith("DIGEST ") ? "DIGEST" : l), [only, "DIGEST"]);
    // S's exchange: F answers with its digest alone, and S sends its side, the one record.
    const accepting = listener.accept();
    link.start();
    sLink = await accepting;
    const sReading = read(sLink, onSLink);
    await waitFor(() => Promise.resolve(onSLink.some((l) => l.startsWith("DIGEST "))), { what: "S's digest" });
    await sLink.write(fDigest);
    await waitFor(() => Promise.resolve(onSLink.includes(only)), { what: "S's side of its exchange" });
    assert.deepEqual(onSLink.filter((l) => l.startsWith("AT ")), [only]);
    await link.close();
    await sReading;
  } finally {
    await link.close();
    sLink?.close();
    listener.close();
    await sPort.close();
  }
});

for (const tls of [true, false]) {
  Deno.test({
    name: `stopReading() stops a ${
      tls ? "TLS" : "plain-text"
    } peer link's reads at either end, so the other end's writes back up, until startReading()`,
    permissions: HERD_TEST_PERMISSIONS,
  }, async () => {
    // Only the herd's certificates are used: no server is started.
    await using herd = await TestHerd.create({
      placesUrl: "http://127.0.0.1:9/unused",
      names: ["A", "B"],
      links: [["A", "B"]],
      places: { provider: "offline" },
      tls,
    });
    const acceptor = new PeerTransport({ files: herd.tlsFiles("B"), handshakeTimeoutMs: 5000 });
    const dialler = new PeerTransport({ files: herd.tlsFiles("A"), handshakeTimeoutMs: 5000 });
    acceptor.load();
    dialler.load();
    const accepted = Promise.withResolvers<Socket>();
    const server = await acceptor.listen({
      host: "127.0.0.1",
      port: 0,
      maxConnections: 4,
      onPeer: (peer) => accepted.resolve(peer.socket),
      onRefused: (address, reason) => accepted.reject(new Error(`${address} refused: ${reason}`)),
    });
    const dialled = await dialler.dial("127.0.0.1", (server.address() as { port: number }).port, "B");
    const acceptedSocket = await accepted.promise;
    try {
      const block = new Uint8Array(65536).fill(65);
      for (const [reader, writer] of [[acceptedSocket, dialled], [dialled, acceptedSocket]]) {
        let received = 0;
        reader.on("data", (chunk: Uint8Array) => received += chunk.byteLength);
        stopReading(reader);
        const before = received;
        // The writer writes for as long as the socket takes its writes. With the reader's reads stopped, the
        // kernel's buffers between them fill (a few MB on loopback) and the writer's drain stops coming; a reader
        // still reading into memory takes hundreds of MB a second.
        let written = 0;
        while (written < 256 * 2 ** 20) {
          while (writer.write(block)) written += block.byteLength;
          written += block.byteLength;
          const drained = await Promise.race([
            new Promise<boolean>((resolve) => writer.once("drain", () => resolve(true))),
            delay(500).then(() => false),
          ]);
          if (!drained) break;
        }
        assert.ok(written < 64 * 2 ** 20, `the writer got ${written} bytes out while the reader was stopped`);
        assert.equal(received, before, "no data events while stopped");
        startReading(reader);
        await waitFor(() => received - before === written, { what: `all ${written} bytes read after startReading()` });
        reader.removeAllListeners("data");
      }
    } finally {
      dialled.destroy();
      acceptedSocket.destroy();
      await new Promise((resolve) => server.close(resolve));
    }
  });
}

// A lag of 3.2 s too: past the 3 s after which an exchange with no answer begun is taken for lost anyway, which must
// not keep the link from starting another as it catches up.
for (const lagMs of [0, 3200]) {
  Deno.test({
    name: "an exchange of ours left unanswered while the link lagged is taken for lost once it catches up: another " +
      `starts at once (the link lagging ${lagMs} ms more)`,
    permissions: { net: ["127.0.0.1"] },
  }, async () => {
    const { host } = serverS();
    // F, played here: its peer port takes S's link; it reads what comes, and answers only what the test says.
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const lines: string[] = [];
    let conn: Deno.Conn | undefined;
    const reading = (async () => {
      conn = await listener.accept();
      await read(conn, lines);
    })();
    const link = oneSessionLink(listener.addr.port, host, "F");
    link.start();
    const digests = () => lines.filter((line) => line.startsWith("DIGEST ")).length;
    try {
      // The exchange at link-up: its digest goes into a black hole, as does the acknowledgement of a record after it,
      // and the link lags.
      await waitFor(() => digests() === 1, { what: "S's digest at link-up" });
      link.sendAcknowledged(record("c1", 1), 200, () => {});
      await waitFor(() => link.lagging, { what: "the link to lag" });
      if (lagMs === 0) assert.equal(host.reconciler.underway("F"), true);
      await delay(lagMs);
      // The hole heals: F acknowledges the next record in time, and the link catches up.
      link.sendAcknowledged(record("c2", 2), 200, () => {});
      const sent = await waitFor(() => lines.find((line) => line.includes(" c2 ")), { what: "c2 at F" });
      const fields = sent.split(" ");
      await conn!.write(new TextEncoder().encode(`ACK ${fields[fields.length - 2]}\n`));
      await waitFor(() => !link.lagging, { what: "the link to catch up" });
      // The exchange lost is not waited on for 30 s: another starts now.
      await waitFor(() => digests() === 2, { timeoutMs: 5_000, what: "S's digest of a new exchange" });
      assert.equal(host.reconciler.underway("F"), true, "the new one is under way");
    } finally {
      await link.close();
      conn?.close();
      listener.close();
      await reading;
    }
  });
}

Deno.test("Reconciler.forgetUnanswered() forgets an exchange of ours whose answer has not begun, never one being answered", () => {
  const reconciler = new Reconciler(new LocationStore());
  assert.equal(reconciler.forgetUnanswered("F"), false, "none under way");
  reconciler.started("F");
  assert.equal(reconciler.forgetUnanswered("F"), true);
  assert.equal(reconciler.underway("F"), false);
  reconciler.started("F");
  reconciler.receiving("F");
  assert.equal(reconciler.forgetUnanswered("F"), false, "its records are coming: it was not lost");
  assert.equal(reconciler.underway("F"), true);
});

Deno.test("Reconciler takes an exchange of ours for lost once no answer began within 3 s while we sent nothing", async () => {
  const reconciler = new Reconciler(new LocationStore());
  await using logs = await captureLogs();
  {
    reconciler.started("F");
    const started = performance.now();
    assert.equal(reconciler.underway("F"), true);
    await waitFor(() => !reconciler.underway("F"), { what: "the exchange to be taken for lost" });
    assert.ok(performance.now() - started >= 2990, `taken for lost after ${performance.now() - started} ms`);
    assert.equal(logs.count(/^info Our exchange with F is taken for lost/), 1);
    // Records of a reconciliation written to the neighbour meanwhile (passed on) count the 3 s from their end.
    reconciler.started("F");
    await delay(2500);
    reconciler.sentRecordsTo("F");
    const sent = performance.now();
    await checkThroughout(() => assert.equal(reconciler.underway("F"), true), { durationMs: 1500, stepMs: 100 });
    await waitFor(() => !reconciler.underway("F"), { what: "the exchange to be taken for lost" });
    assert.ok(performance.now() - sent >= 2990, `taken for lost ${performance.now() - sent} ms after the records`);
    // One whose answer is coming is not, however long it takes.
    reconciler.started("F");
    reconciler.receiving("F");
    await checkThroughout(() => assert.equal(reconciler.underway("F"), true), { durationMs: 3500, stepMs: 100 });
  }
});

/** F's peer port, played here: it takes S's link and keeps what S writes on it; `conn` is F's end. */
function fPort() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const lines: string[] = [];
  const conn = Promise.withResolvers<Deno.Conn>();
  const accepting = (async () => {
    const accepted = await listener.accept();
    conn.resolve(accepted);
    await read(accepted, lines);
  })();
  return {
    port: listener.addr.port,
    lines,
    conn: conn.promise,
    async close() {
      listener.close();
      (await conn.promise).close();
      await accepting;
    },
  };
}

/**
 * A `waitFor` step that plays a receiver: it answers, on `conn`, the last
 * of the marks in `lines` not answered yet, and is done once `done()`.
 */
function answeringMarks(conn: Deno.Conn, lines: string[], done: () => boolean): () => Promise<boolean> {
  let answered = 0;
  return async () => {
    const { marks } = catchUpOf(lines);
    if (marks.length > answered) {
      answered = marks.length;
      await conn.write(new TextEncoder().encode(`MARKED ${marks[marks.length - 1]}\n`));
    }
    return done();
  };
}

/** Asserts that `lines[at]` comes right after the last mark of a new connection's window: nothing of the catch-up between. */
function assertRightAfterWindow(lines: string[], at: number, what: string): void {
  const lastMark = lines.indexOf(`MARK ${BULK_WINDOW_START}`);
  assert.equal(at, lastMark + 1, `${at - 1 - lastMark} lines between the last mark and ${what}`);
}

/** Records in the catch-ups of the flow-control tests: many 64 KiB slices, at about 55 bytes each. */
const CATCH_UP_RECORDS = 20_000;

/** {@linkcode serverS} with `count` records F lacks in its store. */
function sHolding(count: number): { store: LocationStore; host: PeerHost } {
  const s = serverS();
  for (let i = 0; i < count; i++) s.store.offer(recordOfLine(`AT S +0.100000000 c${i} +1.5+2.5 1700000000.${i}`));
  return s;
}

/** How many of `lines` are reconciliation records (six-field AT lines), and the `MARK`s among them, in order. */
function catchUpOf(lines: string[]): { records: number; marks: number[] } {
  let records = 0;
  const marks: number[] = [];
  for (const line of lines) {
    if (line.startsWith("AT ") && line.split(" ").length === 6) records++;
    else if (line.startsWith("MARK ")) marks.push(Number(line.slice(5)));
  }
  return { records, marks };
}

Deno.test({
  name: "a server answers a neighbour's MARK with MARKED once the records before it are handled, on either link, " +
    "once per read for the greatest",
  permissions: { net: ["127.0.0.1"] },
}, async () => {
  const encoder = new TextEncoder();
  const { store, host } = serverS();
  const f = fPort();
  const onSLink = f.lines;
  const transport = new PeerTransport({ files: null, handshakeTimeoutMs: 1000 });
  const sPort = await dialledPeerPort(host, transport);
  const { conn: fLink, lines: onFLink } = sPort;
  const link = oneSessionLink(f.port, host, "F", transport);
  link.start();
  const marked = (lines: string[]) => lines.filter((line) => line.startsWith("MARKED "));
  try {
    // On F's link to S (S accepts): records, then marks.
    await fLink.write(encoder.encode("HELLO F\nAT F +0.100000000 a1 +1+1 1700000000.1\nMARK 1\n"));
    await waitFor(() => marked(onFLink).length === 1, { what: "MARKED 1 on F's link" });
    assert.deepEqual(marked(onFLink), ["MARKED 1"]);
    assert.equal(store.lineOf("a1"), "AT F +0.100000000 a1 +1+1 1700000000.1", "handled before the answer");
    await fLink.write(encoder.encode("AT F +0.100000000 a2 +1+1 1700000000.1\nMARK 2\nMARK 3\n"));
    await waitFor(() => marked(onFLink).length === 2, { what: "MARKED 3 on F's link" });
    assert.deepEqual(marked(onFLink), ["MARKED 1", "MARKED 3"], "one answer for the read, its greatest mark");
    assert.notEqual(store.lineOf("a2"), undefined);
    // On S's link to F (S dials): the same, whatever the exchange's state.
    await (await f.conn).write(encoder.encode("AT F +0.100000000 b1 +1+1 1700000000.1\nMARK 1\n"));
    await waitFor(() => marked(onSLink).length === 1, { what: "MARKED 1 on S's link" });
    assert.deepEqual(marked(onSLink), ["MARKED 1"]);
    assert.equal(store.lineOf("b1"), "AT F +0.100000000 b1 +1+1 1700000000.1");
  } finally {
    await link.close();
    await f.close();
    await sPort.close();
  }
});

Deno.test({
  name: "a server sending its side of an exchange keeps only its window of slices unanswered: a live record written " +
    "meanwhile goes ahead of the rest, which follows each MARKED, every record once",
  permissions: { net: ["127.0.0.1"] },
}, async () => {
  const encoder = new TextEncoder();
  const count = CATCH_UP_RECORDS;
  const { host } = sHolding(count);
  const f = fPort();
  const onSLink = f.lines;
  const link = oneSessionLink(f.port, host, "F");
  link.start();
  try {
    const conn = await f.conn;
    await waitFor(() => onSLink.some((line) => line.startsWith("DIGEST ")), { what: "S's digest" });
    // F holds nothing: its answer is its digest alone, and S sends its side, every record.
    await conn.write(encoder.encode(ZERO_DIGEST_LINE));
    await waitFor(() => catchUpOf(onSLink).marks.length === BULK_WINDOW_START, { what: "S's first window of marks" });
    // Unanswered, they hold the rest back: a live record written now comes right after the last mark.
    link.sendAcknowledged(recordOfLine("AT S +0.100000000 live +1+1 1700000001.5"), 1000, () => {});
    const live = await waitFor(() => onSLink.findIndex((line) => line.includes(" live ")) + 1);
    assertRightAfterWindow(onSLink, live - 1, "the live record");
    const held = catchUpOf(onSLink);
    assert.ok(held.records < count && held.records > 0, `${held.records} of ${count} records so far`);
    // F answers each mark as it comes from now on: the rest follows, in slices, each marked.
    await waitFor(answeringMarks(conn, onSLink, () => catchUpOf(onSLink).records === count), {
      what: "every record at F",
    });
    const { marks } = catchUpOf(onSLink);
    assert.deepEqual(marks, marks.map((_, i) => i + 1), "marks count up from 1");
    assert.ok(marks.length > 2 * BULK_WINDOW_START, `${marks.length} slices`);
  } finally {
    await link.close();
    await f.close();
  }
});

Deno.test({
  name: "a server answering an exchange keeps only its window of slices unanswered: an acknowledgement written " +
    "meanwhile goes ahead of the rest, which follows each MARKED, its digest last",
  permissions: { net: ["127.0.0.1"] },
}, async () => {
  const encoder = new TextEncoder();
  const count = CATCH_UP_RECORDS;
  const { host } = sHolding(count);
  const transport = new PeerTransport({ files: null, handshakeTimeoutMs: 1000 });
  const sPort = await dialledPeerPort(host, transport);
  const { conn: fLink, lines: onFLink } = sPort;
  try {
    // F holds nothing and asks: S answers with every record, then its digest.
    await fLink.write(encoder.encode("HELLO F\n" + ZERO_DIGEST_LINE));
    await waitFor(() => catchUpOf(onFLink).marks.length === BULK_WINDOW_START, { what: "S's first window of marks" });
    // A live record of F's, waited on: S's acknowledgement comes right after the last mark.
    await fLink.write(encoder.encode("AT F +0.100000000 live +1+1 1700000001.5 7 1000\n"));
    const ack = await waitFor(() => onFLink.indexOf("ACK 7") + 1);
    assertRightAfterWindow(onFLink, ack - 1, "the acknowledgement");
    assert.ok(catchUpOf(onFLink).records < count);
    await waitFor(answeringMarks(fLink, onFLink, () => onFLink.some((line) => line.startsWith("DIGEST "))), {
      what: "S's digest, after its answer",
    });
    assert.equal(catchUpOf(onFLink).records, count, "every record before the digest");
    assert.ok(catchUpOf(onFLink).marks.length > 2 * BULK_WINDOW_START);
  } finally {
    await sPort.close();
  }
});

Deno.test({
  name: "records passed on from another neighbour's catch-up, a few hundred a turn, keep to the window as our own " +
    "side does: a live record passes them",
  permissions: { net: ["127.0.0.1"] },
}, async () => {
  const { host } = serverS();
  const f = fPort();
  const link = oneSessionLink(f.port, host, "F");
  link.start();
  const count = CATCH_UP_RECORDS;
  try {
    await waitFor(() => f.lines.includes("HELLO S"), { what: "S's link up" });
    const feeding = (async () => {
      for (let i = 0; i < count; i += 500) {
        for (let j = i; j < i + 500; j++) {
          link.sendUnacknowledged(recordOfLine(`AT S +0.100000000 c${j} +1.5+2.5 1700000000.${j}`));
        }
        await new Promise((resolve) => setTimeout(resolve, 0));
      }
    })();
    await waitFor(() => catchUpOf(f.lines).marks.length === BULK_WINDOW_START, { what: "S's first window of marks" });
    link.sendAcknowledged(recordOfLine("AT S +0.100000000 live +1+1 1700000001.5"), 1000, () => {});
    const live = await waitFor(() => f.lines.findIndex((line) => line.includes(" live ")) + 1);
    assertRightAfterWindow(f.lines, live - 1, "the live record");
    assert.ok(catchUpOf(f.lines).records < count);
    await feeding;
    await waitFor(answeringMarks(await f.conn, f.lines, () => catchUpOf(f.lines).records === count), {
      what: "every record passed on at F",
    });
  } finally {
    await link.close();
    await f.close();
  }
});

Deno.test({
  name: "a neighbour that answers none of our marks (an older version) gets our side anyway once the patience runs " +
    "out, with no more marks, and it is logged",
  permissions: { net: ["127.0.0.1"] },
}, async () => {
  await using logs = await captureLogs();
  const count = CATCH_UP_RECORDS;
  const { host } = sHolding(count);
  const f = fPort();
  const link = oneSessionLink(f.port, host, "F", undefined, { heartbeatMs: 50, markPatienceMs: 300 });
  link.start();
  try {
    await waitFor(() => f.lines.some((line) => line.startsWith("DIGEST ")), { what: "S's digest" });
    await (await f.conn).write(new TextEncoder().encode(ZERO_DIGEST_LINE));
    await waitFor(() => catchUpOf(f.lines).records === count, { what: "every record at F, no mark answered" });
    assert.deepEqual(
      catchUpOf(f.lines).marks,
      Array.from({ length: BULK_WINDOW_START }, (_, i) => i + 1),
      "the first window's marks, then none",
    );
    assert.equal(
      logs.count(/^warning F answered none of the marks in our reconciliation records/),
      1,
      logs.lines.join("\n"),
    );
  } finally {
    await link.close();
    await f.close();
  }
});

Deno.test({
  name: "a lagging link still sends its probe while records passed on are held by the window",
  permissions: { net: ["127.0.0.1"] },
}, async () => {
  const { host } = serverS();
  const f = fPort();
  const link = oneSessionLink(f.port, host, "F", undefined, { heartbeatMs: 50 });
  link.start();
  const probed = "AT S +0.100000000 probed +1+1 1700000001.5";
  const copies = () => f.lines.filter((line) => line.startsWith(probed + " ")).length;
  try {
    await waitFor(() => f.lines.includes("HELLO S"), { what: "S's link up" });
    // F acknowledges nothing and answers no mark: the link lags, and the records passed on stop at the window.
    link.sendAcknowledged(recordOfLine(probed), 200, () => {});
    await waitFor(() => link.lagging, { what: "the link to lag" });
    for (let i = 0; i < 20_000; i++) {
      link.sendUnacknowledged(recordOfLine(`AT S +0.100000000 c${i} +1.5+2.5 1700000000.${i}`));
    }
    await waitFor(() => catchUpOf(f.lines).marks.length === BULK_WINDOW_START, { what: "the window's marks" });
    assert.ok(link.queued > 0, "records passed on are held");
    // The next heartbeat sends the last record waited on again, to see whether the link caught up (and the ones after
    // it too: on a busy machine more than one may come between two looks).
    await waitFor(() => copies() >= 2, { what: "the probe" });
  } finally {
    await link.close();
    await f.close();
  }
});
