/**
 * Catch-up benchmark: a server that missed N updates while it was down is
 * restarted; how long until it holds exactly the same records as its
 * neighbour (same store digest), counted from its links coming up (from
 * its log) and from its process start. The bar is 2 s for 100,000 updates.
 *
 *   deno run --allow-read=.,/tmp --allow-write=/tmp,bench/results --allow-run=deno --allow-net=127.0.0.1 bench/catchup.ts [N]
 */

import { exchange, TestHerd } from "../tests/testing/herd.ts";

const UPDATES = Number(Deno.args[0] ?? 100_000);
const CONNECTIONS = 10;

async function pipelined(port: number, lines: string[]): Promise<void> {
  const replies = (await exchange(port, lines.join("\n") + "\n")).split("\n");
  const stored = replies.filter((reply) => reply.startsWith("AT ")).length;
  if (stored !== lines.length) throw new Error(`Expected ${lines.length} AT replies, got ${stored}`);
}

await using herd = await TestHerd.create({
  placesUrl: "http://127.0.0.1:9/unused",
  names: ["A", "B", "Probe"],
  links: [["A", "B"], ["A", "Probe"], ["B", "Probe"]],
  extra: { peers: { reconnectMinMs: 20, reconnectMaxMs: 200 } },
});
await herd.start("A");
await herd.start("B");
await herd.waitConverged(["A", "B"]);
await herd.stop("B", "SIGKILL");

const started = performance.now();
const perConnection = Math.ceil(UPDATES / CONNECTIONS);
await Promise.all(Array.from({ length: CONNECTIONS }, (_, c) => {
  const lines: string[] = [];
  for (let i = c * perConnection; i < Math.min(UPDATES, (c + 1) * perConnection); i++) {
    const latitude = (i % 179) - 89;
    const longitude = (i % 359) - 179;
    const location = `${latitude < 0 ? "-" : "+"}${Math.abs(latitude)}.${i % 1000}${longitude < 0 ? "-" : "+"}${
      Math.abs(longitude)
    }.5`;
    lines.push(`IAMAT client-${i} ${location} ${1_700_000_000 + i}.${i % 1000}`);
  }
  return pipelined(herd.port("A"), lines);
}));
const loadMs = performance.now() - started;
const target = await herd.digestOf("A");

const restart = Date.now();
await herd.start("B");
let converged = 0;
let polls = 0;
while (true) {
  polls++;
  if (await herd.digestOf("B") === target) {
    converged = Date.now();
    break;
  }
  if (Date.now() - restart > 60_000) throw new Error("B did not converge within 60 s");
  await new Promise((resolve) => setTimeout(resolve, 10));
}
const log = await herd.log("B");
const linkUpLine = log.split("\n").reverse().find((line) => /Link to "A" is up/.test(line));
const linkUp = linkUpLine === undefined ? restart : Date.parse(linkUpLine.slice(0, linkUpLine.indexOf(" ")));
const result = {
  date: new Date().toISOString(),
  updates: UPDATES,
  loadAtAMs: Math.round(loadMs),
  fromProcessStartMs: converged - restart,
  fromLinkUpMs: converged - linkUp,
  polls,
  barMs: 2000,
};
console.log(`| catch-up after ${UPDATES} missed updates | ms |\n| --- | ---: |`);
console.log(`| from B's process start | ${result.fromProcessStartMs} |`);
console.log(`| from B's link to A coming up (bar: 2000) | ${result.fromLinkUpMs} |`);
console.log(`| (loading A with the updates took) | ${result.loadAtAMs} |`);
await Deno.mkdir("bench/results", { recursive: true });
await Deno.writeTextFile("bench/results/catchup.json", JSON.stringify(result, null, 2) + "\n");
