/**
 * A test probe that speaks the peer protocol as a configured neighbour
 * that is never started (over TLS with that neighbour's certificate, when
 * the herd's links use TLS): it asks a server for its store digest, so
 * tests and benchmarks can see two servers hold exactly the same records.
 */

import { LineSocket } from "../../lib/net/line_socket.ts";
import { type PeerTlsFiles, PeerTransport } from "../../lib/peer/transport.ts";

/** Options for {@linkcode PeerProbe.connect}. */
export interface PeerProbeOptions {
  /** The server probed, as its certificate names it. */
  server: string;
  /** Its peer port on 127.0.0.1. */
  port: number;
  /** The neighbour the probe says it is. */
  as: string;
  /** That neighbour's TLS files; plain text when null. */
  files: PeerTlsFiles | null;
}

/** A peer connection to one server, introduced as a neighbour. */
export class PeerProbe implements AsyncDisposable {
  #conn: LineSocket;
  #lines: string[] = [];
  #waiting: (() => void) | undefined;

  private constructor(socket: Awaited<ReturnType<PeerTransport["dial"]>>) {
    this.#conn = new LineSocket(socket, {
      maxLineBytes: 1 << 20,
      onLines: (lines) => {
        this.#lines.push(...lines);
        this.#waiting?.();
      },
    });
    this.#conn.closed.then(() => this.#waiting?.());
  }

  /** Connects to the server and says `HELLO <as>`. */
  static async connect(options: PeerProbeOptions): Promise<PeerProbe> {
    const transport = new PeerTransport({ files: options.files, handshakeTimeoutMs: 5000 });
    transport.load();
    const probe = new PeerProbe(await transport.dial("127.0.0.1", options.port, options.server));
    probe.#conn.write(`HELLO ${options.as}\n`);
    return probe;
  }

  /** The server's digest, as hex. */
  async digest(): Promise<string> {
    this.#conn.write("DIGEST\n");
    while (true) {
      const line = await this.#nextLine();
      if (line.startsWith("DIGEST ")) return line.slice(7);
    }
  }

  /** Sends `text` (whole lines) to the server. */
  send(text: string): void {
    this.#conn.write(text);
  }

  /** The next line the server sends; throws if it closes the connection first. */
  nextLine(): Promise<string> {
    return this.#nextLine();
  }

  /** Resolves once the connection is closed, by either end. */
  get closed(): Promise<void> {
    return this.#conn.closed;
  }

  async #nextLine(): Promise<string> {
    while (this.#lines.length === 0) {
      if (this.#conn.isClosed) throw new Error("The server closed the probe's connection");
      await new Promise<void>((resolve) => this.#waiting = resolve);
    }
    return this.#lines.shift()!;
  }

  /** Closes the connection and waits until it is closed. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.#conn.destroy();
    await this.#conn.closed;
  }
}
