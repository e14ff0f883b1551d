/**
 * Property-based fuzzing of the client protocol with fast-check, against
 * an oracle written from PROTOCOL.md (not from lib/): every line gets
 * exactly one reply, a well-formed AT or WHATSAT answer or `? ` and the
 * exact line; a blank line gets none; nothing throws. Once in process
 * against the pure router, once over TCP against a real server.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import type { PlacesAnswer, PlacesQuery } from "../lib/places/provider.ts";
import { PlacesResult, type PlacesService } from "../lib/places/cache.ts";
import type { LocationRecord } from "../lib/protocol.ts";
import { route, type RouterContext } from "../lib/client/router.ts";
import { isParts } from "../lib/client/reply_queue.ts";
import { encodeParts } from "../lib/net/write.ts";
import { LocationStore } from "../lib/store/store.ts";
import { exchangeBytes, HERD_TEST_PERMISSIONS, TestHerd } from "./testing/herd.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const strictDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

// ---------------------------------------------------------------------------
// The oracle: what PROTOCOL.md says a line is.
// ---------------------------------------------------------------------------

/** ASCII field separators; every other character, U+00A0 and U+2028 included, is ordinary. */
const SEPARATORS = new Set([" ", "\t", "\n", "\v", "\f", "\r"]);
const STRICT_DECIMAL = /^[0-9]+(?:\.[0-9]+)?$/;
/** `5.` and `.5`: PROTOCOL.md neither allows nor forbids them, so a server may go either way. */
const LOOSE_DECIMAL = /^(?:[0-9]+\.[0-9]*|\.[0-9]+)$/;
const AT_DIFFERENCE = /^[+-][0-9]+\.[0-9]{9}$/;

/** Whether a field is valid: `maybe` where the protocol leaves the choice to the server. */
type Judgement = "yes" | "maybe" | "no";

function worst(...judgements: Judgement[]): Judgement {
  if (judgements.includes("no")) return "no";
  return judgements.includes("maybe") ? "maybe" : "yes";
}

function splitFields(line: string): string[] {
  const fields: string[] = [];
  let field = "";
  for (const char of line) {
    if (SEPARATORS.has(char)) {
      if (field !== "") fields.push(field);
      field = "";
    } else {
      field += char;
    }
  }
  if (field !== "") fields.push(field);
  return fields;
}

/** An unsigned decimal (strict or loose) as `digits / 10^scale`. */
function rational(text: string): { digits: bigint; scale: number } {
  const [whole, fraction = ""] = text.split(".");
  return { digits: BigInt((whole || "0") + fraction), scale: fraction.length };
}

/** Compares an unsigned decimal with an integer, exactly. */
function compareWith(text: string, limit: number): number {
  const { digits, scale } = rational(text);
  const scaledLimit = BigInt(limit) * 10n ** BigInt(scale);
  return digits < scaledLimit ? -1 : digits > scaledLimit ? 1 : 0;
}

function judgeDegrees(text: string, limit: number): Judgement {
  if (STRICT_DECIMAL.test(text)) return compareWith(text, limit) <= 0 ? "yes" : "no";
  if (LOOSE_DECIMAL.test(text)) return compareWith(text, limit) <= 0 ? "maybe" : "no";
  return "no";
}

/** ISO 6709: a signed latitude in [-90, 90] immediately followed by a signed longitude in [-180, 180]. */
function judgeLocation(text: string): Judgement {
  const match = /^[+-]([0-9.]+)[+-]([0-9.]+)$/.exec(text);
  if (match === null) return "no";
  return worst(judgeDegrees(match[1], 90), judgeDegrees(match[2], 180));
}

/** POSIX seconds: digits with an optional fraction, no sign, no exponent. */
function judgeTime(text: string): Judgement {
  if (STRICT_DECIMAL.test(text)) return "yes";
  return LOOSE_DECIMAL.test(text) ? "maybe" : "no";
}

