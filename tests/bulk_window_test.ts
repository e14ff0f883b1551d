import assert from "node:assert/strict";
import {
  BULK_TARGET_DELAY_MS,
  BULK_WINDOW_MAX,
  BULK_WINDOW_MIN,
  BULK_WINDOW_START,
  BulkWindow,
} from "../lib/peer/bulk_window.ts";

/** Sends marks until the window is closed; their numbers. */
function fill(window: BulkWindow, now: number): number[] {
  const marks: number[] = [];
  while (window.open) marks.push(window.mark(now));
  return marks;
}

Deno.test("a bulk window numbers its marks from 1 and closes once as many are unanswered as it is wide", () => {
  const window = new BulkWindow();
  const marks = fill(window, 0);
  assert.deepEqual(marks, Array.from({ length: window.size }, (_, i) => i + 1));
  assert.equal(window.unanswered, window.size);
  assert.equal(window.open, false);
});

Deno.test("a bulk window takes an answer for every mark up to it, and refuses one for a mark not sent or answered", () => {
  const window = new BulkWindow();
  fill(window, 0);
  const sent = window.unanswered;
  assert.equal(window.answered(sent + 1, 1), false, "a mark never sent");
  assert.equal(window.unanswered, sent, "a refused answer changes nothing");
  assert.equal(window.answered(2, 1), true);
  assert.equal(window.unanswered, sent - 2, "MARKED 2 answers marks 1 and 2");
  assert.equal(window.answered(2, 1), false, "answered already");
  assert.equal(window.answered(1, 1), false, "answered already, by a greater one");
  assert.equal(window.open, true);
});

Deno.test("a bulk window widens while its marks come back within the target delay, up to its most", () => {
  const window = new BulkWindow();
  let now = 0;
  const first = window.size;
  for (let round = 0; round < 100; round++) {
    const marks = fill(window, now);
    now += 5; // every round trip 5 ms: no queue
    for (const mark of marks) assert.ok(window.answered(mark, now));
  }
  assert.ok(window.size > first, `${window.size} > ${first}`);
  assert.equal(window.size, BULK_WINDOW_MAX);
});

Deno.test("a bulk window narrows, down to its least, while its marks come back later than the target delay allows", () => {
  const window = new BulkWindow();
  let now = 0;
  // The fastest round trip: 5 ms.
  assert.ok(window.answered(window.mark(now), now + 5));
  now += 5;
  const sizes: number[] = [];
  for (let round = 0; round < 20; round++) {
    const marks = fill(window, now);
    now += 5 + BULK_TARGET_DELAY_MS + 1; // a queue past the target at the receiver
    for (const mark of marks) assert.ok(window.answered(mark, now));
    sizes.push(window.size);
  }
  assert.ok(sizes[1] < sizes[0] || sizes[0] === BULK_WINDOW_MIN, `narrowed: ${sizes}`);
  assert.equal(window.size, BULK_WINDOW_MIN);
  assert.ok(window.size >= 1, "a window never closes for good");
});

Deno.test("a closed bulk window lets its waiters go and stays open", async () => {
  const window = new BulkWindow();
  fill(window, 0);
  let released = false;
  const waiting = window.opened().then(() => released = true);
  await Promise.resolve();
  assert.equal(released, false, "nothing answered yet: the writer waits");
  window.close();
  await waiting;
  assert.equal(released, true);
  assert.equal(window.open, true);
});

Deno.test("a bulk window lets a waiter go once an answer opens it", async () => {
  const window = new BulkWindow();
  fill(window, 0);
  const waiting = window.opened();
  assert.ok(window.answered(1, 1));
  await waiting;
  assert.equal(window.open, true);
});

Deno.test("a bulk window times an answer by the mark it names: the marks before it go with it, those after stay out", () => {
  const window = new BulkWindow();
  // Marks 1-4 sent 10 ms apart; MARKED 3 at 31 ms: mark 3's round trip is 11 ms, the fastest so far, so within target.
  for (let i = 0; i < 4; i++) window.mark(i * 10);
  const size = window.size;
  assert.ok(window.answered(3, 31));
  assert.equal(window.unanswered, 1, "mark 4 still out");
  assert.equal(window.size, size + 1, "widened");
  // Mark 4 (sent at 30) answered at 30 + 11 + the target + 1: later than the target allows over the fastest (11 ms).
  assert.ok(window.answered(4, 30 + 11 + BULK_TARGET_DELAY_MS + 1));
  assert.equal(window.unanswered, 0);
  assert.equal(window.size, size, "narrowed");
});

Deno.test("a bulk window whose first marks all go unanswered past its patience, two looks in a row, stops pacing and marking, once", () => {
  const window = new BulkWindow();
  const marks = fill(window, 1000);
  assert.equal(window.open, false);
  assert.equal(window.giveUpIfUnanswered(1000 + 9_999, 10_000), false, "not yet");
  assert.equal(window.giveUpIfUnanswered(1000 + 10_000, 10_000), false, "one look past it (it may have come late)");
  assert.equal(window.open, false);
  assert.equal(window.giveUpIfUnanswered(1000 + 11_000, 10_000), true, "the next look");
  assert.equal(window.open, true);
  assert.equal(window.marking, false);
  assert.equal(window.giveUpIfUnanswered(1000 + 20_000, 10_000), false, "said once");
  assert.equal(marks.length, BULK_WINDOW_START);
});

Deno.test("a bulk window that gave up paces again once an answer comes after all", () => {
  const window = new BulkWindow();
  const marks = fill(window, 0);
  window.giveUpIfUnanswered(10_000, 10_000);
  assert.equal(window.giveUpIfUnanswered(11_000, 10_000), true);
  assert.ok(window.answered(marks[marks.length - 1], 11_001), "an answer that waited unread");
  assert.equal(window.marking, true);
  assert.equal(window.unanswered, 0);
  fill(window, 11_001);
  assert.equal(window.open, false, "paced again");
});

Deno.test("a bulk window whose receiver answered a mark never stops pacing, however late the next answer", () => {
  const window = new BulkWindow();
  fill(window, 0);
  assert.ok(window.answered(1, 5));
  fill(window, 5);
  assert.equal(window.giveUpIfUnanswered(60_000, 10_000), false);
  assert.equal(window.open, false);
  assert.equal(window.marking, true);
});

Deno.test("a bulk window with nothing sent has nothing to give up on", () => {
  assert.equal(new BulkWindow().giveUpIfUnanswered(60_000, 10_000), false);
});
