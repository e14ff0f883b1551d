/**
 * When deferred work runs within a turn of the event loop. Work scheduled
 * with `setImmediate` runs after the turn's I/O callbacks, in the order it
 * was scheduled; the herd's latency is in its network round trips (a flood
 * and its acknowledgement), so those writes go first, and the work nobody
 * on the wire is waiting on (the group commit, the traffic log) runs after
 * them, in the next turn, while the round trips are under way.
 */

import { setImmediate } from "node:timers";

/** Runs `fn` after the network writes scheduled this turn have been issued: one turn of the event loop later. */
export function afterNetworkWrites(fn: () => void): void {
  setImmediate(() => setImmediate(fn));
}
