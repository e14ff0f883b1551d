/**
 * The location store: the greatest record per client, with the digest
 * used for anti-entropy. It keeps nothing but each client's AT line: the
 * lines sit in one array, and an open-addressing hash table of slot
 * numbers (an `Int32Array`) finds a client's slot by its ID, comparing
 * against the ID inside the line itself. So a client costs its line plus
 * about 20 bytes, not a `Map` entry, a key string and a line.
 */

import { bucketOf, StoreDigest } from "./digest.ts";
import { compareRecords, type LocationRecord } from "./protocol.ts";

/** Start of the client ID field (the fourth) in a stored AT line. */
function _idStart(line: string): number {
  let index = line.indexOf(" ");
  index = line.indexOf(" ", index + 1);
  return line.indexOf(" ", index + 1) + 1;
}

/** The client ID inside a stored AT line. */
function _idOf(line: string): string {
  const start = _idStart(line);
  return line.slice(start, line.indexOf(" ", start));
}

/** Whether a stored AT line belongs to `clientId`, without allocating. */
function _isFor(line: string, clientId: string): boolean {
  const start = _idStart(line);
  if (line.charCodeAt(start + clientId.length) !== 32) return false;
  return line.startsWith(clientId, start);
}

/** 32-bit FNV-1a of a client ID. */
function _hash(clientId: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < clientId.length; i++) {
    hash ^= clientId.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}

/** The record a stored AT line stands for. */
function _record(line: string): LocationRecord {
  const fields = line.split(" ");
  return { line, clientId: fields[3], location: fields[4], clientTime: fields[5] };
}

/** Holds the greatest record seen for each client. */
export class LocationStore {
  readonly digest: StoreDigest = new StoreDigest();
  #lines: string[] = [];
  /** Slot + 1 of each client, by hash; 0 is empty. At most half full. */
  #table = new Int32Array(1024);

  /** Number of clients known. */
  get size(): number {
    return this.#lines.length;
  }

  /** Index in the table where `clientId` is, or the empty place it would go. */
  #find(clientId: string): number {
    const mask = this.#table.length - 1;
    let at = _hash(clientId) & mask;
    while (true) {
      const slot = this.#table[at];
      if (slot === 0 || _isFor(this.#lines[slot - 1], clientId)) return at;
      at = (at + 1) & mask;
    }
  }

  #grow(): void {
    const table = new Int32Array(this.#table.length * 2);
    const mask = table.length - 1;
    for (let slot = 0; slot < this.#lines.length; slot++) {
      let at = _hash(_idOf(this.#lines[slot])) & mask;
      while (table[at] !== 0) at = (at + 1) & mask;
      table[at] = slot + 1;
    }
    this.#table = table;
  }

  /** The stored record for `clientId`, if any. */
  get(clientId: string): LocationRecord | undefined {
    const slot = this.#table[this.#find(clientId)];
    return slot === 0 ? undefined : _record(this.#lines[slot - 1]);
  }

  /** Stores `record` if it is greater than the one held for its client; returns whether it was stored. */
  offer(record: LocationRecord): boolean {
    const at = this.#find(record.clientId);
    const slot = this.#table[at];
    if (slot !== 0) {
      const current = this.#lines[slot - 1];
      const currentTime = current.slice(current.lastIndexOf(" ") + 1);
      const held = { line: current, clientId: record.clientId, location: "", clientTime: currentTime };
      if (compareRecords(record, held) <= 0) return false;
      this.digest.toggle(record.clientId, current);
      this.#lines[slot - 1] = record.line;
    } else {
      this.#lines.push(record.line);
      this.#table[at] = this.#lines.length;
      if (this.#lines.length * 2 > this.#table.length) this.#grow();
    }
    this.digest.toggle(record.clientId, record.line);
    return true;
  }

  /** Every stored AT line. */
  lines(): IterableIterator<string> {
    return this.#lines.values();
  }

  /** The records of the given digest buckets. */
  inBuckets(buckets: ReadonlySet<number>): LocationRecord[] {
    const found: LocationRecord[] = [];
    if (buckets.size === 0) return found;
    for (const line of this.#lines) {
      if (buckets.has(bucketOf(_idOf(line)))) found.push(_record(line));
    }
    return found;
  }
}
