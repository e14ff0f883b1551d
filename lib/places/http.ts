/**
 * One HTTP exchange with a Places service, with a timeout, and every way it
 * can fail turned into a Places-shaped error that never shows the key.
 */

import { MAX_WHATSAT_BOUND } from "../protocol.ts";
import { type PlacesAnswer, placesError } from "./provider.ts";

/** Options of the Google providers. */
export interface GooglePlacesOptions {
  /** The endpoint. */
  url: string;
  /** API key; without one (or with one that cannot be sent: {@linkcode keyProblem}) every search answers `REQUEST_DENIED`. */
  key?: string;
  /** Upstream timeout in milliseconds. */
  timeoutMs: number;
}

/**
 * Why `key` cannot be sent, or `undefined` when it can: there is none, or it
 * holds a character no HTTP request carries as written (a line break, a
 * control character, anything not ASCII). Google's keys are letters, digits,
 * `-` and `_`; such a key is not sent to be refused as unreachable.
 */
export function keyProblem(key: string | undefined): string | undefined {
  if (key === undefined || key === "") return "No Places API key: the server has no GOOGLE_PLACES_API_KEY set";
  const bad = /[^\x20-\x7e]/.exec(key);
  if (bad === null) return undefined;
  const code = bad[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0");
  return `GOOGLE_PLACES_API_KEY holds a character no request can carry (U+${code} at offset ${bad.index}): ` +
    "a Places API key is letters, digits, '-' and '_'";
}

/** The answer of a Google provider whose key cannot be sent ({@linkcode keyProblem}): it does not call out. */
export function unusableKeyAnswer(problem: string): PlacesAnswer {
  return placesError("REQUEST_DENIED", problem);
}

/** Options for {@linkcode fetchPlacesJson}. */
export interface PlacesHttpOptions {
  /** Upstream timeout in milliseconds. */
  timeoutMs: number;
  /** The API key, to scrub from anything that might echo it. */
  key: string;
  /** Aborts the call early (the caller no longer wants the answer). */
  signal?: AbortSignal;
}

/**
 * A parsed JSON answer, or the error answer that replaces it. The body of an
 * HTTP error (not 2xx) that is not JSON (an HTML page, nothing) is
 * `undefined`, so the provider still maps the HTTP status.
 */
export type PlacesHttpResult =
  | { ok: true; response: Response; body: unknown }
  | { ok: false; answer: PlacesAnswer };

/**
 * The ways the key can be written in a URL or an echo of one: plain, as
 * `encodeURIComponent` and `encodeURI` write it, as `URLSearchParams` writes
 * it (`+` for a space), as the URL parser writes it in a query, each
 * percent-encoded form with lower-case hex too; longest first.
 */
function _keyForms(key: string): string[] {
  const forms = new Set([
    key,
    encodeURIComponent(key),
    encodeURI(key),
    new URLSearchParams({ k: key }).toString().slice(2),
    new URL(`http://h/?${key}`).search.slice(1),
  ]);
  for (const form of [...forms]) forms.add(form.replace(/%[0-9A-F]{2}/g, (escape) => escape.toLowerCase()));
  forms.delete("");
  return [...forms].sort((a, b) => b.length - a.length);
}

/**
 * Keys shorter than this are scrubbed only where they stand apart (see
 * {@linkcode scrubKey}): Google's are 39 characters, and a short key of a
 * test or a local service ("test", "x") would otherwise be cut out of the
 * middle of place names and JSON field names.
 */
export const SHORT_KEY_CHARS = 16;

/** What a key's form, written with no separator, must not touch on either side to be a short key's echo. */
const _GLUED = /[A-Za-z0-9]/;

/** The forms of the key to scrub (see {@linkcode _keyForms}), and whether only where they stand apart. */
interface _KeyForms {
  forms: string[];
  apart: boolean;
}

function _scrubbing(key: string): _KeyForms {
  return { forms: _keyForms(key), apart: key.length < SHORT_KEY_CHARS };
}

/**
 * `text` with every occurrence of the key (plain or in any of its URL-encoded
 * forms) replaced by `<key>`; a key shorter than {@linkcode SHORT_KEY_CHARS}
 * only where no letter or digit touches it on either side (`key=test&`,
 * `"test"`, but not `contest`).
 */
export function scrubKey(text: string, key: string): string {
  return key === "" ? text : _scrub(text, _scrubbing(key));
}

function _scrub(text: string, { forms, apart }: _KeyForms): string {
  for (const form of forms) {
    if (!text.includes(form)) continue;
    if (!apart) {
      text = text.replaceAll(form, "<key>");
      continue;
    }
    let out = "";
    let from = 0;
    for (let at = text.indexOf(form); at >= 0; at = text.indexOf(form, at + 1)) {
      if (at < from) continue;
      const end = at + form.length;
      if (_GLUED.test(text[at - 1] ?? "") || _GLUED.test(text[end] ?? "")) continue;
      out += text.slice(from, at) + "<key>";
      from = end;
    }
    text = out + text.slice(from);
  }
  return text;
}

/** `value` (parsed JSON) with the key scrubbed from every string in it, keys of objects included. */
export function scrubKeyDeep(value: unknown, key: string): unknown {
  return key === "" ? value : _scrubDeep(value, _scrubbing(key));
}

function _scrubDeep(value: unknown, forms: _KeyForms): unknown {
  if (typeof value === "string") return _scrub(value, forms);
  if (Array.isArray(value)) return value.map((item) => _scrubDeep(item, forms));
  if (typeof value === "object" && value !== null) {
    const out: Record<string, unknown> = {};
    for (const [name, item] of Object.entries(value)) out[_scrub(name, forms)] = _scrubDeep(item, forms);
    return out;
  }
  return value;
}

/** The most characters of an upstream text (a status, a message) put in an `error_message`. */
export const MAX_ECHOED_CHARS = 300;

/** `text` cut to {@linkcode MAX_ECHOED_CHARS}, saying so when it is cut. */
export function cutEcho(text: string): string {
  if (text.length <= MAX_ECHOED_CHARS) return text;
  let end = MAX_ECHOED_CHARS;
  const last = text.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end--; // not half a surrogate pair
  return `${text.slice(0, end)}… (${text.length} characters)`;
}

/**
 * The most bytes of a Places answer read, after decompression (fetch
 * decompresses): a real answer is tens of KB, and a body past this one is
 * cancelled unread rather than held, so an endless or huge answer cannot
 * grow the server.
 */
export const MAX_PLACES_BODY_BYTES = 4 * 1024 * 1024;

/** The body as text, or undefined (the stream cancelled) once it is past `cap` bytes. */
async function _readCapped(response: Response, cap: number): Promise<string | undefined> {
  if (response.body === null) return "";
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.length;
    if (total > cap) {
      await reader.cancel().catch(() => {});
      return undefined;
    }
    chunks.push(value);
  }
  const bytes = new Uint8Array(total);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.length;
  }
  return new TextDecoder().decode(bytes);
}

