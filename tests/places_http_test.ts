/**
 * The Google providers against upstream answers that are wrong in ways a
 * real service or a hostile one can be: huge or endless bodies, statuses
 * and bodies that disagree, malformed fields. Each answer must still be the
 * documented Places shape, and never show the key.
 */

import assert from "node:assert/strict";
import { GoogleNewPlaces } from "../lib/places/google_new.ts";
import { GoogleLegacyPlaces } from "../lib/places/google_legacy.ts";
import {
  MAX_ECHOED_CHARS,
  MAX_PLACES_BODY_BYTES,
  MAX_PLACES_DEPTH,
  MAX_PLACES_VALUES,
  scrubKey,
  scrubKeyDeep,
  SHORT_KEY_CHARS,
} from "../lib/places/http.ts";
import type { PlacesProvider } from "../lib/places/provider.ts";
import { fakeNewPlace, type FakePlaces, fakeResult, startFakePlaces } from "./testing/fake_places.ts";

const KEY = "http-key/5e+7=a&b c";
const UCLA = { latitude: "+34.068930", longitude: "-118.445127", radiusMetres: "1500" };
const NET: Deno.PermissionOptionsObject = { net: ["127.0.0.1"] };

function providers(fake: FakePlaces, timeoutMs = 5_000): PlacesProvider[] {
  return [
    new GoogleLegacyPlaces({ url: fake.url, key: KEY, timeoutMs }),
    new GoogleNewPlaces({ url: fake.newUrl, key: KEY, timeoutMs }),
  ];
}

/** A JSON body of a valid answer padded past `bytes` bytes. */
function paddedBody(api: "legacy" | "new", bytes: number): string {
  const pad = " ".repeat(bytes);
  return api === "legacy" ? `{"html_attributions":[],"results":[],${pad}"status":"ZERO_RESULTS"}` : `{${pad}}`;
}

Deno.test({
  name: "an answer body past MAX_PLACES_BODY_BYTES is an UNKNOWN_ERROR that says so",
  permissions: NET,
}, async () => {
  await using fake = startFakePlaces({ key: KEY });
  fake.answerWith = (api) =>
    new Response(paddedBody(api, MAX_PLACES_BODY_BYTES + 1), { headers: { "content-type": "application/json" } });
  for (const places of providers(fake)) {
    const answer = await places.search(UCLA);
    assert.equal(answer.status, "UNKNOWN_ERROR", places.name);
    assert.deepEqual(answer.results, []);
    assert.match(String(answer.error_message), new RegExp(`answer was over ${MAX_PLACES_BODY_BYTES} bytes`));
  }
  // Just under the cap is read and parsed as usual.
  fake.answerWith = (api) =>
    new Response(paddedBody(api, MAX_PLACES_BODY_BYTES - 100), { headers: { "content-type": "application/json" } });
  for (const places of providers(fake)) assert.equal((await places.search(UCLA)).status, "ZERO_RESULTS", places.name);
});

/** A JSON value nested `depth` deep (the outermost object counts as 1), an empty object innermost. */
function nested(depth: number): string {
  return '{"a":'.repeat(depth - 1) + "{}" + "}".repeat(depth - 1);
}

