/**
 * One server of the herd, the composition root: the store and its log on
 * disk, the client acceptor, the peer transport and links, and the Places
 * service, wired together, with an orderly shutdown.
 */

import { isIP } from "node:net";
import { ClientConnection } from "./client/connection.ts";
import { DensityMap, type DensityReport } from "./admin/density.ts";
import { metrics, registerGauges } from "./admin/metrics.ts";
import { type BackupFile, BackupFiles, type OpenBackup } from "./admin/backup_files.ts";
import { BackupRefused, type BackupResult, type Health, serveAdmin } from "./admin/server.ts";
import { RecentRates, type StatusReport } from "./admin/status.ts";
import { NoReply, ReplyBudget } from "./client/reply_queue.ts";
import type { RouterContext } from "./client/router.ts";
import { nowNs } from "./clock.ts";
import { nanosecondsText } from "./decimal.ts";
import { certFiles, type HerdConfig, neighboursOf, netAddress, serverNamed, taskCommand } from "./config/config.ts";
import { LogBudget } from "./log_budget.ts";
import { fileTimestamp, makePrivateDirectory, openDirectoryWarning, PRIVATE_FILE_MODE } from "./private_files.ts";
import { cutForLog, log, logFile, quote } from "./logging.ts";
import { acceptLoop, closeQuietly } from "./net/acceptor.ts";
import type { ResilientHttpServer } from "./net/http_server.ts";
import type { PeerHost } from "./peer/host.ts";
import type { LinkReport } from "./peer/tree.ts";
import { type InboundPeer, refusePeer, servePeer } from "./peer/inbound.ts";
import { PeerLinks } from "./peer/links.ts";
import { Reconciler } from "./peer/reconcile.ts";
import { CERT_WARN_DAYS, PeerTransport } from "./peer/transport.ts";
import type { CachedPlaces } from "./places/cache.ts";
import type { HerdRecordRules, LocationRecord } from "./protocol.ts";
import { DatabaseInUseError, RecordLog, type RecordLogOptions } from "./store/record_log.ts";
import { LocationStore } from "./store/store.ts";
import { traffic } from "./traffic_log.ts";

let _gaugesRegistered = false;

/** The metrics' gauges read one server: the first of this process with an admin endpoint. */
function _registerGaugesOnce(server: HerdServer): void {
  if (_gaugesRegistered) return;
  _gaugesRegistered = true;
  registerGauges(server.gaugeSources());
}

/** How long a peer has for the TLS handshake, and then for its `HELLO`, in milliseconds. */
const _PEER_HANDSHAKE_MS = 5000;
/** A start given up on by {@linkcode HerdServer.cancelStart} (a signal while it waited for its database). */
export class StartCancelledError extends Error {}

/** How long past `shutdownGraceMs` a start waits for a database another process holds (one shutting down). */
const _LOCK_WAIT_EXTRA_MS = 3000;
/** How often that wait tries the lock again. */
const _LOCK_POLL_MS = 50;
/** How often the TLS files are looked at for a rotated certificate, in milliseconds (SIGHUP: at once). */
const _CERT_CHECK_MS = 60_000;

/** A day in milliseconds. */
const _DAY_MS = 86_400_000;
/** How long compaction waits between checks, in milliseconds. */
const _COMPACT_CHECK_MS = 10_000;
/** The least free space a backup leaves on its filesystem beside the copy (or the database's size, if larger). */
const _BACKUP_FREE_MIN_BYTES = 64 * 1024 * 1024;
/** How often expired records are looked for (with `records.ttlS`), in milliseconds. */
const _SWEEP_EVERY_MS = 1000;
/** Records looked at per turn of a sweep: a few milliseconds' work, so a big store is swept without a stall. */
const _SWEEP_SLICE = 20_000;
/**
 * How often the store's lines that replaced others since the last pass are
 * packed, in milliseconds: a client's line replaced again sooner is never
 * packed.
 */
const _PACK_EVERY_MS = 1000;
/** Lines packed per turn of a pass: about 6 ms of work here. */
const _PACK_SLICE = 8192;

/** Options for {@linkcode HerdServer}. */
export interface HerdServerOptions {
  /** The herd's configuration. */
  config: HerdConfig;
  /** This server's name in the config. */
  name: string;
  /** Where WHATSAT asks for places. */
  places: CachedPlaces;
  /** The admin endpoint's bearer token (`HERD_ADMIN_TOKEN`), if set. */
  adminToken?: string;
}