/** `HTTP 403 Forbidden`: the status of `response` in words. */
export function httpStatusText(response: Response): string {
  return `HTTP ${response.status} ${response.statusText}`.trim();
}

/**
 * What a failed `fetch` met, in words: Deno's fetch rejects with just
 * `TypeError: fetch failed`, its cause saying what happened ("error sending
 * request for url (URL): client error (Connect): tcp connect error:
 * Connection refused (os error 111)"). The cause without its "error sending
 * request ... (URL): " opening, else the error itself. The caller scrubs the
 * key: a URL may still be in it.
 */
export function unreachableDetail(error: unknown): string {
  const cause = error instanceof Error ? error.cause : undefined;
  if (!(cause instanceof Error) || cause.message === "") return String(error);
  return cause.message.replace(/^error sending request\b.*?\): /s, "");
}

/** Fetches `url` and parses its JSON body, whatever the HTTP status. */
export async function fetchPlacesJson(
  url: string,
  init: RequestInit,
  options: PlacesHttpOptions,
): Promise<PlacesHttpResult> {
  const fail = (message: string): PlacesHttpResult => ({
    ok: false,
    answer: placesError("UNKNOWN_ERROR", scrubKey(message, options.key)),
  });
  const timeout = AbortSignal.timeout(options.timeoutMs);
  const signal = options.signal === undefined ? timeout : AbortSignal.any([timeout, options.signal]);
  let response: Response;
  let text: string | undefined;
  try {
    response = await fetch(url, { ...init, signal });
    text = await _readCapped(response, MAX_PLACES_BODY_BYTES);
  } catch (error) {
    if (error instanceof DOMException && error.name === "TimeoutError") {
      return fail(`The Places service did not answer within ${options.timeoutMs} ms`);
    }
    return fail(`The Places service cannot be reached: ${unreachableDetail(error)}`);
  }
  if (text === undefined) {
    return fail(`The Places service's answer was over ${MAX_PLACES_BODY_BYTES} bytes (HTTP ${response.status})`);
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    if (!response.ok) return { ok: true, response, body: undefined };
    return fail("The Places service answered with malformed JSON");
  }
  _cutLists(body);
  const problem = shapeProblem(body);
  if (problem !== undefined) return fail(`The Places service's answer ${problem} (HTTP ${response.status})`);
  // Whatever the service echoes reaches replies and logs: not the key, however it was written.
  return { ok: true, response, body: scrubKeyDeep(body, options.key) };
}

