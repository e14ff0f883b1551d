import assert from "node:assert/strict";
import {
  formatAck,
  formatHello,
  formatLinks,
  formatMark,
  formatMarked,
  formatRecord,
  NOT_A_NEIGHBOUR_LINE,
  parsePeerMessage,
  PING_LINE,
  PONG_LINE,
  pushAck,
  pushRecord,
} from "../lib/peer/wire.ts";
import fc from "fast-check";
import {
  type HerdRecordRules,
  type IamatCommand,
  parseCatchUpRecordLine,
  parseHerdRecord,
  parseLiveRecordLine,
  parseRecordFields,
  parseStoredRecordLine,
  recordFromIamat,
  splitFields,
  splitSpacedFields,
} from "../lib/protocol.ts";

/** The default herd's names, with the default limits. */
const RULES: HerdRecordRules = {
  servers: new Set(["Hill", "Jaquez", "Smith", "Campbell", "Singleton"]),
  maxClientIdBytes: 256,
  maxLineBytes: 8192,
};

/** Parses a line with the default rules. */
function parse(line: string) {
  return parsePeerMessage(line, RULES);
}

/** Asserts `line` is refused, whatever the reason. */
function assertInvalid(line: string, message?: string): void {
  assert.equal(parse(line).kind, "invalid", message ?? line);
}

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
  return parse(message.slice(0, -1));
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

Deno.test("pushRecord() and pushAck() give a batch the same text as formatRecord() and formatAck() one at a time", () => {
  const parts: (string | number)[] = ["DIGEST\n"];
  pushRecord(parts, RECORD, 7, 500);
  pushRecord(parts, RECORD, 8, 0);
  pushAck(parts, 12);
  assert.equal(parts.join(""), "DIGEST\n" + formatRecord(RECORD, 7, 500) + formatRecord(RECORD, 8, 0) + formatAck(12));
});

Deno.test("formatLinks() and parsePeerMessage() carry a server's link state, names our config does not have included", () => {
  const report = { server: "Smith", version: 1_796_000_000_123, up: ["Hill", "Campbell"], inbound: ["Singleton"] };
  assert.equal(formatLinks(report), "LINKS Smith 1796000000123 Hill,Campbell Singleton\n");
  assert.deepEqual(parsePeerMessage(formatLinks(report).trimEnd(), RULES), { kind: "LINKS", report });
  const none = { server: "Hill", version: 7, up: [], inbound: [] };
  assert.equal(formatLinks(none), "LINKS Hill 7 - -\n");
  assert.deepEqual(parsePeerMessage("LINKS Hill 7 - -", RULES), { kind: "LINKS", report: none });
  // Another server's config may have them (a change rolled out one server at a time): the link state sorts them out.
  assert.deepEqual(parsePeerMessage("LINKS Nobody 7 Hill,New -", RULES), {
    kind: "LINKS",
    report: { server: "Nobody", version: 7, up: ["Hill", "New"], inbound: [] },
  });
  for (
    const line of [
      "LINKS Hill 7 Hill,,Smith -",
      "LINKS Hill 7 - ,",
      "LINKS Hill x - -",
      "LINKS Hill 7 -",
      "LINKS Hill 7 - - x",
      "LINKS Hill 1234567890123456 - -",
    ]
  ) {
    assert.equal(parsePeerMessage(line, RULES).kind, "invalid", line);
  }
});

Deno.test("parsePeerMessage() reads SKIP and its sequence number", () => {
  assert.deepEqual(parsePeerMessage("SKIP 42", RULES), { kind: "SKIP", seq: 42 });
  for (const line of ["SKIP", "SKIP x", "SKIP 1 2", "SKIP 1234567890123456"]) {
    assert.equal(parsePeerMessage(line, RULES).kind, "invalid", line);
  }
});

Deno.test("parsePeerMessage() reads REFUSED and its reason, and refuses it without one or with more", () => {
  assert.deepEqual(reparse(NOT_A_NEIGHBOUR_LINE), { kind: "REFUSED", reason: "not-a-neighbour" });
  for (const line of ["REFUSED", "REFUSED a b"]) assert.equal(parsePeerMessage(line, RULES).kind, "invalid", line);
});

