/**
 * Writing to a socket: every write of the herd (client replies, peer
 * floods, acknowledgements) goes through {@linkcode writeParts}, which
 * encodes a batch into a pooled buffer and writes it with one write.
 */

/** Something to write: text, or raw bytes. */
export type Part = string | Uint8Array;

/** Where bytes go: a `Deno.Conn`, or anything that writes like one. */
export interface ByteWriter {
  /** Writes some of `bytes`; resolves to how many. */
  write(bytes: Uint8Array): Promise<number>;
}

const _encoder = new TextEncoder();

/** Writes all of `bytes`, looping over partial writes. */
export async function writeAll(conn: ByteWriter, bytes: Uint8Array): Promise<void> {
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
function _encodeInto(parts: readonly Part[], buffer: Uint8Array): number {
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
export async function writeParts(conn: ByteWriter, parts: readonly Part[]): Promise<void> {
  if (parts.length === 1 && typeof parts[0] !== "string") return await writeAll(conn, parts[0]);
  const buffer = _pool.pop() ?? new Uint8Array(_POOL_BUFFER_BYTES);
  try {
    const length = _encodeInto(parts, buffer);
    await writeAll(conn, length >= 0 ? buffer.subarray(0, length) : encodeParts(parts));
  } finally {
    if (_pool.length < _POOL_MAX) _pool.push(buffer);
  }
}

/** Encodes parts into one buffer. */
export function encodeParts(parts: readonly Part[]): Uint8Array {
  if (parts.every((part) => typeof part === "string")) return _encoder.encode(parts.join(""));
  return concatBytes(parts.map((part) => typeof part === "string" ? _encoder.encode(part) : part));
}
