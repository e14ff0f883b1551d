/**
 * The herd's configuration: one JSON file holds every name, address, link,
 * directory and Places setting. Parsing is pure; loading reads the file.
 */

/** One server of the herd. */
export interface ServerConfig {
  /** Host the server listens on and peers dial. */
  host: string;
  /** Client port (IAMAT, WHATSAT). */
  port: number;
  /** Peer port (server-to-server only). */
  peerPort: number;
  /** Where neighbours dial this server's peer port: `host:peerPort` unless a proxy or NAT sits between. */
  peerDialHost: string;
  /** Port neighbours dial; see {@linkcode ServerConfig.peerDialHost}. */
  peerDialPort: number;
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
  /** Upstream timeout in milliseconds. */
  timeoutMs: number;
  /** How long an answer is served from the cache, in milliseconds. */
  cacheTtlMs: number;
  /** Most answers the cache holds. */
  cacheEntries: number;
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
}

/** A validated herd configuration. */
export interface HerdConfig {
  /** Servers by name, in file order. */
  servers: Map<string, ServerConfig>;
  /** Undirected links, each once, as given. */
  links: [string, string][];
  places: PlacesConfig;
  /** Log directory, absolute. */
  logDir: string;
  /** Directory of the servers' databases, absolute. */
  dataDir: string;
  /** Longest accepted line in bytes, without its newline. */
  maxLineBytes: number;
  /** How long shutdown waits for replies in flight, in milliseconds. */
  shutdownGraceMs: number;
  peers: PeerConfig;
  /** Absolute path of the file this came from. */
  path: string;
}

/** The environment variable that holds the Places API key. */
export const PLACES_KEY_VARIABLE = "GOOGLE_PLACES_API_KEY";

const NAME = /^[A-Za-z0-9_.-]+$/;

function _fail(source: string, message: string): never {
  throw new SyntaxError(`Invalid herd config ${source}: ${message}`);
}

function _object(value: unknown, where: string, source: string): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    _fail(source, `${where} must be an object`);
  }
  return value as Record<string, unknown>;
}

function _port(value: unknown, where: string, source: string): number {
  if (value === undefined) _fail(source, `missing field ${where}`);
  if (!Number.isInteger(value) || (value as number) < 1 || (value as number) > 65535) {
    _fail(source, `${where} must be an integer port from 1 to 65535, got ${JSON.stringify(value)}`);
  }
  return value as number;
}

function _string(value: unknown, where: string, source: string): string {
  if (value === undefined) _fail(source, `missing field ${where}`);
  if (typeof value !== "string" || value === "") {
    _fail(source, `${where} must be a non-empty string, got ${JSON.stringify(value)}`);
  }
  return value;
}

function _positive(value: unknown, fallback: number, where: string, source: string): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || (value as number) <= 0) {
    _fail(source, `${where} must be a positive integer, got ${JSON.stringify(value)}`);
  }
  return value as number;
}

function _httpUrl(value: unknown, where: string, source: string): string {
  const url = _string(value, where, source);
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    _fail(source, `${where} is not a URL: ${JSON.stringify(url)}`);
  }
  if (parsed.protocol !== "https:" && parsed.protocol !== "http:") {
    _fail(source, `${where} must be http or https, got ${JSON.stringify(url)}`);
  }
  return url;
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

/**
 * Parses and validates config text. `path` must be absolute: relative
 * directories in the file are resolved against its folder. Throws a
 * SyntaxError that names the problem.
 */
