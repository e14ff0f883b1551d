/**
 * The herd's configuration: one JSON file holds every name, address, link,
 * directory and setting. Each key is described once, in {@linkcode HERD_CONFIG_SCHEMA},
 * which both checks the file and makes `herd.config.schema.json`; what one
 * key cannot say alone (links naming servers, addresses used twice) is
 * checked after it. Parsing is pure; loading reads the file.
 */

import {
  arrayOf,
  boolean,
  ConfigValueError,
  httpUrl,
  integer,
  type JsonSchema,
  mapOf,
  milliseconds,
  object,
  oneOf,
  optional,
  port,
  positiveInteger,
  required,
  type Schema,
  section,
  string,
  withDefault,
} from "./schema.ts";
import { DASHBOARD_HOST } from "../dashboard/address.ts";

/** One server of the herd. */
export interface ServerConfig {
  /** IP address the server listens on and peers dial (IPv6 without brackets); see {@linkcode netAddress}. */
  host: string;
  /** Client port (IAMAT, WHATSAT). */
  port: number;
  /** Peer port (server-to-server only). */
  peerPort: number;
  /** Where neighbours dial this server's peer port: `host:peerPort` unless a proxy or NAT sits between. */
  peerDialHost: string;
  /** Port neighbours dial; see {@linkcode ServerConfig.peerDialHost}. */
  peerDialPort: number;
  /** Admin port (`/metrics`, `/healthz`, `/status`), when the server has one. */
  adminPort?: number;
}

/** The dashboard (`deno task dashboard`). */
export interface DashboardConfig {
  /** Its port on 127.0.0.1. */
  port: number;
}

/** Which Places service answers WHATSAT; `auto` is `google-new` with a key, else `offline`. */
export type PlacesProviderSetting = "auto" | "google-legacy" | "google-new" | "offline";

/** The provider settings that can be chosen in the config. */
export const PLACES_PROVIDERS: readonly PlacesProviderSetting[] = ["auto", "google-legacy", "google-new", "offline"];

/** Places API (New) Nearby Search endpoint. */
export const GOOGLE_NEW_URL = "https://places.googleapis.com/v1/places:searchNearby";

/** Places service settings. */
export interface PlacesConfig {
  /** Which provider answers. */
  provider: PlacesProviderSetting;
  /** Legacy Nearby Search endpoint (`google-legacy`). */
  url: string;
  /** Places API (New) `searchNearby` endpoint (`google-new`). */
  newUrl: string;
  /** How long a WHATSAT waits for its Places search, queue and upstream call together, in milliseconds. */
  timeoutMs: number;
  /** How long an answer is served from the cache, in milliseconds. */
  cacheTtlMs: number;
  /** Most answers the cache holds. */
  cacheEntries: number;
  /** Most upstream searches at once; the rest wait their turn. */
  maxConcurrent: number;
  /** Most searches waiting for a turn; past it a search answers at once with an error. */
  maxQueued: number;
  /** How long a failed answer is served from the cache, in milliseconds (no retry storm on an error). */
  errorTtlMs: number;
}

/** What one server lets its clients (and peers) cost it. */
export interface LimitsConfig {
  /** How far in the future, in seconds past the server's clock, an IAMAT's client time may be. */
  maxClockSkewS: number;
  /** Longest client ID in UTF-8 bytes. */
  maxClientIdBytes: number;
  /** Most client connections open at once; one more is closed at once. */
  maxConnections: number;
  /**
   * Most peer connections open at once (handshakes included); one more takes the place of the oldest that has not
   * proven who it is (TLS handshake and HELLO), or is closed at once when all have.
   */
  maxPeerConnections: number;
  /** How long a client connection may send nothing with nothing pending before it is closed, in milliseconds. */
  idleTimeoutMs: number;
  /**
   * How long a reply write may wait for the client to read before the connection is closed, in milliseconds (nginx's
   * `send_timeout`).
   */
  sendTimeoutMs: number;
  /**
   * Most bytes of replies waiting for their clients to read, across all client connections (Redis's
   * `maxmemory-clients`); past it, the connection holding the most is closed.
   */
  maxReplyBytes: number;
  /**
   * Backup copies (`POST /backup`) a server keeps in `<dataDir>/backups`: a new one removes the oldest past this many;
   * 0 keeps them all.
   */
  maxBackups: number;
}

/** What the store keeps. */
export interface RecordsConfig {
  /** Records whose client time is older than this many seconds are removed everywhere; 0 keeps them forever. */
  ttlS: number;
  /** Most clients held; past it an IAMAT for a new client ID is invalid. */
  max: number;
}

/** The log files. */
export interface LogConfig {
  /** Size at which a log file is rotated, in bytes. */
  maxBytes: number;
  /** How many log files are kept, the current one included. */
  files: number;
  /** `info`: every client line and reply, every record stored and forwarded; `debug`: also those dropped or not sent. */
  level: "info" | "debug";
}

/** The settings of `peers.ackScope`. */
export const ACK_SCOPES = ["neighbours", "herd"] as const;
/** Who acknowledges a record before its IAMAT is answered. */
export type AckScope = typeof ACK_SCOPES[number];