/** A decimal radius in km, 0 < r ≤ 50. */
function judgeRadius(text: string): Judgement {
  const signed = text.startsWith("+");
  const unsigned = signed ? text.slice(1) : text;
  const strict = STRICT_DECIMAL.test(unsigned);
  if (!strict && !LOOSE_DECIMAL.test(unsigned)) return "no";
  if (compareWith(unsigned, 0) <= 0 || compareWith(unsigned, 50) > 0) return "no";
  return strict && !signed ? "yes" : "maybe";
}

/** An integer bound, 0 ≤ n ≤ 20 (`05` and `+5` are the server's choice). */
function judgeBound(text: string): Judgement {
  const signed = text.startsWith("+");
  const unsigned = signed ? text.slice(1) : text;
  if (!/^[0-9]+$/.test(unsigned) || BigInt(unsigned) > 20n) return "no";
  return signed || (unsigned.length > 1 && unsigned.startsWith("0")) ? "maybe" : "yes";
}

/** What the protocol makes of one line, before looking at which clients are known. */
type Expectation =
  | { kind: "none" }
  | { kind: "echo" }
  | { kind: "IAMAT"; maybe: boolean; clientId: string; location: string; time: string }
  | { kind: "WHATSAT"; maybe: boolean; clientId: string; radius: string; bound: number };

/** The server's default clock skew allowance (`limits.maxClockSkewS`), in nanoseconds. */
const SKEW_NS = 3600n * 1_000_000_000n;
/** The server's default longest client ID (`limits.maxClientIdBytes`), in UTF-8 bytes. */
const MAX_ID_BYTES = 256;

/**
 * Whether an IAMAT time is from the far future for a server whose clock
 * read between `serverNs.earliest` and `serverNs.latest` when the line
 * arrived: "yes" past both, "maybe" past one only, "no" otherwise.
 */
function judgeFuture(time: string, serverNs: { earliest: bigint; latest: bigint }): Judgement {
  const { digits, scale } = rational(time);
  const past = (ns: bigint) => digits * 1_000_000_000n > (ns + SKEW_NS) * 10n ** BigInt(scale);
  if (past(serverNs.latest) && past(serverNs.earliest)) return "yes";
  return past(serverNs.earliest) ? "maybe" : "no";
}

function expectationOf(bytes: Uint8Array, serverNs: { earliest: bigint; latest: bigint }): Expectation {
  let line: string;
  try {
    line = strictDecoder.decode(bytes);
  } catch {
    return { kind: "echo" };
  }
  const fields = splitFields(line);
  if (fields.length === 0) return { kind: "none" };
  if (fields.length !== 4) return { kind: "echo" };
  const [verb, clientId, a, b] = fields;
  if (encoder.encode(clientId).length > MAX_ID_BYTES) return { kind: "echo" };
  if (verb === "IAMAT") {
    const judgement = worst(judgeLocation(a), judgeTime(b));
    if (judgement === "no") return { kind: "echo" };
    const future = judgement === "yes" ? judgeFuture(b, serverNs) : "no";
    if (future === "yes") return { kind: "echo" };
    return { kind: "IAMAT", maybe: judgement === "maybe" || future === "maybe", clientId, location: a, time: b };
  }
  if (verb === "WHATSAT") {
    const judgement = worst(judgeRadius(a), judgeBound(b));
    if (judgement === "no") return { kind: "echo" };
    return { kind: "WHATSAT", maybe: judgement === "maybe", clientId, radius: a, bound: Number(b) };
  }
  return { kind: "echo" };
}

/**
 * `server − client` in seconds, as the server must print it: exact, with
 * the difference rounded half away from zero to nine decimals (the rule
 * tests/decimal_test.ts pins), `+0.000000000` for zero.
 */
function expectedDifference(serverNs: bigint, time: string): string {
  const { digits, scale } = rational(time);
  const extra = scale > 9 ? 10n ** BigInt(scale - 9) : 1n;
  const client = scale > 9 ? digits : digits * 10n ** BigInt(9 - scale);
  const exact = serverNs * extra - client;
  const magnitude = exact < 0n ? -exact : exact;
  let ns = magnitude / extra;
  if (extra > 1n && (magnitude % extra) * 2n >= extra) ns += 1n;
  const sign = exact < 0n && ns !== 0n ? "-" : "+";
  return `${sign}${ns / 1_000_000_000n}.${(ns % 1_000_000_000n).toString().padStart(9, "0")}`;
}

