/**
 * An HTTP endpoint (`Deno.serve`) that outlives a failed accept.
 *
 * `Deno.serve` stops accepting at the first accept that fails (out of file
 * descriptors: EMFILE) and rejects its `finished` promise; left unhandled,
 * that rejection ends the whole process. So a flood of connections to a
 * server's admin port, or `deno task status` asking while the client port
 * held every descriptor, stopped the server. Here the failure is reported
 * and the endpoint served again on the same address after a pause, doubled
 * at each failure up to {@linkcode MAX_RETRY_MS}, until it listens again or
 * is shut down.
 */

/** The first pause before serving again, in milliseconds. */
export const FIRST_RETRY_MS = 100;
/** The longest pause before serving again, in milliseconds. */
export const MAX_RETRY_MS = 5_000;

/** Options for {@linkcode ResilientHttpServer}. */
export interface ResilientHttpOptions {
  /** The address to listen on. */
  hostname: string;
  /** 0 for any free port: served again on the one it got. */
  port: number;
  /** The endpoint stopped accepting (`error`), or could not listen again; it tries again in `retryMs`. */
  onFailure(error: Error, retryMs: number): void;
  /** The endpoint listens again after a failure. */
  onRecovered(): void;
  /** `Deno.serve`, or a stand-in for tests. */
  serve?: (options: Deno.ServeTcpOptions, handler: Deno.ServeHandler<Deno.NetAddr>) => Deno.HttpServer<Deno.NetAddr>;
}

/** `Deno.serve` on one address, served again whenever its accepting fails; throws as it does at the first start. */
export class ResilientHttpServer {
  /** Where it listens (the port it got, for port 0). */
  readonly addr: Deno.NetAddr;
  #options: ResilientHttpOptions;
  #handler: Deno.ServeHandler<Deno.NetAddr>;
  #serve: NonNullable<ResilientHttpOptions["serve"]>;
  #server: Deno.HttpServer<Deno.NetAddr> | undefined;
  #retry: ReturnType<typeof setTimeout> | undefined;
  #stopped = false;

  /** Serves `handler` on `options.hostname`:`options.port`. */
  constructor(options: ResilientHttpOptions, handler: Deno.ServeHandler<Deno.NetAddr>) {
    this.#options = options;
    this.#handler = handler;
    this.#serve = options.serve ?? Deno.serve;
    const server = this.#serve({ hostname: options.hostname, port: options.port, onListen() {} }, handler);
    this.addr = server.addr;
    this.#watch(server);
  }

  #watch(server: Deno.HttpServer<Deno.NetAddr>): void {
    this.#server = server;
    server.finished.then(() => {}, (error: Error) => {
      if (this.#stopped || this.#server !== server) return;
      this.#server = undefined;
      this.#again(FIRST_RETRY_MS, error);
    });
  }

  #again(retryMs: number, error: Error): void {
    this.#options.onFailure(error, retryMs);
    this.#retry = setTimeout(() => {
      this.#retry = undefined;
      if (this.#stopped) return;
      let server: Deno.HttpServer<Deno.NetAddr>;
      try {
        server = this.#serve({ hostname: this.addr.hostname, port: this.addr.port, onListen() {} }, this.#handler);
      } catch (failure) {
        this.#again(Math.min(retryMs * 2, MAX_RETRY_MS), failure as Error);
        return;
      }
      this.#watch(server);
      this.#options.onRecovered();
    }, retryMs);
  }

  /** Stops serving: what is being answered is finished first. */
  async shutdown(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#retry);
    await this.#server?.shutdown();
  }
}
