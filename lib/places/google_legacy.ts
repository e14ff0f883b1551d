/** Google's legacy Nearby Search: `GET url?location=LAT,LNG&radius=METRES&key=KEY`. */

import { type PlacesAnswer, placesError, type PlacesProvider, type PlacesQuery } from "./provider.ts";
import { fetchPlacesJson, type GooglePlacesOptions, httpStatusText, missingKeyAnswer, scrubKey } from "./http.ts";

/** A decimal degree as Google wants it: no `+`. */
export function unsignedDegrees(degrees: string): string {
  return degrees.startsWith("+") ? degrees.slice(1) : degrees;
}

/** The legacy Nearby Search provider. */
export class GoogleLegacyPlaces implements PlacesProvider {
  readonly name = "google-legacy";
  #url: string;
  #key: string;
  #timeoutMs: number;

  /** A provider calling `options.url` with `options.key`. */
  constructor(options: GooglePlacesOptions) {
    this.#url = options.url;
    this.#key = options.key ?? "";
    this.#timeoutMs = options.timeoutMs;
  }

  async search(query: PlacesQuery, signal?: AbortSignal): Promise<PlacesAnswer> {
    if (this.#key === "") return missingKeyAnswer();
    const separator = this.#url.includes("?") ? "&" : "?";
    const url = `${this.#url}${separator}location=${unsignedDegrees(query.latitude)},` +
      `${unsignedDegrees(query.longitude)}&radius=${query.radiusMetres}&key=${encodeURIComponent(this.#key)}`;
    const result = await fetchPlacesJson(url, {}, { timeoutMs: this.#timeoutMs, key: this.#key, signal });
    if (!result.ok) return result.answer;
    const { body, response } = result;
    if (body === undefined) {
      return placesError("UNKNOWN_ERROR", `The Places service answered ${httpStatusText(response)}`);
    }
    if (typeof body !== "object" || body === null || Array.isArray(body)) {
      return placesError("UNKNOWN_ERROR", "The Places service answered with JSON that is not an object");
    }
    const answer = body as Record<string, unknown>;
    const status = typeof answer.status === "string" ? answer.status : undefined;
    if (status === "OK" || status === "ZERO_RESULTS") {
      if (!Array.isArray(answer.results)) {
        return placesError("UNKNOWN_ERROR", "The Places service answered without a results list");
      }
      return answer as PlacesAnswer;
    }
    const message = typeof answer.error_message === "string"
      ? scrubKey(answer.error_message, this.#key)
      : response.ok
      ? "The Places service answered without a status"
      : `The Places service answered HTTP ${response.status}`;
    return placesError(status ?? "UNKNOWN_ERROR", message);
  }
}
