/**
 * The Places service behind one interface. Clients always receive the
 * legacy Nearby Search JSON shape; failures become that shape too, with
 * `results: []`, a status and an `error_message`. The API key never
 * appears in an answer, a log line or an error message.
 */

import type { PlacesConfig, PlacesProviderSetting } from "../config/config.ts";

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
  /**
   * Searches around a point. Never rejects: failures are answers with an
   * error status. Once `signal` aborts, the answer is no longer wanted, and a
   * provider that calls out abandons the call.
   */
  search(query: PlacesQuery, signal?: AbortSignal): Promise<PlacesAnswer>;
}

/** A provider that actually answers (what `auto` resolves to). */
export type PlacesProviderName = Exclude<PlacesProviderSetting, "auto">;

/** A Places-shaped error answer. */
export function placesError(status: string, message: string): PlacesAnswer {
  return { error_message: message, html_attributions: [], results: [], status };
}

/** The answer with `results` cut to at most `bound` entries. */
export function boundResults(answer: PlacesAnswer, bound: number): PlacesAnswer {
  if (answer.results.length <= bound) return answer;
  return { ...answer, results: answer.results.slice(0, bound) };
}

/** The provider a setting resolves to, and why, in words for the log. */
export function chooseProvider(
  setting: PlacesProviderSetting,
  keyPresent: boolean,
): { provider: PlacesProviderName; reason: string } {
  if (setting !== "auto") return { provider: setting, reason: `places.provider is "${setting}"` };
  return keyPresent
    ? { provider: "google-new", reason: "auto: GOOGLE_PLACES_API_KEY is set" }
    : { provider: "offline", reason: "auto: GOOGLE_PLACES_API_KEY is not set, so no Google provider can be used" };
}

/** The URL a provider calls, or undefined for one that needs no network. */
export function providerUrl(places: PlacesConfig, provider: PlacesProviderName): string | undefined {
  switch (provider) {
    case "google-legacy":
      return places.url;
    case "google-new":
      return places.newUrl;
    case "offline":
      return undefined;
  }
}