/** Peer link tuning. */
export interface PeerConfig {
  /** First reconnect delay after a link drops, in milliseconds. */
  reconnectMinMs: number;
  /** Longest reconnect delay, in milliseconds. */
  reconnectMaxMs: number;
  /** How long an IAMAT reply waits for acknowledgements of its record before it goes out anyway. */
  ackTimeoutMs: number;
  /**
   * Who must hold a new record before its IAMAT is answered: `neighbours`
   * (the receiving server's neighbours, as PROTOCOL.md asks) or `herd`
   * (every server reachable over live links; each hop waits on the next).
   */
  ackScope: AckScope;
  /** How often a server reconciles its store with one neighbour, in milliseconds. */
  reconcileIntervalMs: number;
  /** How often each end of a link looks at it, in milliseconds; an end quiet for half of it says `PING` or `PONG`. */
  heartbeatMs: number;
  /** How long a link may hear nothing from the other end before it is closed, in milliseconds. */
  heartbeatTimeoutMs: number;
  /** Whether peer links run over mutually authenticated TLS (plain text only when set to false). */
  tls: boolean;
  /** How a new record travels: over every link (`flood`), or down a spanning tree of its origin (`tree`). */
  broadcast: "flood" | "tree";
}

/** A validated herd configuration. */
export interface HerdConfig {
  /** Servers by name, in file order. */
  servers: Map<string, ServerConfig>;
  /** Names of servers taken out of the herd (or renamed) whose records the herd still holds and passes on. */
  retiredServers: string[];
  /** Undirected links, each once, as given. */
  links: [string, string][];
  /** The Places service. */
  places: PlacesConfig;
  /** Log directory, absolute. */
  logDir: string;
  /** Directory of the servers' databases, absolute. */
  dataDir: string;
  /** Directory of the herd's CA and the servers' certificates and keys, absolute. */
  certDir: string;
  /** Longest accepted line in bytes, without its newline. */
  maxLineBytes: number;
  /** How long shutdown waits for replies in flight, in milliseconds. */
  shutdownGraceMs: number;
  /** Peer link tuning. */
  peers: PeerConfig;
  /** Bounds on what clients and peers cost. */
  limits: LimitsConfig;
  /** What the store keeps. */
  records: RecordsConfig;
  /** The log files. */
  log: LogConfig;
  /** The dashboard. */
  dashboard: DashboardConfig;
  /** Absolute path of the file this came from. */
  path: string;
}

/**
 * The least `maxLineBytes` a config may set. A line longer than the limit
 * closes its connection, so `1` closed every client's on its first command.
 * 256 bytes hold an ordinary command (an IAMAT with a 30-byte ID and
 * full-precision coordinates is about 100); not the longest valid one at the
 * default `maxClientIdBytes` (256), which a limit this low refuses, as any
 * limit the operator sets below what commands need does.
 */
export const MIN_LINE_BYTES = 256;

/** The environment variable that holds the Places API key. */
export const PLACES_KEY_VARIABLE = "GOOGLE_PLACES_API_KEY";

/** The environment variable that holds the admin endpoints' bearer token. */
export const ADMIN_TOKEN_VARIABLE = "HERD_ADMIN_TOKEN";

/**
 * A server's name: it is a command-line argument (`deno task serve <Name>`), so it does not start with `-`, and a
 * certificate's common name (at most 64 characters) and part of file names.
 */
const _NAME = /^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,63}$/;
const _HOST_PORT = /^(.+):([0-9]+)$/;
const _IPV4 = /^(?:0|[1-9][0-9]{0,2})(?:\.(?:0|[1-9][0-9]{0,2})){3}$/;

/** Whether `host` is a dotted-quad IPv4 address. */
function _isIpv4(host: string): boolean {
  return _IPV4.test(host) && host.split(".").every((part) => Number(part) <= 255);
}

/** `host` as an IPv6 address in its canonical form, without brackets (`0:0::1` is `::1`), or undefined if it is not one. */
function _ipv6(host: string): string | undefined {
  const bare = host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
  if (!bare.includes(":") || !/^[0-9A-Fa-f:.]+$/.test(bare)) return undefined;
  try {
    return new URL(`http://[${bare}]/`).hostname.slice(1, -1);
  } catch {
    return undefined;
  }
}

/**
 * `host:port` as Deno's `--allow-net` and URLs write it: an IPv6 host in
 * brackets (`[::1]:12000`), any other as it is. Every address the permission
 * flags name, and every admin URL, is made with this.
 */
