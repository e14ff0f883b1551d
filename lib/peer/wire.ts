/**
 * Messages on a peer link, one per line. The dialer sends `HELLO <name>`
 * first, then records: the six-field AT line followed by two fields of
 * ours, a sequence number and how long the sender will wait for the
 * acknowledgement in milliseconds. The acceptor answers each record sent
 * with a wait above 0 with `ACK <seq>` once it has handled it (stored it,
 * or found it old; with `peers.ackScope` "herd", passed it on and had it
 * acknowledged in turn), or with `SKIP <seq>` when it will not hold it:
 * its config refuses what the sender's allows (a change being rolled out;
 * peer/refused_records.ts). The sender's wait on it ends then, as on an
 * `ACK`, rather than running out and taking the link for lagging. Records
 * sent with a wait of 0 are not answered.
 *
 * An acceptor whose config does not have the dialer as a neighbour (one
 * config has a link the other has not yet: a change being rolled out)
 * answers its `HELLO` with `REFUSED not-a-neighbour` and closes; the dialer
 * then waits longer before it dials again (peer/outbound.ts).
 *
 * Anti-entropy (peer/reconcile.ts): `DIGEST <hex>` starts an exchange,
 * answered by plain six-field AT lines (not acknowledged) and the other
 * side's `DIGEST <hex>`. A bare `DIGEST` asks for the acceptor's digest
 * alone (to watch convergence).
 *
 * Flow control of those records (peer/bulk_window.ts): whichever end sends
 * them follows each slice with `MARK <n>`, which the other end answers with
 * `MARKED <n>` once it has handled every line before it (one answer a turn,
 * for its greatest mark); the sender keeps only a few slices unanswered.
 *
 * Heartbeats: a dialer that has heard nothing on its link for
 * `peers.heartbeatMs` sends `PING`, which the acceptor answers with `PONG`;
 * either end closes a link that has heard nothing for
 * `peers.heartbeatTimeoutMs` (outbound.ts, inbound.ts).
 *
 * Link state, with `peers.broadcast` `tree` (peer/tree.ts):
 * `LINKS <server> <version> <neighbour>,... <neighbour>,...` (`-` for
 * none) says which neighbours `server` has a link to that it uses, and
 * which have a live link into it, as of `version`. Sent by the dialer ahead of the records of the same write, so
 * a record never overtakes the link state it was routed by. A report is
 * passed on as it came, names our config does not have included.
 */

import { parseDigestHex } from "../store/digest.ts";
import type { LinkReport } from "./tree.ts";
import {
  type HerdRecordRules,
  type LocationRecord,
  ownCopy,
  parseCatchUpRecordLine,
  parseHerdRecord,
  parseLiveRecordLine,
  splitFields,
} from "../protocol.ts";

/** A message received on a peer link. */
export type PeerMessage =
  | { kind: "HELLO"; name: string }
  | { kind: "RECORD"; record: LocationRecord; seq: number | undefined; waitMs: number }
  /** A live record that is, to the byte, the line held for its client (`rules.holds`): not newer, not checked again. */
  | { kind: "HELD"; seq: number; waitMs: number }
  | { kind: "ACK"; seq: number }
  | { kind: "SKIP"; seq: number }
  | { kind: "DIGEST"; digest: Uint32Array }
  | { kind: "DIGEST?" }
  | { kind: "LINKS"; report: LinkReport }
  | { kind: "PING" }
  | { kind: "PONG" }
  | { kind: "MARK"; n: number }
  | { kind: "MARKED"; n: number }
  | { kind: "REFUSED"; reason: string }
  | { kind: "empty" }
  | { kind: "invalid"; reason: string };

const _COUNT = /^[0-9]{1,15}$/;

/** Longest line a peer may send: a digest is 16 KiB of hex. */
export const PEER_MAX_LINE_BYTES = 64 * 1024;

/** The first line a dialer sends. */
export function formatHello(name: string): string {
  return `HELLO ${name}\n`;
}

/** A record with its sequence number and acknowledgement wait. */
export function formatRecord(record: LocationRecord, seq: number, waitMs: number): string {
  return `${record.line} ${seq} ${waitMs}\n`;
}

/** {@linkcode formatRecord} as pieces pushed onto `parts`, for a batch joined once. */
export function pushRecord(parts: (string | number)[], record: LocationRecord, seq: number, waitMs: number): void {
  parts.push(record.line, " ", seq, " ", waitMs, "\n");
}

/** A digest of the sender's store. */
export function formatDigest(hex: string): string {
  return `DIGEST ${hex}\n`;
}

/** A server's link state (see above). */
export function formatLinks(report: LinkReport): string {
  const names = (list: readonly string[]) => list.length === 0 ? "-" : list.join(",");
  return `LINKS ${report.server} ${report.version} ${names(report.up)} ${names(report.inbound)}\n`;
}