Deno.test("parsePeerMessage() reads back a HELLO", () => {
  assert.deepEqual(reparse(formatHello("Singleton")), { kind: "HELLO", name: "Singleton" });
});

Deno.test("parsePeerMessage() reads back a PING and a PONG, and refuses them with fields", () => {
  assert.deepEqual(reparse(PING_LINE), { kind: "PING" });
  assert.deepEqual(reparse(PONG_LINE), { kind: "PONG" });
  assertInvalid("PING 1");
  assertInvalid("PONG x");
  assertInvalid("ping");
});

Deno.test("parsePeerMessage() reads back a MARK and a MARKED, and refuses them without one count from 1", () => {
  for (const n of [1, 2, 999_999_999_999_999]) {
    assert.deepEqual(reparse(formatMark(n)), { kind: "MARK", n });
    assert.deepEqual(reparse(formatMarked(n)), { kind: "MARKED", n });
  }
  for (const line of ["MARK", "MARK 0", "MARK 00", "MARK -1", "MARK 1 2", "MARKED x", "MARKED 1.5", "mark 1"]) {
    assertInvalid(line);
  }
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
  assert.deepEqual(parse(RECORD.line), {
    kind: "RECORD",
    record: RECORD,
    seq: undefined,
    waitMs: 0,
  });
});

Deno.test("parsePeerMessage() rejects a HELLO without exactly one name", () => {
  assertInvalid("HELLO");
  assertInvalid("HELLO Hill Smith");
});

Deno.test("parsePeerMessage() rejects a malformed ACK", () => {
  for (const line of ["ACK", "ACK 1 2", "ACK -1", "ACK +1", "ACK 1.5", "ACK abc", "ACK 1e3", "ACK 1234567890123456"]) {
    assertInvalid(line, line);
  }
});

Deno.test("parsePeerMessage() rejects a record with a seventh field but no wait", () => {
  assertInvalid(`${RECORD.line} 7`);
});

Deno.test("parsePeerMessage() rejects a record with too many fields", () => {
  assertInvalid(`${RECORD.line} 7 500 extra`);
});

Deno.test("parsePeerMessage() rejects a record with a malformed sequence number or wait", () => {
  for (const tail of ["x 500", "7 x", "-1 500", "7 -1", "1.5 500", "7 2.5", "1234567890123456 500"]) {
    assertInvalid(`${RECORD.line} ${tail}`, tail);
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
    assertInvalid(line, line);
  }
});

Deno.test("parsePeerMessage() rejects unknown and client messages", () => {
  for (const line of ["IAMAT kiwi +34-118 1", "WHATSAT kiwi 10 5", "hello Hill", "ack 1", "at Hill +0.1 kiwi +1+1 1"]) {
    assertInvalid(line, line);
  }
  assert.deepEqual(parse(""), { kind: "empty" });
  assert.deepEqual(parse(" \t"), { kind: "empty" });
});

