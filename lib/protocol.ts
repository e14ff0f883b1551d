/**
 * The herd protocol as pure functions: parsing client commands and peer
 * records, formatting AT lines, and the total order on records. No I/O.
 */

import { compareDecimal, formatTimeDifference, isZeroDecimal, UNSIGNED_DECIMAL } from "./decimal.ts";

/** Field separators: ASCII space, tab, LF, VT, FF and CR only; Unicode spaces are ordinary characters. */
const ISO_6709 = /^([+-])([0-9]+(?:\.[0-9]+)?)([+-])([0-9]+(?:\.[0-9]+)?)$/;
const SIGNED_DECIMAL = /^[+-][0-9]+(?:\.[0-9]+)?$/;
/** A time difference as the herd writes it: a sign, whole seconds without leading zeros, exactly nine decimals. */
const HERD_DIFFERENCE = /^(?:\+0|[+-][1-9][0-9]*|-0(?=\.[0-9]*[1-9]))\.[0-9]{9}$/;
const INTEGER = /^[0-9]+$/;
const _encoder = new TextEncoder();

/** A client's location as the decimal strings it sent, sign included. */
export interface Location {
  /** Latitude, e.g. `+34.068930`. */
  latitude: string;
  /** Longitude, e.g. `-118.445127`. */
  longitude: string;
}

/** A location record: the AT line a server stores for a client, with the parts needed to order and use it. */
export interface LocationRecord {
  /** The whole AT line, six fields separated by single spaces. */
  line: string;
  /** The client ID. */
  clientId: string;
  /** The client's send time, an unsigned decimal. */
  clientTime: string;
  /** The location field as sent, e.g. `+34.068930-118.445127`. */
  location: string;
}

/** A parsed IAMAT command. */
export interface IamatCommand {
  /** What the command is. */
  kind: "IAMAT";
  /** The client ID. */
  clientId: string;
  /** The location field as sent. */
  location: string;
  /** The client's send time as sent. */
  clientTime: string;
}

/** A parsed WHATSAT command. */
export interface WhatsatCommand {
  /** What the command is. */
  kind: "WHATSAT";
  /** The client asked about. */
  clientId: string;
  /** Radius in km, an unsigned decimal in (0, 50]. */
  radiusKm: string;
  /** Upper bound on results, 0 to 20. */
  bound: number;
}

/** The most results a WHATSAT may ask for (PROTOCOL.md). */
export const MAX_WHATSAT_BOUND = 20;

/** What a client line is. `empty` lines are ignored; `invalid` ones get `? `. */
export type Command = IamatCommand | WhatsatCommand | { kind: "empty" } | { kind: "invalid" };

/** Splits a line into fields on ASCII whitespace. */
export function splitFields(line: string): string[] {
  // A scan, not a regex: this runs for every line a server reads.
  const fields: string[] = [];
  let start = -1;
  for (let i = 0; i < line.length; i++) {
    const code = line.charCodeAt(i);
    const separator = code === 32 || (code >= 9 && code <= 13);
    if (separator) {
      if (start >= 0) {
        fields.push(line.slice(start, i));
        start = -1;
      }
    } else if (start < 0) {
      start = i;
    }
  }
  if (start >= 0) fields.push(line.slice(start));
  return fields;
}

/**
 * {@linkcode splitFields}, faster on a line whose fields are joined by
 * single spaces, as in every line the herd writes (the database's rows at
 * start-up: half the time): split on them when that gives the same fields.
 */
export function splitSpacedFields(line: string): string[] {
  if (!_OTHER_WHITESPACE.test(line)) {
    const fields = line.split(" ");
    if (!fields.includes("")) return fields;
  }
  return splitFields(line);
}

function _inRange(degrees: string, limit: number): boolean {
  const point = degrees.indexOf(".");
  const whole = Number(point < 0 ? degrees : degrees.slice(0, point));
  if (whole < limit) return true;
  return whole === limit && isZeroDecimal(point < 0 ? "0" : "0" + degrees.slice(point));
}

