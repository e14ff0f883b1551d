/**
 * Run in a process of its own (Deno's crypto set-up is done once per
 * process), with a 1 ms interval counting the event loop's turns; prints one
 * JSON line.
 *
 *   warm_crypto_probe.ts warm
 *     calls warmCrypto(): `{"syncMs", "tookMs", "longestGapMs"}`, how long the
 *     call took to return its promise, how long until it settled, and the
 *     longest the event loop went without a turn meanwhile.
 *   warm_crypto_probe.ts tls cold|warm CA CERT KEY
 *     (after an awaited warmCrypto() for `warm`) a node:tls server of those
 *     files accepts its first connection: `{"longestGapMs"}`, the longest the
 *     event loop went without a turn from the connect until 20 ms after the
 *     accept (Deno sets TLS up there, on the first connection).
 */
import tls from "node:tls";
import { warmCrypto } from "../../lib/net/warm_crypto.ts";

/** Counts turns of the event loop and the longest gap between two. */
function watchTurns(): { longestGapMs(): number; stop(): void } {
  let last = performance.now();
  let longest = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    longest = Math.max(longest, now - last);
    last = now;
  }, 1);
  return {
    longestGapMs: () => Math.max(longest, performance.now() - last),
    stop: () => clearInterval(timer),
  };
}

const [mode, state, ca, cert, key] = Deno.args;
if (mode === "warm") {
  // The process's own start settled first.
  await new Promise((resolve) => setTimeout(resolve, 5));
  const watched = watchTurns();
  const started = performance.now();
  const warming = warmCrypto();
  const syncMs = performance.now() - started;
  await warming;
  const tookMs = performance.now() - started;
  const longestGapMs = watched.longestGapMs();
  watched.stop();
  console.log(JSON.stringify({ syncMs, tookMs, longestGapMs }));
} else if (mode === "tls") {
  if (state === "warm") await warmCrypto();
  const files = { ca: Deno.readTextFileSync(ca), cert: Deno.readTextFileSync(cert), key: Deno.readTextFileSync(key) };
  const accepted = Promise.withResolvers<void>();
  const server = tls.createServer({ ...files, requestCert: true }, () => {});
  server.on("connection", () => accepted.resolve());
  server.on("tlsClientError", () => {});
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const watched = watchTurns();
  await new Promise((resolve) => setTimeout(resolve, 5));
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: (server.address() as { port: number }).port });
  await accepted.promise;
  await new Promise((resolve) => setTimeout(resolve, 20));
  const longestGapMs = watched.longestGapMs();
  watched.stop();
  conn.close();
  server.close();
  console.log(JSON.stringify({ longestGapMs }));
} else {
  throw new Error(`usage: warm_crypto_probe.ts warm | tls cold|warm CA CERT KEY`);
}