Deno.test("parsePeerMessage() refuses a record the herd could not have produced, saying why", () => {
  const good = "AT Hill +0.263873386 kiwi +34.068930-118.445127 1621464827.959498503";
  assert.equal(parse(good).kind, "RECORD");
  const cases: [string, RegExp][] = [
    ["AT Mallory +0.263873386 kiwi +34-118 1", /server the herd does not have/],
    ["AT Hill +0.000000001 forged.client +1+1 99999999999.0", /^$/], // the forgery is well-formed: refused by TLS
    ["AT Hill +0.1 kiwi +34-118 1", /nine decimals/],
    ["AT Hill 0.263873386 kiwi +34-118 1", /nine decimals/],
    ["AT Hill +00.263873386 kiwi +34-118 1", /nine decimals/],
    ["AT Hill -0.000000000 kiwi +34-118 1", /nine decimals/],
    ["AT Hill +1e3.000000000 kiwi +34-118 1", /nine decimals/],
    [`AT Hill +0.263873386 ${"k".repeat(257)} +34-118 1`, /client ID is too long/],
    ["AT Hill +0.263873386 kiwi +91-118 1", /location/],
    ["AT Hill +0.263873386 kiwi 34-118 1", /location/],
    ["AT Hill +0.263873386 kiwi +34-118 -1", /client time/],
    ["AT Hill +0.263873386 kiwi +34-118 1e9", /client time/],
    ["AT Hill +0.263873386 kiwi +34-118", /six-field/],
    ["AT Hill +0.263873386 kiwi +34-118 1 extra", /six-field/],
    [`AT Hill +0.263873386 kiwi +34-118 1${"0".repeat(8200)}`, /longer than a line/],
  ];
  for (const [line, reason] of cases) {
    const message = parse(line);
    if (reason.source === "^$") {
      assert.equal(message.kind, "RECORD", line);
      continue;
    }
    assert.equal(message.kind, "invalid", line.slice(0, 80));
    assert.match((message as { reason: string }).reason, reason, line.slice(0, 80));
  }
  assert.equal(parse("AT Hill -3.250000000 kiwi +1+1 1").kind, "RECORD", "a negative difference is fine");
  assert.equal(parse("AT Hill -0.250000000 kiwi +1+1 1").kind, "RECORD", "so is one under a second");
});

/** What a record holds in each of its fields after `AT`, a few each. */
const RECORD_FIELDS = [
  ["Hill", "Jaquez"],
  ["+0.263873386", "-3.250000000"],
  ["kiwi", "🥝a\u00A0b"],
  ["+34.068930-118.445127", "-1+1"],
  ["1621464827.959498503", "7"],
];

/**
 * Lines of `AT` and fields, each field mostly one of `valid`'s for its place
 * (the last list for any place after), sometimes anything; mostly joined by
 * one space, sometimes by other whitespace or none. As many fields as one of
 * `counts`, or any number from 1 to `max`.
 */
function atLines(valid: string[][], counts: number[], max: number): fc.Arbitrary<string> {
  const odd = fc.oneof(
    fc.constantFrom("Mallory", "+0.1", "+91+1", "1e9", "x", ""),
    fc.string({ maxLength: 6 }),
  );
  const field = (i: number) =>
    fc.oneof({ arbitrary: fc.constantFrom(...valid[Math.min(i, valid.length - 1)]), weight: 6 }, {
      arbitrary: odd,
      weight: 1,
    });
  const separator = fc.oneof({ arbitrary: fc.constant(" "), weight: 12 }, fc.constantFrom("  ", "\t", " \r", ""));
  return fc.oneof(...counts.map((count) => fc.constant(count)), fc.integer({ min: 1, max })).chain((count) =>
    fc.tuple(
      fc.tuple(...Array.from({ length: count }, (_, i) => fc.tuple(field(i), separator))),
      fc.oneof({ arbitrary: fc.constant(""), weight: 8 }, fc.constantFrom(" ", "\t")),
    ).map(([parts, trailing]) =>
      "AT " + parts.map(([text, sep], i) => i === parts.length - 1 ? text : text + sep).join("") + trailing
    )
  );
}

Deno.test("parseLiveRecordLine() reads a line as splitting it would, whenever it reads it at all", () => {
  // Then a sequence number and a wait, each mostly a count.
  const seq = ["12", "0", "0012", "123456789012345", "1234567890123456"];
  const line = atLines([...RECORD_FIELDS, seq, ["500", "0", "007"]], [5, 7], 9);
  let read = 0;
  let records = 0;
  fc.assert(
    fc.property(line, (line) => {
      const fast = parseLiveRecordLine(line, RULES);
      if (fast === undefined) return;
      read++;
      if (typeof fast.record !== "string") records++;
      const fields = splitFields(line);
      assert.equal(fields.length, 8, line);
      assert.deepEqual(fast.record, parseHerdRecord(fields.slice(0, 6), RULES), line);
      const count = (field: string) => /^[0-9]{1,15}$/.test(field) ? Number(field) : -1;
      assert.deepEqual([fast.seq, fast.waitMs], fields.slice(6).map(count), line);
    }),
    { numRuns: 5000 },
  );
  // The property says something only if the fast path read lines, and records among them.
  assert.ok(records > 200, `the fast path read only ${records} records: the property checked too little`);
  assert.ok(read > 500, `the fast path read only ${read} lines: the property checked too little`);
});