export function parseConfig(text: string, path: string): HerdConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    _fail(path, `not JSON (${(error as Error).message})`);
  }
  const top = _object(raw, "the top level", path);
  if (top.servers === undefined) _fail(path, "missing field servers");
  const serversRaw = _object(top.servers, "servers", path);
  const servers = new Map<string, ServerConfig>();
  const addresses = new Map<string, string>();
  for (const [name, value] of Object.entries(serversRaw)) {
    if (!NAME.test(name)) {
      _fail(path, `server name ${JSON.stringify(name)} must be letters, digits, "_", "." or "-"`);
    }
    const entry = _object(value, `servers.${name}`, path);
    const host = _string(entry.host, `servers.${name}.host`, path);
    const peerPort = _port(entry.peerPort, `servers.${name}.peerPort`, path);
    let peerDialHost = host;
    let peerDialPort = peerPort;
    if (entry.peerAddress !== undefined) {
      const where = `servers.${name}.peerAddress`;
      const match = /^(.+):([0-9]+)$/.exec(_string(entry.peerAddress, where, path));
      if (match === null) _fail(path, `${where} must be "host:port", got ${JSON.stringify(entry.peerAddress)}`);
      peerDialHost = match[1];
      peerDialPort = _port(Number(match[2]), where, path);
    }
    const server = {
      host,
      port: _port(entry.port, `servers.${name}.port`, path),
      peerPort,
      peerDialHost,
      peerDialPort,
    };
    for (const [field, port] of [["port", server.port], ["peerPort", server.peerPort]] as const) {
      const address = `${server.host}:${port}`;
      const owner = addresses.get(address);
      if (owner !== undefined) {
        _fail(path, `duplicate address ${address}: used by ${owner} and servers.${name}.${field}`);
      }
      addresses.set(address, `servers.${name}.${field}`);
    }
    servers.set(name, server);
  }
  if (servers.size === 0) _fail(path, "servers must name at least one server");
  const known = [...servers.keys()].join(", ");

  if (top.links === undefined) _fail(path, "missing field links");
  if (!Array.isArray(top.links)) _fail(path, "links must be an array of [name, name] pairs");
  const links: [string, string][] = [];
  const seen = new Set<string>();
  for (const [index, link] of top.links.entries()) {
    if (!Array.isArray(link) || link.length !== 2 || link.some((end) => typeof end !== "string")) {
      _fail(path, `links[${index}] must be a pair of server names, got ${JSON.stringify(link)}`);
    }
    const [a, b] = link as [string, string];
    for (const end of [a, b]) {
      if (!servers.has(end)) {
        _fail(path, `links[${index}] names unknown server "${end}": expected one of ${known}`);
      }
    }
    if (a === b) _fail(path, `links[${index}] links "${a}" to itself`);
    const key = a < b ? `${a}\n${b}` : `${b}\n${a}`;
    if (seen.has(key)) _fail(path, `links[${index}] repeats the link ${a}-${b}`);
    seen.add(key);
    links.push([a, b]);
  }

  if (top.places === undefined) _fail(path, "missing field places");
  const placesRaw = _object(top.places, "places", path);
  const provider = placesRaw.provider === undefined ? "auto" : placesRaw.provider;
  if (!PLACES_PROVIDERS.includes(provider as PlacesProviderSetting)) {
    _fail(path, `places.provider must be one of ${PLACES_PROVIDERS.join(", ")}, got ${JSON.stringify(provider)}`);
  }
  const places: PlacesConfig = {
    provider: provider as PlacesProviderSetting,
    url: _httpUrl(placesRaw.url, "places.url", path),
    newUrl: placesRaw.newUrl === undefined ? GOOGLE_NEW_URL : _httpUrl(placesRaw.newUrl, "places.newUrl", path),
    timeoutMs: _positive(placesRaw.timeoutMs, 5000, "places.timeoutMs", path),
    cacheTtlMs: _positive(placesRaw.cacheTtlMs, 300_000, "places.cacheTtlMs", path),
    cacheEntries: _positive(placesRaw.cacheEntries, 10_000, "places.cacheEntries", path),
  };

  const base = _dirname(path);
  const logDir = resolvePath(base, _string(top.logDir, "logDir", path));
  const dataDir = resolvePath(base, top.dataDir === undefined ? "data" : _string(top.dataDir, "dataDir", path));
  const peersRaw = top.peers === undefined ? {} : _object(top.peers, "peers", path);
  const ackScope = peersRaw.ackScope === undefined ? "neighbours" : peersRaw.ackScope;
  if (!ACK_SCOPES.includes(ackScope as AckScope)) {
    _fail(path, `peers.ackScope must be one of ${ACK_SCOPES.join(", ")}, got ${JSON.stringify(ackScope)}`);
  }
  const peers: PeerConfig = {
    reconnectMinMs: _positive(peersRaw.reconnectMinMs, 50, "peers.reconnectMinMs", path),
    reconnectMaxMs: _positive(peersRaw.reconnectMaxMs, 2000, "peers.reconnectMaxMs", path),
    ackTimeoutMs: _positive(peersRaw.ackTimeoutMs, 500, "peers.ackTimeoutMs", path),
    reconcileIntervalMs: _positive(peersRaw.reconcileIntervalMs, 5000, "peers.reconcileIntervalMs", path),
    ackScope: ackScope as AckScope,
  };
  if (peers.reconnectMaxMs < peers.reconnectMinMs) {
    _fail(path, "peers.reconnectMaxMs must not be less than peers.reconnectMinMs");
  }
  return {
    servers,
    links,
    places,
    logDir,
    dataDir,
    maxLineBytes: _positive(top.maxLineBytes, 8192, "maxLineBytes", path),
    shutdownGraceMs: _positive(top.shutdownGraceMs, 2000, "shutdownGraceMs", path),
    peers,
    path,
  };
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
