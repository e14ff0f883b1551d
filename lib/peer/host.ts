/** What a server gives its peer links, inbound and outbound: the one seam between links and server. */

import type { HerdRecordRules, LocationRecord } from "../protocol.ts";
import type { Reconciler } from "./reconcile.ts";
import type { LinkReport } from "./tree.ts";

/** The server as its peer links see it; `HerdServer` implements it once. */
export interface PeerHost {
  /** This server's name, sent in the handshake. */
  readonly name: string;
  /** Reconciliation with the neighbours. */
  readonly reconciler: Reconciler;
  /** What a record from a neighbour must keep to. */
  readonly recordRules: HerdRecordRules;
  /**
   * Whether this server is shutting down: its links serve the replies still pending, and a neighbour going away
   * meanwhile (stopped with it, as a whole herd's Ctrl-C does) is no warning.
   */
  readonly stopping?: boolean;
  /** Whether `name` is a configured neighbour, so may link to us. */
  isNeighbour(name: string): boolean;
  /**
   * A live record from neighbour `from`, sent with `waitMs` to acknowledge
   * it. Returns a promise when the acknowledgement must wait for it (the
   * record passed on and acknowledged further), or, when it may be
   * acknowledged at once, whether it was stored (new to us).
   */
  receive(record: LocationRecord, from: string, waitMs: number): Promise<void> | boolean;
  /** A live record from `from` that is not newer than ours (`line`: as it came, or the line we hold for its client). */
  receiveNotNewer(from: string, line: string): false;
  /** A record `from` sent while reconciling: offered to the store and passed on if new; whether it was new. */
  catchUp(record: LocationRecord, from: string): boolean;
  /** A server's link state, passed on by neighbour `from` (peer/tree.ts). */
  linkState(report: LinkReport, from: string): void;
  /** `name` dialled us: it is back, so our own link to it should retry now. */
  dialledBy(name: string): void;
  /** A link `name` dialled to us has lasted a second: live, for our link state. */
  dialledByLasting(name: string): void;
  /** A link `name` dialled to us, announced by {@linkcode PeerHost.dialledByLasting}, closed. */
  dialledByClosed(name: string): void;
}
