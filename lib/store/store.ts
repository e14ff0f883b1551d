/**
 * The location store: the greatest record per client, in a `Map` from
 * client ID to its AT line, with the digest used for anti-entropy. Only the
 * line is kept, one flat string per client (the cheapest `Map` layout
 * measured: docs/PERFORMANCE.md, scenario 6); the other fields are read
 * back from it on demand.
 */

import { nowNs } from "../clock.ts";
import { compareToNanoseconds, nanosecondsText } from "../decimal.ts";
import { bucketOf, StoreDigest } from "./digest.ts";
import { clientTimeOfLine, compareToLine, type LocationRecord, recordOfLine } from "../protocol.ts";

/** Options for {@linkcode LocationStore}. */
export interface LocationStoreOptions {
  /** Records whose client time is older than this many seconds are gone; 0 (the default) keeps them forever. */
  ttlS?: number;
  /** The clock, in nanoseconds since the epoch; tests pass their own. */
  nowNs?: () => bigint;
}

/** How long one expiry cutoff is used before the clock is read again, in milliseconds. */
const _CUTOFF_MS = 250;

/** Holds the greatest record seen for each client. */
export class LocationStore {
  #lines = new Map<string, string>();
  /** The digest of every stored record, kept current. */
  readonly digest: StoreDigest = new StoreDigest();
  #ttlNs: bigint;
  #nowNs: () => bigint;
  #cutoff: { whole: string; nanos: string } | undefined;
  #cutoffAt = -Infinity;
  #sweep: Iterator<[string, string]> | undefined;

  /** An empty store; with `ttlS`, records expire by their client time. */
  constructor(options: LocationStoreOptions = {}) {
    this.#ttlNs = BigInt(options.ttlS ?? 0) * 1_000_000_000n;
    this.#nowNs = options.nowNs ?? nowNs;
  }

  /** Number of clients known (records that expired but were not swept yet included). */
  get size(): number {
    return this.#lines.size;
  }

  /** Whether a record is held for `clientId`. */
  has(clientId: string): boolean {
    return this.#lines.has(clientId);
  }

  /** Whether a record with this client time has expired (never, without a TTL). */
  isExpired(clientTime: string): boolean {
    if (this.#ttlNs === 0n) return false;
    const now = performance.now();
    if (this.#cutoff === undefined || now - this.#cutoffAt >= _CUTOFF_MS) {
      this.#cutoff = nanosecondsText(this.#nowNs() - this.#ttlNs);
      this.#cutoffAt = now;
    }
    return compareToNanoseconds(clientTime, this.#cutoff) < 0;
  }

  /** The line stored for `clientId`, if any, expired or not. */
  lineOf(clientId: string): string | undefined {
    return this.#lines.get(clientId);
  }

  /** The stored record for `clientId`, if any (and not expired). */
  get(clientId: string): LocationRecord | undefined {
    const line = this.#lines.get(clientId);
    if (line === undefined) return undefined;
    const record = recordOfLine(line);
    return this.isExpired(record.clientTime) ? undefined : record;
  }

  /**
   * Stores `record` if it is greater than the one held for its client (and
   * not expired); returns whether it was stored.
   */
  offer(record: LocationRecord): boolean {
    const current = this.#lines.get(record.clientId);
    if (current !== undefined && compareToLine(record, current, clientTimeOfLine(current)) <= 0) return false;
    if (this.isExpired(record.clientTime)) return false;
    // Hashed once the record is known to be stored: most floods arrive more than once, and the repeats stop above.
    const bucket = bucketOf(record.clientId);
    if (current !== undefined) this.digest.toggleIn(bucket, current);
    this.#lines.set(record.clientId, record.line);
    this.digest.toggleIn(bucket, record.line);
    return true;
  }

  /**
   * Removes expired records, looking at no more than `budget` of them, and
   * carries on where it stopped at the next call: a store of millions is
   * swept in slices, never in one stall. Returns how many it removed.
   */
  sweepExpired(budget: number): number {
    if (this.#ttlNs === 0n) return 0;
    this.#sweep ??= this.#lines.entries();
    let removed = 0;
    for (let looked = 0; looked < budget; looked++) {
      const next = this.#sweep.next();
      if (next.done) {
        this.#sweep = undefined;
        break;
      }
      const [clientId, line] = next.value;
      if (!this.isExpired(clientTimeOfLine(line))) continue;
      this.#lines.delete(clientId);
      this.digest.toggle(clientId, line);
      removed++;
    }
    return removed;
  }

  /** Whether a sweep is part way through the store. */
  get sweeping(): boolean {
    return this.#sweep !== undefined;
  }

  /** Every stored AT line, expired ones left out. */
  *lines(): Generator<string, void, undefined> {
    for (const line of this.#lines.values()) if (!this.isExpired(clientTimeOfLine(line))) yield line;
  }

  /** The AT lines of the given digest buckets, as the map is walked (nothing gathered first), expired ones left out. */
  *linesInBuckets(buckets: ReadonlySet<number>): Generator<string, void, undefined> {
    if (buckets.size === 0) return;
    for (const [clientId, line] of this.#lines) {
      if (buckets.has(bucketOf(clientId)) && !this.isExpired(clientTimeOfLine(line))) yield line;
    }
  }

  /** The records of the given digest buckets, expired ones left out. */
  inBuckets(buckets: ReadonlySet<number>): LocationRecord[] {
    return [...this.linesInBuckets(buckets)].map(recordOfLine);
  }
}
