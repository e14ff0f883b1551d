import assert from "node:assert/strict";
import fc from "fast-check";
import {
  compareDecimal,
  compareToNanoseconds,
  formatTimeDifference,
  nanosecondsText,
  timesThousand,
  wholeMetres,
} from "../lib/decimal.ts";

const SECOND = 1_000_000_000n;

function sign(n: number): number {
  return Math.sign(n);
}

Deno.test("compareDecimal() orders by value, not by text", () => {
  assert.equal(sign(compareDecimal("9", "10")), -1);
  assert.equal(sign(compareDecimal("10", "9")), 1);
  assert.equal(sign(compareDecimal("10", "9.999999999999")), 1);
  assert.equal(sign(compareDecimal("0.5", "0.45")), 1);
  assert.equal(sign(compareDecimal("0.05", "0.5")), -1);
  assert.equal(sign(compareDecimal("0.12", "0.1")), 1);
  assert.equal(sign(compareDecimal("123.4", "45.67")), 1);
});

Deno.test("compareDecimal() treats leading and trailing zeros as equal", () => {
  assert.equal(compareDecimal("007", "7"), 0);
  assert.equal(compareDecimal("7.500", "7.5"), 0);
  assert.equal(compareDecimal("0007.5000", "7.5"), 0);
  assert.equal(compareDecimal("1.0", "1"), 0);
  assert.equal(compareDecimal("0", "0.000"), 0);
  assert.equal(compareDecimal("000", "0"), 0);
});

Deno.test("compareDecimal() compares numbers of different lengths", () => {
  assert.equal(sign(compareDecimal("1621464827.959498503", "1621464827.9594985031")), -1);
  assert.equal(sign(compareDecimal("1621464827.96", "1621464827.959498503")), 1);
  assert.equal(sign(compareDecimal("100000000000000000000000", "99999999999999999999999.9")), 1);
  assert.equal(sign(compareDecimal("0.0000000001", "0")), 1);
});

Deno.test("compareDecimal() is exact where floats are not", () => {
  // Both are the same double.
  assert.equal(Number("9007199254740993"), Number("9007199254740992"));
  assert.equal(sign(compareDecimal("9007199254740993", "9007199254740992")), 1);
  assert.equal(sign(compareDecimal("1621464827.959498503", "1621464827.959498504")), -1);
});

Deno.test("formatTimeDifference() prints a sign and exactly nine decimals", () => {
  assert.equal(formatTimeDifference(1621464828_223371889n, "1621464827.959498503"), "+0.263873386");
  assert.equal(formatTimeDifference(1000n * SECOND + 1n, "0"), "+1000.000000001");
});

Deno.test("formatTimeDifference() prints zero as +0.000000000", () => {
  assert.equal(formatTimeDifference(1621464827_959498503n, "1621464827.959498503"), "+0.000000000");
  assert.equal(formatTimeDifference(0n, "0"), "+0.000000000");
});

Deno.test("formatTimeDifference() is negative when the client time is in the future", () => {
  assert.equal(formatTimeDifference(1000n * SECOND, "1003.25"), "-3.250000000");
  assert.equal(formatTimeDifference(1000n * SECOND, "1000.000000001"), "-0.000000001");
});

Deno.test("formatTimeDifference() accepts client times with fewer than nine decimals", () => {
  assert.equal(formatTimeDifference(1621464828n * SECOND, "1621464827.5"), "+0.500000000");
  assert.equal(formatTimeDifference(1621464828n * SECOND, "1621464827"), "+1.000000000");
  assert.equal(formatTimeDifference(1621464828n * SECOND, "1621464827.12"), "+0.880000000");
});

