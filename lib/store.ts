/** The location store: the greatest record per client, in a `Map`. */

import { compareRecords, type LocationRecord } from "./protocol.ts";

/** Holds the greatest record seen for each client. */
export class LocationStore {
  #records = new Map<string, LocationRecord>();

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
    if (current !== undefined && compareRecords(record, current) <= 0) return false;
    this.#records.set(record.clientId, record);
    return true;
  }

  /** Every stored record. */
  values(): IterableIterator<LocationRecord> {
    return this.#records.values();
  }
}
