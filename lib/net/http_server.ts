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
 *   coming in, else of the oldest event stream (`text/event-stream`, which
 *   its page opens again by itself), else is answered 503 and closed;
 * - a request whose head and body have not come within
 *   {@linkcode HttpLimits.requestTimeoutMs} of the connection is closed
 *   (`Deno.serve` kept such a connection for as long as its client did);
 * - a head over {@linkcode HttpLimits.maxHeadBytes} is answered 431, a body
 *   over {@linkcode HttpLimits.maxBodyBytes} 413, a chunked one 411, a
 *   request that makes no `Request` 400;
 * - a write of the answer that waits {@linkcode HttpLimits.writeTimeoutMs}
 *   for the client to read closes the connection.
 *
 * Accepting is `acceptLoop`'s, as the client port's: a connection reset
 * before it was accepted is passed over, any other failed accept (out of
 * file descriptors) reported and tried again after a pause.
 *
 * The handler gets a `Request` as `Deno.serve` makes it, `url` built from
 * the `Host` header as sent (a header that makes no URL is left for the
 * handler to answer, see `requestPath`), and its `Response` is written with
 * its length: given by the handler (a file sent as a stream), counted once
 * read whole, or, for `text/event-stream`, the stream until it ends.
 */

import { acceptLoop, type AcceptReporter, closeQuietly } from "./acceptor.ts";
import { concatBytes, writeAll } from "./write.ts";

/** What one endpoint allows its callers. */
export interface HttpLimits {
  /**
   * Connections open at once; one more takes the place of the oldest whose request is still coming in, else of the
   * oldest event stream, else is answered 503 and closed.
   */
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
  /** Accepting failed (out of file descriptors, say); it is tried again every `retryMs`. At most once per 10 s. */
  onFailure(error: Error, retryMs: number): void;
  /** Accepting works again after a failure. At most once per 10 s. */
  onRecovered(): void;
  /** {@linkcode HTTP_LIMITS} unless given. */
  limits?: Partial<HttpLimits>;
  /** `Deno.listen`, or a stand-in for tests. */
  listen?: (options: Deno.TcpListenOptions & { transport: "tcp" }) => Deno.TcpListener;
}

