/**
 * A server restarted into a running herd: where its main thread's time goes
 * in its first second. The five servers of a test herd (TLS peer links) are
 * started; then Hill is stopped and started again `ROUNDS` times under
 * `--cpu-prof`, each time until the herd agrees again and half a second
 * more. Per restart: the time from the spawn to its client port accepting,
 * and from its CPU profile the main thread's time in the natives that set a
 * TLS connection up (`start`, `initServerTls`, `initClientTls`: Deno's crypto
 * set-up, once per process, lands in the first of them) and in creating the
 * store's worker (`op_create_worker`), both of which hold the event loop.
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

await using herd = await TestHerd.create({ placesUrl: "http://127.0.0.1:9/places" });
await herd.startAll();
const profiles = await Deno.makeTempDir({ prefix: "herd-restart-" });
const rows: { listeningMs: number; tlsMs: number; workerMs: number }[] = [];
try {
  for (let round = 0; round < ROUNDS; round++) {
    await herd.stop("Hill", "SIGTERM");
    const config = await loadConfig(herd.configPathOf("Hill"));
    const args = serverRunArgs(config, "Hill", { keyPresent: false });
    const dir = `${profiles}/${round}`;
    args.splice(1, 0, "--cpu-prof", `--cpu-prof-dir=${dir}`);
    const spawnedAt = performance.now();
    const child = new Deno.Command("deno", { args, stdin: "null", stdout: "null", stderr: "null" }).spawn();
    await accepting(herd.port("Hill"));
    const listeningMs = performance.now() - spawnedAt;
    await herd.waitConverged(herd.names);
    await new Promise((resolve) => setTimeout(resolve, 500));
    child.kill("SIGTERM");
    await child.status;
    const file = [...Deno.readDirSync(dir)].map((entry) => entry.name).find((name) => !name.includes("worker"));
    if (file === undefined) throw new Error(`no CPU profile of the main thread in ${dir}`);
    const profile = JSON.parse(await Deno.readTextFile(`${dir}/${file}`)) as CpuProfile;
    rows.push({
      listeningMs,
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
