import assert from "node:assert/strict";
import {
  GOOGLE_NEW_FIELD_MASK,
  GoogleNewPlaces,
  legacyStatusForHttp,
  translateNearbyResponse,
} from "../lib/places/google_new.ts";
import { GoogleLegacyPlaces } from "../lib/places/google_legacy.ts";
import { EXPECTED_FIELD_MASK, startFakePlaces } from "./testing/fake_places.ts";

const KEY = "unit-key-5d2";
const UCLA = { latitude: "+34.068930", longitude: "-118.445127", radiusMetres: "1500" };

/** A Places API (New) answer as Google sends it (trimmed to the fields we ask for). */
const REAL_ANSWER = {
  places: [
    {
      id: "ChIJ8V1FUYK8woARk3wFQvLRk1c",
      types: ["university", "point_of_interest", "establishment"],
      location: { latitude: 34.068921, longitude: -118.4451811 },
      rating: 4.6,
      userRatingCount: 3342,
      businessStatus: "OPERATIONAL",
      displayName: { text: "University of California, Los Angeles", languageCode: "en" },
      shortFormattedAddress: "Los Angeles",
    },
    {
      id: "ChIJW8GKXoK8woARxdOcHbNRv9U",
      types: ["cafe", "food", "point_of_interest", "store", "establishment"],
      location: { latitude: 34.0706, longitude: -118.4443 },
      displayName: { text: "Kerckhoff Coffee House", languageCode: "en" },
      shortFormattedAddress: "308 Westwood Plaza, Los Angeles",
    },
  ],
};

Deno.test("translateNearbyResponse() turns Places API (New) places into legacy results", () => {
  assert.deepEqual(translateNearbyResponse(REAL_ANSWER), {
    html_attributions: [],
    results: [
      {
        business_status: "OPERATIONAL",
        geometry: { location: { lat: 34.068921, lng: -118.4451811 } },
        name: "University of California, Los Angeles",
        place_id: "ChIJ8V1FUYK8woARk3wFQvLRk1c",
        rating: 4.6,
        types: ["university", "point_of_interest", "establishment"],
        user_ratings_total: 3342,
        vicinity: "Los Angeles",
      },
      {
        geometry: { location: { lat: 34.0706, lng: -118.4443 } },
        name: "Kerckhoff Coffee House",
        place_id: "ChIJW8GKXoK8woARxdOcHbNRv9U",
        types: ["cafe", "food", "point_of_interest", "store", "establishment"],
        vicinity: "308 Westwood Plaza, Los Angeles",
      },
    ],
    status: "OK",
  });
});

Deno.test("translateNearbyResponse() answers ZERO_RESULTS for an empty answer, as Google sends {}", () => {
  assert.deepEqual(translateNearbyResponse({}), { html_attributions: [], results: [], status: "ZERO_RESULTS" });
  assert.equal(translateNearbyResponse({ places: [] }).status, "ZERO_RESULTS");
});

Deno.test("translateNearbyResponse() refuses shapes it cannot read", () => {
  assert.equal(translateNearbyResponse([]).status, "UNKNOWN_ERROR");
  assert.equal(translateNearbyResponse({ places: "x" }).status, "UNKNOWN_ERROR");
});

Deno.test("translateNearbyResponse() drops fields of the wrong type, and places without a numeric location", () => {
  const malformed = {
    places: [{ location: { latitude: "x" }, displayName: { text: 5 }, types: "notarray" }, 3, null, {}],
  };
  const none = translateNearbyResponse(malformed);
  assert.equal(none.status, "UNKNOWN_ERROR", "four places, none usable: not a result, not ZERO_RESULTS");
  assert.deepEqual(none.results, []);
  assert.match(String(none.error_message), /4 places, none with a numeric latitude and longitude/);
  const mixed = translateNearbyResponse({
    places: [
      ...malformed.places,
      { location: { latitude: 34, longitude: "-118" } },
      { location: { latitude: 91, longitude: 0 } },
      {
        id: 7,
        location: { latitude: 34.07, longitude: -118.44 },
        displayName: { text: ["x"] },
        types: ["cafe", 3, null, "food"],
        rating: "4.5",
        userRatingCount: 1.5,
        businessStatus: {},
        shortFormattedAddress: "1 Street",
      },
    ],
  });
  assert.deepEqual(mixed, {
    html_attributions: [],
    results: [{ geometry: { location: { lat: 34.07, lng: -118.44 } }, types: ["cafe", "food"], vicinity: "1 Street" }],
    status: "OK",
  });
});

Deno.test("legacyStatusForHttp() maps HTTP errors to legacy statuses", () => {
  assert.equal(legacyStatusForHttp(400), "INVALID_REQUEST");
  assert.equal(legacyStatusForHttp(403), "REQUEST_DENIED");
  assert.equal(legacyStatusForHttp(429), "OVER_QUERY_LIMIT");
  assert.equal(legacyStatusForHttp(500), "UNKNOWN_ERROR");
  assert.equal(legacyStatusForHttp(503), "UNKNOWN_ERROR");
});

