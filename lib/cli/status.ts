/**
 * `deno task status`: asks every server of the config for its `/status`
 * (at once, each with a short timeout) and prints one table: each server up
 * or down, its records, whether its digest equals the others', links up of
 * links configured, commands per second, p99 reply time and Places
 * provider. A server without an admin port can only be seen to accept
 * connections on its client port. The exit status is 0 when every server is
 * up (and healthy, where it can say) and all digests agree, 1 otherwise, so
 * scripts and CI can use it.
 */

import { adminUrl, askAdminJson, unauthorizedMessage } from "../admin/ask.ts";
import { isStatusReport, type StatusReport } from "../admin/status.ts";
import { type HerdConfig, neighboursOf, netAddress } from "../config/config.ts";

/** How long one server has to answer, in milliseconds. */
const _TIMEOUT_MS = 800;

/**
 * What one server said, or why it said nothing; one without an admin port,
 * whether its client port accepts. An error's `state` is `down` unless
 * something answered (a refusal, or not a herd server's status): then
 * `unknown`.
 */
export type ServerAnswer =
  | { name: string; report: StatusReport }
  | { name: string; clientPortAccepts: true }
  | { name: string; error: string; state?: "down" | "unknown" };

/** The admin addresses (`host:adminPort`) of the config's servers that have one. */
export function adminAddresses(config: HerdConfig): string[] {
  const addresses: string[] = [];
  for (const server of config.servers.values()) {
    if (server.adminPort !== undefined) addresses.push(netAddress(server.host, server.adminPort));
  }
  return addresses;
}

/**
 * The client addresses (`host:port`) of the config's servers without an
 * admin port: status can only tell whether those accept connections.
 */
export function clientAddressesWithoutAdmin(config: HerdConfig): string[] {
  const addresses: string[] = [];
  for (const server of config.servers.values()) {
    if (server.adminPort === undefined) addresses.push(netAddress(server.host, server.port));
  }
  return addresses;
}

/** Whether `host:port` accepts a connection within the timeout (closed at once, nothing sent). */
async function _accepts(host: string, port: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const connecting = Deno.connect({ hostname: host, port }); // the config's hosts: IPv6 without brackets
  try {
    const conn = await Promise.race([
      connecting,
      new Promise<undefined>((resolve) => timer = setTimeout(() => resolve(undefined), _TIMEOUT_MS)),
    ]);
    if (conn === undefined) {
      connecting.then((late) => late.close(), () => {});
      return false;
    }
    conn.close();
    return true;
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}

/** Asks every server for its status; never rejects. */
export async function askServers(config: HerdConfig, token: string | undefined): Promise<ServerAnswer[]> {
  return await Promise.all([...config.servers].map(async ([name, server]): Promise<ServerAnswer> => {
    if (server.adminPort === undefined) {
      return await _accepts(server.host, server.port)
        ? { name, clientPortAccepts: true }
        : { name, error: "no adminPort in the config; its client port is not reachable" };
    }
    const answer = await askAdminJson(
      adminUrl(server.host, server.adminPort, "/status"),
      token,
      _TIMEOUT_MS,
      isStatusReport,
    );
    if (answer.ok) return { name, report: answer.value };
    switch (answer.failure) {
      case "http":
        if (answer.status === 401) {
          return { name, error: unauthorizedMessage(token), state: "unknown" };
        }
        // Something answered: not down, whatever it is (a herd server's own errors, 503 when it holds 64
        // connections, say, are rare).
        if (answer.status === 404) {
          return { name, error: "HTTP 404: it has no /status: another program on its adminPort?", state: "unknown" };
        }
        return { name, error: `HTTP ${answer.status}`, state: "unknown" };
      case "not-json":
        return { name, error: "its /status is not JSON: another program on its adminPort?", state: "unknown" };
      case "not-herd":
        return {
          name,
          error: "its /status is not a herd server's status: another program on its adminPort?",
          state: "unknown",
        };
      case "timeout":
        return { name, error: `no answer within ${_TIMEOUT_MS} ms` };
      case "unreachable":
        return { name, error: "not reachable" };
    }
  }));
}

/** The table, and whether the herd is whole: every server up and healthy, every digest equal. */
export function statusTable(config: HerdConfig, answers: ServerAnswer[]): { text: string; whole: boolean } {
  const digests = new Map<string, number>();
  for (const answer of answers) {
    if ("report" in answer) digests.set(answer.report.digest, (digests.get(answer.report.digest) ?? 0) + 1);
  }
  // The digest most servers hold is the reference; a server that differs from it is marked.
  const common = [...digests].sort((a, b) => b[1] - a[1])[0]?.[0];
  const rows: string[][] = [["server", "state", "records", "digest", "links", "cmd/s", "p99 ms", "places"]];
  let whole = true;
  for (const answer of answers) {
    const configured = neighboursOf(config, answer.name).length;
    if ("error" in answer) {
      whole = false;
      rows.push([
        answer.name,
        `${answer.state ?? "down"} (${answer.error})`,
        "-",
        "-",
        `-/${configured}`,
        "-",
        "-",
        "-",
      ]);
      continue;
    }
    if ("clientPortAccepts" in answer) {
      // Up as far as anyone can tell without an admin port: its records, links and digest are not known.
      rows.push([
        answer.name,
        "up (no adminPort: its client port accepts)",
        "-",
        "-",
        `?/${configured}`,
        "-",
        "-",
        "-",
      ]);
      continue;
    }
    const report = answer.report;
    const up = report.links.filter((link) => link.state !== "down").length;
    const same = report.digest === common;
    if (!report.health.ok || !same) whole = false;
    rows.push([
      answer.name,
      report.health.ok ? "up" : `unhealthy (${report.health.reason})`,
      String(report.records),
      `${report.digest} ${same ? "=" : "differs"}`,
      `${up}/${configured}`,
      report.rates.commandsPerSecond.toFixed(1),
      report.rates.replyP99Ms === null ? "-" : String(report.rates.replyP99Ms),
      report.places.provider,
    ]);
  }
  const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => row[column].length)));
  const numeric = new Set([2, 5, 6]);
  const text = rows.map((row) =>
    row.map((cell, column) => numeric.has(column) ? cell.padStart(widths[column]) : cell.padEnd(widths[column]))
      .join("  ").trimEnd()
  ).join("\n");
  const upCount =
    answers.filter((answer) => "clientPortAccepts" in answer || ("report" in answer && answer.report.health.ok)).length;
  const unknown = answers.filter((answer) => "clientPortAccepts" in answer).length;
  const summary = whole && unknown === answers.length
    ? `All ${answers.length} servers up (none has an admin port: only their client ports checked).`
    : whole && unknown > 0
    ? `All ${answers.length} servers up; the records of the ${answers.length - unknown} with an admin port agree ` +
      `(${unknown} ha${unknown === 1 ? "s" : "ve"} none: only ${unknown === 1 ? "its" : "their"} client port checked).`
    : whole
    ? `All ${answers.length} servers up; their records agree.`
    : upCount === 0
    ? `None of the ${answers.length} servers is up and healthy.`
    : `${upCount} of ${answers.length} servers up and healthy; ${
      digests.size <= 1 ? "the digests of those up agree" : `${digests.size} different digests`
    }.`;
  return { text: `${text}\n${summary}`, whole };
}
