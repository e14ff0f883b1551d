/**
 * Integration tests: real server processes, started with the permission
 * flags `deno task serve` uses, on loopback, against a fake Places server.
 */

import assert from "node:assert/strict";
import { startFakePlaces } from "./testing/fake_places.ts";
import { exchange, exchangeBytes, HERD_TEST_PERMISSIONS, suiteMode, TestHerd } from "./testing/herd.ts";
import { PeerProbe } from "./testing/peer_probe.ts";
import { checkThroughout, waitFor } from "./testing/wait.ts";

/** TLS peer links, or plain text when run from plaintext_test.ts. */
const MODE = suiteMode(import.meta.url);

const KEY = "test-key-3f9a1c";
const KIWI = "IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503";
const AT_LINE = /^AT (\S+) ([+-][0-9]+\.[0-9]{9}) (\S+) (\S+) (\S+)$/;

/** Splits a stream of replies into single replies: AT lines, `? ` lines, and WHATSAT blocks ending in an empty line. */
function splitReplies(text: string): string[] {
  const replies: string[] = [];
  let rest = text;
  while (rest.length > 0) {
    const newline = rest.indexOf("\n");
    assert.ok(newline >= 0, `reply without newline: ${JSON.stringify(rest.slice(0, 200))}`);
    if (rest[newline + 1] === "{") {
      const end = rest.indexOf("\n}\n\n", newline);
      assert.ok(end >= 0, "WHATSAT reply without its end");
      replies.push(rest.slice(0, end + 4));
      rest = rest.slice(end + 4);
    } else {
      replies.push(rest.slice(0, newline + 1));
      rest = rest.slice(newline + 1);
    }
  }
  return replies;
}

function parseWhatsat(reply: string): { atLine: string; json: Record<string, unknown> } {
  assert.ok(reply.endsWith("}\n\n"), `WHATSAT reply must end with "}\\n\\n": ${JSON.stringify(reply.slice(-40))}`);
  const newline = reply.indexOf("\n");
  return { atLine: reply.slice(0, newline), json: JSON.parse(reply.slice(newline + 1)) };
}

/**
 * Sends a WHATSAT until the server knows the client (a record two hops away
 * arrives shortly after the IAMAT reply) and returns that reply; fails after
 * `timeoutMs`.
 */
async function exchangeUntilKnown(port: number, request: string, timeoutMs = 5000): Promise<string> {
  return await waitFor(async () => {
    const reply = await exchange(port, request);
    return reply.startsWith("? ") ? undefined : reply;
  }, { timeoutMs, stepMs: 5, what: `port ${port} to know the client of ${JSON.stringify(request)}` });
}

Deno.test({
  name: 'with peers.ackScope "herd", an IAMAT reply comes once every server holds the record, two hops away included' +
    MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using fake = startFakePlaces({ key: KEY });
  await using herd = await TestHerd.create({
    tls: MODE.tls,
    placesUrl: fake.url,
    key: KEY,
    places: { provider: "google-legacy" },
    peers: { ackScope: "herd" },
  });
  await herd.startAll();
  for (const [from, id] of [["Hill", "herd-scope-1"], ["Campbell", "herd-scope-2"], ["Singleton", "herd-scope-3"]]) {
    const reply = await exchange(herd.port(from), `IAMAT ${id} +1+1 1700000000.5\n`);
    assert.match(reply, new RegExp(`^AT ${from} \\S+ ${id} \\+1\\+1 1700000000\\.5\\n$`));
    for (const name of herd.names) {
      // No retry: the reply promised that every server already holds it.
      const answer = parseWhatsat(await exchange(herd.port(name), `WHATSAT ${id} 1 1\n`));
      assert.equal(answer.atLine, reply.trimEnd(), `${name} must hold ${from}'s record when the reply comes`);
    }
  }
});

