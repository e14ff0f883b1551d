/**
 * Exact decimal arithmetic on the number forms the protocol uses: client
 * times (`1621464827.959498503`), radii in km and ISO 6709 degrees. Floats
 * would round; these work on the digits.
 */

/** Unsigned decimal: digits, optionally a point and more digits. */
export const UNSIGNED_DECIMAL = /^[0-9]+(?:\.[0-9]+)?$/;

/** Splits an unsigned decimal into its integer digits (no leading zeros) and fraction digits (no trailing zeros). */
function _canonical(text: string): [string, string] {
  const point = text.indexOf(".");
  let whole = point < 0 ? text : text.slice(0, point);
  let fraction = point < 0 ? "" : text.slice(point + 1);
  let start = 0;
  while (start < whole.length - 1 && whole.charCodeAt(start) === 48) start++;
  whole = whole.slice(start);
  let end = fraction.length;
  while (end > 0 && fraction.charCodeAt(end - 1) === 48) end--;
  fraction = fraction.slice(0, end);
  return [whole, fraction];
}

/** Compares two unsigned decimals exactly: negative, zero or positive. */
export function compareDecimal(a: string, b: string): number {
  // Fast path, the usual case of two client times written alike: the same length with the point (or none) at the
  // same place. Then both have as many whole and fraction digits, and the strings compare as the numbers do.
  if (a.length === b.length && a.indexOf(".") === b.indexOf(".")) return a === b ? 0 : a < b ? -1 : 1;
  const [aw, af] = _canonical(a);
  const [bw, bf] = _canonical(b);
  if (aw.length !== bw.length) return aw.length - bw.length;
  if (aw !== bw) return aw < bw ? -1 : 1;
  if (af === bf) return 0;
  return af < bf ? -1 : 1; // digit strings without trailing zeros compare as fractions
}

/**
 * Compares an unsigned decimal number of seconds with `ns` nanoseconds,
 * exactly: negative, zero or positive. `nsText` is `ns` already in the
 * form {@linkcode nanosecondsText} gives (callers comparing many times with
 * one instant make it once).
 */
export function compareToNanoseconds(text: string, nsText: { whole: string; nanos: string }): number {
  const [whole, fraction] = _canonical(text);
  if (whole.length !== nsText.whole.length) return whole.length < nsText.whole.length ? -1 : 1;
  if (whole !== nsText.whole) return whole < nsText.whole ? -1 : 1;
  const first = fraction.slice(0, 9).padEnd(9, "0");
  if (first !== nsText.nanos) return first < nsText.nanos ? -1 : 1;
  return fraction.length > 9 ? 1 : 0; // canonical: any digit past the ninth is not zero
}

/** `ns` nanoseconds as whole seconds (no leading zeros) and nine digits of nanoseconds, for {@linkcode compareToNanoseconds}. */
export function nanosecondsText(ns: bigint): { whole: string; nanos: string } {
  const clamped = ns < 0n ? 0n : ns;
  return {
    whole: (clamped / 1_000_000_000n).toString(),
    nanos: (clamped % 1_000_000_000n).toString().padStart(9, "0"),
  };
}

/** Whether an unsigned decimal is zero. */
export function isZeroDecimal(text: string): boolean {
  const [whole, fraction] = _canonical(text);
  return whole === "0" && fraction === "";
}

/**
 * Formats `serverNs − clientTime` in seconds: a sign, the whole seconds,
 * a point and exactly nine decimals, rounded half away from zero when the
 * client time has more than nine decimals. Zero is `+0.000000000`.
 */
export function formatTimeDifference(serverNs: bigint, clientTime: string): string {
  const point = clientTime.indexOf(".");
  const whole = point < 0 ? clientTime : clientTime.slice(0, point);
  const fraction = point < 0 ? "" : clientTime.slice(point + 1);
  const scale = Math.max(9, fraction.length);
  const client = BigInt(whole + fraction.padEnd(scale, "0"));
  const extra = 10n ** BigInt(scale - 9);
  const exact = serverNs * extra - client;
  const negative = exact < 0n;
  const magnitude = negative ? -exact : exact;
  let ns = magnitude / extra;
  if ((magnitude % extra) * 2n >= extra && extra > 1n) ns += 1n;
  const sign = negative && ns !== 0n ? "-" : "+";
  const seconds = ns / 1_000_000_000n;
  const nanos = (ns % 1_000_000_000n).toString().padStart(9, "0");
  return `${sign}${seconds}.${nanos}`;
}

/** A radius in km (an unsigned decimal) in whole metres, rounded half up, at least 1: `10.0004` → `10000`, `0.0002` → `1`. */
export function wholeMetres(km: string): string {
  const metres = timesThousand(km);
  const point = metres.indexOf(".");
  if (point < 0) return metres === "0" ? "1" : metres;
  let whole = BigInt(metres.slice(0, point));
  if (metres.charCodeAt(point + 1) >= 53) whole += 1n; // the first decimal is 5 or more
  return whole === 0n ? "1" : whole.toString();
}

/** Multiplies an unsigned decimal by 1000 exactly, as a decimal string: `1.5` → `1500`, `0.0001` → `0.1`. */
export function timesThousand(text: string): string {
  const [whole, fraction] = _canonical(text);
  const moved = fraction.padEnd(3, "0");
  const newWhole = (whole + moved.slice(0, 3)).replace(/^0+(?=[0-9])/, "");
  const rest = moved.slice(3);
  return rest === "" ? newWhole : `${newWhole}.${rest}`;
}