export function netAddress(host: string, port: number): string {
  return host.includes(":") && !host.startsWith("[") ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * Checks a server's `host`, the address it listens on, and returns it as the
 * servers use it (IPv6 without brackets, in canonical form). It must be an IP
 * address: the peer listener (node:net) resolves a name before it listens, and
 * the permission flags, made before the server runs, can name only what is in
 * the config, so a server with a name there could not listen on its peer port.
 */
function _listenHost(value: string, where: string): string {
  if (_isIpv4(value)) return value;
  const v6 = _ipv6(value);
  if (v6 !== undefined) return v6;
  if (value.toLowerCase() === "localhost" || value.toLowerCase().endsWith(".localhost")) {
    throw new ConfigValueError(
      `${where} must be an IP address, got ${JSON.stringify(value)}: use 127.0.0.1 (or ::1)`,
    );
  }
  throw new ConfigValueError(
    `${where} must be the IP address the server listens on (IPv4, or IPv6 such as ::1), got ${
      JSON.stringify(value)
    }: a name neighbours should dial goes in peerAddress ("name:port")`,
  );
}

/** A link: a pair of names, each checked against the servers after the schema. */
/** The config file's contents as the schema gives them, before the checks across keys. */
export interface RawHerdConfig {
  /** Server entries as written. */
  servers: Map<
    string,
    { host: string; port: number; peerPort: number; peerAddress: string | undefined; adminPort: number | undefined }
  >;
  /** Retired server names as written. */
  retiredServers: string[];
  /** Links as written. */
  links: [string, string][];
  /** Places settings, defaults filled in. */
  places: PlacesConfig;
  /** Log directory, relative to the file. */
  logDir: string;
  /** Data directory, relative to the file. */
  dataDir: string;
  /** Certificate directory, relative to the file. */
  certDir: string;
  /** See {@linkcode HerdConfig.maxLineBytes}. */
  maxLineBytes: number;
  /** See {@linkcode HerdConfig.shutdownGraceMs}. */
  shutdownGraceMs: number;
  /** Peer settings, defaults filled in but `broadcast`'s, which depends on `ackScope`. */
  peers: Omit<PeerConfig, "broadcast"> & { broadcast: PeerConfig["broadcast"] | undefined };
  /** Limits, defaults filled in. */
  limits: LimitsConfig;
  /** Record settings, defaults filled in. */
  records: RecordsConfig;
  /** Log settings, defaults filled in. */
  log: LogConfig;
  /** Dashboard settings, defaults filled in. */
  dashboard: DashboardConfig;
}

const _link: Schema<[string, string]> = {
  parse(value, path) {
    if (!Array.isArray(value) || value.length !== 2 || value.some((end) => typeof end !== "string")) {
      throw new ConfigValueError(`${path} must be a pair of server names, got ${JSON.stringify(value)}`);
    }
    return value as [string, string];
  },
  jsonSchema: () => ({ type: "array", items: { type: "string" }, minItems: 2, maxItems: 2 }),
};

const _server = object({
  host: required(
    string(),
    "IP address the server listens on (127.0.0.1, ::1, a machine's address) and its neighbours dial unless " +
      "peerAddress says otherwise; not a name: localhost is 127.0.0.1 (or ::1).",
  ),
  port: required(port(), "Client port: IAMAT and WHATSAT."),
  peerPort: required(port(), "Peer port: server-to-server traffic only."),
  peerAddress: optional(
    string(),
    'Where neighbours dial this server\'s peer port, "host:port", when a proxy or NAT sits in between; host:peerPort by default.',
  ),
  adminPort: optional(
    port(),
    "Admin port: /metrics (Prometheus), /healthz, /status, /density. None when left out. Off loopback it needs " +
      "HERD_ADMIN_TOKEN.",
  ),
});

const _dashboard = object({
  port: withDefault(port(), 12300, "Port of the dashboard (deno task dashboard) on 127.0.0.1."),
});

const _places = object({
  provider: withDefault(
    oneOf(PLACES_PROVIDERS),
    "auto",
    "Which Places service answers WHATSAT: auto is google-new when GOOGLE_PLACES_API_KEY is set, else offline.",
  ),
  url: required(httpUrl(), "Legacy Nearby Search endpoint (google-legacy)."),
  newUrl: withDefault(httpUrl(), GOOGLE_NEW_URL, "Places API (New) searchNearby endpoint (google-new)."),
  timeoutMs: withDefault(
    milliseconds(),
    5000,
    "How long a WHATSAT waits for its Places search, queue and upstream call together, in milliseconds.",
  ),
  cacheTtlMs: withDefault(milliseconds(), 300_000, "How long an answer is served from the cache, in milliseconds."),
  cacheEntries: withDefault(positiveInteger(), 10_000, "Most answers the cache holds."),
  maxConcurrent: withDefault(positiveInteger(), 16, "Most upstream searches at once; the rest wait their turn."),
  maxQueued: withDefault(
    positiveInteger(),
    1024,
    "Most searches waiting for a turn; past it a WHATSAT answers at once with an error.",
  ),
  errorTtlMs: withDefault(
    milliseconds(),
    10_000,
    "How long a failed answer is served from the cache, in milliseconds, so that an error invites no retry storm.",
  ),
});

/**
 * The least `limits.maxReplyBytes`: a client that reads may hold 256 replies ready at once (a pipeline of WHATSATs of
 * different answers, a few MB of twenty results), and a lower limit would close it while nobody else holds anything.
 */
const _MIN_REPLY_BYTES = 16 * 1024 * 1024;

const _limits = object({
  maxClockSkewS: withDefault(
    integer({ min: 0 }),
    3600,
    "How far past the server's clock an IAMAT's client time may be, in seconds; a later one is invalid.",
  ),
  maxClientIdBytes: withDefault(
    positiveInteger(),
    256,
    "Longest client ID in UTF-8 bytes; a longer one makes an IAMAT or WHATSAT invalid.",
  ),
  maxConnections: withDefault(
    positiveInteger(),
    10_000,
    "Most client connections open at once; one more is closed at once.",
  ),
  maxPeerConnections: withDefault(
    positiveInteger(),
    64,
    "Most peer connections open at once, handshakes included; one more takes the place of the oldest that has not " +
      "proven who it is (TLS handshake and HELLO), or is closed at once when all have.",
  ),
  idleTimeoutMs: withDefault(
    milliseconds(),
    300_000,
    "How long a client connection may send nothing, with nothing pending, before it is closed, in milliseconds.",
  ),
  sendTimeoutMs: withDefault(
    milliseconds(),
    300_000,
    "How long a reply write may wait for the client to read before the connection is closed, in milliseconds. The " +
      "kernel lets a write go on only once the client has read a good part of what the sockets hold (megabytes on " +
      "Linux), so a client reading very slowly is closed too.",
  ),
  maxReplyBytes: withDefault(
    integer({ min: _MIN_REPLY_BYTES, expected: `an integer of at least ${_MIN_REPLY_BYTES} (16 MiB)` }),
    256 * 1024 * 1024,
    "Most bytes of replies waiting for their clients to read, across all client connections, as Redis's " +
      "maxmemory-clients: past it, the connection holding the most is closed. A reply counts from when it is ready " +
      "until the kernel has taken it (text at a byte a character, a WHATSAT's body once for all of a connection's " +
      "replies that share it); at least 16 MiB, since one client that reads may hold 256 replies ready at once.",
  ),
  maxBackups: withDefault(
    integer({ min: 0 }),
    5,
    "Backup copies (POST /backup) a server keeps in <dataDir>/backups, as etcd's max-snapshots: once a new one is " +
      "made, the oldest past this many are removed; 0 keeps them all (a copy that would leave too little free space " +
      "is still refused).",
  ),
});

const _records = object({
  ttlS: withDefault(
    integer({ min: 0 }),
    0,
    "Records whose client time is older than this many seconds are removed from every server; 0 keeps them.",
  ),
  max: withDefault(
    positiveInteger(),
    10_000_000,
    "Most clients a server holds; past it an IAMAT for a new client ID is invalid (known clients still update).",
  ),
});

const _log = object({
  maxBytes: withDefault(integer({ min: 4096 }), 64 * 1024 * 1024, "Size at which a log file is rotated, in bytes."),
  files: withDefault(positiveInteger(), 5, "How many log files are kept, the current one included."),
  level: withDefault(
    oneOf(["info", "debug"] as const),
    "info",
    "info: every client line and reply, every record stored and forwarded, one line each, and peers' records " +
      "counted per batch; debug: also every record dropped as not newer and every send skipped for a link down.",
  ),
});

const _peers = object({
  reconnectMinMs: withDefault(milliseconds(), 50, "First reconnect delay after a link drops, in milliseconds."),
  reconnectMaxMs: withDefault(milliseconds(), 2000, "Longest reconnect delay, in milliseconds."),
  ackTimeoutMs: withDefault(
    milliseconds(),
    500,
    "How long an IAMAT reply waits for its record's acknowledgements, in milliseconds.",
  ),
  ackScope: withDefault(
    oneOf(ACK_SCOPES),
    "neighbours",
    "Who holds a record before its IAMAT is answered: the neighbours, or every server reachable (herd).",
  ),
  reconcileIntervalMs: withDefault(
    milliseconds(),
    5000,
    "How often a server reconciles its store with one neighbour, in milliseconds.",
  ),
  heartbeatMs: withDefault(
    milliseconds(),
    1000,
    "How often each end of a peer link looks at it, in milliseconds: an end that has been quiet for half of this " +
      "says it is there (the dialler PING, answered PONG; the acceptor PONG).",
  ),
  heartbeatTimeoutMs: withDefault(
    milliseconds(),
    5000,
    "How long a peer link may hear nothing from the other end before it is closed, in milliseconds (a pause of the " +
      "server's own, a SIGSTOP say, not counted): a neighbour " +
      "gone without closing its connections, or a network that drops its packets, is then seen as down (and left " +
      "out of the broadcast trees) instead of being written to for as long as TCP keeps trying.",
  ),
  broadcast: optional(
    oneOf(["flood", "tree"] as const),
    "How a new record travels: down the breadth-first tree rooted at the server that took it of the links in use " +
      "(tree: each server gets it once, about half of flooding's messages; the servers report their links to each " +
      "other, so the trees go around a server that is down or lagging once its neighbours see it); or flooded, each " +
      "server passing it to every neighbour but the sender. Default: tree, or flood with ackScope herd (tree " +
      "cannot be combined with it).",
  ),
  tls: withDefault(
    boolean(),
    true,
    "Peer links over mutually authenticated TLS with the certificates in certDir; false sends them in clear text, " +
      "to anyone who connects (each server warns at start).",
  ),
});

/** Every key of `herd.config.json`: its type, range, default and meaning. */
export const HERD_CONFIG_SCHEMA: Schema<RawHerdConfig> = object({
  servers: required(
    mapOf(_server, {
      keyPattern: _NAME,
      keyName: "server name",
      keyExpected: 'letters, digits, "_", "." or "-", not starting with "-", at most 64 characters',
    }),
    "The servers of the herd, by name.",
  ),
  retiredServers: withDefault(
    arrayOf(
      string({
        pattern: _NAME,
        expected: 'a server name: letters, digits, "_", "." or "-", not starting with "-", at most 64 characters',
      }),
      "an array of server names",
    ),
    [],
    "Servers taken out of the herd, or renamed: the records they took are still held and passed on by every server " +
      "(their clients keep their last location until they report again), though no server by that name runs. " +
      "Without this, every server deletes such records at its next start. Not a name in servers, nor in links.",
  ),
  links: required(
    arrayOf(_link, "an array of [name, name] pairs"),
    "Undirected links between servers; a server only talks with the servers it is linked with.",
  ),
  places: required(_places, "The Places service that answers WHATSAT."),
  logDir: required(string(), "Directory of the log files (<Name>.log), relative to this file."),
  dataDir: withDefault(string(), "data", "Directory of the databases (<Name>.db), relative to this file."),
  certDir: withDefault(
    string(),
    "certs",
    "Directory of the herd's CA and each server's certificate and key (made on first start), relative to this file.",
  ),
  maxLineBytes: withDefault(
    integer({ min: MIN_LINE_BYTES }),
    8192,
    "Longest line accepted, in bytes; a longer one is logged and its connection closed.",
  ),
  shutdownGraceMs: withDefault(
    milliseconds(),
    2000,
    "How long shutdown waits for replies in flight, in milliseconds.",
  ),
  peers: section(_peers, "Peer link tuning."),
  limits: section(_limits, "What one server lets its clients and peers cost it."),
  records: section(_records, "What the store keeps."),
  log: section(_log, "The log files: size-based rotation."),
  dashboard: section(_dashboard, "The live dashboard of the herd."),
}, { name: "the top level", ignored: ["$schema"] });

/** The JSON Schema of `herd.config.json`, for editors (`deno task schema` writes it). */
export function herdConfigJsonSchema(): JsonSchema {
  return {
    $schema: "https://json-schema.org/draft/2020-12/schema",
    title: "herd.config.json",
    description: "The configuration of a herd of location servers: names, addresses, links, directories, settings.",
    ...HERD_CONFIG_SCHEMA.jsonSchema(),
  };
}

function _fail(source: string, message: string): never {
  throw new SyntaxError(`Invalid herd config ${source}: ${message}`);
}

function _dirname(path: string): string {
  const slash = path.lastIndexOf("/");
  return slash <= 0 ? (slash === 0 ? "/" : ".") : path.slice(0, slash);
}

/** Resolves `path` against directory `base` unless it is absolute. */
export function resolvePath(base: string, path: string): string {
  if (path.startsWith("/")) return path;
  const parts = base.split("/").filter((part) => part !== "");
  for (const part of path.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") parts.pop();
    else parts.push(part);
  }
  return "/" + parts.join("/");
}

type _RawServer = ReturnType<typeof _server.parse>;

/** A server's entry with its dial address worked out; refuses a `peerAddress` that is not `host:port`. */
function _serverConfig(name: string, raw: _RawServer): ServerConfig {
  const host = _listenHost(raw.host, `servers.${name}.host`);
  let peerDialHost = host;
  let peerDialPort = raw.peerPort;
  if (raw.peerAddress !== undefined) {
    const where = `servers.${name}.peerAddress`;
    const match = _HOST_PORT.exec(raw.peerAddress);
    if (match === null) {
      throw new ConfigValueError(`${where} must be "host:port", got ${JSON.stringify(raw.peerAddress)}`);
    }
    peerDialHost = match[1];
    if (peerDialHost.includes(":") || peerDialHost.startsWith("[")) {
      const v6 = peerDialHost.startsWith("[") && peerDialHost.endsWith("]") ? _ipv6(peerDialHost) : undefined;
      if (v6 === undefined) {
        throw new ConfigValueError(
          `${where} must be "host:port", an IPv6 host in brackets ("[::1]:12100"), got ${
            JSON.stringify(raw.peerAddress)
          }`,
        );
      }
      peerDialHost = v6;
    }
    peerDialPort = port().parse(Number(match[2]), where);
  }
  const server: ServerConfig = { host, port: raw.port, peerPort: raw.peerPort, peerDialHost, peerDialPort };
  if (raw.adminPort !== undefined) server.adminPort = raw.adminPort;
  return server;
}

/** The hosts whose listeners take a port on the dashboard's 127.0.0.1 too: itself and the wildcards. */
const _DASHBOARD_CLASHES = new Set([DASHBOARD_HOST, "0.0.0.0", "::"]);

/**
 * Refuses two listeners on one `host:port`, the dashboard's among them when
 * it runs (some server has an admin port to show): it listens on 127.0.0.1.
 */
function _checkAddresses(servers: Map<string, ServerConfig>, dashboard: DashboardConfig): void {
  if ([...servers.values()].some((server) => server.adminPort !== undefined)) {
    for (const [name, server] of servers) {
      if (!_DASHBOARD_CLASHES.has(server.host)) continue;
      for (const field of ["port", "peerPort", "adminPort"] as const) {
        if (server[field] !== dashboard.port) continue;
        throw new ConfigValueError(
          `duplicate address ${netAddress(DASHBOARD_HOST, dashboard.port)}: used by dashboard.port (the dashboard ` +
            `listens on ${DASHBOARD_HOST}) and servers.${name}.${field} (on ${server.host})`,
        );
      }
    }
  }
  const addresses = new Map<string, string>();
  /** Per port, the listeners certainly on the machine of a wildcard listener (wildcard or loopback hosts). */
  const local = new Map<number, { owner: string; host: string }[]>();
  for (const [name, server] of servers) {
    const ports = [["port", server.port], ["peerPort", server.peerPort]] as [string, number][];
    if (server.adminPort !== undefined) ports.push(["adminPort", server.adminPort]);
    for (const [field, port] of ports) {
      const address = netAddress(server.host, port);
      const owner = addresses.get(address);
      if (owner !== undefined) {
        throw new ConfigValueError(`duplicate address ${address}: used by ${owner} and servers.${name}.${field}`);
      }
      addresses.set(address, `servers.${name}.${field}`);
      if (_isWildcard(server.host) || isLoopback(server.host)) {
        const listeners = local.get(port) ?? [];
        local.set(port, [...listeners, { owner: `servers.${name}.${field}`, host: server.host }]);
      }
    }
  }
  // 0.0.0.0 takes the port on every IPv4 address of its machine, :: on every address (IPv6, and IPv4 too unless
  // bindv6only is set): a loopback or wildcard listener of those families on the same port is on that machine
  // (loopback is reached from the machine itself only) and cannot listen beside it.
  for (const [port, listeners] of local) {
    const wildcard = listeners.find((listener) => _isWildcard(listener.host));
    const other = listeners.find((listener) =>
      listener !== wildcard && (!_isIPv4Wildcard(wildcard?.host) || !_isIPv6Loopback(listener.host))
    );
    if (wildcard === undefined || other === undefined) continue;
    throw new ConfigValueError(
      `duplicate address: ${wildcard.owner} listens on ${netAddress(wildcard.host, port)}, every address of its ` +
        `machine, and ${other.owner} on ${netAddress(other.host, port)}, the same port on the same machine`,
    );
  }
}

function _isIPv4Wildcard(host: string | undefined): boolean {
  return host === "0.0.0.0";
}

function _isIPv6Loopback(host: string): boolean {
  return host === "::1"; // hosts are canonical by now: IPv6 without brackets
}

function _isWildcard(host: string): boolean {
  return host === "0.0.0.0" || host === "::";
}

/** Whether `host` is a loopback address (reached from its own machine only; the admin endpoint needs no token there). */
export function isLoopback(host: string): boolean {
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host) || host === "::1" || host === "[::1]" || host === "localhost";
}