Deno.test("the field mask asks for exactly the fields the legacy shape carries", () => {
  assert.deepEqual(new Set(GOOGLE_NEW_FIELD_MASK.split(",")), EXPECTED_FIELD_MASK);
});

Deno.test({
  name: "GoogleNewPlaces sends the key as a header, the mask, the circle in metres, and maps failures",
  permissions: { net: ["127.0.0.1"] },
}, async () => {
  await using fake = startFakePlaces({ key: KEY, results: 4 });
  const places = new GoogleNewPlaces({ url: fake.newUrl, key: KEY, timeoutMs: 300 });
  const answer = await places.search(UCLA);
  assert.equal(answer.status, "OK");
  assert.equal(answer.results.length, 4);
  assert.deepEqual(fake.requests.at(-1), {
    api: "new",
    location: "34.06893,-118.445127",
    radius: "1500",
    key: KEY,
    fieldMask: GOOGLE_NEW_FIELD_MASK,
    maxResultCount: 20,
  });
  for (
    const [mode, status, message] of [
      ["http-400", "INVALID_REQUEST", /Fake INVALID_ARGUMENT error/],
      ["http-403", "REQUEST_DENIED", /Fake PERMISSION_DENIED error/],
      ["http-429", "OVER_QUERY_LIMIT", /Fake RESOURCE_EXHAUSTED error/],
      ["http-500", "UNKNOWN_ERROR", /Fake INTERNAL error/],
      ["malformed", "UNKNOWN_ERROR", /malformed JSON/],
      ["hang", "UNKNOWN_ERROR", /did not answer within 300 ms/],
    ] as const
  ) {
    fake.mode = mode;
    const failed = await places.search(UCLA);
    assert.equal(failed.status, status, mode);
    assert.deepEqual(failed.results, []);
    assert.match(String(failed.error_message), message);
  }
  fake.mode = "ok";
  const wrongKey = await new GoogleNewPlaces({ url: fake.newUrl, key: "nope", timeoutMs: 300 }).search(UCLA);
  assert.equal(wrongKey.status, "REQUEST_DENIED");
});

Deno.test({
  name: "Google providers without a key answer REQUEST_DENIED without calling out",
  permissions: { net: ["127.0.0.1"] },
}, async () => {
  await using fake = startFakePlaces({ key: KEY });
  for (
    const places of [
      new GoogleNewPlaces({ url: fake.newUrl, timeoutMs: 300 }),
      new GoogleLegacyPlaces({ url: fake.url, timeoutMs: 300 }),
    ]
  ) {
    const answer = await places.search(UCLA);
    assert.equal(answer.status, "REQUEST_DENIED");
    assert.match(String(answer.error_message), /GOOGLE_PLACES_API_KEY/);
  }
  assert.equal(fake.requests.length, 0);
});

Deno.test({
  name: "Google providers given a key no request can carry answer REQUEST_DENIED saying so, without calling out",
  permissions: { net: ["127.0.0.1"] },
}, async () => {
  await using fake = startFakePlaces({ key: KEY });
  for (const [key, code] of [[`${KEY}\n`, "U+000A"], [`${KEY}\r`, "U+000D"], [`k\u00e9y-${KEY}`, "U+00E9"]] as const) {
    for (
      const places of [
        new GoogleNewPlaces({ url: fake.newUrl, key, timeoutMs: 300 }),
        new GoogleLegacyPlaces({ url: fake.url, key, timeoutMs: 300 }),
      ]
    ) {
      const answer = await places.search(UCLA);
      assert.equal(answer.status, "REQUEST_DENIED", `${places.name} ${code}`);
      assert.ok(
        String(answer.error_message).includes(`GOOGLE_PLACES_API_KEY holds a character no request can carry (${code}`),
        String(answer.error_message),
      );
      assert.ok(!String(answer.error_message).includes(KEY), "the message shows none of the key");
    }
  }
  assert.equal(fake.requests.length, 0);
  // A key that can be sent is sent: the fake sees it.
  const sent = await new GoogleNewPlaces({ url: fake.newUrl, key: KEY, timeoutMs: 300 }).search(UCLA);
  assert.equal(sent.status, "OK");
  assert.equal(fake.requests.length, 1);
});

Deno.test({
  name: "an unreachable Places service is an UNKNOWN_ERROR whose message never shows the key",
  permissions: { net: ["127.0.0.1"] },
}, async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  const key = "secret/key+with=odd&chars";
  for (
    const places of [
      new GoogleLegacyPlaces({ url: `http://127.0.0.1:${port}/json`, key, timeoutMs: 500 }),
      new GoogleNewPlaces({ url: `http://127.0.0.1:${port}/v1`, key, timeoutMs: 500 }),
    ]
  ) {
    const answer = await places.search(UCLA);
    assert.equal(answer.status, "UNKNOWN_ERROR");
    assert.match(String(answer.error_message), /cannot be reached/);
    assert.ok(!JSON.stringify(answer).includes(key) && !JSON.stringify(answer).includes(encodeURIComponent(key)));
  }
});
