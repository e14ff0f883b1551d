/**
 * One server of the herd: the client and peer acceptors, the store and its
 * log on disk, the links to its neighbours and the Places provider, wired
 * together, with reconciliation and an orderly shutdown.
 */

import { ClientConnection } from "./client/connection.ts";
import { type HerdConfig, serverNamed } from "./config/config.ts";
import { log, quote } from "./logging.ts";
import { acceptLoop } from "./net/acceptor.ts";
import { traffic } from "./traffic_log.ts";
import type { PeerHost } from "./peer/host.ts";
import { servePeer } from "./peer/inbound.ts";
import { PeerLinks } from "./peer/links.ts";
import { Reconciler } from "./peer/reconcile.ts";
import type { PlacesService } from "./places/cache.ts";
import type { LocationRecord } from "./protocol.ts";
import { RecordLog } from "./store/record_log.ts";
import type { RouterContext } from "./client/router.ts";
import { LocationStore } from "./store/store.ts";

const _nothing = () => {};

/** Options for {@linkcode HerdServer}. */
export interface HerdServerOptions {
  /** The herd's configuration. */
  config: HerdConfig;
  /** This server's name in the config. */
  name: string;
  /** Where WHATSAT asks for places. */
  places: PlacesService;
}

/** A running herd server; its peer links see it as their {@linkcode PeerHost}. */
export class HerdServer implements PeerHost {
  /** This server's name in the config. */
  readonly name: string;
  /** The latest record of every client known. */
  readonly store: LocationStore = new LocationStore();
  /** Reconciliation with the neighbours. */
  readonly reconciler: Reconciler = new Reconciler(this.store);
  #config: HerdConfig;
  #places: PlacesService;
  #links: PeerLinks;
  #clientListener: Deno.TcpListener | undefined;
  #peerListener: Deno.TcpListener | undefined;
  #clients = new Set<ClientConnection>();
  #peerConns = new Set<Deno.Conn>();
  #peerTasks = new Set<Promise<void>>();
  #accepting: Promise<void>[] = [];
  #recordLog: RecordLog | undefined;
  #timers: ReturnType<typeof setInterval>[] = [];
  #stopping = false;

  /** A server named in the config; nothing happens until {@linkcode HerdServer.start}. */
  constructor(options: HerdServerOptions) {
    this.name = options.name;
    this.#config = options.config;
    this.#places = options.places;
    serverNamed(options.config, options.name);
    this.#links = new PeerLinks(this, options.config);
  }

  /** Path of this server's database. */
  get databasePath(): string {
    return `${this.#config.dataDir}/${this.name}.db`;
  }