Deno.test("parseCatchUpRecordLine() reads a reconciliation's line as splitting it would, whenever it reads it at all", () => {
  const line = atLines(RECORD_FIELDS, [5], 8);
  let read = 0;
  let records = 0;
  fc.assert(
    fc.property(line, (line) => {
      const message = parsePeerMessage(line, RULES);
      const fast = parseCatchUpRecordLine(line, RULES);
      if (fast === undefined) return;
      read++;
      if (typeof fast !== "string") records++;
      const fields = splitFields(line);
      assert.equal(fields.length, 6, line);
      assert.deepEqual(fast, parseHerdRecord(fields, RULES), line);
      // What the link makes of it, as before: a record with no sequence, or a refusal saying why.
      assert.deepEqual(
        message,
        typeof fast === "string"
          ? { kind: "invalid", reason: fast }
          : { kind: "RECORD", record: fast, seq: undefined, waitMs: 0 },
      );
    }),
    { numRuns: 5000 },
  );
  // The property says something only if the fast path read lines, and records among them.
  assert.ok(records > 200, `the fast path read only ${records} records: the property checked too little`);
  assert.ok(read > 500, `the fast path read only ${read} lines: the property checked too little`);
});

Deno.test("parseStoredRecordLine() reads a database's line as splitting it does, whatever its form", () => {
  const line = atLines(RECORD_FIELDS, [5], 8);
  // Lines in the herd's own form: AT and five fields joined by single spaces, with no other whitespace.
  const ownForm = /^AT( [^ \t\n\v\f\r]+){5}$/;
  let ownRecords = 0;
  fc.assert(
    fc.property(line, (line) => {
      const record = parseStoredRecordLine(line);
      assert.deepEqual(record, parseRecordFields(splitSpacedFields(line)), line);
      // The lines the short path reads (it is not observable from outside): enough of them must be records.
      if (record !== null && ownForm.test(line)) ownRecords++;
    }),
    { numRuns: 5000 },
  );
  assert.ok(ownRecords > 500, `only ${ownRecords} records in the herd's form: the property checked too little`);
});

Deno.test("parsePeerMessage() reports a live record that is the line held for its client, and checks every other", () => {
  const held = new Map([[RECORD.clientId, RECORD.line]]);
  const rules: HerdRecordRules = {
    ...RULES,
    holds: (clientId, line, end) => held.get(clientId) === line.slice(0, end),
  };
  assert.deepEqual(parsePeerMessage(`${RECORD.line} 7 500`, rules), { kind: "HELD", seq: 7, waitMs: 500 });
  // A newer record of the same client, and one of another client: parsed and checked as ever.
  const newer = RECORD.line.replace("1621464827.959498503", "1621464827.959498504");
  assert.equal(parsePeerMessage(`${newer} 8 0`, rules).kind, "RECORD");
  assert.equal(parsePeerMessage(`${RECORD.line.replace("kiwi", "kiwi2")} 9 0`, rules).kind, "RECORD");
  // A line that differs from the held one only where a check refuses it is refused, not taken for the held one.
  assertInvalid(`${RECORD.line.replace("+34.068930", "+94.068930")} 10 0`);
  assert.equal(parsePeerMessage(`${RECORD.line.replace("+34.068930", "+94.068930")} 10 0`, rules).kind, "invalid");
  assert.equal(parsePeerMessage(`${RECORD.line.replace("+0.263873386", "+0.26387338")} 11 0`, rules).kind, "invalid");
  // Its sequence and wait are still checked; a catch-up line (no sequence) is parsed as a record.
  assert.equal(parsePeerMessage(`${RECORD.line} x 500`, rules).kind, "invalid");
  assert.equal(parsePeerMessage(RECORD.line, rules).kind, "RECORD");
});
