/**
 * A server restarted into a running herd: where its main thread's time goes
 * in its first second. The five servers of a test herd (TLS peer links) are
 * started; then Hill is stopped and started again `ROUNDS` times under
 * `--cpu-prof`, each time until the herd agrees again and half a second
 * more. Per restart: the time from the spawn to its client port accepting,
 * and from its CPU profile the main thread's time in the natives that set a
 * TLS connection up (`start`, `initServerTls`, `initClientTls`: Deno's crypto
 * set-up, once per process, lands in the first of them) and in creating the
 * store's worker (`op_create_worker`), both of which hold the event loop;
 * and, of `/healthz` asked every 2 ms from the spawn on (each a new
 * connection), the slowest answer asked for in its first second of
 * listening: how long the event loop kept it waiting at most.
 *
 *   deno task bench:restart [ROUNDS]
 */
import { TestHerd } from "../tests/testing/herd.ts";
import { serverRunArgs } from "../lib/cli/launcher.ts";
import { loadConfig } from "../lib/config/config.ts";

const ROUNDS = Number(Deno.args[0] ?? 5);
const TLS_SETUP = new Set(["start", "initServerTls", "initClientTls"]);

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string } }[];
  samples: number[];
  timeDeltas: number[];
}

/** Milliseconds of the main thread's samples in native functions named in `names`. */
function nativeMs(profile: CpuProfile, names: Set<string>): number {
  const ids = new Set(
    profile.nodes.filter((node) => node.callFrame.url === "" && names.has(node.callFrame.functionName)).map((n) =>
      n.id
    ),
  );
  let us = 0;
  // A sample's time runs to the next one.
  for (let i = 0; i < profile.samples.length; i++) {
    if (ids.has(profile.samples[i])) us += profile.timeDeltas[i + 1] ?? 0;
  }
  return us / 1000;
}

async function accepting(port: number): Promise<void> {
  for (let i = 0; i < 5000; i++) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
  }
  throw new Error(`nothing accepts on port ${port}`);
}

/** `/healthz` of `port` every 2 ms until `stop()`: when each answer was asked for (`performance.now()`), how long it took. */
async function health(port: number, stop: () => boolean): Promise<[number, number][]> {
  const waits: [number, number][] = [];
  while (!stop()) {
    const asked = performance.now();
    try {
      const response = await fetch(`http://127.0.0.1:${port}/healthz`, { headers: { connection: "close" } });
      await response.body?.cancel();
      waits.push([asked, performance.now() - asked]);
    } catch {
      // Not listening yet.
    }
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  return waits;
}

await using herd = await TestHerd.create({ placesUrl: "http://127.0.0.1:9/places", admin: true });
await herd.startAll();
const profiles = await Deno.makeTempDir({ prefix: "herd-restart-" });
const rows: { listeningMs: number; tlsMs: number; workerMs: number; slowestMs: number }[] = [];
try {
  for (let round = 0; round < ROUNDS; round++) {
    await herd.stop("Hill", "SIGTERM");
    const config = await loadConfig(herd.configPathOf("Hill"));
    const args = serverRunArgs(config, "Hill", { keyPresent: false });
    const dir = `${profiles}/${round}`;
    args.splice(1, 0, "--cpu-prof", `--cpu-prof-dir=${dir}`);
    const spawnedAt = performance.now();
    const child = new Deno.Command("deno", { args, stdin: "null", stdout: "null", stderr: "null" }).spawn();
    let done = false;
    const answers = health(herd.adminPort("Hill"), () => done);
    let listening: number;
    try {
      await accepting(herd.port("Hill"));
      listening = performance.now();
      await herd.waitConverged(herd.names);
      // At least the first second after listening.
      await new Promise((resolve) => setTimeout(resolve, Math.max(500, listening + 1000 - performance.now())));
    } finally {
      // Whatever happened, this Hill goes (it holds the port and the database), and so does the prober.
      done = true;
      child.kill("SIGTERM");
      await child.status;
    }
    const firstSecond = (await answers).filter(([asked]) => asked >= listening && asked < listening + 1000);
    if (firstSecond.length === 0) throw new Error("no /healthz was answered in Hill's first second of listening");
    const file = [...Deno.readDirSync(dir)].map((entry) => entry.name).find((name) => !name.includes("worker"));
    if (file === undefined) throw new Error(`no CPU profile of the main thread in ${dir}`);
    const profile = JSON.parse(await Deno.readTextFile(`${dir}/${file}`)) as CpuProfile;
    rows.push({
      listeningMs: listening - spawnedAt,
      slowestMs: Math.max(...firstSecond.map(([, took]) => took)),
      tlsMs: nativeMs(profile, TLS_SETUP),
      workerMs: nativeMs(profile, new Set(["op_create_worker"])),
    });
    await herd.start("Hill");
    await herd.waitConverged(herd.names);
  }
} finally {
  await Deno.remove(profiles, { recursive: true });
}
const list = (pick: (row: typeof rows[number]) => number) => rows.map((row) => pick(row).toFixed(0)).join(", ");
console.log(`Hill restarted into a running herd ${ROUNDS} times (ms):`);
console.log(`  spawn to its client port accepting: ${list((row) => row.listeningMs)}`);
console.log(`  main thread setting TLS connections up: ${list((row) => row.tlsMs)}`);
console.log(`  main thread creating the store's worker: ${list((row) => row.workerMs)}`);
console.log(`  slowest /healthz asked for in its first second of listening: ${list((row) => row.slowestMs)}`);
