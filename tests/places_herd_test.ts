/** Places providers end to end: real server processes, the fake Places on loopback, or no network at all. */

import assert from "node:assert/strict";
import { waitFor } from "./testing/wait.ts";
import { startFakePlaces } from "./testing/fake_places.ts";
import { exchange, HERD_TEST_PERMISSIONS, TestHerd } from "./testing/herd.ts";

const KEY = "new-key-77e1b0";
const UCLA = "IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503\n";

function json(reply: string): Record<string, unknown> {
  assert.ok(reply.endsWith("}\n\n"), reply.slice(-60));
  return JSON.parse(reply.slice(reply.indexOf("\n") + 1));
}

Deno.test({
  name: "with no key, the auto provider answers WHATSAT with nearby towns from the offline data",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await TestHerd.create({
    placesUrl: "http://127.0.0.1:9/unused",
    names: ["Hill", "Campbell"],
    links: [["Hill", "Campbell"]],
  });
  await herd.startAll();
  await exchange(herd.port("Hill"), UCLA);
  const answer = json(await exchange(herd.port("Campbell"), "WHATSAT kiwi.cs.ucla.edu 10 5\n"));
  assert.equal(answer.status, "OK");
  const results = answer.results as { name: string; place_id: string; geometry: unknown }[];
  assert.equal(results.length, 5);
  assert.ok(results.every((result) => typeof result.name === "string" && result.place_id.startsWith("geonames:")));
  assert.match(JSON.stringify(answer.html_attributions), /GeoNames/);
  const ocean = json(
    await exchange(herd.port("Hill"), "IAMAT buoy +0-140 1\nWHATSAT buoy 50 20\n").then((r) =>
      r.slice(r.indexOf("\n") + 1)
    ),
  );
  assert.equal(ocean.status, "ZERO_RESULTS");
  assert.match(await herd.log("Hill"), /Places provider: "offline" \("auto: GOOGLE_PLACES_API_KEY is not set/);
});

Deno.test({
  name: "a key no request can carry (a stray line break) is named at start-up, and WHATSAT answers REQUEST_DENIED",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using fake = startFakePlaces({ key: KEY });
  await using herd = await TestHerd.create({ placesUrl: fake.url, key: `${KEY}\n`, names: ["Solo"], links: [] });
  await herd.start("Solo");
  const said = "GOOGLE_PLACES_API_KEY holds a character no request can carry (U+000A at offset 14)";
  const warning = `${said}: a Places API key is letters, digits, '-' and '_': WHATSAT will answer REQUEST_DENIED`;
  await waitFor(() => herd.stderr("Solo").includes(warning), { what: "Solo's warning about the key" });
  await exchange(herd.port("Solo"), UCLA);
  const answer = json(await exchange(herd.port("Solo"), "WHATSAT kiwi.cs.ucla.edu 10 5\n"));
  assert.equal(answer.status, "REQUEST_DENIED");
  assert.ok(String(answer.error_message).startsWith(said), String(answer.error_message));
  assert.equal(fake.requests.length, 0);
});

Deno.test({
  name: "with a key, the auto provider uses Places API (New) and answers in the legacy shape, through the cache",
  permissions: HERD_TEST_PERMISSIONS,
}, async (t) => {
  await using fake = startFakePlaces({ key: KEY });
  await using herd = await TestHerd.create({
    placesUrl: fake.url,
    key: KEY,
    names: ["Solo"],
    links: [],
    places: { errorTtlMs: 3000 },
  });
  await herd.start("Solo");
  const port = herd.port("Solo");
  await exchange(port, UCLA);

  await t.step(
    "the request carries the key header, the field mask, the location and the radius in metres",
    async () => {
      const answer = json(await exchange(port, "WHATSAT kiwi.cs.ucla.edu 10 3\n"));
      assert.equal(answer.status, "OK");
      const results = answer.results as Record<string, unknown>[];
      assert.equal(results.length, 3);
      assert.deepEqual(Object.keys(results[0]), [
        "business_status",
        "geometry",
        "name",
        "place_id",
        "rating",
        "types",
        "user_ratings_total",
        "vicinity",
      ]);
      assert.equal(results[2].rating, undefined, "fields only where present");
      const sent = fake.requests.at(-1)!;
      assert.equal(sent.api, "new");
      assert.equal(sent.key, KEY);
      assert.equal(sent.location, "34.06893,-118.445127");
      assert.equal(sent.radius, "10000");
      assert.equal(sent.maxResultCount, 20);
    },
  );

  await t.step(
    "the cache answers the same place and radius again, whatever the bound, without asking upstream",
    async () => {
      const before = fake.requests.length;
      const answer = json(await exchange(port, "WHATSAT kiwi.cs.ucla.edu 10 5\n"));
      assert.equal((answer.results as unknown[]).length, 5, "the bound is applied after the cache");
      assert.equal(fake.requests.length, before);
      await exchange(port, "WHATSAT kiwi.cs.ucla.edu 11 5\n");
      assert.equal(fake.requests.length, before + 1, "another radius is another entry");
    },
  );

  await t.step("concurrent identical WHATSATs share one upstream call", async () => {
    const before = fake.requests.length;
    const replies = await Promise.all(
      Array.from({ length: 8 }, () => exchange(port, "WHATSAT kiwi.cs.ucla.edu 12.5 2\n")),
    );
    assert.ok(replies.every((reply) => reply === replies[0]));
    assert.equal(fake.requests.length, before + 1);
  });

  await t.step(
    "upstream errors map to legacy statuses, are cached for errorTtlMs only, and never show the key",
    async () => {
      const cases = [
        ["http-400", "INVALID_REQUEST"],
        ["http-403", "REQUEST_DENIED"],
        ["http-429", "OVER_QUERY_LIMIT"],
        ["http-500", "UNKNOWN_ERROR"],
        ["malformed", "UNKNOWN_ERROR"],
        ["hang", "UNKNOWN_ERROR"],
      ] as const;
      for (const [index, [mode, status]] of cases.entries()) {
        fake.mode = mode;
        const reply = await exchange(port, `WHATSAT kiwi.cs.ucla.edu ${20 + index} 5\n`);
        const answer = json(reply);
        assert.equal(answer.status, status, mode);
        assert.deepEqual(answer.results, []);
        assert.equal(typeof answer.error_message, "string");
        assert.ok(!reply.includes(KEY));
      }
      fake.mode = "ok";
      const before = fake.requests.length;
      // Asked again at once, the last failed search (the hang's, cached as it was answered) is served from the cache
      // (no retry storm), with no call upstream. (Not the first case's: after the hang's 1000 ms timeout its error
      // may be past errorTtlMs, and a check of it would have to be skipped.)
      const last = `WHATSAT kiwi.cs.ucla.edu ${20 + cases.length - 1} 5\n`;
      const again = json(await exchange(port, last));
      assert.equal(again.status, "UNKNOWN_ERROR", "the error is served from the cache");
      assert.equal(fake.requests.length, before, "no call upstream while the error is cached");
      // ...and once errorTtlMs has passed, the search is made again.
      await waitFor(async () => json(await exchange(port, last)).status === "OK", {
        what: "the cached error to expire",
      });
      assert.equal(fake.requests.length, before + 1);
      const { code } = await herd.stop("Solo", "SIGTERM");
      assert.equal(code, 0);
      const log = await herd.log("Solo");
      assert.ok(!log.includes(KEY), "the key must not appear in the log");
      assert.match(log, /Places provider: "google-new" \("auto: GOOGLE_PLACES_API_KEY is set"\)/);
      assert.match(log, /Fake RESOURCE_EXHAUSTED error/, "the upstream message is kept");
    },
  );
});

Deno.test({
  name: "a failed search is warned about once per upstream call, not once per reply, and at most 10 a second",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using fake = startFakePlaces({ key: KEY });
  fake.mode = "http-500";
  await using herd = await TestHerd.create({
    placesUrl: fake.url,
    key: KEY,
    names: ["Solo"],
    links: [],
    places: { errorTtlMs: 600_000 },
  });
  await herd.start("Solo");
  const port = herd.port("Solo");
  await exchange(port, UCLA);
  // 250 pipelined WHATSATs for one search: one upstream call, the rest shared or from the cache.
  const same = await exchange(port, "WHATSAT kiwi.cs.ucla.edu 10 5\n".repeat(250));
  assert.equal(same.match(/"status" : "UNKNOWN_ERROR"/g)?.length, 250);
  assert.equal(fake.requests.length, 1);
  // 100 distinct failing searches: 100 upstream calls, warned about 10 a second and then counted.
  const distinct = Array.from({ length: 100 }, (_, i) => `WHATSAT kiwi.cs.ucla.edu ${(11 + i / 10).toFixed(1)} 5\n`)
    .join("");
  const replies = await exchange(port, distinct);
  assert.equal(replies.match(/"status" : "UNKNOWN_ERROR"/g)?.length, 100);
  assert.equal(fake.requests.length, 101);
  // The count of those not logged is said once their second is over.
  await waitFor(async () => /more failed Places searches were not logged one by one/.test(await herd.log("Solo")), {
    what: "the count of warnings not logged",
  });
  await herd.stop("Solo", "SIGTERM");
  const log = await herd.log("Solo");
  const warnings = log.split("\n").filter((line) => line.includes("[WRN]"));
  const upstream = warnings.filter((line) => /Fake INTERNAL error/.test(line));
  assert.ok(upstream.length >= 1 && upstream.length <= 20, `${upstream.length} warnings:\n${warnings.join("\n")}`);
  assert.equal(
    upstream.filter((line) => /"\+34\.068930-118\.445127" radius "10000" m/.test(line)).length,
    1,
    "one for the 250 replies",
  );
  assert.match(log, /more failed Places searches were not logged one by one/);
  assert.equal((log.match(/\[INF\] .*Places "google-new" .*radius 10000 m: "UNKNOWN_ERROR"/g) ?? []).length, 250);
});
