/**
 * Lines over a `node:net` or `node:tls` socket (the peer links): the push
 * side of the herd's line reading. Each chunk the socket delivers is split
 * into lines and decoded ({@linkcode TextLineSplitter}: the same lines as
 * the client side's splitter, decoded a chunk at a time), and its lines are
 * handed over at once, in the socket's own event: no await per chunk.
 * Writes are whole batches; the caller waits for
 * {@linkcode LineSocket.drained} when a write says the socket is full.
 */

import type { Socket } from "node:net";
import { TextLineSplitter } from "./line_stream.ts";

/** Options for {@linkcode LineSocket}. */
export interface LineSocketOptions {
  /** Longest line accepted, without its `\n`; a longer one closes the socket after `onOverflow`. */
  maxLineBytes: number;
  /** The complete lines of one chunk, without their `\n`, decoded as UTF-8. */
  onLines(lines: string[]): void;
  /** A line passed the cap: the socket is closed right after. */
  onOverflow?(): void;
}

const _encoder = new TextEncoder();

/**
 * How long reads of bulk work ({@linkcode LineSocket.bulk}) may come back to
 * back before the socket stops reading for {@linkcode _BREATHER_MS}, in
 * milliseconds; and the gap between two that ends a run of them. A run is
 * about as long as the server's other sockets wait for a look while a
 * catch-up comes in: during one of a million records (its sender keeping
 * to its window, peer/bulk_window.ts), 50 ms with a breath of 5 left the
 * clients waiting 108-377 ms at the 99th percentile, this 65-138 ms, for a
 * catch-up about 10% longer (`deno task bench:stall`, docs/PERFORMANCE.md).
 */
const _BULK_RUN_MS = 10;
const _BULK_GAP_MS = 10;
/**
 * How long such a socket stops reading, in milliseconds. While a socket
 * always has data waiting, Deno's event loop keeps reading it and looks at
 * the other sockets only now and then (seconds apart, measured): clients,
 * the admin port and the other links starve. A pause leaves it nothing to
 * do, so it waits, and in waiting sees them all; under TLS only if the
 * pause stops the reads of the TCP socket too ({@linkcode stopReading}).
 * The shortest timer does: the wait, not its length, is what lets the
 * others in.
 */
const _BREATHER_MS = 1;

/** What {@linkcode _tcpUnderTls} finds: the reading switch of a TCP handle. */
interface _TcpReads {
  readStop(): unknown;
  readStart(): unknown;
}

/**
 * The TCP handle under a `node:tls` socket, in Deno (2.9): its TLS handle's
 * `_parent`; undefined for a plain socket, or where Deno keeps it elsewhere.
 * Pausing a TLS socket stops its `data` events but not its reads of the TCP
 * socket (measured: a paused TLS socket went on reading 600 MB in 2 s, kept
 * in memory), so a pause of reading must stop this handle too.
 */
function _tcpUnderTls(socket: Socket): _TcpReads | undefined {
  const handle = (socket as { _handle?: { _parent?: Partial<_TcpReads> } })._handle;
  const tcp = handle?._parent;
  return typeof tcp?.readStop === "function" && typeof tcp.readStart === "function" ? tcp as _TcpReads : undefined;
}

/**
 * Stops reading `socket` until {@linkcode startReading}: no more `data`
 * events, and no more reads of the socket, so that the other end's writes
 * wait in the kernel's buffers and then in its own. `socket.pause()` alone
 * does that for a plain socket only (see {@linkcode _tcpUnderTls}).
 */
export function stopReading(socket: Socket): void {
  socket.pause();
  _tcpUnderTls(socket)?.readStop();
}

/** Reads `socket` again after {@linkcode stopReading}. */
export function startReading(socket: Socket): void {
  socket.resume();
  _tcpUnderTls(socket)?.readStart();
}

/** A socket read as lines and written in batches. */
export class LineSocket {
  /** Settles once the socket is closed, whoever closed it; never rejects. */
  readonly closed: Promise<void>;
  #socket: Socket;
  #error: Error | undefined;
  #drainWaiters: (() => void)[] = [];
  #isClosed = false;
  /** When the run of bulk reads began, and when the last one was handled (`performance.now()`). */
  #bulkSince = 0;
  #bulkLast = -Infinity;
  #pausedForBreath = false;

