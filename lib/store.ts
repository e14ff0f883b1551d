/** The location store: the greatest record per client, in a `Map`, with its digest for anti-entropy. */

import { bucketOf, StoreDigest } from "./digest.ts";
import { compareRecords, type LocationRecord } from "./protocol.ts";

/** Holds the greatest record seen for each client. */
export class LocationStore {
  #records = new Map<string, LocationRecord>();
  readonly digest: StoreDigest = new StoreDigest();

  /** Number of clients known. */
  get size(): number {
    return this.#records.size;
  }

  /** The stored record for `clientId`, if any. */
  get(clientId: string): LocationRecord | undefined {
    return this.#records.get(clientId);
  }

  /** Stores `record` if it is greater than the one held for its client; returns whether it was stored. */
  offer(record: LocationRecord): boolean {
    const current = this.#records.get(record.clientId);
    if (current !== undefined) {
      if (compareRecords(record, current) <= 0) return false;
      this.digest.toggle(current.clientId, current.line);
    }
    this.#records.set(record.clientId, record);
    this.digest.toggle(record.clientId, record.line);
    return true;
  }

  /** Every stored record. */
  values(): IterableIterator<LocationRecord> {
    return this.#records.values();
  }

  /** The records of the given digest buckets. */
  inBuckets(buckets: ReadonlySet<number>): LocationRecord[] {
    const found: LocationRecord[] = [];
    if (buckets.size === 0) return found;
    for (const record of this.#records.values()) {
      if (buckets.has(bucketOf(record.clientId))) found.push(record);
    }
    return found;
  }
}
