/**
 * The peer port faces the network: whoever reaches it without the herd's
 * credentials gets nothing and changes nothing, an impostor on a downed
 * neighbour's address is not trusted, links carry no location in clear,
 * and an authenticated neighbour that misbehaves is bounded. Each test
 * reads the servers' logs for the line that names what was refused.
 */

import assert from "node:assert/strict";
import net from "node:net";
import tls from "node:tls";
import { makeCertificates } from "../lib/cli/certs.ts";
import { certFiles, parseConfig } from "../lib/config/config.ts";
import { LineSocket } from "../lib/net/line_socket.ts";
import { PeerTransport } from "../lib/peer/transport.ts";
import { exchange, HERD_TEST_PERMISSIONS, TestHerd, type TestHerdOptions } from "./testing/herd.ts";
import { PeerProbe } from "./testing/peer_probe.ts";
import { inspectProcess } from "./testing/process_stats.ts";
import { waitFor } from "./testing/wait.ts";

/** No key is given, so WHATSAT answers from offline GeoNames data and this URL is never called. */
const NOWHERE = "http://127.0.0.1:9/unused";
const ZERO_DIGEST = `DIGEST ${"0".repeat(16384)}`;
const FORGED = "AT A +0.000000001 forged.client +1+1 99999999999.0";
const decoder = new TextDecoder();

/** A line herd A–B–C (and D, configured and linked to B, never started: its certificate is an insider's). */
function lineHerd(
  options: { tls?: boolean; faultProxies?: boolean; captureBytes?: number; admin?: boolean } = {},
  peers: TestHerdOptions["peers"] = {},
) {
  return TestHerd.create({
    placesUrl: NOWHERE,
    names: ["A", "B", "C", "D"],
    links: [["A", "B"], ["B", "C"], ["B", "D"]],
    places: { provider: "offline" },
    peers: { ackTimeoutMs: 300, reconcileIntervalMs: 1000, ...peers },
    ...options,
  });
}

/** A and B, B's peer port holding 8 connections at most (`limits.maxPeerConnections`), with admin endpoints. */
function smallPeerPortHerd(): Promise<TestHerd> {
  return TestHerd.create({
    placesUrl: NOWHERE,
    names: ["A", "B"],
    links: [["A", "B"]],
    places: { provider: "offline" },
    admin: true,
    extra: { limits: { maxPeerConnections: 8 } },
  });
}

/** A probe's link to `server`'s peer port, introduced (and, with TLS, proven) as its neighbour `as`. */
function probeAs(herd: TestHerd, as: string, server = "B"): Promise<PeerProbe> {
  return PeerProbe.connect({ server, port: herd.peerPort(server), as, files: herd.tlsFiles(as) });
}

/** Whether `name` holds any record for `id` (a WHATSAT answered with an AT line). */
async function holds(herd: TestHerd, name: string, id: string): Promise<boolean> {
  return (await exchange(herd.port(name), `WHATSAT ${id} 1 0\n`)).startsWith("AT ");
}

/** Waits until `name`'s log has a line matching `pattern`; returns it. */
async function logLine(herd: TestHerd, name: string, pattern: RegExp): Promise<string> {
  let found = "";
  await waitFor(async () => {
    found = (await herd.log(name)).split("\n").find((line) => pattern.test(line)) ?? "";
    return found !== "";
  }, { timeoutMs: 10_000, what: `${name}'s log to say ${pattern}` });
  return found;
}

/** What a raw socket reads until it is closed (or `ms` pass, when it is closed by us). */
function readAll(socket: net.Socket, ms = 10_000): Promise<{ text: string; closedByServer: boolean }> {
  return new Promise((resolve) => {
    const chunks: Uint8Array[] = [];
    let closedByServer = true;
    const timer = setTimeout(() => {
      closedByServer = false;
      socket.destroy();
    }, ms);
    socket.on("data", (chunk: Uint8Array) => chunks.push(new Uint8Array(chunk)));
    socket.on("error", () => {});
    socket.once("close", () => {
      clearTimeout(timer);
      const bytes = new Uint8Array(chunks.reduce((sum, chunk) => sum + chunk.length, 0));
      let offset = 0;
      for (const chunk of chunks) {
        bytes.set(chunk, offset);
        offset += chunk.length;
      }
      resolve({ text: decoder.decode(bytes), closedByServer });
    });
  });
}