/** Parses an ISO 6709 location like `+34.068930-118.445127`; null when malformed or out of range. */
export function parseLocation(text: string): Location | null {
  const match = ISO_6709.exec(text);
  if (match === null) return null;
  if (!_inRange(match[2], 90) || !_inRange(match[4], 180)) return null;
  return { latitude: match[1] + match[2], longitude: match[3] + match[4] };
}

/** Whether a client time is valid POSIX seconds: digits with an optional fraction, no sign or exponent. */
export function isClientTime(text: string): boolean {
  return UNSIGNED_DECIMAL.test(text);
}

/** Whether a WHATSAT radius is a decimal in (0, 50] km. */
export function isRadius(text: string): boolean {
  return UNSIGNED_DECIMAL.test(text) && !isZeroDecimal(text) && compareDecimal(text, "50") <= 0;
}

/** The longest client ID, in UTF-8 bytes, a server takes unless configured otherwise (`limits.maxClientIdBytes`). */
export const DEFAULT_MAX_CLIENT_ID_BYTES = 256;

/** Whether `text` is at most `maxBytes` bytes in UTF-8 (without encoding it when its length already says). */
export function fitsBytes(text: string, maxBytes: number): boolean {
  if (text.length * 3 <= maxBytes) return true; // a UTF-16 code unit is at most three UTF-8 bytes
  if (text.length > maxBytes) return false;
  return _encoder.encode(text).length <= maxBytes;
}

/**
 * Parses one client line (without its newline) into a command. A client ID
 * longer than `maxClientIdBytes` in UTF-8 makes the command invalid.
 */
export function parseCommand(line: string, maxClientIdBytes: number = DEFAULT_MAX_CLIENT_ID_BYTES): Command {
  const fields = splitFields(line);
  if (fields.length === 0) return { kind: "empty" };
  if (fields.length !== 4) return { kind: "invalid" };
  const [verb, clientId, a, b] = fields;
  if (!fitsBytes(clientId, maxClientIdBytes)) return { kind: "invalid" };
  if (verb === "IAMAT") {
    if (parseLocation(a) === null || !isClientTime(b)) return { kind: "invalid" };
    return { kind: "IAMAT", clientId, location: a, clientTime: b };
  }
  if (verb === "WHATSAT") {
    if (!isRadius(a) || !INTEGER.test(b)) return { kind: "invalid" };
    const bound = Number(b);
    if (bound > MAX_WHATSAT_BOUND) return { kind: "invalid" };
    return { kind: "WHATSAT", clientId, radiusKm: a, bound };
  }
  return { kind: "invalid" };
}

/** Builds the record a server stores and replies with for an IAMAT that arrived at `serverNs`. */
export function recordFromIamat(server: string, command: IamatCommand, serverNs: bigint): LocationRecord {
  const difference = formatTimeDifference(serverNs, command.clientTime);
  return {
    // join() makes one flat string; a template literal would keep a rope of six pieces in the store.
    line: ["AT", server, difference, command.clientId, command.location, command.clientTime].join(" "),
    clientId: command.clientId,
    clientTime: command.clientTime,
    location: command.location,
  };
}

/**
 * The record an AT line stands for, when the line is one the herd made
 * (six fields joined by single spaces, as {@linkcode recordFromIamat} and
 * {@linkcode parseRecordFields} build them): read back without checks.
 */
export function recordOfLine(line: string): LocationRecord {
  const fields = line.split(" ");
  return { line, clientId: fields[3], location: fields[4], clientTime: fields[5] };
}

/** The server an AT line the herd made names: the one that took its IAMAT (the second field). */
export function originOfLine(line: string): string {
  return line.slice(3, line.indexOf(" ", 3));
}

/** The client time of an AT line the herd made: its last field. */
export function clientTimeOfLine(line: string): string {
  return line.slice(line.lastIndexOf(" ") + 1);
}

/**
 * Parses an AT record from its fields (as received from a peer): `AT`,
 * server, time difference, client, location, client time. Fields after the
 * sixth are ours (see peer_wire.ts) and are not part of the record.
 */
