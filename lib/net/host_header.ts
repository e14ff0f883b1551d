/**
 * The `Host` check of the herd's HTTP servers (the dashboard and each
 * server's admin endpoint), against DNS rebinding: a page of another site
 * whose name it rebinds to one of our addresses can send requests to us as
 * its own origin, and read the answers. Its requests name its own site in
 * `Host`. A request is answered only when its `Host` names us by an IP
 * address, as `localhost`, or by the host the server was configured with:
 * names a page from elsewhere cannot rebind. The port is not checked: a
 * rebound page keeps the port it reaches us on, and a proxy or a port
 * mapping may change it. Also here, for both: {@linkcode sameSecret}, how
 * they compare a token or key a request carries.
 */

import { timingSafeEqual } from "node:crypto";

/** An IPv4 address in dotted decimal, each part 0-255 without leading zeros (as browsers write it). */
const _IPV4 = /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;
/** An IPv6 address in brackets, as it stands in a `Host` header. */
const _IPV6 = /^\[[0-9a-f.]*:[0-9a-f:.]*\]$/;

/** `host` as it stands in a `Host` header: lower case, an IPv6 address in brackets. */
function _asHostName(host: string): string {
  const lower = host.toLowerCase();
  return lower.includes(":") && !lower.startsWith("[") ? `[${lower}]` : lower;
}

/** The name in a `Host` header (`name`, `name:port`, `[v6]` or `[v6]:port`), lower case; undefined when malformed. */
function _headerName(header: string): string | undefined {
  const match = /^(\[[^\]]*\]|[^:\[\]]+)(?::\d{1,5})?$/.exec(header);
  return match === null ? undefined : match[1].toLowerCase();
}

/**
 * Whether a request whose `Host` header is `header` (null when it has
 * none) may be answered by a server configured to listen on `listenHost`:
 * it names the server by an IP address, as `localhost`, or as `listenHost`.
 */
export function hostHeaderAllowed(header: string | null, listenHost: string): boolean {
  if (header === null) return false;
  const name = _headerName(header);
  if (name === undefined) return false;
  return _IPV4.test(name) || _IPV6.test(name) || name === "localhost" || name === _asHostName(listenHost);
}

/** The refusal of a request {@linkcode hostHeaderAllowed} refuses, for a 403 answer: what `Host` must be. */
export function foreignHostMessage(what: string, listenHost: string): string {
  const own = _asHostName(listenHost);
  const names = _IPV4.test(own) || _IPV6.test(own) || own === "localhost"
    ? "an IP address or localhost"
    : `an IP address, localhost or ${own}`;
  return `${what} answers only a request whose Host header names it as ${names} (against DNS rebinding)\n`;
}

/**
 * The path of `request`, or undefined when its URL is not one: Deno builds
 * `request.url` from the `Host` header, and a header the check above lets
 * through (a port past 65535, `[1:2:3:4:5:6:7:8:9]`), or any header on an
 * endpoint that takes a bearer token instead, makes `new URL` throw; the
 * request is then answered 400 rather than a 500 with a stack trace on the
 * server's console.
 */
export function requestPath(request: Request): string | undefined {
  return URL.parse(request.url)?.pathname;
}

/** The answer to a request whose `Host` header makes no URL (see {@linkcode requestPath}). */
export const BAD_HOST_MESSAGE = "Bad request: the Host header is not a valid host[:port]\n";

const _secretEncoder = new TextEncoder();

/** Whether `given` is `secret` (a bearer token, the dashboard's key), compared in constant time. */
export function sameSecret(given: string, secret: string): boolean {
  const a = _secretEncoder.encode(given);
  const b = _secretEncoder.encode(secret);
  return a.length === b.length && timingSafeEqual(a, b);
}
