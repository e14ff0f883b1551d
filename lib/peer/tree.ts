/**
 * Broadcast trees (`peers.broadcast` `tree`): for each server of the herd,
 * the breadth-first spanning tree of the config's graph rooted at it
 * (neighbours taken in link order, so every server works out the same
 * trees). A record travels down the tree of the server that took its IAMAT
 * (the server its AT line names): each server sends it once, to its
 * children, so each server gets it once where flooding sends it over every
 * link. A server that cannot reach a child (link down or lagging), or that
 * gets the record from a server other than its parent (someone upstream did
 * the same), floods it instead. That does not make the tree as good as
 * flooding under faults: a server below a dead or cut-off server of the
 * tree, which flooding would reach over another path, gets the record only
 * from the next reconciliation with a neighbour that has it (the lazy
 * repair PROTOCOL.md allows). Flooding is the default for that reason.
 */

import { type HerdConfig, neighboursOf } from "../config/config.ts";

/** The breadth-first trees of a herd's graph, one per root. */
export class BroadcastTrees {
  /** For each root, each server's parent in the root's tree (the root has none). */
  #parents = new Map<string, Map<string, string>>();
  /** For each root, each server's children in the root's tree. */
  #children = new Map<string, Map<string, string[]>>();

  /** The trees of `config`'s graph. */
  constructor(config: HerdConfig) {
    const neighbours = new Map([...config.servers.keys()].map((name) => [name, neighboursOf(config, name)]));
    for (const root of config.servers.keys()) {
      const parents = new Map<string, string>();
      const children = new Map<string, string[]>();
      const seen = new Set([root]);
      const queue = [root];
      for (let head = 0; head < queue.length; head++) {
        const at = queue[head];
        const below: string[] = [];
        for (const next of neighbours.get(at)!) {
          if (seen.has(next)) continue;
          seen.add(next);
          parents.set(next, at);
          below.push(next);
          queue.push(next);
        }
        children.set(at, below);
      }
      this.#parents.set(root, parents);
      this.#children.set(root, children);
    }
  }

  /** `server`'s parent in `root`'s tree; undefined for the root, or a server it does not reach. */
  parent(root: string, server: string): string | undefined {
    return this.#parents.get(root)?.get(server);
  }

  /** `server`'s children in `root`'s tree (empty for a leaf, or a server it does not reach). */
  children(root: string, server: string): readonly string[] {
    return this.#children.get(root)?.get(server) ?? [];
  }
}
