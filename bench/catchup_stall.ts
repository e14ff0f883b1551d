/**
 * What a big catch-up does to the servers' clients: A holds N records (a
 * database written before it starts), B starts empty and gets them all by
 * reconciliation. Meanwhile one client of each server sends an IAMAT every
 * 5 ms and waits for its reply, one sends WHATSAT to B, and `/healthz` of
 * both is asked every 20 ms (each a new connection): the slowest answer of
 * each is how long that server kept its clients waiting. Also: how long B
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
  worstMs: Record<string, number>;
}

/** A client of `port` sending `line(i)` and waiting for each reply, until `stop()`; its slowest wait, in ms. */
async function client(port: number, line: (i: number) => string, stop: () => boolean): Promise<number> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const buffer = new Uint8Array(65536);
  let worst = 0;
  try {
    for (let i = 0; !stop(); i++) {
      const started = performance.now();
      await conn.write(encoder.encode(line(i)));
      // Each reply ends with a newline (a WHATSAT's with two): read until one does.
      for (let text = ""; !text.endsWith("\n");) {
        const n = await conn.read(buffer);
        if (n === null) return worst;
        text += decoder.decode(buffer.subarray(0, n));
      }
      worst = Math.max(worst, performance.now() - started);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  } finally {
    conn.close();
  }
  return worst;
}

/** `/healthz` of an admin port every 20 ms until `stop()`; the slowest answer, in ms. */
async function health(port: number, stop: () => boolean): Promise<number> {
  let worst = 0;
  while (!stop()) {
    const started = performance.now();
    const response = await fetch(`http://127.0.0.1:${port}/healthz`, { headers: { connection: "close" } });
    await response.body?.cancel();
    worst = Math.max(worst, performance.now() - started);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return worst;
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
  for (const [what, probe] of Object.entries(probes)) worstMs[what] = Math.round(await probe);
  const receivedByB = (await herd.metrics("B")).get('herd_peer_records_total{event="received_reconciling"}') ?? 0;
  return { tls, startMs, convergedMs: Math.round(convergedMs), receivedByB, worstMs };
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
  } (slowest, ms) |`,
);
console.log(`| --- | ---: | ---: | ---: | ${columns.map(() => "---:").join(" | ")} |`);
for (const r of rounds) {
  console.log(
    `| ${r.tls ? "TLS" : "plain"} | ${r.startMs} | ${r.convergedMs} | ${r.receivedByB.toLocaleString("en-US")} | ${
      columns.map((c) => r.worstMs[c]).join(" | ")
    } |`,
  );
}
await Deno.mkdir("bench/results", { recursive: true });
await Deno.writeTextFile(
  "bench/results/catchup_stall.json",
  JSON.stringify({ date: new Date().toISOString(), records: RECORDS, rounds }, null, 2) + "\n",
);
