/**
 * The HTTP endpoint of the admin port and of the dashboard: one request per
 * connection (`connection: close`), over our own accept loop on
 * `Deno.listen`, so that it has what `Deno.serve` has no option for, as
 * Redis has `maxclients` and `timeout`:
 *
 * - at most {@linkcode HttpLimits.maxConnections} connections open at once,
 *   so callers holding connections cannot take every file descriptor of the
 *   process (with `Deno.serve`, 20,000 connections sending half a request
 *   each starved the server's client and peer ports: `Too many open
 *   files`). One more takes the place of the oldest whose request is still
 *   being read, or, when every one is being answered, is answered 503 and
 *   closed;
 * - a request whose head and body have not come within
 *   {@linkcode HttpLimits.requestTimeoutMs} of the connection is closed
 *   (`Deno.serve` kept such a connection for as long as its client did);
 * - a head over {@linkcode HttpLimits.maxHeadBytes} is answered 431, a body
 *   over {@linkcode HttpLimits.maxBodyBytes} 413, a chunked one 411;
 * - a write of the answer that waits {@linkcode HttpLimits.writeTimeoutMs}
 *   for the client to read closes the connection.
 *
 * An accept that fails (out of file descriptors: EMFILE) is reported and
 * tried again after a pause, doubled at each failure up to
 * {@linkcode MAX_RETRY_MS}; the endpoint lives on (`Deno.serve` stopped
 * accepting at the first, and its rejected `finished` ended the process).
 *
 * The handler gets a `Request` as `Deno.serve` makes it, `url` built from
 * the `Host` header as sent (a header that makes no URL is left for the
 * handler to answer, see `requestPath`), and its `Response` is written with
 * its length: given by the handler (a file sent as a stream), counted once
 * read whole, or, for `text/event-stream`, the stream until it ends.
 */

import { writeAll } from "./write.ts";

/** The first pause before accepting again after a failed accept, in milliseconds. */
export const FIRST_RETRY_MS = 100;
/** The longest pause before accepting again, in milliseconds. */
export const MAX_RETRY_MS = 5_000;

/** What one endpoint allows its callers. */
export interface HttpLimits {
  /** Connections open at once; one more is answered 503 and closed. */
  maxConnections: number;
  /** From the connection's accept to its request read whole (head and body), in milliseconds. */
  requestTimeoutMs: number;
  /** The most one write of the answer may wait for the client to read, in milliseconds. */
  writeTimeoutMs: number;
  /** The request line and headers, in bytes. */
  maxHeadBytes: number;
  /** A request's body, in bytes (the endpoints take none: `POST /backup` has none). */
  maxBodyBytes: number;
}

/** The limits of the admin port and the dashboard. */
export const HTTP_LIMITS: HttpLimits = {
  maxConnections: 64,
  requestTimeoutMs: 10_000,
  writeTimeoutMs: 30_000,
  maxHeadBytes: 16 * 1024,
  maxBodyBytes: 64 * 1024,
};

/** How long {@linkcode ResilientHttpServer.shutdown} lets the answers being written finish, in milliseconds. */
const _SHUTDOWN_GRACE_MS = 5_000;

/** Answers one request. */
export type HttpHandler = (request: Request) => Response | Promise<Response>;

/** Options for {@linkcode ResilientHttpServer}. */
export interface ResilientHttpOptions {
  /** The address to listen on. */
  hostname: string;
  /** 0 for any free port. */
  port: number;
  /** An accept failed (`error`); it tries again in `retryMs`. */
  onFailure(error: Error, retryMs: number): void;
  /** An accept succeeded after a failure. */
  onRecovered(): void;
  /** {@linkcode HTTP_LIMITS} unless given. */
  limits?: Partial<HttpLimits>;
  /** `Deno.listen`, or a stand-in for tests. */
  listen?: (options: Deno.TcpListenOptions & { transport: "tcp" }) => Deno.Listener;
}

const _REASONS: Record<number, string> = {
  200: "OK",
  201: "Created",
  202: "Accepted",
  204: "No Content",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  409: "Conflict",
  411: "Length Required",
  413: "Content Too Large",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
  503: "Service Unavailable",
  507: "Insufficient Storage",
};

const _encoder = new TextEncoder();
const _decoder = new TextDecoder();
/** A header field's name (RFC 9110's token). */
const _TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** A request refused before the handler, with the status to answer it (none: the connection is just closed). */
class _Refused extends Error {
  constructor(readonly status: number | undefined, message: string) {
    super(message);
  }
}

/** An HTTP/1.1 endpoint on one address, one request per connection, within {@linkcode HttpLimits}. */
export class ResilientHttpServer {
  /** Where it listens (the port it got, for port 0). */
  readonly addr: Deno.NetAddr;
  #options: ResilientHttpOptions;
  #limits: HttpLimits;
  #handler: HttpHandler;
  #listener: Deno.Listener;
  /** The open connections, oldest first: each one's serving, and whether its request is still being read. */
  #open = new Map<Deno.Conn, { served: Promise<void>; reading: boolean }>();
  #stopped = false;
  #accepting: Promise<void>;
  /** Ends the pause after a failed accept, at a shutdown. */
  #wake: (() => void) | undefined;

