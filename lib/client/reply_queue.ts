/**
 * Replies to one connection, in command order, in as few writes as
 * possible. A reply may be ready at once or later (a WHATSAT waiting on
 * Places, an IAMAT waiting on its flood); replies that are ready behind the
 * head wait for it, then go out together in one write, of at most
 * {@linkcode MAX_WRITE_BYTES} (or one larger reply alone).
 */

import { metrics } from "../admin/metrics.ts";
import { LogBudget } from "../log_budget.ts";
import { cutForLog, log } from "../logging.ts";
import { type Part, writeParts } from "../net/write.ts";

/** Handlers that failed: a client that can make one fail must not fill the log with it. */
const _handlerFailures = new LogBudget(10, (count) => {
  log.client.error("{count} more commands' handlers failed, and their clients got no reply", { count });
});

/**
 * A reply: text, raw bytes (an echo of a line that was not UTF-8), or parts
 * written one after another (a WHATSAT: its AT line, then pieces of the
 * cached body, which are copied once, into the write's buffer).
 */
export type Reply = Part | readonly Part[];

/** Whether a reply (or a reply to come) is one in parts. */
export function isParts(reply: Reply | Promise<Reply>): reply is readonly Part[] {
  return Array.isArray(reply);
}

/**
 * The reason a command gets no reply at all: the replies before it are
 * written, then the connection is closed (an IAMAT whose record could not
 * be committed: the client may try another server).
 */
export class NoReply extends Error {
  /** The error's name. */
  override name = "NoReply";
}

/**
 * The bytes one write gathers at most (a larger reply goes in a write of
 * its own): a client that stops reading holds one write's buffer pending,
 * and 256 twenty-result WHATSATs in one write were 1.9 MB a connection; the
 * replies behind wait as references, a cached body shared by all.
 */
export const MAX_WRITE_BYTES = 64 * 1024;

/** The most bytes `part` encodes to: text at three bytes a UTF-16 unit, its UTF-8 worst case (no encoding twice). */
function _partBound(part: Part): number {
  return typeof part === "string" ? part.length * 3 : part.length;
}

/** The most bytes `reply` writes. */
function _sizeBound(reply: Reply): number {
  if (!isParts(reply)) return _partBound(reply);
  let size = 0;
  for (const part of reply) size += _partBound(part);
  return size;
}

/** A slot that closes the connection instead of holding a reply. */
const _CLOSE = Symbol("close");

/**
 * The bytes of replies that a server's clients have not read yet, across
 * its connections (`limits.maxReplyBytes`, as Redis's `maxmemory-clients`):
 * a reply counts from when it is ready until its write is done, text at a
 * byte a character, bytes at their length, and a WHATSAT's body once for
 * all the replies of a connection that share it (a cached answer's). Past
 * the limit, `onOver` is called, to close connections until the count is
 * back under it.
 */
export class ReplyBudget {
  /** The bytes counted now. */
  held = 0;
  /** The most bytes before `onOver` is called. */
  readonly limit: number;
  #onOver: () => void;

  /** `onOver` is called whenever a reply takes the count past `limit`. */
  constructor(limit: number, onOver: () => void) {
    this.limit = limit;
    this.#onOver = onOver;
  }

  /** Counts `bytes` more; past the limit, calls `onOver`. */
  add(bytes: number): void {
    this.held += bytes;
    if (this.held > this.limit) this.#onOver();
  }
}

interface _Slot {
  value: Reply | typeof _CLOSE | undefined;
  /** The bytes the budget counts for `value` itself (its text, bytes or AT line; not a body), once it is ready. */
  bytes: number;
  pending: Promise<void> | undefined;
  /** Which latency series the reply counts in (`commandIndex()`), and when its line arrived (`performance.now()`). */
  kind: number;
  arrivedAt: number;
}

/** Ordered reply writer for one connection. */
export class ReplyQueue {
  #conn: Deno.Conn;
  #slots: _Slot[] = [];
  #head = 0;
  #flushing: Promise<void> | undefined;
  #failed: unknown;
  #writing = 0;
  /** When the write in progress began (`performance.now()`); undefined between writes. */
  #writeBegan: number | undefined;
  #onSent: (replies: Reply[]) => void;
  #budget: ReplyBudget | undefined;
  /** Bytes of this queue's ready replies not yet written, counted in `#budget`; undefined once released. */
  #held: number | undefined = 0;
  /** How many of the counted replies hold each body (the buffer of a WHATSAT's parts after the first). */
  #bodies: Map<ArrayBufferLike, number> | undefined;

  /**
   * `onSent` sees each batch of replies after it is written (for logging); `budget`, when given, counts the replies
   * from when they are ready until their write is done, or until {@linkcode release}.
   */
  constructor(conn: Deno.Conn, onSent: (replies: Reply[]) => void = () => {}, budget?: ReplyBudget) {
    this.#conn = conn;
    this.#onSent = onSent;
    this.#budget = budget;
  }

  /** Bytes of replies ready and not yet written (as the budget counts them); 0 once released. */
  get heldBytes(): number {
    return this.#held ?? 0;
  }