/** `±s.nnnnnnnnn` as integer nanoseconds. */
function differenceNs(text: string): bigint {
  const magnitude = BigInt(text.slice(1).replace(".", ""));
  return text.startsWith("-") ? -magnitude : magnitude;
}

/** A client time in whole nanoseconds, rounded down: close enough to check which server time was used. */
function timeNs(time: string): bigint {
  const { digits, scale } = rational(time);
  return scale > 9 ? digits / 10n ** BigInt(scale - 9) : digits * 10n ** BigInt(9 - scale);
}

function compareBytes(a: string, b: string): number {
  const x = encoder.encode(a);
  const y = encoder.encode(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

/** The record order: client time as an exact decimal, then the AT line as bytes. */
function isGreater(candidate: { time: string; line: string }, current: { time: string; line: string }): boolean {
  const a = rational(candidate.time);
  const b = rational(current.time);
  const scale = Math.max(a.scale, b.scale);
  const x = a.digits * 10n ** BigInt(scale - a.scale);
  const y = b.digits * 10n ** BigInt(scale - b.scale);
  if (x !== y) return x > y;
  return compareBytes(candidate.line, current.line) > 0;
}

/** What the server must hold: the greatest record per client, as the AT line and its parts. */
type Model = Map<string, { line: string; time: string; location: string }>;

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

function echoOf(line: Uint8Array): Uint8Array {
  const out = new Uint8Array(line.length + 3);
  out.set([0x3f, 0x20]);
  out.set(line, 2);
  out[line.length + 2] = 10;
  return out;
}

function show(bytes: Uint8Array): string {
  return JSON.stringify(new TextDecoder().decode(bytes.subarray(0, 300)));
}

/** Checks a WHATSAT reply's shape; returns its JSON. */
function checkWhatsatShape(reply: string, storedLine: string, bound: number): Record<string, unknown> {
  assert.ok(reply.startsWith(storedLine + "\n{"), `WHATSAT must start with the stored AT line: ${reply.slice(0, 200)}`);
  assert.ok(reply.endsWith("}\n\n") && !reply.endsWith("\n\n\n"), "a WHATSAT reply ends in exactly two newlines");
  assert.ok(!reply.slice(0, -2).includes("\n\n"), "no empty line inside a WHATSAT reply");
  const json = JSON.parse(reply.slice(storedLine.length + 1));
  assert.ok(Array.isArray(json.results), "results is an array");
  assert.ok(json.results.length <= bound, `${json.results.length} results, bound ${bound}`);
  assert.equal(typeof json.status, "string");
  return json;
}

// ---------------------------------------------------------------------------
// Generators: valid commands, near-valid mutations, and anything at all.
// ---------------------------------------------------------------------------

/** Stands for a per-run prefix in client IDs, so runs against one server never share a client. */
const TAG = "\u{F0000}";

const separator = fc.array(fc.constantFrom(" ", "\t", "\r", "\v", "\f"), { minLength: 1, maxLength: 3 })
  .map((chars) => chars.join(""));
const edge = fc.oneof({ arbitrary: fc.constant(""), weight: 3 }, { arbitrary: separator, weight: 1 });
const digits = (minLength: number, maxLength: number) =>
  fc.string({ unit: fc.constantFrom(..."0123456789"), minLength, maxLength });
const unicodeSpace = fc.constantFrom("\u00a0", "\u2028", "\u2029", "\u3000", "\u0085", "\u200b", "\ufeff", "\u1680");

/** A few IDs come up often, so WHATSATs find the clients that IAMATs stored. */
const hotId = fc.constantFrom("kiwi.cs.ucla.edu", "🥝kiwi", "a\u00a0b", "line\u2028sep");

const clientId = fc.oneof(
  { weight: 8, arbitrary: hotId },
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      "José-Müller",
      "雪",
      "\u00a0",
      "\u3000",
      "x\u0085y",
      "\ufeffbom",
      "IAMAT",
      "WHATSAT",
      "AT",
      "?",
      "{}",
      "\u0000nul",
    ),
  },
  { weight: 1, arbitrary: fc.string({ unit: "grapheme", minLength: 1, maxLength: 12 }) },
  { weight: 1, arbitrary: fc.string({ unit: "binary", minLength: 1, maxLength: 12 }) },
).map((id) => TAG + id);

