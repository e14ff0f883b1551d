/** Google's legacy Nearby Search: `GET url?location=LAT,LNG&radius=METRES&key=KEY`. */

import { type PlacesAnswer, placesError, type PlacesProvider, type PlacesQuery } from "./provider.ts";
import {
  cutEcho,
  fetchPlacesJson,
  type GooglePlacesOptions,
  httpStatusText,
  keyProblem,
  unusableKeyAnswer,
} from "./http.ts";

/** A decimal degree as Google wants it: no `+`. */
export function unsignedDegrees(degrees: string): string {
  return degrees.startsWith("+") ? degrees.slice(1) : degrees;
}

/**
 * The statuses Google documents for Nearby Search. Any other is answered as
 * `UNKNOWN_ERROR`: a status reaches replies and becomes a `/metrics` label
 * value, so an upstream must not be able to make up new ones.
 */
export const LEGACY_STATUSES: ReadonlySet<string> = new Set([
  "OK",
  "ZERO_RESULTS",
  "OVER_QUERY_LIMIT",
  "REQUEST_DENIED",
  "INVALID_REQUEST",
  "UNKNOWN_ERROR",
]);

/** The legacy Nearby Search provider. */
export class GoogleLegacyPlaces implements PlacesProvider {
  readonly name = "google-legacy";
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
    const separator = this.#url.includes("?") ? "&" : "?";
    const url = `${this.#url}${separator}location=${unsignedDegrees(query.latitude)},` +
      `${unsignedDegrees(query.longitude)}&radius=${query.radiusMetres}&key=${encodeURIComponent(this.#key)}`;
    // The body comes back with the key scrubbed from every string in it.
    const result = await fetchPlacesJson(url, {}, { timeoutMs: this.#timeoutMs, key: this.#key, signal });
    if (!result.ok) return result.answer;
    const { body, response } = result;
    // An HTTP error is an error whatever its body says; its status is said in the message.
    const http = response.ok ? "" : ` (${httpStatusText(response)})`;
    if (body === undefined) {
      return placesError("UNKNOWN_ERROR", `The Places service answered ${httpStatusText(response)}`);
    }
    if (typeof body !== "object" || body === null || Array.isArray(body)) {
      return placesError("UNKNOWN_ERROR", `The Places service answered with JSON that is not an object${http}`);
    }
    const answer = body as Record<string, unknown>;
    const given = answer.status;
    const upstreamMessage = typeof answer.error_message === "string" ? cutEcho(answer.error_message) : undefined;
    if (typeof given === "string" && !LEGACY_STATUSES.has(given)) {
      const message = `The Places service answered an unknown status ${JSON.stringify(cutEcho(given))}`;
      return placesError(
        "UNKNOWN_ERROR",
        `${message}${upstreamMessage === undefined ? "" : `: ${upstreamMessage}`}${http}`,
      );
    }
    const status = typeof given === "string" ? given : undefined;
    const good = status === "OK" || status === "ZERO_RESULTS";
    if (good && response.ok) {
      if (!Array.isArray(answer.results)) {
        return placesError("UNKNOWN_ERROR", "The Places service answered without a results list");
      }
      return answer as PlacesAnswer;
    }
    if (!response.ok) {
      const what = `${httpStatusText(response)}${status === undefined ? "" : ` with status ${status}`}`;
      return placesError(
        good || status === undefined ? "UNKNOWN_ERROR" : status,
        upstreamMessage === undefined ? `The Places service answered ${what}` : `${upstreamMessage} (${what})`,
      );
    }
    const message = upstreamMessage ??
      (status === undefined
        ? "The Places service answered without a status"
        : `The Places service answered ${status} with no error_message`);
    return placesError(status ?? "UNKNOWN_ERROR", message);
  }
}