/** A running herd server; its peer links see it as their {@linkcode PeerHost}. */
export class HerdServer implements PeerHost {
  /** This server's name in the config. */
  readonly name: string;
  /** The latest record of every client known. */
  readonly store: LocationStore;
  /** Reconciliation with the neighbours. */
  readonly reconciler: Reconciler;
  /** What a record from a neighbour must keep to. */
  readonly recordRules: HerdRecordRules;
  #config: HerdConfig;
  #places: CachedPlaces;
  #adminToken: string | undefined;
  #admin: ResilientHttpServer | undefined;
  #phase: "starting" | "running" | "stopping" = "starting";
  #startedAt = Date.now();
  #rates = new RecentRates();
  #density: DensityMap;
  #transport: PeerTransport;
  #links: PeerLinks;
  #clientListener: Deno.TcpListener | undefined;
  #peerServer: { close(): void } | undefined;
  #clients = new Set<ClientConnection>();
  /** Bytes of replies our clients have not read yet (`limits.maxReplyBytes`). */
  #replyBudget: ReplyBudget;
  /** Closes for the reply budget: the first in a second said, the others counted and said once the second is over. */
  #overBudgetWarnings = new LogBudget(1, (count) => {
    log.server.warning(
      "Closed {count} more client connections holding the most unread replies in the last second, past " +
        "limits.maxReplyBytes",
      { count },
    );
  });
  #peers = new Set<InboundPeer>();
  /** Our own clients' records on their way (committing, waiting on the neighbours), by client: see #heldSettled. */
  #publishing = new Map<string, { promise?: Promise<void> }>();
  /** The current link from each neighbour (peer/inbound.ts closes the one before when a neighbour dials again). */
  #inboundByName = new Map<string, { close(): void }>();
  #accepting: Promise<void> | undefined;
  #recordLog: RecordLog | undefined;
  #timers: ReturnType<typeof setInterval>[] = [];
  #stopping = false;
  /** When {@linkcode HerdServer.#warnOfExpiry} last warned (epoch ms). */
  #expiryWarnedAt = -Infinity;
  /** Refusals at `limits.maxConnections`: the first in a second said, the others counted and said after it. */
  #refusalWarnings = new LogBudget(1, (count) => {
    log.server.warning("Refused {count} client connections: {open} are open, limits.maxConnections", {
      count,
      open: this.#clients.size,
    });
  });
  /** Set by {@linkcode HerdServer.cancelStart}. */
  #startCancelled = false;
  /** Whether the admin endpoint's start failed for its port being taken (tried again once the database is ours). */
  #adminPortTaken = false;
  /** The backups' copies; the one being taken in its `inProgress` (one at a time). */
  #backups: BackupFiles;

  /** A server named in the config; nothing happens until {@linkcode HerdServer.start}. */
  constructor(options: HerdServerOptions) {
    const { config, name } = options;
    this.name = name;
    this.#config = config;
    this.#places = options.places;
    this.#adminToken = options.adminToken;
    serverNamed(config, name);
    this.#backups = new BackupFiles(`${config.dataDir}/backups`, name);
    // The names a record may carry: the servers', and those of servers taken out whose records the herd keeps.
    const recordServers = [...config.servers.keys(), ...config.retiredServers];
    this.store = new LocationStore({ ttlS: config.records.ttlS, servers: recordServers });
    this.#density = new DensityMap(() => this.store.lines());
    this.#replyBudget = new ReplyBudget(config.limits.maxReplyBytes, () => this.#closeOverBudget());
    this.reconciler = new Reconciler(this.store);
    const longestName = Math.max(...recordServers.map((server) => server.length));
    this.recordRules = {
      servers: new Set(recordServers),
      maxClientIdBytes: config.limits.maxClientIdBytes,
      // An AT line is its IAMAT's fields, a server name and a time difference longer.
      maxLineBytes: config.maxLineBytes + longestName + 64,
      holds: (clientId, line, end) => this.store.holds(clientId, line, end),
    };
    const files = certFiles(config);
    this.#transport = new PeerTransport({
      files: config.peers.tls
        ? {
          ca: files.ca,
          cert: files.cert(name),
          key: files.key(name),
          name,
          renewCommand: taskCommand(config, "certs", `${name} --renew`),
        }
        : null,
      handshakeTimeoutMs: _PEER_HANDSHAKE_MS,
    });
    this.#links = new PeerLinks(this, config, this.#transport);
  }

  /** Path of this server's database. */
  get databasePath(): string {
    return `${this.#config.dataDir}/${this.name}.db`;
  }

  /**
   * Loads the store from disk and the TLS files, listens on the client and
   * peer ports, then starts the links; no network I/O happens before
   * listening. Throws before listening if the database is unusable
   * (`CorruptDatabaseError`), cannot be written (`DatabaseNotWritableError`) or
   * is in use by another process (`DatabaseInUseError`),
   * or a TLS file cannot be read.
   */
  async start(): Promise<void> {
    const self = serverNamed(this.#config, this.name);
    // The TLS files first: a server that cannot use them does not start, and says nothing of an admin endpoint.
    this.#transport.load();
    this.#warnOfExpiry();
    // Then the admin endpoint, so that while the server waits for its database /healthz says it is starting.
    if (self.adminPort !== undefined) this.#startAdmin(self.host, self.adminPort);
    const started = performance.now();
    const { ttlS } = this.#config.records;
    const { log: recordLog, leftOut, overLimits } = await this.#openRecordLog({
      isExpired: (clientTime) => this.store.isExpired(clientTime),
      // Straight into the store, each client's greatest kept there: no million records held until the load ends.
      onRecord: (record) => this.store.offer(record),
      // A record taken by a server since removed from the config, and not listed in retiredServers, is left out: the
      // neighbours refuse such records ("names a server the herd does not have"), so a store holding it would never
      // agree with theirs, and each reconciliation would resend everything.
      isKnownServer: (server) => this.recordRules.servers.has(server),
      // Likewise a record over the limits, written before the config lowered one.
      limits: { maxClientIdBytes: this.recordRules.maxClientIdBytes, maxLineBytes: this.recordRules.maxLineBytes },
      expiryCutoff: () => {
        if (ttlS === 0) return null;
        const cutoff = nanosecondsText(nowNs() - BigInt(ttlS) * 1_000_000_000n);
        return `${cutoff.whole}.${cutoff.nanos}`;
      },
    });
    this.#recordLog = recordLog;
    // A server restarted at once found the one before still holding the admin port too (it lets it go before the
    // database): now that the database is ours, the port is free.
    if (self.adminPort !== undefined && this.#admin === undefined && this.#adminPortTaken) {
      this.#startAdmin(self.host, self.adminPort);
    }
    if (leftOut.size > 0) {
      log.server.warning(
        "{name} deleted {count} rows of {path} taken by servers no longer in the config ({servers}): the herd " +
          "refuses records naming them, and a store holding them would never agree with its neighbours'. To keep " +
          "the records of a server taken out or renamed, list it in retiredServers on every server before " +
          "restarting the next one.",
        {
          name: this.name,
          count: [...leftOut.values()].reduce((a, b) => a + b, 0),
          path: this.databasePath,
          servers: [...leftOut].map(([server, count]) => `${server}: ${count}`).join(", "),
        },
      );
    }
    if (overLimits > 0) {
      log.server.warning(
        "{name} deleted {count} rows of {path} whose client ID or line is longer than the config allows " +
          "(limits.maxClientIdBytes {maxClientIdBytes}, maxLineBytes {maxLineBytes}): the herd refuses such records, " +
          "and a store holding them would never agree with its neighbours'.",
        {
          name: this.name,
          count: overLimits,
          path: this.databasePath,
          maxClientIdBytes: this.#config.limits.maxClientIdBytes,
          maxLineBytes: this.#config.maxLineBytes,
        },
      );
    }
    log.server.info("{name} loaded {count} records from {path} in {ms} ms", {
      name: this.name,
      count: this.store.size,
      path: this.databasePath,
      ms: Math.round(performance.now() - started),
    });
    try {
      // The peer port first: once the client port accepts, the whole server is up.
      this.#peerServer = await this.#transport.listen({
        host: self.host,
        port: self.peerPort,
        maxConnections: this.#config.limits.maxPeerConnections,
        // Where each neighbour listens, and where it is dialled when that is another address (NAT): where it dials
        // from, as a rule. A name is no address to compare with, and is left out.
        neighbourHosts: new Set(
          neighboursOf(this.#config, this.name).flatMap((name) => {
            const neighbour = serverNamed(this.#config, name);
            return [neighbour.host, neighbour.peerDialHost].filter((host) => isIP(host) !== 0);
          }),
        ),
        onPeer: (peer) => {
          const inbound = servePeer(peer, this, {
            helloTimeoutMs: _PEER_HANDSHAKE_MS,
            // Our neighbours keep to one exchange per interval; 10% slack for their timers and the network.
            minExchangeIntervalMs: this.#config.peers.reconcileIntervalMs * 0.9,
            heartbeatMs: this.#config.peers.heartbeatMs,
            heartbeatTimeoutMs: this.#config.peers.heartbeatTimeoutMs,
            current: this.#inboundByName,
          });
          this.#peers.add(inbound);
          inbound.done.finally(() => this.#peers.delete(inbound));
        },
        onRefused: (address, reason) =>
          refusePeer("Refused a peer connection from {address}: {reason}", { address, reason }),
      });
      try {
        this.#clientListener = Deno.listen({ hostname: self.host, port: self.port });
      } catch (error) {
        // Deno's own message names no address (node's, for the peer port, does): which port it was, for the operator.
        throw _withAddress(error, "client port", self.host, self.port);
      }
    } catch (error) {
      // A port taken: the database (and its lock) and the peer port are let go, so the server can be started again.
      this.#peerServer?.close();
      this.#peerServer = undefined;
      recordLog.close();
      this.#recordLog = undefined;
      throw error;
    }
    log.server.info("{name} listening for clients on {host}:{port} and peers on {host}:{peerPort} ({security})", {
      name: this.name,
      host: self.host,
      port: self.port,
      peerPort: self.peerPort,
      security: this.#transport.secure ? "mutually authenticated TLS" : "plain text",
    });
    if (!this.#transport.secure) {
      log.server.warning(
        "Peer links are plain text (peers.tls is false in the config): the peer port {host}:{peerPort} accepts " +
          "anyone who connects and says HELLO with a neighbour's name, and locations cross the network readable",
        { host: self.host, peerPort: self.peerPort },
      );
    }
    const { limits } = this.#config;
    const context: RouterContext = {
      name: this.name,
      store: this.store,
      places: this.#places,
      publish: (record) => this.#publish(record, this.#config.peers.ackTimeoutMs),
      limits: {
        maxClientIdBytes: limits.maxClientIdBytes,
        maxClockSkewS: limits.maxClockSkewS,
        maxRecords: this.#config.records.max,
      },
      canCommit: () => this.#recordLog?.healthy ?? false,
      heldSettled: (clientId) => this.#heldSettled(clientId),
    };
    this.#accepting = acceptLoop(this.#clientListener, "clients", (conn) => {
      if (this.#clients.size >= limits.maxConnections) {
        metrics.clientsRefused.inc();
        this.#refuseClient(conn);
        return;
      }
      metrics.clientsAccepted.inc();
      const client = new ClientConnection(conn, context, this.#config.maxLineBytes, this.#replyBudget);
      this.#clients.add(client);
      client.done.finally(() => this.#clients.delete(client));
    });
    const closeEvery = Math.min(limits.idleTimeoutMs / 2, limits.sendTimeoutMs / 2, 5000);
    this.#timers.push(setInterval(() => this.#closeIdleClients(), closeEvery));
    this.#links.start();
    const { reconcileIntervalMs } = this.#config.peers;
    this.#timers.push(setInterval(() => this.#links.reconcileWithOne(reconcileIntervalMs), reconcileIntervalMs));
    this.#timers.push(setInterval(() => this.#recordLog?.compactIfWorthIt(this.store.size), _COMPACT_CHECK_MS));
    if (ttlS > 0) this.#timers.push(setInterval(() => this.#sweepExpired(), _SWEEP_EVERY_MS));
    this.#timers.push(setInterval(() => this.#packStore(), _PACK_EVERY_MS));
    // Right after start-up, not during it: a table left long by an earlier run is compacted on the worker.
    setTimeout(() => this.#recordLog?.compactIfWorthIt(this.store.size), 0);
    if (this.#transport.secure) this.#timers.push(setInterval(() => this.reloadCertificates(), _CERT_CHECK_MS));
    this.#rates.start();
    this.#phase = "running";
  }

  /**
   * Opens the database. One held by another process is waited for, up to
   * `shutdownGraceMs` and 3 s more: a server restarted at once (SIGTERM,
   * then start) finds the one before still finishing its replies and closing
   * its links, after it let go of its ports. Then it is refused.
   */
  async #openRecordLog(options: RecordLogOptions): Promise<ReturnType<typeof RecordLog.open>> {
    const waitMs = this.#config.shutdownGraceMs + _LOCK_WAIT_EXTRA_MS;
    const deadline = performance.now() + waitMs;
    for (let said = false;; said = true) {
      try {
        // The open-directory warning once: a wait tries again every 50 ms.
        return RecordLog.open(this.databasePath, said ? { ...options, warnOpenDirectory: false } : options);
      } catch (error) {
        if (!(error instanceof DatabaseInUseError)) throw error;
        if (this.#startCancelled) {
          throw new StartCancelledError(`${this.name} was stopped while it waited for its database`);
        }
        if (performance.now() >= deadline) throw error;
        if (!said) {
          log.server.warning(
            "{path} is held by another process: waiting up to {ms} ms for it to let go (a server still shutting " +
              "down does once its replies are done)",
            { path: this.databasePath, ms: waitMs },
          );
        }
      }
      await new Promise((resolve) => setTimeout(resolve, _LOCK_POLL_MS));
      if (this.#startCancelled) {
        throw new StartCancelledError(`${this.name} was stopped while it waited for its database`);
      }
    }
  }

  /** Stops a start still waiting for its database (a signal meanwhile): start() rejects with StartCancelledError. */
  cancelStart(): void {
    this.#startCancelled = true;
  }

  /** Starts the admin endpoint; one that cannot start (no token off loopback, port taken) is logged, not fatal. */
  #startAdmin(host: string, port: number): void {
    try {
      this.#admin = serveAdmin({ host, port, token: this.#adminToken, source: this });
      _registerGaugesOnce(this);
      // The address as one value: the log file quotes each value, and a URL quoted in pieces cannot be copied.
      const url = `http://${netAddress(host, port)}/`;
      const paths = "(/metrics, /healthz, /status, /density, POST /backup, /backups)";
      log.server.info(
        `{name} admin endpoint on {url} ${paths}${this.#adminToken ? ", bearer token required" : ""}`,
        { name: this.name, url },
      );
    } catch (error) {
      this.#adminPortTaken = error instanceof Deno.errors.AddrInUse;
      log.server.error("{name} did not start its admin endpoint: {error}", {
        name: this.name,
        error: _withAddress(error, "admin port", host, port).message,
      });
    }
  }

  /** Where this server's backups go: `<dataDir>/backups`. */
  get backupDirectory(): string {
    return this.#backups.directory;
  }

  /**
   * Copies this server's database to a new file of its own in
   * {@linkcode HerdServer.backupDirectory} (`<Name>-<UTC time>.db`, 0600),
   * while the server serves: the copy holds every record committed up to the
   * moment it began (every acknowledged one), in one file, checked. The
   * admin endpoint's `POST /backup`. One at a time; refused (with
   * {@linkcode BackupRefused}) while the server is not running, or while
   * another is being taken.
   */
  async backup(): Promise<BackupResult> {
    const recordLog = this.#recordLog;
    if (this.#phase !== "running" || recordLog === undefined) {
      metrics.backup("refused");
      throw new BackupRefused(`the server is ${this.#phase}`);
    }
    if (this.#backups.inProgress !== undefined) {
      metrics.backup("refused");
      throw new BackupRefused("a backup is being taken already");
    }
    const started = performance.now();
    const directory = this.backupDirectory;
    const file = `${this.name}-${fileTimestamp()}.db`;
    const path = `${directory}/${file}`;
    this.#backups.inProgress = file;
    try {
      await this.#prepareBackupDirectory(directory);
      // Made here, empty, so that the copy is the server's user's alone whatever the umask: SQLite keeps the mode.
      Deno.openSync(path, { write: true, createNew: true, mode: PRIVATE_FILE_MODE }).close();
      let report;
      try {
        report = await recordLog.backup(path);
      } catch (error) {
        // The copy and SQLite's journal of it (a copy that failed half-way, on a full disk say, leaves one).
        for (const file of [path, `${path}-journal`, `${path}-wal`, `${path}-shm`]) {
          try {
            Deno.removeSync(file);
          } catch { /* never made, or gone */ }
        }
        throw error;
      }
      // From the request on: a backup asked during a compaction waits for it on the worker.
      const ms = Math.round(performance.now() - started);
      const result = { path, rows: report.rows, bytes: Deno.statSync(path).size, ms };
      metrics.backup("ok");
      log.server.info("{name} backed up {database} to {path}: {rows} rows, {bytes} bytes, in {ms} ms", {
        name: this.name,
        database: this.databasePath,
        ...result,
      });
      // Still in progress (not listed) while the older ones are pruned: a backup asked meanwhile is refused (409).
      await this.#pruneBackups();
      return result;
    } catch (error) {
      metrics.backup(error instanceof BackupRefused ? "refused" : "failed");
      log.server.error("{name} could not back up {database} to {path}: {error}", {
        name: this.name,
        database: this.databasePath,
        path,
        error: (error as Error).message,
      });
      throw error;
    } finally {
      this.#backups.inProgress = undefined;
    }
  }

  /**
   * Removes the oldest copies past `limits.maxBackups` (0: none), the new one counted (in progress still, so not
   * listed), once it is made: copies asked for again and again (by anyone reaching the admin port, on loopback
   * without a token) do not pile up until the disk is all but full. A removal that fails is logged, and the backup
   * still answered.
   */
  async #pruneBackups(): Promise<void> {
    const keep = this.#config.limits.maxBackups;
    if (keep === 0) return;
    let copies: BackupFile[];
    try {
      copies = this.#backups.list();
    } catch (error) {
      log.server.warning("{name} could not list its backups to remove the oldest: {error}", {
        name: this.name,
        error: (error as Error).message,
      });
      return;
    }
    for (const { file } of copies.slice(0, Math.max(0, copies.length - (keep - 1)))) {
      try {
        await this.#backups.remove(file);
        log.server.info("{name} removed the backup {path}: limits.maxBackups keeps the newest {keep}", {
          name: this.name,
          path: `${this.backupDirectory}/${file}`,
          keep,
        });
      } catch (error) {
        log.server.warning("{name} could not remove the old backup {path}: {error}", {
          name: this.name,
          path: `${this.backupDirectory}/${file}`,
          error: (error as Error).message,
        });
      }
    }
  }

  /** The backups' copies kept in {@linkcode HerdServer.backupDirectory} (the admin endpoint's `GET /backups`). */
  backups(): BackupFile[] {
    return this.#backups.list();
  }

  /** Backup copy `file`, opened to be sent (`GET /backups/<file>`); a {@linkcode BackupRefused} when there is none. */
  async openBackup(file: string): Promise<OpenBackup> {
    const opened = await this.#backups.open(file);
    log.server.info("{name} sends the backup {path}: {bytes} bytes", {
      name: this.name,
      path: `${this.backupDirectory}/${file}`,
      bytes: opened.bytes,
    });
    return opened;
  }

  /** Removes backup copy `file` (`DELETE /backups/<file>`); a {@linkcode BackupRefused} when there is none. */
  async removeBackup(file: string): Promise<void> {
    await this.#backups.remove(file);
    log.server.info("{name} removed the backup {path}", { name: this.name, path: `${this.backupDirectory}/${file}` });
  }

  /**
   * Makes `directory` (0700) if missing; refuses, with a message naming it,
   * one that is not a directory, and a backup that would leave less free
   * space on its filesystem than the database's size (at least 64 MiB): a
   * copy must never fill the disk the server commits to (its IAMATs would
   * be refused until space is freed).
   */
  async #prepareBackupDirectory(directory: string): Promise<void> {
    // Its message names the directory and what is wrong with it (it cannot be made, or is no directory).
    const open = makePrivateDirectory(directory);
    if (open !== undefined) log.server.warning(...openDirectoryWarning(open));
    const size = (file: string) => {
      try {
        return Deno.statSync(file).size;
      } catch {
        return 0;
      }
    };
    // The copy is about the size of the database and its WAL.
    const needed = size(this.databasePath) + size(`${this.databasePath}-wal`);
    // Loaded here, not at start-up: only a backup needs it.
    const { statfsSync } = await import("node:fs");
    const { bavail, bsize } = statfsSync(directory);
    const free = Number(bavail) * Number(bsize);
    const kept = Math.max(needed, _BACKUP_FREE_MIN_BYTES);
    if (free < needed + kept) {
      throw new BackupRefused(
        `not enough free space in ${directory}: ${free} bytes free, the copy takes about ${needed}, and ${kept} must ` +
          "stay free for the server's own commits",
        507,
      );
    }
  }

  /** Whether the server accepts clients and can commit, and why not (the admin endpoint's `/healthz`). */
  health(): Health {
    if (this.#phase === "starting") return { ok: false, reason: "starting" };
    if (this.#phase === "stopping") return { ok: false, reason: "stopping" };
    if (this.#recordLog?.healthy === false) {
      return { ok: false, reason: "cannot commit records to disk: IAMATs are refused until a commit succeeds" };
    }
    return { ok: true, reason: "ok" };
  }

  /** The server at a glance (the admin endpoint's `/status`). */
  status(): StatusReport {
    const links = [...this.#links.all.values()].map((link) => ({
      neighbour: link.neighbour,
      state: !link.up ? "down" as const : link.lagging ? "lagging" as const : "up" as const,
      queued: link.queued,
      ackWaits: link.ackWaits,
      lastReconciliation: link.lastReconciliation === undefined
        ? null
        : new Date(link.lastReconciliation).toISOString(),
    }));
    return {
      name: this.name,
      uptimeS: Math.round((Date.now() - this.#startedAt) / 100) / 10,
      health: this.health(),
      records: this.store.size,
      digest: this.store.digest.fingerprint(),
      links,
      rates: this.#rates.rates(),
      places: { provider: this.#places.name, cacheEntries: this.#places.size },
      clientConnections: this.#clients.size,
      rssBytes: Deno.memoryUsage().rss,
    };
  }

  /** Where clients are, as counts per grid cell (the admin endpoint's `/density`). */
  density(): DensityReport {
    return this.#density.report();
  }

  /** What the metrics' gauges read. */
  gaugeSources(): Parameters<typeof registerGauges>[0] {
    return {
      records: () => this.store.size,
      clientConnections: () => this.#clients.size,
      clientReplyBytes: () => this.#replyBudget.held,
      links: () =>
        [...this.#links.all.values()].map((link) => ({
          neighbour: link.neighbour,
          up: link.up,
          lagging: link.lagging,
          inUse: link.inUse,
          inboundLive: this.#links.inboundLive(link.neighbour),
          queued: link.queued,
          ackWaits: link.ackWaits,
        })),
      commitsHealthy: () => this.#recordLog?.healthy ?? false,
      flooding: () => this.#links.flooding,
      placesCache: () => ({ ...this.#places.stats, entries: this.#places.size }),
      logLinesDropped: () => logFile()?.droppedTotal ?? 0,
      startTimeSeconds: this.#startedAt / 1000,
    };
  }

  /**
   * Closes a client connection over `limits.maxConnections` at once; says so on the console too, the first refusal of
   * a second at once and the others counted in one line after it: the server is full, as when it runs out of files
   * (the acceptor's warning), which its operator should see.
   */
  #refuseClient(conn: Deno.Conn): void {
    closeQuietly(conn);
    if (this.#refusalWarnings.take()) {
      log.server.warning("Refused {count} client connections: {open} are open, limits.maxConnections", {
        count: 1,
        open: this.#clients.size,
      });
    }
  }

  /**
   * Closes client connections that sent nothing, with nothing pending, for `limits.idleTimeoutMs`, and those whose
   * reply write has waited `limits.sendTimeoutMs` for them to read: a client that never reads would otherwise hold its
   * replies (up to 256, a write of 64 KiB among them) for as long as it keeps the connection open.
   */
  #closeIdleClients(): void {
    const { idleTimeoutMs, sendTimeoutMs } = this.#config.limits;
    for (const client of this.#clients) {
      if (client.idleMs >= idleTimeoutMs) {
        metrics.clientsIdleClosed.inc();
        client.close(`idle for ${idleTimeoutMs} ms`);
      } else if (client.unreadMs >= sendTimeoutMs) {
        metrics.clientsSendTimedOut.inc();
        client.close(`a reply waited ${sendTimeoutMs} ms for it to read`);
      }
    }
  }

  /**
   * Closes the client connections holding the most unread reply bytes until all of them hold no more than
   * `limits.maxReplyBytes` (Redis's client eviction at `maxmemory-clients`): clients that do not read cannot make the
   * server hold their replies without bound, however many connect. Says so on the console too, the first close of a
   * second at once and the others counted in one line after it.
   */
  #closeOverBudget(): void {
    const budget = this.#replyBudget;
    while (budget.held > budget.limit) {
      let most: ClientConnection | undefined;
      for (const client of this.#clients) {
        if (client.heldReplyBytes > (most?.heldReplyBytes ?? 0)) most = client;
      }
      if (most === undefined) return;
      const bytes = most.heldReplyBytes;
      metrics.clientsOverReplyBudget.inc();
      // Closing takes its replies out of the count at once.
      most.close(`its unread replies held ${bytes} bytes, the most of any client, past limits.maxReplyBytes`);
      if (this.#overBudgetWarnings.take()) {
        log.server.warning(
          "Closed client {client}, holding the most unread replies ({bytes} bytes): all clients' unread replies held " +
            "more than limits.maxReplyBytes ({limit} bytes)",
          { client: most.id, bytes, limit: budget.limit },
        );
      }
    }
  }

  /**
   * Runs `slice` now, and again a turn of the event loop later for as long
   * as it says there is more and the server is not stopping; then `done`.
   */
  #slicePerTurn(slice: () => boolean, done?: () => void): void {
    const turn = () => {
      if (slice() && !this.#stopping) setTimeout(turn, 0);
      else done?.();
    };
    turn();
  }

  /** Sweeps expired records out of the store, a slice per turn of the event loop, until the store is done. */
  #sweepExpired(): void {
    if (this.store.sweeping) return;
    let removed = 0;
    this.#slicePerTurn(() => {
      removed += this.store.sweepExpired(_SWEEP_SLICE);
      return this.store.sweeping;
    }, () => {
      if (removed > 0) log.server.info("Removed {count} expired records (records.ttlS)", { count: removed });
    });
  }

  /** Packs the lines that replaced others since the last pass (LocationStore.pack), a slice per turn of the loop. */
  #packStore(): void {
    if (this.store.startPacking()) this.#slicePerTurn(() => this.store.pack(_PACK_SLICE));
  }

  /**
   * Reads the TLS files again, for a rotated certificate, key or CA: new
   * links use them; links already up keep theirs. A file that cannot be
   * read, or a key that does not match its certificate, keeps the old ones
   * and is logged.
   */
  reloadCertificates(): void {
    try {
      if (this.#transport.reload()) {
        log.server.info("{name} reloaded its TLS certificates", { name: this.name });
        this.#expiryWarnedAt = -Infinity;
      }
    } catch (error) {
      log.server.error("{name} kept its TLS certificates: {error}", {
        name: this.name,
        error: (error as Error).message,
      });
    }
    this.#warnOfExpiry();
  }

  /**
   * Warns at start, then once a day (the files are looked at every minute),
   * while the certificate in use or its CA expires within
   * {@linkcode CERT_WARN_DAYS}; an error once it has: neighbours then refuse
   * new links with this server.
   */
  #warnOfExpiry(now = Date.now()): void {
    const expiry = this.#transport.expiry;
    if (expiry === undefined) return;
    const left = expiry.notAfter.getTime() - now;
    if (left > CERT_WARN_DAYS * _DAY_MS || now - this.#expiryWarnedAt < _DAY_MS) return;
    this.#expiryWarnedAt = now;
    const properties = {
      expiring: expiry.expiring,
      at: expiry.notAfter.toISOString(),
      days: Math.floor(left / _DAY_MS),
      remedy: expiry.remedy,
    };
    if (left <= 0) {
      log.server.error("{expiring} expired at {at}: neighbours refuse new links with it; {remedy}", properties);
    } else {
      log.server.warning("{expiring} expires at {at}, in {days} days: {remedy}", properties);
    }
  }

  /** Whether this server is shutting down (PeerHost). */
  get stopping(): boolean {
    return this.#stopping;
  }

  /** Whether `name` is one of our neighbours (PeerHost). */
  isNeighbour(name: string): boolean {
    return this.#links.has(name);
  }

  /** A server's link state from neighbour `from` (PeerHost): for the broadcast trees. */
  linkState(report: LinkReport, from: string): void {
    this.#links.linkState(report, from);
  }

  /** `name` dialled us, so it is back: our link to it retries now (PeerHost). */
  dialledBy(name: string): void {
    this.#links.poke(name);
  }

  /** A link `name` dialled to us has lasted a second (PeerHost): for our link state. */
  dialledByLasting(name: string): void {
    this.#links.inbound(name, +1);
  }

  /** A link `name` dialled to us closed (PeerHost): for our link state. */
  dialledByClosed(name: string): void {
    this.#links.inbound(name, -1);
  }

  /**
   * A live record from neighbour `from`: stored, written to disk and passed
   * on if it is newer than ours. The returned promise, if any, is when the
   * sender may be acknowledged: with `ackScope` "neighbours", at once, and
   * the result says whether it was stored (nobody waits on the records we
   * pass on); with "herd", once our own neighbours acknowledged it too, each
   * hop waiting half as long.
   */
  receive(record: LocationRecord, from: string, waitMs: number): Promise<void> | boolean {
    if (!this.store.offer(record)) return this.receiveNotNewer(from, record.line);
    metrics.peerReceived.inc();
    metrics.peerStored.inc();
    // Logged by the flood, in one line with where it went (PROTOCOL.md: records received and forwarded are logged).
    // Written behind: the disk promise is the receiving server's; ours is to have it in memory and pass it on.
    this.#recordLog?.writeBehind(record);
    if (this.#config.peers.ackScope === "neighbours") {
      this.#links.flood(record, from, 0);
      return true;
    }
    // Half the sender's wait, so our answer reaches it before it gives up on us.
    return this.#links.flood(record, from, Math.floor(waitMs / 2));
  }

  /** A live record from `from` that is not newer than ours (PeerHost): counted, logged at debug, dropped. */
  receiveNotNewer(from: string, line: string): false {
    metrics.peerReceived.inc();
    metrics.peerNotNewer.inc();
    if (traffic.debug) {
      // A held record comes as the peer's whole line: its record is the first six fields.
      const record = line.split(" ").slice(0, 6).join(" ");
      traffic.event("peer", `From ${quote(from)}, not newer, dropped: ${quote(cutForLog(record))}`, "DBG");
    }
    return false;
  }

  /**
   * A record from reconciling with `from`: stored, written to disk and
   * passed on (as reconciliation records too) if newer. No promises and no
   * line per record in the log: a catch-up can carry 100,000 of these, so
   * the callers log a count instead.
   */
  catchUp(record: LocationRecord, from: string): boolean {
    metrics.reconcileReceived.inc();
    if (!this.store.offer(record)) return false;
    metrics.reconcileStored.inc();
    this.#recordLog?.writeBehind(record);
    this.#links.passOn(record, from);
    return true;
  }

  /**
   * A record this server just stored from an IAMAT: on to disk (group
   * commit) and to every live neighbour. Resolves when both are done: the
   * record is committed and acknowledged by the live neighbours (or they
   * ran out of `waitMs`).
   */
  #publish(record: LocationRecord, waitMs: number): Promise<void> {
    const { clientId } = record;
    // One promise, counted down by the neighbours' acknowledgements and the commit: not one per neighbour. Kept by
    // client while on its way, for an older IAMAT of the same client to wait on (#heldSettled).
    const entry: { promise?: Promise<void> } = {};
    this.#publishing.set(clientId, entry);
    entry.promise = new Promise<void>((resolve, reject) => {
      let waits = 1;
      let committed = false;
      const release = () => {
        if (--waits > 0) return;
        if (this.#publishing.get(clientId) === entry) this.#publishing.delete(clientId);
        if (committed) resolve();
        else reject(new NoReply("the record could not be committed"));
      };
      // The flood first: its writes are then scheduled ahead of the commit, which overlaps their round trips.
      waits += this.#links.forward(record, undefined, waitMs, release);
      if (this.#recordLog === undefined) return release();
      this.#recordLog.append(record).then((ok) => {
        committed = ok;
        release();
      });
    });
    return entry.promise;
  }

  /**
   * When the record held for `clientId` is not yet what an IAMAT reply
   * promises (RouterContext.heldSettled): one of our own clients' on its way
   * (its publish), or one from a neighbour written behind and not committed
   * yet (its commit, brought forward).
   */
  #heldSettled(clientId: string): Promise<void> | undefined {
    const publishing = this.#publishing.get(clientId)?.promise;
    // The line waiting for its commit is the one held, whoever sent it (a neighbour's newer one may have replaced
    // ours while ours was on its way): both are waited for.
    const commit = this.#recordLog?.pendingFor(clientId)?.then((ok) => {
      if (!ok) throw new NoReply("the record held for the client could not be committed");
    });
    if (publishing === undefined || commit === undefined) return publishing ?? commit;
    return Promise.all([publishing, commit]).then(() => {});
  }

  /** Stops accepting, finishes replies in flight (bounded by `shutdownGraceMs`), closes links. */
  async shutdown(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    this.#phase = "stopping";
    log.server.info("{name} shutting down", { name: this.name });
    closeQuietly(this.#clientListener);
    this.#peerServer?.close();
    await this.#accepting;
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
    const peers = [...this.#peers];
    for (const peer of peers) peer.close();
    await Promise.all(peers.map((peer) => peer.done));
    this.#rates.stop();
    // A backup copy being sent to a slow (or stalled) reader would hold the shutdown, and the database lock, for as
    // long as it took.
    this.#backups.stopSending();
    await this.#admin?.shutdown();
    this.#recordLog?.close();
    traffic.flush(); // so the traffic of the last turn comes before the last line
    log.server.info("{name} stopped", { name: this.name });
  }
}

/**
 * `error` (from listening on `host:port`) with the address in its message,
 * unless it has one: "Address already in use (os error 98)" tells an operator
 * nothing about which of a server's ports it was. The same class, so callers
 * still tell a port taken from other failures.
 */
function _withAddress(error: unknown, what: string, host: string, port: number): Error {
  if (!(error instanceof Error)) return new Error(String(error));
  const address = netAddress(host, port);
  if (error.message.includes(address)) return error;
  error.message = `${what} ${address}: ${error.message}`;
  return error;
}
