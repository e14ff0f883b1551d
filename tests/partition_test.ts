/**
 * Network faults between real server processes: a fault proxy sits in front
 * of every server's peer port (the config's `peerAddress`), and the tests
 * cut, delay and black-hole single links of a line herd A–B–C.
 *
 * Steps named "[catch-up]" check that records that missed a server during a
 * partition reach it after the heal (reconciliation on link-up and
 * periodically).
 */

import assert from "node:assert/strict";
import { CUT, delay, DROP, PASS, throttle } from "./testing/fault_proxy.ts";
import { exchange, HERD_TEST_PERMISSIONS, suiteMode, TestHerd, type TestHerdOptions } from "./testing/herd.ts";
import { checkThroughout, delay as pause, waitFor } from "./testing/wait.ts";
import { PeerProbe } from "./testing/peer_probe.ts";

/** TLS peer links, or plain text when run from plaintext_test.ts. */
const MODE = suiteMode(import.meta.url);

/** How long a [catch-up] step waits for a missed record after the heal. */
const CATCH_UP_TIMEOUT_MS = 10_000;
/** How long a record must stay away from a server on the far side of a fault. */
const ABSENT_MS = 600;

/** A line herd A–B–C whose peers dial each other through one fault proxy per server; WHATSAT answers offline. */
function lineHerd(peers: TestHerdOptions["peers"]): Promise<TestHerd> {
  return TestHerd.create({
    tls: MODE.tls,
    placesUrl: "http://127.0.0.1:9/unused",
    names: ["A", "B", "C"],
    links: [["A", "B"], ["B", "C"]],
    places: { provider: "offline" },
    // Reconciling every second keeps [catch-up] well inside its timeout: after a black hole heals no link comes
    // up again, so the periodic reconciliation is the only way the lost records come back.
    peers: { reconcileIntervalMs: 1000, ...peers },
    faultProxies: true,
    admin: true,
  });
}

/** The default five servers, dialling each other directly or through a fault proxy per link; WHATSAT answers offline. */
function defaultHerd(peers: TestHerdOptions["peers"], admin = false, faultProxies = false): Promise<TestHerd> {
  return TestHerd.create({
    tls: MODE.tls,
    placesUrl: "http://127.0.0.1:9/unused",
    places: { provider: "offline" },
    peers,
    admin,
    faultProxies,
  });
}

/**
 * Waits until the sum of `series` over `names` stops changing (what is on
 * its way has arrived), and returns it.
 */
async function settledSum(herd: TestHerd, series: string, names?: string[], stepMs = 100): Promise<number> {
  let last = await herd.metricSum(series, names);
  await waitFor(async () => {
    const now = await herd.metricSum(series, names);
    const settled = now === last;
    last = now;
    return settled;
  }, { what: `${series} to stop changing`, stepMs });
  return last;
}

/**
 * Waits until `name`'s log has a line matching `pattern`, among the lines
 * written after `marks` was taken (see {@linkcode logMarks}) when given: a
 * line from earlier (a dial through a proxy before its server was up, say)
 * does not count.
 */
async function logLine(herd: TestHerd, name: string, pattern: RegExp, marks?: Map<string, number>): Promise<void> {
  await waitFor(
    async () => (await herd.log(name)).slice(marks?.get(name) ?? 0).split("\n").some((line) => pattern.test(line)),
    { timeoutMs: 10_000, what: `${name}'s log to say ${pattern}` },
  );
}

/** How far each of `names`' logs goes now, for {@linkcode logLine}. */
async function logMarks(herd: TestHerd, names: string[]): Promise<Map<string, number>> {
  return new Map(await Promise.all(names.map(async (name) => [name, (await herd.log(name)).length] as const)));
}

let clock = 1_700_000_000;

/** Sends an IAMAT for `id` at `name` with a client time later than any before; returns the AT line and how long the reply took. */
async function iamat(herd: TestHerd, name: string, id: string): Promise<{ line: string; ms: number }> {
  const time = ++clock;
  const start = performance.now();
  const reply = await exchange(herd.port(name), `IAMAT ${id} +1+1 ${time}\n`);
  const ms = performance.now() - start;
  assert.match(reply, new RegExp(`^AT ${name} \\S+ ${id} \\+1\\+1 ${time}\\n$`));
  return { line: reply.trimEnd(), ms };
}

/** The AT line `name` holds for `id`, or undefined when it knows no such client. */
async function recordAt(herd: TestHerd, name: string, id: string): Promise<string | undefined> {
  const reply = await exchange(herd.port(name), `WHATSAT ${id} 1 0\n`);
  if (reply.startsWith("? ")) return undefined;
  assert.ok(reply.startsWith("AT "), `unexpected WHATSAT reply from ${name}: ${reply.slice(0, 200)}`);
  return reply.slice(0, reply.indexOf("\n"));
}

/** Asserts that `name` holds exactly `line` for `id` now, with no waiting. */
async function assertHolds(herd: TestHerd, name: string, id: string, line: string): Promise<void> {
  assert.equal(await recordAt(herd, name, id), line, `${name} must hold ${id} as soon as the IAMAT is answered`);
}

/** Polls until `name` holds exactly `line` for `id`. */
async function waitHolds(herd: TestHerd, name: string, id: string, line: string, timeoutMs: number) {
  await waitFor(async () => await recordAt(herd, name, id) === line, { timeoutMs, what: `${name} to hold ${line}` });
}

/** An IAMAT at `from` for a new client (`prefix`-random), then waits until each of `names` holds it (2 s each). */
async function reachesAll(herd: TestHerd, from: string, prefix: string, names: string[]): Promise<void> {
  const id = `${prefix}-${crypto.randomUUID().slice(0, 8)}`;
  const { line } = await iamat(herd, from, id);
  for (const name of names) await waitHolds(herd, name, id, line, 2000);
}

