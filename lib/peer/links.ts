/**
 * A server's outbound links, one per neighbour: flooding a record to all of
 * them but the one it came from, passing reconciliation records on, and
 * picking a neighbour to reconcile with.
 */

import { type HerdConfig, neighboursOf, serverNamed } from "../config/config.ts";
import { metrics } from "../admin/metrics.ts";
import { cutForLog, log, quote } from "../logging.ts";
import { type LocationRecord, originOfLine } from "../protocol.ts";
import { traffic } from "../traffic_log.ts";
import type { PeerHost } from "./host.ts";
import { PeerLink } from "./outbound.ts";
import type { PeerTransport } from "./transport.ts";
import { BroadcastTrees, type LinkReport } from "./tree.ts";
import { formatLinks } from "./wire.ts";

const _SETTLED = Promise.resolve();

/**
 * How far ahead of our clock a link state report's version may be, in
 * milliseconds (versions are the reporting server's clock): a later one
 * would keep its server's real reports out until then.
 */
const _MAX_VERSION_AHEAD_MS = 60 * 60 * 1000;

/**
 * How long records are flooded after the link state last changed, in
 * milliseconds: while a change goes round the herd, servers that see the
 * links differently could leave a server out between them, and trees that
 * are being worked out again may run longer paths than flooding's first
 * arrival (a server that reads a record two hops from where it was taken,
 * at once, would not find it yet).
 */
const _SETTLE_MS = 1000;

/**
 * How long after a link's last reconciliation a repair may start on it, in
 * milliseconds: twice the least gap an acceptor keeps between two exchanges
 * on a link (peer/inbound.ts), so a repair is not refused for a request of
 * ours that reached the neighbour late.
 */
const _REPAIR_GAP_MS = 1000;

/** Links up to which a flood's log text is cached, keyed by a bit per link (in a 32-bit integer). */
const _MAX_KEYED_LINKS = 30;

/** A flood's log line's text before the record: from `from` (a client if undefined), forwarded to `names`. */
function _logPrefix(from: string | undefined, names: string): string {
  if (from === undefined) return `Forwarded to ${quote(names)}: `;
  return `From ${quote(from)}, stored${names === "" ? "" : `, forwarded to ${quote(names)}`}: `;
}

/** The links from one server to each of its neighbours. */
export class PeerLinks {
  #links = new Map<string, PeerLink>();
  #self: string;
  /** The broadcast trees, with `peers.broadcast` `tree`; flooding without them. */
  #trees: BroadcastTrees | undefined;
  /** The text of the log lines of floods, before the record: see {@linkcode PeerLinks.#logPrefix}. */
  #logPrefixes = new Map<number, string>();
  /** Each neighbour's place among the links, from 1. */
  #places = new Map<string, number>();
  /** Our own link state as last reported (with trees): the neighbours in use and linked into us, and its version. */
  #ownUp: string | undefined;
  /** Live links into us, by neighbour (a neighbour may have a new one before the old one is seen closed). */
  #inbound = new Map<string, number>();
  #ownVersion = 0;
  #ackTimeoutMs: number;
  /**
   * The targets of records (with trees), by origin and then by sender ("" for our own clients), until the trees or
   * our links change: a record costs two lookups, not a walk over the links and an array.
   */
  #targetCache = new Map<string, Map<string, readonly string[] | undefined>>();
  /** Until when (`performance.now()`) records are flooded, the link state having changed; 0 once past. */
  #floodUntil = 0;
  /** The herd's servers: the roots of the trees. */
  #roots: string[];
  /** Our children in each root's tree as the trees were last worked out (see {@linkcode PeerLinks.#treesChanged}). */
  #children = new Map<string, readonly string[]>();
  /** The servers each root's tree reached when the trees were last worked out. */
  #reached = new Map<string, Set<string>>();
  /** Our links that were in use when the trees were last worked out. */
  #wasInUse = new Set<string>();

