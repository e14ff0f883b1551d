import assert from "node:assert/strict";
import fc from "fast-check";
import {
  type Command,
  compareRecords,
  type IamatCommand,
  type LocationRecord,
  parseCommand,
  parseRecordFields,
  recordFromIamat,
  splitFields,
  splitSpacedFields,
} from "../lib/protocol.ts";

const INVALID: Command = { kind: "invalid" };
const EMPTY: Command = { kind: "empty" };

function iamat(clientId: string, location: string, clientTime: string): IamatCommand {
  return { kind: "IAMAT", clientId, location, clientTime };
}

function record(line: string): LocationRecord {
  const parsed = parseRecordFields(splitFields(line));
  assert.ok(parsed !== null, `expected a valid record: ${line}`);
  return parsed;
}

// IAMAT

Deno.test("parseCommand() accepts the IAMAT from the spec", () => {
  assert.deepEqual(
    parseCommand("IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503"),
    iamat("kiwi.cs.ucla.edu", "+34.068930-118.445127", "1621464827.959498503"),
  );
});

Deno.test("parseCommand() rejects an IAMAT with three or five fields", () => {
  assert.deepEqual(parseCommand("IAMAT kiwi +34-118"), INVALID);
  assert.deepEqual(parseCommand("IAMAT kiwi +34-118 1 extra"), INVALID);
  assert.deepEqual(parseCommand("IAMAT"), INVALID);
});

Deno.test("parseCommand() treats the verb case-sensitively", () => {
  assert.deepEqual(parseCommand("iamat kiwi +34-118 1"), INVALID);
  assert.deepEqual(parseCommand("Iamat kiwi +34-118 1"), INVALID);
  assert.deepEqual(parseCommand("whatsat kiwi 10 5"), INVALID);
  assert.deepEqual(parseCommand("LLL"), INVALID);
});

Deno.test("parseCommand() accepts the ISO 6709 forms from the spec", () => {
  for (const location of ["+34.068930-118.445127", "-33.8688+151.2093", "+12-118"]) {
    assert.deepEqual(parseCommand(`IAMAT kiwi ${location} 1`), iamat("kiwi", location, "1"));
  }
});

Deno.test("parseCommand() accepts latitudes and longitudes at their limits", () => {
  for (const location of ["+90-180", "-90+180", "+90.000+180.000", "-90.0-180.0", "+0+0", "-0.0-0.0", "+090-0180"]) {
    assert.deepEqual(parseCommand(`IAMAT kiwi ${location} 1`), iamat("kiwi", location, "1"), location);
  }
});

Deno.test("parseCommand() rejects a latitude above 90", () => {
  for (const location of ["+91+0", "+90.0001+0", "-90.0001+0", "+100+0", "+1000000000000000000000+0"]) {
    assert.deepEqual(parseCommand(`IAMAT kiwi ${location} 1`), INVALID, location);
  }
});

Deno.test("parseCommand() rejects a longitude above 180", () => {
  for (const location of ["+0+181", "+0+180.0001", "+0-180.0000001", "+0-200", "+0+1000"]) {
    assert.deepEqual(parseCommand(`IAMAT kiwi ${location} 1`), INVALID, location);
  }
});

Deno.test("parseCommand() rejects a location with a missing sign", () => {
  for (const location of ["34.068930-118.445127", "+34.068930118.445127", "34-118", "+34", "-118"]) {
    assert.deepEqual(parseCommand(`IAMAT kiwi ${location} 1`), INVALID, location);
  }
});

Deno.test("parseCommand() rejects a malformed location", () => {
  for (const location of ["+34.-118", "+.5-118", "+34-118.", "++34-118", "+34--118", "+34-118+5", "+3a-118", "+"]) {
    assert.deepEqual(parseCommand(`IAMAT kiwi ${location} 1`), INVALID, location);
  }
});

