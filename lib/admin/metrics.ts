/**
 * The herd's metrics: the counters and histograms the hot path bumps (each a
 * series object made once, so counting is an addition), and the gauges a
 * server registers with what they read when scraped. One registry per
 * process, as a server is one process.
 */

import { Counter, Gauge, Histogram, type LabelValues, Registry } from "./prometheus.ts";

/** The registry `/metrics` prints. */
export const registry: Registry = new Registry();

/** Bounds of the latency histograms, in seconds: half a millisecond to ten seconds. */
export const LATENCY_BOUNDS: readonly number[] = [
  0.0005,
  0.001,
  0.002,
  0.005,
  0.01,
  0.02,
  0.05,
  0.1,
  0.2,
  0.5,
  1,
  2,
  5,
  10,
];

const _commands = registry.add(
  new Counter("herd_commands_total", "Client commands by kind and outcome.", ["command", "outcome"]),
);
const _replySeconds = registry.add(
  new Histogram(
    "herd_reply_seconds",
    "Time from a client line's arrival to its reply being written, by the line's command.",
    LATENCY_BOUNDS,
    ["command"],
  ),
);
const _clientConnections = registry.add(
  new Counter("herd_client_connections_total", "Client connections, accepted or refused.", ["outcome"]),
);
const _clientTimeouts = registry.add(
  new Counter(
    "herd_client_timeouts_total",
    "Client connections closed by a timeout: idle (limits.idleTimeoutMs) or a reply write waiting on the client " +
      "(limits.sendTimeoutMs).",
    ["kind"],
  ),
);
const _clientsOverReplyBudget = registry.add(
  new Counter(
    "herd_client_reply_budget_closed_total",
    "Client connections closed for holding the most unread replies while all clients' unread replies held more " +
      "than limits.maxReplyBytes.",
  ),
);
const _peerRefused = registry.add(
  new Counter(
    "herd_peer_connections_refused_total",
    "Peer connections refused or dropped before they proved who they are (handshake, HELLO, limits).",
  ),
);
const _peerRecords = registry.add(
  new Counter(
    "herd_peer_records_total",
    "Records from neighbours: received (live or reconciling), stored, dropped (not newer, or invalid).",
    ["event"],
  ),
);
const _forwarded = registry.add(
  new Counter("herd_records_forwarded_total", "Records written to neighbours' links (one per link).", ["kind"]),
);
const _reconciliations = registry.add(
  new Counter(
    "herd_reconciliations_total",
    "Reconciliations, started by us or answered, or refused; crossed, a neighbour's started while ours with it was under way (answered with our digest alone); repairs, started by us as a neighbour came below us in a broadcast tree (counted in started too).",
    ["role"],
  ),
);
const _reconciliationRecords = registry.add(
  new Counter("herd_reconciliation_records_total", "Records sent and received while reconciling.", ["direction"]),
);
const _linkReports = registry.add(
  new Counter(
    "herd_link_reports_total",
    "Link state reports (broadcast trees): our own made, and others' received: news, not news, or refused.",
    ["kind"],
  ),
);
const _silentLinks = registry.add(
  new Counter(
    "herd_peer_links_silent_total",
    "Peer links closed for hearing nothing for peers.heartbeatTimeoutMs: ours to a neighbour, or a neighbour's to us.",
    ["direction"],
  ),
);
const _laggingProbes = registry.add(
  new Counter(
    "herd_peer_lagging_probes_total",
    "Records sent again over a lagging link, one a heartbeat, to see whether the neighbour acknowledges in time again.",
  ),
);
const _places = registry.add(
  new Counter("herd_places_requests_total", "Upstream Places searches, by provider and status.", [
    "provider",
    "status",
  ]),
);
const _placesSeconds = registry.add(
  new Histogram("herd_places_request_seconds", "Upstream Places search latency.", LATENCY_BOUNDS, ["provider"]),
);
const _commitSeconds = registry.add(
  new Histogram("herd_commit_seconds", "Group commits to the record log.", LATENCY_BOUNDS),
);
const _commits = registry.add(new Counter("herd_commits_total", "Group commits, by outcome.", ["outcome"]));
const _backups = registry.add(
  new Counter(
    "herd_backups_total",
    "Backups asked of the server (POST /backup), by outcome: ok, refused (one being taken, the server not running, " +
      "too little free space) or failed.",
    ["outcome"],
  ),
);
/** When this process last made a backup, in seconds since the epoch; 0 before its first. */
let _lastBackupSeconds = 0;
registry.add(
  new Gauge(
    "herd_backup_last_success_timestamp_seconds",
    "When the last backup this process made was finished, in seconds since the epoch; 0 when it has made none.",
    [],
    () => [[[], _lastBackupSeconds]],
  ),
);
const _backupsOk = _backups.labels("ok");
const _backupsRefused = _backups.labels("refused");
const _backupsFailed = _backups.labels("failed");

