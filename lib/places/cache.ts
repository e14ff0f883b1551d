/**
 * A per-server cache in front of any Places provider: keyed by provider,
 * location and radius, bounded in entries (least recently used go first),
 * entries expire after a TTL, and concurrent identical searches share one
 * upstream call. Only good answers (`OK`, `ZERO_RESULTS`) are kept. The
 * WHATSAT bound is applied after the cache, so one entry serves every bound;
 * the entry keeps the reply bodies made from it, so a warm WHATSAT costs a
 * copy, not printing and encoding kilobytes of JSON.
 */

import { log } from "../logging.ts";
import { formatGoogleJson, whatsatBody } from "./google_json.ts";
import { boundResults, type PlacesAnswer, placesError, type PlacesProvider, type PlacesQuery } from "./provider.ts";

const _encoder = new TextEncoder();

/** An answer and the WHATSAT reply bodies made from it, one per bound asked for. */
export class PlacesResult {
  /** The answer in the legacy shape. */
  readonly answer: PlacesAnswer;
  #bodies = new Map<number, Uint8Array>();

  /** Wraps an answer; bodies are made when first asked for. */
  constructor(answer: PlacesAnswer) {
    this.answer = answer;
  }

  /** The encoded part of a WHATSAT reply after its AT line ({@linkcode whatsatBody}), results cut to `bound`. */
  body(bound: number): Uint8Array {
    let body = this.#bodies.get(bound);
    if (body === undefined) {
      body = _encoder.encode(whatsatBody(formatGoogleJson(boundResults(this.answer, bound))));
      this.#bodies.set(bound, body);
    }
    return body;
  }
}

/** What the router asks for a WHATSAT: a search's result, with its reply bodies. */
export interface PlacesService {
  /** The provider's short name, for logs. */
  readonly name: string;
  /** Searches around a point (from the cache when it can). Never rejects. */
  result(query: PlacesQuery): Promise<PlacesResult>;
}

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
  /** Searches answered from the cache. */
  hits: number;
  /** Searches asked upstream. */
  misses: number;
  /** Searches that joined one already in flight. */
  shared: number;
}

/** A caching, single-flight wrapper around a provider. */
export class CachedPlaces implements PlacesProvider, PlacesService {
  readonly name: string;
  /** What the cache has done so far. */
  readonly stats: CacheStats = { hits: 0, misses: 0, shared: 0 };
  #inner: PlacesProvider;
  #ttlMs: number;
  #maxEntries: number;
  #now: () => number;
  #entries = new Map<string, { result: PlacesResult; expires: number }>();
  #inflight = new Map<string, Promise<PlacesResult>>();

  /** A cache in front of `inner`. */
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

  /** The answer alone (see {@linkcode CachedPlaces.result}). */
  async search(query: PlacesQuery): Promise<PlacesAnswer> {
    return (await this.result(query)).answer;
  }

  /** The result of a search: cached, joined to one in flight, or asked upstream. */
  result(query: PlacesQuery): Promise<PlacesResult> {
    const key = `${this.#inner.name} ${query.latitude}${query.longitude} ${query.radiusMetres}`;
    const entry = this.#entries.get(key);
    if (entry !== undefined) {
      this.#entries.delete(key);
      if (entry.expires > this.#now()) {
        this.#entries.set(key, entry); // most recently used goes last
        this.stats.hits++;
        return Promise.resolve(entry.result);
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
      const result = new PlacesResult(answer);
      if (answer.status === "OK" || answer.status === "ZERO_RESULTS") {
        this.#entries.set(key, { result, expires: this.#now() + this.#ttlMs });
        for (const oldest of this.#entries.keys()) {
          if (this.#entries.size <= this.#maxEntries) break;
          this.#entries.delete(oldest);
        }
      }
      return result;
    });
    this.#inflight.set(key, search);
    return search;
  }
}