/** The forger's script: introduce itself as A, ask for everything, and push a record that would win forever. */
const FORGERY = `HELLO A\n${ZERO_DIGEST}\n${FORGED} 1 500\n${FORGED}\n`;

Deno.test({
  name: "a forger without the herd's credentials gets no record and changes nothing, and the refusal is logged",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await lineHerd();
  await herd.startAll();
  await exchange(herd.port("A"), "IAMAT victim +34.068930-118.445127 1700000000\n");
  await waitFor(() => holds(herd, "C", "victim"), { what: "the victim's record to reach C" });

  // 1. Plain TCP, speaking the peer protocol in clear to B's peer port.
  const plain = net.connect({ host: "127.0.0.1", port: herd.peerPort("B") });
  plain.on("connect", () => plain.write(FORGERY));
  const plainRead = await readAll(plain);
  assert.equal(plainRead.text.includes("victim"), false, "no record comes back in clear");
  assert.equal(plainRead.text.includes("AT "), false);
  await logLine(herd, "B", /Refused a peer connection from "127\.0\.0\.1:\d+": "the TLS handshake failed/);

  // 2. TLS that trusts the herd's CA, without a client certificate.
  const files = herd.tlsFiles("A")!;
  const anonymous = tls.connect({
    host: "127.0.0.1",
    port: herd.peerPort("B"),
    servername: "B",
    ca: await Deno.readTextFile(files.ca),
  });
  anonymous.on("secureConnect", () => anonymous.write(FORGERY));
  const anonymousRead = await readAll(anonymous);
  assert.equal(anonymousRead.text.includes("victim"), false);
  await logLine(herd, "B", /Refused a peer connection from .*: "it sent no certificate"/);

  // 3. A certificate for "A" from another CA: same names, same addresses, the wrong authority.
  const otherDir = `${herd.dir}/other-ca`;
  const other = parseConfig(
    JSON.stringify({ ...JSON.parse(await Deno.readTextFile(herd.configPath)), certDir: otherDir }),
    herd.configPath,
  );
  await makeCertificates(other, { names: ["A"] });
  const foreign = certFiles(other);
  const forged = tls.connect({
    host: "127.0.0.1",
    port: herd.peerPort("B"),
    servername: "B",
    ca: await Deno.readTextFile(foreign.ca),
    cert: await Deno.readTextFile(foreign.cert("A")),
    key: await Deno.readTextFile(foreign.key("A")),
    rejectUnauthorized: false,
  });
  forged.on("secureConnect", () => forged.write(FORGERY));
  const forgedRead = await readAll(forged);
  assert.equal(forgedRead.text.includes("victim"), false);
  await logLine(
    herd,
    "B",
    /Refused a peer connection from .*: "the TLS handshake failed: closed or reset by the dialler \(.*its certificate is not from/,
  );

  // 4. The herd's own credentials, but no more than TLS 1.2: links are TLS 1.3 only.
  const old = tls.connect({
    host: "127.0.0.1",
    port: herd.peerPort("B"),
    servername: "B",
    ca: await Deno.readTextFile(files.ca),
    cert: await Deno.readTextFile(files.cert),
    key: await Deno.readTextFile(files.key),
    maxVersion: "TLSv1.2",
  });
  old.on("secureConnect", () => old.write(FORGERY));
  const oldRead = await readAll(old);
  assert.equal(oldRead.text, "", "nothing comes back over TLS 1.2");
  await logLine(herd, "B", /Refused a peer connection from .*: "the TLS handshake failed: .*(version|protocol)/i);

  for (const name of ["A", "B", "C"]) {
    assert.equal(await holds(herd, name, "forged.client"), false, `${name} stored nothing of the forger's`);
  }
  // The victim's own record is untouched and a later report still wins.
  const reply = await exchange(herd.port("C"), "IAMAT victim +1+1 1700000001\n");
  assert.match(reply, /^AT C /);
  await waitFor(async () => (await exchange(herd.port("A"), "WHATSAT victim 1 0\n")).includes("+1+1 1700000001"), {
    what: "the victim's later report to win at A",
  });
});

Deno.test({
  name: "an impostor on a downed neighbour's peer address is not trusted: nothing it sends is stored or counted",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await lineHerd();
  await herd.startAll();
  await herd.stop("B", "SIGKILL");
  // The impostor holds a real certificate of the herd, D's (an insider), and listens where A dials B.
  const impostor = new PeerTransport({ files: herd.tlsFiles("D"), handshakeTimeoutMs: 5000 });
  impostor.load();
  const heard: string[] = [];
  const sockets = new Set<LineSocket>();
  const server = await impostor.listen({
    host: "127.0.0.1",
    port: herd.peerPort("B"),
    maxConnections: 64,
    onPeer: ({ socket }) => {
      const conn = new LineSocket(socket, {
        maxLineBytes: 1 << 20,
        onLines: (lines) => heard.push(...lines),
      });
      sockets.add(conn);
      // What it would answer if A trusted it: acknowledgements for anything, and a record that wins forever.
      conn.write(`${Array.from({ length: 50 }, (_, i) => `ACK ${i}`).join("\n")}\n${FORGED}\n`);
    },
    onRefused: () => {},
  });
  try {
    const line = await logLine(herd, "A", /Link to "B" at .* is down: "its certificate names D, not B"/);
    assert.ok(line.length > 0);
    const started = performance.now();
    const reply = await exchange(herd.port("A"), "IAMAT after.impostor +1+1 1700000002\n");
    assert.match(reply, /^AT A /, "A answers with no neighbour up");
    assert.ok(performance.now() - started < 300, "and does not wait on the impostor's acknowledgements");
    assert.equal(await holds(herd, "A", "forged.client"), false, "nothing the impostor sends is stored");
    assert.deepEqual(heard, [], "no link ever came up to it, so it heard no line");
  } finally {
    for (const conn of sockets) conn.destroy();
    await Promise.all([...sockets].map((conn) => conn.closed));
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

Deno.test({
  name: "the bytes of a TLS peer link carry no client ID or location in clear (and a plain-text link does)",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  for (const secure of [true, false]) {
    await using herd = await lineHerd({ tls: secure, faultProxies: true, captureBytes: 1 << 20 });
    await herd.startAll();
    const id = `secret-${secure}-${crypto.randomUUID()}`;
    const location = "+48.858370+002.294481";
    await exchange(herd.port("A"), `IAMAT ${id} ${location} 1700000003\n`);
    await waitFor(() => holds(herd, "C", id), { what: `${id} to reach C` });
    let wire = "";
    for (const proxy of herd.linkProxies.values()) wire += decoder.decode(proxy.captured());
    assert.ok(wire.length > 1000, "the proxies saw the links' bytes");
    assert.equal(wire.includes(id), !secure, secure ? "no client ID in clear" : "the plain-text control shows it");
    assert.equal(wire.includes(location), !secure, secure ? "no location in clear" : "the plain-text control shows it");
  }
});

/** An authenticated connection to `server`'s peer port as neighbour `as`, with `as`'s certificate. */
async function insider(herd: TestHerd, server: string, as: string): Promise<{ conn: LineSocket; heard: string[] }> {
  const transport = new PeerTransport({ files: herd.tlsFiles(as), handshakeTimeoutMs: 5000 });
  transport.load();
  const heard: string[] = [];
  const conn = new LineSocket(await transport.dial("127.0.0.1", herd.peerPort(server), server), {
    maxLineBytes: 1 << 20,
    onLines: (lines) => heard.push(...lines),
  });
  conn.write(`HELLO ${as}\n`);
  return { conn, heard };
}

Deno.test({
  name: "records no neighbour could have sent are logged and dropped, and a link that keeps sending them is closed",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await lineHerd();
  await herd.start("B");
  const { conn } = await insider(herd, "B", "A");
  try {
    const malformed = [
      "AT Mallory +0.263873386 m1 +34-118 1 1 0", // a server the herd does not have
      "AT A +0.1 m2 +34-118 1 2 0", // not nine decimals
      "AT A 0.263873386 m3 +34-118 1 3 0", // no sign
      `AT A +0.263873386 ${"m".repeat(9000)} +34-118 1 4 0`, // a client ID no line could carry
      "AT A +0.263873386 m5 +91-118 1 5 0", // latitude out of range
      "AT A +0.263873386 m6 +34-118 1e9 6 0", // not POSIX seconds
      "AT A +0.263873386 m7 +34-118", // five fields
      "WHATSAT m8 10 5", // a client command
      "AT Mallory +0.263873386 m9 +91-118 1 9 0", // a server the herd does not have, and no form it writes
    ];
    conn.write(malformed.join("\n") + "\nAT A +0.263873386 good +34-118 1700000004 9 0\n");
    await waitFor(() => holds(herd, "B", "good"), { what: "the well-formed record to be stored" });
    // The log is written behind (log_file.ts): each line is awaited, not read at once.
    for (const reason of [/nine decimals/, /location/]) {
      await logLine(herd, "B", new RegExp(`Dropped a line from "A" \\("[^"]*${reason.source}`));
    }
    // Its form is looked at first: a line naming an unknown server is let off only when it is a record the herd writes.
    await logLine(herd, "B", /Dropped a line from "A" \("its location[^"]*"\): "AT Mallory \+0\.263873386 m9/);
    // Refused only for what our config says: a neighbour whose config differs could send them (the next test), so they
    // are logged as records, and not counted toward closing the link.
    for (const reason of [/server the herd does not have/, /client ID is too long/]) {
      await logLine(herd, "B", new RegExp(`Dropped a record from "A" \\("[^"]*${reason.source}`));
    }
    assert.ok(!/mmmmmmmmmm{400}/.test(await herd.log("B")), "a dropped line is cut in the log");
    for (const id of ["m1", "m2", "m3", "m5", "m6", "m7", "m8", "m9"]) {
      assert.equal(await holds(herd, "B", id), false, id);
    }
    // More of them: the link is closed.
    for (let i = 0; i < 16 && !conn.isClosed; i++) conn.write("AT A +0.1 junk +1+1 1 1 0\n");
    await logLine(herd, "B", /Closing the link from "A": \d+ lines it could not have sent/);
    await waitFor(() => conn.isClosed, { what: "B to close the link" });
  } finally {
    conn.destroy();
    await conn.closed;
  }
});

Deno.test({
  name: "records a neighbour's config allows and ours refuses (a server taken out) are dropped without closing the " +
    "link, live or after a digest exchange: they would come back at each reconciliation",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await lineHerd();
  await herd.start("B");
  const { conn } = await insider(herd, "B", "A");
  try {
    // What a neighbour still configured with a server "Gone" sends after a digest exchange: its records, no sequence.
    const gone = Array.from({ length: 40 }, (_, i) => `AT Gone +0.263873386 gone-${i} +34-118 ${1700000000 + i}`);
    conn.write(gone.join("\n") + "\nAT A +0.263873386 after.gone +34-118 1700000005\n");
    await waitFor(() => holds(herd, "B", "after.gone"), { what: "the record after them to be stored" });
    // Logged 16 a second, the rest said in one line once the second is over: each one is in the log.
    await logLine(herd, "B", /Dropped 24 more records from "A" that our config refuses/);
    const logged = (await herd.log("B")).match(
      /Dropped a record from "A" \("names a server the herd does not have"\)/g,
    );
    assert.equal(logged?.length, 16);
    assert.equal(conn.isClosed, false, "the link stays up");
    assert.equal(await holds(herd, "B", "gone-0"), false);
    // Passed on live (a sequence number and a wait) by a neighbour that has Gone, or a new server ours does not have
    // yet: the same.
    const live = Array.from({ length: 20 }, (_, i) => `AT Gone +0.263873386 live-gone-${i} +34-118 1 ${i + 1} 0`);
    conn.write(live.join("\n") + "\nAT A +0.263873386 after.live +34-118 1700000006 21 0\n");
    await waitFor(() => holds(herd, "B", "after.live"), { what: "the live record after them to be stored" });
    assert.equal(conn.isClosed, false, "the link stays up");
    // Fields split by tabs are no line the herd writes: counted toward closing the link, as any such line.
    for (let i = 0; i < 16 && !conn.isClosed; i++) {
      conn.write(`AT Gone +0.263873386 live-${i} +34-118 1\t${i + 1}\t0\n`);
    }
    await logLine(herd, "B", /Closing the link from "A": 16 lines it could not have sent/);
    await waitFor(() => conn.isClosed, { what: "B to close the link after 16 live records it refuses" });
  } finally {
    conn.destroy();
    await conn.closed;
  }
});

/**
 * Opens `count` TCP connections to `port` that never say anything, from `localAddress` (127.0.0.1 unless given);
 * counts those the server closes.
 */
async function idleConnections(port: number, count: number, localAddress?: string) {
  const sockets = await Promise.all(Array.from({ length: count }, () =>
    new Promise<net.Socket>((resolve, reject) => {
      const socket = net.connect({ host: "127.0.0.1", port, localAddress }, () => resolve(socket));
      socket.once("error", reject);
    })));
  let closed = 0;
  for (const socket of sockets) {
    socket.on("error", () => {});
    socket.once("close", () => closed++);
  }
  return { closed: () => closed, [Symbol.dispose]: () => sockets.forEach((socket) => socket.destroy()) };
}

Deno.test({
  name: "connections that never prove who they are cannot lock a neighbour out of the peer port",
  permissions: HERD_TEST_PERMISSIONS,
}, async (t) => {
  await t.step(
    "one address holds at most 16 unproven connections: a new one takes the oldest one's place",
    async () => {
      await using herd = await lineHerd({ admin: true });
      await herd.start("B");
      using idle = await idleConnections(herd.peerPort("B"), 40);
      await waitFor(() => idle.closed() >= 24, { what: "B to close the 24 oldest, over the 16 of one address" });
      await using probe = await probeAs(herd, "A");
      // From the same address: the neighbour's connection takes the place of the oldest of the 16.
      assert.match(await probe.digest(), /^[0-9a-f]+$/, "a neighbour's link is served meanwhile");
      await waitFor(() => idle.closed() >= 25, { what: "the oldest idle one to make room for the neighbour's" });
      assert.ok(await herd.metricSum("herd_peer_connections_refused_total", ["B"]) >= 24);
    },
  );
  await t.step(
    "with limits.maxPeerConnections full of them, a new connection takes the oldest one's place",
    async () => {
      await using herd = await smallPeerPortHerd();
      await herd.start("B");
      using idle = await idleConnections(herd.peerPort("B"), 8);
      await using probe = await probeAs(herd, "A");
      assert.match(await probe.digest(), /^[0-9a-f]+$/, "the neighbour's link is served");
      await waitFor(() => idle.closed() >= 1, { what: "the oldest unproven connection to be dropped" });
      await logLine(herd, "B", /dropped for a new connection: 8 are open \(limits\.maxPeerConnections\)/);
    },
  );
});

for (const behindNat of [false, true]) {
  Deno.test({
    name: "connections from other addresses cannot cut short a handshake from a neighbour's address, however many" +
      (behindNat ? " (the neighbour listening on another address than it is dialled at, as behind NAT)" : ""),
    // 127.0.0.2 stands for the rest of the network; A, B's neighbour, dials from 127.0.0.1.
    permissions: { ...HERD_TEST_PERMISSIONS, net: ["127.0.0.1", "127.0.0.2"] },
  }, async () => {
    await using herd = await smallPeerPortHerd();
    if (behindNat) {
      // A listens on 127.0.0.3 and is dialled at 127.0.0.1: B knows 127.0.0.1 only from A's peerAddress.
      const config = JSON.parse(await Deno.readTextFile(herd.configPath));
      const a = config.servers.A;
      config.servers.A = { ...a, host: "127.0.0.3", peerAddress: `127.0.0.1:${a.peerPort}` };
      await Deno.writeTextFile(herd.configPath, JSON.stringify(config));
    }
    await herd.start("B");
    // A handshake from A's address that has not finished (the oldest connection), then a flood from elsewhere.
    using neighbour = await idleConnections(herd.peerPort("B"), 1);
    using flood = await idleConnections(herd.peerPort("B"), 20, "127.0.0.2");
    await waitFor(() => flood.closed() >= 13, { what: "B to close 13 of the 20 others, keeping 7 and A's" });
    await logLine(herd, "B", /dropped for a new connection: 8 are open \(limits\.maxPeerConnections\)/);
    assert.equal(neighbour.closed(), 0, "the handshake from the neighbour's address is kept");
  });
}

Deno.test({
  name: "someone sharing a neighbour's address cannot hold the peer port against a connection from elsewhere",
  // 127.0.0.1 is A's address, shared here with someone who never finishes a handshake; 127.0.0.2 stands for a
  // neighbour dialling from an address the config does not give (listening on 0.0.0.0, say).
  permissions: { ...HERD_TEST_PERMISSIONS, net: ["127.0.0.1", "127.0.0.2"] },
}, async () => {
  await using herd = await smallPeerPortHerd();
  await herd.start("B");
  using shared = await idleConnections(herd.peerPort("B"), 8);
  // Only the newest two from a neighbour's address are kept from a connection from elsewhere (a neighbour dials one
  // link at a time): the oldest of the eight makes room.
  using other = await idleConnections(herd.peerPort("B"), 1, "127.0.0.2");
  await waitFor(() => shared.closed() === 1, { timeoutMs: 3000, what: "the oldest from A's address to make room" });
  // More from A's address take the places of that address's own older ones, not of the connection from elsewhere.
  using more = await idleConnections(herd.peerPort("B"), 3);
  await waitFor(() => shared.closed() === 4, { timeoutMs: 3000, what: "three more of A's address's older ones to go" });
  assert.equal(other.closed(), 0, "the connection from elsewhere is kept");
  assert.equal(more.closed(), 0, "the newest from A's address are kept");
});

Deno.test({
  name: "a neighbour's certificate holds one link at a time: a new one's HELLO closes the one before",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await lineHerd();
  await herd.start("B");
  await using first = await probeAs(herd, "A");
  assert.match(await first.digest(), /^[0-9a-f]+$/);
  await using second = await probeAs(herd, "A");
  assert.match(await second.digest(), /^[0-9a-f]+$/);
  await first.closed;
  await logLine(herd, "B", /Closing the older link from "A": it dialled us again/);
  assert.match(await second.digest(), /^[0-9a-f]+$/, "the newer link is kept");
});

Deno.test({
  name: "a link closed for its bad lines handles nothing more of the read that closed it, and logs its close once",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await lineHerd();
  await herd.start("B");
  const { conn } = await insider(herd, "B", "A");
  try {
    // All in one write: the sixteenth bad line closes the link, and the record and junk after it must not count.
    const junk = (count: number) => "AT A +0.1 junk +1+1 1 1 0\n".repeat(count);
    conn.write(junk(16) + "AT A +0.263873386 after.close +34-118 1700000004 9 0\n" + junk(2000));
    await waitFor(() => conn.isClosed, { what: "B to close the link" });
    await logLine(herd, "B", /Link from "A" is down/);
    const log = await herd.log("B");
    assert.equal(log.match(/Closing the link from "A"/g)?.length, 1, "the close is logged once");
    assert.equal(log.match(/Dropped a line from "A"/g)?.length, 16, "the lines after the close are not looked at");
    assert.equal(await holds(herd, "B", "after.close"), false, "a record after the close is not stored");
  } finally {
    conn.destroy();
    await conn.closed;
  }
});

Deno.test({
  name: "a DIGEST storm from an authenticated neighbour that never reads leaves memory bounded and clients served",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await lineHerd();
  await herd.start("B");
  // 20,000 clients: a full answer is about 1.6 MB of AT lines.
  const lines = Array.from({ length: 20_000 }, (_, i) => `IAMAT storm-${i} +34.068930-118.445127 1700000000.${i}`);
  const replies = await exchange(herd.port("B"), lines.join("\n") + "\n");
  assert.equal(replies.split("\n").filter((line) => line.startsWith("AT ")).length, lines.length);
  const before = await inspectProcess(herd.pid("B"));
  // The neighbour: a child process with A's certificate that asks for B's digest alone 40,000 times (280 KB of
  // requests, 640 MB of answers if each were answered) and then for everything 2,000 times (32 MB of requests, 3 GB of
  // answers if each were answered in full), then stops itself, so it reads nothing more.
  const files = herd.tlsFiles("A")!;
  const script = `
    import tls from "node:tls";
    const socket = tls.connect({
      host: "127.0.0.1", port: ${herd.peerPort("B")}, servername: "B",
      ca: Deno.readTextFileSync(${JSON.stringify(files.ca)}),
      cert: Deno.readTextFileSync(${JSON.stringify(files.cert)}),
      key: Deno.readTextFileSync(${JSON.stringify(files.key)}),
    }, () => {
      socket.write("HELLO A\\n" + "DIGEST\\n".repeat(40000) + ${
    JSON.stringify(`${ZERO_DIGEST}
`)
  }.repeat(2000), () => {
        console.log("sent");
        Deno.kill(Deno.pid, "SIGSTOP");
      });
    });
    socket.on("error", () => {});
    setInterval(() => {}, 1000);`;
  const child = new Deno.Command("deno", {
    args: ["eval", "--no-config", script],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  try {
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let said = "";
    while (!said.includes("sent")) {
      const { value, done } = await reader.read();
      if (done) throw new Error("the storm's process ended before sending");
      said += value;
    }
    reader.releaseLock();
    for (let i = 0; i < 10; i++) {
      const served = performance.now();
      assert.match(await exchange(herd.port("B"), `WHATSAT storm-${i} 10 1\n`), /^AT B /);
      assert.ok(performance.now() - served < 5000, "a client is served during the storm");
    }
    await logLine(herd, "B", /"A" asks to reconcile again too soon; answering with our digest alone/);
    // Closed for the exchanges it keeps starting while its first is answered, for what it leaves unread, or (answers to
    // repeated asks being sent once a turn, they may stay under the unread bound) for its silence, the dialler stopped.
    await logLine(
      herd,
      "B",
      /Closing the link from "A": (it started another exchange while 16 wait for an answer|it leaves what we send unread)|Link from "A" sent nothing/,
    );
    const after = await inspectProcess(herd.pid("B"));
    assert.ok(
      after.rssKb - before.rssKb < 200 * 1024,
      `B's memory grew by ${after.rssKb - before.rssKb} KB under the storm`,
    );
    assert.match(await exchange(herd.port("B"), "IAMAT after.storm +1+1 1700000005\n"), /^AT B /);
  } finally {
    child.kill("SIGKILL");
    await child.status;
    await child.stdout.cancel().catch(() => {});
  }
});

Deno.test({
  name: "a link gets three full reconciliations in a row at least half a second apart (repairs), then one per interval",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  // An interval no test waits out: past the three, every exchange is refused.
  await using herd = await lineHerd({}, { reconcileIntervalMs: 600_000 });
  await herd.start("B");
  assert.match(await exchange(herd.port("B"), "IAMAT held.one +1+1 1700000000\n"), /^AT B /);
  await using probe = await probeAs(herd, "D");
  /** Asks for a full exchange from an empty store: how many records B answers with before its digest. */
  const exchangeRecords = async () => {
    probe.send(`${ZERO_DIGEST}\n`);
    let records = 0;
    for (let line = await probe.nextLine(); !line.startsWith("DIGEST "); line = await probe.nextLine()) {
      // B says PONG on its own when it has been quiet for half a heartbeat, which may fall in a gap.
      if (line === "PONG") continue;
      assert.match(line, /^AT B \S+ held\.one /);
      records++;
    }
    return records;
  };
  // What is limited is time between requests: the gaps are the behaviour under test, not a wait for an event.
  const gaps = [0, 600, 600, 600, 0];
  const answers: number[] = [];
  for (const gapMs of gaps) {
    if (gapMs > 0) await new Promise((resolve) => setTimeout(resolve, gapMs));
    answers.push(await exchangeRecords());
  }
  // Three answered in full; the fourth is past the three (the interval is ten minutes), the fifth too soon after it.
  assert.deepEqual(answers, [1, 1, 1, 0, 0], `records per exchange after gaps of ${gaps.join(", ")} ms`);
  await logLine(herd, "B", /"D" asks to reconcile again too soon; answering with our digest alone/);
});

Deno.test({
  name: "a peer connection that does not finish its handshake in a few seconds is closed and logged",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await lineHerd();
  await herd.start("B");
  // Connects and says nothing: no TLS handshake.
  const silent = net.connect({ host: "127.0.0.1", port: herd.peerPort("B") });
  const started = performance.now();
  const { closedByServer } = await readAll(silent, 15_000);
  assert.ok(closedByServer);
  const ms = performance.now() - started;
  assert.ok(ms < 10_000, `closed after ${ms.toFixed(0)} ms`);
  await logLine(herd, "B", /Refused a peer connection from .*: "no TLS handshake in time"/);
  // Finishes TLS with a good certificate, then never says HELLO.
  const transport = new PeerTransport({ files: herd.tlsFiles("A"), handshakeTimeoutMs: 5000 });
  transport.load();
  const mute = new LineSocket(await transport.dial("127.0.0.1", herd.peerPort("B"), "B"), {
    maxLineBytes: 1024,
    onLines: () => {},
  });
  await mute.closed;
  await logLine(herd, "B", /Refused a peer connection from .*: no HELLO within 5000 ms/);
});

Deno.test({
  name: 'with "peers": { "tls": false } each server warns once at start that its peer port accepts anyone',
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await lineHerd({ tls: false });
  await herd.start("B");
  await waitFor(() => herd.stderr("B").includes("Peer links are plain text"), { what: "B's warning" });
  assert.equal(herd.stderr("B").split("Peer links are plain text").length - 1, 1, "once");
  assert.match(herd.stderr("B"), /Peer links are plain text \(peers\.tls is false in the config\): the peer port /);
  assert.match(herd.stderr("B"), /accepts anyone who connects/);
});