export function parseRecordFields(fields: readonly string[]): LocationRecord | null {
  if (fields.length < 6 || fields[0] !== "AT") return null;
  const [, server, difference, clientId, location, clientTime] = fields;
  if (server === "" || !SIGNED_DECIMAL.test(difference)) return null;
  if (parseLocation(location) === null || !isClientTime(clientTime)) return null;
  return {
    line: ["AT", server, difference, clientId, location, clientTime].join(" "),
    clientId,
    clientTime,
    location,
  };
}

/** What a record from a peer must keep to, to be one the herd could have produced. */
export interface HerdRecordRules {
  /** The names a record may carry (the server that took its IAMAT): the herd's servers, and its retired ones. */
  servers: ReadonlySet<string>;
  /** Longest client ID in UTF-8 bytes. */
  maxClientIdBytes: number;
  /** Longest AT line in UTF-8 bytes. */
  maxLineBytes: number;
  /**
   * Whether the line the server holds for a client is, to the byte, the
   * first `end` characters of `line`: a record that is the held line is not newer, so {@linkcode parseHerdRecordLine}
   * reports it without checking it again (flooding brings most records to a
   * server twice); it is dropped either way. Such a line was checked when it
   * was stored, or when it was loaded from the database at start-up: rows
   * the config now refuses (a server since removed, a client ID or line over
   * a lowered limit) are left out at load (store/record_log.ts).
   */
  holds?: (clientId: string, line: string, end: number) => boolean;
}

const _UNKNOWN_SERVER = "names a server the herd does not have";
const _CLIENT_ID_TOO_LONG = "its client ID is too long";
const _LINE_TOO_LONG = "it is longer than a line may be";

/**
 * The reasons {@linkcode parseHerdRecord} gives that depend on the config,
 * not on the record's form (given only for a record of the herd's form): a
 * neighbour whose config differs (a server it has and we do not, a longer
 * client ID or line it allows) may hold such a record, pass it on, and send
 * it again at each reconciliation.
 */
export const CONFIG_REFUSALS: ReadonlySet<string> = new Set([_UNKNOWN_SERVER, _CLIENT_ID_TOO_LONG, _LINE_TOO_LONG]);

/**
 * Parses the six fields of an AT record from a peer, to the letter of what
 * the herd produces: a configured server, a difference with a sign and
 * exactly nine decimals, and a client ID, location and time an IAMAT
 * would accept (the clock skew allowance is checked only by the server
 * that took the IAMAT). Returns why not, in words, when it is not one.
 */
export function parseHerdRecord(fields: readonly string[], rules: HerdRecordRules): LocationRecord | string {
  if (fields.length !== 6 || fields[0] !== "AT") return "not a six-field AT record";
  const [, server, difference, clientId, location, clientTime] = fields;
  return _checkHerdRecord(
    ["AT", server, difference, clientId, location, clientTime].join(" "),
    server,
    difference,
    clientId,
    location,
    clientTime,
    rules,
  );
}

/** The checks of {@linkcode parseHerdRecord} on fields already split out of `line` (the record's own six fields). */
function _checkHerdRecord(
  line: string,
  server: string,
  difference: string,
  clientId: string,
  location: string,
  clientTime: string,
  rules: HerdRecordRules,
): LocationRecord | string {
  // The form first: a record refused for what the config says (CONFIG_REFUSALS) is otherwise one the herd writes.
  if (!HERD_DIFFERENCE.test(difference)) return "its time difference is not a sign, seconds and nine decimals";
  if (parseLocation(location) === null) return "its location is not valid ISO 6709 within range";
  if (!isClientTime(clientTime)) return "its client time is not POSIX seconds";
  if (!rules.servers.has(server)) return _UNKNOWN_SERVER;
  if (!fitsBytes(clientId, rules.maxClientIdBytes)) return _CLIENT_ID_TOO_LONG;
  if (!fitsBytes(line, rules.maxLineBytes)) return _LINE_TOO_LONG;
  return { line, clientId, clientTime, location };
}

/** ASCII whitespace other than the space: a line holding one is split the slow way. */
const _OTHER_WHITESPACE = /[\t\n\v\f\r]/;

