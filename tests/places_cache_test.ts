import assert from "node:assert/strict";
import {
  boundResults,
  type PlacesAnswer,
  placesError,
  type PlacesProvider,
  type PlacesQuery,
} from "../lib/places/provider.ts";
import { CachedPlaces, PlacesResult } from "../lib/places/cache.ts";
import { formatGoogleJson, whatsatBody } from "../lib/places/google_json.ts";
import { GoogleNewPlaces } from "../lib/places/google_new.ts";
import { startFakePlaces } from "./testing/fake_places.ts";
import { waitFor } from "./testing/wait.ts";

/** `promise`, or a rejection naming `what` if it has not settled within `ms`: a guard, not a pause. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/** A provider that counts its calls and answers when told to. */
class CountingPlaces implements PlacesProvider {
  readonly name = "counting";
  calls: PlacesQuery[] = [];
  signals: (AbortSignal | undefined)[] = [];
  status = "OK";
  #release: (() => void)[] = [];
  held = false;

  search(query: PlacesQuery, signal?: AbortSignal): Promise<PlacesAnswer> {
    this.calls.push(query);
    this.signals.push(signal);
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
  assert.deepEqual(cache.stats, { hits: 1, misses: 2, shared: 0, queued: 0, refused: 0 });
});

Deno.test(
  "CachedPlaces drops expired answers as new ones come, at most once a TTL, not only when full or asked again",
  async () => {
    const inner = new CountingPlaces();
    let now = 0;
    const cache = new CachedPlaces(inner, { ttlMs: 1000, maxEntries: 100, now: () => now });
    const at = (radiusMetres: string) => ({ ...HERE, radiusMetres });
    await cache.search(at("1"));
    await cache.search(at("2"));
    const oneBody = cache.bytes / 2;
    now = 500;
    await cache.search(at("3"));
    now = 1001; // 1 and 2 expired at 1000
    await cache.search(at("4"));
    assert.equal(cache.size, 2, "3 and 4 are left");
    assert.equal(cache.bytes, 2 * oneBody);
    now = 1600; // 3 expired at 1500, but the last pass was 599 ms ago
    await cache.search(at("5"));
    assert.equal(cache.size, 3);
    now = 2001;
    await cache.search(at("6"));
    assert.equal(cache.size, 2, "5 and 6 are left");
    assert.equal(cache.bytes, 2 * oneBody);
    assert.equal(inner.calls.length, 6);
  },
);

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
  const searches = Array.from({ length: 10 }, () => cache.result(HERE));
  assert.equal(inner.calls.length, 1);
  inner.releaseAll();
  const results = await Promise.all(searches);
  assert.ok(results.every((result) => result === results[0]), "one result, shared");
  assert.deepEqual(results[0].answer, { html_attributions: [], results: [1, 2, 3], status: "OK" });
  assert.equal(cache.stats.shared, 9);
});

Deno.test("CachedPlaces keeps error answers only for errorTtlMs, so an error invites no retry storm", async () => {
  const inner = new CountingPlaces();
  inner.status = "OVER_QUERY_LIMIT";
  let now = 0;
  const cache = new CachedPlaces(inner, { ttlMs: 60_000, errorTtlMs: 1000, maxEntries: 10, now: () => now });
  for (let i = 0; i < 100; i++) assert.equal((await cache.search(HERE)).status, "OVER_QUERY_LIMIT");
  assert.equal(inner.calls.length, 1, "a hundred searches, one upstream call");
  inner.status = "OK";
  now = 999;
  assert.equal((await cache.search(HERE)).status, "OVER_QUERY_LIMIT");
  now = 1000;
  assert.equal((await cache.search(HERE)).status, "OK", "the error expires after errorTtlMs");
  assert.equal(inner.calls.length, 2);
  const uncached = new CachedPlaces(inner, { ttlMs: 1000, maxEntries: 10 });
  inner.status = "UNKNOWN_ERROR";
  await uncached.search(HERE);
  await uncached.search(HERE);
  assert.equal(inner.calls.length, 4, "without errorTtlMs errors are not kept");
});

