/**
 * A small schema for JSON settings: each field's type, range, default and
 * description in one place, from which both the checks of a config file and
 * its JSON Schema (for editors) are made. Objects are strict: a key the
 * schema does not know is an error naming the nearest known key. Pure.
 *
 * Not zod: importing zod 4 would add a sixth or more to a server's
 * start-up (docs/PERFORMANCE.md), and a config needs only these few shapes.
 */

/** A JSON Schema document or fragment. */
export type JsonSchema = { [key: string]: unknown };

/** A config value that breaks its schema; the message names where, what was expected, and the value. */
export class ConfigValueError extends Error {
  /** The error's name. */
  override name = "ConfigValueError";
}

/** Checks one JSON value and gives it its type. */
export interface Schema<T> {
  /** Checks `value` found at `path` (`places.timeoutMs`, `links[2]`); throws a {@linkcode ConfigValueError}. */
  parse(value: unknown, path: string): T;
  /** The JSON Schema of the values this accepts. */
  jsonSchema(): JsonSchema;
}

/** One field of an object: its schema, whether it may be left out, and its default. */
export interface Field<T> {
  /** The schema of the field's value. */
  schema: Schema<unknown>;
  /** What the field is for, for the JSON Schema. */
  description: string;
  /** Whether the field must be present. */
  required: boolean;
  /** Makes the value of a field that is left out, if it has one. */
  fallback?: () => T;
  /** That value as the JSON Schema shows it, when it is worth showing. */
  shownDefault?: unknown;
  /** Only for typing: the field's type once parsed. */
  readonly _type?: T;
}

/** The type a schema gives its values. */
export type Infer<S> = S extends Schema<infer T> ? T : never;

/** The type of a field once parsed. */
export type FieldType<F> = F extends Field<infer T> ? T : never;

/** The parsed type of an object with these fields. */
export type ObjectOf<F extends Record<string, Field<unknown>>> = { [K in keyof F]: FieldType<F[K]> };

function _fail(path: string, expected: string, value: unknown): never {
  throw new ConfigValueError(`${path} must be ${expected}, got ${JSON.stringify(value)}`);
}

/** The child path of `path` for `key` (`places` + `url` is `places.url`). */
export function childPath(path: string, key: string): string {
  return path === "" ? key : `${path}.${key}`;
}

/** Options of {@linkcode integer}. */
export interface IntegerOptions {
  /** Least value allowed. */
  min: number;
  /** Greatest value allowed; none when absent. */
  max?: number;
  /** What is expected, in words, when the default wording ("an integer from 1 to 10") will not do. */
  expected?: string;
}

/** An integer within bounds. */
export function integer(options: IntegerOptions): Schema<number> {
  const { min, max } = options;
  const expected = options.expected ??
    (max === undefined ? `an integer of at least ${min}` : `an integer from ${min} to ${max}`);
  return {
    parse(value, path) {
      if (!Number.isSafeInteger(value) || (value as number) < min || (max !== undefined && (value as number) > max)) {
        _fail(path, expected, value);
      }
      return value as number;
    },
    jsonSchema: () => ({ type: "integer", minimum: min, ...(max === undefined ? {} : { maximum: max }) }),
  };
}

/** An integer of at least 1. */
export function positiveInteger(): Schema<number> {
  return integer({ min: 1, expected: "a positive integer" });
}

/** The longest delay a timer takes: past it `setTimeout` fires at once. */
export const MAX_TIMER_MS = 2_147_483_647;

/**
 * A positive number of milliseconds that a timer can wait: at most
 * {@linkcode MAX_TIMER_MS} (about 24.8 days), since a longer delay would
 * make `setTimeout` fire at once.
 */
