/**
 * What a big catch-up does to the servers' clients: A holds N records (a
 * database written before it starts), B starts empty and gets them all by
 * reconciliation. Meanwhile one client of each server sends an IAMAT every
 * 5 ms and waits for its reply, one sends WHATSAT to B, and `/healthz` of
 * both is asked every 20 ms (each a new connection): the 99th percentile and
 * the slowest answer of each say how long that server kept its clients
 * waiting, apart for the answers asked for in B's first half second of
 * listening (B's start, its links coming up: the slowest of those). Also: how long B
 * took to agree with A, and how many records B received (N once, or more).
 * Rounds with TLS peer links and with plain text, alternately.
 *
 *   deno task bench:stall [N] [ROUNDS]
 */

import { DatabaseSync } from "node:sqlite";
import { TestHerd } from "../tests/testing/herd.ts";

const RECORDS = Number(Deno.args[0] ?? 1_000_000);
const ROUNDS = Number(Deno.args[1] ?? 3);
const encoder = new TextEncoder();
const decoder = new TextDecoder();

interface Round {
  tls: boolean;
  /** How long A took to listen, its million records loaded. */
  startMs: number;
  convergedMs: number;
  receivedByB: number;
  /** Of the answers asked for after B's first half second: the slowest and the 99th percentile. */
  worstMs: Record<string, number>;
  p99Ms: Record<string, number>;
  /** The slowest answer asked for in B's first half second. */
  startWorstMs: Record<string, number>;
}

/** When an answer was asked for (`performance.now()`), and how long it took, in ms. */
type Wait = [number, number];
/** B's first half second once listening, in ms: its start-up, its links coming up, not the catch-up. */
const START_MS = 500;

/** A client of `port` sending `line(i)` and waiting for each reply, until `stop()`; its waits, in ms. */
async function client(port: number, line: (i: number) => string, stop: () => boolean): Promise<Wait[]> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const buffer = new Uint8Array(65536);
  const waits: Wait[] = [];
  try {
    for (let i = 0; !stop(); i++) {
      const started = performance.now();
      await conn.write(encoder.encode(line(i)));
      // Each reply ends with a newline (a WHATSAT's with two): read until one does.
      for (let text = ""; !text.endsWith("\n");) {
        const n = await conn.read(buffer);
        if (n === null) return waits;
        text += decoder.decode(buffer.subarray(0, n));
      }
      waits.push([started, performance.now() - started]);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  } finally {
    conn.close();
  }
  return waits;
}

/** `/healthz` of an admin port every 20 ms until `stop()`; how long each answer took, in ms. */
async function health(port: number, stop: () => boolean): Promise<Wait[]> {
  const waits: Wait[] = [];
  while (!stop()) {
    const started = performance.now();
    const response = await fetch(`http://127.0.0.1:${port}/healthz`, { headers: { connection: "close" } });
    await response.body?.cancel();
    waits.push([started, performance.now() - started]);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return waits;
}

async function round(tls: boolean): Promise<Round> {
  await using herd = await TestHerd.create({
    placesUrl: "http://127.0.0.1:9/unused",
    names: ["A", "B"],
    links: [["A", "B"]],
    places: { provider: "offline" },
    admin: true,
    tls,
  });
  await Deno.mkdir(`${herd.dir}/data`, { recursive: true });
  const db = new DatabaseSync(`${herd.dir}/data/A.db`);
  db.exec("CREATE TABLE records (line TEXT NOT NULL)");
  db.exec("BEGIN");
  const insert = db.prepare("INSERT INTO records VALUES (?)");
  for (let i = 0; i < RECORDS; i++) {
    insert.run(
      `AT A +0.000100000 client${String(i).padStart(7, "0")}.example.com +34.068930-118.445127 1700000000.${i}`,
    );
  }
  db.exec("COMMIT");
  db.close();
  const starting = performance.now();
  // A loads every record before it listens: seconds, at a million.
  await herd.start("A", { timeoutMs: 120_000 });
  const startMs = Math.round(performance.now() - starting);
  const digest = async (name: string) => {
    try {
      return JSON.parse((await herd.admin(name, "/status")).body).digest as string;
    } catch {
      return undefined;
    }
  };
  const started = performance.now();
  await herd.start("B");
  const listening = performance.now();
  let done = false;
  const stop = () => done;
  const probes = {
    "IAMAT at A": client(herd.port("A"), (i) => `IAMAT probe-a${i} +1+1 1700000001.${i}\n`, stop),
    "IAMAT at B": client(herd.port("B"), (i) => `IAMAT probe-b${i} +1+1 1700000001.${i}\n`, stop),
    "WHATSAT at B": client(
      herd.port("B"),
      (i) => `WHATSAT client${String(i).padStart(7, "0")}.example.com 1 1\n`,
      stop,
    ),
    "/healthz of A": health(herd.adminPort("A"), stop),
    "/healthz of B": health(herd.adminPort("B"), stop),
  };
  while (true) {
    const b = await digest("B");
    if (b !== undefined && b === await digest("A")) break;
    if (performance.now() - started > 120_000) throw new Error("B did not agree with A within 120 s");
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const convergedMs = performance.now() - started;
  done = true;
  const worstMs: Record<string, number> = {};
  const p99Ms: Record<string, number> = {};
  const startWorstMs: Record<string, number> = {};
  for (const [what, probe] of Object.entries(probes)) {
    const all = await probe;
    const waits = all.filter(([at]) => at - listening >= START_MS).map(([, ms]) => ms).sort((a, b) => a - b);
    worstMs[what] = Math.round(waits[waits.length - 1] ?? 0);
    p99Ms[what] = Math.round(waits[Math.min(waits.length - 1, Math.floor(waits.length * 0.99))] ?? 0);
    startWorstMs[what] = Math.round(
      Math.max(0, ...all.filter(([at]) => at - listening < START_MS).map(([, ms]) => ms)),
    );
  }
  const receivedByB = (await herd.metrics("B")).get('herd_peer_records_total{event="received_reconciling"}') ?? 0;
  return { tls, startMs, convergedMs: Math.round(convergedMs), receivedByB, worstMs, p99Ms, startWorstMs };
}

const rounds: Round[] = [];
for (let i = 0; i < ROUNDS; i++) {
  for (const tls of [true, false]) {
    const result = await round(tls);
    rounds.push(result);
    console.error(JSON.stringify(result));
  }
}
const columns = Object.keys(rounds[0].worstMs);
console.log(
  `| peer links | A listening after (ms) | B agrees with A after (ms) | records B received | ${
    columns.join(" | ")
  } (ms: 99th percentile / slowest; in B's first ${START_MS} ms, slowest) |`,
);
console.log(`| --- | ---: | ---: | ---: | ${columns.map(() => "---:").join(" | ")} |`);
for (const r of rounds) {
  console.log(
    `| ${r.tls ? "TLS" : "plain"} | ${r.startMs} | ${r.convergedMs} | ${r.receivedByB.toLocaleString("en-US")} | ${
      columns.map((c) => `${r.p99Ms[c]} / ${r.worstMs[c]}; ${r.startWorstMs[c]}`).join(" | ")
    } |`,
  );
}
await Deno.mkdir("bench/results", { recursive: true });
await Deno.writeTextFile(
  "bench/results/catchup_stall.json",
  JSON.stringify({ date: new Date().toISOString(), records: RECORDS, rounds }, null, 2) + "\n",
);