/** The base name of the CA's files in `certDir` (`ca.crt`, `ca.key`): no server may be named so. */
const _CA_BASENAME = "ca";

/**
 * Refuses server names whose files would clash: a server named `ca` (in any
 * case) would share the CA's `ca.crt` and `ca.key` in `certDir` (so renewing
 * its certificate would replace the herd's CA, and its permission flags would
 * grant reading the CA's key), and two names that differ only in case share
 * their certificate, key, log and database files on a case-insensitive
 * filesystem (macOS, Windows), so they are refused on every filesystem.
 */
function _checkNames(servers: Map<string, ServerConfig>): void {
  const seen = new Map<string, string>();
  for (const name of servers.keys()) {
    const folded = name.toLowerCase();
    if (folded === _CA_BASENAME) {
      throw new ConfigValueError(
        `server name "${name}" is taken by the herd's CA, whose files in certDir are ${_CA_BASENAME}.crt and ` +
          `${_CA_BASENAME}.key: choose another name`,
      );
    }
    const other = seen.get(folded);
    if (other !== undefined) {
      throw new ConfigValueError(
        `server names "${other}" and "${name}" differ only in case: their files (certificates, keys, logs, ` +
          "databases) would be the same on a case-insensitive filesystem",
      );
    }
    seen.set(folded, name);
  }
}

