import assert from "node:assert/strict";

const PROBE = new URL("./testing/warm_crypto_probe.ts", import.meta.url).pathname;

Deno.test("warmCrypto sets Deno's crypto up off the event loop: the loop keeps turning meanwhile", async () => {
  // A fresh process each time: the set-up is done once per process, and this one may have done it already.
  for (let attempt = 0; attempt < 3; attempt++) {
    const output = await new Deno.Command("deno", {
      args: ["run", "--no-prompt", PROBE],
      stdout: "piped",
      stderr: "piped",
    })
      .output();
    assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
    const { tookMs, turns } = JSON.parse(new TextDecoder().decode(output.stdout));
    assert.ok(Number.isFinite(tookMs) && tookMs >= 0);
    // Too quick to tell (a machine or a Deno whose set-up costs nothing): nothing a warm-up could hold up.
    if (tookMs < 5) continue;
    // Done on the event loop's thread, the set-up would have held it: no 1 ms interval could fire before the end.
    assert.ok(turns >= 1, `the warm-up took ${tookMs.toFixed(1)} ms and the event loop did not turn meanwhile`);
    return;
  }
});
