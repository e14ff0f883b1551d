/**
 * The exact Deno permission flags one server needs, computed from the
 * config: its own listen addresses, its neighbours' peer addresses, the
 * chosen Places provider's host (none for `offline`), reading the config,
 * writing the log directory, reading and writing the data directory,
 * reading its own TLS certificate and key and the herd's CA certificate,
 * and the key variable. `serve`, `herd`, `compile` and the tests all use
 * these.
 */

import {
  ADMIN_TOKEN_VARIABLE,
  certFiles,
  type HerdConfig,
  neighboursOf,
  netAddress,
  PLACES_KEY_VARIABLE,
  serverNamed,
} from "../config/config.ts";
import { chooseProvider, providerUrl } from "../places/provider.ts";
import { DASHBOARD_HOST } from "../dashboard/address.ts";

/** Options for {@linkcode serverPermissionFlags}. */
export interface PermissionOptions {
  /**
   * Whether the server will have a Places API key: with `auto`, that picks
   * `google-new` (its host is allowed) or `offline` (no host at all).
   */
  keyPresent: boolean;
  /**
   * The real paths of `dataDir` and `logDir` where they differ from the
   * config's (a link, or under one; see `real_directories.ts`): Deno checks
   * a `stat` of an open file against its real path, so both are allowed.
   */
  realDirectories?: string[];
}

/** `host:port` of a URL, with the scheme's default port made explicit. */
export function urlAddress(url: string): string {
  const parsed = new URL(url);
  const port = parsed.port || (parsed.protocol === "https:" ? "443" : "80");
  return `${parsed.hostname}:${port}`;
}

/** The network addresses server `name` listens on or connects to. */
export function serverNetAddresses(config: HerdConfig, name: string, options: PermissionOptions): string[] {
  const self = serverNamed(config, name);
  const addresses = [netAddress(self.host, self.port), netAddress(self.host, self.peerPort)];
  if (self.adminPort !== undefined) addresses.push(netAddress(self.host, self.adminPort));
  for (const neighbour of neighboursOf(config, name)) {
    const peer = serverNamed(config, neighbour);
    addresses.push(netAddress(peer.peerDialHost, peer.peerDialPort));
  }
  const { provider } = chooseProvider(config.places.provider, options.keyPresent);
  const url = providerUrl(config.places, provider);
  if (url !== undefined) addresses.push(urlAddress(url));
  return [...new Set(addresses)];
}

/** The TLS files server `name` reads: the CA certificate, its own certificate and key (none with plain links). */
export function serverCertificateFiles(config: HerdConfig, name: string): string[] {
  if (!config.peers.tls) return [];
  const files = certFiles(config);
  return [files.ca, files.cert(name), files.key(name)];
}

/** The permission flags for running server `name` of `config`, and nothing more. */
export function serverPermissionFlags(config: HerdConfig, name: string, options: PermissionOptions): string[] {
  const directories = [config.logDir, config.dataDir];
  const real = (options.realDirectories ?? []).filter((path) => !directories.includes(path));
  return [
    `--allow-net=${serverNetAddresses(config, name, options).join(",")}`,
    // The log directory is read too: rotating a log file renames it, which Deno counts as reading.
    `--allow-read=${
      [config.path, config.dataDir, config.logDir, ...real, ...serverCertificateFiles(config, name)].join(",")
    }`,
    `--allow-write=${[...directories, ...real].join(",")}`,
    // With an admin port: the free space of <dataDir>/backups, looked at before a backup (POST /backup) is taken.
    ...(serverNamed(config, name).adminPort === undefined ? [] : ["--allow-sys=statfs"]),
    `--allow-env=${PLACES_KEY_VARIABLE}${
      serverNamed(config, name).adminPort === undefined ? "" : `,${ADMIN_TOKEN_VARIABLE}`
    }`,
  ];
}

/** The network addresses the dashboard listens on or connects to: its own port and each server's admin port. */
export function dashboardNetAddresses(config: HerdConfig): string[] {
  const addresses = [netAddress(DASHBOARD_HOST, config.dashboard.port)];
  for (const server of config.servers.values()) {
    if (server.adminPort !== undefined) addresses.push(netAddress(server.host, server.adminPort));
  }
  return [...new Set(addresses)];
}

/**
 * The permission flags of the dashboard (`main.ts dashboard-run`), and
 * nothing more: its listen address and the servers' admin addresses, reading
 * the config, and the admin token variable.
 */
export function dashboardPermissionFlags(config: HerdConfig): string[] {
  return [
    `--allow-net=${dashboardNetAddresses(config).join(",")}`,
    `--allow-read=${config.path}`,
    `--allow-env=${ADMIN_TOKEN_VARIABLE}`,
  ];
}
