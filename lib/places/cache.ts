/**
 * A per-server cache in front of any Places provider: keyed by provider,
 * location and radius (in whole metres: the router rounds it), bounded in
 * entries and in the bytes of their reply bodies (least recently used go
 * first). Good answers (`OK`,
 * `ZERO_RESULTS`) are served for `cacheTtlMs`, failed ones for `errorTtlMs`
 * (an error invites no retry storm, and Google bills every call);
 * concurrent identical searches share one upstream call, and at most
 * `maxConcurrent` upstream calls run at once, the rest waiting in a bounded
 * queue. `timeoutMs` bounds the whole wait of a search, its time in the
 * queue and its upstream call together (a search joined to one in flight
 * waits at most what is left of that one's). The WHATSAT bound is applied after the cache: each entry keeps one
 * encoded reply body, and the body for a lower bound is cut out of it.
 */

import { metrics } from "../admin/metrics.ts";
import { log } from "../logging.ts";
import { LogBudget } from "../log_budget.ts";
import { concatBytes, type Part } from "../net/write.ts";
import { formatGoogleJsonWithLayout, whatsatBody } from "./google_json.ts";
import { type PlacesAnswer, placesError, type PlacesProvider, type PlacesQuery } from "./provider.ts";

const _encoder = new TextEncoder();
const _decoder = new TextDecoder();

/** Longest time between two passes that drop expired entries, in milliseconds. */
const _SWEEP_EVERY_MS = 60_000;

/**
 * The least time a queued search must have left (of `places.timeoutMs`, or a
 * quarter of it when that is shorter) to be sent upstream when its turn comes.
 */
const _LEAST_CALL_MS = 100;

/** Where the results sit in an encoded body, in bytes (see {@linkcode PlacesResult.reply}). */
interface _ByteLayout {
  open: number;
  close: number;
  ends: number[];
}

/**
 * The UTF-8 byte offsets in `text` of the ascending UTF-16 offsets `at`
 * (none inside a surrogate pair), encoding each stretch of `text` once.
 */
function _byteOffsets(text: string, at: number[]): number[] {
  const bytes: number[] = [];
  let from = 0;
  let total = 0;
  for (const offset of at) {
    total += _encoder.encode(text.slice(from, offset)).length;
    from = offset;
    bytes.push(total);
  }
  return bytes;
}

/**
 * An answer and the one encoded WHATSAT reply body made from it, from which
 * every bound's body is cut. Once the body is made, the answer's objects are
 * let go (a cached 20-result answer held them beside its body, about as many
 * bytes again, which the cache's byte bound did not count): only its status
 * and message stay, and {@linkcode PlacesResult.answer} parses the body again.
 */
export class PlacesResult {
  /** The answer's status (`OK`, `ZERO_RESULTS`, `UNKNOWN_ERROR`...). */
  readonly status: string;
  /** The answer's `error_message`, if it has one. */
  readonly errorMessage: unknown;
  #answer: PlacesAnswer | undefined;
  #body: Uint8Array | undefined;
  #layout: _ByteLayout | undefined;

  /** Wraps an answer; its body is made when first asked for. */
  constructor(answer: PlacesAnswer) {
    this.#answer = answer;
    this.status = answer.status;
    this.errorMessage = answer.error_message;
  }

  /** The answer in the legacy shape (parsed from the body again once the body is made). */
  get answer(): PlacesAnswer {
    return this.#answer ?? JSON.parse(_decoder.decode(this.#body!)) as PlacesAnswer;
  }

  /** Bytes the encoded body holds, once made (0 before). */
  get bytes(): number {
    return this.#body?.length ?? 0;
  }

  /** Makes the encoded body now (it is made once either way) and says how many bytes it holds. */
  encode(): number {
    return this.#make().length;
  }

