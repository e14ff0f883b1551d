/**
 * A server's outbound links, one per neighbour: flooding a record to all of
 * them but the one it came from, passing reconciliation records on, and
 * picking a neighbour to reconcile with.
 */

import { type HerdConfig, neighboursOf, serverNamed } from "../config/config.ts";
import { metrics } from "../admin/metrics.ts";
import { cutForLog, quote } from "../logging.ts";
import { type LocationRecord, originOfLine } from "../protocol.ts";
import { traffic } from "../traffic_log.ts";
import type { PeerHost } from "./host.ts";
import { PeerLink } from "./outbound.ts";
import type { PeerTransport } from "./transport.ts";
import { BroadcastTrees } from "./tree.ts";

const _SETTLED = Promise.resolve();
const _nothing = () => {};

/** The links from one server to each of its neighbours. */
export class PeerLinks {
  #links = new Map<string, PeerLink>();
  #self: string;
  /** The broadcast trees, with `peers.broadcast` `tree`; flooding without them. */
  #trees: BroadcastTrees | undefined;

  /** Makes a link to each neighbour of `host` in `config`, over `transport`; none dials until {@linkcode PeerLinks.start}. */
  constructor(host: PeerHost, config: HerdConfig, transport: PeerTransport) {
    const { reconnectMinMs, reconnectMaxMs, ackTimeoutMs } = config.peers;
    this.#self = host.name;
    this.#trees = config.peers.broadcast === "tree" ? new BroadcastTrees(config) : undefined;
    for (const neighbour of neighboursOf(config, host.name)) {
      const peer = serverNamed(config, neighbour);
      this.#links.set(
        neighbour,
        new PeerLink({
          host,
          transport,
          neighbour,
          dialHost: peer.peerDialHost,
          dialPort: peer.peerDialPort,
          reconnectMinMs,
          reconnectMaxMs,
          ackTimeoutMs,
        }),
      );
    }
  }

  /** Whether `name` is a neighbour. */
  has(name: string): boolean {
    return this.#links.has(name);
  }

  /** The link to each neighbour, by name. */
  get all(): ReadonlyMap<string, PeerLink> {
    return this.#links;
  }

  /** Starts dialling every neighbour. */
  start(): void {
    for (const link of this.#links.values()) link.start();
  }

  /** `name` dialled us, so it is back: our link to it retries now. */
  poke(name: string): void {
    this.#links.get(name)?.poke();
  }

  /**
   * Down the broadcast tree of the record's origin, the neighbours to send a
   * record that came from `from` (undefined: our own IAMAT) to: our children
   * in that tree when it came from our parent there and every child's link
   * is up and keeping up; otherwise every neighbour but `from` (flooding).
   */
  #targets(record: LocationRecord, from: string | undefined): readonly string[] | undefined {
    const trees = this.#trees;
    if (trees === undefined) return undefined;
    const origin = originOfLine(record.line);
    if (from === undefined ? origin !== this.#self : trees.parent(origin, this.#self) !== from) return undefined;
    const children = trees.children(origin, this.#self);
    for (const child of children) {
      const link = this.#links.get(child);
      if (link === undefined || !link.up || link.lagging) return undefined;
    }
    return children;
  }

  /**
   * Sends a stored record on: down its broadcast tree, or to every
   * neighbour but `from` (see {@linkcode PeerLinks.#targets}). With `waitMs`
   * > 0, resolves once each live one acknowledged it or `waitMs` passed;
   * with 0 the records go unacknowledged and the promise is already settled.
   * Logs the record: stored (from a peer) and where it went.
   */
  flood(record: LocationRecord, from: string | undefined, waitMs: number): Promise<void> {
    const sends: Promise<void>[] = [];
    const targets = this.#targets(record, from);
    let to = "";
    for (const [name, link] of this.#links) {
      if (name === from || (targets !== undefined && !targets.includes(name))) continue;
      if (!link.up) {
        if (traffic.debug) traffic.event("peer", `Not forwarded to ${quote(name)}: link down`, "DBG");
        continue;
      }
      to += to === "" ? name : "," + name;
      metrics.forwardedLive.inc();
      const sent = link.sendAcknowledged(record, waitMs);
      if (sent !== undefined) sends.push(sent);
    }
    // PROTOCOL.md: records received and forwarded are logged, each with its line, one line per record stored (a link's
    // write is counted too at debug, or when it carries reconciliation records: outbound.ts). A record from a client
    // was logged as its IAMAT.
    if (from !== undefined) {
      const forwarded = to === "" ? "" : `, forwarded to ${quote(to)}`;
      traffic.event("peer", `From ${quote(from)}, stored${forwarded}: ${quote(cutForLog(record.line))}`);
    } else if (to !== "") {
      traffic.event("peer", `Forwarded to ${quote(to)}: ${quote(cutForLog(record.line))}`);
    }
    return sends.length === 0 ? _SETTLED : Promise.all(sends).then(_nothing);
  }

  /** Passes a record learnt by reconciling with `from` on to every other neighbour, as a reconciliation record. */
  passOn(record: LocationRecord, from: string): void {
    for (const [name, link] of this.#links) {
      if (name === from || !link.up) continue;
      metrics.forwardedReconciling.inc();
      link.sendUnacknowledged(record);
    }
  }

  /**
   * Reconciles with one live neighbour, chosen at random among those not
   * reconciled with for `intervalMs` (a neighbour allows one exchange per
   * link per interval), to repair anything lost in flight.
   */
  reconcileWithOne(intervalMs: number): void {
    const live = [...this.#links.values()].filter((link) => link.up && link.sinceReconciled >= intervalMs);
    if (live.length > 0) live[Math.floor(Math.random() * live.length)].reconcile();
  }

  /** Closes every link for good. */
  async close(): Promise<void> {
    await Promise.all([...this.#links.values()].map((link) => link.close()));
  }
}