export function milliseconds(): Schema<number> {
  const positive = positiveInteger();
  return {
    parse(value, path) {
      // Too large to count exactly (1e20) is too large for a timer first: said so, not "not a positive integer".
      const ms = Number.isInteger(value) && (value as number) > MAX_TIMER_MS
        ? value as number
        : positive.parse(value, path);
      if (ms > MAX_TIMER_MS) {
        throw new ConfigValueError(
          `${path} must be at most ${MAX_TIMER_MS} milliseconds (about 24.8 days, the longest a timer waits), got ${ms}`,
        );
      }
      return ms;
    },
    jsonSchema: () => ({ ...positive.jsonSchema(), maximum: MAX_TIMER_MS }),
  };
}

/** A TCP port, 1 to 65535. */
export function port(): Schema<number> {
  return integer({ min: 1, max: 65535, expected: "an integer port from 1 to 65535" });
}

/** Options of {@linkcode string}. */
export interface StringOptions {
  /** A pattern the whole string must match. */
  pattern?: RegExp;
  /** What is expected, in words, when the pattern does not match. */
  expected?: string;
}

/** A non-empty string, optionally matching a pattern. */
export function string(options: StringOptions = {}): Schema<string> {
  return {
    parse(value, path) {
      if (typeof value !== "string" || value === "") _fail(path, "a non-empty string", value);
      if (options.pattern !== undefined && !options.pattern.test(value)) {
        _fail(path, options.expected ?? `a string matching ${options.pattern.source}`, value);
      }
      return value;
    },
    jsonSchema: () => ({
      type: "string",
      minLength: 1,
      ...(options.pattern === undefined ? {} : { pattern: options.pattern.source }),
    }),
  };
}

/** `true` or `false`. */
export function boolean(): Schema<boolean> {
  return {
    parse(value, path) {
      if (typeof value !== "boolean") _fail(path, "true or false", value);
      return value;
    },
    jsonSchema: () => ({ type: "boolean" }),
  };
}

/** One of a fixed set of strings. */
export function oneOf<const T extends string>(values: readonly T[]): Schema<T> {
  return {
    parse(value, path) {
      if (!values.includes(value as T)) _fail(path, `one of ${values.join(", ")}`, value);
      return value as T;
    },
    jsonSchema: () => ({ type: "string", enum: [...values] }),
  };
}

/** An absolute `http:` or `https:` URL. */
export function httpUrl(): Schema<string> {
  return {
    parse(value, path) {
      if (typeof value !== "string" || value === "") _fail(path, "a non-empty string", value);
      let parsed: URL;
      try {
        parsed = new URL(value);
      } catch {
        throw new ConfigValueError(`${path} is not a URL: ${JSON.stringify(value)}`);
      }
      if (parsed.protocol !== "https:" && parsed.protocol !== "http:") {
        throw new ConfigValueError(`${path} must be http or https, got ${JSON.stringify(value)}`);
      }
      return value;
    },
    jsonSchema: () => ({ type: "string", pattern: "^https?://" }),
  };
}

/** An array of values of one schema. */
export function arrayOf<T>(item: Schema<T>, expected: string): Schema<T[]> {
  return {
    parse(value, path) {
      if (!Array.isArray(value)) throw new ConfigValueError(`${path} must be ${expected}`);
      return value.map((element, index) => item.parse(element, `${path}[${index}]`));
    },
    jsonSchema: () => ({ type: "array", items: item.jsonSchema() }),
  };
}

/** A field that must be present. */
export function required<T>(schema: Schema<T>, description: string): Field<T> {
  return { schema, description, required: true };
}

/** A field that may be left out, taking `fallback` then. */
export function withDefault<T>(schema: Schema<T>, fallback: T, description: string): Field<T> {
  return { schema, description, required: false, fallback: () => fallback, shownDefault: fallback };
}

/** An object field that may be left out, every field of it taking its default then. */
export function section<T>(schema: Schema<T>, description: string): Field<T> {
  return { schema, description, required: false, fallback: () => schema.parse({}, "") };
}

/** A field that may be left out, with no value then. */
export function optional<T>(schema: Schema<T>, description: string): Field<T | undefined> {
  return { schema, description, required: false };
}

