/**
 * kill -9 of random servers, over and over, during a sustained IAMAT load
 * spread over the herd; then every server restarted. Nothing acknowledged
 * may be lost: every server must end with, for every client, a record at
 * least as great as the greatest one any client was acknowledged for, and
 * all servers must hold the same records.
 */

import assert from "node:assert/strict";
import {
  DEFAULT_LINKS,
  DEFAULT_NAMES,
  exchange,
  HERD_TEST_PERMISSIONS,
  suiteMode,
  TestHerd,
  type TestHerdOptions,
} from "./testing/herd.ts";
import { CUT, delay as faultDelay, DROP, PASS } from "./testing/fault_proxy.ts";
import { delay, waitFor } from "./testing/wait.ts";

/** TLS peer links, or plain text when run from plaintext_test.ts. */
const MODE = suiteMode(import.meta.url);

const CHAOS_MS = 8_000;
const LOOPS = 8;
const CLIENTS_PER_LOOP = 10;

function pick<T>(items: readonly T[]): T {
  return items[Math.floor(Math.random() * items.length)];
}

/** The default herd, and a never-started "Probe" linked to each server to ask its digest. */
function probedHerd(options: Partial<TestHerdOptions> = {}): Promise<TestHerd> {
  return TestHerd.create({
    tls: MODE.tls,
    placesUrl: "http://127.0.0.1:9/unused",
    names: [...DEFAULT_NAMES, "Probe"],
    links: [...DEFAULT_LINKS, ...DEFAULT_NAMES.map((name) => [name, "Probe"] as [string, string])],
    ...options,
  });
}

/** Waits (bounded) until the default servers hold identical stores; the milliseconds that took. */
async function msUntilIdentical(herd: TestHerd, when: string): Promise<number> {
  const started = performance.now();
  await waitFor(async () => {
    const digests = await Promise.all(DEFAULT_NAMES.map((name) => herd.digestOf(name)));
    return digests.every((digest) => digest === digests[0]);
  }, { timeoutMs: 60_000, stepMs: 100, what: `the herd to converge ${when}` });
  return Math.round(performance.now() - started);
}

Deno.test({
  name: "kill -9 of random servers under load loses no acknowledged record" + MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await probedHerd({ peers: { reconcileIntervalMs: 1000 } });
  for (const name of DEFAULT_NAMES) await herd.start(name);
  await herd.waitConverged(DEFAULT_NAMES);

  const down = new Set<string>();
  const acknowledged = new Map<string, number>();
  let sent = 0;
  let failed = 0;
  let kills = 0;
  let stop = false;

  const load = Array.from({ length: LOOPS }, async (_, loop) => {
    let time = 1_700_000_000;
    while (!stop) {
      const client = `chaos-${loop}-${Math.floor(Math.random() * CLIENTS_PER_LOOP)}`;
      const server = pick(DEFAULT_NAMES.filter((name) => !down.has(name)));
      time++;
      sent++;
      try {
        const reply = await exchange(herd.port(server), `IAMAT ${client} +5.5-7.5 ${time}\n`);
        if (reply.startsWith(`AT ${server} `)) {
          acknowledged.set(client, Math.max(acknowledged.get(client) ?? 0, time));
        } else failed++;
      } catch {
        failed++; // killed while we talked to it: not acknowledged, so no promise was made
      }
    }
  });

  const chaos = (async () => {
    const restarts: Promise<void>[] = [];
    const until = performance.now() + CHAOS_MS;
    while (performance.now() < until) {
      const victim = pick(DEFAULT_NAMES.filter((name) => !down.has(name)));
      if (down.size < 2) {
        down.add(victim);
        await herd.stop(victim, "SIGKILL");
        kills++;
        // Bring it back later, while the load goes on.
        restarts.push((async () => {
          await delay(200 + Math.random() * 400);
          await herd.start(victim);
          down.delete(victim);
        })());
      }
      await delay(150 + Math.random() * 250);
    }
    await Promise.all(restarts);
  })();

  await chaos;
  stop = true;
  await Promise.all(load);

  const convergedMs = await msUntilIdentical(herd, "after the last restart");
  for (const [client, time] of acknowledged) {
    for (const name of DEFAULT_NAMES) {
      const line = (await exchange(herd.port(name), `WHATSAT ${client} 1 0\n`)).split("\n")[0];
      const held = Number(line.split(" ").at(-1));
      assert.ok(held >= time, `${name} holds ${line} for ${client}, but ${time} was acknowledged`);
    }
  }
  console.log(
    `chaos: ${kills} kills, ${sent} IAMATs sent, ${sent - failed} acknowledged, ${acknowledged.size} clients, ` +
      `0 lost; identical stores ${convergedMs} ms after the last restart`,
  );
  assert.ok(kills >= 5, `only ${kills} kills happened`);
  // Eight loops of ten clients for 8 s: a run in which few were acknowledged checked little.
  assert.ok(acknowledged.size >= 40, `only ${acknowledged.size} clients were acknowledged`);
});

