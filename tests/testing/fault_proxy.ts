/**
 * A TCP fault proxy for peer links. One proxy sits in front of one server's
 * peer port on 127.0.0.1 and forwards to it; neighbours dial the proxy (the
 * config's `peerAddress`). The first line of each connection, `HELLO <name>`,
 * tells the proxy which neighbour is dialing, so faults are set per source:
 * pass, delay every chunk, limit the bytes per second (`throttle`),
 * black-hole the bytes (`drop`), or close the connections (`cut`). A fault set for the whole proxy applies to every
 * source without one of its own.
 */

/** What the proxy does to the traffic of one source, both directions. */
export type Fault =
  | { readonly kind: "pass" }
  | { readonly kind: "delay"; readonly ms: number }
  | { readonly kind: "drop" }
  | { readonly kind: "cut" }
  | { readonly kind: "throttle"; readonly bytesPerSecond: number };

/** Forward bytes as they come. */
export const PASS: Fault = Object.freeze({ kind: "pass" });
/** A black hole: bytes in both directions are read and discarded; the connection stays open (a close still passes). */
export const DROP: Fault = Object.freeze({ kind: "drop" });
/** Close the source's connections now, and each new one as soon as its first line names the source. */
export const CUT: Fault = Object.freeze({ kind: "cut" });

/** Hold each chunk `ms` milliseconds before forwarding it, in each direction, keeping order: a round trip costs `2 * ms`. */
export function delay(ms: number): Fault {
  if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`Delay must be a finite number of ms >= 0, got ${ms}`);
  return Object.freeze({ kind: "delay", ms });
}

/** Forward at most `bytesPerSecond` in each direction, keeping order: a slow network. */
export function throttle(bytesPerSecond: number): Fault {
  if (!Number.isFinite(bytesPerSecond) || bytesPerSecond <= 0) {
    throw new RangeError(`A throttle must be a finite number of bytes per second > 0, got ${bytesPerSecond}`);
  }
  return Object.freeze({ kind: "throttle", bytesPerSecond });
}

/** Traffic seen from one source (or from all). */
export interface FaultProxyStats {
  /** Connections accepted and identified. */
  connections: number;
  /** Connections open now. */
  open: number;
  /** Bytes forwarded, both directions. */
  forwardedBytes: number;
  /** Bytes discarded by `drop`, both directions. */
  droppedBytes: number;
}

/** Options for {@linkcode FaultProxy}. */
export interface FaultProxyOptions {
  /** Port to forward to. */
  targetPort: number;
  /** Host to forward to; `127.0.0.1` by default. */
  targetHost?: string;
  /** Port to listen on; a free one by default. */
  port?: number;
  /**
   * Every connection comes from this source (a proxy for one directed link):
   * nothing is read to find out, so bytes pass from the first one, which a
   * TLS handshake needs. Without it, the first line (`HELLO <name>`) says.
   */
  source?: string;
  /** Keep a copy of the bytes forwarded each way, up to this many (see {@linkcode FaultProxy.captured}). */
  captureBytes?: number;
}

/** The source of connections whose first line is not `HELLO <name>`. */
export const UNKNOWN_SOURCE = "";

const _HELLO = /^HELLO[ \t]+([^ \t\r\n]+)/;
const _FIRST_LINE_MAX = 1024;
const _HIGH_WATER = 1 << 20;
const _decoder = new TextDecoder();