/** Watches `names` for `ABSENT_MS` and fails if any of them ever learns of `id`. */
async function assertStaysAway(herd: TestHerd, names: string[], id: string): Promise<void> {
  await checkThroughout(async () => {
    for (const name of names) {
      const line = await recordAt(herd, name, id);
      assert.equal(line, undefined, `${id} must not reach ${name} across the fault`);
    }
  }, { durationMs: ABSENT_MS, stepMs: 50 });
}

/**
 * Waits until a fresh record from `from` reaches `to`. A record flooded while
 * a link is still reconnecting skips it, so each round sends a newer one.
 */
async function waitFlowing(herd: TestHerd, from: string, to: string, timeoutMs: number): Promise<void> {
  const id = `flow-${from}-${to}-${crypto.randomUUID().slice(0, 8)}`;
  let line = "";
  await waitFor(async () => {
    if (line !== "" && await recordAt(herd, to, id) === line) return true;
    line = (await iamat(herd, from, id)).line;
    return await recordAt(herd, to, id) === line;
  }, { timeoutMs, what: `a record from ${from} to reach ${to}` });
}

Deno.test({
  name: "a partition keeps records on their side of a cut link, and records flow again after the heal" + MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async (t) => {
  await using herd = await lineHerd({ ackTimeoutMs: 300 });
  await herd.startAll();
  herd.link("B", "C", CUT);
  const cutAt = performance.now();
  const dialsBefore = herd.proxy("C").stats("B").connections + herd.proxy("B").stats("C").connections;
  let fromA = "";
  let fromC = "";

  await t.step("during the partition an IAMAT at A reaches B but not C", async () => {
    fromA = (await iamat(herd, "A", "split-a")).line;
    await assertHolds(herd, "A", "split-a", fromA);
    await assertHolds(herd, "B", "split-a", fromA);
    await assertStaysAway(herd, ["C"], "split-a");
  });

  await t.step("during the partition an IAMAT at C stays on C", async () => {
    fromC = (await iamat(herd, "C", "split-c")).line;
    await assertHolds(herd, "C", "split-c", fromC);
    await assertStaysAway(herd, ["B", "A"], "split-c");
  });

  await t.step("while cut, no connection between B and C stays open and A–B is untouched", () => {
    assert.equal(herd.proxy("C").stats("B").open, 0, "B has no connection to C");
    assert.equal(herd.proxy("B").stats("C").open, 0, "C has no connection to B");
    assert.equal(herd.proxy("B").stats("A").open, 1, "A's link to B is untouched");
  });

  await t.step({
    name: "[backoff] while cut, B and C back off instead of redialing at once",
    // PeerLink once reset its backoff on every successful connect, so a neighbour that accepts and closes at once
    // (this cut, or a server refusing our HELLO) was redialled about 1500 times a second.
    fn: () => {
      const seconds = (performance.now() - cutAt) / 1000;
      const dials = herd.proxy("C").stats("B").connections + herd.proxy("B").stats("C").connections - dialsBefore;
      assert.ok(dials / seconds < 50, `${dials} dials in ${seconds.toFixed(1)} s across a cut link`);
    },
  });

  herd.link("B", "C", PASS);

  await t.step("after the heal new records flow both ways", async () => {
    await waitFlowing(herd, "A", "C", 10_000);
    await waitFlowing(herd, "C", "A", 10_000);
  });

  await t.step("[catch-up] after the heal the records from during the partition reach the other side", async () => {
    if (fromA !== "") await waitHolds(herd, "C", "split-a", fromA, CATCH_UP_TIMEOUT_MS);
    if (fromC !== "") {
      await waitHolds(herd, "B", "split-c", fromC, CATCH_UP_TIMEOUT_MS);
      await waitHolds(herd, "A", "split-c", fromC, CATCH_UP_TIMEOUT_MS);
    }
  });
});

Deno.test({
  name: "a slow link within the ack budget: a reply waits for the server's neighbours, not for servers further away" +
    MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async (t) => {
  // The default ackScope, "neighbours": 200 ms each way on A–B makes a record's round trip there 400 ms.
  await using herd = await lineHerd({ ackTimeoutMs: 1500 });
  await herd.startAll();
  herd.link("A", "B", delay(200));

  await t.step("an IAMAT at A waits for B, its neighbour behind the slow link, and B holds the record", async () => {
    const { line, ms } = await iamat(herd, "A", "near-a");
    assert.ok(ms >= 380, `the reply waits for B's ack across 2 × 200 ms, took ${ms.toFixed(0)} ms`);
    assert.ok(ms < 1500 + 500, `the reply never waits past the budget, took ${ms.toFixed(0)} ms`);
    await assertHolds(herd, "B", "near-a", line);
    await waitHolds(herd, "C", "near-a", line, 5_000);
  });

  await t.step("an IAMAT at C waits only for B: A, two hops away over the slow link, gets it after", async () => {
    const { line, ms } = await iamat(herd, "C", "near-c");
    assert.ok(ms < 380, `the reply needs no round trip over the slow link, took ${ms.toFixed(0)} ms`);
    await assertHolds(herd, "B", "near-c", line);
    await waitHolds(herd, "A", "near-c", line, 5_000);
  });
});

Deno.test({
  name:
    'with ackScope "herd", a slow link within the ack budget: replies wait for it and every server holds the record' +
    MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async (t) => {
  // 200 ms each way through the proxy makes a record's round trip on A–B 400 ms; the 1500 ms budget covers it (and B
  // passes half, 750 ms, on to its own neighbours), so no link is marked lagging and every reply carries the guarantee.
  await using herd = await lineHerd({ ackTimeoutMs: 1500, ackScope: "herd" });
  await herd.startAll();
  herd.link("A", "B", delay(200));

  await t.step("an IAMAT at A, behind the slow link, is answered once B and C hold the record", async () => {
    const { line, ms } = await iamat(herd, "A", "slow-a");
    assert.ok(ms >= 380, `the reply waits for B's ack across 2 × 200 ms, took ${ms.toFixed(0)} ms`);
    assert.ok(ms < 1500 + 500, `the reply never waits past the budget, took ${ms.toFixed(0)} ms`);
    await assertHolds(herd, "B", "slow-a", line);
    await assertHolds(herd, "C", "slow-a", line);
  });

  await t.step("an IAMAT at C is answered once A, two hops away over the slow link, holds it", async () => {
    const { line, ms } = await iamat(herd, "C", "slow-c");
    assert.ok(ms < 1500 + 500, `took ${ms.toFixed(0)} ms`);
    await assertHolds(herd, "B", "slow-c", line);
    await assertHolds(herd, "A", "slow-c", line);
  });

  await t.step("once the delay is lifted, replies need no slow round trip again", async () => {
    herd.link("A", "B", PASS);
    // Bytes already held keep their order, so give the held acks their 200 ms before timing.
    await waitFlowing(herd, "A", "C", 5_000);
    const { ms } = await iamat(herd, "C", "fast-c");
    assert.ok(ms < 380, `with the delay lifted a reply needs no 400 ms round trip, took ${ms.toFixed(0)} ms`);
  });
});

Deno.test({
  name:
    'with ackScope "herd", a link slower than the ack budget does not stall the herd: replies come within the budget, then at once' +
    MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async (t) => {
  // The A–B round trip (400 ms) is longer than the 250 ms budget: the first record across it waits the budget out
  // (B only waits 125 ms, half of what C gave it), the link is marked lagging, and then nobody waits on it.
  const budget = 250;
  await using herd = await lineHerd({ ackTimeoutMs: budget, ackScope: "herd" });
  await herd.startAll();
  herd.link("A", "B", delay(200));

  await t.step("an IAMAT at C, whose neighbour is healthy, is answered within the budget and B holds it", async () => {
    const { line, ms } = await iamat(herd, "C", "lag-c0");
    assert.ok(ms < budget + 200, `took ${ms.toFixed(0)} ms`);
    await assertHolds(herd, "B", "lag-c0", line);
    await waitHolds(herd, "A", "lag-c0", line, 5_000);
  });

  await t.step("once B marks A lagging, IAMATs at B and C answer promptly and still reach everyone", async () => {
    await waitFor(() => /Link to "?A"? is lagging/.test(herd.stderr("B")), {
      timeoutMs: 5_000,
      what: "B to log that its link to A is lagging",
    });
    for (let i = 0; i < 5; i++) {
      for (const name of ["B", "C"]) {
        const { line, ms } = await iamat(herd, name, `prompt-${name}-${i}`);
        assert.ok(ms < budget, `IAMAT ${i} at ${name} must not wait on the lagging link, took ${ms.toFixed(0)} ms`);
        await assertHolds(herd, "B", `prompt-${name}-${i}`, line);
        await assertHolds(herd, "C", `prompt-${name}-${i}`, line);
        await waitHolds(herd, "A", `prompt-${name}-${i}`, line, 5_000);
      }
    }
  });

  await t.step("IAMATs at A, behind the slow link, are answered within the budget and reach B and C", async () => {
    for (let i = 0; i < 3; i++) {
      const { line, ms } = await iamat(herd, "A", `lag-a-${i}`);
      assert.ok(ms < budget + 200, `IAMAT ${i} at A took ${ms.toFixed(0)} ms`);
      await waitHolds(herd, "B", `lag-a-${i}`, line, 5_000);
      await waitHolds(herd, "C", `lag-a-${i}`, line, 5_000);
    }
  });
});

Deno.test({
  name: "a black-holed link is marked lagging and the herd keeps answering; after the heal records flow again" +
    MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async (t) => {
  const budget = 300;
  // Heartbeats too slow to close the black-holed links while the test runs: this test is about the acknowledgements;
  // the one after it is about the heartbeats.
  await using herd = await lineHerd({ ackTimeoutMs: budget, heartbeatMs: 30_000, heartbeatTimeoutMs: 60_000 });
  await herd.startAll();
  herd.link("A", "B", DROP);
  const lost: { name: string; id: string; line: string }[] = [];

  await t.step("A waits out the budget once, marks B lagging, then answers at once", async () => {
    const first = await iamat(herd, "A", "hole-a0");
    lost.push({ name: "A", id: "hole-a0", line: first.line });
    assert.ok(
      first.ms >= budget - 20,
      `the first reply waits for B's ack until the budget, took ${first.ms.toFixed(0)}`,
    );
    assert.ok(first.ms < budget + 300, `and no longer, took ${first.ms.toFixed(0)} ms`);
    await waitFor(() => /Link to "?B"? is lagging/.test(herd.stderr("A")), {
      timeoutMs: 5_000,
      what: "A to log that its link to B is lagging",
    });
    for (let i = 1; i <= 5; i++) {
      const { line, ms } = await iamat(herd, "A", `hole-a${i}`);
      lost.push({ name: "A", id: `hole-a${i}`, line });
      assert.ok(ms < budget, `IAMAT ${i} at A must not wait on the black hole, took ${ms.toFixed(0)} ms`);
    }
  });

  await t.step("nothing crosses the black hole, and the connections stay open", async () => {
    await assertStaysAway(herd, ["B", "C"], "hole-a5");
    const toB = herd.proxy("B").stats("A");
    assert.ok(toB.droppedBytes > 0, "A's records went into the hole");
    assert.equal(toB.open, 1, "a black hole does not close A's link");
    assert.equal(herd.proxy("A").stats("B").open, 1, "nor B's");
  });

  await t.step("an IAMAT at C reaches B at once but not A", async () => {
    const { line, ms } = await iamat(herd, "C", "hole-c");
    lost.push({ name: "C", id: "hole-c", line });
    assert.ok(ms < budget + 300, `took ${ms.toFixed(0)} ms`);
    await assertHolds(herd, "B", "hole-c", line);
    await assertStaysAway(herd, ["A"], "hole-c");
  });

  herd.link("A", "B", PASS);

  await t.step("after the heal new records flow both ways and the link stops lagging", async () => {
    await waitFlowing(herd, "A", "C", 10_000);
    await waitFlowing(herd, "C", "A", 10_000);
    // Once A's link acknowledges in time again, A's replies again wait for B: B holds the record at reply time.
    let round = 0;
    await waitFor(async () => {
      const { line } = await iamat(herd, "A", `healed-${round++}`);
      return await recordAt(herd, "B", `healed-${round - 1}`) === line;
    }, { timeoutMs: 5_000, what: "A's reply to carry the guarantee again" });
  });

  await t.step("[catch-up] after the heal the black-holed records reach the other side", async () => {
    for (const { name, id, line } of lost) {
      for (const other of herd.names) {
        if (other !== name) await waitHolds(herd, other, id, line, CATCH_UP_TIMEOUT_MS);
      }
    }
  });
});

/** Heartbeats fast enough for a test: a link silent for half a second is closed. */
const FAST_HEARTBEATS = { heartbeatMs: 100, heartbeatTimeoutMs: 500 };

/**
 * The default herd on trees, settled, with reconciliation on its timer out of the way and fast heartbeats; then
 * Smith's network goes dark: every byte to and from it vanishes and its connections stay open.
 */
async function herdWithSmithBlackHoled(): Promise<TestHerd> {
  const herd = await defaultHerd({ broadcast: "tree", reconcileIntervalMs: 600_000, ...FAST_HEARTBEATS }, true, true);
  try {
    await herd.startAll();
    await herd.waitLinksInUse();
    await herd.waitTreesSettled();
  } catch (error) {
    await herd[Symbol.asyncDispose]();
    throw error;
  }
  for (const other of ["Hill", "Campbell", "Singleton"]) herd.link("Smith", other, DROP);
  return herd;
}

Deno.test({
  name: "a black-holed server's silent links are closed at both ends, and the broadcast trees go around it" +
    MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  // Reconciliation out of the way: only a tree that leaves Smith out brings Hill's record to Campbell, which hangs
  // below Smith in Hill's tree while Smith is counted on. Nothing is sent into the dark, so no acknowledgement is
  // missed: only the heartbeats can tell.
  await using herd = await herdWithSmithBlackHoled();
  // Nothing but the heartbeats closes them: all six connections between Smith and its neighbours, at one end or both
  // (either end may give up first; the proxy passes the close on to the other). With plain text the neighbours' redials
  // are accepted by the proxies and closed the same way, silent, never counted on. (Waited for on the metrics: a
  // "Link to Smith is down" line may be an old one, from a dial through a proxy before Smith was up.)
  await waitFor(async () => {
    if (await herd.metricSum("herd_peer_links_silent_total") < 6) return false;
    for (const name of ["Hill", "Campbell", "Singleton"]) {
      const samples = await herd.metrics(name);
      if (samples.get('herd_peer_link_in_use{neighbour="Smith"}') !== 0) return false;
      if (samples.get('herd_peer_link_from_live{neighbour="Smith"}') !== 0) return false;
    }
    return true;
  }, { timeoutMs: 10_000, what: "every link to and from Smith closed for its silence" });
  await herd.waitTreesSettled();
  await reachesAll(herd, "Hill", "dark", ["Campbell", "Singleton"]);
});

Deno.test({
  name: "records that went into a black hole before anybody could tell reach the servers below it once the broadcast " +
    "trees go around it" + MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  // Reconciliation on its timer out of the way: what brings the records is the repair a change of the trees starts.
  await using herd = await herdWithSmithBlackHoled();
  // At once, before an acknowledgement is missed or a link falls silent: Hill's record goes to Smith, below which
  // Campbell hangs in Hill's tree (Singleton, below Jaquez, gets it), and Campbell's to Smith, below which Hill hangs in
  // Campbell's tree. Each is then held two hops away from the server that needs it, by a server that tree did not
  // send it through.
  const fromHill = `dark-hill-${crypto.randomUUID().slice(0, 8)}`;
  const fromCampbell = `dark-campbell-${crypto.randomUUID().slice(0, 8)}`;
  const [hill, campbell] = await Promise.all([iamat(herd, "Hill", fromHill), iamat(herd, "Campbell", fromCampbell)]);
  await waitHolds(herd, "Singleton", fromHill, hill.line, CATCH_UP_TIMEOUT_MS);
  await waitHolds(herd, "Jaquez", fromCampbell, campbell.line, CATCH_UP_TIMEOUT_MS);
  await waitHolds(herd, "Campbell", fromHill, hill.line, CATCH_UP_TIMEOUT_MS);
  await waitHolds(herd, "Hill", fromCampbell, campbell.line, CATCH_UP_TIMEOUT_MS);
});

Deno.test({
  name: "a neighbour's link that says HELLO and then nothing is closed after peers.heartbeatTimeoutMs; one that " +
    "PINGs is answered PONG and kept" + MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await lineHerd(FAST_HEARTBEATS);
  await herd.start("B");
  // A and C are never started: probes introduce themselves as them to B.
  await using silent = await PeerProbe.connect({
    server: "B",
    port: herd.peerPort("B"),
    as: "A",
    files: herd.tlsFiles("A"),
  });
  await using talking = await PeerProbe.connect({
    server: "B",
    port: herd.peerPort("B"),
    as: "C",
    files: herd.tlsFiles("C"),
  });
  const talked = (async () => {
    // Ten timeouts' worth of PINGs, each answered before the next.
    for (let i = 0; i < 50; i++) {
      talking.send("PING\n");
      assert.equal(await talking.nextLine(), "PONG");
      await pause(100);
    }
  })();
  await silent.closed;
  await logLine(herd, "B", /Link from "A" sent nothing for \d+ ms; closing it/);
  await talked;
  assert.match(await talking.digest(), /^[0-9a-f]+$/, "the talking probe's link is still open");
  assert.doesNotMatch(await herd.log("B"), /Link from "C" sent nothing/);
  assert.equal(await herd.metricSum('herd_peer_links_silent_total{direction="from"}', ["B"]), 1);
});

/** `name`'s store filled with `count` records (`<prefix>-<n>`), in ten pipelined batches. */
async function fill(herd: TestHerd, name: string, count: number, prefix: string): Promise<void> {
  for (let batch = 0; batch < 10; batch++) {
    const lines = Array.from({ length: count / 10 }, (_, i) => {
      const n = batch * (count / 10) + i;
      return `IAMAT ${prefix}-${n} +1.5+2.5 ${1_700_000_000 + n}.5\n`;
    });
    await exchange(herd.port(name), lines.join(""));
  }
}

/**
 * A and B, one link between them (through a fault proxy per direction
 * unless `faultProxies` is false), with admin ports: A started and holding
 * `count` records (`<prefix>-<n>`), B not started, for a catch-up.
 */
async function pairToCatchUp(
  count: number,
  prefix: string,
  peers: TestHerdOptions["peers"],
  faultProxies = true,
): Promise<TestHerd> {
  const herd = await TestHerd.create({
    tls: MODE.tls,
    placesUrl: "http://127.0.0.1:9/unused",
    names: ["A", "B"],
    links: [["A", "B"]],
    places: { provider: "offline" },
    peers,
    faultProxies,
    admin: true,
  });
  try {
    await herd.start("A");
    await fill(herd, "A", count, prefix);
    return herd;
  } catch (error) {
    await herd[Symbol.asyncDispose]();
    throw error;
  }
}

/** Runs `wait`; should it fail, the error says what A and B logged of their exchanges and links. */
async function withExchangeLog(herd: TestHerd, wait: () => Promise<unknown>): Promise<void> {
  try {
    await wait();
  } catch (error) {
    const exchanges = async (name: string) =>
      (await herd.log(name)).split("\n").filter((line) => /econcil|exchange|Link (to|from)/.test(line)).slice(-20);
    throw new Error(
      `${(error as Error).message}\nA:\n${(await exchanges("A")).join("\n")}\nB:\n${(await exchanges("B")).join("\n")}`,
    );
  }
}

/** The records of reconciliations `name` received (both links). */
async function receivedReconciling(herd: TestHerd, name: string): Promise<number | undefined> {
  return (await herd.metrics(name)).get('herd_peer_records_total{event="received_reconciling"}');
}

Deno.test({
  name: "a catch-up that takes many heartbeat timeouts over a slow link is not taken for silence" + MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  const count = 10_000;
  await using herd = await pairToCatchUp(count, "slow", { reconcileIntervalMs: 600_000, ...FAST_HEARTBEATS });
  // Only A's link reconciles (B's own link to A is cut): A sends B its 10,000 records, about 600 kB, in 64 kB writes,
  // over a link that carries 200 kB/s: several seconds, many timeouts, while B's side of A's link has nothing to say
  // but its heartbeats.
  herd.linkProxy("B", "A").setAll(CUT);
  herd.linkProxy("A", "B").setAll(throttle(200_000));
  await herd.start("B");
  await waitFor(async () => (await herd.metrics("B")).get("herd_records") === count, {
    timeoutMs: 30_000,
    what: `B to hold ${count} records`,
  });
  assert.equal(await herd.metricSum("herd_peer_links_silent_total"), 0, "no link closed for silence");
  // The catch-up went in one go: a link dropped halfway would have made a second reconciliation when it came back.
  const reconciled = (await herd.log("A")).split("\n").filter((line) => /Reconciled with "?B"?/.test(line));
  assert.equal(reconciled.length, 1, reconciled.join("\n"));
});

Deno.test({
  name: "a dialler's side of a reconciliation goes in writes of about 64 kB, read from the store as they go" +
    MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  const count = 5_000;
  await using herd = await pairToCatchUp(count, "sliced", { reconcileIntervalMs: 600_000 });
  // Only A's link reconciles: A dials, B (empty) answers with its digest, and A sends what B lacks, its whole store.
  herd.linkProxy("B", "A").setAll(CUT);
  await herd.start("B");
  await waitFor(async () => (await herd.metrics("B")).get("herd_records") === count, {
    timeoutMs: CATCH_UP_TIMEOUT_MS,
    what: `B to hold ${count} records`,
  });
  await waitFor(async () => (await herd.log("A")).includes(`Reconciliation with "B": sent ${count} records`), {
    what: "A's count of what it sent",
  });
  // The writes' lines go to the log with the traffic, flushed every 10 ms: until all are there.
  let writes: number[] = [];
  await waitFor(async () => {
    writes = [...(await herd.log("A")).matchAll(/To "B": 0 records, (\d+) catching up/g)].map((m) => Number(m[1]));
    return writes.reduce((a, b) => a + b, 0) === count;
  }, { what: `A's log of its writes to B to add up to ${count} records` });
  // About 50 bytes a line: 64 kB is some 1,300 lines; 5,000 records were one write of 250 kB before.
  assert.ok(writes.length >= 4 && writes.every((n) => n <= 1_400), writes.join(", "));
});

Deno.test({
  name: "two servers whose exchanges cross (both links up at once) send each record across once, not down each link" +
    MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  const count = 5_000;
  await using herd = await pairToCatchUp(count, "crossed", { reconcileIntervalMs: 600_000 }, false);
  // B's link dials A as B starts, and A's dials B as soon as B's reaches it: each sends its DIGEST as it comes up.
  await herd.start("B");
  await waitFor(async () => (await herd.metrics("B")).get("herd_records") === count, {
    timeoutMs: CATCH_UP_TIMEOUT_MS,
    what: `B to hold ${count} records`,
  });
  await waitFor(async () =>
    /Reconciliation with "B": sent \d+ records|Reconciling with "B": sent \d+ records/.test(
      await herd.log("A"),
    ), { what: "A's count of what it sent" });
  const crossed = await herd.metricSum('herd_reconciliations_total{role="crossed"}');
  const received = await receivedReconciling(herd, "B");
  assert.equal(received, count, `B received ${received} records while reconciling (exchanges crossed: ${crossed})`);
});

Deno.test({
  name: "an exchange started while the other side still answers ours is answered once that answer is whole: each " +
    "record goes across once" + MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  const count = 5_000;
  await using herd = await pairToCatchUp(count, "answered", {
    reconcileIntervalMs: 600_000,
    reconnectMinMs: 20,
    reconnectMaxMs: 200,
  });
  // B's link reconciles, and A's answer (some 300 kB) comes back at 60 kB/s; A's own link is held off meanwhile.
  herd.linkProxy("A", "B").setAll(CUT);
  herd.linkProxy("B", "A").setAll(throttle(60_000));
  await herd.start("B");
  // Half-way through the answer (A wrote it all to its socket long before), A's link is let through: A starts an
  // exchange of its own while B still receives A's answer to B's.
  await waitFor(async () => ((await herd.metrics("B")).get("herd_records") ?? 0) >= 2_500, {
    timeoutMs: CATCH_UP_TIMEOUT_MS,
    what: "half of A's answer to reach B",
  });
  herd.linkProxy("A", "B").setAll(PASS);
  // (Or A's late side of B's exchange: should A's cut link have sent its digest just before B's reached A, A answered
  // B's with its digest alone, and sends its records once its own exchange is dropped: inbound.ts, InboundLink.#owe.)
  const answered = new RegExp(`(Reconciling with "B": sent|Sent "B" our side of its exchange, late:) ${count} records`);
  await withExchangeLog(
    herd,
    () =>
      waitFor(async () => answered.test(await herd.log("A")), {
        timeoutMs: CATCH_UP_TIMEOUT_MS,
        what: "A's answer to end",
      }),
  );
  await waitFor(async () => (await herd.metrics("B")).get("herd_records") === count, { what: `B to hold ${count}` });
  assert.match(await herd.log("A"), /Link to "B" is up/);
  const received = await receivedReconciling(herd, "B");
  assert.equal(received, count, `B received ${received} records while reconciling`);
});

Deno.test({
  name: "a link that comes up while its server answers the neighbour's exchange starts its own once that is over, " +
    "not never: what the server stored meanwhile reaches the neighbour" + MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  const count = 10_000;
  await using herd = await pairToCatchUp(count, "later", {
    reconcileIntervalMs: 600_000,
    reconnectMinMs: 20,
    reconnectMaxMs: 200,
  });
  // B's exchange: A's answer comes back at 150 kB/s; A's own link is held off.
  herd.linkProxy("A", "B").setAll(CUT);
  herd.linkProxy("B", "A").setAll(throttle(150_000));
  await herd.start("B");
  // Failed once in a full run (2026-12-04), likely so: A's cut link had sent its digest just before B's reached A, so A
  // answered B's with its digest alone, and its own exchange was dropped. A now sends its side late (inbound.ts).
  await withExchangeLog(herd, () =>
    waitFor(async () => ((await herd.metrics("B")).get("herd_records") ?? 0) >= 1_000, {
      timeoutMs: CATCH_UP_TIMEOUT_MS,
      what: "A's answer to start reaching B",
    }));
  // A newer report of a client A's answer has passed already, while A's link to B is down: no link carries it.
  const newer = await exchange(herd.port("A"), `IAMAT later-0 +9+9 ${1_700_000_000 + count}.5\n`);
  assert.match(newer, /^AT A /);
  herd.linkProxy("A", "B").setAll(PASS);
  // A's link comes up while A answers B's exchange (or just after): its own exchange waits, then runs.
  await waitFor(
    async () => (await exchange(herd.port("B"), "WHATSAT later-0 1 0\n")).split("\n")[0] === newer.trimEnd(),
    { timeoutMs: 30_000, what: "B to hold A's newer report of later-0" },
  );
  const digest = async (name: string) => JSON.parse((await herd.admin(name, "/status")).body).digest;
  await waitFor(async () => await digest("A") === await digest("B"), { what: "A and B to agree" });
});

Deno.test({
  name: "an idle herd keeps its links: heartbeats close none of them" + MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  // A timeout of 1.5 s, not FAST_HEARTBEATS' 0.5 s: on two cores shared with other tests a server can be starved of the
  // CPU for over half a second (once in a full run alongside a second test run), and that is not what is tested here.
  const heartbeats = { heartbeatMs: 250, heartbeatTimeoutMs: 1500 };
  // Reconciliation out of the way: nothing but the heartbeats crosses an idle link.
  await using herd = await defaultHerd({ ...heartbeats, reconcileIntervalMs: 600_000 }, true);
  await herd.startAll();
  await herd.waitLinksInUse();
  // Four timeouts with nothing to send: the PINGs and PONGs alone keep every link, both ways.
  await checkThroughout(async () => {
    assert.equal(await herd.metricSum("herd_peer_links_silent_total"), 0, "no link was closed for silence");
    assert.equal(await herd.metricSum("herd_peer_link_up"), 12, "every link up");
  }, { durationMs: 4 * heartbeats.heartbeatTimeoutMs });
});

Deno.test({
  name: "with a server down, a flooded record reaches every other server at once over the links left" + MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  // Reconciliation out of the way: only the flood itself can bring the record to Campbell, via Jaquez and Singleton.
  await using herd = await defaultHerd({ broadcast: "flood", reconcileIntervalMs: 600_000 });
  await herd.startAll();
  await herd.stop("Smith", "SIGKILL");
  const id = `around-${crypto.randomUUID().slice(0, 8)}`;
  // A link to Smith may not have noticed yet: each round a newer record, until one goes around.
  let line = "";
  await waitFor(async () => {
    line = (await iamat(herd, "Hill", id)).line;
    return await recordAt(herd, "Jaquez", id) === line;
  }, { what: "Hill's record at Jaquez" });
  await waitHolds(herd, "Campbell", id, line, 2000);
  await waitHolds(herd, "Singleton", id, line, 2000);
});

Deno.test({
  name: "down a broadcast tree, a server cut off from its parent gets the record at once, below another parent" +
    MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  // Reconciliation out of the way: only the tree, worked out again from the link state, can bring the record to Campbell.
  await using herd = await defaultHerd({ broadcast: "tree", reconcileIntervalMs: 600_000 }, true);
  await herd.startAll();
  // In Hill's tree Campbell hangs below Smith. Once Smith's neighbours have seen its links drop, their link state
  // goes round and Campbell hangs below Singleton instead.
  const marks = await logMarks(herd, ["Hill", "Campbell", "Singleton"]);
  await herd.stop("Smith", "SIGKILL");
  for (const name of marks.keys()) await logLine(herd, name, /Link to "Smith" is down/, marks);
  // Past the second of flooding that follows a change of link state: the record goes down the new trees.
  await herd.waitTreesSettled();
  await reachesAll(herd, "Hill", "orphan", ["Singleton", "Campbell"]);
});

Deno.test({
  name: "link state settles: when a server dies, each of its neighbours reports its links at most twice, then no more" +
    MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await defaultHerd({ broadcast: "tree" }, true);
  await herd.startAll();
  const own = 'herd_link_reports_total{kind="own"}';
  // Every link in use, on both ends: from here on only a link that changes makes a report.
  await herd.waitLinksInUse();
  const survivors = herd.names.filter((name) => name !== "Smith");
  const perServer = async () =>
    Object.fromEntries(await Promise.all(survivors.map(async (name) => [name, await herd.metricSum(own, [name])])));
  const beforeEach = await perServer();
  const before = await herd.metricSum(own, survivors);
  // A report passed round must not make another (a server's own report coming back to it, say).
  const marks = await logMarks(herd, ["Hill", "Campbell", "Singleton"]);
  await herd.stop("Smith", "SIGKILL");
  for (const name of marks.keys()) {
    await logLine(herd, name, /Link to "Smith" is down/, marks);
    await logLine(herd, name, /Link from "Smith" is down/, marks);
  }
  // Each of Smith's three neighbours lost its link to Smith and Smith's link to it: one report for each, or one for
  // both, and nothing after.
  const after = await settledSum(herd, own, survivors);
  assert.ok(
    after >= before + 3 && after <= before + 6,
    `${after - before} reports: ${JSON.stringify(beforeEach)} before, ${JSON.stringify(await perServer())} after`,
  );
  await checkThroughout(async () => assert.equal(await herd.metricSum(own, survivors), after, "no more reports"), {
    durationMs: ABSENT_MS,
  });
});

/** A triangle A–B–C whose peers dial each other through one fault proxy per link and direction, records down trees. */
function triangleHerd(peers: TestHerdOptions["peers"]): Promise<TestHerd> {
  return TestHerd.create({
    tls: MODE.tls,
    placesUrl: "http://127.0.0.1:9/unused",
    names: ["A", "B", "C"],
    links: [["A", "B"], ["B", "C"], ["A", "C"]],
    places: { provider: "offline" },
    peers: { broadcast: "tree", reconcileIntervalMs: 600_000, ...peers },
    faultProxies: true,
    admin: true,
  });
}

Deno.test({
  name: "down a broadcast tree, a link that works one way carries records that way, and replies still wait for it" +
    MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await triangleHerd({});
  await herd.startAll();
  await herd.waitLinksInUse();
  // C cannot dial B; B's link to C is fine. C reports B out, B reports C in.
  const marks = await logMarks(herd, ["C"]);
  herd.linkProxy("C", "B").setAll(CUT);
  await logLine(herd, "C", /Link to "B" is down/, marks);
  await herd.waitTreesSettled();
  // A's record to C is slow: a record that reached C through A would come after B's reply.
  herd.link("A", "C", delay(300));
  const { line } = await iamat(herd, "B", `one-way-${crypto.randomUUID().slice(0, 8)}`);
  await assertHolds(herd, "C", line.split(" ")[3], line);
});

Deno.test({
  name: "down a broadcast tree, a neighbour whose link lags still gets the records passed on to it" + MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  // Heartbeats too slow to send B's lagging link a probe while the test runs (the test after this one is about those):
  // here records passed on are what make it catch up.
  await using herd = await lineHerd({
    broadcast: "tree",
    ackTimeoutMs: 200,
    reconcileIntervalMs: 600_000,
    heartbeatMs: 30_000,
    heartbeatTimeoutMs: 60_000,
  });
  await herd.startAll();
  await herd.waitLinksInUse();
  // B's link to C lags (an IAMAT at B waits out its budget), then the link is healthy again: B's link stays lagging
  // until a record it sends is acknowledged in time, and meanwhile C is in no tree through B.
  herd.link("B", "C", delay(300));
  await iamat(herd, "B", `lag-${crypto.randomUUID().slice(0, 8)}`);
  await waitFor(() => /Link to "?C"? is lagging/.test(herd.stderr("B")), { what: "B to mark its link to C lagging" });
  herd.link("B", "C", PASS);
  await herd.waitTreesSettled();
  // A record from A, passed on by B, still reaches C.
  const id = `relayed-${crypto.randomUUID().slice(0, 8)}`;
  const { line } = await iamat(herd, "A", id);
  await waitHolds(herd, "C", id, line, 2000);
  // And records B only passes on are enough for its link to C to catch up and count again: B has no clients here.
  let round = 0;
  await waitFor(async () => {
    await iamat(herd, "A", `${id}-${round++}`);
    return (await herd.metrics("B")).get('herd_peer_link_in_use{neighbour="C"}') === 1;
  }, { what: "B's link to C to be in use again" });
});

Deno.test({
  name: "a lagging link catches up at a heartbeat once its neighbour answers in time, with no IAMAT, and replies " +
    "wait on it again" + MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  const budget = 400;
  await using herd = await lineHerd({
    ackTimeoutMs: budget,
    heartbeatMs: 300,
    heartbeatTimeoutMs: 5_000,
    reconcileIntervalMs: 600_000,
  });
  await herd.startAll();
  await herd.waitLinksInUse();
  const lagging = async () => (await herd.metrics("B")).get('herd_peer_link_lagging{neighbour="C"}');
  const probes = async () => (await herd.metrics("B")).get("herd_peer_lagging_probes_total") ?? 0;
  const iamatsAtB = async () => (await herd.metrics("B")).get('herd_commands_total{command="IAMAT",outcome="ok"}');
  // A round trip of 600 ms against a 400 ms budget: B's IAMAT waits it out, and B marks its link to C lagging.
  herd.link("B", "C", delay(300));
  await iamat(herd, "B", `lag-${crypto.randomUUID().slice(0, 8)}`);
  await waitFor(() => /Link to "?C"? is lagging/.test(herd.stderr("B")), { what: "B to mark its link to C lagging" });
  const iamats = await iamatsAtB();
  // The probes, one a heartbeat, come back late while the link is slow: the link stays lagging.
  const first = await probes();
  await waitFor(async () => await probes() >= first + 3, { what: "three probes over the slow link" });
  assert.equal(await lagging(), 1, "a probe answered late does not make the link catch up");
  // The link is quick again: the next probe is answered in time, with no IAMAT at B meanwhile.
  herd.link("B", "C", PASS);
  await waitFor(async () => await lagging() === 0, { what: "B's link to C to catch up" });
  assert.equal(await iamatsAtB(), iamats, "no IAMAT made it catch up");
  // Its log line comes with the log's next write (every 10 ms), not with the metric.
  await waitFor(async () => /Link to "?C"? caught up/.test(await herd.log("B")), { what: "B to log the catch-up" });
  // And an IAMAT at B waits on C again: with a 120 ms round trip (within the budget), its reply takes at least that
  // (a lagging link is not waited on: the reply would come at once), and C holds the record when it comes.
  herd.link("B", "C", delay(60));
  const id = `waits-${crypto.randomUUID().slice(0, 8)}`;
  const { line, ms } = await iamat(herd, "B", id);
  assert.ok(ms >= 110, `the reply waited on C's acknowledgement: ${ms.toFixed(0)} ms`);
  await assertHolds(herd, "C", id, line);
});

Deno.test({
  name: "link state settles with a link down one way: no report goes round for ever" + MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await triangleHerd({});
  await herd.startAll();
  // The links of a herd just started count for the link state a second after they came up, each with a report: those
  // are done before the cut (under load they came inside the window below).
  await herd.waitLinksInUse();
  await herd.waitTreesSettled();
  const marks = await logMarks(herd, ["A", "B"]);
  herd.linkProxy("A", "B").setAll(CUT);
  // Both ends of the cut link change their link state, and each sends a report round: both are waited for (under load
  // B can see its end go well after A does, a report wave after what looked settled).
  await logLine(herd, "A", /Link to "B" is down/, marks);
  await logLine(herd, "B", /Link from "A" is down/, marks);
  // What is already on its way arrives; then nothing more.
  const before = await settledSum(herd, "herd_link_reports_total", undefined, 300);
  await checkThroughout(
    async () => assert.equal(await herd.metricSum("herd_link_reports_total"), before, "no more reports"),
    {
      durationMs: ABSENT_MS,
    },
  );
});

Deno.test({
  name: "a link state report with a version from the future is dropped, and said so" + MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await lineHerd({ broadcast: "tree" });
  await herd.start("A");
  await herd.start("B");
  // C is never started: a probe introduces itself as C to B.
  await using probe = await PeerProbe.connect({
    server: "B",
    port: herd.peerPort("B"),
    as: "C",
    files: herd.tlsFiles("C"),
  });
  probe.send(`LINKS A ${Date.now() + 2 * 60 * 60 * 1000} - -\n`);
  await logLine(herd, "B", /Dropped a link state report of "?A"? from "?C"?: its version is from the future/);
  // The probe's link is still up: a line refused is not one a neighbour could not have sent.
  assert.match(await probe.digest(), /^[0-9a-f]+$/);
});

Deno.test({
  name:
    "down a broadcast tree, a server that can dial none of its neighbours is left a leaf, and records go around it" +
    MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  // A square: A–D–B and A–C–B. In A's tree B hangs below D (D comes first in the links).
  await using herd = await TestHerd.create({
    tls: MODE.tls,
    placesUrl: "http://127.0.0.1:9/unused",
    names: ["A", "B", "C", "D"],
    links: [["A", "D"], ["D", "B"], ["A", "C"], ["C", "B"]],
    places: { provider: "offline" },
    peers: { broadcast: "tree", reconcileIntervalMs: 600_000 },
    faultProxies: true,
    admin: true,
  });
  await herd.startAll();
  await herd.waitLinksInUse();
  // D can dial nobody, so its own report cannot leave it; A and B report that D's links into them are gone.
  const marks = await logMarks(herd, ["A", "B"]);
  herd.linkProxy("D", "A").setAll(CUT);
  herd.linkProxy("D", "B").setAll(CUT);
  for (const name of marks.keys()) await logLine(herd, name, /Link from "D" is down/, marks);
  await herd.waitTreesSettled();
  await reachesAll(herd, "A", "undialling", ["B", "D"]);
});
