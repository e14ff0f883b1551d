/**
 * What one socket write costs a Deno process when it has been busy, and
 * when it slept about a millisecond before it (docs/PERFORMANCE.md, "Third
 * round"): writes of 2,610 bytes (thirty peer records) to a reader in
 * another process, each after `setImmediate` (busy) or after
 * `setTimeout(0)` (asleep about a millisecond), timed around the write
 * call; over `node:tls` and `node:net` (the herd's peer links) and Deno's
 * own TLS (`Deno.startTls`, the write awaited). Three rounds of 3,000
 * writes per socket and pacing; prints the mean per write of each.
 *
 *   deno run --no-prompt --allow-net=127.0.0.1 --allow-run=deno,openssl --allow-read=/tmp --allow-write=/tmp \
 *     bench/write_after_sleep.ts
 */

import net from "node:net";
import tls from "node:tls";
import { setImmediate } from "node:timers";
import { makeCertificateDir, serverCertificate } from "./certs.ts";
import { firstLine } from "./command.ts";

const WRITES = 3000;
const ROUNDS = 3;
const LINE = "AT Hill +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503 7 500\n";

/** The reader: a `node:tls` and a `node:net` server on loopback that read and drop; prints their ports. */
async function read(certDir: string): Promise<void> {
  const files = serverCertificate(certDir, "Reader");
  const options = { cert: Deno.readTextFileSync(files.cert), key: Deno.readTextFileSync(files.key) };
  const secure = tls.createServer(options, (socket) => socket.on("data", () => {}));
  const plain = net.createServer((socket) => socket.on("data", () => {}));
  const listen = (server: net.Server) =>
    new Promise<number>((resolve) =>
      server.listen(0, "127.0.0.1", () => resolve((server.address() as net.AddressInfo).port))
    );
  console.log(JSON.stringify({ tls: await listen(secure), net: await listen(plain) }));
}

/** Mean microseconds per write of `write`, each after a turn (`busy`) or a timer (`asleep`). */
async function measure(write: () => unknown, asleep: boolean): Promise<number> {
  let total = 0;
  for (let i = 0; i < WRITES; i++) {
    await new Promise((resolve) => asleep ? setTimeout(resolve, 0) : setImmediate(resolve));
    const start = performance.now();
    await write();
    total += performance.now() - start;
  }
  return total * 1000 / WRITES;
}

async function main(): Promise<void> {
  if (Deno.args[0] === "read") return await read(Deno.args[1]);
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "herd-write-after-sleep-" });
  try {
    await makeCertificateDir(dir, ["Reader"]);
    const reader = new Deno.Command("deno", {
      args: [
        "run",
        "--no-prompt",
        "--allow-net=127.0.0.1",
        `--allow-read=${dir}`,
        new URL(import.meta.url).pathname,
        "read",
        dir,
      ],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const ports = JSON.parse(await firstLine(reader, "The reader"));
    const ca = Deno.readTextFileSync(serverCertificate(dir, "Reader").ca);
    const payload = new TextEncoder().encode(LINE.repeat(30));
    console.log(`${payload.length} bytes per write, ${WRITES} writes per socket and pacing, mean µs per write`);
    console.log("socket               busy   after a sleep");
    for (let round = 1; round <= ROUNDS; round++) {
      const secure = tls.connect({ host: "127.0.0.1", port: ports.tls, ca: [ca], servername: "localhost" });
      await new Promise((resolve) => secure.once("secureConnect", resolve));
      secure.setNoDelay(true);
      const plain = net.connect({ host: "127.0.0.1", port: ports.net });
      await new Promise((resolve) => plain.once("connect", resolve));
      plain.setNoDelay(true);
      const tcp = await Deno.connect({ hostname: "127.0.0.1", port: ports.tls });
      tcp.setNoDelay(true);
      const denoTls = await Deno.startTls(tcp, { hostname: "localhost", caCerts: [ca] });
      await denoTls.handshake();
      const rows: [string, () => unknown][] = [
        ["node:tls", () => secure.write(payload)],
        ["node:net", () => plain.write(payload)],
        ["Deno TLS (awaited)", () => denoTls.write(payload)],
      ];
      for (const [name, write] of rows) {
        const busy = await measure(write, false);
        const asleep = await measure(write, true);
        console.log(
          `${name.padEnd(20)} ${busy.toFixed(1).padStart(5)}   ${asleep.toFixed(1).padStart(6)}   (round ${round})`,
        );
      }
      secure.destroy();
      plain.destroy();
      denoTls.close();
    }
    reader.kill("SIGTERM");
    await reader.status;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) await main();