Deno.test({
  name: "an answer nested deeper than MAX_PLACES_DEPTH, or holding more than MAX_PLACES_VALUES values, is refused",
  permissions: NET,
}, async () => {
  await using fake = startFakePlaces({ key: KEY });
  const json = { headers: { "content-type": "application/json" } };
  // Each answer holds one result, which holds `extra`: legacy `results[0].extra`, new `places[0].extra` (3 levels in).
  const place = (api: "legacy" | "new", extra: string) =>
    JSON.stringify(api === "legacy" ? fakeResult(0, 34, -118) : fakeNewPlace(0, 34, -118)).slice(0, -1) +
    `,"extra":${extra}}`;
  const answer = (api: "legacy" | "new", extra: string) =>
    api === "legacy" ? `{"results":[${place(api, extra)}],"status":"OK"}` : `{"places":[${place(api, extra)}]}`;
  for (
    const [extra, refusal] of [
      [nested(MAX_PLACES_DEPTH - 3), undefined], // the deepest allowed: the answer, its list, the result, then these
      [nested(MAX_PLACES_DEPTH - 2), `nested over ${MAX_PLACES_DEPTH} levels deep`],
      [nested(3000), `nested over ${MAX_PLACES_DEPTH} levels deep`], // an audit's: no reply at all, nothing logged
      [`[${"0,".repeat(MAX_PLACES_VALUES - 100)}0]`, undefined], // with the rest of the answer, just under
      [`[${"0,".repeat(MAX_PLACES_VALUES)}0]`, `held over ${MAX_PLACES_VALUES} values`],
    ] as const
  ) {
    fake.answerWith = (api) => new Response(answer(api, extra), json);
    for (const places of providers(fake)) {
      const got = await places.search(UCLA);
      const what = `${places.name}, ${extra.length} bytes of extra`;
      if (refusal === undefined) {
        assert.equal(got.status, "OK", what);
        assert.equal(got.results.length, 1, what);
        continue;
      }
      assert.equal(got.status, "UNKNOWN_ERROR", what);
      assert.deepEqual(got.results, [], what);
      assert.equal(got.error_message, `The Places service's answer ${refusal} (HTTP 200)`, what);
    }
  }
});

Deno.test({
  name: "an answer's list of places is cut to the 20 a WHATSAT can ask for, before anything else reads it",
  permissions: NET,
}, async () => {
  await using fake = startFakePlaces({ key: KEY });
  // Two million tiny results (4 MiB): an audit's answer, which blocked a server 3-4 s while every result was printed.
  // The new API's places are translated one by one, so its answer is 80,000 of the smallest places it keeps.
  const place = '{"location":{"latitude":34,"longitude":-118}}';
  const bodies = {
    legacy: `{"results":[${"0,".repeat(2_000_000)}0],"status":"OK"}`,
    new: `{"places":[${`${place},`.repeat(80_000)}${place}]}`,
  };
  assert.ok(bodies.new.length < MAX_PLACES_BODY_BYTES);
  fake.answerWith = (api) => new Response(bodies[api], { headers: { "content-type": "application/json" } });
  const [legacy, latest] = providers(fake);
  const legacyAnswer = await legacy.search(UCLA);
  assert.equal(legacyAnswer.status, "OK");
  assert.deepEqual(legacyAnswer.results, new Array(20).fill(0));
  const latestAnswer = await latest.search(UCLA);
  assert.equal(latestAnswer.status, "OK");
  assert.equal(latestAnswer.results.length, 20);
});

Deno.test({
  name: "an endless answer body is cancelled once past the cap, well before the timeout",
  permissions: NET,
}, async () => {
  await using fake = startFakePlaces({ key: KEY });
  const chunk = new Uint8Array(64 * 1024).fill(0x20);
  for (const places of providers(fake, 60_000)) {
    let sent = 0;
    const { promise: cancelled, resolve } = Promise.withResolvers<void>();
    fake.answerWith = () =>
      new Response(
        new ReadableStream<Uint8Array>({
          pull(controller) {
            sent += chunk.length;
            controller.enqueue(chunk);
          },
          cancel() {
            resolve();
          },
        }),
        { headers: { "content-type": "application/json" } },
      );
    const answer = await places.search(UCLA);
    assert.equal(answer.status, "UNKNOWN_ERROR", places.name);
    assert.match(String(answer.error_message), /answer was over \d+ bytes/);
    await cancelled; // the fake sees its stream cancelled: the herd stopped reading
    assert.ok(sent < MAX_PLACES_BODY_BYTES + 32 * 1024 * 1024, `${sent} bytes sent`);
  }
});

Deno.test({
  name: "the cap counts decompressed bytes: a small gzip answer that inflates past it is refused",
  permissions: NET,
}, async () => {
  await using fake = startFakePlaces({ key: KEY });
  const gzipped = async (text: string) =>
    new Uint8Array(
      await new Response(new Blob([text]).stream().pipeThrough(new CompressionStream("gzip"))).arrayBuffer(),
    );
  const bodies = {
    legacy: await gzipped(paddedBody("legacy", 2 * MAX_PLACES_BODY_BYTES)),
    new: await gzipped(paddedBody("new", 2 * MAX_PLACES_BODY_BYTES)),
  };
  assert.ok(bodies.legacy.length < MAX_PLACES_BODY_BYTES / 100);
  fake.answerWith = (api) =>
    new Response(bodies[api], { headers: { "content-type": "application/json", "content-encoding": "gzip" } });
  for (const places of providers(fake)) {
    const answer = await places.search(UCLA);
    assert.equal(answer.status, "UNKNOWN_ERROR", places.name);
    assert.match(String(answer.error_message), /answer was over \d+ bytes/);
  }
});