Deno.test("parseCommand() accepts a location with any number of digits, leading zeros too, as it was sent", () => {
  for (
    const location of ["+00090.0-0180", "+0000000000000000000000000000000000000012-118", "-0-0", "+90.000+180.000"]
  ) {
    assert.deepEqual(parseCommand(`IAMAT kiwi ${location} 1`), iamat("kiwi", location, "1"), location);
  }
});

Deno.test("parseCommand() accepts a client time of digits with an optional fraction", () => {
  for (const time of ["0", "1621464827", "1621464827.959498503", "1621464827.9594985031234", "0.5"]) {
    assert.deepEqual(parseCommand(`IAMAT kiwi +34-118 ${time}`), iamat("kiwi", "+34-118", time), time);
  }
});

Deno.test("parseCommand() rejects a client time with a sign, an exponent or no digits after the point", () => {
  for (
    const time of ["+1621464827", "-1621464827", "1.6e9", "1e9", "1621464827.", ".5", "abc", "1,5", "0x10", "1.2.3"]
  ) {
    assert.deepEqual(parseCommand(`IAMAT kiwi +34-118 ${time}`), INVALID, time);
  }
});

// Whitespace

Deno.test("parseCommand() splits fields on runs of spaces, tabs, CR, FF and VT", () => {
  const expected = iamat("kiwi", "+34-118", "1");
  assert.deepEqual(parseCommand("IAMAT  kiwi\t+34-118 \t 1"), expected);
  assert.deepEqual(parseCommand("IAMAT\rkiwi\f+34-118\v1"), expected);
  assert.deepEqual(parseCommand("IAMAT\r\n\f\vkiwi \t+34-118\n1"), expected);
});

Deno.test("parseCommand() ignores leading and trailing whitespace", () => {
  const expected = iamat("kiwi", "+34-118", "1");
  assert.deepEqual(parseCommand("  \tIAMAT kiwi +34-118 1"), expected);
  assert.deepEqual(parseCommand("IAMAT kiwi +34-118 1\r"), expected);
  assert.deepEqual(parseCommand(" \f\vIAMAT kiwi +34-118 1 \t\r"), expected);
});

Deno.test("parseCommand() treats U+00A0 and U+2028 as ordinary characters in a client ID", () => {
  assert.deepEqual(parseCommand("IAMAT a\u00A0b +1+1 1"), iamat("a\u00A0b", "+1+1", "1"));
  assert.deepEqual(parseCommand("IAMAT a\u2028b +1+1 1"), iamat("a\u2028b", "+1+1", "1"));
  assert.deepEqual(parseCommand("IAMAT \u00A0 +1+1 1"), iamat("\u00A0", "+1+1", "1"));
  assert.deepEqual(parseCommand("IAMAT a\u3000b +1+1 1"), iamat("a\u3000b", "+1+1", "1"));
});

Deno.test("parseCommand() does not strip Unicode spaces from the ends of a line", () => {
  // The NBSP is glued to the verb, so the verb is not IAMAT.
  assert.deepEqual(parseCommand("\u00A0IAMAT kiwi +1+1 1"), INVALID);
  // The NBSP is glued to the time, so the time is malformed.
  assert.deepEqual(parseCommand("IAMAT kiwi +1+1 1\u00A0"), INVALID);
  // On its own it is a fifth field.
  assert.deepEqual(parseCommand("IAMAT kiwi +1+1 1 \u2028"), INVALID);
});

Deno.test("parseCommand() returns empty for an empty or whitespace-only line", () => {
  for (const line of ["", " ", "\t", "\r", " \t\r\f\v ", "\n"]) {
    assert.deepEqual(parseCommand(line), EMPTY, JSON.stringify(line));
  }
});

Deno.test("parseCommand() does not treat a line of Unicode spaces as empty", () => {
  assert.deepEqual(parseCommand("\u00A0"), INVALID);
  assert.deepEqual(parseCommand("\u2028"), INVALID);
});

Deno.test("parseCommand() accepts Unicode client IDs", () => {
  for (const id of ["🥝", "café", "Ñandú.ucla.edu", "客户端", "👩‍💻", "a😀b"]) {
    assert.deepEqual(parseCommand(`IAMAT ${id} +34-118 1`), iamat(id, "+34-118", "1"), id);
    assert.deepEqual(parseCommand(`WHATSAT ${id} 10 5`), { kind: "WHATSAT", clientId: id, radiusKm: "10", bound: 5 });
  }
});