/** A live record's line, read by {@linkcode parseLiveRecordLine}. */
export interface LiveRecordLine {
  /** The record; why it is not one, in words; or null when it is the line held for its client (`rules.holds`). */
  record: LocationRecord | string | null;
  /** The sequence number, or -1 when the field is not a count (1 to 15 digits). */
  seq: number;
  /** The wait in milliseconds, or -1 when the field is not a count. */
  waitMs: number;
}

/** A field of 1 to 15 decimal digits from `from` up to `to` as a number, or -1. */
function _count(line: string, from: number, to: number): number {
  if (to - from < 1 || to - from > 15) return -1;
  let value = 0;
  for (let i = from; i < to; i++) {
    const digit = line.charCodeAt(i) - 48;
    if (digit < 0 || digit > 9) return -1;
    value = value * 10 + digit;
  }
  return value;
}

/**
 * The first `end` characters of `line` as a string of their own. A slice
 * of a peer's line (13 characters or more: V8 copies shorter ones) is a
 * view of the whole read it came in (net/line_stream.ts decodes a read at
 * once), and a record and its fields live on in a link's queue, in the
 * store (a new client's ID is a key) or waiting for a commit: they must
 * not hold a read of hundreds of lines. A concatenation sliced is copied
 * into a string of its own (V8 flattens it); the slice views that copy.
 */
export function ownCopy(line: string, end: number = line.length): string {
  return (" " + line.slice(0, end)).slice(1);
}

/**
 * {@linkcode parseHerdRecord} straight from a live record's line, when the
 * line is written as the herd writes it: `AT` and its six fields joined by
 * single spaces, then the sequence number and the wait. Finds the fields by
 * their spaces, with no array and no second string for the record's line.
 * Returns undefined when the line is written any other way: the caller then
 * splits it.
 */
export function parseLiveRecordLine(line: string, rules: HerdRecordRules): LiveRecordLine | undefined {
  if (!line.startsWith("AT ") || _OTHER_WHITESPACE.test(line)) return undefined;
  // AT <server> <difference> <client> <location> <time> <seq> <wait>: the seven spaces after the first.
  const afterServer = line.indexOf(" ", 3);
  const afterDifference = afterServer < 0 ? -1 : line.indexOf(" ", afterServer + 1);
  const afterClient = afterDifference < 0 ? -1 : line.indexOf(" ", afterDifference + 1);
  const afterLocation = afterClient < 0 ? -1 : line.indexOf(" ", afterClient + 1);
  const afterTime = afterLocation < 0 ? -1 : line.indexOf(" ", afterLocation + 1);
  const afterSeq = afterTime < 0 ? -1 : line.indexOf(" ", afterTime + 1);
  if (afterSeq < 0 || line.indexOf(" ", afterSeq + 1) >= 0) return undefined;
  // An empty field: two spaces together, or one at either end.
  if (
    afterServer === 3 || afterDifference === afterServer + 1 || afterClient === afterDifference + 1 ||
    afterLocation === afterClient + 1 || afterTime === afterLocation + 1 || afterSeq === afterTime + 1 ||
    afterSeq === line.length - 1
  ) return undefined;
  const seq = _count(line, afterTime + 1, afterSeq);
  const waitMs = _count(line, afterSeq + 1, line.length);
  if (rules.holds?.(line.slice(afterDifference + 1, afterClient), line, afterTime)) {
    return { record: null, seq, waitMs };
  }
  // Every field of the record from the copy, none from the line: see ownCopy().
  const own = ownCopy(line, afterTime);
  const record = _checkHerdRecord(
    own,
    own.slice(3, afterServer),
    own.slice(afterServer + 1, afterDifference),
    own.slice(afterDifference + 1, afterClient),
    own.slice(afterClient + 1, afterLocation),
    own.slice(afterLocation + 1, afterTime),
    rules,
  );
  return { record, seq, waitMs };
}

/**
 * Where the first four fields after `AT` of an AT line end (the spaces
 * after the server, the difference, the client and the location), when
 * the line is written as the herd writes it: `AT` and its five fields
 * joined by single spaces, no other whitespace, no empty field, nothing
 * after the client time. Undefined for a line written any other way.
 */
