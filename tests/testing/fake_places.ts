/**
 * A fake of Google's legacy Nearby Search on loopback, for tests. It checks
 * what real Google checks (the key) and what the herd must send (the
 * location and the radius in metres), records every request, and can be
 * told to fail in the ways a real service fails.
 */

/** How the fake answers. */
export type FakePlacesMode = "ok" | "http-500" | "malformed" | "hang";

/** One request the fake received. */
export interface FakePlacesRequest {
  location: string | null;
  radius: string | null;
  key: string | null;
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
  /** The Nearby Search URL to put in the herd config. */
  url: string;
  /** Requests received, oldest first. */
  requests: FakePlacesRequest[];
  /** Changes how later requests are answered. */
  mode: FakePlacesMode;
  close(): Promise<void>;
}

/** A result like Google's, with a long name so answers are large. */
export function fakeResult(index: number, lat: number, lng: number): Record<string, unknown> {
  return {
    business_status: "OPERATIONAL",
    geometry: { location: { lat: lat + index / 1000, lng: lng - index / 1000 } },
    name: `Place number ${index} near the client, with a long name so the answer spans many segments`,
    place_id: `ChIJfake${index.toString().padStart(4, "0")}`,
    types: ["point_of_interest", "establishment"],
    vicinity: `${100 + index} Fake Street, Los Angeles`,
  };
}

/** Starts the fake on 127.0.0.1 on a free port. */
export function startFakePlaces(options: FakePlacesOptions): FakePlaces {
  const count = options.results ?? 20;
  const hanging = new Set<() => void>();
  const fake: FakePlaces = {
    url: "",
    requests: [],
    mode: "ok",
    async close() {
      for (const release of hanging) release();
      await server.shutdown();
    },
    [Symbol.asyncDispose]() {
      return fake.close();
    },
  };
  const server = Deno.serve({ hostname: "127.0.0.1", port: options.port ?? 0, onListen() {} }, async (request) => {
    const url = new URL(request.url);
    const location = url.searchParams.get("location");
    const radius = url.searchParams.get("radius");
    const key = url.searchParams.get("key");
    fake.requests.push({ location, radius, key });
    if (url.pathname !== "/maps/api/place/nearbysearch/json") return new Response("Not found", { status: 404 });
    if (fake.mode === "http-500") return new Response("Internal error", { status: 500 });
    if (fake.mode === "malformed") {
      return new Response('{"results": [', { headers: { "content-type": "application/json" } });
    }
    if (fake.mode === "hang") {
      // Held until the fake closes; the herd's own timeout gives up long before.
      await new Promise<void>((resolve) => hanging.add(resolve));
      return new Response("late");
    }
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
  });
  fake.url = `http://127.0.0.1:${server.addr.port}/maps/api/place/nearbysearch/json`;
  return fake;
}

/** The port `deno task fake-places` listens on. */
export const FAKE_PLACES_PORT = 8099;
/** The key `deno task fake-places` expects. */
export const FAKE_PLACES_KEY = "fake-key";

if (import.meta.main) {
  const fake = startFakePlaces({ key: FAKE_PLACES_KEY, port: FAKE_PLACES_PORT });
  console.log(`Fake Places listening: ${fake.url} (key "${FAKE_PLACES_KEY}"). Ctrl-C stops it.`);
}