  /** Starts reading `socket`. */
  constructor(socket: Socket, options: LineSocketOptions) {
    this.#socket = socket;
    const splitter = new TextLineSplitter(options.maxLineBytes);
    socket.on("data", (chunk: Uint8Array) => {
      if (this.#isClosed) return;
      // A plain view, not the Buffer: Buffer's slice() shares memory, and the splitter's must copy.
      const batch = splitter.push(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
      if (batch.lines.length > 0) options.onLines(batch.lines);
      if (batch.overflow) {
        options.onOverflow?.();
        this.destroy();
      }
    });
    socket.on("end", () => {
      const last = splitter.end();
      if (last !== null && !this.#isClosed) options.onLines([last]);
    });
    socket.on("drain", () => this.#releaseDrainWaiters());
    // Deno's node:tls reports a broken stream (a record that cannot be decrypted) without closing the socket.
    socket.on("error", (error: Error) => {
      this.#error ??= error;
      socket.destroy();
    });
    this.closed = new Promise((resolve) => {
      socket.once("close", () => {
        this.#isClosed = true;
        this.#releaseDrainWaiters();
        resolve();
      });
    });
  }

  /** The first error the socket reported, if any. */
  get error(): Error | undefined {
    return this.#error;
  }

  /** Whether the socket has closed, or is closing: {@linkcode LineSocket.destroy} was called. */
  get isClosed(): boolean {
    return this.#isClosed;
  }

  /** Bytes written but not yet handed to the kernel. */
  get buffered(): number {
    return this.#socket.writableLength;
  }

  /** `host:port` of the other end, for the log. */
  get address(): string {
    return `${this.#socket.remoteAddress ?? "?"}:${this.#socket.remotePort ?? "?"}`;
  }

  /**
   * Writes `data` with one write. Returns false when the socket's buffer is
   * over its high-water mark: wait for {@linkcode LineSocket.drained}
   * before writing more. Nothing is written once the socket is closed.
   */
  write(data: string | Uint8Array): boolean {
    if (this.#isClosed || this.#socket.destroyed) return false;
    // Nothing to write: written. (An empty write to Deno's node socket may never say it drained.)
    if (data.length === 0) return true;
    return this.#socket.write(typeof data === "string" ? _encoder.encode(data) : data);
  }

  /**
   * The lines just handled were bulk work (a reconciliation's records, a
   * catch-up of thousands): once such reads have come back to back for
   * {@linkcode _BULK_RUN_MS}, the socket stops reading for
   * {@linkcode _BREATHER_MS}, so that a catch-up does not starve the
   * server's clients and its other sockets. Live traffic never calls this.
   */
  bulk(): void {
    const now = performance.now();
    if (now - this.#bulkLast > _BULK_GAP_MS) this.#bulkSince = now;
    this.#bulkLast = now;
    if (this.#pausedForBreath || this.#isClosed || now - this.#bulkSince < _BULK_RUN_MS) return;
    this.#pausedForBreath = true;
    stopReading(this.#socket);
    setTimeout(() => {
      this.#pausedForBreath = false;
      this.#bulkSince = this.#bulkLast = performance.now();
      if (!this.#isClosed && !this.#socket.destroyed) startReading(this.#socket);
    }, _BREATHER_MS);
  }

  /** Resolves once the socket's buffer has drained (or the socket closed). */
  drained(): Promise<void> {
    if (this.#isClosed || this.#socket.writableLength === 0 || !this.#socket.writableNeedDrain) {
      return Promise.resolve();
    }
    return new Promise((resolve) => this.#drainWaiters.push(resolve));
  }

  /** Ends our side once what was written is sent; the socket closes when the other side ends too. */
  end(): void {
    if (!this.#isClosed) this.#socket.end();
  }

  /**
   * Closes the socket now. It counts as closed at once: the rest of the
   * lines being handled (the read that made us close it) are not, no later
   * chunk is, and nothing more is written; {@linkcode LineSocket.closed}
   * settles when the socket's close comes.
   */
  destroy(): void {
    this.#isClosed = true;
    this.#socket.destroy();
  }

  #releaseDrainWaiters(): void {
    const waiters = this.#drainWaiters;
    this.#drainWaiters = [];
    for (const resolve of waiters) resolve();
  }
}