function _isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** The edit distance between two keys, for "did you mean". */
function _distance(a: string, b: string): number {
  const x = a.toLowerCase();
  const y = b.toLowerCase();
  let previous = Array.from({ length: y.length + 1 }, (_, i) => i);
  for (let i = 1; i <= x.length; i++) {
    const row = [i];
    for (let j = 1; j <= y.length; j++) {
      row[j] = Math.min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (x[i - 1] === y[j - 1] ? 0 : 1));
    }
    previous = row;
  }
  return previous[y.length];
}

/** The known key nearest to `key`, when one is near enough to be what was meant. */
export function nearestKey(key: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of known) {
    const distance = _distance(key, candidate);
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best !== undefined && bestDistance <= Math.max(2, Math.floor(key.length / 3)) ? best : undefined;
}

/** Options of {@linkcode object}. */
export interface ObjectOptions {
  /** How the object is named in a message when `path` is empty. */
  name?: string;
  /** Keys allowed beyond the fields and ignored (`$schema`). */
  ignored?: readonly string[];
}

/** A strict object: every field checked, defaults filled in, an unknown key refused. */
export function object<F extends Record<string, Field<unknown>>>(
  fields: F,
  options: ObjectOptions = {},
): Schema<ObjectOf<F>> {
  const known = Object.keys(fields);
  const ignored = options.ignored ?? [];
  return {
    parse(value, path) {
      if (!_isObject(value)) throw new ConfigValueError(`${path === "" ? options.name : path} must be an object`);
      for (const key of Object.keys(value)) {
        if (Object.hasOwn(fields, key) || ignored.includes(key)) continue;
        const near = nearestKey(key, known);
        throw new ConfigValueError(
          `Unknown key ${childPath(path, key)}` +
            (near === undefined ? `: expected one of ${known.join(", ")}` : `: did you mean ${childPath(path, near)}?`),
        );
      }
      const out: Record<string, unknown> = {};
      for (const [key, field] of Object.entries(fields)) {
        const where = childPath(path, key);
        if (value[key] === undefined) {
          if (field.required) throw new ConfigValueError(`missing field ${where}`);
          if (field.fallback !== undefined) out[key] = field.fallback();
          continue;
        }
        out[key] = field.schema.parse(value[key], where);
      }
      return out as ObjectOf<F>;
    },
    jsonSchema() {
      const properties: Record<string, JsonSchema> = {};
      for (const key of ignored) properties[key] = { type: "string" };
      for (const [key, field] of Object.entries(fields)) {
        properties[key] = {
          description: field.description,
          ...field.schema.jsonSchema(),
          ...(field.shownDefault === undefined ? {} : { default: field.shownDefault }),
        };
      }
      const requiredKeys = Object.entries(fields).filter(([, field]) => field.required).map(([key]) => key);
      return {
        type: "object",
        properties,
        ...(requiredKeys.length === 0 ? {} : { required: requiredKeys }),
        additionalProperties: false,
      };
    },
  };
}

/** Options of {@linkcode mapOf}. */
export interface MapOptions {
  /** A pattern every key must match. */
  keyPattern: RegExp;
  /** What a key is, in a message: `server name`. */
  keyName: string;
  /** What a key must be, in words. */
  keyExpected: string;
}

/** An object used as a map: keys matching a pattern, every value of one schema, in file order. */
export function mapOf<T>(value: Schema<T>, options: MapOptions): Schema<Map<string, T>> {
  const { keyPattern, keyName, keyExpected } = options;
  return {
    parse(raw, path) {
      if (!_isObject(raw)) throw new ConfigValueError(`${path} must be an object`);
      const out = new Map<string, T>();
      for (const [key, item] of Object.entries(raw)) {
        if (!keyPattern.test(key)) {
          throw new ConfigValueError(`${keyName} ${JSON.stringify(key)} must be ${keyExpected}`);
        }
        out.set(key, value.parse(item, childPath(path, key)));
      }
      return out;
    },
    jsonSchema: () => ({
      type: "object",
      propertyNames: { pattern: keyPattern.source },
      additionalProperties: value.jsonSchema(),
    }),
  };
}
