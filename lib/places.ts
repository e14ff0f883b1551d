/**
 * The Places service behind one interface. Clients always receive the
 * legacy Nearby Search JSON shape; failures become that shape too, with
 * `results: []`, a status and an `error_message`. The API key never
 * appears in an answer or an error message.
 */

/** A nearby search around a point. */
export interface PlacesQuery {
  /** Latitude as sent by the client, e.g. `+34.068930`. */
  latitude: string;
  /** Longitude as sent by the client, e.g. `-118.445127`. */
  longitude: string;
  /** Radius in metres, an unsigned decimal. */
  radiusMetres: string;
}

/** A Nearby Search answer in the legacy shape (`results`, `status`, ...). */
export type PlacesAnswer = Record<string, unknown> & { results: unknown[]; status: string };

/** A source of nearby places. */
export interface PlacesProvider {
  /** Short name for logs, e.g. `google-legacy`. */
  readonly name: string;
  /** Searches around a point. Never rejects: failures are answers with an error status. */
  search(query: PlacesQuery): Promise<PlacesAnswer>;
}

/** A Places-shaped error answer. */
export function placesError(status: string, message: string): PlacesAnswer {
  return { error_message: message, html_attributions: [], results: [], status };
}

/** The answer with `results` cut to at most `bound` entries. */
export function boundResults(answer: PlacesAnswer, bound: number): PlacesAnswer {
  if (answer.results.length <= bound) return answer;
  return { ...answer, results: answer.results.slice(0, bound) };
}

/** Options for {@linkcode GoogleLegacyPlaces}. */
export interface GoogleLegacyPlacesOptions {
  /** Nearby Search endpoint, e.g. `https://maps.googleapis.com/maps/api/place/nearbysearch/json`. */
  url: string;
  /** API key; without one every search answers `REQUEST_DENIED`. */
  key?: string;
  /** Upstream timeout in milliseconds. */
  timeoutMs: number;
}

function _unsigned(degrees: string): string {
  return degrees.startsWith("+") ? degrees.slice(1) : degrees;
}

/** Google's legacy Nearby Search: `GET url?location=LAT,LNG&radius=METRES&key=KEY`. */
export class GoogleLegacyPlaces implements PlacesProvider {
  readonly name = "google-legacy";
  #url: string;
  #key: string | undefined;
  #timeoutMs: number;

  constructor(options: GoogleLegacyPlacesOptions) {
    this.#url = options.url;
    this.#key = options.key === "" ? undefined : options.key;
    this.#timeoutMs = options.timeoutMs;
  }

  #scrub(text: string): string {
    if (this.#key === undefined) return text;
    return text.replaceAll(this.#key, "<key>").replaceAll(encodeURIComponent(this.#key), "<key>");
  }

  async search(query: PlacesQuery): Promise<PlacesAnswer> {
    if (this.#key === undefined) {
      return placesError("REQUEST_DENIED", "No Places API key: the server has no GOOGLE_PLACES_API_KEY set");
    }
    const separator = this.#url.includes("?") ? "&" : "?";
    const url = `${this.#url}${separator}location=${_unsigned(query.latitude)},${_unsigned(query.longitude)}` +
      `&radius=${query.radiusMetres}&key=${encodeURIComponent(this.#key)}`;
    let response: Response;
    try {
      response = await fetch(url, { signal: AbortSignal.timeout(this.#timeoutMs) });
    } catch (error) {
      if (error instanceof DOMException && error.name === "TimeoutError") {
        return placesError("UNKNOWN_ERROR", `The Places service did not answer within ${this.#timeoutMs} ms`);
      }
      return placesError("UNKNOWN_ERROR", `The Places service cannot be reached: ${this.#scrub(String(error))}`);
    }
    let text: string;
    try {
      text = await response.text();
    } catch (error) {
      return placesError("UNKNOWN_ERROR", `The Places answer was cut off: ${this.#scrub(String(error))}`);
    }
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      const what = response.ok ? "malformed JSON" : `HTTP ${response.status} ${response.statusText}`.trim();
      return placesError("UNKNOWN_ERROR", `The Places service answered with ${what}`);
    }
    return this.#normalize(body, response);
  }

  #normalize(body: unknown, response: Response): PlacesAnswer {
    if (typeof body !== "object" || body === null || Array.isArray(body)) {
      return placesError("UNKNOWN_ERROR", "The Places service answered with JSON that is not an object");
    }
    const answer = body as Record<string, unknown>;
    const status = typeof answer.status === "string" ? answer.status : undefined;
    const message = typeof answer.error_message === "string" ? this.#scrub(answer.error_message) : undefined;
    if (status === "OK" || status === "ZERO_RESULTS") {
      if (!Array.isArray(answer.results)) {
        return placesError("UNKNOWN_ERROR", "The Places service answered without a results list");
      }
      return answer as PlacesAnswer;
    }
    const fallback = response.ok
      ? "The Places service answered without a status"
      : `The Places service answered HTTP ${response.status}`;
    return placesError(status ?? "UNKNOWN_ERROR", message ?? fallback);
  }
}
