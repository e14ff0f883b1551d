/**
 * The location store: the greatest record per client, in a `Map` from
 * client ID to its AT line, with the digest used for anti-entropy. Only the
 * line is kept, one flat string per client (the cheapest `Map` layout
 * measured: docs/PERFORMANCE.md, scenario 6); the other fields are read
 * back from it on demand. With the herd's server names given, a line is
 * packed: without the `AT `, the client ID (the key already holds it) and
 * the server's name (one character for it), its other fields two
 * characters to a character, and made whole again, to the byte, when it is
 * read. A new client's line is packed as it is stored; a line that replaces
 * another is packed by the next pass ({@linkcode LocationStore.pack}), if
 * it is still the client's then.
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
   * ones): the lines of records these servers took are packed (see
   * above); others are kept as they are.
   */
  servers?: Iterable<string>;
}

/**
 * Servers a packed line can name: one character each, `\x80` and on (a
 * whole line's first character is the `A` of its `AT`: every record's line
 * starts so, from a client, a neighbour or the database).
 */
const _MAX_PACKED_SERVERS = 128;
const _FIRST_MARK = 0x80;

/** The characters a packed line's fields are made of, by their four-bit code; 15 pads an odd count. */
const _SYMBOLS = "0123456789+-. ";
const _SPACE = 13;
const _PAD = 15;
/** Each character's four-bit code, by character code (below 128); -1 for a character that has none. */
const _CODES = new Int8Array(128).fill(-1);
for (let code = 0; code < _SYMBOLS.length; code++) _CODES[_SYMBOLS.charCodeAt(code)] = code;
/** Each four-bit code's character code. */
const _SYMBOL_CODES = Uint8Array.from(_SYMBOLS, (symbol) => symbol.charCodeAt(0));
/**
 * The longest line packed, in characters: a longer one is kept whole
 * (a packed line is made whole in one `String.fromCharCode.apply()`, whose
 * arguments are bounded, and such lines are not the herd's).
 */
const _MAX_PACKED_LINE = 1024;
/** A packed line's fields as character codes, for the digest (reused). */
const _units = new Uint8Array(_MAX_PACKED_LINE);

/**
 * A stored line in its packed form, or the line itself when it has none:
 * `<server's character><difference> <location> <client time>`, two
 * characters of those fields to each character after the first (the
 * digits, signs, points and spaces they are made of have four-bit codes).
 * Made only from a line of the herd's own form (`AT`, server, difference,
 * client, location, time, joined by single spaces, {@linkcode _MAX_PACKED_LINE}
 * characters at most) whose fields after the client have codes; the client
 * must be `clientId`.
 */
function _packedLine(line: string, clientId: string, marks: ReadonlyMap<string, number>): string {
  if (line.length > _MAX_PACKED_LINE || !line.startsWith("AT ")) return line;
  const afterServer = line.indexOf(" ", 3);
  if (afterServer < 0) return line;
  const mark = marks.get(line.slice(3, afterServer));
  if (mark === undefined) return line;
  const afterDifference = line.indexOf(" ", afterServer + 1);
  const afterClient = afterDifference + 1 + clientId.length;
  if (
    afterDifference < 0 || line.charCodeAt(afterClient) !== 32 ||
    !line.startsWith(clientId, afterDifference + 1)
  ) return line;
  // The difference and the space after it, then what follows the client. (An array of its final size, filled, is
  // the quickest way to one string measured here: a reused one, emptied each time, took twice as long.)
  const length = afterDifference - afterServer + line.length - afterClient - 1;
  const gathered = new Array<number>(1 + (length + 1 >> 1));
  gathered[0] = mark;
  let code = 0;
  let spaces = 0;
  for (let at = afterServer + 1; at < line.length; at = at === afterDifference ? afterClient + 1 : at + 1) {
    const character = line.charCodeAt(at);
    const symbol = character < 128 ? _CODES[character] : -1;
    if (symbol < 0) return line;
    if (symbol === _SPACE) spaces++;
    if ((code & 1) === 0) gathered[1 + (code >> 1)] = symbol << 4 | _PAD;
    else gathered[1 + (code >> 1)] ^= _PAD ^ symbol;
    code++;
  }
  // Six fields, no more and no fewer: the difference, the location and the time, with a space after each of the first
  // two (the reads of a packed line take its fields so).
  if (spaces !== 2) return line;
  // One flat string of one byte a character.
  return String.fromCharCode.apply(null, gathered);
}