  /** Makes a link to each neighbour of `host` in `config`, over `transport`; none dials until {@linkcode PeerLinks.start}. */
  constructor(host: PeerHost, config: HerdConfig, transport: PeerTransport) {
    const { reconnectMinMs, reconnectMaxMs, ackTimeoutMs, heartbeatMs, heartbeatTimeoutMs } = config.peers;
    this.#ackTimeoutMs = ackTimeoutMs;
    this.#self = host.name;
    this.#trees = config.peers.broadcast === "tree" ? new BroadcastTrees(config) : undefined;
    this.#roots = [...config.servers.keys()];
    // What the trees start from: every link taken to be in use, until reports say otherwise.
    for (const root of this.#trees === undefined ? [] : this.#roots) {
      this.#children.set(root, this.#trees!.children(root, this.#self));
      this.#reached.set(root, this.#reachedIn(root));
    }
    for (const neighbour of neighboursOf(config, host.name)) {
      const peer = serverNamed(config, neighbour);
      this.#places.set(neighbour, this.#links.size + 1);
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
          heartbeatMs,
          heartbeatTimeoutMs,
          onStateChange: () => this.#linksChanged(),
          greeting: () => this.#trees?.reports().map(formatLinks).join("") ?? "",
        }),
      );
    }
  }

  /** Whether records are flooded now: with `peers.broadcast` `flood`, or for a moment after the link state changed. */
  get flooding(): boolean {
    return this.#trees === undefined || performance.now() < this.#floodUntil;
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
   * One of our links came up, lasted, went down, turned lagging or caught up: with
   * trees, our link state is reported to the herd when it changed.
   */
  #linksChanged(): void {
    const trees = this.#trees;
    if (trees === undefined) return;
    this.#targetCache.clear();
    const up = [...this.#links].filter(([, link]) => link.inUse).map(([name]) => name);
    const inbound = [...this.#links.keys()].filter((name) => this.inboundLive(name));
    const state = `${up.join(",")} ${inbound.join(",")}`;
    if (state === this.#ownUp) return;
    this.#ownUp = state;
    // Later than any report of ours the herd may hold from before a restart, as long as the clock did not go back.
    this.#ownVersion = Math.max(this.#ownVersion + 1, Date.now());
    const report = { server: this.#self, version: this.#ownVersion, up, inbound };
    metrics.linkReportsOwn.inc();
    trees.apply(report);
    this.#floodUntil = performance.now() + _SETTLE_MS;
    this.#sendLinks(report, undefined);
    this.#treesChanged();
  }

  /** Whether a link `name` dialled into us has lasted a second and is open: part of our link state. */
  inboundLive(name: string): boolean {
    return (this.#inbound.get(name) ?? 0) > 0;
  }

  /** A link `name` dialled into us has lasted a second (+1), or one that had closed (-1): part of our link state. */
  inbound(name: string, change: 1 | -1): void {
    if (!this.#links.has(name)) return;
    this.#inbound.set(name, Math.max(0, (this.#inbound.get(name) ?? 0) + change));
    this.#linksChanged();
  }

  /**
   * A neighbour passed on `report` (a server's link state, peer/tree.ts):
   * taken and passed on to our other neighbours if it is news.
   */
  linkState(report: LinkReport, from: string): void {
    const trees = this.#trees;
    if (trees === undefined) return;
    if (!trees.knows(report.server)) {
      // A server our config does not have (yet, or any more): a config change being rolled out, not a bad line.
      metrics.linkReportsRefused.inc();
      return;
    }
    if (report.version > Date.now() + _MAX_VERSION_AHEAD_MS) {
      metrics.linkReportsRefused.inc();
      log.peer.warning("Dropped a link state report of {server} from {neighbour}: its version is from the future", {
        server: report.server,
        neighbour: from,
      });
      return;
    }
    if (report.server === this.#self) {
      metrics.linkReportsOld.inc();
      // Ours, from before a restart, and later than ours now (the clock went back): ours must be later still.
      if (report.version > this.#ownVersion) {
        this.#ownVersion = report.version;
        this.#ownUp = undefined;
        this.#linksChanged();
      }
      return;
    }
    if (trees.apply(report)) {
      this.#targetCache.clear();
      this.#floodUntil = performance.now() + _SETTLE_MS;
      metrics.linkReportsNew.inc();
      this.#sendLinks(report, from);
      this.#treesChanged();
    } else {
      metrics.linkReportsOld.inc();
    }
  }

  /**
   * The trees were worked out again: a neighbour that now hangs below us in
   * some server's tree, and did not, is reconciled with (a repair, over our
   * link to it, at most once a {@linkcode _REPAIR_GAP_MS}) if our link to it
   * was already in use. Records of that tree sent before the change went to
   * it some other way, and that way may have lost them: through a server
   * whose packets were black-holed while nobody could tell yet (its links
   * stay open until they fall silent), or past a server that saw the change
   * late. The exchange brings it what it lacks (an exchange it refuses still
   * does: we then send what its digest says it lacks), and it passes on what
   * was new to it, so the servers below it get them too; without the repair
   * they waited for the next reconciliation. A link not in use before got
   * every record we passed on since it came up (see
   * {@linkcode PeerLinks.#targetsOf}), and the exchange it came up with
   * covers the rest: coming into use is not a reason.
   */
  #treesChanged(): void {
    const trees = this.#trees!;
    const due = new Set<string>();
    for (const root of this.#roots) {
      const children = trees.children(root, this.#self);
      const before = this.#children.get(root) ?? [];
      const reachedBefore = this.#reached.get(root);
      this.#children.set(root, children);
      this.#reached.set(root, this.#reachedIn(root));
      for (const child of children) {
        if (!before.includes(child) && this.#wasInUse.has(child) && reachedBefore?.has(child)) due.add(child);
      }
    }
    this.#wasInUse = new Set([...this.#links].filter(([, link]) => link.inUse).map(([name]) => name));
    for (const name of due) this.#links.get(name)?.repair(_REPAIR_GAP_MS);
  }

  /** The servers `root`'s tree reaches, `root` among them. */
  #reachedIn(root: string): Set<string> {
    return new Set(this.#roots.filter((name) => name === root || this.#trees!.parent(root, name) !== undefined));
  }

  /** Sends a link state report to every neighbour but `from`. */
  #sendLinks(report: LinkReport, from: string | undefined): void {
    const line = formatLinks(report);
    for (const [name, link] of this.#links) if (name !== from) link.sendLinks(report.server, line);
  }

  /**
   * Down the broadcast tree of the record's origin, the neighbours to send a
   * record that came from `from` (undefined: our own IAMAT) to (undefined:
   * flooding, as for {@linkcode _SETTLE_MS} after the link state changed): our children
   * in that tree when it came from our parent there and every child's link
   * is up and keeping up; otherwise every neighbour but `from` (flooding).
   * With the tree, the record also goes to the neighbours whose links are up
   * but not in use (new, or lagging): left out of our link state, they are
   * in no tree through us, and our own records are also how a lagging one
   * catches up (a link stops lagging once a record it is waited on for is
   * acknowledged in time); and to the neighbours the tree does not reach at
   * all, whose link is up.
   */
  #targets(record: LocationRecord, from: string | undefined): readonly string[] | undefined {
    if (this.#trees === undefined) return undefined;
    if (this.#floodUntil !== 0) {
      if (performance.now() < this.#floodUntil) return undefined;
      this.#floodUntil = 0;
    }
    const origin = originOfLine(record.line);
    let byOrigin = this.#targetCache.get(origin);
    if (byOrigin === undefined) this.#targetCache.set(origin, byOrigin = new Map());
    const sender = from ?? "";
    if (byOrigin.has(sender)) return byOrigin.get(sender);
    const targets = this.#targetsOf(origin, from);
    byOrigin.set(sender, targets);
    return targets;
  }

  /** {@linkcode PeerLinks.#targets}, worked out. */
  #targetsOf(origin: string, from: string | undefined): readonly string[] | undefined {
    const trees = this.#trees!;
    if (from === undefined ? origin !== this.#self : trees.parent(origin, this.#self) !== from) return undefined;
    const children = trees.children(origin, this.#self);
    for (const child of children) {
      const link = this.#links.get(child);
      if (link === undefined || !link.inUse) return undefined;
    }
    // Also to a neighbour our link reaches that the tree does not: its link is not in use, or the trees leave it out
    // (a report of it that went stale, say, while it could dial nobody to send a newer one).
    let extra: string[] | undefined;
    for (const [name, link] of this.#links) {
      if (!link.up || name === from || children.includes(name)) continue;
      if (!link.inUse || (name !== origin && trees.parent(origin, name) === undefined)) {
        (extra ??= [...children]).push(name);
      }
    }
    return extra ?? children;
  }

  /**
   * Sends a stored record on: down its broadcast tree, or to every
   * neighbour but `from` (see {@linkcode PeerLinks.#targets}). With `waitMs`
   * > 0, resolves once each live one acknowledged it or `waitMs` passed;
   * with 0 the records go unacknowledged and the promise is already settled.
   * Logs the record: stored (from a peer) and where it went.
   */
  flood(record: LocationRecord, from: string | undefined, waitMs: number): Promise<void> {
    if (waitMs <= 0) {
      this.forward(record, from, 0);
      return _SETTLED;
    }
    return new Promise<void>((resolve) => {
      let waits = 1;
      const release = () => {
        if (--waits === 0) resolve();
      };
      waits += this.forward(record, from, waitMs, release);
      release();
    });
  }

  /**
   * {@linkcode PeerLinks.flood} with a callback: `release` is called once
   * for each neighbour that will acknowledge the record (or run out of
   * `waitMs`), and the count of them is returned. No promise per neighbour
   * and record: a server waits on its neighbours for every IAMAT.
   */
  forward(record: LocationRecord, from: string | undefined, waitMs: number, release?: () => void): number {
    let waits = 0;
    const targets = this.#targets(record, from);
    /** Which links it went to, a bit per link in the order of #links (the key of its log line's text), or by name. */
    let to = 0;
    let bit = 1;
    let names: string[] | undefined;
    const wide = this.#links.size > _MAX_KEYED_LINKS;
    for (const [name, link] of this.#links) {
      bit <<= 1;
      if (name === from || (targets !== undefined && !targets.includes(name))) continue;
      if (!link.up) {
        if (traffic.debug) traffic.event("peer", `Not forwarded to ${quote(name)}: link down`, "DBG");
        continue;
      }
      if (wide) (names ??= []).push(name);
      else to |= bit;
      metrics.forwardedLive.inc();
      // To a lagging neighbour a record passed on with no wait still asks for an acknowledgement (nobody waits on
      // it): one in time is how the link catches up, and a server without clients of its own has no other records.
      const wait = waitMs > 0 || !link.lagging ? waitMs : this.#ackTimeoutMs;
      if (link.sendAcknowledged(record, wait, release)) waits++;
    }
    // PROTOCOL.md: records received and forwarded are logged, each with its line, one line per record stored (a link's
    // write is counted too at debug, or when it carries reconciliation records: outbound.ts). A record from a client
    // was logged as its IAMAT.
    if (from !== undefined || to !== 0 || names !== undefined) {
      const prefix = wide ? _logPrefix(from, names?.join(",") ?? "") : this.#logPrefix(from, to);
      traffic.event("peer", prefix + quote(cutForLog(record.line)));
    }
    return waits;
  }

  /** The log line's text before the record, for a record from `from` sent over the links of `to`'s bits. */
  #logPrefix(from: string | undefined, to: number): string {
    // From one of a few neighbours (or a client) to one of a few sets of them: made once each, not once per record.
    // The key is a number (no string made per record): the sender's place among the links (0: a client), and `to`.
    const sender = from === undefined ? 0 : this.#places.get(from);
    const key = sender === undefined ? undefined : sender * 2 ** (this.#links.size + 1) + to;
    let prefix = key === undefined ? undefined : this.#logPrefixes.get(key);
    if (prefix === undefined) {
      prefix = _logPrefix(from, [...this.#links.keys()].filter((_, i) => (to & (2 << i)) !== 0).join(","));
      if (key !== undefined) this.#logPrefixes.set(key, prefix);
    }
    return prefix;
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