// WHATSAT

Deno.test("parseCommand() accepts the WHATSAT from the spec", () => {
  assert.deepEqual(parseCommand("WHATSAT kiwi.cs.ucla.edu 10 5"), {
    kind: "WHATSAT",
    clientId: "kiwi.cs.ucla.edu",
    radiusKm: "10",
    bound: 5,
  });
});

Deno.test("parseCommand() accepts a radius in (0, 50]", () => {
  for (const radius of ["50", "0.5", "50.000", "0.0001", "1", "49.999999", "007"]) {
    const command = parseCommand(`WHATSAT kiwi ${radius} 5`);
    assert.deepEqual(command, { kind: "WHATSAT", clientId: "kiwi", radiusKm: radius, bound: 5 }, radius);
  }
});

Deno.test("parseCommand() rejects a radius of 0 or above 50", () => {
  for (const radius of ["0", "0.0", "000", "50.0001", "51", "100", "50.000000000001"]) {
    assert.deepEqual(parseCommand(`WHATSAT kiwi ${radius} 5`), INVALID, radius);
  }
});

Deno.test("parseCommand() rejects a malformed radius", () => {
  for (const radius of ["-1", "+10", "abc", "1e1", ".5", "5.", "NaN", "Infinity"]) {
    assert.deepEqual(parseCommand(`WHATSAT kiwi ${radius} 5`), INVALID, radius);
  }
});

Deno.test("parseCommand() accepts a bound from 0 to 20", () => {
  for (const bound of [0, 1, 19, 20]) {
    assert.deepEqual(parseCommand(`WHATSAT kiwi 10 ${bound}`), {
      kind: "WHATSAT",
      clientId: "kiwi",
      radiusKm: "10",
      bound,
    });
  }
});

Deno.test("parseCommand() rejects a bound above 20 or not an integer", () => {
  for (const bound of ["21", "100", "99999999999999999999999", "-1", "+5", "1.5", "5.0", "abc", "1e1", ""]) {
    assert.deepEqual(parseCommand(`WHATSAT kiwi 10 ${bound}`), INVALID, bound);
  }
});

Deno.test("parseCommand() rejects a WHATSAT with three or five fields", () => {
  assert.deepEqual(parseCommand("WHATSAT kiwi 10"), INVALID);
  assert.deepEqual(parseCommand("WHATSAT kiwi 10 5 5"), INVALID);
});

Deno.test("parseCommand() rejects an AT line from a client", () => {
  assert.deepEqual(parseCommand("AT Hill +0.1 kiwi +34-118 1"), INVALID);
  assert.deepEqual(
    parseCommand("AT Hill +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503"),
    INVALID,
  );
});

// recordFromIamat

Deno.test("recordFromIamat() builds the AT line with the fields copied byte for byte", () => {
  const command = parseCommand("IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503");
  assert.equal(command.kind, "IAMAT");
  const result = recordFromIamat("Hill", command as IamatCommand, 1621464828_223371889n);
  assert.deepEqual(result, {
    line: "AT Hill +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503",
    clientId: "kiwi.cs.ucla.edu",
    clientTime: "1621464827.959498503",
    location: "+34.068930-118.445127",
  });
});

Deno.test("recordFromIamat() keeps zeros and Unicode exactly as sent", () => {
  const command = iamat("café😀\u00A0x", "+034.50-000.10", "0001621464827.500");
  const result = recordFromIamat("Singleton", command, 1621464830n * 1_000_000_000n);
  assert.equal(result.line, "AT Singleton +2.500000000 café😀\u00A0x +034.50-000.10 0001621464827.500");
});

Deno.test("recordFromIamat() shows a negative skew for a client time in the future", () => {
  const result = recordFromIamat("Hill", iamat("kiwi", "+1+1", "1003.25"), 1000n * 1_000_000_000n);
  assert.equal(result.line, "AT Hill -3.250000000 kiwi +1+1 1003.25");
});

