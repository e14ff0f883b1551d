/**
 * The location store: the greatest record per client, in a `Map` from
 * client ID to its AT line, with the digest used for anti-entropy. Only the
 * line is kept, one flat string per client (the cheapest `Map` layout
 * measured: docs/PERFORMANCE.md, scenario 6); the other fields are read
 * back from it on demand. With the herd's server names given, a line is
 * kept shorter still: without the `AT `, the client ID (the key already
 * holds it) and the server's name (one character for it), and made whole
 * again, to the byte, when it is read.
 */

import { nowNs } from "../clock.ts";
import { compareDecimal, compareToNanoseconds, nanosecondsText } from "../decimal.ts";
import { bucketOf, StoreDigest } from "./digest.ts";
import { clientTimeOfLine, compareToLine, type LocationRecord, recordOfLine } from "../protocol.ts";

/** Options for {@linkcode LocationStore}. */
export interface LocationStoreOptions {
  /** Records whose client time is older than this many seconds are gone; 0 (the default) keeps them forever. */
  ttlS?: number;
  /** The clock, in nanoseconds since the epoch; tests pass their own. */
  nowNs?: () => bigint;
  /**
   * The names records may carry (the herd's servers, then its retired
   * ones): the lines of records these servers took are kept in the short
   * form (see above); others are kept as they are.
   */
  servers?: Iterable<string>;
}

/**
 * Servers a short line can name: one character each, below `A` (a whole
 * line's first character). The 32nd server's is a space: a short line's
 * fields are therefore looked for from its second character on.
 */
const _MAX_SHORT_SERVERS = 64;

/**
 * A stored line in its short form, or the line itself when it has no short
 * form: `<server's character><time difference> <location> <client time>`,
 * the server's character being its index in `servers` plus one. Made only
 * from a line of the herd's own form (`AT`, server, difference, client,
 * location, time, joined by single spaces); the client must be `clientId`.
 */
function _shortLine(line: string, clientId: string, servers: ReadonlyMap<string, string>): string {
  if (!line.startsWith("AT ")) return line;
  const afterServer = line.indexOf(" ", 3);
  if (afterServer < 0) return line;
  const mark = servers.get(line.slice(3, afterServer));
  if (mark === undefined) return line;
  const afterDifference = line.indexOf(" ", afterServer + 1);
  const afterClient = afterDifference + 1 + clientId.length;
  if (
    afterDifference < 0 || line.charCodeAt(afterClient) !== 32 ||
    !line.startsWith(clientId, afterDifference + 1)
  ) return line;
  // join() makes one flat string: a concatenation would keep a rope of the pieces, and the line with them.
  return [mark + line.slice(afterServer + 1, afterDifference), line.slice(afterClient + 1)].join(" ");
}

/** How long one expiry cutoff is used before the clock is read again, in milliseconds. */
const _CUTOFF_MS = 250;

/**
 * Clients {@linkcode LocationStore.linesInBuckets} walks between two empty
 * strings (about 2.5 ms of walking here).
 */
export const WALK_PAUSE_CLIENTS = 16_384;

/** Holds the greatest record seen for each client. */
export class LocationStore {
  #lines = new Map<string, string>();
  /** The digest of every stored record, kept current. */
  readonly digest: StoreDigest = new StoreDigest();
  #ttlNs: bigint;
  #nowNs: () => bigint;
  /** How long one expiry cutoff is used: a clock of the caller's (a test's) is read every time. */
  #cutoffMs: number;
  #cutoff: { whole: string; nanos: string } | undefined;
  #cutoffAt = -Infinity;
  #sweep: Iterator<[string, string]> | undefined;
  /** Each server's character in a short line, and the servers by character code less one. */
  #marks = new Map<string, string>();
  #servers: string[] = [];

  /** An empty store; with `ttlS`, records expire by their client time. */
  constructor(options: LocationStoreOptions = {}) {
    this.#ttlNs = BigInt(options.ttlS ?? 0) * 1_000_000_000n;
    this.#nowNs = options.nowNs ?? nowNs;
    this.#cutoffMs = options.nowNs === undefined ? _CUTOFF_MS : 0;
    for (const server of options.servers ?? []) {
      if (this.#servers.length === _MAX_SHORT_SERVERS || this.#marks.has(server)) continue;
      this.#marks.set(server, String.fromCharCode(this.#servers.length + 1));
      this.#servers.push(server);
    }
  }

  /** The server a short line names, or undefined for a line kept whole. */
  #serverOf(stored: string): string | undefined {
    const mark = stored.charCodeAt(0);
    return mark >= 1 && mark <= _MAX_SHORT_SERVERS ? this.#servers[mark - 1] : undefined;
  }

  /** The whole AT line of a stored value (short or not) of `clientId`. */
  #line(clientId: string, stored: string): string {
    const server = this.#serverOf(stored);
    if (server === undefined) return stored;
    const afterDifference = stored.indexOf(" ", 1);
    return [
      "AT",
      server,
      stored.slice(1, afterDifference),
      clientId,
      stored.slice(afterDifference + 1),
    ]
      .join(" ");
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
    if (this.#cutoff === undefined || now - this.#cutoffAt >= this.#cutoffMs) {
      this.#cutoff = nanosecondsText(this.#nowNs() - this.#ttlNs);
      this.#cutoffAt = now;
    }
    return compareToNanoseconds(clientTime, this.#cutoff) < 0;
  }

