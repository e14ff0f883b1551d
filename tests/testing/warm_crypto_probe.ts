/**
 * Run in a process of its own (Deno's crypto set-up is once per process):
 * calls warmCrypto() while a 1 ms interval counts the event loop's turns,
 * and prints `{"tookMs", "turns"}` as one JSON line.
 */
import { warmCrypto } from "../../lib/net/warm_crypto.ts";

let turns = 0;
const timer = setInterval(() => turns++, 1);
const started = performance.now();
await warmCrypto();
const tookMs = performance.now() - started;
clearInterval(timer);
console.log(JSON.stringify({ tookMs, turns }));