  /**
   * Loads the store from disk, listens on the client and peer ports, then
   * starts the links; no network I/O happens before listening. Throws a
   * `CorruptDatabaseError` before listening if the database is unusable.
   */
  start(): void {
    const self = serverNamed(this.#config, this.name);
    const started = performance.now();
    const { log: recordLog, records } = RecordLog.open(this.databasePath);
    this.#recordLog = recordLog;
    for (const record of records) this.store.offer(record);
    log.server.info("{name} loaded {count} records from {path} in {ms} ms", {
      name: this.name,
      count: records.length,
      path: this.databasePath,
      ms: Math.round(performance.now() - started),
    });
    this.#clientListener = Deno.listen({ hostname: self.host, port: self.port });
    this.#peerListener = Deno.listen({ hostname: self.host, port: self.peerPort });
    log.server.info("{name} listening for clients on {host}:{port} and peers on {host}:{peerPort}", {
      name: this.name,
      host: self.host,
      port: self.port,
      peerPort: self.peerPort,
    });
    const context: RouterContext = {
      name: this.name,
      store: this.store,
      places: this.#places,
      publish: (record) => this.#publish(record, undefined, this.#config.peers.ackTimeoutMs),
    };
    this.#accepting.push(this.#acceptClients(this.#clientListener, context));
    this.#accepting.push(this.#acceptPeers(this.#peerListener));
    this.#links.start();
    this.#timers.push(setInterval(() => this.#links.reconcileWithOne(), this.#config.peers.reconcileIntervalMs));
    this.#timers.push(setInterval(() => {
      this.#recordLog?.compactIfWorthIt(() => this.store.lines(), this.store.size);
    }, 10_000));
  }

  #acceptClients(listener: Deno.TcpListener, context: RouterContext): Promise<void> {
    return acceptLoop(listener, "clients", (conn) => {
      const client = new ClientConnection(conn, context, this.#config.maxLineBytes);
      this.#clients.add(client);
      client.done.finally(() => this.#clients.delete(client));
    });
  }

  #acceptPeers(listener: Deno.TcpListener): Promise<void> {
    return acceptLoop(listener, "peers", (conn) => {
      this.#peerConns.add(conn);
      const task = servePeer(conn, this).finally(() => {
        this.#peerConns.delete(conn);
        this.#peerTasks.delete(task);
      });
      this.#peerTasks.add(task);
    });
  }

  /** Whether `name` is one of our neighbours (PeerHost). */
  isNeighbour(name: string): boolean {
    return this.#links.has(name);
  }

  /** `name` dialled us, so it is back: our link to it retries now (PeerHost). */
  dialledBy(name: string): void {
    this.#links.poke(name);
  }

  /**
   * A live record from neighbour `from`: stored, written to disk and passed
   * on if it is newer than ours. The returned promise, if any, is when the
   * sender may be acknowledged: with `ackScope` "neighbours", once stored
   * here (nobody waits on the records we pass on); with "herd", once our
   * own neighbours acknowledged it too, each hop waiting half as long.
   */
  receive(record: LocationRecord, from: string, waitMs: number): Promise<void> | undefined {
    if (!this.store.offer(record)) {
      traffic.event("peer", `From ${quote(from)}, not newer, dropped: ${quote(record.line)}`, "DBG");
      return undefined;
    }
    traffic.event("peer", `From ${quote(from)}, stored: ${quote(record.line)}`);
    // Written behind: the disk promise is the receiving server's; ours is to have it in memory and pass it on.
    this.#recordLog?.writeBehind(record);
    if (this.#config.peers.ackScope === "neighbours") {
      this.#links.flood(record, from, 0);
      return undefined;
    }
    // Half the sender's wait, so our answer reaches it before it gives up on us.
    return this.#links.flood(record, from, Math.floor(waitMs / 2));
  }

  /**
   * A record from reconciling with `from`: stored, written to disk and
   * passed on (as reconciliation records too) if newer. No promises and no
   * line per record in the log: a catch-up can carry 100,000 of these, so
   * the callers log a count instead.
   */
  catchUp(record: LocationRecord, from: string): boolean {
    if (!this.store.offer(record)) return false;
    this.#recordLog?.writeBehind(record);
    this.#links.passOn(record, from);
    return true;
  }

  /**
   * A record this server just stored: on to disk (group commit) and to
   * every live neighbour but `from`. Resolves when both are done: the
   * record is committed and acknowledged by the live neighbours (or they
   * ran out of `waitMs`).
   */
  #publish(record: LocationRecord, from: string | undefined, waitMs: number): Promise<void> {
    // The flood first: its writes are then scheduled ahead of the commit, which overlaps their round trips.
    const flooded = this.#links.flood(record, from, waitMs);
    return Promise.all([flooded, this.#recordLog?.append(record)]).then(_nothing);
  }

  /** Stops accepting, finishes replies in flight (bounded by `shutdownGraceMs`), closes links. */
  async shutdown(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    log.server.info("{name} shutting down", { name: this.name });
    for (const listener of [this.#clientListener, this.#peerListener]) {
      try {
        listener?.close();
      } catch { /* already closed */ }
    }
    await Promise.all(this.#accepting);
    const clients = [...this.#clients];
    for (const client of clients) client.stop();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const graceOver = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), this.#config.shutdownGraceMs);
    });
    const finished = await Promise.race([Promise.all(clients.map((c) => c.done)).then(() => true), graceOver]);
    clearTimeout(timer);
    if (!finished) {
      log.server.warning("Replies still pending after {ms} ms; closing those connections", {
        ms: this.#config.shutdownGraceMs,
      });
      for (const client of this.#clients) client.abort();
      await Promise.all(clients.map((c) => c.done));
    }
    this.#timers.forEach(clearInterval);
    await this.#links.close();
    for (const conn of this.#peerConns) {
      try {
        conn.close();
      } catch { /* already closed */ }
    }
    await Promise.all(this.#peerTasks);
    this.#recordLog?.close();
    traffic.flush(); // so the traffic of the last turn comes before the last line
    log.server.info("{name} stopped", { name: this.name });
  }
}