  #make(): Uint8Array {
    if (this.#body !== undefined) return this.#body;
    const { json, layout } = formatGoogleJsonWithLayout(this.#answer!);
    const body = whatsatBody(json);
    this.#body = _encoder.encode(body);
    this.#answer = undefined;
    // The body is a newline, the JSON and two newlines (printed JSON has no runs of newlines to squeeze); offsets
    // in the JSON move by one. Offsets become bytes by encoding what comes before them.
    if (layout !== undefined && body === `\n${json}\n\n`) {
      // In one pass: encoding the whole head before each result end was quadratic in the results (an answer of
      // 16,000 tiny results took 1.5 s, one of the 4 MiB allowed hours, with the event loop blocked).
      const [open, ...rest] = _byteOffsets(body, [layout.open, ...layout.ends, layout.close].map((at) => at + 1));
      this.#layout = { open, close: rest.pop()!, ends: rest };
    }
    return this.#body;
  }

  /**
   * The whole WHATSAT reply: `line` (the stored AT line), then the body with
   * `results` cut to `bound`, as parts to write one after another: views of
   * the one encoded body, nothing copied here. The body of a lower bound is
   * the head of the full one up to that many results, then its tail from
   * where the results end.
   */
  replyParts(line: Part, bound: number): Part[] {
    const body = this.#make();
    const layout = this.#layout;
    const count = layout?.ends.length ?? 0;
    if (layout === undefined || bound >= count) return [line, body];
    if (bound === 0) {
      // `"results" : []`: the head up to the `[`, `[]`, then the rest after the `]`.
      return [line, body.subarray(0, layout.open), _EMPTY_ARRAY, body.subarray(layout.close)];
    }
    return [line, body.subarray(0, layout.ends[bound - 1]), body.subarray(layout.ends[count - 1])];
  }

  /** {@linkcode PlacesResult.replyParts} in one buffer made here. */
  reply(line: Uint8Array, bound: number): Uint8Array {
    return concatBytes(this.replyParts(line, bound) as Uint8Array[]);
  }

  /** The body alone, results cut to `bound` ({@linkcode PlacesResult.reply} with no line). */
  body(bound: number): Uint8Array {
    return this.reply(new Uint8Array(0), bound);
  }
}

const _EMPTY_ARRAY = _encoder.encode("[]");

/** What the router asks for a WHATSAT: a search's result, with its reply body. */
export interface PlacesService {
  /** The provider's short name, for logs. */
  readonly name: string;
  /** Searches around a point (from the cache when it can). Never rejects. */
  result(query: PlacesQuery): Promise<PlacesResult>;
}

/**
 * The most bytes of reply bodies a cache holds, whatever `maxEntries` allows:
 * 10,000 entries of 45 KB answers would be 450 MB.
 */
export const MAX_CACHE_BYTES = 64 * 1024 * 1024;

/** Options for {@linkcode CachedPlaces}. */
export interface CachedPlacesOptions {
  /** How long a good answer is served, in milliseconds. */
  ttlMs: number;
  /** How long a failed answer is served, in milliseconds; the default serves none. */
  errorTtlMs?: number;
  /** Most answers kept. */
  maxEntries: number;
  /** Most bytes of reply bodies kept ({@linkcode MAX_CACHE_BYTES} by default); an answer larger alone is not kept. */
  maxBytes?: number;
  /** Most upstream searches at once; unbounded by default. */
  maxConcurrent?: number;
  /** Most searches waiting for one of those; past it a search answers at once with an error. */
  maxQueued?: number;
  /**
   * Longest a search waits for its answer, in the queue and upstream
   * together, in milliseconds; past it the search answers `UNKNOWN_ERROR`
   * and its upstream call is abandoned. Unbounded by default.
   */
  timeoutMs?: number;
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
  /** Searches that waited for an upstream turn. */
  queued: number;
  /** Searches refused because too many were waiting. */
  refused: number;
}

/** A caching, single-flight, concurrency-bounded wrapper around a provider. */
export class CachedPlaces implements PlacesProvider, PlacesService {
  /** The provider's short name. */
  readonly name: string;
  /** What the cache has done so far. */
  readonly stats: CacheStats = { hits: 0, misses: 0, shared: 0, queued: 0, refused: 0 };
  #inner: PlacesProvider;
  #ttlMs: number;
  #errorTtlMs: number;
  #maxEntries: number;
  #maxConcurrent: number;
  #maxQueued: number;
  #timeoutMs: number;
  #now: () => number;
  #maxBytes: number;
  #bytes = 0;
  #entries = new Map<string, { result: PlacesResult; expires: number; bytes: number }>();
  /** When expired entries were last dropped (see {@linkcode CachedPlaces.#dropExpired}). */
  #sweptAt = -Infinity;
  #inflight = new Map<string, Promise<PlacesResult>>();
  #running = 0;
  #waiting: (() => void)[] = [];
  /**
   * Warnings about failed searches: one per upstream call (not per reply: the
   * replies served from the cache or shared say nothing new), and of those at
   * most 10 a second, the rest counted, as distinct searches failing fast
   * would otherwise make one line each.
   */
  #warnings = new LogBudget(10, (count) => {
    log.places.warning("{count} more failed Places searches were not logged one by one", { count });
  });

  /** A cache in front of `inner`. */
  constructor(inner: PlacesProvider, options: CachedPlacesOptions) {
    this.name = inner.name;
    this.#inner = inner;
    this.#ttlMs = options.ttlMs;
    this.#errorTtlMs = options.errorTtlMs ?? 0;
    this.#maxEntries = options.maxEntries;
    this.#maxBytes = options.maxBytes ?? MAX_CACHE_BYTES;
    this.#maxConcurrent = options.maxConcurrent ?? Infinity;
    this.#maxQueued = options.maxQueued ?? Infinity;
    this.#timeoutMs = options.timeoutMs ?? Infinity;
    this.#now = options.now ?? (() => performance.now());
  }

  /** Answers held. */
  get size(): number {
    return this.#entries.size;
  }

  /** Bytes of the reply bodies held. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Upstream searches running now. */
  get running(): number {
    return this.#running;
  }

  /** The answer alone (see {@linkcode CachedPlaces.result}). */
  async search(query: PlacesQuery): Promise<PlacesAnswer> {
    return (await this.result(query)).answer;
  }

  /** The result of a search: cached, joined to one in flight, or asked upstream when a turn is free. */
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
      this.#bytes -= entry.bytes;
    }
    const pending = this.#inflight.get(key);
    if (pending !== undefined) {
      this.stats.shared++;
      return pending;
    }
    if (this.#running >= this.#maxConcurrent && this.#waiting.length >= this.#maxQueued) {
      this.stats.refused++;
      if (this.#warnings.take()) {
        log.places.warning("A Places search was refused: {queued} searches are waiting for {running} upstream turns", {
          queued: this.#waiting.length,
          running: this.#running,
        });
      }
      return Promise.resolve(
        new PlacesResult(
          placesError("OVER_QUERY_LIMIT", "This server has too many Places searches waiting; try again later"),
        ),
      );
    }
    this.stats.misses++;
    const started = performance.now();
    let search: Promise<PlacesResult>;
    if (this.#running < this.#maxConcurrent) {
      this.#running++;
      search = this.#ask(key, query, started); // upstream at once, in this turn
    } else {
      this.stats.queued++;
      search = this.#queue(key, query, started);
    }
    this.#inflight.set(key, search);
    return search;
  }

  /** Hands the upstream turn of a finished search to the next waiting one, or frees it. */
  #release(): void {
    const next = this.#waiting.shift();
    if (next !== undefined) next();
    else this.#running--;
  }

  /** The answer of a search that ran out of `timeoutMs`, `queuedMs` of it waiting for a turn. */
  #timedOut(queuedMs: number): PlacesAnswer {
    const waited = queuedMs > 0 ? `, ${Math.round(queuedMs)} ms of it waiting behind other searches` : "";
    return placesError(
      "UNKNOWN_ERROR",
      `The Places service did not answer within ${this.#timeoutMs} ms (places.timeoutMs${waited})`,
    );
  }

  /** Waits for an upstream turn, then asks; answers a timeout error, unasked, if no turn comes within `timeoutMs`. */
  async #queue(key: string, query: PlacesQuery, started: number): Promise<PlacesResult> {
    const turn = await new Promise<boolean>((resolve) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const waiter = () => {
        clearTimeout(timer);
        resolve(true);
      };
      if (Number.isFinite(this.#timeoutMs)) {
        timer = setTimeout(() => {
          const at = this.#waiting.indexOf(waiter);
          if (at >= 0) this.#waiting.splice(at, 1);
          resolve(false);
        }, this.#timeoutMs);
      }
      this.#waiting.push(waiter);
    });
    if (turn) {
      // A turn that comes with almost none of the search's time left is passed on: its call could not be answered
      // in time, and is billed all the same (an audit's 300 searches behind a silent upstream made 51 calls, not 16).
      const left = this.#timeoutMs - (performance.now() - started);
      if (left >= Math.min(_LEAST_CALL_MS, this.#timeoutMs / 4)) return this.#ask(key, query, started);
      this.#release();
    }
    this.#inflight.delete(key);
    const answer = this.#timedOut(performance.now() - started);
    if (this.#warnings.take()) {
      log.places.warning(
        "No upstream turn for {provider} around {location} radius {radius} m within {ms} ms",
        {
          provider: this.#inner.name,
          location: `${query.latitude}${query.longitude}`,
          radius: query.radiusMetres,
          ms: this.#timeoutMs,
        },
      );
    }
    // Not cached: the search never reached the provider, so its answer says nothing about this place.
    return new PlacesResult(answer);
  }

  /**
   * Keeps `result` for `ttl` ms, then drops the least recently used entries
   * past `maxEntries` or `maxBytes`, and (now and then) the expired ones.
   */
  #keep(key: string, result: PlacesResult, ttl: number): void {
    const bytes = result.encode();
    if (bytes > this.#maxBytes) return;
    this.#dropExpired();
    const previous = this.#entries.get(key);
    if (previous !== undefined) {
      this.#entries.delete(key);
      this.#bytes -= previous.bytes;
    }
    this.#entries.set(key, { result, expires: this.#now() + ttl, bytes });
    this.#bytes += bytes;
    for (const [oldest, entry] of this.#entries) {
      if (this.#entries.size <= this.#maxEntries && this.#bytes <= this.#maxBytes) break;
      this.#entries.delete(oldest);
      this.#bytes -= entry.bytes;
    }
  }

  /**
   * Drops every expired entry, at most once per {@linkcode _SWEEP_EVERY_MS}:
   * an entry is otherwise dropped only when its search comes again or the
   * cache is full, and a stream of distinct searches (a soak test's, 8 a
   * second) would fill it to its bounds with answers nobody may be served,
   * held for as long as the server runs (the bound is 10,000 entries and
   * 64 MiB of bodies, more than a server needs when answers expire first).
   * Called when an answer is kept: a whole pass over at most `maxEntries`,
   * so once a minute or a TTL, whichever is sooner.
   */
  #dropExpired(): void {
    const now = this.#now();
    if (now - this.#sweptAt < Math.min(_SWEEP_EVERY_MS, this.#ttlMs)) return;
    this.#sweptAt = now;
    for (const [key, entry] of this.#entries) {
      if (entry.expires > now) continue;
      this.#entries.delete(key);
      this.#bytes -= entry.bytes;
    }
  }

  /**
   * The answer as a result whose reply body is made now, or an error result
   * when it cannot be printed: a failure here would otherwise reject every
   * WHATSAT sharing the search, whose clients get no reply at all.
   */
  #printed(answer: PlacesAnswer, properties: Record<string, unknown>): PlacesResult {
    const result = new PlacesResult(answer);
    try {
      result.encode();
      return result;
    } catch (error) {
      log.places.error("The answer of {provider} around {location} radius {radius} m cannot be printed: {name}", {
        ...properties,
        name: (error as Error)?.name,
      });
      return new PlacesResult(placesError("UNKNOWN_ERROR", "The Places service's answer cannot be printed"));
    }
  }

  async #ask(key: string, query: PlacesQuery, started: number): Promise<PlacesResult> {
    const called = performance.now();
    const queuedMs = called - started;
    const abort = new AbortController();
    let asked: Promise<PlacesAnswer>;
    try {
      asked = this.#inner.search(query, abort.signal);
    } catch (error) {
      asked = Promise.reject(error);
    }
    const call = asked.catch((error) => {
      // Providers never reject; if one does, its error text is not trusted to be free of the key.
      log.places.error("Provider {provider} failed unexpectedly: {name}", {
        provider: this.#inner.name,
        name: (error as Error)?.name,
      });
      return placesError("UNKNOWN_ERROR", "The Places provider failed unexpectedly");
    });
    // The turn is held until the provider is done, even when the search is answered at its deadline before that.
    call.finally(() => this.#release());
    let answer: PlacesAnswer;
    if (!Number.isFinite(this.#timeoutMs)) {
      answer = await call;
    } else {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const deadline = new Promise<PlacesAnswer>((resolve) => {
        timer = setTimeout(() => {
          abort.abort(new DOMException("places.timeoutMs passed", "TimeoutError"));
          resolve(this.#timedOut(queuedMs));
        }, Math.max(0, this.#timeoutMs - queuedMs));
      });
      answer = await Promise.race([call, deadline]);
      clearTimeout(timer);
    }
    this.#inflight.delete(key);
    metrics.placesRequest(this.#inner.name, answer.status, (performance.now() - called) / 1000);
    const properties = {
      provider: this.#inner.name,
      location: `${query.latitude}${query.longitude}`,
      radius: query.radiusMetres,
      status: answer.status,
      ms: Math.round(performance.now() - called),
    };
    if (answer.error_message === undefined) {
      log.places.info(
        "Upstream {provider} around {location} radius {radius} m: {status} in {ms} ms",
        properties,
      );
    } else if (this.#warnings.take()) {
      log.places.warning(
        "Upstream {provider} around {location} radius {radius} m: {status} in {ms} ms: {error}",
        { ...properties, error: answer.error_message },
      );
    }
    const result = this.#printed(answer, properties);
    const good = result.status === "OK" || result.status === "ZERO_RESULTS";
    const ttl = good ? this.#ttlMs : this.#errorTtlMs;
    if (ttl > 0) this.#keep(key, result, ttl);
    return result;
  }
}
