/** The command router's promises: what an IAMAT reply waits for. */

import assert from "node:assert/strict";
import { route, type RouterContext } from "../lib/client/router.ts";
import { NoReply } from "../lib/client/reply_queue.ts";
import { LocationStore } from "../lib/store/store.ts";

const encoder = new TextEncoder();
const ARRIVED_NS = 1_700_000_100_000_000_000n;

/** A context whose record held for a client is settled (committed and passed on) when the test says so. */
function context() {
  let settle: (() => void) | undefined;
  let fail: ((error: Error) => void) | undefined;
  const held = new Promise<void>((resolve, reject) => [settle, fail] = [resolve, reject]);
  let unsettled = true;
  held.then(() => unsettled = false, () => unsettled = false);
  const fake: RouterContext = {
    name: "Hill",
    store: new LocationStore(),
    places: { name: "none", result: () => Promise.reject(new Error("no WHATSAT here")) },
    publish: () => Promise.resolve(),
    limits: { maxClientIdBytes: 256, maxClockSkewS: 3600, maxRecords: 1000 },
    canCommit: () => true,
    heldSettled: () => unsettled ? held : undefined,
  };
  return { context: fake, settle: () => settle!(), fail: (error: Error) => fail!(error) };
}

function iamat(fake: RouterContext, time: number) {
  const line = `IAMAT kiwi +1+1 ${time}`;
  return route(fake, encoder.encode(line), ARRIVED_NS, line);
}

Deno.test("an IAMAT that is not newer is answered once the record that beats it is committed, not before", async () => {
  const { context: fake, settle } = context();
  await iamat(fake, 1_700_000_010); // the newer one: stored, its commit still to come
  let answered = false;
  const older = Promise.resolve(iamat(fake, 1_700_000_000)).then((reply) => {
    answered = true;
    return reply;
  });
  // A turn for a reply given at once to show.
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.equal(answered, false, "a kill -9 now would leave neither record on disk: no reply yet");
  settle();
  assert.match(String(await older), /^AT Hill \S+ kiwi \+1\+1 1700000000\n$/);
});

Deno.test("an IAMAT that is not newer gets no reply when the record that beats it cannot be committed", async () => {
  const { context: fake, fail } = context();
  await iamat(fake, 1_700_000_010);
  const older = Promise.resolve(iamat(fake, 1_700_000_000));
  fail(new NoReply("the record held for the client could not be committed"));
  await assert.rejects(older, NoReply);
});