Deno.test("formatTimeDifference() rounds extra decimals half away from zero", () => {
  // 1 − 0.0000000005 = 0.9999999995 → 1.000000000
  assert.equal(formatTimeDifference(SECOND, "0.0000000005"), "+1.000000000");
  // 1 − 0.0000000004 = 0.9999999996 → 1.000000000
  assert.equal(formatTimeDifference(SECOND, "0.0000000004"), "+1.000000000");
  // 1 − 0.0000000006 = 0.9999999994 → 0.999999999
  assert.equal(formatTimeDifference(SECOND, "0.0000000006"), "+0.999999999");
  // 0 − 0.0000000015 = −0.0000000015 → −0.000000002 (away from zero)
  assert.equal(formatTimeDifference(0n, "0.0000000015"), "-0.000000002");
  // 0 − 0.0000000014999 → −0.000000001
  assert.equal(formatTimeDifference(0n, "0.0000000014999"), "-0.000000001");
  // 2 − 1.0000000025 = 0.9999999975 → 0.999999998
  assert.equal(formatTimeDifference(2n * SECOND, "1.0000000025"), "+0.999999998");
});

Deno.test("formatTimeDifference() prints a difference that rounds to zero as +0.000000000", () => {
  assert.equal(formatTimeDifference(0n, "0.0000000004"), "+0.000000000");
  assert.equal(formatTimeDifference(SECOND, "1.00000000049999"), "+0.000000000");
});

Deno.test("formatTimeDifference() ignores trailing zeros beyond nine decimals", () => {
  assert.equal(formatTimeDifference(2n * SECOND, "1.000000000000000"), "+1.000000000");
  assert.equal(formatTimeDifference(2n * SECOND, "1.250000000000"), "+0.750000000");
});

Deno.test("formatTimeDifference() is exact for huge values where a float would be wrong", () => {
  // 10^21 s and 10^30 + 1 ns: a double cannot tell them apart.
  const serverNs = 10n ** 30n + 1n;
  assert.equal(Number(serverNs) / 1e9 - 1e21, 0);
  assert.equal(formatTimeDifference(serverNs, "1000000000000000000000"), "+0.000000001");
  assert.equal(
    formatTimeDifference(0n, "123456789012345678901234567890.123456789"),
    "-123456789012345678901234567890.123456789",
  );
  // Float subtraction of these times is off in the last digits.
  assert.notEqual((1621464828.223371889 - 1621464827.959498503).toFixed(9), "0.263873386");
  assert.equal(formatTimeDifference(1621464828_223371889n, "1621464827.959498503"), "+0.263873386");
});

Deno.test("formatTimeDifference() never uses an exponent", () => {
  const text = formatTimeDifference(10n ** 40n, "0");
  assert.equal(text, `+${10n ** 31n}.000000000`);
  assert.ok(!/e/i.test(text));
});

Deno.test("timesThousand() multiplies whole numbers by 1000", () => {
  assert.equal(timesThousand("10"), "10000");
  assert.equal(timesThousand("50"), "50000");
  assert.equal(timesThousand("0"), "0");
});

Deno.test("timesThousand() moves the decimal point three places", () => {
  assert.equal(timesThousand("1.5"), "1500");
  assert.equal(timesThousand("0.0001"), "0.1");
  assert.equal(timesThousand("0.001"), "1");
  assert.equal(timesThousand("0.5"), "500");
  assert.equal(timesThousand("1.23456"), "1234.56");
});

Deno.test("timesThousand() drops leading and trailing zeros", () => {
  assert.equal(timesThousand("007.50"), "7500");
  assert.equal(timesThousand("0.0100"), "10");
  assert.equal(timesThousand("00.000"), "0");
});

/** The value of an unsigned decimal as a fraction over 10^12, for the reference comparison. */
function scaled(text: string): bigint {
  const [whole, fraction = ""] = text.split(".");
  return BigInt(whole + fraction.padEnd(12, "0"));
}

