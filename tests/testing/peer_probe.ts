/**
 * A test probe that speaks the peer protocol as a configured neighbour
 * that is never started: it asks a server for its store digest, so tests
 * and benchmarks can see two servers hold exactly the same records.
 */

import { LineSplitter } from "../../lib/net/line_stream.ts";

const _encoder = new TextEncoder();
const _decoder = new TextDecoder();

/** A peer connection to one server, introduced as `name`. */
export class PeerProbe implements Disposable {
  #conn: Deno.TcpConn;
  #splitter = new LineSplitter(1 << 20);
  #lines: string[] = [];

  private constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
  }

  /** Connects to `port` and says `HELLO <name>`. */
  static async connect(port: number, name: string): Promise<PeerProbe> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.write(_encoder.encode(`HELLO ${name}\n`));
    return new PeerProbe(conn);
  }

  /** The server's digest, as hex. */
  async digest(): Promise<string> {
    await this.#conn.write(_encoder.encode("DIGEST\n"));
    while (true) {
      const line = await this.#nextLine();
      if (line.startsWith("DIGEST ")) return line.slice(7);
    }
  }

  async #nextLine(): Promise<string> {
    const buffer = new Uint8Array(64 * 1024);
    while (this.#lines.length === 0) {
      const n = await this.#conn.read(buffer);
      if (n === null) throw new Error("The server closed the probe's connection");
      this.#lines.push(...this.#splitter.push(buffer.subarray(0, n)).lines.map((line) => _decoder.decode(line)));
    }
    return this.#lines.shift()!;
  }

  /** Closes the connection. */
  [Symbol.dispose](): void {
    this.#conn.close();
  }
}
