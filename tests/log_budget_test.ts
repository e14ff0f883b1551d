import assert from "node:assert/strict";
import { LogBudget } from "../lib/log_budget.ts";

Deno.test("LogBudget lets ten lines a second through and says how many others there were once the second is over", async () => {
  let summary: (count: number) => void = () => {};
  const said = new Promise<number>((resolve) => summary = resolve);
  const budget = new LogBudget(10, summary);
  const taken = Array.from({ length: 25 }, () => budget.take());
  assert.deepEqual(taken, [...Array(10).fill(true), ...Array(15).fill(false)]);
  // The budget's timer does not keep a process alive (a server stopping need not wait for it): this test does.
  const alive = setTimeout(() => {}, 5000);
  assert.equal(await said, 15);
  clearTimeout(alive);
});