Deno.test("CachedPlaces runs at most maxConcurrent upstream searches, queues maxQueued, refuses the rest", async () => {
  const inner = new CountingPlaces();
  inner.held = true;
  const cache = new CachedPlaces(inner, { ttlMs: 1000, maxEntries: 100, maxConcurrent: 3, maxQueued: 2 });
  const at = (radiusMetres: string) => ({ ...HERE, radiusMetres });
  const searches = Array.from({ length: 8 }, (_, i) => cache.search(at(String(i + 1))));
  await Promise.resolve();
  assert.equal(inner.calls.length, 3, "three upstream at once");
  assert.equal(cache.running, 3);
  const refused = await Promise.race([searches[5], searches[6], searches[7]]);
  assert.equal(refused.status, "OVER_QUERY_LIMIT", "past the queue, refused at once");
  await waitFor(() => {
    inner.releaseAll();
    return inner.calls.length >= 5;
  }, { what: "the two queued searches to go upstream", stepMs: 0 });
  inner.releaseAll();
  const answers = await Promise.all(searches);
  assert.deepEqual(answers.map((answer) => answer.status), [
    "OK",
    "OK",
    "OK",
    "OK",
    "OK",
    ...Array(3).fill("OVER_QUERY_LIMIT"),
  ]);
  assert.equal(inner.calls.length, 5, "the queued two ran after the first three");
  assert.deepEqual(cache.stats, { hits: 0, misses: 5, shared: 0, queued: 2, refused: 3 });
  assert.equal(cache.running, 0);
});

Deno.test("PlacesResult.reply() is byte for byte the line then the squeezed JSON of the answer cut to each bound", () => {
  const line = new TextEncoder().encode("AT Hill +0.263873386 kiwi +34.068930-118.445127 1621464827.959498503");
  const answers: PlacesAnswer[] = [
    { html_attributions: [], results: [], status: "ZERO_RESULTS" },
    {
      html_attributions: ['<a href="x">ä 🥝</a>'],
      results: Array.from({ length: 20 }, (_, i) => ({
        geometry: { location: { lat: i / 3, lng: -i } },
        name: `Café ${i} "quoted"\n🥝`,
        types: i % 2 ? [] : ["locality", "political"],
        empty: {},
      })),
      status: "OK",
      next_page_token: "abc",
    },
    { results: [1, "two", null, [3]], status: "OK" },
    placesError("REQUEST_DENIED", "no key"),
  ];
  for (const answer of answers) {
    const result = new PlacesResult(answer);
    for (let bound = 0; bound <= 21; bound++) {
      const expected = new TextEncoder().encode(
        "AT Hill +0.263873386 kiwi +34.068930-118.445127 1621464827.959498503" +
          whatsatBody(formatGoogleJson(boundResults(answer, bound))),
      );
      assert.deepEqual(result.reply(line, bound), expected, `${answer.status} bound ${bound}`);
    }
    assert.ok(result.bytes > 0, "one body, made once");
    // The answer's objects are let go once the body is made: the answer is parsed from the body again, as the reply
    // carries it (JSON's: -0 is 0).
    assert.notStrictEqual(result.answer, answer);
    assert.deepEqual(result.answer, JSON.parse(JSON.stringify(answer)));
    assert.equal(result.status, answer.status);
    assert.equal(result.errorMessage, answer.error_message);
  }
});

Deno.test("PlacesResult encodes an answer of thousands of results once, not once per result (linear work)", () => {
  // An upstream may answer any number of results within the 4 MiB read: the body's byte offsets must not cost an
  // encoding of the whole head per result (quadratic: the event loop blocked for hours on a 4 MiB answer).
  const answer: PlacesAnswer = {
    html_attributions: [],
    results: Array.from({ length: 5_000 }, (_, i) => ({ name: i % 7 ? `p${i}` : `Café ${i} 🥝` })),
    status: "OK",
  };
  const encode = TextEncoder.prototype.encode;
  let encoded = 0;
  TextEncoder.prototype.encode = function (input?: string) {
    encoded += input?.length ?? 0;
    return encode.call(this, input);
  };
  let result: PlacesResult;
  try {
    result = new PlacesResult(answer);
    result.encode();
  } finally {
    TextEncoder.prototype.encode = encode;
  }
  assert.ok(encoded <= 3 * result.bytes, `${encoded} characters encoded for a body of ${result.bytes} bytes`);
  const line = new TextEncoder().encode("AT Hill +0.263873386 kiwi +34.068930-118.445127 1621464827.959498503");
  for (const bound of [0, 1, 7, 20]) {
    assert.deepEqual(
      result.reply(line, bound),
      new TextEncoder().encode(
        "AT Hill +0.263873386 kiwi +34.068930-118.445127 1621464827.959498503" +
          whatsatBody(formatGoogleJson(boundResults(answer, bound))),
      ),
      `bound ${bound}`,
    );
  }
});

