/**
 * Broadcast trees (`peers.broadcast` `tree`): for each server of the herd,
 * the breadth-first spanning tree rooted at it of the links in use
 * (neighbours taken in the config's link order, so servers that know the
 * same links work out the same trees). A record travels down the tree of
 * the server that took its IAMAT (the server its AT line names): each
 * server sends it once, to its children, so each server gets it once where
 * flooding sends it over every link.
 *
 * Which links are in use is link state: each server reports the neighbours
 * it has a live link to that keeps up (`LINKS <server> <version> <names>`,
 * peer/wire.ts), floods its report to the herd whenever it changes, and
 * hands every report it holds to a neighbour whose link comes up. A record
 * goes from X to Y over X's own link to Y, so the trees take the link from
 * X to Y unless X reports it out, or Y reports no live link from X into it
 * (a server that can dial none of its neighbours cannot report that itself;
 * they report it for it, a link into them counting once it has lasted a
 * second, as their own links do). When a server
 * dies, its neighbours' links to it drop, their reports go round, and every
 * tree is worked out again without it: the servers below it hang from
 * another parent within a few milliseconds, where they got nothing until
 * the next reconciliation before. A server that cannot reach a child (link
 * down or lagging), or that gets a record from a server other than its
 * parent (someone upstream sees the links otherwise, or did the same),
 * floods it instead. And for a second after its link state last changed a
 * server floods every record (peer/links.ts `_SETTLE_MS`): a record handled
 * by two servers under two views of one change could otherwise miss a
 * third. A server whose packets are dropped rather than refused keeps its
 * connections open, so nobody reports them gone until they fall silent for
 * `peers.heartbeatTimeoutMs` (peer/heartbeat.ts). Records lost that way, or
 * left out by a server that got a change over a second late, are repaired
 * when the trees change: a server reconciles at once with a neighbour that
 * comes to hang below it (peer/links.ts `#treesChanged`), where they waited
 * for the next periodic reconciliation before (flooding, `peers.broadcast`
 * `flood`, never leaves them). A record also goes to every neighbour whose link is up
 * that the tree does not reach at all (peer/links.ts), so a stale report
 * of a server that can send none cannot cut it off.
 */

import { type HerdConfig, neighboursOf } from "../config/config.ts";

/**
 * One server's report of its links: the neighbours it has a link to that
 * it uses (up a second and keeping up), and the neighbours whose links into
 * it are live.
 */
export interface LinkReport {
  /** The reporting server. */
  server: string;
  /** Greater for a later report of the same server, across restarts (milliseconds since the epoch, or one more). */
  version: number;
  /** The neighbours whose links it uses. */
  up: readonly string[];
  /** The neighbours that have a live link into it. */
  inbound: readonly string[];
}

interface _Tree {
  parents: Map<string, string>;
  children: Map<string, string[]>;
}

/** The breadth-first trees of the herd's links in use, one per root. */
export class BroadcastTrees {
  /** Each server's configured neighbours, in link order. */
  #neighbours: Map<string, string[]>;
  /** The latest report of each server that sent one, with its links as sets. */
  #reports = new Map<string, { report: LinkReport; up: Set<string>; inbound: Set<string> }>();
  /** Trees worked out since the last change of a report, by root. */
  #trees = new Map<string, _Tree>();

  /** The trees of `config`'s graph, every link in use until a report says otherwise. */
  constructor(config: HerdConfig) {
    this.#neighbours = new Map([...config.servers.keys()].map((name) => [name, neighboursOf(config, name)]));
  }

  /** `server`'s parent in `root`'s tree; undefined for the root, or a server it does not reach. */
  parent(root: string, server: string): string | undefined {
    return this.#tree(root).parents.get(server);
  }

  /** `server`'s children in `root`'s tree (empty for a leaf, or a server it does not reach). */
  children(root: string, server: string): readonly string[] {
    return this.#tree(root).children.get(server) ?? [];
  }

  /** Whether `server` is one of the config's. */
  knows(server: string): boolean {
    return this.#neighbours.has(server);
  }

  /**
   * Takes `report` if it is later than the one held for its server (names
   * that are not its neighbours in our config are left out of the trees,
   * but not of the report held, which is passed on as it came: another
   * server's config may have them); returns whether it did, and so whether
   * it is news to pass on.
   */
  apply(report: LinkReport): boolean {
    const neighbours = this.#neighbours.get(report.server);
    if (neighbours === undefined) return false;
    const held = this.#reports.get(report.server);
    if (held !== undefined && held.report.version >= report.version) return false;
    const up = new Set(report.up.filter((name) => neighbours.includes(name)));
    const inbound = new Set(report.inbound.filter((name) => neighbours.includes(name)));
    this.#reports.set(report.server, { report, up, inbound });
    this.#trees.clear();
    return true;
  }

  /** The latest report of each server that sent one. */
  reports(): LinkReport[] {
    return [...this.#reports.values()].map(({ report }) => report);
  }

  /** Whether `from`'s link to `to` is in use: `from` does not report it out, nor `to` report it not live. */
  #inUse(from: string, to: string): boolean {
    return this.#reports.get(from)?.up.has(to) !== false && this.#reports.get(to)?.inbound.has(from) !== false;
  }

  #tree(root: string): _Tree {
    let tree = this.#trees.get(root);
    if (tree !== undefined) return tree;
    tree = { parents: new Map(), children: new Map() };
    if (this.#neighbours.has(root)) {
      const seen = new Set([root]);
      const queue = [root];
      for (let head = 0; head < queue.length; head++) {
        const at = queue[head];
        const below: string[] = [];
        for (const next of this.#neighbours.get(at)!) {
          if (seen.has(next) || !this.#inUse(at, next)) continue;
          seen.add(next);
          tree.parents.set(next, at);
          below.push(next);
          queue.push(next);
        }
        tree.children.set(at, below);
      }
    }
    this.#trees.set(root, tree);
    return tree;
  }
}