/** A fault proxy in front of one server's peer port; close it with `await using` or {@linkcode FaultProxy.close}. */
export class FaultProxy implements AsyncDisposable {
  #listener: Deno.TcpListener;
  #target: Deno.ConnectOptions;
  #all: Fault = PASS;
  #bySource = new Map<string, Fault>();
  #connections = new Set<_Connection>();
  #stats = new Map<string, FaultProxyStats>();
  #accepting: Promise<void>;
  #closed = false;
  #captured: Uint8Array[] = [];
  #capturedBytes = 0;
  #captureLimit: number;
  #context: _Context = {
    source: undefined,
    capture: (bytes) => {
      if (this.#capturedBytes >= this.#captureLimit) return;
      const kept = bytes.slice(0, this.#captureLimit - this.#capturedBytes);
      this.#captured.push(kept);
      this.#capturedBytes += kept.length;
    },
    fault: (source) => source === undefined ? this.#all : this.faultFor(source),
    target: () => this.#target,
    stats: (source) => {
      let stats = this.#stats.get(source);
      if (stats === undefined) {
        stats = _emptyStats();
        this.#stats.set(source, stats);
      }
      return stats;
    },
  };

  /** Starts listening on 127.0.0.1 and forwarding to the target. */
  constructor(options: FaultProxyOptions) {
    this.#target = { hostname: options.targetHost ?? "127.0.0.1", port: options.targetPort };
    this.#context.source = options.source;
    this.#captureLimit = options.captureBytes ?? 0;
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: options.port ?? 0 });
    this.#accepting = this.#accept();
  }

  /** The port neighbours dial. */
  get port(): number {
    return this.#listener.addr.port;
  }

  /** `127.0.0.1:<port>`, ready for a config's `peerAddress`. */
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** The bytes forwarded so far, both directions, as captured (up to `captureBytes`). */
  captured(): Uint8Array {
    const out = new Uint8Array(this.#capturedBytes);
    let offset = 0;
    for (const piece of this.#captured) {
      out.set(piece, offset);
      offset += piece.length;
    }
    return out;
  }

  /** The fault in force for `source`: its own, else the whole proxy's. */
  faultFor(source: string): Fault {
    return this.#bySource.get(source) ?? this.#all;
  }

  /** Sets the fault for one source; `cut` closes its open connections now. */
  set(source: string, fault: Fault): void {
    this.#bySource.set(source, fault);
    for (const connection of this.#connections) {
      if (connection.source === source) connection.faultChanged();
    }
  }

  /** Sets the fault for the whole proxy, clearing every per-source fault. */
  setAll(fault: Fault): void {
    this.#bySource.clear();
    this.#all = fault;
    for (const connection of this.#connections) connection.faultChanged();
  }

  /** Counters for `source`, or summed over every source when omitted. */
  stats(source?: string): FaultProxyStats {
    if (source !== undefined) return { ...(this.#stats.get(source) ?? _emptyStats()) };
    const total = _emptyStats();
    for (const stats of this.#stats.values()) {
      total.connections += stats.connections;
      total.open += stats.open;
      total.forwardedBytes += stats.forwardedBytes;
      total.droppedBytes += stats.droppedBytes;
    }
    return total;
  }

  /** Stops listening and closes every connection. */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      try {
        this.#listener.close();
      } catch { /* already closed */ }
    }
    await this.#accepting;
    const connections = [...this.#connections];
    for (const connection of connections) connection.close();
    await Promise.all(connections.map((connection) => connection.done));
  }

  /** {@linkcode FaultProxy.close}. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #accept(): Promise<void> {
    while (!this.#closed) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.#listener.accept();
      } catch {
        return; // the listener was closed
      }
      // With the whole proxy cut and no source excepted, a new connection is turned away before it says a word.
      if (this.#closed || (this.#all.kind === "cut" && [...this.#bySource.values()].every((f) => f.kind === "cut"))) {
        conn.close();
        continue;
      }
      conn.setNoDelay(true);
      const connection = new _Connection(this.#context, conn);
      this.#connections.add(connection);
      connection.done.finally(() => this.#connections.delete(connection));
    }
  }
}

/** What a connection needs from its proxy. */
interface _Context {
  /** The source of every connection, when the proxy serves one directed link. */
  source: string | undefined;
  /** Keeps a copy of forwarded bytes (when the proxy captures). */
  capture(bytes: Uint8Array): void;
  /** The fault in force for `source` (the whole proxy's while the source is unknown). */
  fault(source: string | undefined): Fault;
  target(): Deno.ConnectOptions;
  /** Live counters of `source`. */
  stats(source: string): FaultProxyStats;
}

function _emptyStats(): FaultProxyStats {
  return { connections: 0, open: 0, forwardedBytes: 0, droppedBytes: 0 };
}

/** One direction of a connection: chunks held until due, written in order, then an optional half-close. */
class _Pipe {
  #conn: Deno.TcpConn;
  #queue: { due: number; bytes: Uint8Array | null }[] = [];
  #queuedBytes = 0;
  /** When the last bytes queued are due (a throttle counts from it). */
  #lastDue = 0;
  #wake: (() => void) | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #drained: (() => void) | undefined;
  #closed = false;
  readonly done: Promise<void>;

  constructor(conn: Deno.TcpConn, onFail: () => void) {
    this.#conn = conn;
    this.done = this.#run().catch(onFail);
  }

  /**
   * Queues `bytes` (or the end of the stream when null) to be written at
   * `due` (performance.now() time), or, at `bytesPerSecond`, once the bytes
   * before them had the time to go at that rate.
   */
  push(bytes: Uint8Array | null, due: number, bytesPerSecond?: number): void {
    if (bytesPerSecond !== undefined && bytes !== null) {
      due = Math.max(due, this.#lastDue) + bytes.length * 1000 / bytesPerSecond;
    }
    this.#lastDue = Math.max(this.#lastDue, due);
    this.#queue.push({ due, bytes });
    this.#queuedBytes += bytes?.length ?? 0;
    this.#wake?.();
  }

  /** Resolves once fewer than the high-water mark of bytes wait, so a fast reader cannot outrun a delayed writer unboundedly. */
  async belowHighWater(): Promise<void> {
    while (this.#queuedBytes >= _HIGH_WATER && !this.#closed) {
      await new Promise<void>((resolve) => this.#drained = resolve);
    }
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#wake?.();
    this.#drained?.();
  }

  async #run(): Promise<void> {
    while (!this.#closed) {
      const head = this.#queue[0];
      if (head === undefined) {
        await new Promise<void>((resolve) => this.#wake = resolve);
        this.#wake = undefined;
        continue;
      }
      const wait = head.due - performance.now();
      if (wait > 0) {
        await new Promise<void>((resolve) => {
          this.#wake = resolve;
          this.#timer = setTimeout(resolve, wait);
        });
        clearTimeout(this.#timer);
        this.#wake = undefined;
        continue;
      }
      this.#queue.shift();
      if (head.bytes === null) {
        await this.#conn.closeWrite();
        return;
      }
      for (let offset = 0; offset < head.bytes.length;) {
        offset += await this.#conn.write(head.bytes.subarray(offset));
      }
      this.#queuedBytes -= head.bytes.length;
      if (this.#queuedBytes < _HIGH_WATER) this.#drained?.();
    }
  }
}

/** One accepted connection and, once its fault lets bytes through, its upstream connection. */
class _Connection {
  /** The neighbour that dialed, once its first line is read. */
  source: string | undefined;
  readonly done: Promise<void>;
  #context: _Context;
  #client: Deno.TcpConn;
  #upstream: Deno.TcpConn | undefined;
  #opening: Promise<boolean> | undefined;
  #toUpstream: _Pipe | undefined;
  #toClient: _Pipe;
  #held: Uint8Array | undefined;
  #tasks: Promise<void>[] = [];
  #closed = false;
  #counted = false;
  #ended = 0;

  constructor(context: _Context, client: Deno.TcpConn) {
    this.#context = context;
    this.#client = client;
    this.#toClient = new _Pipe(client, () => this.close());
    this.done = this.#run();
  }

  /** Applies a new fault: closes on `cut`, opens upstream when bytes may flow again. */
  faultChanged(): void {
    if (this.source === undefined || this.#closed) return;
    const fault = this.#context.fault(this.source);
    if (fault.kind === "cut") this.close();
    else if (fault.kind !== "drop" && this.#upstream === undefined) void this.#ensureUpstream();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const conn of [this.#client, this.#upstream]) {
      try {
        conn?.close();
      } catch { /* already closed */ }
    }
    this.#toClient.close();
    this.#toUpstream?.close();
    if (this.#counted) this.#context.stats(this.source ?? UNKNOWN_SOURCE).open--;
  }

  async #run(): Promise<void> {
    try {
      await this.#pumpClient();
    } catch {
      this.close();
    }
    // Each task may start another (the client pump opens upstream, whose pump is added), so wait until none is left.
    for (let i = 0; i < this.#tasks.length; i++) await this.#tasks[i];
    await this.#opening;
    await this.#toClient.done;
    await this.#toUpstream?.done;
  }

  async #pumpClient(): Promise<void> {
    const buffer = new Uint8Array(16 * 1024);
    let head: Uint8Array = new Uint8Array(0);
    let rest: Uint8Array = new Uint8Array(0);
    let ended = false;
    while (this.#context.source === undefined) {
      const n = await this.#client.read(buffer);
      if (n === null) {
        ended = true;
        rest = new Uint8Array(0);
        break;
      }
      const joined = _concat(head, buffer.subarray(0, n));
      const newline = joined.indexOf(10);
      if (newline >= 0 || joined.length >= _FIRST_LINE_MAX) {
        const cut = newline >= 0 ? newline + 1 : joined.length;
        head = joined.slice(0, cut);
        rest = joined.slice(cut);
        break;
      }
      head = joined;
    }
    if (head.length === 0 && ended && this.#context.source === undefined) {
      this.close();
      return;
    }
    const match = _HELLO.exec(_decoder.decode(head));
    this.source = this.#context.source ?? match?.[1] ?? UNKNOWN_SOURCE;
    const stats = this.#context.stats(this.source);
    stats.connections++;
    stats.open++;
    this.#counted = true;
    if (this.#closed) return;
    const fault = this.#context.fault(this.source);
    if (fault.kind === "cut") {
      this.close();
      return;
    }
    // The first line opens the upstream connection, so it waits with it while the source is black-holed.
    this.#held = head;
    if (fault.kind !== "drop" && !await this.#ensureUpstream()) return;
    if (rest.length > 0) await this.#fromClient(rest);
    while (!ended && !this.#closed) {
      await this.#toUpstream?.belowHighWater();
      const n = await this.#client.read(buffer);
      if (n === null) break;
      await this.#fromClient(buffer.slice(0, n));
    }
    if (this.#closed) return;
    if (this.#toUpstream === undefined) this.close(); // never got through: nothing to half-close
    else this.#toUpstream.push(null, this.#due());
    this.#halfDone();
  }

  async #fromClient(bytes: Uint8Array): Promise<void> {
    const fault = this.#context.fault(this.source);
    const stats = this.#context.stats(this.source!);
    if (fault.kind === "drop" || fault.kind === "cut") {
      stats.droppedBytes += bytes.length;
      return;
    }
    if (!await this.#ensureUpstream()) return;
    stats.forwardedBytes += bytes.length;
    this.#context.capture(bytes);
    this.#toUpstream!.push(bytes, this.#due(), this.#rate());
  }

  #ensureUpstream(): Promise<boolean> {
    this.#opening ??= this.#open();
    return this.#opening;
  }

  async #open(): Promise<boolean> {
    if (this.#closed) return false;
    let upstream: Deno.TcpConn;
    try {
      upstream = await Deno.connect(this.#context.target());
    } catch {
      this.close(); // the server is down: the dialer sees its connection closed
      return false;
    }
    if (this.#closed) {
      upstream.close();
      return false;
    }
    upstream.setNoDelay(true);
    this.#upstream = upstream;
    this.#toUpstream = new _Pipe(upstream, () => this.close());
    this.#toUpstream.push(this.#held!, this.#due(), this.#rate());
    this.#context.stats(this.source!).forwardedBytes += this.#held!.length;
    this.#context.capture(this.#held!);
    this.#tasks.push(this.#pumpUpstream(upstream).catch(() => this.close()));
    return true;
  }

  async #pumpUpstream(upstream: Deno.TcpConn): Promise<void> {
    const buffer = new Uint8Array(16 * 1024);
    while (!this.#closed) {
      await this.#toClient.belowHighWater();
      const n = await upstream.read(buffer);
      if (n === null) break;
      const stats = this.#context.stats(this.source!);
      if (this.#context.fault(this.source).kind === "drop") {
        stats.droppedBytes += n;
        continue;
      }
      stats.forwardedBytes += n;
      const bytes = buffer.slice(0, n);
      this.#context.capture(bytes);
      this.#toClient.push(bytes, this.#due(), this.#rate());
    }
    if (this.#closed) return;
    this.#toClient.push(null, this.#due());
    this.#halfDone();
  }

  /** The bytes per second of a throttle on this source, if there is one. */
  #rate(): number | undefined {
    const fault = this.#context.fault(this.source);
    return fault.kind === "throttle" ? fault.bytesPerSecond : undefined;
  }

  /** When bytes read now may be written. */
  #due(): number {
    const fault = this.#context.fault(this.source);
    return performance.now() + (fault.kind === "delay" ? fault.ms : 0);
  }

  /** One direction reached its end; once both have and their pipes drained, the connection is closed. */
  #halfDone(): void {
    if (++this.#ended < 2) return;
    this.#tasks.push(
      Promise.all([this.#toClient.done, this.#toUpstream?.done]).then(() => this.close()),
    );
  }
}

function _concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return b.slice();
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
