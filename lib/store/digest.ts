/**
 * Store digests for anti-entropy. Clients are spread over a fixed number of
 * buckets by a hash of their ID; each bucket's digest is the XOR of a
 * 64-bit hash of every record line in it, kept up to date as records are
 * replaced. Two servers whose bucket digests match hold the same records
 * in that bucket (up to a 2^-64 chance), so a reconciliation only sends
 * the records of buckets that differ. Pure: no I/O.
 */

/** Buckets per digest; a power of two. */
export const BUCKETS = 1024;

const _HEX_LENGTH = BUCKETS * 16;

/** 32-bit FNV-1a over a string's UTF-16 code units, from `seed`. */
function _fnv1a(text: string, seed: number): number {
  let hash = seed;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}

/** The bucket a client's records live in. */
export function bucketOf(clientId: string): number {
  return _fnv1a(clientId, 0x811c9dc5) & (BUCKETS - 1);
}

/** Per-bucket XOR digests of a set of records. */
export class StoreDigest {
  /** Two 32-bit halves per bucket. */
  readonly words: Uint32Array = new Uint32Array(BUCKETS * 2);

  /** Adds a record to its bucket, or removes it: XOR is its own inverse. */
  toggle(clientId: string, line: string): void {
    this.toggleIn(bucketOf(clientId), line);
  }

  /** {@linkcode toggle} with the client's bucket already known. */
  toggleIn(bucket: number, line: string): void {
    this.begin();
    this.add(line, 0, line.length);
    this.end(bucket);
  }

  // A line's hash can also be fed in pieces (begin, add each, end): the same as of the pieces joined, without joining.
  #low = 0;
  #high = 0;

  /** Starts the hash of a line given in pieces. */
  begin(): void {
    this.#low = 0x811c9dc5;
    this.#high = 0x050c5d1f;
  }

  /** Adds `text` from `from` up to `to` to the line being hashed. */
  add(text: string, from: number, to: number): void {
    // Both 32-bit halves in one pass over the line: the same values as two FNV-1a passes with the two seeds.
    let low = this.#low;
    let high = this.#high;
    for (let i = from; i < to; i++) {
      const unit = text.charCodeAt(i);
      low = Math.imul(low ^ unit, 0x01000193);
      high = Math.imul(high ^ unit, 0x01000193);
    }
    this.#low = low;
    this.#high = high;
  }

  /** {@linkcode add} of text given as its character codes, `units[from]` up to `units[to]`. */
  addUnits(units: Uint8Array, from: number, to: number): void {
    let low = this.#low;
    let high = this.#high;
    for (let i = from; i < to; i++) {
      low = Math.imul(low ^ units[i], 0x01000193);
      high = Math.imul(high ^ units[i], 0x01000193);
    }
    this.#low = low;
    this.#high = high;
  }

  /** Toggles the line hashed since {@linkcode StoreDigest.begin} in `bucket`. */
  end(bucket: number): void {
    this.words[2 * bucket] ^= this.#low >>> 0;
    this.words[2 * bucket + 1] ^= this.#high >>> 0;
  }

  /**
   * A short fingerprint of the whole digest (16 hex digits, a 64-bit FNV-1a
   * over its words): two stores with equal fingerprints hold the same records
   * (up to a 2^-64 chance), which is what `deno task status` compares.
   */
  fingerprint(): string {
    let low = 0x811c9dc5;
    let high = 0x050c5d1f;
    for (const word of this.words) {
      low = Math.imul(low ^ word, 0x01000193);
      high = Math.imul(high ^ (word >>> 16 | word << 16), 0x01000193);
    }
    return (high >>> 0).toString(16).padStart(8, "0") + (low >>> 0).toString(16).padStart(8, "0");
  }

  /** The digest as hex, for the wire. */
  toHex(): string {
    let hex = "";
    for (const word of this.words) hex += word.toString(16).padStart(8, "0");
    return hex;
  }
}

/** Parses a hex digest; null when it is not one. */
export function parseDigestHex(hex: string): Uint32Array | null {
  if (hex.length !== _HEX_LENGTH || !/^[0-9a-f]+$/.test(hex)) return null;
  const words = new Uint32Array(BUCKETS * 2);
  for (let i = 0; i < words.length; i++) words[i] = parseInt(hex.slice(8 * i, 8 * i + 8), 16);
  return words;
}

/** The buckets whose digests differ. */
export function differingBuckets(a: Uint32Array, b: Uint32Array): Set<number> {
  const buckets = new Set<number>();
  for (let bucket = 0; bucket < BUCKETS; bucket++) {
    if (a[2 * bucket] !== b[2 * bucket] || a[2 * bucket + 1] !== b[2 * bucket + 1]) buckets.add(bucket);
  }
  return buckets;
}
