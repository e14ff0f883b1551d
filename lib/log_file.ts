/**
 * The log file: appended by one background writer, rotated by size, and
 * bounded in memory. Lines wait in a queue of at most a few MiB while the
 * writer works (writes never run on the event loop's time); when the queue
 * is full (the disk is full, or far slower than the server), new lines are
 * dropped and counted, and a line saying how many were dropped is written
 * once writing works again. Rotation renames `<name>.log` to `<name>.log.1`
 * (and `.1` to `.2`, up to the number of files kept) when the next write
 * would pass the size bound. A file it makes is mode 0600: the log holds
 * client IDs and locations (private_files.ts).
 *
 * Writes are spaced at least {@linkcode LogFileOptions.intervalMs} apart
 * (10 ms by default) unless a full piece is waiting: an asynchronous file
 * write of 11 KB costs the process 51-60 µs of CPU (a hand-off to a
 * blocking thread and back) where the same write made synchronously costs
 * 13-15 µs, so a write every millisecond or so took 5% of a core per busy
 * server (docs/PERFORMANCE.md, "Second round").
 */

import { PRIVATE_FILE_MODE } from "./private_files.ts";

/** Options for {@linkcode LogFile}. */
export interface LogFileOptions {
  /** Size at which the file is rotated, in bytes. */
  maxBytes: number;
  /** Files kept, the current one included (1: the file is started over). */
  files: number;
  /** Most bytes waiting to be written; past it, lines are dropped and counted. */
  maxQueuedBytes?: number;
  /** Least time between two writes while less than a full write's worth is queued, in ms. */
  intervalMs?: number;
  /**
   * When another process holds the file (a server of the same name running
   * on the same logDir; each holds an flock on its log file while it
   * writes): queue lines but write none until {@linkcode LogFile.release}
   * (or {@linkcode LogFile.close}); {@linkcode LogFile.abandonIfShared}
   * drops them. A server holds its lines back until it holds its database:
   * a second server started under the same name is refused, and must not
   * write into the first one's log; one restarted at once writes once the
   * one before has let go.
   */
  holdWhileShared?: boolean;
}

/** How often a released file held by another process is tried again, and for how long at most, in ms. */
const _SHARED_RETRY_MS = 50;
const _SHARED_WAIT_MS = 10_000;

const _encoder = new TextEncoder();
/** A write of at most this many bytes: the queue is taken in pieces of about this size. */
const _WRITE_BYTES = 256 * 1024;

/** A size-rotated log file written in the background. */
export class LogFile {
  /** The file's path. */
  readonly path: string;
  #options: Required<LogFileOptions>;
  #file: Deno.FsFile | undefined;
  #size = 0;
  #queue: Uint8Array[] = [];
  #queuedBytes = 0;
  #dropped = 0;
  #droppedTotal = 0;
  #writing: Promise<void> | undefined;
  #closed = false;
  #lastWriteMs = -Infinity;
  /** Ends the current wait between writes at once (a flush or close is waiting). */
  #hurry: (() => void) | undefined;
  #hurried = false;
  /** Where several entries are put together for one write: one buffer for the file's life, not one per write. */
  #joined: Uint8Array | undefined;
  /** Lines are queued but not written until {@linkcode LogFile.release} (see `holdWhileShared`). */
  #held = false;
  /** Whether this process holds the file's lock (another may, when `holdWhileShared` found it so). */
  #locked = false;

  private constructor(path: string, options: LogFileOptions) {
    this.path = path;
    this.#options = { maxQueuedBytes: 8 * 1024 * 1024, intervalMs: 10, holdWhileShared: false, ...options };
  }

  /** Opens (creating if missing) the log file at `path` for appending. */
  static async open(path: string, options: LogFileOptions): Promise<LogFile> {
    const file = new LogFile(path, options);
    file.#file = await Deno.open(path, { append: true, create: true, mode: PRIVATE_FILE_MODE });
    file.#locked = file.#tryLock();
    file.#held = !file.#locked && (options.holdWhileShared ?? false);
    file.#size = (await file.#file.stat()).size;
    return file;
  }

  /** Lines dropped because the queue was full, since the last time that was written down. */
  get dropped(): number {
    return this.#dropped;
  }

  /** Lines dropped since the file was opened. */
  get droppedTotal(): number {
    return this.#droppedTotal;
  }

  /** Bytes waiting to be written. */
  get queuedBytes(): number {
    return this.#queuedBytes;
  }

