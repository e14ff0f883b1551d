import assert from "node:assert/strict";
import { parseConfig } from "../lib/config/config.ts";
import { boundResults, chooseProvider, placesError, providerUrl } from "../lib/places/provider.ts";

const config = parseConfig(
  JSON.stringify({
    servers: { A: { host: "127.0.0.1", port: 1, peerPort: 2 } },
    links: [],
    places: { url: "https://maps.googleapis.com/maps/api/place/nearbysearch/json" },
    logDir: "logs",
  }),
  "/tmp/herd.config.json",
);

Deno.test("chooseProvider() picks google-new for auto with a key, offline without", () => {
  assert.deepEqual(chooseProvider("auto", true), {
    provider: "google-new",
    reason: "auto: GOOGLE_PLACES_API_KEY is set",
  });
  const without = chooseProvider("auto", false);
  assert.equal(without.provider, "offline");
  assert.match(without.reason, /not set/);
});

Deno.test("chooseProvider() keeps an explicit provider whatever the key", () => {
  for (const setting of ["google-legacy", "google-new", "offline"] as const) {
    assert.equal(chooseProvider(setting, false).provider, setting);
    assert.equal(chooseProvider(setting, true).provider, setting);
  }
});

Deno.test("the config defaults to auto, Google's New endpoint, and a bounded cache", () => {
  assert.equal(config.places.provider, "auto");
  assert.equal(config.places.newUrl, "https://places.googleapis.com/v1/places:searchNearby");
  assert.equal(config.places.cacheEntries, 10_000);
  assert.equal(config.places.cacheTtlMs, 300_000);
});

Deno.test("parseConfig() refuses an unknown places.provider, naming the valid ones", () => {
  const text = JSON.stringify({
    servers: { A: { host: "127.0.0.1", port: 1, peerPort: 2 } },
    links: [],
    places: { url: "https://x.example/", provider: "bing" },
    logDir: "logs",
  });
  assert.throws(
    () => parseConfig(text, "/tmp/c.json"),
    /places\.provider must be one of auto, google-legacy, google-new, offline, got "bing"/,
  );
});

Deno.test("providerUrl() names the endpoint each provider calls, and none for offline", () => {
  assert.equal(providerUrl(config.places, "google-legacy"), config.places.url);
  assert.equal(providerUrl(config.places, "google-new"), config.places.newUrl);
  assert.equal(providerUrl(config.places, "offline"), undefined);
});

Deno.test("boundResults() cuts results and leaves the rest of the answer alone", () => {
  const answer = { html_attributions: [], results: [1, 2, 3], status: "OK", next_page_token: "t" };
  assert.deepEqual(boundResults(answer, 2), { ...answer, results: [1, 2] });
  assert.equal(boundResults(answer, 3), answer);
  assert.deepEqual(boundResults(answer, 0).results, []);
});

Deno.test("placesError() has the legacy error shape, keys in Google's order", () => {
  assert.deepEqual(Object.keys(placesError("UNKNOWN_ERROR", "x")), [
    "error_message",
    "html_attributions",
    "results",
    "status",
  ]);
});