/**
 * A new client's ID as a string of its own, to be a key of the map: V8
 * makes a slice of 13 characters or more a view of the string it was cut
 * from (the line it came in: a client's, or the copy of a neighbour's), and
 * a key kept that line for as long as its client was held (a million
 * clients of 23-character IDs: 182 B a client, 167 B with the copy).
 * Shorter slices are copies already. Not `ownCopy()` (protocol.ts): its
 * copy is handed out as a slice of it: a second string object a key.
 */
function _ownKey(clientId: string): string {
  if (clientId.length < 13) return clientId;
  if (clientId.length > 1024) return JSON.parse(JSON.stringify(clientId)); // too many for one apply()
  const codes = new Array<number>(clientId.length);
  for (let at = 0; at < clientId.length; at++) codes[at] = clientId.charCodeAt(at);
  return String.fromCharCode.apply(null, codes);
}

/** How many characters a packed line's fields are (its `<difference> <location> <client time>`). */
function _packedLength(stored: string): number {
  return 2 * (stored.length - 1) - ((stored.charCodeAt(stored.length - 1) & 15) === _PAD ? 1 : 0);
}

/** The whole AT line of `server`'s packed line of `clientId`, made in one go. */
function _unpackedLine(server: string, clientId: string, stored: string): string {
  const length = _packedLength(stored);
  const gathered = new Array<number>(5 + server.length + clientId.length + length);
  gathered[0] = 65; // AT
  gathered[1] = 84;
  gathered[2] = 32;
  let at = 3;
  for (let i = 0; i < server.length; i++) gathered[at++] = server.charCodeAt(i);
  gathered[at++] = 32;
  let client = true;
  for (let code = 0; code < length; code++) {
    const symbol = _symbolAt(stored, code);
    gathered[at++] = _SYMBOL_CODES[symbol];
    // The client's ID comes after the first space, and a space after it.
    if (symbol === _SPACE && client) {
      for (let i = 0; i < clientId.length; i++) gathered[at++] = clientId.charCodeAt(i);
      gathered[at++] = 32;
      client = false;
    }
  }
  return String.fromCharCode.apply(null, gathered);
}

/** Where a packed line's client time (its last field) starts, in four-bit codes. */
function _packedTimeStart(stored: string, length: number): number {
  let start = length;
  while (start > 0 && _symbolAt(stored, start - 1) !== _SPACE) start--;
  return start;
}

/** A packed line's client time (its last field), as text. */
function _packedTime(stored: string): string {
  const length = _packedLength(stored);
  const start = _packedTimeStart(stored, length);
  const gathered = new Array<number>(length - start);
  for (let code = start; code < length; code++) gathered[code - start] = _SYMBOL_CODES[_symbolAt(stored, code)];
  return String.fromCharCode.apply(null, gathered);
}

/**
 * {@linkcode compareDecimal} of a client time with a packed line's, read
 * where it lies when both are written alike (as long, the point at the same
 * place: the usual case), else unpacked.
 */
function _compareToPackedTime(time: string, stored: string): number {
  const length = _packedLength(stored);
  const start = _packedTimeStart(stored, length);
  if (length - start !== time.length) return compareDecimal(time, _packedTime(stored));
  let byText = 0;
  for (let at = 0; at < time.length; at++) {
    const ours = time.charCodeAt(at);
    const theirs = _SYMBOL_CODES[_symbolAt(stored, start + at)];
    if ((ours === 46) !== (theirs === 46)) return compareDecimal(time, _packedTime(stored));
    if (byText === 0 && ours !== theirs) byText = ours < theirs ? -1 : 1;
  }
  return byText;
}