function degrees(limit: number): fc.Arbitrary<string> {
  return fc.oneof(
    {
      weight: 12,
      arbitrary: fc.tuple(fc.integer({ min: 0, max: limit }), fc.option(digits(1, 12), { nil: undefined }))
        .map(([whole, fraction]) => fraction === undefined ? `${whole}` : `${whole}.${fraction}`),
    },
    {
      weight: 2,
      arbitrary: fc.constantFrom(
        `${limit}`,
        `${limit}.000`,
        `${limit}.0000001`,
        `${limit + 1}`,
        `0${limit}`,
        "0",
        "00",
        "0." + "0".repeat(300) + "1",
        "9".repeat(30),
        "1" + "0".repeat(400),
        `${limit}.`,
        ".5",
        "1e1",
        "1E-5",
        "Infinity",
        "NaN",
        "0x10",
        "١٢",
        "１２",
        "",
      ),
    },
  );
}

const sign = fc.constantFrom("+", "-");
const location = fc.oneof(
  { weight: 12, arbitrary: fc.tuple(sign, degrees(90), sign, degrees(180)).map((parts) => parts.join("")) },
  {
    weight: 2,
    arbitrary: fc.tuple(
      fc.constantFrom("+", "-", "", "++", "±", "\u2212", "＋"),
      degrees(90),
      fc.constantFrom("+", "-", "", "+-", "\u2212"),
      degrees(180),
    ).map((parts) => parts.join("")),
  },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      "+34.068930-118.445127",
      "+34.068930",
      "+34.068930-118.445127+1",
      "34.068930-118.445127",
      "+34,5-118",
      "+34.068930\u00a0-118.445127",
      "+1.2.3-4",
      "-90-180",
      "+90+180",
      "-90.0000000001+0",
    ),
  },
);

const time = fc.oneof(
  {
    weight: 12,
    arbitrary: fc.tuple(fc.integer({ min: 0, max: 2_000_000_000 }), fc.option(digits(1, 20), { nil: undefined }))
      .map(([whole, fraction]) => fraction === undefined ? `${whole}` : `${whole}.${fraction}`),
  },
  { weight: 1, arbitrary: digits(1, 60) },
  {
    weight: 2,
    arbitrary: fc.constantFrom(
      "-1",
      "+1",
      "1e9",
      "1.5e3",
      "1.",
      ".5",
      "0x1F",
      "1_000",
      "Infinity",
      "NaN",
      "１２３",
      "1,5",
      "1.2.3",
      "",
      "1621464827.959498503",
      "0",
      "0.0000000005",
      "1700000000.9999999995",
    ),
  },
);

const radius = fc.oneof(
  {
    weight: 12,
    arbitrary: fc.integer({ min: 1, max: 50_000 }).map((metres) =>
      `${Math.floor(metres / 1000)}.${String(metres % 1000).padStart(3, "0")}`.replace(/\.?0+$/, "")
    ),
  },
  { weight: 1, arbitrary: fc.tuple(digits(1, 3), digits(0, 12)).map(([w, f]) => f === "" ? w : `${w}.${f}`) },
  {
    weight: 2,
    arbitrary: fc.constantFrom(
      "0",
      "0.0",
      "00",
      "50",
      "50.000",
      "50.0000001",
      "51",
      "-1",
      "+5",
      "1e1",
      "5.",
      ".5",
      "Infinity",
      "NaN",
      "0.0000000001",
      "9".repeat(40),
      "050",
      "0050.0",
    ),
  },
);

