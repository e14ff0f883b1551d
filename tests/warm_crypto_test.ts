import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { HERD_TEST_PERMISSIONS, TestHerd } from "./testing/herd.ts";

const PROBE = fileURLToPath(new URL("./testing/warm_crypto_probe.ts", import.meta.url));

/** Runs the probe in a fresh process (the set-up is done once per process); its JSON line. */
async function probe(args: string[], permissions: string[] = []): Promise<Record<string, number>> {
  const output = await new Deno.Command("deno", {
    args: ["run", "--no-prompt", ...permissions, PROBE, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
  return JSON.parse(new TextDecoder().decode(output.stdout));
}

// What these compare are times in one process, or two processes run back to back: a load elsewhere can blur one
// attempt, so each has three. A warm-up done on the event loop's thread fails all three: the loop stops for all of it.
const ATTEMPTS = 3;
/** Below this, the set-up costs too little on this machine (or Deno) for a warm-up to matter, or to be told apart. */
const MATTERS_MS = 10;

Deno.test("warmCrypto sets Deno's crypto up off the event loop: the call returns at once, and the loop keeps turning", async () => {
  const seen: string[] = [];
  let mattered = false;
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    const { syncMs, tookMs, longestGapMs } = await probe(["warm"]);
    assert.ok(Number.isFinite(syncMs) && Number.isFinite(tookMs) && Number.isFinite(longestGapMs));
    seen.push(
      `took ${tookMs.toFixed(1)} ms, returned after ${syncMs.toFixed(1)}, longest gap ${longestGapMs.toFixed(1)}`,
    );
    if (tookMs < MATTERS_MS) continue;
    mattered = true;
    if (syncMs < tookMs / 2 && longestGapMs < tookMs / 2) return;
  }
  if (!mattered) {
    console.log(`the set-up takes under ${MATTERS_MS} ms here: nothing to tell apart (${seen.join("; ")})`);
    return;
  }
  assert.fail(`the warm-up held the event loop: ${seen.join("; ")}`);
});

Deno.test({
  name: "after warmCrypto, a node:tls server's first connection no longer holds the event loop for the set-up",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await TestHerd.create({ placesUrl: "http://127.0.0.1:9/unused", names: ["A"], links: [] });
  const files = herd.tlsFiles("A");
  assert.ok(files !== null, "a test herd's links are TLS by default");
  const paths = [files.ca, files.cert, files.key];
  const permissions = [`--allow-read=${paths.join(",")}`, "--allow-net=127.0.0.1"];
  const seen: string[] = [];
  let mattered = false;
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    const cold = (await probe(["tls", "cold", ...paths], permissions)).longestGapMs;
    const warm = (await probe(["tls", "warm", ...paths], permissions)).longestGapMs;
    seen.push(`cold ${cold.toFixed(1)} ms, warmed ${warm.toFixed(1)} ms`);
    if (cold < MATTERS_MS) continue;
    mattered = true;
    if (warm < cold / 2) return;
  }
  if (!mattered) {
    console.log(`a first TLS connection costs under ${MATTERS_MS} ms here: nothing to tell apart (${seen.join("; ")})`);
    return;
  }
  assert.fail(`the warm-up did not spare the first TLS connection its set-up: ${seen.join("; ")}`);
});
