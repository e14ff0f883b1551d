/**
 * Replies to one connection, in command order, in as few writes as
 * possible. A reply may be ready at once or later (a WHATSAT waiting on
 * Places, an IAMAT waiting on its flood); replies that are ready behind the
 * head wait for it, then go out together in one write.
 */

/** A reply: text, or raw bytes (an echo of a line that was not UTF-8). */
export type Reply = string | Uint8Array;

interface _Slot {
  value: Reply | undefined;
  pending: Promise<void> | undefined;
}

const _encoder = new TextEncoder();

/** Writes all of `bytes`, looping over partial writes. */
export async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) {
    offset += await conn.write(offset === 0 ? bytes : bytes.subarray(offset));
  }
}

/** The bytes of `parts`, one after another, in one buffer. */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/**
 * Write buffers shared by every connection: a batch is encoded into one,
 * written, and the buffer handed back, so a write allocates nothing.
 * Batches that do not fit get a buffer of their own.
 */
const _POOL_BUFFER_BYTES = 16 * 1024;
const _POOL_MAX = 64;
const _pool: Uint8Array[] = [];

/** Encodes `parts` into `buffer`; returns the bytes written, or -1 when they do not fit. */
function _encodeInto(parts: readonly Reply[], buffer: Uint8Array): number {
  let offset = 0;
  for (const part of parts) {
    if (typeof part === "string") {
      const { read, written } = _encoder.encodeInto(part, offset === 0 ? buffer : buffer.subarray(offset));
      if (read < part.length) return -1;
      offset += written;
    } else {
      if (part.length > buffer.length - offset) return -1;
      buffer.set(part, offset);
      offset += part.length;
    }
  }
  return offset;
}

/**
 * Writes `parts` (text or bytes) in one write, through a pooled buffer when
 * they fit in one; a lone part in bytes is written as it is.
 */
export async function writeParts(conn: Deno.Conn, parts: readonly Reply[]): Promise<void> {
  if (parts.length === 1 && typeof parts[0] !== "string") return await writeAll(conn, parts[0]);
  const buffer = _pool.pop() ?? new Uint8Array(_POOL_BUFFER_BYTES);
  try {
    const length = _encodeInto(parts, buffer);
    await writeAll(conn, length >= 0 ? buffer.subarray(0, length) : encodeReplies(parts));
  } finally {
    if (_pool.length < _POOL_MAX) _pool.push(buffer);
  }
}

/** Encodes replies into one buffer. */
export function encodeReplies(replies: readonly Reply[]): Uint8Array {
  if (replies.every((reply) => typeof reply === "string")) return _encoder.encode(replies.join(""));
  return concatBytes(replies.map((reply) => typeof reply === "string" ? _encoder.encode(reply) : reply));
}

/** Ordered reply writer for one connection. */
export class ReplyQueue {
  #conn: Deno.Conn;
  #slots: _Slot[] = [];
  #head = 0;
  #flushing: Promise<void> | undefined;
  #failed: unknown;
  #writing = 0;
  #onSent: (replies: Reply[]) => void;

  /** `onSent` sees each batch of replies after it is written (for logging). */
  constructor(conn: Deno.Conn, onSent: (replies: Reply[]) => void = () => {}) {
    this.#conn = conn;
    this.#onSent = onSent;
  }

  /** Replies not yet written, counting a batch whose write has not finished. */
  get size(): number {
    return this.#slots.length - this.#head + this.#writing;
  }

  /** Whether a write to the connection has failed: nothing more will be written. */
  get failed(): boolean {
    return this.#failed !== undefined;
  }

  /** Queues a reply (or one still being computed) behind the others. */
  push(reply: Reply | Promise<Reply>): void {
    if (typeof reply === "string" || reply instanceof Uint8Array) {
      this.#slots.push({ value: reply, pending: undefined });
      return;
    }
    const slot: _Slot = { value: undefined, pending: undefined };
    slot.pending = reply.then((value) => {
      slot.value = value;
    }, () => {
      // Handlers answer every command and never reject; if one did, the client must not hang on it.
      slot.value = "";
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
        while (this.#head < this.#slots.length && this.#slots[this.#head].value !== undefined) {
          batch.push(this.#slots[this.#head].value!);
          this.#head++;
        }
        if (this.#head === this.#slots.length) {
          this.#slots = [];
          this.#head = 0;
        } else if (this.#head > 1024) {
          this.#slots = this.#slots.slice(this.#head);
          this.#head = 0;
        }
        this.#writing = batch.length;
        await writeParts(this.#conn, batch);
        this.#writing = 0;
        this.#onSent(batch);
      }
    } catch (error) {
      this.#failed = error;
      throw error;
    }
  }
}