Deno.test({
  name:
    "random link faults (black holes, cuts, delays) under load lose no acknowledged record, and the herd converges " +
    "once they heal" + MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  // Every server dials each neighbour through a fault proxy of its own; records go down the broadcast trees (the
  // default), so a fault on a link the trees count on is what the heartbeats, the link state and the repairs are for.
  await using herd = await probedHerd({
    peers: { reconcileIntervalMs: 1000, heartbeatMs: 200, heartbeatTimeoutMs: 1000 },
    faultProxies: true,
  });
  for (const name of DEFAULT_NAMES) await herd.start(name);
  await herd.waitConverged(DEFAULT_NAMES);

  // A client of its own for every IAMAT: a record lost on its way is never made up for by a later one of its client.
  const acknowledged: string[] = [];
  let sent = 0;
  let failed = 0;
  let faults = 0;
  let stop = false;
  const load = Array.from({ length: LOOPS }, async (_, loop) => {
    for (let n = 0; !stop; n++) {
      const server = pick(DEFAULT_NAMES);
      sent++;
      const reply = await exchange(herd.port(server), `IAMAT net-${loop}-${n} +5.5-7.5 ${1_700_000_000 + n}\n`);
      if (reply.startsWith(`AT ${server} `)) acknowledged.push(reply.trimEnd());
      else failed++;
    }
  });

  const faulty = new Set<number>();
  const chaos = (async () => {
    const heals: Promise<void>[] = [];
    const until = performance.now() + CHAOS_MS;
    while (performance.now() < until) {
      const index = Math.floor(Math.random() * DEFAULT_LINKS.length);
      if (faulty.size < 2 && !faulty.has(index)) {
        const [a, b] = DEFAULT_LINKS[index];
        faulty.add(index);
        herd.link(a, b, pick([DROP, CUT, faultDelay(50 + Math.random() * 150)]));
        faults++;
        heals.push((async () => {
          await delay(200 + Math.random() * 1300);
          herd.link(a, b, PASS);
          faulty.delete(index);
        })());
      }
      await delay(100 + Math.random() * 200);
    }
    await Promise.all(heals);
  })();

  await chaos;
  stop = true;
  await Promise.all(load);

  const convergedMs = await msUntilIdentical(herd, "once every link healed");
  // The stores are identical, so a record is everywhere or nowhere: 400 of them, at random, are looked for everywhere.
  const sample = acknowledged.toSorted(() => Math.random() - 0.5).slice(0, 400);
  for (const line of sample) {
    const client = line.split(" ")[3];
    for (const name of DEFAULT_NAMES) {
      const held = (await exchange(herd.port(name), `WHATSAT ${client} 1 0\n`)).split("\n")[0];
      assert.equal(held, line, `${name} must hold the acknowledged ${line}`);
    }
  }
  console.log(
    `link chaos: ${faults} faults, ${sent} IAMATs sent, ${acknowledged.length} acknowledged, each a client of its own, ` +
      `${sample.length} looked for at every server, 0 lost; identical stores ${convergedMs} ms after the last heal`,
  );
  assert.ok(faults >= 10, `only ${faults} faults happened`);
  assert.ok(sample.length >= 400, `only ${acknowledged.length} IAMATs were acknowledged`);
  assert.equal(failed, 0, "every IAMAT is answered: a fault on a link delays a reply by the ack timeout at most");
});