function _atLineFieldEnds(line: string): [number, number, number, number] | undefined {
  if (!line.startsWith("AT ") || _OTHER_WHITESPACE.test(line)) return undefined;
  const afterServer = line.indexOf(" ", 3);
  const afterDifference = afterServer < 0 ? -1 : line.indexOf(" ", afterServer + 1);
  const afterClient = afterDifference < 0 ? -1 : line.indexOf(" ", afterDifference + 1);
  const afterLocation = afterClient < 0 ? -1 : line.indexOf(" ", afterClient + 1);
  if (afterLocation < 0 || line.indexOf(" ", afterLocation + 1) >= 0) return undefined;
  if (
    afterServer === 3 || afterDifference === afterServer + 1 || afterClient === afterDifference + 1 ||
    afterLocation === afterClient + 1 || afterLocation === line.length - 1
  ) return undefined;
  return [afterServer, afterDifference, afterClient, afterLocation];
}

/**
 * An AT line as a server's database holds it, parsed as
 * {@linkcode parseRecordFields} parses its fields (null when it is not a
 * record): a line written as the herd writes it (see
 * {@linkcode _atLineFieldEnds}) without an array of its fields, any
 * other by splitting it. A database of a million rows is read at each
 * start-up.
 */
export function parseStoredRecordLine(line: string): LocationRecord | null {
  const ends = _atLineFieldEnds(line);
  if (ends === undefined) return parseRecordFields(splitSpacedFields(line));
  const [afterServer, afterDifference, afterClient, afterLocation] = ends;
  // Every field from the copy, none from the line, a view of the chunk of thousands of rows it was read in: a line kept
  // whole (a store without packed lines keeps it) kept that chunk too (measured: 41 MB held by 50 lines of 1 MB chunks).
  const own = ownCopy(line);
  const difference = own.slice(afterServer + 1, afterDifference);
  const location = own.slice(afterClient + 1, afterLocation);
  const clientTime = own.slice(afterLocation + 1);
  if (!SIGNED_DECIMAL.test(difference) || parseLocation(location) === null || !isClientTime(clientTime)) return null;
  return { line: own, clientId: own.slice(afterDifference + 1, afterClient), clientTime, location };
}

/**
 * {@linkcode parseHerdRecord} straight from a reconciliation's record line
 * (`AT` and its six fields, no sequence number: what a catch-up carries, a
 * million lines at a time), when it is written as the herd writes it, with
 * single spaces: the fields found by their spaces, with no array and no
 * second string for the record's line. Returns undefined when the line is
 * written any other way: the caller then splits it.
 */
export function parseCatchUpRecordLine(line: string, rules: HerdRecordRules): LocationRecord | string | undefined {
  const ends = _atLineFieldEnds(line);
  if (ends === undefined) return undefined;
  const [afterServer, afterDifference, afterClient, afterLocation] = ends;
  // Every field from the copy, none from the line: see ownCopy().
  const own = ownCopy(line);
  return _checkHerdRecord(
    own,
    own.slice(3, afterServer),
    own.slice(afterServer + 1, afterDifference),
    own.slice(afterDifference + 1, afterClient),
    own.slice(afterClient + 1, afterLocation),
    own.slice(afterLocation + 1),
    rules,
  );
}

function _compareBytes(a: string, b: string): number {
  const x = _encoder.encode(a);
  const y = _encoder.encode(b);
  const n = Math.min(x.length, y.length);
  for (let i = 0; i < n; i++) {
    if (x[i] !== y[i]) return x[i] - y[i];
  }
  return x.length - y.length;
}

/**
 * The total order on records of one client: by client time (exact
 * decimal), then by the AT line compared as UTF-8 bytes.
 */
export function compareRecords(a: LocationRecord, b: LocationRecord): number {
  return compareToLine(a, b.line, b.clientTime);
}

/**
 * {@linkcode compareRecords} against a record of the same client held only
 * as its AT line (and that line's client time, {@linkcode clientTimeOfLine}).
 */
export function compareToLine(record: LocationRecord, line: string, clientTime: string): number {
  const byTime = compareDecimal(record.clientTime, clientTime);
  if (byTime !== 0) return byTime;
  return record.line === line ? 0 : _compareBytes(record.line, line);
}
