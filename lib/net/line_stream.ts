/**
 * Splitting a byte stream into lines with a length cap, in the spirit of
 * `TextLineStream`: lines stay bytes (so an invalid UTF-8 line can be
 * echoed back exactly), a last line without `\n` is still a line, and a
 * line longer than the cap is reported instead of being buffered without
 * bound.
 */

const NEWLINE = 10;

/** A batch of complete lines split from one chunk; `overflow` when a line passed the cap (nothing follows it). */
export interface LineBatch {
  /** Lines without their `\n`. */
  lines: Uint8Array[];
  /** Set when a line longer than the cap was met; the stream ends after this batch. */
  overflow?: boolean;
}

/** The start of a line still waiting for its `\n`, kept across chunks (copied): both splitters' partial line. */
class _PartialLine {
  #pieces: Uint8Array[] = [];
  /** Bytes kept so far. */
  length = 0;

  /** Keeps a copy of `bytes` (the caller may reuse its buffer). */
  add(bytes: Uint8Array): void {
    this.#pieces.push(bytes.slice());
    this.length += bytes.length;
  }

  /** The line so far and `tail`, in one new buffer; the partial line is then empty. */
  take(tail: Uint8Array): Uint8Array {
    if (this.length === 0) return tail.slice();
    const line = new Uint8Array(this.length + tail.length);
    let offset = 0;
    for (const piece of this.#pieces) {
      line.set(piece, offset);
      offset += piece.length;
    }
    line.set(tail, offset);
    this.clear();
    return line;
  }

  /** Forgets what was kept. */
  clear(): void {
    this.#pieces = [];
    this.length = 0;
  }
}

/** Incremental, synchronous line splitter over byte chunks. */
export class LineSplitter {
  #maxLineBytes: number;
  #partial = new _PartialLine();
  #overflowed = false;

  /** `maxLineBytes` is the longest line accepted, without its `\n`. */
  constructor(maxLineBytes: number) {
    this.#maxLineBytes = maxLineBytes;
  }

  /** Whether a line has passed the cap; after that every push returns an empty overflowing batch. */
  get overflowed(): boolean {
    return this.#overflowed;
  }