/**
 * Refuses a comma in what the permission flags name: `--allow-read`,
 * `--allow-write` and `--allow-net` take comma-separated lists, so a path or
 * a host holding one would be cut in two (and the server denied what it
 * needs, or allowed something else).
 */
function _checkFlagValues(
  path: string,
  dirs: { logDir: string; dataDir: string; certDir: string },
  servers: Map<string, ServerConfig>,
  places: PlacesConfig,
): void {
  const refuse = (what: string, value: string) => {
    throw new ConfigValueError(
      `${what} holds a comma (${JSON.stringify(value)}), which Deno's permission flags cannot name (their lists ` +
        "are comma-separated): choose one without",
    );
  };
  // The file's own path is told apart from a key by the word "path": it is in every message already.
  if (path.includes(",")) refuse("the path of the config file", path);
  for (const [key, dir] of Object.entries(dirs)) {
    if (dir.includes(",")) refuse(key, dir);
    // Not a flag's matter, but found here with the rest: the system takes no path holding one.
    if (dir.includes("\0")) {
      throw new ConfigValueError(`${key} holds a NUL character (${JSON.stringify(dir)}): no path can`);
    }
  }
  for (const [name, server] of servers) {
    if (server.peerDialHost.includes(",")) refuse(`servers.${name}.peerAddress`, server.peerDialHost);
  }
  for (const key of ["url", "newUrl"] as const) {
    if (new URL(places[key]).hostname.includes(",")) refuse(`places.${key}'s host`, places[key]);
  }
}

