/**
 * A bare Deno line echo on 127.0.0.1: the reference for scenario 3 (one
 * command per connection, half-closed). For each complete line read it
 * writes the line back; at end of input it writes back what is left of an
 * unfinished line, then closes. One `conn.read()` loop per connection, no
 * streams: the least a Deno TCP server can do per exchange.
 *
 *   deno run --no-prompt --allow-net=127.0.0.1 bench/echo_server.ts [port]
 *
 * Prints `{"port":N}` once it listens (port 0, the default, picks a free one).
 */

const NEWLINE = 0x0a;

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let offset = 0; offset < bytes.length;) offset += await conn.write(bytes.subarray(offset));
}

/**
 * The read buffer: 1 KiB, as the herd's first (`LineReader`). With 64 KiB, until 2026-12-05, the echo spent 52-57 µs
 * of CPU per one-command connection against 32-38 µs (scenario 3's load, in turns), for the same connections a second.
 */
const BUFFER_BYTES = 1024;

async function echo(conn: Deno.Conn): Promise<void> {
  const buffer = new Uint8Array(BUFFER_BYTES);
  let partial: Uint8Array = new Uint8Array(0);
  try {
    while (true) {
      const n = await conn.read(buffer);
      if (n === null) break;
      const chunk = buffer.subarray(0, n);
      const end = chunk.lastIndexOf(NEWLINE) + 1;
      if (end === 0) {
        partial = _concat(partial, chunk);
        continue;
      }
      await writeAll(conn, partial.length === 0 ? chunk.subarray(0, end) : _concat(partial, chunk.subarray(0, end)));
      partial = chunk.slice(end);
    }
    if (partial.length > 0) await writeAll(conn, partial);
  } catch {
    // A reset or broken connection: nothing to answer.
  } finally {
    conn.close();
  }
}

function _concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

if (import.meta.main) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: Number(Deno.args[0] ?? 0) });
  console.log(JSON.stringify({ port: (listener.addr as Deno.NetAddr).port }));
  for await (const conn of listener) {
    conn.setNoDelay(true);
    echo(conn);
  }
}