// parseRecordFields

Deno.test("parseRecordFields() parses a six-field AT line", () => {
  const fields = splitFields("AT Hill +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503");
  assert.deepEqual(parseRecordFields(fields), {
    line: "AT Hill +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503",
    clientId: "kiwi.cs.ucla.edu",
    clientTime: "1621464827.959498503",
    location: "+34.068930-118.445127",
  });
});

Deno.test("parseRecordFields() round-trips a record made by recordFromIamat()", () => {
  const made = recordFromIamat("Hill", iamat("🥝", "-33.8688+151.2093", "1003.25"), 1000n * 1_000_000_000n);
  assert.deepEqual(parseRecordFields(splitFields(made.line)), made);
});

Deno.test("parseRecordFields() ignores fields after the sixth", () => {
  const fields = splitFields("AT Hill -3.250000000 kiwi +1+1 1003.25 17 500 anything");
  assert.deepEqual(parseRecordFields(fields), {
    line: "AT Hill -3.250000000 kiwi +1+1 1003.25",
    clientId: "kiwi",
    clientTime: "1003.25",
    location: "+1+1",
  });
});

Deno.test("parseRecordFields() rejects malformed records", () => {
  const lines = [
    "AT Hill +0.1 kiwi +34-118", // five fields
    "at Hill +0.1 kiwi +34-118 1", // verb case
    "IAMAT Hill +0.1 kiwi +34-118 1", // wrong verb
    "AT Hill 0.1 kiwi +34-118 1", // difference without sign
    "AT Hill +abc kiwi +34-118 1", // difference not a number
    "AT Hill +1e3 kiwi +34-118 1", // difference with exponent
    "AT Hill +0.1 kiwi 34-118 1", // location without sign
    "AT Hill +0.1 kiwi +91-118 1", // latitude out of range
    "AT Hill +0.1 kiwi +34-181 1", // longitude out of range
    "AT Hill +0.1 kiwi +34-118 -1", // client time with sign
    "AT Hill +0.1 kiwi +34-118 1.", // client time without fraction digits
  ];
  for (const line of lines) assert.equal(parseRecordFields(splitFields(line)), null, line);
  assert.equal(parseRecordFields([]), null);
});

// compareRecords

Deno.test("compareRecords() orders by client time as an exact decimal", () => {
  const later = record("AT Hill +0.1 kiwi +1+1 10");
  const earlier = record("AT Hill +0.1 kiwi +1+1 9.999999999999");
  assert.ok(compareRecords(later, earlier) > 0);
  assert.ok(compareRecords(earlier, later) < 0);
});

Deno.test("compareRecords() orders by time before the AT line", () => {
  // "AT Zed" sorts after "AT Hill" but its time is earlier.
  const a = record("AT Zed +0.1 kiwi +1+1 1621464827.959498503");
  const b = record("AT Hill +0.1 kiwi +1+1 1621464827.959498504");
  assert.ok(compareRecords(a, b) < 0);
  assert.ok(compareRecords(b, a) > 0);
});

Deno.test("compareRecords() treats times differing only in zeros as equal and breaks the tie on the line", () => {
  const a = record("AT Hill +0.1 kiwi +1+1 10");
  const b = record("AT Hill +0.1 kiwi +1+1 10.000");
  // "10" < "10.000" as bytes: the shorter line is a prefix.
  assert.ok(compareRecords(a, b) < 0);
  assert.ok(compareRecords(b, a) > 0);
});

Deno.test("compareRecords() breaks a time tie with the AT line as bytes", () => {
  const hill = record("AT Hill +0.5 kiwi +1+1 100");
  const jaquez = record("AT Jaquez +0.2 kiwi +1+1 100");
  assert.ok(compareRecords(hill, jaquez) < 0);
  assert.ok(compareRecords(jaquez, hill) > 0);
  const plus = record("AT Hill +0.5 kiwi +1+1 100");
  const minus = record("AT Hill -0.5 kiwi +1+1 100");
  // "+" is 0x2B, "-" is 0x2D.
  assert.ok(compareRecords(plus, minus) < 0);
});

