/**
 * Messages on a peer link, one per line. The dialer sends `HELLO <name>`
 * first, then records: the six-field AT line followed by two or three
 * fields of ours, a sequence number, how long the sender will wait for the
 * acknowledgement in milliseconds, and optionally the servers the record
 * is already sent to (its coverage: comma-separated names, the sender's
 * among them), which the receiver need not send it to (`peers.broadcast`
 * `pruned`; peer/links.ts). The acceptor answers each record sent
 * with a wait above 0 with `ACK <seq>` once it has handled it (stored it,
 * or found it old; with `peers.ackScope` "herd", passed it on and had it
 * acknowledged in turn). Records sent with a wait of 0 are not answered.
 *
 * Anti-entropy (peer/reconcile.ts): `DIGEST <hex>` starts an exchange,
 * answered by plain six-field AT lines (not acknowledged) and the other
 * side's `DIGEST <hex>`. A bare `DIGEST` asks for the acceptor's digest
 * alone (to watch convergence).
 */

import { parseDigestHex } from "../store/digest.ts";
import {
  type HerdRecordRules,
  type LocationRecord,
  parseHerdRecord,
  parseHerdRecordLine,
  splitFields,
} from "../protocol.ts";

/** A message received on a peer link. */
export type PeerMessage =
  | { kind: "HELLO"; name: string }
  | {
    kind: "RECORD";
    record: LocationRecord;
    seq: number | undefined;
    waitMs: number;
    /** The servers the sender says the record is already sent to (none said: undefined). */
    covered?: readonly string[];
  }
  | { kind: "ACK"; seq: number }
  | { kind: "DIGEST"; digest: Uint32Array }
  | { kind: "DIGEST?" }
  | { kind: "empty" }
  | { kind: "invalid"; reason: string };

const _COUNT = /^[0-9]{1,15}$/;

/** Longest line a peer may send: a digest is 16 KiB of hex. */
export const PEER_MAX_LINE_BYTES = 64 * 1024;

/** The first line a dialer sends. */
export function formatHello(name: string): string {
  return `HELLO ${name}\n`;
}

/** A record with its sequence number, acknowledgement wait and, if given, coverage (names joined by commas). */
export function formatRecord(record: LocationRecord, seq: number, waitMs: number, covered?: string): string {
  return covered === undefined ? `${record.line} ${seq} ${waitMs}\n` : `${record.line} ${seq} ${waitMs} ${covered}\n`;
}

/** The names of a coverage field, each a configured server and none twice; a string saying why not otherwise. */
function _parseCovered(field: string, servers: ReadonlySet<string>): string[] | string {
  const names = field.split(",");
  if (names.length > servers.size) return "its coverage names more servers than the herd has";
  for (let i = 0; i < names.length; i++) {
    if (!servers.has(names[i])) return "its coverage names a server not in the herd";
    if (names.indexOf(names[i]) !== i) return "its coverage names a server twice";
  }
  return names;
}

/** A digest of the sender's store. */
export function formatDigest(hex: string): string {
  return `DIGEST ${hex}\n`;
}

/** An acknowledgement. */
export function formatAck(seq: number): string {
  return `ACK ${seq}\n`;
}

const _INVALID = (reason: string): PeerMessage => ({ kind: "invalid", reason });

/** A live record's message from its parsed record and the fields after it: sequence, wait, and coverage if any. */
function _liveRecord(record: LocationRecord | string, tail: readonly string[], rules: HerdRecordRules): PeerMessage {
  const [seq, waitMs, coverage] = tail;
  if (!_COUNT.test(seq) || !_COUNT.test(waitMs)) return _INVALID("its sequence or wait is not a count");
  if (typeof record === "string") return _INVALID(record);
  if (coverage === undefined) return { kind: "RECORD", record, seq: Number(seq), waitMs: Number(waitMs) };
  const covered = _parseCovered(coverage, rules.servers);
  if (typeof covered === "string") return _INVALID(covered);
  return { kind: "RECORD", record, seq: Number(seq), waitMs: Number(waitMs), covered };
}

/** Parses one peer line (without its `\n`); records must keep to `rules` ({@linkcode parseHerdRecord}). */
export function parsePeerMessage(line: string, rules: HerdRecordRules): PeerMessage {
  // Records are most of what a link carries: read the herd's own way of writing them without splitting.
  const live = parseHerdRecordLine(line, 2, rules, 3);
  if (live !== undefined) return _liveRecord(live.record, live.tail, rules);
  const fields = splitFields(line);
  switch (fields[0]) {
    case undefined:
      return { kind: "empty" };
    case "HELLO":
      return fields.length === 2 ? { kind: "HELLO", name: fields[1] } : _INVALID("a HELLO takes one name");
    case "ACK":
      return fields.length === 2 && _COUNT.test(fields[1])
        ? { kind: "ACK", seq: Number(fields[1]) }
        : _INVALID("an ACK takes one sequence number");
    case "DIGEST": {
      if (fields.length === 1) return { kind: "DIGEST?" };
      const digest = fields.length === 2 ? parseDigestHex(fields[1]) : null;
      return digest === null ? _INVALID("not a digest") : { kind: "DIGEST", digest };
    }
    case "AT": {
      if (fields.length === 8 || fields.length === 9) {
        return _liveRecord(parseHerdRecord(fields.slice(0, 6), rules), fields.slice(6), rules);
      }
      const record = parseHerdRecord(fields, rules);
      if (typeof record === "string") return _INVALID(record);
      return { kind: "RECORD", record, seq: undefined, waitMs: 0 };
    }
    default:
      return _INVALID("not a peer message");
  }
}
