/**
 * The location store: the greatest record per client, in a `Map` from
 * client ID to its AT line, with the digest used for anti-entropy. Only the
 * line is kept, one flat string per client (the cheapest `Map` layout
 * measured: docs/PERFORMANCE.md, scenario 6); the other fields are read
 * back from it on demand.
 */

import { bucketOf, StoreDigest } from "./digest.ts";
import { clientTimeOfLine, compareToLine, type LocationRecord, recordOfLine } from "../protocol.ts";

/** Holds the greatest record seen for each client. */
export class LocationStore {
  #lines = new Map<string, string>();
  /** The digest of every stored record, kept current. */
  readonly digest: StoreDigest = new StoreDigest();

  /** Number of clients known. */
  get size(): number {
    return this.#lines.size;
  }

  /** The stored record for `clientId`, if any. */
  get(clientId: string): LocationRecord | undefined {
    const line = this.#lines.get(clientId);
    return line === undefined ? undefined : recordOfLine(line);
  }

  /** Stores `record` if it is greater than the one held for its client; returns whether it was stored. */
  offer(record: LocationRecord): boolean {
    const current = this.#lines.get(record.clientId);
    if (current !== undefined && compareToLine(record, current, clientTimeOfLine(current)) <= 0) return false;
    // Hashed once the record is known to be stored: most floods arrive more than once, and the repeats stop above.
    const bucket = bucketOf(record.clientId);
    if (current !== undefined) this.digest.toggleIn(bucket, current);
    this.#lines.set(record.clientId, record.line);
    this.digest.toggleIn(bucket, record.line);
    return true;
  }

  /** Every stored AT line. */
  lines(): IterableIterator<string> {
    return this.#lines.values();
  }

  /** The AT lines of the given digest buckets, as the map is walked (nothing gathered first). */
  *linesInBuckets(buckets: ReadonlySet<number>): Generator<string, void, undefined> {
    if (buckets.size === 0) return;
    for (const [clientId, line] of this.#lines) {
      if (buckets.has(bucketOf(clientId))) yield line;
    }
  }

  /** The records of the given digest buckets. */
  inBuckets(buckets: ReadonlySet<number>): LocationRecord[] {
    const found: LocationRecord[] = [];
    if (buckets.size === 0) return found;
    for (const [clientId, line] of this.#lines) {
      if (buckets.has(bucketOf(clientId))) found.push(recordOfLine(line));
    }
    return found;
  }
}