const bound = fc.oneof(
  { weight: 10, arbitrary: fc.integer({ min: 0, max: 20 }).map(String) },
  {
    weight: 1,
    arbitrary: fc.constantFrom("21", "-1", "+3", "05", "00", "1.0", "1e1", "999999999999999999999", "２", ""),
  },
);

const iamatVerb = fc.oneof(
  { weight: 20, arbitrary: fc.constant("IAMAT") },
  { weight: 1, arbitrary: fc.constantFrom("iamat", "IAMAT\u00a0", "IAMATx", "AT", "\ufeffIAMAT", "ＩＡＭＡＴ") },
);
const whatsatVerb = fc.oneof(
  { weight: 20, arbitrary: fc.constant("WHATSAT") },
  { weight: 1, arbitrary: fc.constantFrom("whatsat", "WHATSAT\u2028", "WHATSATx", "\ufeffWHATSAT") },
);

const iamatFields = fc.tuple(iamatVerb, clientId, location, time);
const whatsatFields = fc.tuple(whatsatVerb, clientId, radius, bound);
const commandFields = fc.oneof({ weight: 1, arbitrary: iamatFields }, { weight: 1, arbitrary: whatsatFields });

/** Fields joined by runs of ASCII whitespace, with optional whitespace at both ends. */
const command = fc.tuple(commandFields, fc.array(separator, { minLength: 3, maxLength: 3 }), edge, edge)
  .map(([fields, seps, start, end]) => start + fields.map((f, i) => i === 0 ? f : seps[i - 1] + f).join("") + end);

/** A command with one field too few, one too many, or a field repeated. */
const wrongFieldCount = fc.tuple(commandFields, fc.nat(), fc.constantFrom("drop", "add", "repeat"), separator)
  .map(([fields, at, how, sep]) => {
    const list: string[] = [...fields];
    const i = at % list.length;
    if (how === "drop") list.splice(i, 1);
    else if (how === "add") list.splice(i, 0, "extra");
    else list.splice(i, 0, list[i]);
    return list.join(sep);
  });

/** A command with a Unicode space inserted somewhere, or standing in for its separators. */
const unicodeSpaced = fc.tuple(command, fc.nat(), unicodeSpace, fc.boolean()).map(([line, at, space, replace]) => {
  if (replace) return line.replace(/[ \t\r\v\f]+/g, space);
  const i = at % (line.length + 1);
  return line.slice(0, i) + space + line.slice(i);
});

/** A command with one byte changed (once its client IDs are filled in): often no longer UTF-8. */
interface Flipped {
  text: string;
  at: number;
  byte: number;
}

const byteFlipped = fc.record({ text: command, at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) });

const blank = fc.array(fc.constantFrom(" ", "\t", "\r", "\v", "\f"), { maxLength: 6 }).map((chars) => chars.join(""));

/** One client line: text (with {@linkcode TAG} to fill in), text with a byte flipped, or raw bytes. */
const anyLine: fc.Arbitrary<string | Flipped | Uint8Array> = fc.oneof(
  { weight: 12, arbitrary: command },
  { weight: 2, arbitrary: wrongFieldCount },
  { weight: 2, arbitrary: unicodeSpaced },
  { weight: 1, arbitrary: byteFlipped },
  { weight: 1, arbitrary: blank },
  { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 80 }) },
  { weight: 1, arbitrary: fc.string({ unit: "grapheme", maxLength: 40 }) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 80 }) },
);

function render(value: string | Flipped | Uint8Array, tag: string): Uint8Array {
  if (value instanceof Uint8Array) return value;
  if (typeof value === "string") return encoder.encode(value.replaceAll(TAG, tag));
  const bytes = encoder.encode(value.text.replaceAll(TAG, tag));
  bytes[value.at % bytes.length] = value.byte;
  return bytes;
}

// ---------------------------------------------------------------------------
// (a) In process, against the pure router.
// ---------------------------------------------------------------------------

