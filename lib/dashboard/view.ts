/**
 * What the dashboard shows, worked out from what the servers' admin
 * endpoints answered (pure): each server's state and figures, each
 * configured link's state as its two ends report it, and the density cells
 * projected onto the world map.
 */

import type { DensityReport } from "../admin/density.ts";
import type { StatusReport } from "../admin/status.ts";
import { type HerdConfig, neighboursOf } from "../config/config.ts";
import { cellPath, type WorldDrawing } from "./map.ts";

/** What one server's `/status` gave: its report, or why there is none. */
export type StatusAnswer = { report: StatusReport } | { error: string };

/**
 * A server as the dashboard shows it: `up` (answering and healthy),
 * `unhealthy` (answering, not fit for clients), `down` (not answering) or
 * `unwatched` (no `adminPort` in the config).
 */
export type ServerState = "up" | "unhealthy" | "down" | "unwatched";

/** A link as the dashboard shows it; `unknown` when neither end has an admin port. */
export type LinkState = "up" | "lagging" | "down" | "unknown";

/** One server's row and node. */
export interface ServerView {
  /** Its name. */
  name: string;
  /** See {@linkcode ServerState}. */
  state: ServerState;
  /** Why it is not up (the health reason, or what failed), or "ok". */
  reason: string;
  /** Records held, or null when unknown. */
  records: number | null;
  /** Client commands per second over the last ten seconds, or null. */
  commandsPerSecond: number | null;
  /** 99th percentile reply time in milliseconds over the last ten seconds, or null. */
  replyP99Ms: number | null;
  /** Client connections open, or null. */
  clientConnections: number | null;
  /** Its store's fingerprint, or null. */
  digest: string | null;
  /** Whether its digest is the one most answering servers hold, or null when it did not answer. */
  digestAgrees: boolean | null;
  /** Seconds since it started, or null. */
  uptimeS: number | null;
  /** Its links that are not down, and its configured links. */
  links: { live: number; configured: number };
}

/** One configured link. */
export interface LinkView {
  /** Its two servers, as the config gives them. */
  ends: [string, string];
  /** The worse of what its two ends report (a down end makes it down). */
  state: LinkState;
  /** What each end says: its link state, "down" when it does not answer, null without an admin port. */
  reported: [LinkState | null, LinkState | null];
}

/** The herd at one moment. */
export interface HerdView {
  /** When the answers were gathered (ISO time). */
  at: string;
  /** Every server of the config, in config order. */
  servers: ServerView[];
  /** Every link of the config, in config order. */
  links: LinkView[];
  /** Whether every server answers, is healthy and holds the same records. */
  whole: boolean;
}

/** A density report projected onto the map. */
export interface DensityView {
  /** The server it came from. */
  from: string;
  /** When that server counted (ISO time), or null before its first count. */
  computedAt: string | null;
  /** Records counted. */
  records: number;
  /** A cell's size in degrees. */
  cellDegrees: number;
  /** The largest count of a cell (0 with none). */
  max: number;
  /** Each cell's grid position (as in {@linkcode DensityReport.cells}), outline on the map and count. */
  cells: { row: number; column: number; d: string; count: number }[];
}

const _WORSE: Record<LinkState, number> = { unknown: 0, up: 1, lagging: 2, down: 3 };

/** What `name`'s end says of its link to `neighbour`: see {@linkcode LinkView.reported}. */
function _endState(answer: StatusAnswer | undefined, neighbour: string): LinkState | null {
  if (answer === undefined) return null;
  if ("error" in answer) return "down";
  const link = answer.report.links.find((candidate) => candidate.neighbour === neighbour);
  // A server that answers but does not list a configured neighbour runs with another config.
  return link === undefined ? "down" : link.state;
}

/** The state of a link whose ends report `a` and `b`: the worse, unknown when neither reports. */
export function linkState(a: LinkState | null, b: LinkState | null): LinkState {
  if (a === null && b === null) return "unknown";
  if (a === null) return b!;
  if (b === null) return a;
  return _WORSE[a] >= _WORSE[b] ? a : b;
}

/** The digest most answering servers hold (the first such in config order on a tie), or null. */
function _commonDigest(answers: Map<string, StatusAnswer>): string | null {
  const counts = new Map<string, number>();
  for (const answer of answers.values()) {
    if ("report" in answer) counts.set(answer.report.digest, (counts.get(answer.report.digest) ?? 0) + 1);
  }
  let best: string | null = null;
  let bestCount = 0;
  for (const [digest, count] of counts) {
    if (count > bestCount) {
      best = digest;
      bestCount = count;
    }
  }
  return best;
}

/**
 * The herd as the answers show it. `answers` has an entry for each server
 * with an admin port; a server without one is `unwatched`.
 */
export function herdView(config: HerdConfig, answers: Map<string, StatusAnswer>, at: Date): HerdView {
  const links: LinkView[] = config.links.map(([a, b]) => {
    const reported: [LinkState | null, LinkState | null] = [_endState(answers.get(a), b), _endState(answers.get(b), a)];
    return { ends: [a, b], state: linkState(reported[0], reported[1]), reported };
  });
  const common = _commonDigest(answers);
  let whole = true;
  const servers: ServerView[] = [...config.servers.keys()].map((name) => {
    const configured = neighboursOf(config, name).length;
    const live = links.filter((link) => link.ends.includes(name) && link.state !== "down").length;
    const answer = answers.get(name);
    const empty = {
      records: null,
      commandsPerSecond: null,
      replyP99Ms: null,
      clientConnections: null,
      digest: null,
      digestAgrees: null,
      uptimeS: null,
      links: { live, configured },
    };
    if (answer === undefined) {
      whole = false;
      return { name, state: "unwatched", reason: "no adminPort in the config", ...empty };
    }
    if ("error" in answer) {
      whole = false;
      return { name, state: "down", reason: answer.error, ...empty };
    }
    const report = answer.report;
    const digestAgrees = report.digest === common;
    if (!report.health.ok || !digestAgrees) whole = false;
    return {
      name,
      state: report.health.ok ? "up" : "unhealthy",
      reason: report.health.reason,
      records: report.records,
      commandsPerSecond: report.rates.commandsPerSecond,
      replyP99Ms: report.rates.replyP99Ms,
      clientConnections: report.clientConnections,
      digest: report.digest,
      digestAgrees,
      uptimeS: report.uptimeS,
      links: { live, configured },
    };
  });
  return { at: at.toISOString(), servers, links, whole };
}

/** A density report's cells as outlines on `drawing`, with the largest count. */
export function densityView(drawing: WorldDrawing, report: DensityReport, from: string): DensityView {
  const cells: DensityView["cells"] = [];
  let max = 0;
  for (const [row, column, count] of report.cells) {
    const d = cellPath(drawing, row, column, report.cellDegrees);
    if (d === "") continue;
    cells.push({ row, column, d, count });
    if (count > max) max = count;
  }
  return { from, computedAt: report.computedAt, records: report.records, cellDegrees: report.cellDegrees, max, cells };
}