  /** Serves `handler` on `options.hostname`:`options.port`; throws when the address cannot be had. */
  constructor(options: ResilientHttpOptions, handler: HttpHandler) {
    this.#options = options;
    this.#limits = { ...HTTP_LIMITS, ...options.limits };
    this.#handler = handler;
    const listen = options.listen ?? Deno.listen;
    this.#listener = listen({ hostname: options.hostname, port: options.port, transport: "tcp" });
    this.addr = this.#listener.addr as Deno.NetAddr;
    this.#accepting = this.#accept();
  }

  /** Connections open now. */
  get connections(): number {
    return this.#open.size;
  }

  async #accept(): Promise<void> {
    let retryMs = FIRST_RETRY_MS;
    let failing = false;
    while (!this.#stopped) {
      let conn: Deno.Conn;
      try {
        conn = await this.#listener.accept();
      } catch (error) {
        if (this.#stopped) return;
        this.#options.onFailure(error as Error, retryMs);
        failing = true;
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, retryMs);
          this.#wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        this.#wake = undefined;
        retryMs = Math.min(retryMs * 2, MAX_RETRY_MS);
        continue;
      }
      if (failing) {
        failing = false;
        retryMs = FIRST_RETRY_MS;
        this.#options.onRecovered();
      }
      if (this.#stopped || (this.#open.size >= this.#limits.maxConnections && !this.#closeOldestReading())) {
        this.#refuseAtOnce(conn);
        continue;
      }
      const entry = { served: Promise.resolve(), reading: true };
      this.#open.set(conn, entry);
      entry.served = this.#serve(conn, entry).finally(() => {
        this.#open.delete(conn);
        try {
          conn.close();
        } catch { /* closed already */ }
      });
    }
  }

  /**
   * Makes room for a new connection, as the peer port does for a handshake: closes the oldest one whose request is
   * still being read (a request takes milliseconds; one that trickles in, or never comes, gives way). False when every
   * one is being answered.
   */
  #closeOldestReading(): boolean {
    for (const [conn, entry] of this.#open) {
      if (!entry.reading) continue;
      this.#open.delete(conn);
      try {
        conn.close();
      } catch { /* closed already */ }
      return true;
    }
    return false;
  }

  /** One connection too many: a 503 if its send buffer takes it at once (it is empty), and the close. */
  #refuseAtOnce(conn: Deno.Conn): void {
    const answer = _encoder.encode(
      "HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-type: text/plain\r\ncontent-length: 32\r\n\r\n" +
        "Too many connections; try again\n",
    );
    conn.write(answer).catch(() => {}).finally(() => {
      try {
        conn.close();
      } catch { /* closed already */ }
    });
  }

  async #serve(conn: Deno.Conn, entry: { reading: boolean }): Promise<void> {
    // The whole request within the deadline, or the connection is closed (the pending read then fails).
    const deadline = setTimeout(() => {
      try {
        conn.close();
      } catch { /* closed already */ }
    }, this.#limits.requestTimeoutMs);
    let request: Request;
    try {
      request = await this.#read(conn);
    } catch (error) {
      clearTimeout(deadline);
      if (error instanceof _Refused && error.status !== undefined) {
        await this.#write(conn, new Response(error.message + "\n", { status: error.status }), "GET").catch(() => {});
      }
      return;
    }
    clearTimeout(deadline);
    entry.reading = false;
    let response: Response;
    try {
      response = await this.#handler(request);
    } catch {
      response = new Response("Internal Server Error\n", { status: 500 });
    }
    await this.#write(conn, response, request.method).catch(() => {});
  }

  /** Reads one request: its head up to the blank line, then a body of its `content-length`. */
  async #read(conn: Deno.Conn): Promise<Request> {
    const { maxHeadBytes, maxBodyBytes } = this.#limits;
    let buffer = new Uint8Array(4096);
    let length = 0;
    let headEnd = -1;
    while (headEnd < 0) {
      if (length === buffer.length) {
        const grown = new Uint8Array(Math.min(buffer.length * 2, maxHeadBytes + 4));
        grown.set(buffer);
        buffer = grown;
      }
      const n = await conn.read(buffer.subarray(length));
      if (n === null) throw new _Refused(undefined, "closed before its request");
      const from = Math.max(0, length - 3);
      length += n;
      headEnd = _blankLine(buffer, from, length);
      if (headEnd < 0 && length > maxHeadBytes) throw new _Refused(431, "Request head too large");
    }
    if (headEnd > maxHeadBytes) throw new _Refused(431, "Request head too large");
    const lines = _decoder.decode(buffer.subarray(0, headEnd)).split("\r\n");
    const [method, target, version, ...extra] = lines[0].split(" ");
    if (extra.length > 0 || !_TOKEN.test(method ?? "") || !/^HTTP\/1\.[01]$/.test(version ?? "")) {
      throw new _Refused(400, "Bad request line");
    }
    if (!target.startsWith("/")) throw new _Refused(400, "Bad request target");
    const headers = new Headers();
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(":");
      const name = colon > 0 ? line.slice(0, colon) : "";
      if (!_TOKEN.test(name)) throw new _Refused(400, "Bad header line");
      try {
        headers.append(name, line.slice(colon + 1).trim());
      } catch {
        throw new _Refused(400, "Bad header value");
      }
    }
    if (headers.has("transfer-encoding")) throw new _Refused(411, "Length required: no chunked request bodies");
    const declared = headers.get("content-length");
    const bodyBytes = declared === null ? 0 : /^\d{1,15}$/.test(declared) ? Number(declared) : NaN;
    if (Number.isNaN(bodyBytes)) throw new _Refused(400, "Bad content-length");
    if (bodyBytes > maxBodyBytes) throw new _Refused(413, "Request body too large");
    const start = headEnd + 4;
    const body = new Uint8Array(bodyBytes);
    let got = Math.min(length - start, bodyBytes);
    body.set(buffer.subarray(start, start + got));
    while (got < bodyBytes) {
      const n = await conn.read(body.subarray(got));
      if (n === null) throw new _Refused(undefined, "closed before its body");
      got += n;
    }
    // Built on a URL that always parses; `url` is then the one Deno.serve gives, from the Host header as sent.
    const request = new Request(new URL(target, "http://localhost"), {
      method,
      headers,
      body: bodyBytes > 0 && method !== "GET" && method !== "HEAD" ? body : null,
    });
    Object.defineProperty(request, "url", { value: `http://${headers.get("host") ?? this.addr.hostname}${target}` });
    return request;
  }

  /** Writes `response` and its body (none for HEAD), each write within the write timeout. */
  async #write(conn: Deno.Conn, response: Response, method: string): Promise<void> {
    let head = `HTTP/1.1 ${response.status} ${response.statusText || _REASONS[response.status] || "Status"}\r\n`;
    for (const [name, value] of response.headers) {
      if (name !== "connection" && name !== "content-length" && name !== "transfer-encoding") {
        head += `${name}: ${value}\r\n`;
      }
    }
    head += "connection: close\r\n";
    const given = response.headers.get("content-length");
    const streamed = given !== null || response.headers.get("content-type")?.startsWith("text/event-stream") === true;
    if (response.body === null || !streamed || method === "HEAD") {
      // Read whole when not streamed, for its length (HEAD's too: the length GET would be sent).
      let bytes = response.body === null || streamed ? new Uint8Array(0) : new Uint8Array(await response.arrayBuffer());
      if (streamed) await response.body?.cancel();
      if (given !== null) head += `content-length: ${given}\r\n`;
      else if (!streamed) head += `content-length: ${bytes.length}\r\n`;
      if (method === "HEAD") bytes = new Uint8Array(0);
      const headBytes = _encoder.encode(head + "\r\n");
      const whole = new Uint8Array(headBytes.length + bytes.length);
      whole.set(headBytes);
      whole.set(bytes, headBytes.length);
      return this.#writeWithin(conn, whole);
    }
    if (given !== null) head += `content-length: ${given}\r\n`;
    await this.#writeWithin(conn, _encoder.encode(head + "\r\n"));
    const reader = response.body.getReader();
    try {
      while (true) {
        const { done, value } = await reader.read();
        if (done) return;
        await this.#writeWithin(conn, value);
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  /** Writes all of `bytes`; a write the client does not read within the write timeout closes the connection. */
  async #writeWithin(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
    const timer = setTimeout(() => {
      try {
        conn.close();
      } catch { /* closed already */ }
    }, this.#limits.writeTimeoutMs);
    try {
      await writeAll(conn, bytes);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Stops accepting; the answers being written are finished, for up to 5 s, then their connections closed. */
  async shutdown(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#wake?.();
    try {
      this.#listener.close();
    } catch { /* closed already */ }
    await this.#accepting;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const grace = new Promise<void>((resolve) => timer = setTimeout(resolve, _SHUTDOWN_GRACE_MS));
    await Promise.race([Promise.all([...this.#open.values()].map((entry) => entry.served)), grace]);
    clearTimeout(timer);
    for (const conn of this.#open.keys()) {
      try {
        conn.close();
      } catch { /* closed already */ }
    }
    await Promise.all([...this.#open.values()].map((entry) => entry.served));
  }
}

/** Where the head in `buffer` ends (the index of its `\r\n\r\n`), searching from `from` up to `length`; -1 if not yet. */
function _blankLine(buffer: Uint8Array, from: number, length: number): number {
  for (let i = from; i + 3 < length; i++) {
    if (buffer[i] === 13 && buffer[i + 1] === 10 && buffer[i + 2] === 13 && buffer[i + 3] === 10) return i;
  }
  return -1;
}