Deno.test("compareRecords() returns 0 for the same record", () => {
  const a = record("AT Hill +0.5 kiwi +1+1 100");
  const b = record("AT Hill +0.5 kiwi +1+1 100");
  assert.equal(compareRecords(a, b), 0);
  assert.equal(compareRecords(a, a), 0);
});

Deno.test("compareRecords() compares lines as UTF-8 bytes, not UTF-16 code units", () => {
  // U+FF61 is EF BD A1 in UTF-8; U+1F600 is F0 9F 98 80. In UTF-16 the
  // astral character starts with the surrogate D83D, which is below FF61.
  const halfwidth = record("AT S\uFF61 +0.5 kiwi +1+1 100");
  const astral = record("AT S\u{1F600} +0.5 kiwi +1+1 100");
  assert.ok(halfwidth.line > astral.line, "UTF-16 order is the other way round");
  assert.ok(compareRecords(halfwidth, astral) < 0);
  assert.ok(compareRecords(astral, halfwidth) > 0);
});

Deno.test("compareRecords() compares client IDs as UTF-8 bytes too", () => {
  const halfwidth = record("AT Hill +0.5 a\uFF61 +1+1 100");
  const astral = record("AT Hill +0.5 a\u{1F600} +1+1 100");
  assert.ok(compareRecords(halfwidth, astral) < 0);
  assert.ok(compareRecords(astral, halfwidth) > 0);
});

Deno.test("compareRecords() is a total order that sorts the same whatever the input order", () => {
  const lines = [
    "AT Hill +0.5 kiwi +1+1 100",
    "AT Hill -0.5 kiwi +1+1 100",
    "AT Jaquez +0.5 kiwi +1+1 100",
    "AT S\uFF61 +0.5 kiwi +1+1 100",
    "AT S\u{1F600} +0.5 kiwi +1+1 100",
    "AT Hill +0.5 kiwi +1+1 99.9999999999",
    "AT Hill +0.5 kiwi +1+1 100.0000000001",
    "AT Hill +0.5 kiwi +2+2 100",
  ];
  const records = lines.map(record);
  const sorted = [...records].sort(compareRecords).map((r) => r.line);
  const reversed = [...records].reverse().sort(compareRecords).map((r) => r.line);
  assert.deepEqual(reversed, sorted);
  assert.equal(sorted[0], "AT Hill +0.5 kiwi +1+1 99.9999999999");
  assert.equal(sorted.at(-1), "AT Hill +0.5 kiwi +1+1 100.0000000001");
  assert.ok(sorted.indexOf("AT S\uFF61 +0.5 kiwi +1+1 100") < sorted.indexOf("AT S\u{1F600} +0.5 kiwi +1+1 100"));
});

Deno.test("splitSpacedFields() gives the fields splitFields() gives, for any line", () => {
  // Mostly fields and single spaces, sometimes every other kind of ASCII whitespace, runs of it, and at either end.
  const piece = fc.oneof(
    { arbitrary: fc.constantFrom("AT", "Hill", "+0.1", "kiwi", "🥝", "a\u00A0b"), weight: 6 },
    { arbitrary: fc.constant(" "), weight: 6 },
    fc.constantFrom("  ", "\t", "\n", "\v", "\f", "\r", ""),
    fc.string({ maxLength: 4 }),
  );
  let spaced = 0;
  fc.assert(
    fc.property(fc.array(piece, { maxLength: 16 }).map((pieces) => pieces.join("")), (line) => {
      if (!/[\t-\r]|^ | $| {2}/.test(line)) spaced++;
      assert.deepEqual(splitSpacedFields(line), splitFields(line), JSON.stringify(line));
    }),
    { numRuns: 5000 },
  );
  assert.ok(spaced > 500, `only ${spaced} lines of single spaces: the property checked too little`);
});
