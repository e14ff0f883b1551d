/**
 * Asking a server's admin endpoint for JSON, as `deno task status` and the
 * dashboard's poller do: one GET with a timeout and the bearer token, the
 * answer checked to be what a herd server says. Each caller words the
 * failures its own way; what failed is told apart here, once.
 */

import { ADMIN_TOKEN_VARIABLE, netAddress } from "../config/config.ts";

/** The URL of `path` on `host`'s admin port. */
export function adminUrl(host: string, port: number, path: string): string {
  return `http://${netAddress(host, port)}${path}`;
}

/** What asking came to: the value, or which way it failed. */
export type AdminAnswer<T> =
  | { ok: true; value: T }
  | { ok: false; failure: "http"; status: number }
  | { ok: false; failure: "not-json" | "not-herd" | "timeout" }
  | {
    ok: false;
    failure: "unreachable";
    /** What the socket met, as the system said it ("Connection refused (os error 111)"). */
    detail: string;
  };

/** What to say of an admin endpoint that answered 401 to a request with `token` (or none). */
export function unauthorizedMessage(token: string | undefined): string {
  const fix = token === undefined ? `set ${ADMIN_TOKEN_VARIABLE}` : `it refused the ${ADMIN_TOKEN_VARIABLE} given`;
  return `HTTP 401: its admin endpoint wants a bearer token; ${fix}`;
}

/** What a `fetch` that threw met: its deadline, or a socket that could not reach the server. */
export function fetchFailure(
  error: unknown,
): { failure: "timeout" } | { failure: "unreachable"; detail: string } {
  if (error instanceof DOMException && error.name === "TimeoutError") return { failure: "timeout" };
  // fetch says "fetch failed"; its cause ends with what the socket met ("Connection refused (os error 111)").
  const cause = (error as Error).cause;
  const detail = cause instanceof Error ? cause.message.split(": ").at(-1)! : (error as Error).message;
  return { failure: "unreachable", detail };
}

/**
 * GETs `url` with `token` (when given) as a bearer token, waiting at most
 * `timeoutMs`; the JSON it answers, if `valid` takes it. Never rejects.
 */
export async function askAdminJson<T>(
  url: string,
  token: string | undefined,
  timeoutMs: number,
  valid: (value: unknown) => value is T,
): Promise<AdminAnswer<T>> {
  try {
    const response = await fetch(url, {
      headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
      signal: AbortSignal.timeout(timeoutMs),
    });
    if (!response.ok) {
      await response.body?.cancel();
      return { ok: false, failure: "http", status: response.status };
    }
    const text = await response.text();
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      return { ok: false, failure: "not-json" };
    }
    return valid(value) ? { ok: true, value } : { ok: false, failure: "not-herd" };
  } catch (error) {
    return { ok: false, ...fetchFailure(error) };
  }
}