Deno.test({
  name: "google-new maps an HTTP error whose body is not JSON (HTML, empty) by its status",
  permissions: NET,
}, async () => {
  await using fake = startFakePlaces({ key: KEY });
  const places = new GoogleNewPlaces({ url: fake.newUrl, key: KEY, timeoutMs: 5_000 });
  for (
    const [status, body, expected] of [
      [403, "<html><body>403 Forbidden</body></html>", "REQUEST_DENIED"],
      [401, "", "REQUEST_DENIED"],
      [429, "", "OVER_QUERY_LIMIT"],
      [400, "Bad Request", "INVALID_REQUEST"],
      [404, "<html>Not Found</html>", "INVALID_REQUEST"],
      [502, "<html>Bad Gateway</html>", "UNKNOWN_ERROR"],
    ] as const
  ) {
    fake.answerWith = () => new Response(body, { status, headers: { "content-type": "text/html" } });
    const answer = await places.search(UCLA);
    assert.equal(answer.status, expected, `HTTP ${status}`);
    assert.deepEqual(answer.results, []);
    assert.match(String(answer.error_message), new RegExp(`answered HTTP ${status}`));
  }
});

Deno.test({
  name: "google-legacy: a status without an error_message is not said to be missing, and HTTP errors are errors",
  permissions: NET,
}, async () => {
  await using fake = startFakePlaces({ key: KEY });
  const places = new GoogleLegacyPlaces({ url: fake.url, key: KEY, timeoutMs: 5_000 });
  const cases: [number, Record<string, unknown>, string, RegExp][] = [
    [
      200,
      { html_attributions: [], results: [], status: "REQUEST_DENIED" },
      "REQUEST_DENIED",
      /answered REQUEST_DENIED/,
    ],
    [200, { html_attributions: [], results: [] }, "UNKNOWN_ERROR", /without a status/],
    [500, { html_attributions: [], results: [{ name: "x" }], status: "OK" }, "UNKNOWN_ERROR", /HTTP 500.*status OK/],
    [503, { html_attributions: [], results: [], status: "ZERO_RESULTS" }, "UNKNOWN_ERROR", /HTTP 503/],
    [
      403,
      { error_message: "Denied here", results: [], status: "REQUEST_DENIED" },
      "REQUEST_DENIED",
      /^Denied here \(HTTP 403/,
    ],
    [502, { results: [] }, "UNKNOWN_ERROR", /answered HTTP 502/],
  ];
  for (const [status, body, expected, message] of cases) {
    fake.answerWith = () => Response.json(body, { status });
    const answer = await places.search(UCLA);
    assert.equal(answer.status, expected, `HTTP ${status} ${JSON.stringify(body)}`);
    assert.deepEqual(answer.results, []);
    assert.match(String(answer.error_message), message);
    if (expected !== "UNKNOWN_ERROR" || !("status" in body)) continue;
    assert.doesNotMatch(String(answer.error_message), /without a status/);
  }
});

Deno.test({
  name: "google-legacy answers a status Google does not document as UNKNOWN_ERROR, the original cut and key-free",
  permissions: NET,
}, async () => {
  await using fake = startFakePlaces({ key: KEY });
  const places = new GoogleLegacyPlaces({ url: fake.url, key: KEY, timeoutMs: 5_000 });
  fake.answerWith = () =>
    Response.json({ results: [], status: `NEW_STATUS_${KEY}`, error_message: "try later" }, { status: 200 });
  const answer = await places.search(UCLA);
  assert.equal(answer.status, "UNKNOWN_ERROR");
  assert.match(String(answer.error_message), /unknown status "NEW_STATUS_<key>": try later/);
  assert.ok(!JSON.stringify(answer).includes(KEY));
  fake.answerWith = () => Response.json({ results: [], status: "X".repeat(100_000) });
  const long = await places.search(UCLA);
  assert.equal(long.status, "UNKNOWN_ERROR");
  assert.ok(String(long.error_message).length < MAX_ECHOED_CHARS + 100, "the original is cut");
  for (const status of ["OK_BUT_NOT", "ok", ""]) {
    fake.answerWith = () => Response.json({ results: [], status });
    assert.equal((await places.search(UCLA)).status, "UNKNOWN_ERROR", JSON.stringify(status));
  }
});

Deno.test("scrubKey() scrubs the key in every form a URL carries it", () => {
  const forms = [
    KEY,
    encodeURIComponent(KEY),
    new URLSearchParams({ key: KEY }).toString().slice(4),
    new URL(`http://example.com/?key=${KEY}`).search.slice(5),
    encodeURIComponent(KEY).toLowerCase(),
  ];
  for (const form of forms) assert.equal(scrubKey(`before ${form} after`, KEY), "before <key> after", form);
});

Deno.test("a short key is scrubbed where it stands apart, not out of the middle of words and field names", () => {
  assert.ok("test".length < SHORT_KEY_CHARS && KEY.length >= SHORT_KEY_CHARS);
  assert.equal(scrubKey("https://h/?key=test&radius=10", "test"), "https://h/?key=<key>&radius=10");
  assert.equal(scrubKey('"test" test, contest testing test', "test"), '"<key>" <key>, contest testing <key>');
  assert.equal(scrubKey("tests test", "test"), "tests <key>");
  assert.deepEqual(
    scrubKeyDeep({ name: "Contest Hall", vicinity: "a test, and test", results: [{ name: "a" }] }, "a"),
    { name: "Contest Hall", vicinity: "<key> test, and test", results: [{ name: "<key>" }] },
  );
  // A long key is scrubbed wherever it is, glued to other text or not.
  assert.equal(scrubKey(`NEW_STATUS_${KEY}x`, KEY), "NEW_STATUS_<key>x");
});

Deno.test({
  name: "an upstream that echoes the key, in any URL form, anywhere in its answer, never shows it in the answer",
  permissions: NET,
}, async () => {
  await using fake = startFakePlaces({ key: KEY });
  const plusForm = new URLSearchParams({ key: KEY }).toString().slice(4);
  const lower = encodeURIComponent(KEY).toLowerCase();
  for (const places of providers(fake)) {
    fake.answerWith = (api) =>
      api === "legacy"
        ? Response.json({
          error_message: `bad url ?key=${plusForm}&k=${lower}`,
          results: [],
          status: "INVALID_REQUEST",
        })
        : Response.json({ error: { message: `bad key ${plusForm} ${lower}` } }, { status: 400 });
    const failed = await places.search(UCLA);
    assert.equal(failed.status, "INVALID_REQUEST");
    assert.match(String(failed.error_message), /<key>.*<key>/);
    fake.answerWith = (api) =>
      api === "legacy"
        ? Response.json({ results: [{ name: `echo ${KEY}`, vicinity: plusForm }], status: "OK" })
        : Response.json({
          places: [{ displayName: { text: `echo ${KEY}` }, location: { latitude: 1, longitude: 2 } }],
        });
    const echoed = await places.search(UCLA);
    assert.equal(echoed.status, "OK");
    const text = JSON.stringify(echoed);
    assert.ok(!text.includes(KEY) && !text.includes(plusForm) && !text.includes(lower), text);
  }
});

Deno.test({
  name: "an unreachable Places service says what the connection met, not just that fetch failed",
  permissions: NET,
}, async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  for (
    const places of [
      new GoogleLegacyPlaces({ url: `http://127.0.0.1:${port}/json`, key: KEY, timeoutMs: 5_000 }),
      new GoogleNewPlaces({ url: `http://127.0.0.1:${port}/v1`, key: KEY, timeoutMs: 5_000 }),
    ]
  ) {
    const answer = await places.search(UCLA);
    assert.equal(answer.status, "UNKNOWN_ERROR", places.name);
    const message = String(answer.error_message);
    assert.match(message, /^The Places service cannot be reached: .*Connection refused/, places.name);
    assert.doesNotMatch(message, /fetch failed|error sending request/, places.name);
    assert.equal(scrubKey(JSON.stringify(answer), KEY), JSON.stringify(answer), places.name);
  }
});