  /**
   * Takes this queue's replies out of the budget, now and for good (the
   * connection is closing, or closed): replies ready later are not counted.
   */
  release(): void {
    if (this.#held === undefined) return;
    if (this.#budget !== undefined) this.#budget.held -= this.#held;
    this.#held = undefined;
    this.#bodies = undefined;
  }

  /** Counts a reply now ready (its bodies once for the queue), as long as the queue is not released. */
  #hold(slot: _Slot, reply: Reply): void {
    if (this.#held === undefined || this.#budget === undefined) return;
    let own = 0;
    let bodies = 0;
    if (!isParts(reply)) own = reply.length;
    else {
      // The AT line and any text are the reply's own; a body (bytes after the first part) counts once for the queue.
      for (let i = 0; i < reply.length; i++) {
        const part = reply[i];
        if (i === 0 || typeof part === "string") {
          own += part.length;
          continue;
        }
        const holders = (this.#bodies ??= new Map()).get(part.buffer) ?? 0;
        if (holders === 0) bodies += part.buffer.byteLength;
        this.#bodies.set(part.buffer, holders + 1);
      }
    }
    slot.bytes = own;
    const bytes = own + bodies;
    // Counted here first: `add` may close this very connection, whose release must take this reply out too.
    this.#held += bytes;
    this.#budget.add(bytes);
  }

  /** Takes a written reply out of the count (a body once its last holder is written). */
  #unhold(slot: _Slot): void {
    if (this.#held === undefined || this.#budget === undefined) return;
    let bytes = slot.bytes;
    const reply = slot.value as Reply;
    if (isParts(reply)) {
      for (let i = 1; i < reply.length; i++) {
        const part = reply[i];
        if (typeof part === "string") continue;
        const holders = this.#bodies!.get(part.buffer)!;
        if (holders > 1) this.#bodies!.set(part.buffer, holders - 1);
        else {
          this.#bodies!.delete(part.buffer);
          bytes += part.buffer.byteLength;
        }
      }
    }
    this.#held -= bytes;
    this.#budget.held -= bytes;
  }

  /** Replies not yet written, counting a batch whose write has not finished. */
  get size(): number {
    return this.#slots.length - this.#head + this.#writing;
  }

  /**
   * Milliseconds the write in progress has been waiting for the client to
   * take it (a write is at most {@linkcode MAX_WRITE_BYTES}, or one reply);
   * 0 between writes. A client that stops reading leaves it waiting.
   */
  get writeWaitMs(): number {
    return this.#writeBegan === undefined ? 0 : performance.now() - this.#writeBegan;
  }

  /** Whether a write to the connection has failed: nothing more will be written. */
  get failed(): boolean {
    return this.#failed !== undefined;
  }

  /**
   * Queues a reply (or one still being computed) behind the others. Its
   * latency, from `arrivedAt` to its write, counts in series `kind` of the
   * reply-latency histogram.
   */
  push(reply: Reply | Promise<Reply>, kind = 0, arrivedAt = performance.now()): void {
    if (typeof reply === "string" || reply instanceof Uint8Array || isParts(reply)) {
      const slot: _Slot = { value: reply, bytes: 0, pending: undefined, kind, arrivedAt };
      this.#slots.push(slot);
      this.#hold(slot, reply);
      return;
    }
    const slot: _Slot = { value: undefined, bytes: 0, pending: undefined, kind, arrivedAt };
    slot.pending = reply.then((value) => {
      slot.value = value;
      this.#hold(slot, value);
    }, (error) => {
      // Handlers answer every command, or refuse one with NoReply; a client must not hang on anything else.
      if (error instanceof NoReply) {
        slot.value = _CLOSE;
        return;
      }
      slot.value = "";
      if (_handlerFailures.take()) {
        log.client.error("A command's handler failed, and its client gets no reply: {error}", {
          error: cutForLog(String((error as Error)?.stack ?? error)),
        });
      }
    });
    this.#slots.push(slot);
  }

  /** Writes everything queued so far (and anything queued meanwhile); rejects if the connection fails. */
  flush(): Promise<void> {
    if (this.#failed !== undefined) return Promise.reject(this.#failed);
    this.#flushing ??= this.#drain().finally(() => {
      this.#flushing = undefined;
    });
    return this.#flushing;
  }

  async #drain(): Promise<void> {
    try {
      while (this.#head < this.#slots.length) {
        const first = this.#slots[this.#head];
        if (first.value === undefined) await first.pending;
        const batch: Reply[] = [];
        const written: _Slot[] = [];
        let close = false;
        let bytes = 0;
        while (this.#head < this.#slots.length && this.#slots[this.#head].value !== undefined) {
          const slot = this.#slots[this.#head];
          if (slot.value === _CLOSE) {
            this.#head++;
            close = true;
            break;
          }
          const size = _sizeBound(slot.value!);
          // The write is full: this reply starts the next (a reply over the bound alone is a write of its own).
          if (batch.length > 0 && bytes + size > MAX_WRITE_BYTES) break;
          this.#head++;
          batch.push(slot.value!);
          written.push(slot);
          bytes += size;
        }
        if (this.#head === this.#slots.length) {
          this.#slots = [];
          this.#head = 0;
        } else if (this.#head > 1024) {
          this.#slots = this.#slots.slice(this.#head);
          this.#head = 0;
        }
        if (batch.length > 0) {
          this.#writing = batch.length;
          this.#writeBegan = performance.now();
          try {
            await writeParts(this.#conn, batch.some(isParts) ? batch.flat() : batch as Part[]);
          } finally {
            this.#writeBegan = undefined;
          }
          for (const slot of written) this.#unhold(slot);
          this.#writing = 0;
          const now = performance.now();
          for (const slot of written) metrics.replySeconds[slot.kind].observe((now - slot.arrivedAt) / 1000);
          this.#onSent(batch);
        }
        if (close) throw new NoReply("A command was refused without a reply: closing the connection");
      }
    } catch (error) {
      this.#failed = error;
      throw error;
    }
  }
}
