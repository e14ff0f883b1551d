/**
 * One client connection: lines from the socket go through the line reader
 * to the router, and replies go back in order through the reply queue.
 */

import { nowNs } from "../clock.ts";
import { closeQuietly } from "../net/acceptor.ts";
import { LineReader } from "../net/line_stream.ts";
import { cutForLog, log, quote } from "../logging.ts";
import { traffic } from "../traffic_log.ts";
import { commandIndex } from "../admin/metrics.ts";
import { isParts, NoReply, type Reply, type ReplyBudget, ReplyQueue } from "./reply_queue.ts";
import { decodeLine, route, type RouterContext } from "./router.ts";

/**
 * Replies a connection may have outstanding (computing, waiting, or being
 * written) before the server stops reading its commands: a client that
 * never reads holds at most this many, about 2 MB of 20-result WHATSATs.
 */
const MAX_PENDING_REPLIES = 256;

const _lossy = new TextDecoder("utf-8", { ignoreBOM: true });
const _encoder = new TextEncoder();

/**
 * A reply as the log shows it: whole, except a WHATSAT's JSON, which is
 * summed up by its size (only the first line of a reply in bytes is decoded).
 */
function _forLog(reply: Reply): string {
  if (isParts(reply)) {
    // A WHATSAT: its AT line as text, then the body's bytes (a newline, the JSON, two newlines).
    const [line, ...body] = reply;
    const bytes = body.reduce(
      (sum, part) => sum + (typeof part === "string" ? _encoder.encode(part).length : part.length),
      0,
    );
    return `${_forLog(line)}\n[${bytes - 1} bytes of JSON]`;
  }
  if (typeof reply === "string") {
    const newline = reply.indexOf("\n");
    if (newline < 0 || newline === reply.length - 1) return reply;
    return `${reply.slice(0, newline + 1)}[${reply.length - newline - 1} characters of JSON]`;
  }
  const newline = reply.indexOf(10);
  if (newline < 0 || newline === reply.length - 1) return _lossy.decode(reply);
  return `${_lossy.decode(reply.subarray(0, newline + 1))}[${reply.length - newline - 1} bytes of JSON]`;
}

/** Why a connection ended, from what ended it. */
function _closeReason(error: unknown): string {
  return error instanceof NoReply
    ? "an IAMAT could not be committed: closed without a reply"
    : `failed: ${(error as Error).message}`;
}

function _address(addr: Deno.Addr): string {
  return addr.transport === "tcp" || addr.transport === "udp" ? `${addr.hostname}:${addr.port}` : addr.transport;
}

/** A client connection being served; {@linkcode stop} makes it finish its replies and close. */
export class ClientConnection {
  /** The client's address, `host:port`, as the log names it. */
  readonly id: string;
  /** Settles once the connection is closed. */
  readonly done: Promise<void>;
  #conn: Deno.Conn;
  #reader: LineReader | undefined;
  #replies: ReplyQueue | undefined;
  #lastActive = performance.now();
  #closeReason: string | undefined;
  /** Set by {@linkcode abort}: the lines already read are not routed (their IAMATs neither stored nor flooded). */
  #aborted = false;

  /**
   * Starts serving `conn`: lines up to `maxLineBytes` go to the router in `context`; replies ready and not yet written
   * count in `budget`, when given.
   */
  constructor(conn: Deno.Conn, context: RouterContext, maxLineBytes: number, budget?: ReplyBudget) {
    this.#conn = conn;
    this.id = _address(conn.remoteAddr);
    this.done = this.#serve(context, maxLineBytes, budget);
  }

  /** Stops reading commands; replies already owed are still written. */
  stop(): void {
    this.#reader?.cancel();
  }

  /** Milliseconds a reply has been waiting for the client to read it (see {@linkcode ReplyQueue.writeWaitMs}). */
  get unreadMs(): number {
    return this.#replies?.writeWaitMs ?? 0;
  }

  /** Milliseconds since the client last sent anything or was last sent a reply; 0 while replies are pending. */
  get idleMs(): number {
    if (this.#replies !== undefined && this.#replies.size > 0) return 0;
    return performance.now() - this.#lastActive;
  }

  /** Bytes of replies ready and not yet written, as the reply budget counts them. */
  get heldReplyBytes(): number {
    return this.#replies?.heldBytes ?? 0;
  }

  /** Closes the socket now, saying why in the log's disconnect line. */
  close(reason: string): void {
    this.#closeReason ??= reason;
    this.abort();
  }

  /** Closes the socket now, replies or not; its replies no longer count in the budget. */
  abort(): void {
    this.#aborted = true;
    this.#replies?.release();
    closeQuietly(this.#conn);
  }

  async #serve(context: RouterContext, maxLineBytes: number, budget: ReplyBudget | undefined): Promise<void> {
    const client = this.id;
    const quotedClient = quote(client);
    // Through the traffic log, like the lines: a LogTape call per connection was a tenth of a server's time when
    // clients connect for one command each.
    traffic.event("client", `Client ${quotedClient} connected`);
    const replies = new ReplyQueue(this.#conn, (batch) => {
      this.#lastActive = performance.now();
      for (const reply of batch) traffic.event("client", `${quotedClient} > ${quote(cutForLog(_forLog(reply)))}`);
    }, budget);
    this.#replies = replies;
    // Bytes of a line still coming count as activity too, as any bytes read do for Redis's `timeout`: a client that
    // sends a long line slowly is not idle.
    const reader = new LineReader(this.#conn, maxLineBytes, undefined, () => this.#lastActive = performance.now());
    this.#reader = reader;
    let reason = "closed its side";
    try {
      while (true) {
        const value = await reader.read();
        if (value === null) break;
        const arrivedAt = performance.now();
        this.#lastActive = arrivedAt;
        const arrivedNs = nowNs();
        for (const line of value.lines) {
          // A client whose socket failed, or that was closed, gets nothing more: its remaining commands are not worth
          // computing.
          if (replies.failed || this.#aborted) break;
          // Decoded once, for the log and the router both; a line that is not UTF-8 is logged lossily.
          const text = decodeLine(line);
          traffic.event("client", `${quotedClient} < ${quote(cutForLog(text ?? _lossy.decode(line)))}`);
          const reply = route(context, line, arrivedNs, text);
          if (reply !== null) replies.push(reply, commandIndex(line), arrivedAt);
          // Checked per line, not per read: one read can carry hundreds of pipelined commands.
          if (replies.size >= MAX_PENDING_REPLIES) await replies.flush();
        }
        if (value.overflow) {
          reason = `sent a line longer than ${maxLineBytes} bytes`;
          log.client.warning("Client {client} sent a line longer than {max} bytes; closing the connection", {
            client,
            max: maxLineBytes,
          });
          break;
        }
        if (replies.failed || this.#aborted) break;
        // A write that failed, or a command refused without a reply, ends the connection even while it waits to read.
        replies.flush().catch((error) => this.close(_closeReason(error)));
      }
      await replies.flush();
    } catch (error) {
      reason = _closeReason(error);
    } finally {
      reader.cancel();
      this.abort();
    }
    traffic.event("client", `Client ${quotedClient} disconnected (${quote(this.#closeReason ?? reason)})`);
  }
}