/** The deepest a Places answer may nest (Google's nest 6 deep: `results[0].geometry.viewport.northeast.lat`). */
export const MAX_PLACES_DEPTH = 16;

/** The most values (objects, arrays, strings, numbers...) a Places answer may hold, its lists cut to 20 results. */
export const MAX_PLACES_VALUES = 50_000;

/**
 * Cuts an answer's list of places (`results` in the legacy shape, `places`
 * in the new one) to the most a WHATSAT can ask for: the rest is never
 * served, and each result kept is printed, laid out and held in the cache
 * (an audit's 4 MiB answer of two million results blocked a server 3-4 s).
 */
function _cutLists(body: unknown): void {
  if (typeof body !== "object" || body === null || Array.isArray(body)) return;
  const answer = body as Record<string, unknown>;
  for (const name of ["results", "places"]) {
    const list = answer[name];
    if (Array.isArray(list) && list.length > MAX_WHATSAT_BOUND) list.length = MAX_WHATSAT_BOUND;
  }
}

/**
 * Why parsed JSON is not an answer the server will print, or undefined: it
 * nests deeper than {@linkcode MAX_PLACES_DEPTH} or holds more than
 * {@linkcode MAX_PLACES_VALUES} values. The reply prints each level three
 * spaces further in, so 4 MiB nested thousands deep printed as hundreds of
 * megabytes, or overflowed the printer's stack (an audit's). Walked with a
 * stack of its own, not by recursion.
 */
export function shapeProblem(body: unknown): string | undefined {
  if (typeof body !== "object" || body === null) return undefined;
  const pending: { value: object; depth: number }[] = [{ value: body, depth: 1 }];
  let values = 1;
  while (pending.length > 0) {
    const { value, depth } = pending.pop()!;
    if (depth > MAX_PLACES_DEPTH) return `nested over ${MAX_PLACES_DEPTH} levels deep`;
    const items: unknown[] = Array.isArray(value) ? value : Object.values(value);
    values += items.length;
    if (values > MAX_PLACES_VALUES) return `held over ${MAX_PLACES_VALUES} values`;
    for (const item of items) {
      if (typeof item === "object" && item !== null) pending.push({ value: item, depth: depth + 1 });
    }
  }
  return undefined;
}