Deno.test({
  name: "a healthy herd speaks the whole protocol" + MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async (t) => {
  await using fake = startFakePlaces({ key: KEY });
  await using herd = await TestHerd.create({
    tls: MODE.tls,
    placesUrl: fake.url,
    key: KEY,
    places: { provider: "google-legacy" },
  });
  await herd.startAll();

  await t.step("an IAMAT at Hill is visible at its neighbours with no sleep, then at every other server", async () => {
    const reply = await exchange(herd.port("Hill"), KIWI + "\n");
    const match = AT_LINE.exec(reply.trimEnd());
    assert.ok(match, `not an AT line: ${reply}`);
    assert.equal(match[1], "Hill");
    assert.equal(reply, `AT Hill ${match[2]} kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503\n`);
    for (const name of ["Jaquez", "Smith", "Campbell", "Singleton"]) {
      // Hill's neighbours acknowledged the record before the reply; the others are two hops away.
      const neighbour = name === "Jaquez" || name === "Smith";
      const request = "WHATSAT kiwi.cs.ucla.edu 10 5\n";
      const answer = parseWhatsat(
        neighbour ? await exchange(herd.port(name), request) : await exchangeUntilKnown(herd.port(name), request),
      );
      assert.equal(answer.atLine, reply.trimEnd(), `${name} must answer with the stored AT line of Hill`);
      assert.equal(answer.json.status, "OK");
      assert.equal((answer.json.results as unknown[]).length, 5);
    }
    const sent = fake.requests.at(-1)!;
    assert.deepEqual(sent, { api: "legacy", location: "34.068930,-118.445127", radius: "10000", key: KEY });
  });

  await t.step("a record from Campbell reaches Hill, two hops away", async () => {
    const reply = await exchange(herd.port("Campbell"), "IAMAT far-client -33.8688+151.2093 1700000000.5\n");
    assert.match(reply, /^AT Campbell [+-][0-9]+\.[0-9]{9} far-client -33\.8688\+151\.2093 1700000000\.5\n$/);
    const answer = parseWhatsat(await exchangeUntilKnown(herd.port("Hill"), "WHATSAT far-client 0.5 2\n"));
    assert.equal(answer.atLine, reply.trimEnd());
    assert.deepEqual(fake.requests.at(-1), { api: "legacy", location: "-33.8688,151.2093", radius: "500", key: KEY });
  });

  await t.step("WHATSAT output is Google-style JSON with results cut to the bound", async () => {
    const reply = await exchange(herd.port("Smith"), "WHATSAT kiwi.cs.ucla.edu 1.5 3\n");
    const newline = reply.indexOf("\n");
    const json = reply.slice(newline + 1);
    assert.ok(json.startsWith('{\n   "html_attributions" : [],\n   "results" : [\n      {\n'), json.slice(0, 80));
    assert.ok(!/\n\n./.test(json.slice(0, -2)), "no empty lines inside the JSON");
    assert.equal((JSON.parse(json).results as unknown[]).length, 3);
    assert.equal(fake.requests.at(-1)!.radius, "1500");
    const none = parseWhatsat(await exchange(herd.port("Smith"), "WHATSAT kiwi.cs.ucla.edu 50 0\n"));
    assert.deepEqual(none.json.results, []);
    assert.equal(none.json.status, "OK");
  });

  await t.step(
    "invalid commands get ? and the line, including a last line without newline before half-close",
    async () => {
      const lines = [
        "LLL",
        "IAMAT kiwi +34-118",
        "IAMAT kiwi +34-118 1 extra",
        "iamat kiwi +34-118 1",
        "IAMAT kiwi +91-118 1",
        "IAMAT kiwi +34-181 1",
        "IAMAT kiwi 34-118 1",
        "IAMAT kiwi +34-118 -1",
        "IAMAT kiwi +34-118 1e9",
        "WHATSAT kiwi.cs.ucla.edu 0 5",
        "WHATSAT kiwi.cs.ucla.edu 51 5",
        "WHATSAT kiwi.cs.ucla.edu 10 21",
        "WHATSAT kiwi.cs.ucla.edu 10 -1",
        "WHATSAT nobody-knows-me 10 5",
        "WHATSAT kiwi.cs.ucla.edu 10",
        "\tLLL  extra\t",
      ];
      const reply = await exchange(herd.port("Jaquez"), lines.join("\n") + "\n\n   \nLAST no newline");
      assert.equal(reply, [...lines, "LAST no newline"].map((line) => `? ${line}\n`).join(""));
    },
  );

  await t.step("a client that sends an AT line gets ? and the line", async () => {
    const line = "AT Hill +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503";
    assert.equal(await exchange(herd.port("Hill"), line + "\n"), `? ${line}\n`);
    assert.equal(await exchange(herd.port("Hill"), "AT Hill +0.1 kiwi +34-118 1\n"), "? AT Hill +0.1 kiwi +34-118 1\n");
  });

  await t.step("a line that is not UTF-8 is echoed back byte for byte", async () => {
    const line = new Uint8Array([0x49, 0x41, 0x4d, 0x41, 0x54, 0x20, 0xff, 0xfe, 0x20, 0xc3]);
    const reply = await exchangeBytes(herd.port("Hill"), new Uint8Array([...line, 10]));
    assert.deepEqual(reply, new Uint8Array([0x3f, 0x20, ...line, 10]));
  });

  await t.step("many pipelined commands on one connection are answered in order", async () => {
    const commands: string[] = [];
    const expected: ((reply: string) => void)[] = [];
    for (let i = 0; i < 600; i++) {
      commands.push(`IAMAT pipe-${i} +${i % 90}.5-${i % 180}.25 ${1700000000 + i}.000000001`);
      expected.push((reply) =>
        assert.match(reply, new RegExp(`^AT Hill \\S+ pipe-${i} \\S+ ${1700000000 + i}\\.000000001\\n$`))
      );
      if (i % 50 === 49) {
        commands.push(`WHATSAT pipe-${i - 1} 2 1`);
        expected.push((reply) => assert.match(reply, new RegExp(`^AT Hill \\S+ pipe-${i - 1} `)));
      }
      if (i % 7 === 0) {
        commands.push(`bogus ${i}`);
        expected.push((reply) => assert.equal(reply, `? bogus ${i}\n`));
      }
    }
    const replies = splitReplies(await exchange(herd.port("Hill"), commands.join("\n") + "\n"));
    assert.equal(replies.length, expected.length);
    replies.forEach((reply, index) => expected[index](reply));
  });

  await t.step("a 20-result WHATSAT arrives in one read", async () => {
    using conn = await Deno.connect({ hostname: "127.0.0.1", port: herd.port("Campbell") });
    await conn.write(new TextEncoder().encode("WHATSAT kiwi.cs.ucla.edu 10 20\n"));
    const buffer = new Uint8Array(1 << 20);
    const n = await conn.read(buffer);
    assert.ok(n !== null);
    const reply = new TextDecoder().decode(buffer.subarray(0, n));
    assert.ok(reply.length > 5000, `a 20-result answer is large, got ${reply.length} bytes`);
    const answer = parseWhatsat(reply);
    assert.equal((answer.json.results as unknown[]).length, 20);
  });

  await t.step("Unicode client IDs travel the herd intact", async () => {
    for (const id of ["🥝kiwi", "José-Müller", "a\u00a0b", "line\u2028sep", "雪"]) {
      const reply = await exchange(herd.port("Jaquez"), `IAMAT ${id} +1.5-2.5 1700000001\n`);
      assert.match(reply, new RegExp(`^AT Jaquez \\S+ ${id} \\+1\\.5-2\\.5 1700000001\\n$`));
      // Singleton, Jaquez's neighbour, acknowledged the record before the reply; Campbell is two hops away.
      const near = parseWhatsat(await exchange(herd.port("Singleton"), `WHATSAT ${id} 5 1\n`));
      assert.equal(near.atLine, reply.trimEnd());
      const far = parseWhatsat(await exchangeUntilKnown(herd.port("Campbell"), `WHATSAT ${id} 5 1\n`));
      assert.equal(far.atLine, reply.trimEnd());
    }
  });

  await t.step("an older IAMAT is answered but neither stored nor flooded", async () => {
    const newer = await exchange(herd.port("Hill"), "IAMAT mover +10+10 1700000100\n");
    const older = await exchange(herd.port("Smith"), "IAMAT mover +20+20 1700000050\n");
    assert.match(older, /^AT Smith \S+ mover \+20\+20 1700000050\n$/);
    for (const name of herd.names) {
      // Campbell and Singleton are two hops from Hill: the newer record reaches them shortly after its reply.
      const answer = parseWhatsat(await exchangeUntilKnown(herd.port(name), "WHATSAT mover 1 0\n"));
      assert.equal(answer.atLine, newer.trimEnd(), `${name} keeps the newer record`);
    }
  });

  await t.step("Places failures become Places-shaped errors, and the key never shows", async () => {
    const failures = [["http-500", /HTTP 500/], ["malformed", /malformed JSON/], ["hang", /within 1000 ms/]] as const;
    for (const [index, [mode, pattern]] of failures.entries()) {
      fake.mode = mode;
      // A radius not asked before: the cache must not answer for the failing service.
      const reply = await exchange(herd.port("Singleton"), `WHATSAT kiwi.cs.ucla.edu ${30 + index} 5\n`);
      const answer = parseWhatsat(reply);
      assert.equal(answer.json.status, "UNKNOWN_ERROR", mode);
      assert.deepEqual(answer.json.results, []);
      assert.match(String(answer.json.error_message), pattern);
      assert.ok(!reply.includes(KEY), "the key must not appear in a reply");
    }
    fake.mode = "ok";
    for (const name of herd.names) assert.ok(!(await herd.log(name)).includes(KEY), `the key is in ${name}'s log`);
  });

  await t.step("an over-long line closes that connection and nobody else's", async () => {
    using other = await Deno.connect({ hostname: "127.0.0.1", port: herd.port("Hill") });
    const reply = await exchange(
      herd.port("Hill"),
      "IAMAT ok +1+1 1\n" + "x".repeat(20_000) + "\nIAMAT never +1+1 1\n",
    );
    assert.match(reply, /^AT Hill \S+ ok \+1\+1 1\n$/);
    await other.write(new TextEncoder().encode("bogus\n"));
    const buffer = new Uint8Array(100);
    const n = await other.read(buffer);
    assert.equal(new TextDecoder().decode(buffer.subarray(0, n!)), "? bogus\n");
  });
});

Deno.test({
  name: "records reach the servers still connected after kills, and restarted servers are used again" + MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async (t) => {
  await using fake = startFakePlaces({ key: KEY });
  await using herd = await TestHerd.create({ tls: MODE.tls, placesUrl: fake.url, key: KEY });
  await herd.startAll();

  await t.step(
    "with Smith and Singleton killed, Jaquez gets Hill's record and isolated Campbell does not",
    async () => {
      await herd.stop("Smith", "SIGKILL");
      await herd.stop("Singleton", "SIGKILL");
      const reply = await exchange(herd.port("Hill"), "IAMAT during-outage +5+5 1700000200\n");
      assert.match(reply, /^AT Hill \S+ during-outage \+5\+5 1700000200\n$/);
      const atJaquez = parseWhatsat(await exchange(herd.port("Jaquez"), "WHATSAT during-outage 1 1\n"));
      assert.equal(atJaquez.atLine, reply.trimEnd());
      assert.equal(
        await exchange(herd.port("Campbell"), "WHATSAT during-outage 1 1\n"),
        "? WHATSAT during-outage 1 1\n",
      );
    },
  );

  await t.step(
    "restarted servers are linked again and get new records (Hill's neighbour Smith with no sleep)",
    async () => {
      await herd.start("Smith");
      await herd.start("Singleton");
      await herd.waitConverged(herd.names);
      const reply = await exchange(herd.port("Hill"), "IAMAT after-restart +6+6 1700000300\n");
      for (const name of ["Smith", "Singleton", "Campbell"]) {
        const request = "WHATSAT after-restart 1 1\n";
        const answer = parseWhatsat(
          name === "Smith"
            ? await exchange(herd.port(name), request)
            : await exchangeUntilKnown(herd.port(name), request),
        );
        assert.equal(answer.atLine, reply.trimEnd(), name);
      }
      assert.match(await herd.log("Smith"), /Link from "?Hill"? is up/);
    },
  );
});

Deno.test({
  name: "a frozen neighbour does not stall the herd, and gets the latest records when it thaws" + MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using fake = startFakePlaces({ key: KEY });
  await using herd = await TestHerd.create({
    tls: MODE.tls,
    placesUrl: fake.url,
    key: KEY,
    names: ["A", "B", "C"],
    links: [["A", "B"], ["A", "C"]],
    peers: { ackTimeoutMs: 300 },
  });
  await herd.startAll();
  herd.signal("B", "SIGSTOP");
  try {
    const deadline = Date.now() + 20_000;
    let last = "";
    for (let i = 0; i < 200 && Date.now() < deadline; i++) {
      last = await exchange(herd.port("A"), `IAMAT walker +1+1 ${1700000400 + i}\n`);
      assert.match(last, new RegExp(`^AT A \\S+ walker \\+1\\+1 ${1700000400 + i}\\n$`));
    }
    assert.match(last, /1700000599\n$/, "A kept answering while B was frozen");
    const atC = parseWhatsat(await exchange(herd.port("C"), "WHATSAT walker 1 0\n"));
    assert.equal(atC.atLine, last.trimEnd());
  } finally {
    herd.signal("B", "SIGCONT");
  }
  let reply = "";
  await waitFor(async () => (reply = await exchange(herd.port("B"), "WHATSAT walker 1 0\n")).includes("1700000599"), {
    timeoutMs: 10_000,
    stepMs: 50,
    what: () => `B to get the latest record; it answers ${reply.slice(0, 120)}`,
  });
});

Deno.test({
  name: "a neighbour going away while a server shuts down is said at info, not as a warning" + MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await TestHerd.create({
    tls: MODE.tls,
    placesUrl: "http://127.0.0.1:9/unused",
    names: ["A", "B"],
    links: [["A", "B"]],
    places: { provider: "offline" },
    // A's IAMAT below waits for B's acknowledgement that long, holding A's shutdown open (shutdownGraceMs).
    peers: { ackTimeoutMs: 20_000 },
    extra: { shutdownGraceMs: 20_000 },
  });
  await herd.startAll();
  await herd.waitConverged(["A", "B"]);
  herd.signal("B", "SIGSTOP");
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: herd.port("A") });
  await conn.write(new TextEncoder().encode("IAMAT held +1+1 1700000000\n"));
  await waitFor(async () => (await herd.log("A")).includes("IAMAT held"), { what: "A to read the IAMAT" });
  herd.signal("A", "SIGTERM");
  await waitFor(async () => /"A" shutting down/.test(await herd.log("A")), { what: "A to start shutting down" });
  // B goes away (as a whole herd stopped at once does) while A waits for its reply to go out.
  await herd.stop("B", "SIGKILL");
  await waitFor(async () => /Link to "B"( at \S+)? is down/.test(await herd.log("A")), {
    what: "A to see its link to B go down",
  });
  // Its link to B and B's link to it, whichever way each ends (closed, or reset: "failed").
  const lines = (await herd.log("A")).split("\n").filter((line) => /Link (to|from) "B"/.test(line));
  assert.ok(lines.length > 0);
  for (const line of lines) assert.match(line, /\[INF\]/, line);
  conn.close();
  assert.equal((await herd.stop("A")).code, 0);
});