/** Results the fake Places returns: some searches find 25 places, others none. */
function fakeAnswer(query: PlacesQuery): PlacesAnswer {
  if (query.radiusMetres.length % 3 === 0) return { html_attributions: [], results: [], status: "ZERO_RESULTS" };
  const results = Array.from({ length: 25 }, (_, i) => ({
    name: `Place ${i}\n\n"quoted" \u2028 🥝`,
    place_id: `p${i}`,
    geometry: { location: { lat: i / 7, lng: -i / 3 } },
    types: [],
  }));
  return { html_attributions: [], results, status: "OK" };
}

interface FakeServer {
  context: RouterContext;
  published: LocationRecord[];
  searches: PlacesQuery[];
}

function fakeServer(): FakeServer {
  const published: LocationRecord[] = [];
  const searches: PlacesQuery[] = [];
  const places: PlacesService = {
    name: "fake",
    result(query) {
      searches.push(query);
      return Promise.resolve(new PlacesResult(fakeAnswer(query)));
    },
  };
  const hook = (record: LocationRecord) => {
    published.push(record);
    return Promise.resolve();
  };
  const fake = {
    name: "Fuzz",
    store: new LocationStore(),
    places,
    publish: hook,
    limits: { maxClientIdBytes: MAX_ID_BYTES, maxClockSkewS: 3600, maxRecords: 10_000_000 },
    canCommit: () => true,
    heldSettled: () => undefined,
  };
  return { context: fake, published, searches };
}

/** How many lines of each kind a property met, to show the generators reach every case. */
type Tally = Record<"lines" | "blank" | "echoed" | "refusedMaybe" | "iamat" | "stored" | "whatsat", number>;

function newTally(): Tally {
  return { lines: 0, blank: 0, echoed: 0, refusedMaybe: 0, iamat: 0, stored: 0, whatsat: 0 };
}

/** Routes `lines` as one batch, the way a connection does, checking every reply against the oracle. */
async function checkRouted(lines: Uint8Array[], tally: Tally): Promise<void> {
  const { context, published, searches } = fakeServer();
  const model: Model = new Map();
  const checks: Promise<void>[] = [];
  let arrivedNs = 1_700_000_000_123_456_789n;
  for (const bytes of lines) {
    arrivedNs += 987_654_321n;
    const expected = expectationOf(bytes, { earliest: arrivedNs, latest: arrivedNs });
    const publishedBefore = published.length;
    const searchIndex = searches.length;
    const reply = route(context, bytes, arrivedNs);
    const label = `line ${show(bytes)}`;
    tally.lines++;
    const isEcho = (value: unknown) =>
      (typeof value === "string" || value instanceof Uint8Array) &&
      bytesEqual(typeof value === "string" ? encoder.encode(value) : value, echoOf(bytes));
    if (expected.kind === "none") {
      assert.equal(reply, null, `${label}: a blank line gets no reply`);
      tally.blank++;
      continue;
    }
    assert.notEqual(reply, null, `${label}: must be answered`);
    if (expected.kind === "echo" || (expected.kind === "WHATSAT" && !model.has(expected.clientId))) {
      assert.ok(isEcho(reply), `${label}: expected "? " and the line, got ${JSON.stringify(reply)}`);
      tally.echoed++;
      continue;
    }
    if (expected.maybe && isEcho(reply)) { // the protocol lets the server refuse this form
      tally.refusedMaybe++;
      continue;
    }
    if (expected.kind === "IAMAT") {
      const { clientId, location, time } = expected;
      const line = expected.maybe
        ? undefined
        : `AT Fuzz ${expectedDifference(arrivedNs, time)} ${clientId} ${location} ${time}`;
      const current = model.get(clientId);
      checks.push(
        Promise.resolve(reply!).then((value) => {
          assert.equal(typeof value, "string", label);
          const text = value as string;
          if (line !== undefined) assert.equal(text, line + "\n", label);
          const fields = text.slice(0, -1).split(" ");
          assert.equal(fields.length, 6, label);
          assert.match(fields[2], AT_DIFFERENCE, label);
          assert.deepEqual(fields.slice(3), [clientId, location, time], label);
        }),
      );
      // The store is updated as the line is routed; mirror it now, in routing order.
      const atLine = line ?? (typeof reply === "string" ? reply.slice(0, -1) : published.at(-1)?.line);
      assert.ok(atLine !== undefined, label);
      const stored = current === undefined || isGreater({ time, line: atLine }, current);
      assert.equal(published.length - publishedBefore, stored ? 1 : 0, `${label}: published iff stored`);
      tally.iamat++;
      if (stored) {
        tally.stored++;
        assert.equal(published.at(-1)!.line, atLine, label);
        model.set(clientId, { line: atLine, time, location });
      }
      continue;
    }
    const stored = model.get(expected.clientId)!;
    const { radius, bound } = expected;
    tally.whatsat++;
    assert.equal(searches.length, searchIndex + 1, `${label}: one search`);
    const query = searches[searchIndex];
    checks.push(
      Promise.resolve(reply!).then((value) => {
        // A WHATSAT's reply is its parts (the AT line, then pieces of the cached body), written one after another.
        assert.ok(isParts(value), label);
        const json = checkWhatsatShape(decoder.decode(encodeParts(value)), stored.line, bound);
        assert.equal(
          query.latitude + query.longitude,
          stored.location,
          `${label}: searched around the stored location`,
        );
        // The radius in whole metres, rounded half up, at least 1.
        const km = rational(radius.replace(/^\+/, ""));
        const scaled = km.digits * 1000n * 10n;
        const rounded = (scaled / 10n ** BigInt(km.scale) + 5n) / 10n;
        assert.equal(query.radiusMetres, String(rounded === 0n ? 1n : rounded), label);
        assert.equal((json.results as unknown[]).length, Math.min(bound, fakeAnswer(query).results.length), label);
      }),
    );
  }
  await Promise.all(checks);
}