/**
 * Refuses a `dataDir` or `logDir` that is `certDir`, holds it or lies in it,
 * or that holds the config file. A server may read and write its data and
 * log directories (its permission flags name them whole); apart from them it
 * may read only its own certificate and key and the CA certificate, and not
 * write its config. Sharing a directory would give it every server's key,
 * the CA's key, or its own config to rewrite. (Links are not followed.)
 */
function _checkDirsApart(configFile: string, dirs: { logDir: string; dataDir: string; certDir: string }): void {
  const normal = (path: string) => resolvePath("/", "." + path);
  const within = (inner: string, outer: string) => {
    const [a, b] = [normal(inner), normal(outer)];
    return a === b || a.startsWith(b === "/" ? "/" : `${b}/`);
  };
  for (const key of ["dataDir", "logDir"] as const) {
    const dir = dirs[key];
    if (within(dir, dirs.certDir) || within(dirs.certDir, dir)) {
      throw new ConfigValueError(
        `${key} (${dir}) and certDir (${dirs.certDir}) overlap: a server may read and write all of its ${key}, ` +
          "which would let it read every server's key: give each its own directory",
      );
    }
    if (within(configFile, dir)) {
      throw new ConfigValueError(
        `${key} (${dir}) holds the config file (${configFile}): a server may write all of its ${key}, which would ` +
          'let it rewrite its config: give it a directory of its own ("data" and "logs" next to the config, say)',
      );
    }
  }
}

