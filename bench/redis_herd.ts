/**
 * A Redis herd: the reference for the herd's write scenarios. One
 * `redis-server` per server of the herd's graph, replicating along a
 * spanning tree of that graph rooted at the server that takes the writes;
 * replication over TLS with both ends authenticated, AOF persistence
 * (`appendfsync everysec`) in a temporary directory. Clients use the plain
 * `port` on 127.0.0.1, as the herd's clients use plain TCP.
 */

import { freePorts } from "../tests/testing/herd.ts";
import { serverCertificate } from "./certs.ts";
import { delay, runCommand } from "./command.ts";

/** A spanning tree of a herd's graph. */
export interface SpanningTree {
  root: string;
  /** Every other server's parent (the server it replicates). */
  parent: Map<string, string>;
  /** Each server's children, in the order found. */
  children: Map<string, string[]>;
}

/**
 * The breadth-first spanning tree of the graph `names`/`links` from `root`:
 * neighbours are visited in the order of `links`. Throws a `RangeError` if
 * `root` is not one of `names` or some server cannot be reached from it.
 */
export function spanningTree(names: string[], links: [string, string][], root: string): SpanningTree {
  if (!names.includes(root)) throw new RangeError(`Unknown root "${root}": expected one of ${names.join(", ")}`);
  const neighbours = new Map<string, string[]>(names.map((name) => [name, []]));
  for (const [a, b] of links) {
    neighbours.get(a)?.push(b);
    neighbours.get(b)?.push(a);
  }
  const parent = new Map<string, string>();
  const children = new Map<string, string[]>(names.map((name) => [name, []]));
  const seen = new Set([root]);
  const queue = [root];
  while (queue.length > 0) {
    const name = queue.shift()!;
    for (const next of neighbours.get(name) ?? []) {
      if (seen.has(next)) continue;
      seen.add(next);
      parent.set(next, name);
      children.get(name)!.push(next);
      queue.push(next);
    }
  }
  const unreached = names.filter((name) => !seen.has(name));
  if (unreached.length > 0) throw new RangeError(`Not reachable from ${root}: ${unreached.join(", ")}`);
  return { root, parent, children };
}

/** Options for {@linkcode RedisHerd.start}. */
export interface RedisHerdOptions {
  /** The servers, as in the herd's config. */
  names: string[];
  /** The herd's links. */
  links: [string, string][];
  /** The server that takes the writes. */
  root: string;
  /** A certificate directory (`ca.crt`, `<Name>.crt`, `<Name>.key`; see `certs.ts`). */
  certDir: string;
  /**
   * How long to wait for every replica's link to come up, in ms.
   * @default {10000}
   */
  timeoutMs?: number;
}

interface _Server {
  port: number;
  tlsPort: number;
  dir: string;
  child?: Deno.ChildProcess;
  exitCode?: number;
}

/** Five (or however many) `redis-server` processes replicating along a spanning tree. */
export class RedisHerd implements AsyncDisposable {
  /** The replication tree. */
  readonly tree: SpanningTree;
  /** The temporary directory holding every server's data and log. */
  readonly dir: string;
  #servers = new Map<string, _Server>();

  private constructor(tree: SpanningTree, dir: string) {
    this.tree = tree;
    this.dir = dir;
  }