Deno.test("CachedPlaces turns a provider that rejects into an UNKNOWN_ERROR answer", async () => {
  const rejecting: PlacesProvider = { name: "broken", search: () => Promise.reject(new Error("key=secret")) };
  const cache = new CachedPlaces(rejecting, { ttlMs: 1000, maxEntries: 10 });
  const answer = await cache.search(HERE);
  assert.equal(answer.status, "UNKNOWN_ERROR");
  assert.ok(!JSON.stringify(answer).includes("secret"));
});

Deno.test("CachedPlaces bounds the whole wait of a search, queue and upstream call, by timeoutMs", async () => {
  const inner = new CountingPlaces();
  inner.held = true; // upstream hangs
  const cache = new CachedPlaces(inner, { ttlMs: 1000, maxEntries: 10, maxConcurrent: 1, timeoutMs: 200 });
  const at = (radiusMetres: string) => ({ ...HERE, radiusMetres });
  const started = performance.now();
  const running = cache.search(at("1"));
  const queued = [cache.search(at("2")), cache.search(at("3"))];
  const joined = cache.search(at("3"));
  const answers = await within(Promise.all([running, ...queued, joined]), 2000, "the searches");
  const elapsed = performance.now() - started;
  assert.ok(elapsed < 1000, `all answered by the deadline, not one after another (${Math.round(elapsed)} ms)`);
  for (const answer of answers) {
    assert.equal(answer.status, "UNKNOWN_ERROR");
    assert.deepEqual(answer.results, []);
    assert.match(String(answer.error_message), /did not answer within 200 ms/);
  }
  assert.match(String(answers[1].error_message), /waiting behind other searches/);
  assert.equal(inner.calls.length, 1, "the queued searches never reached the provider");
  assert.equal(inner.signals[0]?.aborted, true, "the provider is told the answer is no longer wanted");
  assert.equal(cache.running, 1, "the turn is held until the provider is done");
  inner.releaseAll();
  await within(
    (async () => {
      while (cache.running > 0) await Promise.resolve();
    })(),
    1000,
    "the turn to be freed",
  );
  inner.held = false;
  assert.equal((await cache.search(at("2"))).status, "OK", "a queue timeout is not cached");
});

Deno.test("CachedPlaces does not send a queued search upstream when its turn comes with almost no time left", async () => {
  // Upstream never answers, and a call ends only when the cache aborts it (as fetch does).
  const calls: PlacesQuery[] = [];
  const silent: PlacesProvider = {
    name: "silent",
    search: (query, signal) => {
      calls.push(query);
      return new Promise((resolve) => {
        signal?.addEventListener("abort", () => resolve(placesError("UNKNOWN_ERROR", "aborted")), { once: true });
      });
    },
  };
  const cache = new CachedPlaces(silent, { ttlMs: 1000, maxEntries: 10, maxConcurrent: 1, timeoutMs: 200 });
  const answers = await within(
    Promise.all(["1", "2", "3", "4"].map((radiusMetres) => cache.search({ ...HERE, radiusMetres }))),
    2000,
    "the searches",
  );
  assert.deepEqual(answers.map((answer) => answer.status), Array(4).fill("UNKNOWN_ERROR"));
  // The first search's turn is freed at its deadline, when the three queued behind it have no time left either: each
  // passes it on. Before, each was sent upstream with its last milliseconds (an audit's 300 searches made 51 calls).
  assert.equal(calls.length, 1, calls.map((query) => query.radiusMetres).join(" "));
  assert.equal(cache.running, 0, "the turn is free again");
  assert.equal(cache.size, 0, "no timeout is cached");
});