/** The series the hot path counts on. */
export const metrics = {
  commands: {
    iamatOk: _commands.labels("IAMAT", "ok"),
    iamatInvalid: _commands.labels("IAMAT", "invalid"),
    iamatRefused: _commands.labels("IAMAT", "refused"),
    whatsatOk: _commands.labels("WHATSAT", "ok"),
    whatsatInvalid: _commands.labels("WHATSAT", "invalid"),
    otherInvalid: _commands.labels("other", "invalid"),
  },
  /** Reply latency by command: index 0 other, 1 IAMAT, 2 WHATSAT (see {@linkcode commandIndex}). */
  replySeconds: [_replySeconds.labels("other"), _replySeconds.labels("IAMAT"), _replySeconds.labels("WHATSAT")],
  clientsAccepted: _clientConnections.labels("accepted"),
  clientsRefused: _clientConnections.labels("refused"),
  clientsIdleClosed: _clientTimeouts.labels("idle"),
  clientsSendTimedOut: _clientTimeouts.labels("send"),
  clientsOverReplyBudget: _clientsOverReplyBudget.labels(),
  peerConnectionsRefused: _peerRefused.labels(),
  peerReceived: _peerRecords.labels("received"),
  peerStored: _peerRecords.labels("stored"),
  peerNotNewer: _peerRecords.labels("dropped_not_newer"),
  peerInvalid: _peerRecords.labels("dropped_invalid"),
  reconcileReceived: _peerRecords.labels("received_reconciling"),
  reconcileStored: _peerRecords.labels("stored_reconciling"),
  forwardedLive: _forwarded.labels("live"),
  forwardedReconciling: _forwarded.labels("reconciling"),
  reconciliationsStarted: _reconciliations.labels("started"),
  reconciliationsAnswered: _reconciliations.labels("answered"),
  reconciliationsRefused: _reconciliations.labels("refused"),
  reconciliationsCrossed: _reconciliations.labels("crossed"),
  reconciliationRepairs: _reconciliations.labels("repair"),
  linkReportsOwn: _linkReports.labels("own"),
  linkReportsNew: _linkReports.labels("received_new"),
  linkReportsOld: _linkReports.labels("received_old"),
  linkReportsRefused: _linkReports.labels("refused"),
  silentLinksTo: _silentLinks.labels("to"),
  silentLinksFrom: _silentLinks.labels("from"),
  laggingProbes: _laggingProbes.labels(),
  reconciliationSent: _reconciliationRecords.labels("sent"),
  reconciliationReceived: _reconciliationRecords.labels("received"),
  commitOk: _commits.labels("ok"),
  commitFailed: _commits.labels("failed"),
  commitSeconds: _commitSeconds.labels(),
  /** One backup asked for: made, refused or failed. */
  backup(outcome: "ok" | "refused" | "failed"): void {
    if (outcome === "ok") {
      _backupsOk.inc();
      _lastBackupSeconds = Date.now() / 1000;
    } else (outcome === "refused" ? _backupsRefused : _backupsFailed).inc();
  },
  /** One upstream Places search done. */
  placesRequest(provider: string, status: string, seconds: number): void {
    _places.labels(provider, status).inc();
    _placesSeconds.labels(provider).observe(seconds);
  },
};

/** The histogram of reply latency, for snapshots (status's p99). */
export const replyHistogram: Histogram = _replySeconds;

/** Which reply latency series a client line counts in: by its first letter, which is cheap to look at. */
export function commandIndex(line: Uint8Array): number {
  let i = 0;
  while (i < line.length && (line[i] === 32 || (line[i] >= 9 && line[i] <= 13))) i++;
  const first = line[i];
  return first === 73 /* I */ ? 1 : first === 87 /* W */ ? 2 : 0;
}

/** What the gauges read when scraped. */
export interface GaugeSources {
  /** Records held. */
  records(): number;
  /** Client connections open. */
  clientConnections(): number;
  /** Bytes of replies waiting for clients to read (`limits.maxReplyBytes`). */
  clientReplyBytes(): number;
  /** Each neighbour's link. */
  links(): Iterable<
    {
      neighbour: string;
      up: boolean;
      lagging: boolean;
      inUse: boolean;
      inboundLive: boolean;
      queued: number;
      ackWaits: number;
    }
  >;
  /** Whether commits succeed now. */
  commitsHealthy(): boolean;
  /** Whether records are flooded now rather than sent down broadcast trees. */
  flooding(): boolean;
  /** Places cache counters. */
  placesCache(): { hits: number; misses: number; shared: number; refused: number; entries: number };
  /** Log lines dropped because the log could not keep up. */
  logLinesDropped(): number;
  /** When the server started, in seconds since the epoch. */
  startTimeSeconds: number;
}

