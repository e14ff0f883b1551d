/**
 * A per-server cache in front of any Places provider: keyed by provider,
 * location and radius, bounded in entries (least recently used go first),
 * entries expire after a TTL, and concurrent identical searches share one
 * upstream call. Only good answers (`OK`, `ZERO_RESULTS`) are kept. The
 * WHATSAT bound is applied after the cache, so one entry serves every bound.
 */

import { log } from "../logging.ts";
import { type PlacesAnswer, placesError, type PlacesProvider, type PlacesQuery } from "./provider.ts";

/** Options for {@linkcode CachedPlaces}. */
export interface CachedPlacesOptions {
  /** How long an answer is served, in milliseconds. */
  ttlMs: number;
  /** Most answers kept. */
  maxEntries: number;
  /** Clock in milliseconds; tests pass their own. */
  now?: () => number;
}

/** Cache counters. */
export interface CacheStats {
  hits: number;
  misses: number;
  /** Searches that joined one already in flight. */
  shared: number;
}

/** A caching, single-flight wrapper around a provider. */
export class CachedPlaces implements PlacesProvider {
  readonly name: string;
  readonly stats: CacheStats = { hits: 0, misses: 0, shared: 0 };
  #inner: PlacesProvider;
  #ttlMs: number;
  #maxEntries: number;
  #now: () => number;
  #entries = new Map<string, { answer: PlacesAnswer; expires: number }>();
  #inflight = new Map<string, Promise<PlacesAnswer>>();

  constructor(inner: PlacesProvider, options: CachedPlacesOptions) {
    this.name = inner.name;
    this.#inner = inner;
    this.#ttlMs = options.ttlMs;
    this.#maxEntries = options.maxEntries;
    this.#now = options.now ?? (() => performance.now());
  }

  /** Answers held. */
  get size(): number {
    return this.#entries.size;
  }

  search(query: PlacesQuery): Promise<PlacesAnswer> {
    const key = `${this.#inner.name} ${query.latitude}${query.longitude} ${query.radiusMetres}`;
    const entry = this.#entries.get(key);
    if (entry !== undefined) {
      this.#entries.delete(key);
      if (entry.expires > this.#now()) {
        this.#entries.set(key, entry); // most recently used goes last
        this.stats.hits++;
        return Promise.resolve(entry.answer);
      }
    }
    const pending = this.#inflight.get(key);
    if (pending !== undefined) {
      this.stats.shared++;
      return pending;
    }
    this.stats.misses++;
    const started = performance.now();
    const search = this.#inner.search(query).catch((error) => {
      // Providers never reject; if one does, its error text is not trusted to be free of the key.
      log.places.error("Provider {provider} failed unexpectedly: {name}", {
        provider: this.#inner.name,
        name: (error as Error)?.name,
      });
      return placesError("UNKNOWN_ERROR", "The Places provider failed unexpectedly");
    }).then((answer) => {
      this.#inflight.delete(key);
      log.places.info("Upstream {provider} around {latitude}{longitude} radius {radius} m: {status} in {ms} ms", {
        provider: this.#inner.name,
        latitude: query.latitude,
        longitude: query.longitude,
        radius: query.radiusMetres,
        status: answer.status,
        ms: Math.round(performance.now() - started),
      });
      if (answer.status === "OK" || answer.status === "ZERO_RESULTS") {
        this.#entries.set(key, { answer, expires: this.#now() + this.#ttlMs });
        for (const oldest of this.#entries.keys()) {
          if (this.#entries.size <= this.#maxEntries) break;
          this.#entries.delete(oldest);
        }
      }
      return answer;
    });
    this.#inflight.set(key, search);
    return search;
  }
}
