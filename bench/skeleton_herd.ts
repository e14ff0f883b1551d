/**
 * The herd's messages and nothing else: a reference for scenarios 1 and 2,
 * as the bare echo is for scenario 3. Five processes on the default links;
 * an IAMAT becomes an AT line that goes to every neighbour with a sequence
 * number, each neighbour floods it on to the others (when it is newer than
 * what it holds for the client) and acknowledges it, and the reply goes
 * out once every neighbour acknowledged. One `conn.read()` loop per socket,
 * one write per socket per turn, plain TCP. No checks, no store beyond a
 * `Map` of times, no disk, no log, no TLS: what is left between this and
 * the herd is the herd's own work; what is left between this and the Redis
 * herd is the shape of the design on Deno and this machine.
 *
 *   deno run --no-prompt --allow-net=127.0.0.1 --allow-run=deno bench/skeleton_herd.ts [--node-peers]
 *
 * `--node-peers`: peer links over `node:net` sockets, as the herd's are.
 *
 * Less than the herd in ways that favour it: a wait for acknowledgements
 * has no deadline (the herd sweeps expired waits every 5 ms), a client's
 * next lines are read only once its last batch is answered (so batches
 * merge while they wait), and a client that half-closes may lose its last
 * replies (it is for scenarios 1 and 2, not 3).
 *
 * Prints `{"ports":[...],"pids":[...]}` once every server listens and its
 * links are up; stops its servers when its standard input closes.
 */

import net from "node:net";
import { setImmediate } from "node:timers";
import { firstLine } from "./command.ts";

const NAMES = ["Hill", "Jaquez", "Smith", "Campbell", "Singleton"];
/** The default links (herd.config.json), by index into NAMES. */
const LINKS: [number, number][] = [[0, 1], [0, 2], [2, 3], [4, 1], [4, 2], [4, 3]];
/** The wait written on the wire with each record, as the herd writes it; the skeleton itself keeps no deadline. */
const WAIT_MS = 500;
const NEWLINE = 0x0a;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Reads `conn` until it closes, handing over the complete lines of each read. */
async function readLines(conn: Deno.Conn, onLines: (lines: string[]) => void | Promise<void>): Promise<void> {
  const buffer = new Uint8Array(64 * 1024);
  let partial = "";
  try {
    while (true) {
      const n = await conn.read(buffer);
      if (n === null) break;
      const end = buffer.subarray(0, n).lastIndexOf(NEWLINE) + 1;
      const text = partial + decoder.decode(buffer.subarray(0, end === 0 ? n : end));
      partial = end === 0 ? text : decoder.decode(buffer.subarray(end, n));
      if (end === 0) continue;
      const lines = text.split("\n");
      lines.pop();
      await onLines(lines);
    }
  } catch {
    // A reset: the benchmark is over.
  } finally {
    try {
      conn.close();
    } catch { /* closed */ }
  }
}

/** A socket written at most once per turn: what is sent in a turn goes out together. */
class Batched {
  #conn: Deno.Conn;
  #text = "";
  #scheduled = false;
  #writing: Promise<void> = Promise.resolve();

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  send(text: string): void {
    this.#text += text;
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      const bytes = encoder.encode(this.#text);
      this.#text = "";
      this.#writing = this.#writing.then(async () => {
        for (let offset = 0; offset < bytes.length;) offset += await this.#conn.write(bytes.subarray(offset));
      }).catch(() => {});
    });
  }
}

/** A `node:net` socket read as lines and written at most once per turn (the herd's peer links use `node:net`). */
function nodeLines(socket: net.Socket, onLines: (lines: string[]) => void): { send(text: string): void } {
  socket.setNoDelay(true);
  let partial = "";
  socket.on("data", (chunk: Uint8Array) => {
    const text = partial + decoder.decode(chunk);
    const end = text.lastIndexOf("\n");
    partial = end < 0 ? text : text.slice(end + 1);
    if (end >= 0) onLines(text.slice(0, end).split("\n"));
  });
  socket.on("error", () => socket.destroy());
  let out = "";
  let scheduled = false;
  return {
    send(text: string) {
      out += text;
      if (scheduled) return;
      scheduled = true;
      setImmediate(() => {
        scheduled = false;
        socket.write(out);
        out = "";
      });
    },
  };
}

/**
 * One server. With `nodePeers`, peer links are `node:net` sockets (as the
 * herd's are, under `node:tls`) instead of `Deno.Conn`s: the difference is
 * what node's stream layer costs.
 */