  /** Queues `text` (whole lines) for the file; drops it, counted, when the queue is full. */
  write(text: string): void {
    if (this.#closed) return;
    const bytes = _encoder.encode(text);
    if (this.#queuedBytes + bytes.length > this.#options.maxQueuedBytes) {
      let lines = 0;
      for (let i = 0; i < bytes.length; i++) if (bytes[i] === 10) lines++;
      this.#dropped += Math.max(lines, 1);
      this.#droppedTotal += Math.max(lines, 1);
      return;
    }
    this.#queue.push(bytes);
    this.#queuedBytes += bytes.length;
    if (!this.#held) this.#writing ??= this.#drain();
  }

  /**
   * Writes what was held back, and from now on as it comes: once the other
   * process lets go of the file (a server restarted at once: the one before
   * writes its last lines after it let go of its database), or after 10 s.
   */
  release(): void {
    if (!this.#held) return;
    const started = performance.now();
    const attempt = () => {
      if (this.#closed || !this.#held) return;
      this.#takeOver();
      if (!this.#locked && performance.now() - started < _SHARED_WAIT_MS) {
        setTimeout(attempt, _SHARED_RETRY_MS);
        return;
      }
      this.#held = false;
      if (this.#queue.length > 0) this.#writing ??= this.#drain();
    };
    attempt();
  }

  /**
   * Closes the file without writing what was held back, if another process
   * holds it (see `holdWhileShared`); else does nothing: the file is ours.
   */
  abandonIfShared(): void {
    if (!this.#held) return;
    this.#queue = [];
    this.#queuedBytes = 0;
    this.#closed = true;
    this.#file?.close();
    this.#file = undefined;
  }

  /**
   * Tries to take the file's lock, on the file the path names now: the
   * other process may have rotated it while we waited (ours is then
   * `<path>.1`).
   */
  #takeOver(): void {
    this.#locked = this.#tryLock();
    if (!this.#locked || !this.#rotatedAway()) return;
    try {
      const file = Deno.openSync(this.path, { append: true, create: true, mode: PRIVATE_FILE_MODE });
      this.#file?.close();
      this.#file = file;
      this.#size = file.statSync().size;
      this.#locked = this.#tryLock();
    } catch { /* the directory is gone: the file we have open is the one left */ }
  }

  /** Whether the path now names another file than the one we have open (rotated, or removed). */
  #rotatedAway(): boolean {
    try {
      return Deno.statSync(this.path).ino !== this.#file?.statSync().ino;
    } catch {
      return true;
    }
  }

  /** Takes the file's lock if nobody holds it (flock: it goes with the process however that ends). */
  #tryLock(): boolean {
    try {
      return this.#file?.tryLockSync(true) ?? false;
    } catch {
      return true; // a file system without locks: nothing to tell two processes apart by
    }
  }

  /** Resolves once everything queued so far is written (or dropped). */
  async flush(): Promise<void> {
    while (this.#writing !== undefined) {
      this.#hurried = true;
      this.#hurry?.();
      await this.#writing;
    }
    this.#hurried = false;
  }

  /** Writes what is queued (held back too, at once), then closes the file. */
  async close(): Promise<void> {
    if (this.#held) this.#takeOver();
    this.#held = false;
    if (this.#queue.length > 0) this.#writing ??= this.#drain();
    await this.flush();
    this.#closed = true;
    this.#file?.close();
    this.#file = undefined;
  }

  async #drain(): Promise<void> {
    try {
      while (this.#queue.length > 0 && this.#file !== undefined) {
        await this.#spaced();
        // Lines dropped while this write waits are told in the next note.
        const noted = this.#dropped;
        const note = noted === 0 ? undefined : _encoder.encode(
          `${new Date().toISOString()} [WRN] herd.server: ${noted} log lines were dropped: ` +
            "the log could not keep up, or its disk was full\n",
        );
        const noteBytes = note?.length ?? 0;
        let chunk = this.#take(this.#options.maxBytes - this.#size - noteBytes);
        if (chunk === undefined && this.#size > 0) {
          // Not even the next line fits: rotated first, so no file passes the bound (unless one line alone does).
          await this.#rotateSafely();
          chunk = this.#take(this.#options.maxBytes - this.#size - noteBytes);
        }
        chunk ??= this.#takeLine();
        if (note !== undefined && await this.#append(note)) this.#dropped -= noted;
        if (!await this.#append(chunk)) {
          let lines = 0;
          for (let i = 0; i < chunk.length; i++) if (chunk[i] === 10) lines++;
          this.#dropped += lines;
          this.#droppedTotal += lines;
        }
      }
    } finally {
      this.#writing = undefined;
    }
  }

  /** Waits until the last write is `intervalMs` old, unless a full write is queued or someone is flushing. */
  async #spaced(): Promise<void> {
    const waitMs = this.#lastWriteMs + this.#options.intervalMs - performance.now();
    if (waitMs <= 0 || this.#hurried || this.#queuedBytes >= _WRITE_BYTES) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, waitMs);
      this.#hurry = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    this.#hurry = undefined;
  }

  /**
   * From the head of the queue, at most `room` (and {@linkcode _WRITE_BYTES})
   * bytes of whole lines: whole entries while they fit, else the lines of
   * the head entry that fit (an entry is all the lines of one
   * {@linkcode LogFile.write}, up to 10 ms of a server's traffic); a line
   * longer than a write's size alone when `room` holds it. Undefined when
   * `room` does not hold the next line.
   */
  #take(room: number): Uint8Array | undefined {
    const limit = Math.min(room, _WRITE_BYTES);
    let length = 0;
    let count = 0;
    while (count < this.#queue.length && length + this.#queue[count].length <= limit) {
      length += this.#queue[count].length;
      count++;
    }
    if (count === 0) {
      const head = this.#queue[0];
      const end = limit > 0 ? head.lastIndexOf(10, limit - 1) + 1 : 0;
      if (end > 0) return this.#takeHead(end);
      const line = head.indexOf(10) + 1 || head.length;
      return line <= room ? this.#takeHead(line) : undefined;
    }
    const pieces = this.#queue.splice(0, count);
    this.#queuedBytes -= length;
    if (pieces.length === 1) return pieces[0];
    // Written (awaited) before the next take: one buffer serves every write. With a new buffer per write (up to
    // 256 KiB under load), spaced writes left a server 3 bytes per client larger once settled after a million IAMATs.
    this.#joined ??= new Uint8Array(_WRITE_BYTES);
    const out = this.#joined.subarray(0, length);
    let offset = 0;
    for (const piece of pieces) {
      out.set(piece, offset);
      offset += piece.length;
    }
    return out;
  }

  /** The first line of the head entry (one longer than the file's bound: written alone, in a file of its own). */
  #takeLine(): Uint8Array {
    const head = this.#queue[0];
    return this.#takeHead(head.indexOf(10) + 1 || head.length);
  }

  /** The first `bytes` of the head entry, the rest left at the head. */
  #takeHead(bytes: number): Uint8Array {
    const head = this.#queue[0];
    this.#queuedBytes -= bytes;
    if (bytes >= head.length) return this.#queue.shift()!;
    this.#queue[0] = head.subarray(bytes);
    return head.subarray(0, bytes);
  }

  /** Rotates; a failure (the directory gone, say) is survived: the file goes on growing. */
  async #rotateSafely(): Promise<void> {
    try {
      await this.#rotate();
    } catch {
      this.#size = 0; // not rotated: try again only after another maxBytes
    }
  }

  /** Appends `bytes`; false when the write failed (the disk is full). */
  async #append(bytes: Uint8Array): Promise<boolean> {
    try {
      if (this.#file === undefined) return false;
      let offset = 0;
      this.#lastWriteMs = performance.now();
      while (offset < bytes.length) offset += await this.#file.write(bytes.subarray(offset));
      this.#size += bytes.length;
      return true;
    } catch {
      return false;
    }
  }

  async #rotate(): Promise<void> {
    this.#file?.close();
    this.#file = undefined;
    const { files } = this.#options;
    try {
      if (files <= 1) {
        await Deno.remove(this.path);
      } else {
        for (let i = files - 2; i >= 1; i--) {
          try {
            await Deno.rename(`${this.path}.${i}`, `${this.path}.${i + 1}`);
          } catch { /* not there yet */ }
        }
        await Deno.rename(this.path, `${this.path}.1`);
      }
    } finally {
      this.#file = await Deno.open(this.path, { append: true, create: true, mode: PRIVATE_FILE_MODE });
      this.#size = (await this.#file.stat()).size;
      if (this.#locked) this.#tryLock();
    }
  }
}
