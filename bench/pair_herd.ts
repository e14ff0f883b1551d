/**
 * One side of `deno task bench:pair` (bench/ab_pair.ts): a five-server herd
 * from the checkout at `<root>`, with a fake Places service, started with
 * that checkout's own test harness. Prints one line of JSON (client ports
 * and server pids) once the herd has converged, then holds the herd until
 * its standard input closes.
 *
 *   deno run --config <root>/deno.json ... bench/pair_herd.ts <root>
 */

const [root] = Deno.args;
const { TestHerd } = await import(`${root}/tests/testing/herd.ts`);
const { startFakePlaces } = await import(`${root}/tests/testing/fake_places.ts`);
const KEY = "k-pair-test-key";

const fake = startFakePlaces({ key: KEY, results: 20 });
const herd = await TestHerd.create({ placesUrl: fake.url, key: KEY, places: { provider: "google-new" } });
await herd.startAll();
const names = herd.names as string[];
console.log(JSON.stringify({ ports: names.map((name) => herd.port(name)), pids: names.map((name) => herd.pid(name)) }));
// Held until the parent closes our standard input.
for await (const _ of Deno.stdin.readable) { /* nothing is sent */ }
await herd[Symbol.asyncDispose]();
await fake.close();
Deno.exit(0);
