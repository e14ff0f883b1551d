import assert from "node:assert/strict";
import { formatAck, formatHello, formatRecord, parsePeerMessage } from "../lib/peer/wire.ts";
import { type IamatCommand, recordFromIamat, splitFields } from "../lib/protocol.ts";

const INVALID = { kind: "invalid" };

const RECORD = recordFromIamat(
  "Hill",
  {
    kind: "IAMAT",
    clientId: "kiwi.cs.ucla.edu",
    location: "+34.068930-118.445127",
    clientTime: "1621464827.959498503",
  },
  1621464828_223371889n,
);

/** Parses one formatted peer message the way a link reads it: strip the newline, split the fields. */
function reparse(message: string) {
  assert.ok(message.endsWith("\n"), "a peer message is one line");
  assert.equal(message.indexOf("\n"), message.length - 1, "a peer message is exactly one line");
  return parsePeerMessage(splitFields(message.slice(0, -1)));
}

Deno.test("formatHello() writes one HELLO line", () => {
  assert.equal(formatHello("Hill"), "HELLO Hill\n");
});

Deno.test("formatAck() writes one ACK line", () => {
  assert.equal(formatAck(42), "ACK 42\n");
  assert.equal(formatAck(0), "ACK 0\n");
});

Deno.test("formatRecord() writes the AT line, the sequence number and the wait", () => {
  assert.equal(
    formatRecord(RECORD, 7, 500),
    "AT Hill +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503 7 500\n",
  );
});

Deno.test("parsePeerMessage() reads back a HELLO", () => {
  assert.deepEqual(reparse(formatHello("Singleton")), { kind: "HELLO", name: "Singleton" });
});

Deno.test("parsePeerMessage() reads back an ACK", () => {
  for (const seq of [0, 1, 42, 999_999_999_999_999]) {
    assert.deepEqual(reparse(formatAck(seq)), { kind: "ACK", seq });
  }
});

Deno.test("parsePeerMessage() reads back a record with its sequence number and wait", () => {
  assert.deepEqual(reparse(formatRecord(RECORD, 7, 500)), { kind: "RECORD", record: RECORD, seq: 7, waitMs: 500 });
  assert.deepEqual(reparse(formatRecord(RECORD, 0, 0)), { kind: "RECORD", record: RECORD, seq: 0, waitMs: 0 });
});

Deno.test("parsePeerMessage() reads back a record with a Unicode client ID and a negative skew", () => {
  const command: IamatCommand = {
    kind: "IAMAT",
    clientId: "🥝a\u00A0b",
    location: "-33.8688+151.2093",
    clientTime: "1003.25",
  };
  const record = recordFromIamat("Jaquez", command, 1000n * 1_000_000_000n);
  assert.equal(record.line, "AT Jaquez -3.250000000 🥝a\u00A0b -33.8688+151.2093 1003.25");
  assert.deepEqual(reparse(formatRecord(record, 3, 250)), { kind: "RECORD", record, seq: 3, waitMs: 250 });
});

Deno.test("parsePeerMessage() accepts a plain six-field AT record without sequence number", () => {
  assert.deepEqual(parsePeerMessage(splitFields(RECORD.line)), {
    kind: "RECORD",
    record: RECORD,
    seq: undefined,
    waitMs: 0,
  });
});

Deno.test("parsePeerMessage() rejects a HELLO without exactly one name", () => {
  assert.deepEqual(parsePeerMessage(["HELLO"]), INVALID);
  assert.deepEqual(parsePeerMessage(["HELLO", "Hill", "Smith"]), INVALID);
});

Deno.test("parsePeerMessage() rejects a malformed ACK", () => {
  for (const line of ["ACK", "ACK 1 2", "ACK -1", "ACK +1", "ACK 1.5", "ACK abc", "ACK 1e3", "ACK 1234567890123456"]) {
    assert.deepEqual(parsePeerMessage(splitFields(line)), INVALID, line);
  }
});

Deno.test("parsePeerMessage() rejects a record with a seventh field but no wait", () => {
  assert.deepEqual(parsePeerMessage(splitFields(`${RECORD.line} 7`)), INVALID);
});

Deno.test("parsePeerMessage() rejects a record with too many fields", () => {
  assert.deepEqual(parsePeerMessage(splitFields(`${RECORD.line} 7 500 extra`)), INVALID);
});

Deno.test("parsePeerMessage() rejects a record with a malformed sequence number or wait", () => {
  for (const tail of ["x 500", "7 x", "-1 500", "7 -1", "1.5 500", "7 2.5", "1234567890123456 500"]) {
    assert.deepEqual(parsePeerMessage(splitFields(`${RECORD.line} ${tail}`)), INVALID, tail);
  }
});

Deno.test("parsePeerMessage() rejects a malformed AT record", () => {
  for (
    const line of [
      "AT Hill +0.1 kiwi +34-118",
      "AT Hill 0.1 kiwi +34-118 1 7 500",
      "AT Hill +0.1 kiwi +91-118 1 7 500",
      "AT Hill +0.1 kiwi +34-118 1e9 7 500",
    ]
  ) {
    assert.deepEqual(parsePeerMessage(splitFields(line)), INVALID, line);
  }
});

Deno.test("parsePeerMessage() rejects unknown and client messages", () => {
  for (const line of ["IAMAT kiwi +34-118 1", "WHATSAT kiwi 10 5", "hello Hill", "ack 1", "at Hill +0.1 kiwi +1+1 1"]) {
    assert.deepEqual(parsePeerMessage(splitFields(line)), INVALID, line);
  }
  assert.deepEqual(parsePeerMessage([]), INVALID);
});