  /**
   * Starts every server and waits until every replica reports
   * `master_link_status:up` and every parent sees its children online.
   * Stops whatever it started and throws if that does not happen in time.
   */
  static async start(options: RedisHerdOptions): Promise<RedisHerd> {
    const tree = spanningTree(options.names, options.links, options.root);
    const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "redis-herd-" });
    const herd = new RedisHerd(tree, dir);
    const ports = freePorts(options.names.length * 2);
    options.names.forEach((name, index) => {
      herd.#servers.set(name, { port: ports[2 * index], tlsPort: ports[2 * index + 1], dir: `${dir}/${name}` });
    });
    try {
      for (const [name, server] of herd.#servers) {
        await Deno.mkdir(server.dir);
        const child = new Deno.Command("redis-server", {
          args: herd.#args(name, options.certDir),
          stdin: "null",
          stdout: "null",
          stderr: "null",
        }).spawn();
        server.child = child;
        child.status.then((status) => server.exitCode = status.code);
      }
      await herd.#waitReplicated(options.timeoutMs ?? 10_000);
    } catch (error) {
      const logs = await herd.#logTails();
      await herd[Symbol.asyncDispose]();
      throw new Error(`The Redis herd did not start: ${(error as Error).message}${logs}`);
    }
    return herd;
  }

  #args(name: string, certDir: string): string[] {
    const server = this.#servers.get(name)!;
    const files = serverCertificate(certDir, name);
    const parent = this.tree.parent.get(name);
    return [
      ...["--port", String(server.port), "--bind", "127.0.0.1", "--protected-mode", "no"],
      ...["--tls-port", String(server.tlsPort), "--tls-cert-file", files.cert, "--tls-key-file", files.key],
      ...["--tls-ca-cert-file", files.ca, "--tls-auth-clients", "yes", "--tls-replication", "yes"],
      ...["--dir", server.dir, "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""],
      // Start the first sync at once instead of waiting 5 s for more replicas to share it.
      ...["--repl-diskless-sync-delay", "0"],
      ...["--logfile", `${server.dir}/redis.log`, "--daemonize", "no"],
      ...(parent === undefined ? [] : ["--replicaof", "127.0.0.1", String(this.#servers.get(parent)!.tlsPort)]),
    ];
  }

  async #info(name: string): Promise<string> {
    const { stdout } = await runCommand("redis-cli", ["-p", String(this.port(name)), "info", "replication"]);
    return stdout;
  }

  async #waitReplicated(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      const waiting: string[] = [];
      for (const name of this.#servers.keys()) {
        const info = await this.#info(name);
        if (this.tree.parent.has(name) && !/^master_link_status:up\r?$/m.test(info)) {
          waiting.push(`${name}'s link to ${this.tree.parent.get(name)}`);
        }
        const online = info.match(/^slave\d+:.*state=online/gm)?.length ?? 0;
        const expected = this.tree.children.get(name)!.length;
        if (online !== expected) waiting.push(`${name}'s replicas (${online} of ${expected} online)`);
      }
      if (waiting.length === 0) return;
      for (const [name, server] of this.#servers) {
        if (server.exitCode !== undefined) throw new Error(`redis-server ${name} exited with code ${server.exitCode}`);
      }
      if (Date.now() > deadline) throw new Error(`still waiting for ${waiting.join(", ")} after ${timeoutMs} ms`);
      await delay(50);
    }
  }

  async #logTails(): Promise<string> {
    let text = "";
    for (const [name, server] of this.#servers) {
      const log = await Deno.readTextFile(`${server.dir}/redis.log`).catch(() => "");
      if (log !== "") {
        text += `\n--- ${name} (last lines of redis.log)\n${log.trimEnd().split("\n").slice(-5).join("\n")}`;
      }
    }
    return text;
  }

  /** Plain client port of `name`. */
  port(name: string): number {
    return this.#servers.get(name)!.port;
  }

  /** Process id of `name`. */
  pid(name: string): number {
    return this.#servers.get(name)!.child!.pid;
  }

  /** The servers' names, in the herd's order. */
  get names(): string[] {
    return [...this.#servers.keys()];
  }

  /** How many replicas acknowledge a write to the root directly: its children in the tree. */
  get rootReplicas(): number {
    return this.tree.children.get(this.tree.root)!.length;
  }

  /** Stops every server (SIGTERM) and removes the directory. */
  async [Symbol.asyncDispose](): Promise<void> {
    for (const server of this.#servers.values()) {
      try {
        server.child?.kill("SIGTERM");
      } catch { /* already exited */ }
    }
    await Promise.all([...this.#servers.values()].map((server) => server.child?.status));
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}
