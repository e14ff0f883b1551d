/**
 * A fake of both Google Places Nearby Search APIs on loopback, for tests and
 * manual sessions: legacy (`GET .../nearbysearch/json`) and Places API (New)
 * (`POST /v1/places:searchNearby`). It checks what Google checks (the key:
 * a query parameter for legacy, a header for New; the field mask) and what
 * the herd must send (location, radius in metres), records every request,
 * and can be told to fail the ways a real service fails.
 */

import { waitFor } from "./wait.ts";

/** How the fake answers: normally, with an HTTP error, with malformed JSON, or not at all. */
export type FakePlacesMode = "ok" | "http-400" | "http-403" | "http-429" | "http-500" | "malformed" | "hang";

/** One request the fake received. */
export interface FakePlacesRequest {
  /** Which API was called. */
  api: "legacy" | "new";
  /** `LAT,LNG` as sent (legacy) or rebuilt from the JSON numbers (New). */
  location: string | null;
  /** Radius in metres, as sent. */
  radius: string | null;
  /** The key as sent: a query parameter (legacy) or the `X-Goog-Api-Key` header (New). */
  key: string | null;
  /** New only. */
  fieldMask?: string | null;
  /** New only. */
  maxResultCount?: number;
}

/** Options for {@linkcode startFakePlaces}. */
export interface FakePlacesOptions {
  /** The key every request must carry. */
  key: string;
  /** How many results an OK answer has (before the herd cuts them). */
  results?: number;
  /** Port on 127.0.0.1; a free one when omitted. */
  port?: number;
}

/** A running fake; close it with `await using` or {@linkcode FakePlaces.close}. */
export interface FakePlaces extends AsyncDisposable {
  /** The legacy Nearby Search URL. */
  url: string;
  /** The Places API (New) searchNearby URL. */
  newUrl: string;
  /** Requests received, oldest first. */
  requests: FakePlacesRequest[];
  /** Changes how later requests are answered. */
  mode: FakePlacesMode;
  /** Requests being answered now. */
  inFlight: number;
  /** The most requests it was answering at once. */
  maxInFlight: number;
  /**
   * When set, answers every request (after recording it, before the mode and
   * the key are looked at): for answers no mode makes, such as a huge body.
   */
  answerWith: ((api: "legacy" | "new") => Response | Promise<Response>) | undefined;
  /** Answers the requests held so far (`hang`), leaving the mode as it is. */
  release(): void;
  /** Resolves with the first request recorded, before or after the call, that `match` accepts; rejects after `timeoutMs` (5 s). */
  waitForRequest(match: (request: FakePlacesRequest) => boolean, timeoutMs?: number): Promise<FakePlacesRequest>;
  /** Answers every request still held (`hang`) and stops listening. */
  close(): Promise<void>;
}

/** The fields of Places API (New) the herd may ask for: exactly those the legacy shape carries. */
export const EXPECTED_FIELD_MASK = new Set([
  "places.id",
  "places.displayName",
  "places.shortFormattedAddress",
  "places.location",
  "places.types",
  "places.rating",
  "places.userRatingCount",
  "places.businessStatus",
]);

const _NAME = "with a long name so the answer spans many segments";

/** A legacy result like Google's, with a long name so answers are large. */
export function fakeResult(index: number, lat: number, lng: number): Record<string, unknown> {
  return {
    business_status: "OPERATIONAL",
    geometry: { location: { lat: lat + index / 1000, lng: lng - index / 1000 } },
    name: `Place number ${index} near the client, ${_NAME}`,
    place_id: `ChIJfake${index.toString().padStart(4, "0")}`,
    types: ["point_of_interest", "establishment"],
    vicinity: `${100 + index} Fake Street, Los Angeles`,
  };
}

/** A Places API (New) place; every third one has no rating, as real places often lack one. */
export function fakeNewPlace(index: number, lat: number, lng: number): Record<string, unknown> {
  return {
    id: `ChIJnew${index.toString().padStart(4, "0")}`,
    types: ["restaurant", "food", "point_of_interest", "establishment"],
    location: { latitude: lat + index / 1000, longitude: lng - index / 1000 },
    ...(index % 3 === 2 ? {} : { rating: 4.1 + (index % 9) / 10, userRatingCount: 100 + index }),
    businessStatus: "OPERATIONAL",
    displayName: { text: `New place ${index} near the client, ${_NAME}`, languageCode: "en" },
    shortFormattedAddress: `${200 + index} New Street, Los Angeles`,
  };
}

const _newErrors: Record<string, [number, string]> = {
  "http-400": [400, "INVALID_ARGUMENT"],
  "http-403": [403, "PERMISSION_DENIED"],
  "http-429": [429, "RESOURCE_EXHAUSTED"],
  "http-500": [500, "INTERNAL"],
};