/** A dialer's heartbeat. */
export const PING_LINE = "PING\n";

/** The acceptor's answer to a `HELLO` from a server its config does not have as a neighbour. */
export const NOT_A_NEIGHBOUR_LINE = "REFUSED not-a-neighbour\n";

/** The acceptor's answer to a heartbeat. */
export const PONG_LINE = "PONG\n";

/** A mark after a slice of a reconciliation's records (peer/bulk_window.ts). */
export function formatMark(n: number): string {
  return `MARK ${n}\n`;
}

/** The answer to the greatest `MARK` of a turn, once every line before it is handled. */
export function formatMarked(n: number): string {
  return `MARKED ${n}\n`;
}

/** An acknowledgement. */
export function formatAck(seq: number): string {
  return `ACK ${seq}\n`;
}

/** {@linkcode formatAck} as pieces pushed onto `parts`, for a batch joined once. */
export function pushAck(parts: (string | number)[], seq: number): void {
  parts.push("ACK ", seq, "\n");
}

const _INVALID = (reason: string): PeerMessage => ({ kind: "invalid", reason });

/** Parses one peer line (without its `\n`); records must keep to `rules` ({@linkcode parseHerdRecord}). */
export function parsePeerMessage(line: string, rules: HerdRecordRules): PeerMessage {
  // Records are most of what a link carries: read the herd's own way of writing them without splitting.
  const live = parseLiveRecordLine(line, rules);
  if (live !== undefined) {
    const { seq, waitMs } = live;
    if (seq < 0 || waitMs < 0) return _INVALID("its sequence or wait is not a count");
    if (typeof live.record === "string") return _INVALID(live.record);
    if (live.record === null) return { kind: "HELD", seq, waitMs };
    return { kind: "RECORD", record: live.record, seq, waitMs };
  }
  // Then a reconciliation's records, written the herd's way.
  const caughtUp = parseCatchUpRecordLine(line, rules);
  if (caughtUp !== undefined) {
    return typeof caughtUp === "string"
      ? _INVALID(caughtUp)
      : { kind: "RECORD", record: caughtUp, seq: undefined, waitMs: 0 };
  }
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
    case "SKIP":
      return fields.length === 2 && _COUNT.test(fields[1])
        ? { kind: "SKIP", seq: Number(fields[1]) }
        : _INVALID("a SKIP takes one sequence number");
    case "MARK":
    case "MARKED":
      return fields.length === 2 && _COUNT.test(fields[1]) && Number(fields[1]) >= 1
        ? { kind: fields[0], n: Number(fields[1]) }
        : _INVALID(`a ${fields[0]} takes one count from 1`);
    case "PING":
    case "PONG":
      return fields.length === 1 ? { kind: fields[0] } : _INVALID(`a ${fields[0]} takes nothing`);
    case "REFUSED":
      return fields.length === 2 ? { kind: "REFUSED", reason: fields[1] } : _INVALID("a REFUSED takes one reason");
    case "LINKS": {
      if (fields.length !== 5 || !_COUNT.test(fields[2])) {
        return _INVALID("a LINKS takes a server, a version and two lists of names");
      }
      const up = fields[3] === "-" ? [] : fields[3].split(",");
      const inbound = fields[4] === "-" ? [] : fields[4].split(",");
      if (up.includes("") || inbound.includes("")) return _INVALID("a LINKS has an empty name");
      // Names our config does not have are left to the link state (peer/links.ts, peer/tree.ts): another server's
      // config may have them, while a change is rolled out one server at a time.
      return { kind: "LINKS", report: { server: fields[1], version: Number(fields[2]), up, inbound } };
    }
    case "DIGEST": {
      if (fields.length === 1) return { kind: "DIGEST?" };
      const digest = fields.length === 2 ? parseDigestHex(fields[1]) : null;
      return digest === null ? _INVALID("not a digest") : { kind: "DIGEST", digest };
    }
    case "AT": {
      // A record's fields live on (see ownCopy()): split again from a copy of the line, not from a view of the read.
      const own = splitFields(ownCopy(line));
      if (own.length === 8) {
        if (!_COUNT.test(own[6]) || !_COUNT.test(own[7])) return _INVALID("its sequence or wait is not a count");
        const record = parseHerdRecord(own.slice(0, 6), rules);
        if (typeof record === "string") return _INVALID(record);
        return { kind: "RECORD", record, seq: Number(own[6]), waitMs: Number(own[7]) };
      }
      const record = parseHerdRecord(own, rules);
      if (typeof record === "string") return _INVALID(record);
      return { kind: "RECORD", record, seq: undefined, waitMs: 0 };
    }
    default:
      return _INVALID("not a peer message");
  }
}