/** Refuses a retired name given twice, or that is also a server's. */
function _checkRetired(retired: string[], servers: Map<string, ServerConfig>): void {
  const seen = new Set<string>();
  for (const [index, name] of retired.entries()) {
    if (servers.has(name)) {
      throw new ConfigValueError(
        `retiredServers[${index}] is "${name}", a server in servers: a server is either in the herd or retired`,
      );
    }
    if (seen.has(name)) throw new ConfigValueError(`retiredServers[${index}] repeats "${name}"`);
    seen.add(name);
  }
}

/** Refuses links naming unknown or retired servers, linking a server to itself, or given twice. */
function _checkLinks(links: [string, string][], servers: Map<string, ServerConfig>, retired: string[]): void {
  const known = [...servers.keys()].join(", ");
  const seen = new Set<string>();
  for (const [index, [a, b]] of links.entries()) {
    for (const end of [a, b]) {
      if (retired.includes(end)) {
        throw new ConfigValueError(`links[${index}] names "${end}", a retired server (in retiredServers)`);
      }
      if (!servers.has(end)) {
        throw new ConfigValueError(`links[${index}] names unknown server "${end}": expected one of ${known}`);
      }
    }
    if (a === b) throw new ConfigValueError(`links[${index}] links "${a}" to itself`);
    const key = a < b ? `${a}\n${b}` : `${b}\n${a}`;
    if (seen.has(key)) throw new ConfigValueError(`links[${index}] repeats the link ${a}-${b}`);
    seen.add(key);
  }
}

/**
 * The path (`servers.Hill.port`, `links.0`) of the first key that appears
 * twice in one object of `text`, which must be valid JSON; undefined when
 * there is none.
 */
export function duplicateJsonKey(text: string): string | undefined {
  interface Frame {
    keys?: Set<string>;
    index: number;
    key?: string;
    awaitingKey: boolean;
  }
  // Each frame holds only its own place; the path is put together only for a duplicate, so however deep the nesting,
  // the work stays linear in the text.
  const stack: Frame[] = [];
  const label = (frame: Frame): string => frame.keys === undefined ? String(frame.index) : frame.key ?? "";
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === "{") stack.push({ keys: new Set(), index: 0, awaitingKey: true });
    else if (c === "[") stack.push({ index: 0, awaitingKey: false });
    else if (c === "}" || c === "]") stack.pop();
    else if (c === ",") {
      const top = stack.at(-1);
      if (top?.keys !== undefined) top.awaitingKey = true;
      else if (top !== undefined) top.index++;
    } else if (c === '"') {
      let end = i + 1;
      while (text[end] !== '"') end += text[end] === "\\" ? 2 : 1;
      const top = stack.at(-1);
      if (top?.keys !== undefined && top.awaitingKey) {
        const key = JSON.parse(text.slice(i, end + 1)) as string;
        if (top.keys.has(key)) return [...stack.slice(0, -1).map(label), key].join(".");
        top.keys.add(key);
        top.key = key;
        top.awaitingKey = false;
      }
      i = end;
    }
  }
  return undefined;
}

/**
 * Parses and validates config text. `path` must be absolute: relative
 * directories in the file are resolved against its folder. Throws a
 * SyntaxError that names the file and the problem.
 */