/** Registers the gauges of one server, read from `sources` at each scrape. */
export function registerGauges(sources: GaugeSources): void {
  const one = (value: number): Iterable<[LabelValues, number]> => [[[], value]];
  registry.add(new Gauge("herd_records", "Records (clients) held.", [], () => one(sources.records())));
  registry.add(
    new Gauge("herd_client_connections", "Client connections open.", [], () => one(sources.clientConnections())),
  );
  registry.add(
    new Gauge(
      "herd_client_reply_bytes",
      "Bytes of replies waiting for clients to read, as limits.maxReplyBytes counts them.",
      [],
      () => one(sources.clientReplyBytes()),
    ),
  );
  registry.add(
    new Gauge(
      "herd_peer_link_up",
      "Whether the link to a neighbour is up (1) or down (0).",
      ["neighbour"],
      function* () {
        for (const link of sources.links()) yield [[link.neighbour], link.up ? 1 : 0];
      },
    ),
  );
  registry.add(
    new Gauge(
      "herd_peer_link_lagging",
      "Whether a neighbour let an acknowledgement wait expire and is not waited on (1).",
      ["neighbour"],
      function* () {
        for (const link of sources.links()) yield [[link.neighbour], link.lagging ? 1 : 0];
      },
    ),
  );
  registry.add(
    new Gauge(
      "herd_peer_link_in_use",
      "Whether the broadcast trees count on the link to a neighbour (1): up for a second, and keeping up.",
      ["neighbour"],
      function* () {
        for (const link of sources.links()) yield [[link.neighbour], link.inUse ? 1 : 0];
      },
    ),
  );
  registry.add(
    new Gauge(
      "herd_peer_link_from_live",
      "Whether a link the neighbour dialled to us has lasted a second and is open (1): reported in our link state.",
      ["neighbour"],
      function* () {
        for (const link of sources.links()) yield [[link.neighbour], link.inboundLive ? 1 : 0];
      },
    ),
  );
  registry.add(
    new Gauge("herd_peer_queued_records", "Records queued for a neighbour.", ["neighbour"], function* () {
      for (const link of sources.links()) yield [[link.neighbour], link.queued];
    }),
  );
  registry.add(
    new Gauge("herd_peer_ack_waits", "Acknowledgements of a neighbour being waited on.", ["neighbour"], function* () {
      for (const link of sources.links()) yield [[link.neighbour], link.ackWaits];
    }),
  );
  registry.add(
    new Gauge(
      "herd_broadcast_flooding",
      "Whether records are flooded now (1): with peers.broadcast flood, or for a second after the link state changed.",
      [],
      () => one(sources.flooding() ? 1 : 0),
    ),
  );
  registry.add(
    new Gauge("herd_commits_healthy", "Whether commits succeed (1) or fail (0).", [], () => {
      return one(sources.commitsHealthy() ? 1 : 0);
    }),
  );
  registry.add(
    new Gauge(
      "herd_places_cache_lookups_total",
      "Places searches by what the cache did: a hit, a miss (asked upstream), shared (joined one in flight), " +
        "refused (too many waiting).",
      ["result"],
      function* () {
        const cache = sources.placesCache();
        yield [["hit"], cache.hits];
        yield [["miss"], cache.misses];
        yield [["shared"], cache.shared];
        yield [["refused"], cache.refused];
      },
      "counter",
    ),
  );
  registry.add(
    new Gauge("herd_places_cache_entries", "Answers the Places cache holds.", [], () => {
      return one(sources.placesCache().entries);
    }),
  );
  registry.add(
    new Gauge(
      "herd_log_lines_dropped_total",
      "Log lines dropped because the log's disk was full or slow.",
      [],
      () => one(sources.logLinesDropped()),
      "counter",
    ),
  );
  registry.add(
    new Gauge("process_resident_memory_bytes", "Resident memory size in bytes.", [], () => {
      return one(Deno.memoryUsage().rss);
    }),
  );
  registry.add(
    new Gauge("process_start_time_seconds", "Start time of the process since the epoch, in seconds.", [], () => {
      return one(sources.startTimeSeconds);
    }),
  );
  registry.add(
    new Gauge("herd_uptime_seconds", "Seconds since the server started.", [], () => {
      return one(Date.now() / 1000 - sources.startTimeSeconds);
    }),
  );
}