Deno.test("CachedPlaces answers an answer it cannot print as UNKNOWN_ERROR, and every WHATSAT sharing it gets that", async () => {
  // A value JSON cannot print: the provider's answer must not reject the searches that share it (their clients would
  // get no reply at all).
  const unprintable: PlacesProvider = {
    name: "unprintable",
    search: () => Promise.resolve({ results: [{ big: 1n }], status: "OK" }),
  };
  const cache = new CachedPlaces(unprintable, { ttlMs: 1000, maxEntries: 10 });
  const results = await Promise.all([cache.result(HERE), cache.result(HERE)]);
  for (const result of results) {
    assert.equal(result.status, "UNKNOWN_ERROR");
    assert.equal(result.errorMessage, "The Places service's answer cannot be printed");
    const expected = "AT x" + whatsatBody(formatGoogleJson(placesError("UNKNOWN_ERROR", String(result.errorMessage))));
    assert.equal(new TextDecoder().decode(result.reply(new TextEncoder().encode("AT x"), 5)), expected);
  }
  assert.equal(cache.size, 0, "an error is not kept (errorTtlMs is 0)");
});

Deno.test({
  name: "behind the cache, a hung Places service answers every queued WHATSAT within timeoutMs",
  permissions: { net: ["127.0.0.1"] },
}, async () => {
  await using fake = startFakePlaces({ key: "k" });
  fake.mode = "hang";
  const cache = new CachedPlaces(new GoogleNewPlaces({ url: fake.newUrl, key: "k", timeoutMs: 300 }), {
    ttlMs: 1000,
    maxEntries: 10,
    maxConcurrent: 1,
    timeoutMs: 300,
  });
  const started = performance.now();
  const answers = await within(
    Promise.all(["1", "2", "3", "4"].map((radiusMetres) => cache.search({ ...HERE, radiusMetres }))),
    3000,
    "the searches",
  );
  const elapsed = performance.now() - started;
  assert.deepEqual(answers.map((answer) => answer.status), Array(4).fill("UNKNOWN_ERROR"));
  assert.ok(elapsed < 900, `answered at the deadline, not after four timeouts in turn (${Math.round(elapsed)} ms)`);
});

Deno.test("CachedPlaces holds at most maxBytes of reply bodies, dropping the least recently used", async () => {
  /** A provider whose answers have one result of 1,000 characters (10,000 for a radius of 9000). */
  const sized: PlacesProvider = {
    name: "sized",
    search: (query) =>
      Promise.resolve({
        html_attributions: [],
        results: ["x".repeat(query.radiusMetres === "9000" ? 10_000 : 1000)],
        status: "OK",
      }),
  };
  const at = (radiusMetres: string) => ({ ...HERE, radiusMetres });
  const bytes = (await new CachedPlaces(sized, { ttlMs: 1, maxEntries: 1 }).result(at("1000"))).encode();
  const cache = new CachedPlaces(sized, { ttlMs: 60_000, maxEntries: 100, maxBytes: 3 * bytes });
  for (const radius of ["1000", "1001", "1002"]) await cache.search(at(radius));
  assert.equal(cache.size, 3);
  assert.equal(cache.bytes, 3 * bytes);
  await cache.search(at("1000")); // 1000 is now the most recently used
  await cache.search(at("1003")); // past maxBytes: 1001 goes
  assert.ok(cache.bytes <= 3 * bytes, `${cache.bytes} bytes held, at most ${3 * bytes}`);
  assert.equal(cache.size, 3);
  const misses = cache.stats.misses;
  await cache.search(at("1000"));
  assert.equal(cache.stats.misses, misses, "1000 stayed");
  await cache.search(at("1001"));
  assert.equal(cache.stats.misses, misses + 1, "1001 was dropped");
  await cache.search(at("9000")); // larger alone than maxBytes: answered, not kept
  assert.ok(cache.bytes <= 3 * bytes);
  await cache.search(at("9000"));
  assert.equal(cache.stats.misses, misses + 3, "an answer larger than maxBytes is not kept");
});
