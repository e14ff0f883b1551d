/**
 * Places API (New) Nearby Search: `POST places:searchNearby` with the key
 * and a field mask in headers, translated into the legacy answer shape.
 */

import { type PlacesAnswer, placesError, type PlacesProvider, type PlacesQuery } from "./provider.ts";
import {
  cutEcho,
  fetchPlacesJson,
  type GooglePlacesOptions,
  httpStatusText,
  keyProblem,
  unusableKeyAnswer,
} from "./http.ts";

/** Only the fields the legacy shape carries: Google bills by the fields asked for. */
export const GOOGLE_NEW_FIELD_MASK: string = [
  "places.id",
  "places.displayName",
  "places.shortFormattedAddress",
  "places.location",
  "places.types",
  "places.rating",
  "places.userRatingCount",
  "places.businessStatus",
].join(",");

/** The most results Places API (New) returns for one search. */
export const GOOGLE_NEW_MAX_RESULTS = 20;

function _object(value: unknown): Record<string, unknown> | undefined {
  return typeof value === "object" && value !== null && !Array.isArray(value)
    ? value as Record<string, unknown>
    : undefined;
}

function _number(value: unknown, min: number, max: number): number | undefined {
  return typeof value === "number" && value >= min && value <= max ? value : undefined;
}

function _string(value: unknown): string | undefined {
  return typeof value === "string" ? value : undefined;
}

/**
 * One Places API (New) place as a legacy result, keys in Google's
 * (alphabetical) order, fields only where present and of the right type;
 * undefined for a place without a numeric latitude and longitude.
 */
function _legacyResult(place: Record<string, unknown>): Record<string, unknown> | undefined {
  const location = _object(place.location);
  const lat = _number(location?.latitude, -90, 90);
  const lng = _number(location?.longitude, -180, 180);
  if (lat === undefined || lng === undefined) return undefined;
  const types = Array.isArray(place.types) ? place.types.filter((type) => typeof type === "string") : undefined;
  const count = place.userRatingCount;
  const result: Record<string, unknown> = {
    business_status: _string(place.businessStatus),
    geometry: { location: { lat, lng } },
    name: _string(_object(place.displayName)?.text),
    place_id: _string(place.id),
    rating: _number(place.rating, 0, 5),
    types,
    user_ratings_total: Number.isSafeInteger(count) && (count as number) >= 0 ? count : undefined,
    vicinity: _string(place.shortFormattedAddress),
  };
  for (const key of Object.keys(result)) if (result[key] === undefined) delete result[key];
  return result;
}

/** Translates a successful `searchNearby` body into the legacy shape. */
export function translateNearbyResponse(body: unknown): PlacesAnswer {
  const object = _object(body);
  if (object === undefined) {
    return placesError("UNKNOWN_ERROR", "The Places service answered with JSON that is not an object");
  }
  const places = object.places ?? [];
  if (!Array.isArray(places)) {
    return placesError("UNKNOWN_ERROR", "The Places service answered with a places field that is not a list");
  }
  const results = places.map(_object).map((place) => place === undefined ? undefined : _legacyResult(place))
    .filter((result) => result !== undefined);
  if (results.length === 0 && places.length > 0) {
    return placesError(
      "UNKNOWN_ERROR",
      `The Places service answered ${places.length} places, none with a numeric latitude and longitude`,
    );
  }
  return { html_attributions: [], results, status: results.length === 0 ? "ZERO_RESULTS" : "OK" };
}

/** The legacy status for a Places API (New) HTTP error. */
export function legacyStatusForHttp(status: number): string {
  if (status === 400 || status === 404) return "INVALID_REQUEST";
  if (status === 401 || status === 403) return "REQUEST_DENIED";
  if (status === 429) return "OVER_QUERY_LIMIT";
  return "UNKNOWN_ERROR";
}

/** The Places API (New) provider. */
export class GoogleNewPlaces implements PlacesProvider {
  readonly name = "google-new";
  #url: string;
  #key: string;
  #keyProblem: string | undefined;
  #timeoutMs: number;

  /** A provider calling `options.url` with `options.key`. */
  constructor(options: GooglePlacesOptions) {
    this.#url = options.url;
    this.#key = options.key ?? "";
    this.#keyProblem = keyProblem(options.key);
    this.#timeoutMs = options.timeoutMs;
  }

  async search(query: PlacesQuery, signal?: AbortSignal): Promise<PlacesAnswer> {
    if (this.#keyProblem !== undefined) return unusableKeyAnswer(this.#keyProblem);
    const body = {
      locationRestriction: {
        circle: {
          center: { latitude: Number(query.latitude), longitude: Number(query.longitude) },
          radius: Number(query.radiusMetres),
        },
      },
      maxResultCount: GOOGLE_NEW_MAX_RESULTS,
    };
    const result = await fetchPlacesJson(this.#url, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        "X-Goog-Api-Key": this.#key,
        "X-Goog-FieldMask": GOOGLE_NEW_FIELD_MASK,
      },
      body: JSON.stringify(body),
    }, { timeoutMs: this.#timeoutMs, key: this.#key, signal });
    if (!result.ok) return result.answer;
    if (result.response.ok) return translateNearbyResponse(result.body);
    const message = _object(_object(result.body)?.error)?.message;
    return placesError(
      legacyStatusForHttp(result.response.status),
      typeof message === "string"
        ? cutEcho(message) // the body comes back with the key scrubbed
        : `The Places service answered ${httpStatusText(result.response)}`,
    );
  }
}