export function parseConfig(text: string, path: string): HerdConfig {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    _fail(path, `not JSON (${(error as Error).message})`);
  }
  // JSON.parse keeps the last of two equal keys: one of the two values would be dropped without a word.
  const duplicate = duplicateJsonKey(text);
  if (duplicate !== undefined) _fail(path, `${duplicate} is given twice: keep one`);
  try {
    const raw = HERD_CONFIG_SCHEMA.parse(json, "");
    const servers = new Map<string, ServerConfig>();
    for (const [name, server] of raw.servers) servers.set(name, _serverConfig(name, server));
    if (servers.size === 0) throw new ConfigValueError("servers must name at least one server");
    _checkNames(servers);
    _checkAddresses(servers, raw.dashboard);
    _checkRetired(raw.retiredServers, servers);
    _checkLinks(raw.links, servers, raw.retiredServers);
    if (raw.peers.reconnectMaxMs < raw.peers.reconnectMinMs) {
      throw new ConfigValueError("peers.reconnectMaxMs must not be less than peers.reconnectMinMs");
    }
    if (raw.peers.heartbeatTimeoutMs < 2 * raw.peers.heartbeatMs) {
      throw new ConfigValueError(
        "peers.heartbeatTimeoutMs must be at least twice peers.heartbeatMs: a link would be closed before its " +
          "neighbour could answer a heartbeat",
      );
    }
    if (raw.peers.broadcast === "tree" && raw.peers.ackScope === "herd") {
      // A server cut off from its parent in a tree gets the record only from the next reconciliation, so a reply
      // that waited on the tree would not mean what ackScope herd promises (every reachable server holds it).
      throw new ConfigValueError(
        'peers.broadcast "tree" cannot be combined with peers.ackScope "herd": use "flood" for a herd-wide reply',
      );
    }
    const base = _dirname(path);
    const logDir = resolvePath(base, raw.logDir);
    const dataDir = resolvePath(base, raw.dataDir);
    const certDir = resolvePath(base, raw.certDir);
    _checkFlagValues(path, { logDir, dataDir, certDir }, servers, raw.places);
    _checkDirsApart(resolvePath(base, path.slice(path.lastIndexOf("/") + 1)), { logDir, dataDir, certDir });
    return {
      servers,
      // A copy: the schema's default is one array, shared by every config that leaves the key out.
      retiredServers: [...raw.retiredServers],
      links: raw.links,
      places: raw.places,
      logDir,
      dataDir,
      certDir,
      maxLineBytes: raw.maxLineBytes,
      shutdownGraceMs: raw.shutdownGraceMs,
      peers: { ...raw.peers, broadcast: raw.peers.broadcast ?? (raw.peers.ackScope === "herd" ? "flood" : "tree") },
      limits: raw.limits,
      records: raw.records,
      log: raw.log,
      dashboard: raw.dashboard,
      path,
    };
  } catch (error) {
    if (error instanceof ConfigValueError) _fail(path, error.message);
    throw error;
  }
}

/** Reads and validates the config file at `path` (relative to the working directory or absolute). */
export async function loadConfig(path: string): Promise<HerdConfig> {
  const absolute = resolvePath(Deno.cwd(), path);
  let text: string;
  try {
    text = await Deno.readTextFile(absolute);
  } catch (error) {
    throw new Error(`Cannot read herd config ${absolute}: ${(error as Error).message}`);
  }
  return parseConfig(text, absolute);
}

/** The neighbours of `name`, in link order. */
export function neighboursOf(config: HerdConfig, name: string): string[] {
  const result: string[] = [];
  for (const [a, b] of config.links) {
    if (a === name) result.push(b);
    else if (b === name) result.push(a);
  }
  return result;
}

/** Returns the server named `name`, or throws a RangeError listing the valid names. */
export function serverNamed(config: HerdConfig, name: string): ServerConfig {
  const server = config.servers.get(name);
  if (server === undefined) {
    throw new RangeError(`Unknown server "${name}": expected one of ${[...config.servers.keys()].join(", ")}`);
  }
  return server;
}

/** The config the tasks read when given no `--config`: `herd.config.json` beside `deno.json`, where `deno task` runs. */
const _TASKS_CONFIG = decodeURIComponent(new URL("../../herd.config.json", import.meta.url).pathname);

/**
 * The `deno task` command line that runs `task` with `args` on `config`, as
 * a message tells a user to run it: with `--config PATH` unless the config
 * is the one the tasks read by default, so that the command acts on this
 * herd and not on the project's own.
 */
export function taskCommand(config: HerdConfig, task: string, args = ""): string {
  const command = `deno task ${task}${args === "" ? "" : ` ${args}`}`;
  return config.path === _TASKS_CONFIG ? command : `${command} --config ${_shellWord(config.path)}`;
}

/** `text` as one word of a POSIX shell command: as it is when that is safe, else in single quotes. */
function _shellWord(text: string): string {
  return /^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replaceAll("'", `'\\''`)}'`;
}

/** The files of a herd's certificate directory. */
export interface CertFiles {
  /** The CA's certificate: every server trusts it. */
  ca: string;
  /** The CA's key: only `deno task certs` reads it, to make and renew server certificates. */
  caKey: string;
  /** A server's certificate. */
  cert(name: string): string;
  /** A server's key. */
  key(name: string): string;
}

/** Where the certificates of `config` live. */
export function certFiles(config: HerdConfig): CertFiles {
  const dir = config.certDir;
  return {
    ca: `${dir}/${_CA_BASENAME}.crt`,
    caKey: `${dir}/${_CA_BASENAME}.key`,
    cert: (name) => `${dir}/${name}.crt`,
    key: (name) => `${dir}/${name}.key`,
  };
}

/** Warnings about a valid but doubtful herd: a graph that is not connected. */
export function configWarnings(config: HerdConfig): string[] {
  const names = [...config.servers.keys()];
  const reached = new Set<string>([names[0]]);
  const todo = [names[0]];
  while (todo.length > 0) {
    for (const next of neighboursOf(config, todo.pop()!)) {
      if (!reached.has(next)) {
        reached.add(next);
        todo.push(next);
      }
    }
  }
  if (reached.size === names.length) return [];
  const apart = names.filter((name) => !reached.has(name));
  return [
    `The herd is not connected: ${apart.join(", ")} cannot be reached from ${
      names[0]
    }, so records will not reach every server`,
  ];
}