  /**
   * Splits `chunk`; the bytes are copied out, so the caller may reuse its
   * buffer. The whole lines of a chunk are copied once, together, and
   * handed out as views of that copy: one allocation per read, not per line.
   */
  push(chunk: Uint8Array): LineBatch {
    const lines: Uint8Array[] = [];
    if (this.#overflowed) return { lines, overflow: true };
    let start = 0;
    let copy: Uint8Array | undefined;
    let copyStart = 0;
    while (start < chunk.length) {
      const end = chunk.indexOf(NEWLINE, start);
      if (end < 0) {
        if (this.#partial.length + chunk.length - start > this.#maxLineBytes) return this.#overflow(lines);
        this.#partial.add(chunk.subarray(start));
        break;
      }
      if (this.#partial.length + end - start > this.#maxLineBytes) return this.#overflow(lines);
      if (this.#partial.length > 0) {
        lines.push(this.#partial.take(chunk.subarray(start, end)));
      } else {
        if (copy === undefined) {
          copyStart = start;
          copy = chunk.slice(start, chunk.lastIndexOf(NEWLINE) + 1);
        }
        lines.push(copy.subarray(start - copyStart, end - copyStart));
      }
      start = end + 1;
    }
    return { lines };
  }

  /** Ends the input: returns the last line if it had no `\n`. */
  end(): Uint8Array | null {
    if (this.#overflowed || this.#partial.length === 0) return null;
    return this.#partial.take(new Uint8Array(0));
  }

  #overflow(lines: Uint8Array[]): LineBatch {
    this.#overflowed = true;
    this.#partial.clear();
    return { lines, overflow: true };
  }
}

/** Complete lines split from one chunk, decoded; `overflow` when a line passed the cap (nothing follows it). */
export interface TextLineBatch {
  /** Lines without their `\n`, decoded as UTF-8 (bytes that are not UTF-8 become U+FFFD). */
  lines: string[];
  /** Set when a line longer than the cap was met; nothing follows it. */
  overflow?: boolean;
}

/**
 * {@linkcode LineSplitter}'s lines decoded to text, for the peer links:
 * the whole lines of a chunk are decoded in one call and split as text, so
 * a line costs a string, not a view, a decode and a string. The same lines
 * as decoding each line alone (a `\n` byte is never part of a UTF-8
 * sequence), with a byte order mark kept as a character wherever it is.
 * The cap is on a line's bytes, as with {@linkcode LineSplitter}.
 */
export class TextLineSplitter {
  #maxLineBytes: number;
  #partial = new _PartialLine();
  #overflowed = false;
  #decoder = new TextDecoder("utf-8", { ignoreBOM: true });

  /** `maxLineBytes` is the longest line accepted, in bytes, without its `\n`. */
  constructor(maxLineBytes: number) {
    this.#maxLineBytes = maxLineBytes;
  }

  /** Splits `chunk`; nothing of it is kept but a partial last line, copied. */
  push(chunk: Uint8Array): TextLineBatch {
    const lines: string[] = [];
    if (this.#overflowed) return { lines, overflow: true };
    const max = this.#maxLineBytes;
    let start = 0;
    if (this.#partial.length > 0) {
      const end = chunk.indexOf(NEWLINE);
      if (end < 0) return this.#keep(chunk, 0, lines);
      if (this.#partial.length + end > max) return this.#overflow(lines);
      lines.push(this.#decoder.decode(this.#partial.take(chunk.subarray(0, end))));
      start = end + 1;
    }
    const last = chunk.lastIndexOf(NEWLINE);
    if (last >= start) {
      // The lines within the cap, up to the first that is not.
      let stop = last + 1;
      for (let from = start; from <= last;) {
        const end = chunk.indexOf(NEWLINE, from);
        if (end - from > max) {
          stop = from;
          break;
        }
        from = end + 1;
      }
      if (stop > start) {
        const text = this.#decoder.decode(chunk.subarray(start, stop));
        for (let from = 0, end = text.indexOf("\n"); end >= 0; from = end + 1, end = text.indexOf("\n", from)) {
          lines.push(text.slice(from, end));
        }
      }
      if (stop <= last) return this.#overflow(lines);
      start = last + 1;
    }
    return start < chunk.length ? this.#keep(chunk, start, lines) : { lines };
  }

  /** Ends the input: returns the last line if it had no `\n`. */
  end(): string | null {
    if (this.#overflowed || this.#partial.length === 0) return null;
    return this.#decoder.decode(this.#partial.take(new Uint8Array(0)));
  }

  /** Keeps `chunk` from `start` as (part of) a line still without its `\n`, within the cap. */
  #keep(chunk: Uint8Array, start: number, lines: string[]): TextLineBatch {
    if (this.#partial.length + chunk.length - start > this.#maxLineBytes) return this.#overflow(lines);
    this.#partial.add(chunk.subarray(start));
    return { lines };
  }

  #overflow(lines: string[]): TextLineBatch {
    this.#overflowed = true;
    this.#partial.clear();
    return { lines, overflow: true };
  }
}

/**
 * A `TransformStream` from byte chunks to batches of lines. The chunks
 * written to it may be views of a reused buffer: each is split before the
 * write resolves.
 */
export class LineStream extends TransformStream<Uint8Array, LineBatch> {
  /** Lines longer than `maxLineBytes` (without `\n`) end the stream with an overflowing batch. */
  constructor(maxLineBytes: number) {
    const splitter = new LineSplitter(maxLineBytes);
    super({
      transform(chunk, controller) {
        const batch = splitter.push(chunk);
        if (batch.lines.length > 0 || batch.overflow) controller.enqueue(batch);
        if (batch.overflow) controller.terminate();
      },
      flush(controller) {
        const last = splitter.end();
        if (last !== null) controller.enqueue({ lines: [last] });
      },
    });
  }
}

/** Where bytes come from: a `Deno.Conn`, or anything that reads like one. */
export interface ByteReader {
  /** Reads into `buffer`; resolves to the bytes read, or null at the end of the input. */
  read(buffer: Uint8Array): Promise<number | null>;
}

/**
 * Bytes of a connection's first read buffer: an idle connection holds no
 * more (nginx's `client_header_buffer_size`), and a one-command client's
 * line fits. A read that fills it moves the connection to a buffer of
 * `bufferBytes`, for pipelined clients, once.
 */
const _FIRST_BUFFER_BYTES = 1024;

/**
 * The client's line pipeline, and the one read loop of the herd over a
 * `Deno.Conn`: {@linkcode read} reads the socket (only when asked: a
 * connection that stops asking stops the socket reads, so backpressure
 * reaches TCP) until a read completes a line, and gives that read's lines
 * as one batch; a last line without `\n` comes at the end, and a line over
 * the cap ends it with an `overflow` batch. {@linkcode cancel} ends it at
 * once, a read waiting or not. One reused buffer, 1 KiB until a read fills
 * it, then `bufferBytes`. `conn.readable` is avoided on purpose: it closes
 * the whole socket on half-close (denoland/deno#22258) and allocates per
 * read; so is a web stream over this loop, which cost 8.7 µs of a
 * one-command connection against 4.2 µs (a throwaway microbenchmark).
 */
export class LineReader {
  #conn: ByteReader;
  #splitter: LineSplitter;
  #buffer: Uint8Array;
  #bufferBytes: number;
  /** Told of each read that completes no line (bytes of a line still coming: the client is not idle). */
  #onPartial: (() => void) | undefined;
  /** Set at the end of the input, an overflow, a failed read, or {@linkcode cancel}: every read then gives null. */
  #ended = false;
  /** The read waiting for a batch, settled once. */
  #resolve: ((batch: LineBatch | null) => void) | undefined;
  #reject: ((error: unknown) => void) | undefined;

  /**
   * Lines longer than `maxLineBytes` (without `\n`) end the input with an overflowing batch. `onPartial` is called
   * for each read that brings bytes but completes no line.
   */
  constructor(conn: ByteReader, maxLineBytes: number, bufferBytes = 16 * 1024, onPartial?: () => void) {
    this.#conn = conn;
    this.#splitter = new LineSplitter(maxLineBytes);
    this.#bufferBytes = bufferBytes;
    this.#onPartial = onPartial;
    this.#buffer = new Uint8Array(Math.min(_FIRST_BUFFER_BYTES, bufferBytes));
  }

  /**
   * The lines of the next read that completes one, or null once the input
   * has ended (or this reader was cancelled); rejects with a failed read's
   * error. One read at a time.
   */
  read(): Promise<LineBatch | null> {
    if (this.#ended) return Promise.resolve(null);
    if (this.#resolve !== undefined) return Promise.reject(new Error("LineReader: a read is already waiting"));
    return new Promise((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
      this.#readSocket();
    });
  }

  /** Ends the input now: a read waiting gives null, and so does every read after (what the socket sends is left). */
  cancel(): void {
    this.#ended = true;
    this.#settle(null);
  }

  #readSocket(): void {
    this.#conn.read(this.#buffer).then(this.#onRead, this.#onError);
  }

  #onRead = (n: number | null): void => {
    // Cancelled meanwhile: the read waiting has been given null.
    if (this.#resolve === undefined) return;
    let batch: LineBatch;
    try {
      if (n === null) {
        this.#ended = true;
        const last = this.#splitter.end();
        return this.#settle(last === null ? null : { lines: [last] });
      }
      batch = this.#splitter.push(this.#buffer.subarray(0, n));
      // Split (copied out) before the buffer is read into again, or replaced.
      if (n === this.#buffer.length && n < this.#bufferBytes) this.#buffer = new Uint8Array(this.#bufferBytes);
    } catch (error) {
      // Out of memory, say: the read waiting fails, as a failed socket read would, rather than the promise chain.
      return this.#onError(error);
    }
    if (batch.overflow) this.#ended = true;
    if (batch.lines.length > 0 || batch.overflow) return this.#settle(batch);
    if (n > 0) this.#onPartial?.();
    this.#readSocket();
  };

  #onError = (error: unknown): void => {
    const reject = this.#reject;
    if (reject === undefined) return;
    this.#ended = true;
    this.#resolve = this.#reject = undefined;
    reject(error);
  };

  #settle(batch: LineBatch | null): void {
    const resolve = this.#resolve;
    this.#resolve = this.#reject = undefined;
    resolve?.(batch);
  }
}