async function serve(index: number, clientPorts: number[], peerPorts: number[], nodePeers: boolean): Promise<void> {
  const name = NAMES[index];
  const neighbours = LINKS.filter((link) => link.includes(index)).map(([a, b]) => a === index ? b : a);
  const times = new Map<string, number>();
  /** Our links to each neighbour, by name: records go out, acknowledgements come back. */
  const out = new Map<string, { link: { send(text: string): void }; seq: number; waiting: Map<number, () => void> }>();

  /** Stores a record if it is newer; returns whether it was. */
  const offer = (id: string, time: number): boolean => {
    const held = times.get(id);
    if (held !== undefined && held >= time) return false;
    times.set(id, time);
    return true;
  };
  /** Sends `record` to every neighbour but `except`; with `wait`, resolves once each acknowledged it. */
  const flood = (record: string, except: string | undefined, wait: boolean): Promise<void>[] => {
    const acks: Promise<void>[] = [];
    for (const [neighbour, link] of out) {
      if (neighbour === except) continue;
      const seq = ++link.seq;
      link.link.send(`${record} ${seq} ${wait ? WAIT_MS : 0}\n`);
      if (wait) acks.push(new Promise((resolve) => link.waiting.set(seq, resolve)));
    }
    return acks;
  };

  /** The lines of a neighbour's link to us: records, flooded on if newer, acknowledged in one write per read. */
  const inbound = () => {
    let from: string | undefined;
    let replies: { send(text: string): void } | undefined;
    return {
      set replies(link: { send(text: string): void }) {
        replies = link;
      },
      onLines(lines: string[]) {
        let acks = "";
        for (const line of lines) {
          const fields = line.split(" ");
          if (fields[0] === "HELLO") {
            from = fields[1];
            continue;
          }
          // AT <server> <difference> <id> <location> <time> <seq> <wait>
          if (offer(fields[3], Number(fields[5]))) flood(fields.slice(0, 6).join(" "), from, false);
          if (fields[7] !== "0") acks += `ACK ${fields[6]}\n`;
        }
        if (acks !== "") replies!.send(acks);
      },
    };
  };
  if (nodePeers) {
    const server = net.createServer({ noDelay: true }, (socket) => {
      const handler = inbound();
      handler.replies = nodeLines(socket, (lines) => handler.onLines(lines));
    });
    await new Promise<void>((resolve) => server.listen(peerPorts[index], "127.0.0.1", resolve));
  } else {
    const peers = Deno.listen({ hostname: "127.0.0.1", port: peerPorts[index] });
    (async () => {
      for await (const conn of peers) {
        conn.setNoDelay(true);
        const handler = inbound();
        handler.replies = new Batched(conn);
        readLines(conn, (lines) => handler.onLines(lines));
      }
    })();
  }

  const clients = Deno.listen({ hostname: "127.0.0.1", port: clientPorts[index] });
  (async () => {
    for await (const conn of clients) {
      conn.setNoDelay(true);
      const replies = new Batched(conn);
      readLines(conn, async (lines) => {
        const waits: Promise<unknown>[] = [];
        let text = "";
        for (const line of lines) {
          // IAMAT <id> <location> <time>
          const fields = line.split(" ");
          const record = `AT ${name} +0.000000000 ${fields[1]} ${fields[2]} ${fields[3]}`;
          if (offer(fields[1], Number(fields[3]))) waits.push(...flood(record, undefined, true));
          text += record + "\n";
        }
        await Promise.all(waits);
        replies.send(text);
      });
    }
  })();

  // Dial every neighbour until it answers (they start at the same time).
  /** Acknowledgements on our link to a neighbour. */
  const acknowledged = (waiting: Map<number, () => void>) => (lines: string[]) => {
    for (const line of lines) {
      const seq = Number(line.slice(4));
      waiting.get(seq)?.();
      waiting.delete(seq);
    }
  };
  await Promise.all(neighbours.map(async (other) => {
    const waiting = new Map<number, () => void>();
    if (nodePeers) {
      let socket: net.Socket | undefined;
      while (socket === undefined) {
        socket = await new Promise<net.Socket | undefined>((resolve) => {
          const attempt = net.connect({ host: "127.0.0.1", port: peerPorts[other] });
          attempt.once("connect", () => resolve(attempt));
          attempt.once("error", () => setTimeout(() => resolve(undefined), 20));
        });
      }
      const link = { link: nodeLines(socket, acknowledged(waiting)), seq: 0, waiting };
      out.set(NAMES[other], link);
      link.link.send(`HELLO ${name}\n`);
      return;
    }
    let conn: Deno.TcpConn | undefined;
    while (conn === undefined) {
      try {
        conn = await Deno.connect({ hostname: "127.0.0.1", port: peerPorts[other] });
      } catch {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    }
    conn.setNoDelay(true);
    const link = { link: new Batched(conn), seq: 0, waiting };
    out.set(NAMES[other], link);
    link.link.send(`HELLO ${name}\n`);
    readLines(conn, acknowledged(waiting));
  }));
  console.log("ready");
  // Until our standard input closes: the parent, gone or done.
  for await (const _ of Deno.stdin.readable) { /* nothing to read */ }
  Deno.exit(0);
}

async function main(): Promise<void> {
  if (Deno.args[0] === "serve") {
    await serve(Number(Deno.args[1]), JSON.parse(Deno.args[2]), JSON.parse(Deno.args[3]), Deno.args[4] === "node");
    return;
  }
  // Ten free ports: listen on port 0, note the port, close.
  const listeners = Array.from({ length: 2 * NAMES.length }, () => Deno.listen({ hostname: "127.0.0.1", port: 0 }));
  const ports = listeners.map((listener) => (listener.addr as Deno.NetAddr).port);
  listeners.forEach((listener) => listener.close());
  const clientPorts = ports.slice(0, NAMES.length);
  const peerPorts = ports.slice(NAMES.length);
  const self = new URL(import.meta.url).pathname;
  const children = NAMES.map((_, index) =>
    new Deno.Command("deno", {
      args: [
        "run",
        "--no-prompt",
        "--allow-net=127.0.0.1",
        self,
        "serve",
        String(index),
        JSON.stringify(clientPorts),
        JSON.stringify(peerPorts),
        Deno.args.includes("--node-peers") ? "node" : "deno",
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn()
  );
  try {
    await Promise.all(children.map((child) => firstLine(child, "A skeleton server")));
  } catch (error) {
    for (const child of children) {
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
    }
    throw error;
  }
  console.log(JSON.stringify({ ports: clientPorts, pids: children.map((child) => child.pid) }));
  // Until standard input closes.
  for await (const _ of Deno.stdin.readable) { /* nothing to read */ }
  // Each server exits when its standard input closes.
  await Promise.all(children.map((child) => child.stdin.close().catch(() => {})));
  await Promise.all(children.map((child) => child.status));
}

if (import.meta.main) await main();
