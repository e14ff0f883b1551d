import assert from "node:assert/strict";
import { formatGoogleJson, whatsatBody } from "../lib/places/google_json.ts";

/** A WHATSAT reply as the router makes it: the stored AT line, then the body. */
function formatWhatsatReply(atLine: string, json: string): string {
  return atLine + whatsatBody(json);
}

const AT_LINE = "AT Hill +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503";

Deno.test("formatGoogleJson() prints scalars as JSON", () => {
  assert.equal(formatGoogleJson(1), "1");
  assert.equal(formatGoogleJson(-2.5), "-2.5");
  assert.equal(formatGoogleJson(true), "true");
  assert.equal(formatGoogleJson(null), "null");
  assert.equal(formatGoogleJson("OK"), '"OK"');
});

Deno.test("formatGoogleJson() prints empty arrays and objects on one line", () => {
  assert.equal(formatGoogleJson([]), "[]");
  assert.equal(formatGoogleJson({}), "{}");
  assert.equal(
    formatGoogleJson({ html_attributions: [], results: [], extra: {} }),
    '{\n   "html_attributions" : [],\n   "results" : [],\n   "extra" : {}\n}',
  );
});

Deno.test('formatGoogleJson() indents by three spaces and puts " : " after keys', () => {
  assert.equal(
    formatGoogleJson({ html_attributions: [], results: [], status: "ZERO_RESULTS" }),
    [
      "{",
      '   "html_attributions" : [],',
      '   "results" : [],',
      '   "status" : "ZERO_RESULTS"',
      "}",
    ].join("\n"),
  );
});

Deno.test("formatGoogleJson() prints nested arrays and objects", () => {
  const value = {
    results: [
      {
        geometry: { location: { lat: 34.0689, lng: -118.4452 } },
        name: "UCLA",
        types: ["university", "point_of_interest"],
      },
      [1, [2, []]],
    ],
    status: "OK",
  };
  assert.equal(
    formatGoogleJson(value),
    [
      "{",
      '   "results" : [',
      "      {",
      '         "geometry" : {',
      '            "location" : {',
      '               "lat" : 34.0689,',
      '               "lng" : -118.4452',
      "            }",
      "         },",
      '         "name" : "UCLA",',
      '         "types" : [',
      '            "university",',
      '            "point_of_interest"',
      "         ]",
      "      },",
      "      [",
      "         1,",
      "         [",
      "            2,",
      "            []",
      "         ]",
      "      ]",
      "   ],",
      '   "status" : "OK"',
      "}",
    ].join("\n"),
  );
});

Deno.test("formatGoogleJson() escapes strings and keys as JSON", () => {
  assert.equal(formatGoogleJson('say "hi"\\'), '"say \\"hi\\"\\\\"');
  assert.equal(formatGoogleJson("a\nb\tc\u0001"), '"a\\nb\\tc\\u0001"');
  assert.equal(formatGoogleJson({ 'k"ey': "v" }), '{\n   "k\\"ey" : "v"\n}');
  // Non-ASCII text is printed as is, as JSON.stringify does.
  assert.equal(formatGoogleJson("Café 🥝"), '"Café 🥝"');
  // A lone surrogate cannot be UTF-8 and is escaped.
  assert.equal(formatGoogleJson("\uD83D"), '"\\ud83d"');
});

Deno.test("formatGoogleJson() output parses back to the same value", () => {
  const value = {
    html_attributions: ['<a href="x">x</a>'],
    results: [{ name: 'Ñandú "Bar"\n\n', rating: 4.5, open: false, tags: [], meta: {}, none: null }],
    status: "OK",
  };
  assert.deepEqual(JSON.parse(formatGoogleJson(value)), value);
});

Deno.test("formatGoogleJson() leaves out undefined object values and prints undefined array items as null", () => {
  assert.equal(formatGoogleJson({ a: undefined, b: 1 }), '{\n   "b" : 1\n}');
  assert.equal(formatGoogleJson([undefined]), "[\n   null\n]");
});

Deno.test("A WHATSAT reply (the AT line, then whatsatBody()) joins the AT line and JSON and ends with two newlines", () => {
  const json = formatGoogleJson({ html_attributions: [], results: [], status: "ZERO_RESULTS" });
  assert.equal(formatWhatsatReply(AT_LINE, json), `${AT_LINE}\n${json}\n\n`);
});

Deno.test("A WHATSAT reply (the AT line, then whatsatBody()) removes trailing newlines before adding exactly two", () => {
  assert.equal(formatWhatsatReply(AT_LINE, "{}\n"), `${AT_LINE}\n{}\n\n`);
  assert.equal(formatWhatsatReply(AT_LINE, "{}\n\n\n\n"), `${AT_LINE}\n{}\n\n`);
});

Deno.test("A WHATSAT reply (the AT line, then whatsatBody()) squeezes runs of newlines to one", () => {
  assert.equal(formatWhatsatReply(AT_LINE, '\n\n{\n\n\n   "a" : 1\n\n}'), `${AT_LINE}\n{\n   "a" : 1\n}\n\n`);
});

Deno.test("A WHATSAT reply (the AT line, then whatsatBody()) leaves escaped newlines inside JSON strings alone", () => {
  const json = formatGoogleJson({ name: "two\n\nlines\n" });
  assert.equal(json, '{\n   "name" : "two\\n\\nlines\\n"\n}');
  const reply = formatWhatsatReply(AT_LINE, json);
  assert.equal(reply, `${AT_LINE}\n{\n   "name" : "two\\n\\nlines\\n"\n}\n\n`);
  assert.deepEqual(JSON.parse(reply.slice(AT_LINE.length + 1)), { name: "two\n\nlines\n" });
});

Deno.test("A WHATSAT reply (the AT line, then whatsatBody()) has exactly one blank line at its end", () => {
  const reply = formatWhatsatReply(AT_LINE, formatGoogleJson({ results: [{ a: [] }], status: "OK" }));
  assert.ok(reply.endsWith("}\n\n"));
  assert.ok(!reply.endsWith("\n\n\n"));
  assert.ok(!reply.slice(0, -2).includes("\n\n"));
});

Deno.test("A WHATSAT reply (the AT line, then whatsatBody()) is the line then whatsatBody(), the same as squeezing the whole reply", () => {
  // The reply squeezed as one string, the way it was first written; the line holds no newline, so the two agree.
  const whole = (json: string) => `${AT_LINE}\n${json}`.replace(/\n{2,}/g, "\n").replace(/\n+$/, "") + "\n\n";
  for (const json of ["", "\n", "\n\n", "{}", "\n\n{}", "{}\n\n\n", '{\n\n"a" : 1\n}\n', "x\ny"]) {
    assert.equal(formatWhatsatReply(AT_LINE, json), whole(json), JSON.stringify(json));
    assert.equal(AT_LINE + whatsatBody(json), whole(json), JSON.stringify(json));
  }
  assert.equal(formatWhatsatReply(AT_LINE, ""), `${AT_LINE}\n\n`);
});