Deno.test("compareDecimal() agrees with exact arithmetic, alike-written pairs (its fast path) and all others", () => {
  const digits = (min: number, max: number) =>
    fc.array(fc.constantFrom(..."0123456789"), { minLength: min, maxLength: max }).map((d) => d.join(""));
  const decimal = fc.tuple(digits(1, 3), fc.option(digits(1, 4))).map(([w, f]) => f === null ? w : `${w}.${f}`);
  // Pairs written alike: the same shape, digits changed.
  const alike = decimal.chain((a) =>
    fc.array(fc.constantFrom(..."0123456789"), { minLength: a.length, maxLength: a.length }).map((d) => [
      a,
      [...a].map((c, i) => c === "." ? "." : d[i]).join(""),
    ])
  );
  let fast = 0;
  fc.assert(
    fc.property(fc.oneof(alike, fc.tuple(decimal, decimal)), ([a, b]) => {
      const expected = scaled(a) < scaled(b) ? -1 : scaled(a) > scaled(b) ? 1 : 0;
      assert.equal(sign(compareDecimal(a, b)), expected, `${a} vs ${b}`);
      if (a.length === b.length && a.indexOf(".") === b.indexOf(".")) fast++;
    }),
    { numRuns: 5000 },
  );
  assert.ok(fast > 1000, `alike pairs met: ${fast}`);
});

Deno.test("compareToNanoseconds() compares decimal seconds with nanoseconds exactly", () => {
  const at = nanosecondsText(1_700_000_000_123_456_789n);
  assert.equal(compareToNanoseconds("1700000000.123456789", at), 0);
  assert.equal(compareToNanoseconds("1700000000.1234567890000", at), 0);
  assert.equal(compareToNanoseconds("01700000000.123456789", at), 0);
  assert.equal(compareToNanoseconds("1700000000.1234567891", at), 1);
  assert.equal(compareToNanoseconds("1700000000.123456788999", at), -1);
  assert.equal(compareToNanoseconds("1700000000.2", at), 1);
  assert.equal(compareToNanoseconds("1700000000", at), -1);
  assert.equal(compareToNanoseconds("1700000001", at), 1);
  assert.equal(compareToNanoseconds("999999999", at), -1);
  assert.equal(compareToNanoseconds("99999999999999999999", at), 1);
  assert.equal(compareToNanoseconds("0", nanosecondsText(0n)), 0);
  assert.equal(compareToNanoseconds("0.000000001", nanosecondsText(0n)), 1);
});

Deno.test("compareToNanoseconds() agrees with exact arithmetic on random times", () => {
  fc.assert(
    fc.property(
      fc.bigInt({ min: 0n, max: 10n ** 20n }),
      fc.bigInt({ min: 0n, max: 10n ** 20n }),
      fc.nat(12),
      (a, b, extra) => {
        // `a` as a decimal of seconds with `9 + extra` fraction digits (extra digits zero), against `b` nanoseconds.
        const text = `${a / SECOND}.${(a % SECOND).toString().padStart(9, "0")}${"0".repeat(extra)}`;
        const expected = a === b ? 0 : a < b ? -1 : 1;
        assert.equal(Math.sign(compareToNanoseconds(text, nanosecondsText(b))), expected, `${text} vs ${b}`);
      },
    ),
  );
});

Deno.test("wholeMetres() rounds a radius in km to whole metres, half up, at least one", () => {
  assert.equal(wholeMetres("10"), "10000");
  assert.equal(wholeMetres("10.0000001"), "10000");
  assert.equal(wholeMetres("10.0000002"), "10000");
  assert.equal(wholeMetres("10.0004999"), "10000");
  assert.equal(wholeMetres("10.0005"), "10001");
  assert.equal(wholeMetres("1.5"), "1500");
  assert.equal(wholeMetres("0.0001"), "1");
  assert.equal(wholeMetres("0.0000001"), "1");
  assert.equal(wholeMetres("0.0015"), "2");
  assert.equal(wholeMetres("50"), "50000");
  assert.equal(wholeMetres("049.9999"), "50000");
});