/** Starts the fake on 127.0.0.1. */
export function startFakePlaces(options: FakePlacesOptions): FakePlaces {
  const count = options.results ?? 20;
  const hanging = new Set<() => void>();
  const fake: FakePlaces = {
    url: "",
    newUrl: "",
    requests: [],
    mode: "ok",
    inFlight: 0,
    maxInFlight: 0,
    answerWith: undefined,
    release() {
      for (const release of hanging) release();
      hanging.clear();
    },
    waitForRequest(match, timeoutMs = 5_000) {
      return waitFor(() => fake.requests.find(match), { timeoutMs, stepMs: 5, what: "a matching Places request" });
    },
    async close() {
      for (const release of hanging) release();
      await server.shutdown();
    },
    [Symbol.asyncDispose]() {
      return fake.close();
    },
  };

  async function failure(api: "legacy" | "new"): Promise<Response | undefined> {
    if (fake.answerWith !== undefined) return await fake.answerWith(api);
    switch (fake.mode) {
      case "ok":
        return undefined;
      case "malformed":
        return new Response('{"results": [', { headers: { "content-type": "application/json" } });
      case "hang":
        // Held until the fake closes; the herd's own timeout gives up long before.
        await new Promise<void>((resolve) => hanging.add(resolve));
        return new Response("late");
      default: {
        const [status, code] = _newErrors[fake.mode];
        if (api === "legacy") return new Response("Upstream error", { status });
        return Response.json({ error: { code: status, message: `Fake ${code} error`, status: code } }, { status });
      }
    }
  }

  async function legacy(url: URL): Promise<Response> {
    const location = url.searchParams.get("location");
    const radius = url.searchParams.get("radius");
    const key = url.searchParams.get("key");
    fake.requests.push({ api: "legacy", location, radius, key });
    const failed = await failure("legacy");
    if (failed !== undefined) return failed;
    if (key !== options.key) {
      return Response.json({
        error_message: "The provided API key is invalid.",
        html_attributions: [],
        results: [],
        status: "REQUEST_DENIED",
      });
    }
    const match = /^(-?[0-9]+(?:\.[0-9]+)?),(-?[0-9]+(?:\.[0-9]+)?)$/.exec(location ?? "");
    const metres = Number(radius);
    if (match === null || !/^[0-9]+(?:\.[0-9]+)?$/.test(radius ?? "") || metres <= 0 || metres > 50000) {
      return Response.json({
        error_message: `Invalid request: location=${location} radius=${radius}`,
        html_attributions: [],
        results: [],
        status: "INVALID_REQUEST",
      });
    }
    const [lat, lng] = [Number(match[1]), Number(match[2])];
    if (lat === 0 && lng === 0) return Response.json({ html_attributions: [], results: [], status: "ZERO_RESULTS" });
    const results = Array.from({ length: count }, (_, index) => fakeResult(index, lat, lng));
    return Response.json({ html_attributions: [], results, status: "OK" });
  }

  async function searchNearby(request: Request): Promise<Response> {
    const key = request.headers.get("x-goog-api-key");
    const fieldMask = request.headers.get("x-goog-fieldmask");
    let body: Record<string, unknown>;
    try {
      body = await request.json();
    } catch {
      fake.requests.push({ api: "new", location: null, radius: null, key, fieldMask });
      return Response.json({ error: { code: 400, message: "Body is not JSON", status: "INVALID_ARGUMENT" } }, {
        status: 400,
      });
    }
    // deno-lint-ignore no-explicit-any
    const circle = (body as any)?.locationRestriction?.circle;
    const lat = circle?.center?.latitude;
    const lng = circle?.center?.longitude;
    const radius = circle?.radius;
    const maxResultCount = body.maxResultCount as number;
    fake.requests.push({
      api: "new",
      location: `${lat},${lng}`,
      radius: radius === undefined ? null : String(radius),
      key,
      fieldMask,
      maxResultCount,
    });
    const failed = await failure("new");
    if (failed !== undefined) return failed;
    if (key !== options.key) {
      return Response.json({
        error: { code: 403, message: "API key not valid. Please pass a valid API key.", status: "PERMISSION_DENIED" },
      }, { status: 403 });
    }
    const asked = new Set((fieldMask ?? "").split(","));
    const wrongMask = asked.size !== EXPECTED_FIELD_MASK.size || [...asked].some((f) => !EXPECTED_FIELD_MASK.has(f));
    const badNumbers = typeof lat !== "number" || typeof lng !== "number" || typeof radius !== "number";
    if (wrongMask || badNumbers || radius <= 0 || radius > 50000 || !(maxResultCount >= 1 && maxResultCount <= 20)) {
      return Response.json({
        error: {
          code: 400,
          message: `Invalid request: mask=${fieldMask} body=${JSON.stringify(body)}`,
          status: "INVALID_ARGUMENT",
        },
      }, { status: 400 });
    }
    if (lat === 0 && lng === 0) return Response.json({});
    const places = Array.from({ length: Math.min(count, maxResultCount) }, (_, i) => fakeNewPlace(i, lat, lng));
    return Response.json({ places });
  }

  async function answer(request: Request): Promise<Response> {
    const url = new URL(request.url);
    if (request.method === "GET" && url.pathname === "/maps/api/place/nearbysearch/json") return await legacy(url);
    if (request.method === "POST" && url.pathname === "/v1/places:searchNearby") return await searchNearby(request);
    return new Response("Not found", { status: 404 });
  }

  const server = Deno.serve({ hostname: "127.0.0.1", port: options.port ?? 0, onListen() {} }, async (request) => {
    fake.inFlight++;
    fake.maxInFlight = Math.max(fake.maxInFlight, fake.inFlight);
    try {
      return await answer(request);
    } finally {
      fake.inFlight--;
    }
  });
  const base = `http://127.0.0.1:${server.addr.port}`;
  fake.url = `${base}/maps/api/place/nearbysearch/json`;
  fake.newUrl = `${base}/v1/places:searchNearby`;
  return fake;
}

/** The port `deno task fake-places` listens on. */
export const FAKE_PLACES_PORT = 8099;
/** The key `deno task fake-places` expects. */
export const FAKE_PLACES_KEY = "fake-key";

if (import.meta.main) {
  const fake = startFakePlaces({ key: FAKE_PLACES_KEY, port: FAKE_PLACES_PORT });
  console.log(`Fake Places (key "${FAKE_PLACES_KEY}"). Ctrl-C stops it.`);
  console.log(`  legacy: ${fake.url}`);
  console.log(`  new:    ${fake.newUrl}`);
}