Deno.test({
  name: "SIGINT then SIGTERM finish replies in flight and leave a complete log" + MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using fake = startFakePlaces({ key: KEY });
  await using herd = await TestHerd.create({
    tls: MODE.tls,
    placesUrl: fake.url,
    key: KEY,
    names: ["Solo"],
    links: [],
  });
  await herd.start("Solo");
  const port = herd.port("Solo");
  assert.match(await exchange(port, KIWI + "\n"), /^AT Solo /);
  fake.mode = "hang";
  using conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(new TextEncoder().encode("WHATSAT kiwi.cs.ucla.edu 10 5\n"));
  await fake.waitForRequest((request) => request.radius === "10000"); // the WHATSAT is in flight, held by the fake
  // Ctrl-C under `deno task herd` arrives twice (terminal and launcher); the second must not cut the first short.
  herd.signal("Solo", "SIGINT");
  const stopping = herd.stop("Solo", "SIGTERM");
  const buffer = new Uint8Array(1 << 16);
  const n = await conn.read(buffer);
  const reply = new TextDecoder().decode(buffer.subarray(0, n ?? 0));
  assert.equal(parseWhatsat(reply).json.status, "UNKNOWN_ERROR", "the reply in flight is finished");
  const { code } = await stopping;
  assert.equal(code, 0);
  const log = await herd.log("Solo");
  for (
    const event of [
      /Solo" starting/,
      /listening for clients/,
      /connected/,
      /< "IAMAT kiwi\.cs\.ucla\.edu/,
      /> "AT Solo/,
      /< "WHATSAT kiwi\.cs\.ucla\.edu 10 5"/,
      /Places "google-new" .*UNKNOWN_ERROR/,
      /disconnected/,
    ]
  ) {
    assert.match(log, event);
  }
  // Sent a moment apart, the two may be handled in either order (Deno's listeners of two signals): shut down once.
  assert.equal(log.match(/received "SIG(INT|TERM)"/g)?.length, 1, "one shutdown");
  assert.match(log.trimEnd().split("\n").at(-1)!, /Solo" stopped$/, "the log ends with the shutdown");
  // A WHATSAT reply is logged as its AT line and the size of its JSON (what follows the line's newline), in bytes.
  const bytes = new TextEncoder().encode(reply);
  const atLine = reply.slice(0, reply.indexOf("\n"));
  const jsonBytes = bytes.length - new TextEncoder().encode(atLine).length - 1;
  assert.ok(log.includes(`> ${JSON.stringify(`${atLine}\n[${jsonBytes} bytes of JSON]`)}`), `no reply line in ${log}`);
});

Deno.test({
  name: "at the default log level, each server logs every record it stores from a peer and every record it forwards" +
    MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await TestHerd.create({
    tls: MODE.tls,
    placesUrl: "http://127.0.0.1:9/unused",
    names: ["A", "B", "C"],
    links: [["A", "B"], ["B", "C"]],
    places: { provider: "offline" },
  });
  await herd.startAll();
  const line = (await exchange(herd.port("A"), "IAMAT logged.client +1+1 1700000000.5\n")).trimEnd();
  assert.match(line, AT_LINE);
  const quoted = JSON.stringify(line);
  const expected: [string, string][] = [
    ["A", `Forwarded to "B": ${quoted}`],
    ["B", `From "A", stored, forwarded to "C": ${quoted}`],
    ["C", `From "B", stored: ${quoted}`],
  ];
  for (const [name, text] of expected) {
    await waitFor(async () => (await herd.log(name)).includes(`[INF] herd.peer: ${text}`), {
      what: `${name}'s log to say ${text}`,
    });
  }
});

/**
 * A herd in the middle of a config change: `behind` runs the config from before it (the herd's, changed by `before`),
 * the others the new one; `behind` starts first, then the others in order.
 */
async function herdMidChange(
  options: {
    names: string[];
    links: [string, string][];
    peers?: Record<string, number>;
    extra?: Record<string, unknown>;
  },
  behind: string,
  before: (config: Record<string, unknown>) => void,
): Promise<TestHerd> {
  const herd = await TestHerd.create({ tls: MODE.tls, placesUrl: "http://127.0.0.1:9/unused", ...options });
  try {
    await herd.configureOnly(behind, before);
    await herd.start(behind);
    for (const name of options.names) if (name !== behind) await herd.start(name);
    return herd;
  } catch (error) {
    await herd[Symbol.asyncDispose]();
    throw error;
  }
}

Deno.test({
  name: "a server added to the herd before every config has it: the servers not yet told of it drop its records and " +
    "reports without closing their links" + MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  // F is new: A's config has it, B's not yet (the config before the change: no F, no A-F link).
  await using herd = await herdMidChange(
    { names: ["A", "B", "F"], links: [["A", "B"], ["A", "F"]], peers: { reconcileIntervalMs: 500 } },
    "B",
    (config) => {
      delete (config.servers as Record<string, unknown>).F;
      config.links = (config.links as string[][]).filter((link) => !link.includes("F"));
    },
  );
  // Forty of F's clients report: A stores each and passes it on to B, which refuses them all.
  const iamats = Array.from({ length: 40 }, (_, i) => `IAMAT f${i} +1+1 ${1700000000 + i}.5\n`).join("");
  const replies = (await exchange(herd.port("F"), iamats)).trimEnd().split("\n");
  assert.equal(replies.length, 40);
  for (const reply of replies) assert.match(reply, /^AT F \+/);
  await waitFor(
    async () =>
      ((await herd.log("B")).match(
        /Dropped a record from "A"( on our link)? \("names a server the herd does not have"\)/g,
      )
        ?.length ?? 0) >= 16,
    { timeoutMs: 10_000, what: "B to drop F's records" },
  );
  // The link stays up, and carries what B can take.
  const after = (await exchange(herd.port("A"), "IAMAT after.f +2+2 1700000100.5\n")).trimEnd();
  await waitFor(async () => (await exchange(herd.port("B"), "WHATSAT after.f 1 0\n")).startsWith(after), {
    timeoutMs: 10_000,
    what: "B to get A's record after F's",
  });
  assert.doesNotMatch(await herd.log("B"), /Closing the link from "A"|Dropped a line from "A"/);
  assert.doesNotMatch(await herd.log("A"), /Link to "B" is down/);
  assert.equal(await exchange(herd.port("B"), "WHATSAT f0 1 0\n"), "? WHATSAT f0 1 0\n");
  // Each server remembers what it refused from the other: their exchanges, both ways, send nothing again. (They used
  // to send every bucket holding one of F's records, both ways, at each exchange.) An exchange goes both ways, and a
  // server does not start one of its own while the neighbour keeps starting them (every 500 ms here): the other
  // side's part of an exchange is its answer.
  const from = { A: (await herd.log("A")).length, B: (await herd.log("B")).length };
  const since = async (name: "A" | "B") => (await herd.log(name)).slice(from[name]);
  const quiet = async (name: "A" | "B", neighbour: string) =>
    (await since(name)).includes(
      `Reconciled with "${neighbour}": received 0 records, stored 0; sending the records of 0 buckets`,
    );
  const answeredQuietly = async (name: "A" | "B", neighbour: string) =>
    (await since(name)).includes(`Reconciling with "${neighbour}": sent 0 records`);
  // One side started the exchange and sent nothing; the other answered it with nothing.
  await waitFor(
    async () =>
      (await quiet("B", "A") && await answeredQuietly("A", "B")) ||
      (await quiet("A", "B") && await answeredQuietly("B", "A")),
    { timeoutMs: 10_000, what: "an exchange of A and B that sends nothing, each way" },
  );
});

Deno.test({
  name: "a link one config has and the other not yet is refused with a reason and dialled again after a long wait, " +
    "not every reconnectMaxMs, and at once when the other side gets it" + MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  // The link is new: A's config has it, B's not yet.
  await using herd = await herdMidChange(
    { names: ["A", "B"], links: [["A", "B"]] },
    "B",
    (config) => config.links = [],
  );
  const ups = async () => (await herd.log("A")).match(/Link to "B" is up/g)?.length ?? 0;
  await waitFor(async () => /"B" refused our link \("not-a-neighbour"\)/.test(await herd.log("A")), {
    what: "A to say why B refused its link",
  });
  assert.equal(await ups(), 1);
  // The test's reconnectMaxMs is 200 ms: without the reason, A dialled B again every 200 ms at most.
  await checkThroughout(async () => assert.equal(await ups(), 1, "A dialled B again"), { durationMs: 2000 });
  // B gets the link: it dials A, and A dials B back at once, not after its wait of 30 s.
  await herd.stop("B");
  await herd.configureOnly("B", (config) => config.links = [["A", "B"]]);
  await herd.start("B");
  await waitFor(async () => await ups() === 2, { timeoutMs: 10_000, what: "A's link to B to come up" });
  const reply = (await exchange(herd.port("A"), "IAMAT linked +1+1 1700000000.5\n")).trimEnd();
  await waitFor(async () => (await exchange(herd.port("B"), "WHATSAT linked 1 0\n")).startsWith(reply), {
    what: "B to get A's record",
  });
  assert.equal((await herd.log("A")).match(/refused our link/g)?.length, 1, "said once");
  assert.doesNotMatch(await herd.log("B"), /did not start with HELLO/, "nothing after the refused HELLO is read");
});

Deno.test({
  name: "a record a neighbour's config refuses (a limit raised on our side first) is answered SKIP: the reply does " +
    "not wait out peers.ackTimeoutMs, and the neighbour is not taken for lagging" + MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  // B is not told of the raised limit yet.
  await using herd = await herdMidChange(
    {
      names: ["A", "B"],
      links: [["A", "B"]],
      peers: { ackTimeoutMs: 30_000 },
      extra: { limits: { maxClientIdBytes: 512 } },
    },
    "B",
    (config) => delete config.limits,
  );
  await waitFor(async () => /Link to "B" is up/.test(await herd.log("A")), { what: "A's link to B" });
  const id = "l".repeat(300);
  // Without SKIP this reply came only once the 30 s of peers.ackTimeoutMs had run out, and A took B for lagging.
  const started = performance.now();
  const reply = (await exchange(herd.port("A"), `IAMAT ${id} +1+1 1700000000.5\n`)).trimEnd();
  const ms = performance.now() - started;
  assert.match(reply, new RegExp(`^AT A \\+\\S+ ${id} \\+1\\+1 1700000000\\.5$`));
  // A bound far from both a prompt answer and the 30 s, for a loaded machine.
  assert.ok(ms < 10_000, `the reply waited ${ms.toFixed(0)} ms: it must not wait out peers.ackTimeoutMs`);
  await waitFor(async () => /Dropped a record from "A" \("its client ID is too long"\)/.test(await herd.log("B")), {
    what: "B to drop it",
  });
  // A record B takes is acknowledged as ever.
  assert.match(await exchange(herd.port("A"), "IAMAT short +1+1 1700000001.5\n"), /^AT A /);
  assert.doesNotMatch(await herd.log("A"), /is lagging/);
});

Deno.test({
  name: "a live record naming a server in retiredServers is acknowledged, stored and passed on down a chain, " +
    "not left to reconciliation" + MODE.suffix,
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  const chain = ["A", "B", "C", "D"];
  await using herd = await TestHerd.create({
    tls: MODE.tls,
    placesUrl: "http://127.0.0.1:9/unused",
    names: [...chain, "Probe"],
    links: [["A", "B"], ["B", "C"], ["C", "D"], ...chain.map((name) => [name, "Probe"] as [string, string])],
    admin: true,
    // No reconciliation in the test's time: what reaches B, C and D went live.
    peers: { reconcileIntervalMs: 600_000 },
    extra: { retiredServers: ["Gone"] },
  });
  for (const name of chain) await herd.start(name);
  await herd.waitConverged(chain);
  await herd.waitTreesSettled();
  const reconciled = await herd.metricSum("herd_reconciliation_records_total");
  // Gone's records, as a server still on the config before Gone was retired would pass them on to A.
  await using probe = await PeerProbe.connect({
    server: "A",
    port: herd.peerPort("A"),
    as: "Probe",
    files: herd.tlsFiles("Probe"),
  });
  const lines = Array.from({ length: 10 }, (_, i) => `AT Gone +0.100000000 gone${i} +1+1 1700000100.${i}`);
  lines.forEach((line, i) => probe.send(`${line} ${i + 1} 2000\n`));
  for (let i = 0; i < lines.length; i++) assert.equal(await probe.nextLine(), `ACK ${i + 1}`);
  for (const name of chain) {
    for (const [i, line] of lines.entries()) {
      await waitFor(async () => (await exchange(herd.port(name), `WHATSAT gone${i} 1 0\n`)).split("\n")[0] === line, {
        timeoutMs: 5_000,
        stepMs: 20,
        what: `${name} to hold ${line}`,
      });
    }
  }
  assert.equal(await herd.metricSum("herd_reconciliation_records_total"), reconciled);
  const digests = await Promise.all(chain.map((name) => herd.digestOf(name)));
  assert.equal(new Set(digests).size, 1, `digests ${digests.join(" ")}`);
});