const _REASONS: Record<number, string> = {
  100: "Continue",
  200: "OK",
  201: "Created",
  202: "Accepted",
  204: "No Content",
  301: "Moved Permanently",
  302: "Found",
  303: "See Other",
  304: "Not Modified",
  307: "Temporary Redirect",
  308: "Permanent Redirect",
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
/** A method or a header field's name (RFC 9110's token). */
const _TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** A request target in origin form: a path and perhaps a query, no spaces or controls. */
const _ORIGIN_FORM = /^\/[\x21-\x7e]*$/;

/** A request refused before the handler, with the status to answer it (none: the connection is just closed). */
class _Refused extends Error {
  constructor(readonly status: number | undefined, message: string) {
    super(message);
  }
}

/** One open connection: where it is, and whether it was closed to make room. */
interface _Entry {
  served: Promise<void>;
  state: "reading" | "answering" | "streaming";
  evicted: boolean;
  /** Ends the answer's body (an event stream waits for its next event, not for the socket): set while it is read. */
  stop?: () => void;
}

/** The bytes of a whole answer with a short text body. */
function _plainAnswer(status: number, text: string): Uint8Array {
  const body = _encoder.encode(text);
  return concatBytes([
    _encoder.encode(
      `HTTP/1.1 ${status} ${_REASONS[status] ?? "Status"}\r\ndate: ${new Date().toUTCString()}\r\n` +
        `content-type: text/plain; charset=utf-8\r\nconnection: close\r\ncontent-length: ${body.length}\r\n\r\n`,
    ),
    body,
  ]);
}

/** An HTTP/1.1 endpoint on one address, one request per connection, within {@linkcode HttpLimits}. */
export class ResilientHttpServer {
  /** Where it listens (the port it got, for port 0). */
  readonly addr: Deno.NetAddr;
  #limits: HttpLimits;
  #handler: HttpHandler;
  #listener: Deno.TcpListener;
  /** The open connections, oldest first. */
  #open = new Map<Deno.Conn, _Entry>();
  #stopped = false;
  #accepting: Promise<void>;

  /** Serves `handler` on `options.hostname`:`options.port`; throws when the address cannot be had. */
  constructor(options: ResilientHttpOptions, handler: HttpHandler) {
    this.#limits = { ...HTTP_LIMITS, ...options.limits };
    this.#handler = handler;
    const listen = options.listen ?? Deno.listen;
    this.#listener = listen({ hostname: options.hostname, port: options.port, transport: "tcp" });
    this.addr = this.#listener.addr;
    const reporter: AcceptReporter = { failed: options.onFailure, recovered: () => options.onRecovered() };
    this.#accepting = acceptLoop(this.#listener, "HTTP", (conn) => this.#take(conn), reporter);
  }

  /** Connections open now. */
  get connections(): number {
    return this.#open.size;
  }

  #take(conn: Deno.Conn): void {
    if (this.#stopped || (this.#open.size >= this.#limits.maxConnections && !this.#makeRoom())) {
      // One too many: a 503 if its send buffer takes it at once (it is empty), and the close.
      conn.write(_plainAnswer(503, "Too many connections; try again\n")).catch(() => {}).finally(() =>
        closeQuietly(conn)
      );
      return;
    }
    const entry: _Entry = { served: Promise.resolve(), state: "reading", evicted: false };
    this.#open.set(conn, entry);
    entry.served = this.#serve(conn, entry).finally(() => {
      this.#open.delete(conn);
      closeQuietly(conn);
    });
  }

  /**
   * Makes room for a new connection, as the peer port does for a handshake: closes the oldest one whose request is
   * still coming in (a request takes milliseconds; one that trickles in, or never comes, gives way), else the oldest
   * event stream (its page opens it again). False when every one is an answer being written.
   */
  #makeRoom(): boolean {
    for (const state of ["reading", "streaming"] as const) {
      for (const [conn, entry] of this.#open) {
        if (entry.state !== state) continue;
        this.#open.delete(conn);
        entry.evicted = true;
        _end(conn, entry);
        return true;
      }
    }
    return false;
  }

  async #serve(conn: Deno.Conn, entry: _Entry): Promise<void> {
    // The whole request within the deadline, or the connection is closed (the pending read then fails, or a request
    // read just before is not answered).
    const deadline = setTimeout(() => {
      entry.evicted = true;
      closeQuietly(conn);
    }, this.#limits.requestTimeoutMs);
    let request: Request;
    try {
      request = await this.#read(conn);
    } catch (error) {
      clearTimeout(deadline);
      entry.state = "answering";
      if (error instanceof _Refused && error.status !== undefined && !entry.evicted) {
        await this.#writeWithin(conn, _plainAnswer(error.status, error.message + "\n")).catch(() => {});
      }
      return;
    } finally {
      clearTimeout(deadline);
    }
    // Closed to make room, at the deadline or by a shutdown as its last bytes came: not answered.
    if (entry.evicted) return;
    entry.state = "answering";
    let response: Response;
    try {
      response = await this.#handler(request);
    } catch {
      response = new Response("Internal Server Error\n", { status: 500 });
    }
    if (response.headers.get("content-type")?.startsWith("text/event-stream") === true) entry.state = "streaming";
    await this.#write(conn, response, request.method, entry).catch(() => {});
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
    if (!_ORIGIN_FORM.test(target)) throw new _Refused(400, "Bad request target: a path is expected");
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
    // HTTP/1.0 clients' expectations are ignored (RFC 9110, 10.1.1).
    if (got < bodyBytes && version === "HTTP/1.1" && headers.get("expect")?.toLowerCase() === "100-continue") {
      await writeAll(conn, _encoder.encode("HTTP/1.1 100 Continue\r\n\r\n"));
    }
    while (got < bodyBytes) {
      const n = await conn.read(body.subarray(got));
      if (n === null) throw new _Refused(undefined, "closed before its body");
      got += n;
    }
    // Built on a URL of our own; `url` is then the one Deno.serve gives: from the Host header as sent.
    let request: Request;
    try {
      const upper = method.toUpperCase();
      request = new Request(`http://localhost${target}`, {
        method,
        headers,
        body: bodyBytes > 0 && upper !== "GET" && upper !== "HEAD" ? body : null,
      });
    } catch (error) {
      // A method a Request cannot have (CONNECT, TRACE), say.
      throw new _Refused(400, `Bad request: ${(error as Error).message}`);
    }
    Object.defineProperty(request, "url", {
      value: `http://${headers.get("host") ?? `localhost:${this.addr.port}`}${target}`,
    });
    return request;
  }

  /** Writes `response` and its body (none for HEAD, 204 or 304), each write within the write timeout. */
  async #write(conn: Deno.Conn, response: Response, method: string, entry: _Entry): Promise<void> {
    // Read from here on, so that it is cancelled (a file closed, an event stream left) whatever fails, the head too.
    const reader = response.body?.getReader();
    entry.stop = () => reader?.cancel().catch(() => {});
    try {
      const status = response.status;
      let head = `HTTP/1.1 ${status} ${response.statusText || _REASONS[status] || "Status"}\r\n` +
        `date: ${new Date().toUTCString()}\r\n`;
      for (const [name, value] of response.headers) {
        if (name !== "connection" && name !== "content-length" && name !== "transfer-encoding" && name !== "date") {
          head += `${name}: ${value}\r\n`;
        }
      }
      head += "connection: close\r\n";
      const given = response.headers.get("content-length");
      const streamed = given !== null || response.headers.get("content-type")?.startsWith("text/event-stream") === true;
      const bodiless = method === "HEAD" || status === 204 || status === 304;
      if (!streamed || reader === undefined || bodiless) {
        // Read whole when not streamed, for its length (HEAD's too: the length GET would be sent).
        const bytes = reader === undefined || streamed ? new Uint8Array(0) : await _readWhole(reader);
        if (status !== 204 && status !== 304) {
          if (given !== null) head += `content-length: ${given}\r\n`;
          else if (!streamed) head += `content-length: ${bytes.length}\r\n`;
        }
        const headBytes = _encoder.encode(head + "\r\n");
        return await this.#writeWithin(conn, bodiless ? headBytes : concatBytes([headBytes, bytes]));
      }
      if (given !== null) head += `content-length: ${given}\r\n`;
      await this.#writeWithin(conn, _encoder.encode(head + "\r\n"));
      while (true) {
        const { done, value } = await reader.read();
        if (done) return;
        await this.#writeWithin(conn, value);
      }
    } finally {
      entry.stop = undefined;
      reader?.cancel().catch(() => {});
    }
  }

  /** Writes all of `bytes`; a write the client does not read within the write timeout closes the connection. */
  async #writeWithin(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
    const timer = setTimeout(() => closeQuietly(conn), this.#limits.writeTimeoutMs);
    try {
      await writeAll(conn, bytes);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Stops accepting, and closes at once the connections whose request is still coming in and the event streams; the
   * answers being written are finished, for up to 5 s, then their connections closed. A handler still running then
   * (a backup being taken, say) is waited for, as `Deno.serve`'s shutdown waits: what it does is not cut off.
   */
  async shutdown(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    closeQuietly(this.#listener);
    await this.#accepting;
    const served = () => [...this.#open.values()].map((entry) => entry.served);
    for (const [conn, entry] of this.#open) {
      if (entry.state === "answering") continue;
      entry.evicted = true;
      _end(conn, entry);
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const grace = new Promise<void>((resolve) => timer = setTimeout(resolve, _SHUTDOWN_GRACE_MS));
    await Promise.race([Promise.all(served()), grace]);
    clearTimeout(timer);
    for (const [conn, entry] of this.#open) _end(conn, entry);
    await Promise.all(served());
  }
}

/** Closes `conn` and ends the body being sent on it, if any. */
function _end(conn: Deno.Conn, entry: _Entry): void {
  closeQuietly(conn);
  entry.stop?.();
}

/** A body read whole. */
async function _readWhole(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  for (let read = await reader.read(); !read.done; read = await reader.read()) chunks.push(read.value);
  return concatBytes(chunks);
}

/** Where the head in `buffer` ends (the index of its `\r\n\r\n`), searching from `from` up to `length`; -1 if not yet. */
function _blankLine(buffer: Uint8Array, from: number, length: number): number {
  for (let i = from; i + 3 < length; i++) {
    if (buffer[i] === 13 && buffer[i + 1] === 10 && buffer[i + 2] === 13 && buffer[i + 3] === 10) return i;
  }
  return -1;
}