/** The four-bit code at `code` in a packed line's fields. */
function _symbolAt(stored: string, code: number): number {
  const pair = stored.charCodeAt(1 + (code >> 1));
  return (code & 1) === 0 ? pair >> 4 : pair & 15;
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
  /** Each server's character code in a packed line, and the servers by that code less {@linkcode _FIRST_MARK}. */
  #marks = new Map<string, number>();
  #servers: string[] = [];
  /**
   * Clients whose line was replaced since the last {@linkcode startPacking}
   * (some twice), and those of the pass under way: the records' own IDs,
   * each a slice of its record's line at most, kept until its pass.
   */
  #toPack: string[] = [];
  #packing: string[] = [];

  /** An empty store; with `ttlS`, records expire by their client time. */
  constructor(options: LocationStoreOptions = {}) {
    this.#ttlNs = BigInt(options.ttlS ?? 0) * 1_000_000_000n;
    this.#nowNs = options.nowNs ?? nowNs;
    this.#cutoffMs = options.nowNs === undefined ? _CUTOFF_MS : 0;
    for (const server of options.servers ?? []) {
      if (this.#servers.length === _MAX_PACKED_SERVERS || this.#marks.has(server)) continue;
      this.#marks.set(server, _FIRST_MARK + this.#servers.length);
      this.#servers.push(server);
    }
  }

  /** The server a packed line names, or undefined for a line kept whole. */
  #serverOf(stored: string): string | undefined {
    return stored.charCodeAt(0) >= _FIRST_MARK ? this.#servers[stored.charCodeAt(0) - _FIRST_MARK] : undefined;
  }

  /** The whole AT line of a stored value (packed or not) of `clientId`. */
  #line(clientId: string, stored: string): string {
    const server = this.#serverOf(stored);
    return server === undefined ? stored : _unpackedLine(server, clientId, stored);
  }

  /** {@linkcode compareDecimal} of a client time with a stored value's (packed or not). */
  #compareTime(time: string, stored: string): number {
    return this.#serverOf(stored) === undefined
      ? compareDecimal(time, clientTimeOfLine(stored))
      : _compareToPackedTime(time, stored);
  }

  /** The client time of a stored value (packed or not). */
  #timeOf(stored: string): string {
    return this.#serverOf(stored) === undefined ? clientTimeOfLine(stored) : _packedTime(stored);
  }

  /** Whether a stored value (packed or not) has expired (never, without a TTL: its time is not unpacked then). */
  #expired(stored: string): boolean {
    return this.#ttlNs !== 0n && this.isExpired(this.#timeOf(stored));
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

  /** Takes a stored value's line (packed or not) in or out of the digest, without joining the whole line. */
  #toggle(bucket: number, clientId: string, stored: string): void {
    const server = this.#serverOf(stored);
    if (server === undefined) return this.digest.toggleIn(bucket, stored);
    // The fields' character codes, unpacked into a buffer kept for this (no string made).
    const length = _packedLength(stored);
    const units = _units;
    let afterDifference = -1;
    for (let code = 0; code < length; code++) {
      const symbol = _symbolAt(stored, code);
      units[code] = _SYMBOL_CODES[symbol];
      if (symbol === _SPACE && afterDifference < 0) afterDifference = code;
    }
    const digest = this.digest;
    digest.begin();
    digest.add("AT ", 0, 3);
    digest.add(server, 0, server.length);
    digest.add(" ", 0, 1);
    digest.addUnits(units, 0, afterDifference + 1);
    digest.add(clientId, 0, clientId.length);
    digest.addUnits(units, afterDifference, length);
    digest.end(bucket);
  }

  /**
   * Whether the line held for `clientId` (expired or not) is, to the byte,
   * the first `end` characters of `line`: compared where it lies, without
   * unpacking a packed one (this runs for every record a neighbour sends,
   * and flooding brings most of them twice).
   */
  holds(clientId: string, line: string, end: number): boolean {
    const stored = this.#lines.get(clientId);
    if (stored === undefined) return false;
    const server = this.#serverOf(stored);
    if (server === undefined) return stored.length === end && line.startsWith(stored);
    // AT <server> <difference> <client> <location> <time>, packed as <mark><difference> <location> <time>.
    const length = _packedLength(stored);
    if (end !== length + server.length + clientId.length + 5 || !line.startsWith("AT ")) return false;
    if (!line.startsWith(server, 3) || line.charCodeAt(3 + server.length) !== 32) return false;
    let at = 4 + server.length;
    let client = true;
    for (let code = 0; code < length; code++) {
      const symbol = _symbolAt(stored, code);
      if (line.charCodeAt(at++) !== _SYMBOL_CODES[symbol]) return false;
      // The client's ID comes after the first space, and a space after it.
      if (symbol === _SPACE && client) {
        if (!line.startsWith(clientId, at) || line.charCodeAt(at + clientId.length) !== 32) return false;
        at += clientId.length + 1;
        client = false;
      }
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
    // A WHATSAT asks this: the fields are sliced where the whole line has them, not split out of it.
    if (this.#expired(stored)) return undefined;
    const line = this.#line(clientId, stored);
    const afterClient = line.indexOf(" ", 4 + this.#serverOf(stored)!.length) + 1 + clientId.length;
    const afterLocation = line.indexOf(" ", afterClient + 1);
    return {
      line,
      clientId,
      location: line.slice(afterClient + 1, afterLocation),
      clientTime: line.slice(afterLocation + 1),
    };
  }

  /**
   * Stores `record` if it is greater than the one held for its client (and
   * not expired); returns whether it was stored.
   */
  offer(record: LocationRecord): boolean {
    const { clientId } = record;
    const stored = this.#lines.get(clientId);
    // The time first (compared where it lies in a packed line); the whole line only for a tie.
    if (stored !== undefined) {
      const byTime = this.#compareTime(record.clientTime, stored);
      if (byTime < 0) return false;
      if (byTime === 0 && compareToLine(record, this.#line(clientId, stored), record.clientTime) <= 0) return false;
    }
    if (this.isExpired(record.clientTime)) return false;
    // Hashed once the record is known to be stored: most floods arrive more than once, and the repeats stop above.
    const bucket = bucketOf(clientId);
    if (stored === undefined) {
      // A new client's line is packed at once: a start-up's load, or a million new clients, would otherwise leave as
      // many whole lines to outlive the young generation and die in the old one, and the heap large.
      const line = this.#marks.size === 0 ? record.line : _packedLine(record.line, clientId, this.#marks);
      this.#lines.set(_ownKey(clientId), line);
    } else {
      this.#toggle(bucket, clientId, stored);
      // Kept whole for now, and packed by a later pass if it is still the client's line then (a client's line
      // replaced within the pass's second is never packed). The map keeps its key, whatever string set() is given.
      this.#lines.set(clientId, record.line);
      if (this.#marks.size > 0) this.#toPack.push(clientId);
    }
    this.digest.toggleIn(bucket, record.line);
    return true;
  }

  /** Whether the line held for `clientId` is packed (for tests: the stored values are private). */
  isPacked(clientId: string): boolean {
    const stored = this.#lines.get(clientId);
    return stored !== undefined && this.#serverOf(stored) !== undefined;
  }

  /**
   * Starts a packing pass over the clients whose line was replaced since
   * the last one began (lines replaced from now on wait for the next),
   * unless one is under way; returns whether one started. The caller then
   * calls {@linkcode pack} until it returns false.
   */
  startPacking(): boolean {
    if (this.#packing.length > 0) return false;
    this.#packing = this.#toPack;
    this.#toPack = [];
    return this.#packing.length > 0;
  }

  /**
   * Packs the lines of up to `budget` of the pass's clients (those still
   * whole and of the herd's servers); returns whether the pass has more.
   * A pass of a million lines is so done in slices, never in one stall.
   */
  pack(budget: number): boolean {
    const clients = this.#packing;
    for (; budget > 0 && clients.length > 0; budget--) {
      const clientId = clients.pop()!;
      const stored = this.#lines.get(clientId);
      if (stored === undefined || this.#serverOf(stored) !== undefined) continue;
      const packed = _packedLine(stored, clientId, this.#marks);
      if (packed !== stored) this.#lines.set(clientId, packed);
    }
    return clients.length > 0;
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
      if (!this.#expired(stored)) continue;
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
      if (!this.#expired(stored)) yield this.#line(clientId, stored);
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
      if (buckets.has(bucketOf(clientId)) && !this.#expired(stored)) {
        yield this.#line(clientId, stored);
      }
      if (++walked === WALK_PAUSE_CLIENTS) {
        walked = 0;
        yield "";
      }
    }
  }
}