  /** The line stored for `clientId`, if any, expired or not. */
  lineOf(clientId: string): string | undefined {
    const stored = this.#lines.get(clientId);
    return stored === undefined ? undefined : this.#line(clientId, stored);
  }

  /** Takes a stored value's line (short or not) in or out of the digest, without making the whole line. */
  #toggle(bucket: number, clientId: string, stored: string): void {
    const server = this.#serverOf(stored);
    if (server === undefined) return this.digest.toggleIn(bucket, stored);
    const digest = this.digest;
    const afterDifference = stored.indexOf(" ", 1);
    digest.begin();
    digest.add("AT ", 0, 3);
    digest.add(server, 0, server.length);
    digest.add(" ", 0, 1);
    digest.add(stored, 1, afterDifference + 1);
    digest.add(clientId, 0, clientId.length);
    digest.add(stored, afterDifference, stored.length);
    digest.end(bucket);
  }

  /**
   * Whether the line held for `clientId` (expired or not) is, to the byte,
   * the first `end` characters of `line`: compared where it lies, without
   * making the whole line of a short one (this runs for every record a
   * neighbour sends, and flooding brings most of them twice).
   */
  holds(clientId: string, line: string, end: number): boolean {
    const stored = this.#lines.get(clientId);
    if (stored === undefined) return false;
    const server = this.#serverOf(stored);
    if (server === undefined) return stored.length === end && line.startsWith(stored);
    // AT <server> <difference> <client> <location> <time>, stored as <mark><difference> <location> <time>.
    if (end !== stored.length + server.length + clientId.length + 4 || !line.startsWith("AT ")) return false;
    if (!line.startsWith(server, 3) || line.charCodeAt(3 + server.length) !== 32) return false;
    const afterDifference = stored.indexOf(" ", 1);
    let at = 4 + server.length;
    for (let i = 1; i < afterDifference; i++) if (line.charCodeAt(at++) !== stored.charCodeAt(i)) return false;
    if (line.charCodeAt(at++) !== 32 || !line.startsWith(clientId, at)) return false;
    at += clientId.length;
    for (let i = afterDifference; i < stored.length; i++) {
      if (line.charCodeAt(at++) !== stored.charCodeAt(i)) return false;
    }
    return true;
  }

  /** The stored record for `clientId`, if any (and not expired). */
  get(clientId: string): LocationRecord | undefined {
    const stored = this.#lines.get(clientId);
    if (stored === undefined) return undefined;
    if (this.#serverOf(stored) === undefined) {
      const record = recordOfLine(stored);
      return this.isExpired(record.clientTime) ? undefined : record;
    }
    // A WHATSAT asks this: the fields are read from the short line where they lie, not split out of the whole one.
    const afterDifference = stored.indexOf(" ", 1);
    const afterLocation = stored.indexOf(" ", afterDifference + 1);
    const clientTime = stored.slice(afterLocation + 1);
    if (this.isExpired(clientTime)) return undefined;
    const location = stored.slice(afterDifference + 1, afterLocation);
    return { line: this.#line(clientId, stored), clientId, location, clientTime };
  }

  /**
   * Stores `record` if it is greater than the one held for its client (and
   * not expired); returns whether it was stored.
   */
  offer(record: LocationRecord): boolean {
    const { clientId } = record;
    const stored = this.#lines.get(clientId);
    // The time first, from the stored value as it is (a short line ends with it too); the whole line only for a tie.
    if (stored !== undefined) {
      const byTime = compareDecimal(record.clientTime, clientTimeOfLine(stored));
      if (byTime < 0) return false;
      if (byTime === 0 && compareToLine(record, this.#line(clientId, stored), record.clientTime) <= 0) return false;
    }
    if (this.isExpired(record.clientTime)) return false;
    // Hashed once the record is known to be stored: most floods arrive more than once, and the repeats stop above.
    const bucket = bucketOf(clientId);
    if (stored !== undefined) this.#toggle(bucket, clientId, stored);
    this.#lines.set(clientId, this.#marks.size === 0 ? record.line : _shortLine(record.line, clientId, this.#marks));
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
      const [clientId, stored] = next.value;
      if (!this.isExpired(clientTimeOfLine(stored))) continue;
      this.#lines.delete(clientId);
      this.#toggle(bucketOf(clientId), clientId, stored);
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
    for (const [clientId, stored] of this.#lines) {
      if (!this.isExpired(clientTimeOfLine(stored))) yield this.#line(clientId, stored);
    }
  }

  /**
   * The AT lines of the given digest buckets, as the map is walked (nothing
   * gathered first), expired ones left out; and an empty string after each
   * {@linkcode WALK_PAUSE_CLIENTS} clients walked: a caller may take a turn
   * there. (The lines of a few buckets are a few among a million clients:
   * a caller that takes a turn once its write is full walked them in one
   * go, 150 ms of a server's time.)
   */
  *linesInBuckets(buckets: ReadonlySet<number>): Generator<string, void, undefined> {
    if (buckets.size === 0) return;
    let walked = 0;
    for (const [clientId, stored] of this.#lines) {
      if (buckets.has(bucketOf(clientId)) && !this.isExpired(clientTimeOfLine(stored))) {
        yield this.#line(clientId, stored);
      }
      if (++walked === WALK_PAUSE_CLIENTS) {
        walked = 0;
        yield "";
      }
    }
  }
}
