/**
 * Records a neighbour sends that our config refuses and its config allows:
 * of a server since taken out of the config or not yet in ours, a client ID
 * or a line over a limit lower than its. A neighbour whose config differs
 * (a change being rolled out one server at a time) passes such records on
 * as they come and sends them again at each digest exchange, so they are
 * dropped without counting toward closing the link, which would only be
 * dialled again; each is counted (`herd_peer_records_total{event=
 * "dropped_invalid"}`) and logged, 16 a second per link, the rest said in
 * one line once their second is over. One sent with a wait is answered
 * `SKIP <seq>`, not `ACK` (inbound.ts): we do not hold it, and the sender's
 * wait need not run out.
 */

import { metrics } from "../admin/metrics.ts";
import { LogBudget } from "../log_budget.ts";
import { cutForLog, log } from "../logging.ts";
import { CONFIG_REFUSALS } from "../protocol.ts";
import type { PeerMessage } from "./wire.ts";

/**
 * Whether `line` has the shape of a record as the herd writes it: `AT` and
 * five fields (sent after a digest exchange, or passed on with no wait), or
 * seven (a sequence number and a wait), each after one space.
 */
function _isRecordShape(line: string): boolean {
  if (!line.startsWith("AT ")) return false;
  let spaces = 0;
  for (let i = 0; i < line.length; i++) {
    const code = line.charCodeAt(i);
    // Any other whitespace separates fields too (splitFields), and the herd never writes it.
    if (code >= 9 && code <= 13) return false;
    if (code === 32 && ++spaces > 7) return false;
  }
  return spaces === 5 || spaces === 7;
}

/**
 * Why `message`, parsed from `line`, was refused, when it is a record of
 * the herd's form refused only for what our config says (dropped with
 * {@linkcode RefusedRecords.drop}, not counted toward closing the link);
 * otherwise undefined.
 */
export function configRefusal(message: PeerMessage, line: string): string | undefined {
  if (message.kind !== "invalid" || !CONFIG_REFUSALS.has(message.reason) || !_isRecordShape(line)) return undefined;
  return message.reason;
}

/** Records logged one by one per link each second. */
const _LOGGED_PER_SECOND = 16;

/** The refused records of one link, in one direction. */
export class RefusedRecords {
  #neighbour: () => string;
  #where: string;
  #dropped: (line: string) => void;
  #budget: LogBudget;

  /**
   * `neighbour` names the sender; `where` follows it in the log lines: ""
   * on a link it dialled to us, " on our link" on ours to it; `dropped` is
   * told of each line dropped (the neighbour holds that record:
   * peer/reconcile.ts).
   */
  constructor(neighbour: () => string, where: string, dropped: (line: string) => void) {
    this.#neighbour = neighbour;
    this.#where = where;
    this.#dropped = dropped;
    this.#budget = new LogBudget(_LOGGED_PER_SECOND, (count) => {
      log.peer.warning(
        "Dropped {count} more records from {neighbour}" + where +
          " that our config refuses (past {perSecond} a second they are counted)",
        { count, neighbour: this.#neighbour(), perSecond: _LOGGED_PER_SECOND },
      );
    });
  }

  /** Says how many were not logged one by one, if any, now: the link is closed. */
  close(): void {
    this.#budget.flush();
  }

  /** Drops `line`, refused for `reason`. */
  drop(reason: string, line: string): void {
    metrics.peerInvalid.inc();
    this.#dropped(line);
    if (!this.#budget.take()) return;
    log.peer.warning("Dropped a record from {neighbour}" + this.#where + " ({reason}): {line}", {
      neighbour: this.#neighbour(),
      reason,
      line: cutForLog(line),
    });
  }
}