Deno.test("route() answers every fuzzed line exactly once, as the protocol says, and never throws", async () => {
  const tally = newTally();
  await fc.assert(
    fc.asyncProperty(fc.array(anyLine, { minLength: 1, maxLength: 40, size: "medium" }), async (values) => {
      await checkRouted(values.map((value) => render(value, "")), tally);
    }),
    { numRuns: 600 },
  );
  console.log(JSON.stringify(tally));
  assert.ok(tally.stored > 100 && tally.whatsat > 100 && tally.echoed > 100 && tally.blank > 10, "every case was met");
});

Deno.test("route() echoes any bytes that are not a command, and never throws on them", async () => {
  const tally = newTally();
  const anyBytes = fc.oneof(
    fc.uint8Array({ maxLength: 200 }),
    fc.string({ unit: "binary", maxLength: 100 }).map((text) => encoder.encode(text)),
  );
  await fc.assert(
    fc.asyncProperty(fc.array(anyBytes, { minLength: 1, maxLength: 20 }), async (lines) => {
      await checkRouted(lines, tally);
    }),
    { numRuns: 300 },
  );
  console.log(JSON.stringify(tally));
  // Random bytes are echoed as a rule; a run that met hardly any such line checked nothing.
  assert.ok(tally.lines >= 300 && tally.echoed > 100, "lines that are not commands were met");
});

// ---------------------------------------------------------------------------
// (b) Over TCP, against one real server: pipelined on one connection.
// ---------------------------------------------------------------------------

/** Splits a reply stream: `? ` lines, AT lines, and WHATSAT replies (an AT line, then JSON up to `\n\n`). */
function splitReplies(bytes: Uint8Array): Uint8Array[] {
  const replies: Uint8Array[] = [];
  let start = 0;
  while (start < bytes.length) {
    const newline = bytes.indexOf(10, start);
    assert.ok(newline >= 0, `a reply without its newline: ${show(bytes.subarray(start))}`);
    let end = newline + 1;
    if (bytes[start] === 0x41 && bytes[end] === 0x7b) { // "AT ...\n{": a WHATSAT reply
      while (end < bytes.length && !(bytes[end] === 10 && bytes[end + 1] === 10)) end++;
      assert.ok(end < bytes.length, "a WHATSAT reply without its end");
      end += 2;
    }
    replies.push(bytes.subarray(start, end));
    start = end;
  }
  return replies;
}

