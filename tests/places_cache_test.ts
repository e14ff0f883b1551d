import assert from "node:assert/strict";
import { type PlacesAnswer, placesError, type PlacesProvider, type PlacesQuery } from "../lib/places/provider.ts";
import { CachedPlaces } from "../lib/places/cache.ts";

/** A provider that counts its calls and answers when told to. */
class CountingPlaces implements PlacesProvider {
  readonly name = "counting";
  calls: PlacesQuery[] = [];
  status = "OK";
  #release: (() => void)[] = [];
  held = false;

  search(query: PlacesQuery): Promise<PlacesAnswer> {
    this.calls.push(query);
    const answer = this.status === "OK"
      ? { html_attributions: [], results: [1, 2, 3], status: "OK" }
      : placesError(this.status, "upstream says no");
    if (!this.held) return Promise.resolve(answer);
    return new Promise((resolve) => this.#release.push(() => resolve(answer)));
  }

  releaseAll(): void {
    this.#release.splice(0).forEach((release) => release());
  }
}

const HERE = { latitude: "+34.068930", longitude: "-118.445127", radiusMetres: "10000" };

Deno.test("CachedPlaces answers a repeated search from the cache until the TTL passes", async () => {
  const inner = new CountingPlaces();
  let now = 0;
  const cache = new CachedPlaces(inner, { ttlMs: 1000, maxEntries: 10, now: () => now });
  await cache.search(HERE);
  now = 999;
  assert.deepEqual(await cache.search(HERE), { html_attributions: [], results: [1, 2, 3], status: "OK" });
  assert.equal(inner.calls.length, 1);
  now = 1000;
  await cache.search(HERE);
  assert.equal(inner.calls.length, 2, "an expired entry is fetched again");
  assert.deepEqual(cache.stats, { hits: 1, misses: 2, shared: 0 });
});

Deno.test("CachedPlaces keys by location and radius", async () => {
  const inner = new CountingPlaces();
  const cache = new CachedPlaces(inner, { ttlMs: 1000, maxEntries: 10 });
  await cache.search(HERE);
  await cache.search({ ...HERE, radiusMetres: "5000" });
  await cache.search({ ...HERE, latitude: "+34.068931" });
  await cache.search(HERE);
  assert.equal(inner.calls.length, 3);
});

Deno.test("CachedPlaces holds at most maxEntries, dropping the least recently used", async () => {
  const inner = new CountingPlaces();
  const cache = new CachedPlaces(inner, { ttlMs: 60_000, maxEntries: 2 });
  const at = (radiusMetres: string) => ({ ...HERE, radiusMetres });
  await cache.search(at("1"));
  await cache.search(at("2"));
  await cache.search(at("1")); // 1 is now the most recently used
  await cache.search(at("3")); // evicts 2
  assert.equal(cache.size, 2);
  assert.equal(inner.calls.length, 3);
  await cache.search(at("1"));
  assert.equal(inner.calls.length, 3, "1 stayed");
  await cache.search(at("2"));
  assert.equal(inner.calls.length, 4, "2 was evicted");
});

Deno.test("CachedPlaces lets concurrent identical searches share one upstream call", async () => {
  const inner = new CountingPlaces();
  inner.held = true;
  const cache = new CachedPlaces(inner, { ttlMs: 1000, maxEntries: 10 });
  const searches = Array.from({ length: 10 }, () => cache.search(HERE));
  assert.equal(inner.calls.length, 1);
  inner.releaseAll();
  const answers = await Promise.all(searches);
  assert.ok(answers.every((answer) => answer === answers[0]));
  assert.equal(cache.stats.shared, 9);
});

Deno.test("CachedPlaces does not keep error answers", async () => {
  const inner = new CountingPlaces();
  inner.status = "OVER_QUERY_LIMIT";
  const cache = new CachedPlaces(inner, { ttlMs: 1000, maxEntries: 10 });
  assert.equal((await cache.search(HERE)).status, "OVER_QUERY_LIMIT");
  inner.status = "OK";
  assert.equal((await cache.search(HERE)).status, "OK");
  assert.equal(inner.calls.length, 2);
  assert.equal(cache.size, 1);
});

Deno.test("CachedPlaces turns a provider that rejects into an UNKNOWN_ERROR answer", async () => {
  const rejecting: PlacesProvider = { name: "broken", search: () => Promise.reject(new Error("key=secret")) };
  const cache = new CachedPlaces(rejecting, { ttlMs: 1000, maxEntries: 10 });
  const answer = await cache.search(HERE);
  assert.equal(answer.status, "UNKNOWN_ERROR");
  assert.ok(!JSON.stringify(answer).includes("secret"));
});