Deno.test({
  name: "a real server answers a fuzzed pipeline with one reply per non-blank line, in order",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  // No key: WHATSAT answers from offline GeoNames data, and this URL is never called.
  await using herd = await TestHerd.create({ placesUrl: "http://127.0.0.1:9/", names: ["Solo"], links: [] });
  await herd.start("Solo");
  const port = herd.port("Solo");
  const decoder = new TextDecoder();
  // One model for the server's whole life: a client ID may come up again in a later run.
  const model: Model = new Map();
  const tally = newTally();
  let run = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(anyLine, { minLength: 100, maxLength: 300 }), async (values) => {
      const tag = `run${++run}-`;
      const request = new Uint8Array(values.flatMap((value) => [...render(value, tag), 10]));
      // A generated line may hold "\n": the server sees the lines the bytes make.
      const lines: Uint8Array[] = [];
      for (let start = 0; start < request.length;) {
        const end = request.indexOf(10, start);
        lines.push(request.subarray(start, end));
        start = end + 1;
      }
      const sentNs = BigInt(Date.now()) * 1_000_000n;
      const replies = splitReplies(await exchangeBytes(port, request));
      const receivedNs = BigInt(Date.now()) * 1_000_000n;
      let next = 0;
      for (const bytes of lines) {
        const expected = expectationOf(bytes, {
          earliest: sentNs - 1_000_000_000n,
          latest: receivedNs + 1_000_000_000n,
        });
        tally.lines++;
        if (expected.kind === "none") {
          tally.blank++;
          continue;
        }
        const label = `line ${show(bytes)}`;
        assert.ok(next < replies.length, `${label}: no reply (${replies.length} replies in all)`);
        const reply = replies[next++];
        const isEcho = bytesEqual(reply, echoOf(bytes));
        if (expected.kind === "echo" || (expected.kind === "WHATSAT" && !model.has(expected.clientId))) {
          assert.ok(isEcho, `${label}: expected "? " and the line, got ${show(reply)}`);
          tally.echoed++;
          continue;
        }
        if (expected.maybe && isEcho) {
          tally.refusedMaybe++;
          continue;
        }
        const text = decoder.decode(reply);
        if (expected.kind === "IAMAT") {
          const { clientId, location, time } = expected;
          const fields = text.slice(0, -1).split(" ");
          assert.ok(text.endsWith("\n") && fields.length === 6 && fields[0] === "AT" && fields[1] === "Solo", label);
          assert.match(fields[2], AT_DIFFERENCE, label);
          assert.deepEqual(fields.slice(3), [clientId, location, time], label);
          const serverNs = differenceNs(fields[2]) + timeNs(time);
          assert.ok(
            serverNs >= sentNs - 1_000_000_000n && serverNs <= receivedNs + 1_000_000_000n,
            `${label}: the difference ${fields[2]} is not from the time the line arrived`,
          );
          const atLine = text.slice(0, -1);
          const current = model.get(clientId);
          tally.iamat++;
          if (current === undefined || isGreater({ time, line: atLine }, current)) {
            tally.stored++;
            model.set(clientId, { line: atLine, time, location });
          }
          continue;
        }
        tally.whatsat++;
        const json = checkWhatsatShape(text, model.get(expected.clientId)!.line, expected.bound);
        assert.ok(["OK", "ZERO_RESULTS"].includes(json.status as string), `${label}: ${json.status}`);
      }
      assert.equal(next, replies.length, `${replies.length - next} replies more than non-blank lines`);
    }),
    // No shrinking: the server keeps what a failed run stored, so a shrunk run would not be independent.
    { numRuns: 6, endOnFailure: true },
  );
  console.log(JSON.stringify(tally));
  assert.ok(tally.lines >= 400 && tally.stored > 20 && tally.whatsat > 5, "every case was met");
  const { code, stderr } = await herd.stop("Solo", "SIGTERM");
  assert.equal(code, 0, stderr);
  assert.doesNotMatch(stderr, /uncaught|panic/i, "the server never threw");
});
