/**
 * The herd's certificates: what `deno task certs` makes, that five servers
 * starting at once make them once, and that a server takes a renewed
 * certificate without stopping.
 */

import assert from "node:assert/strict";
import * as x509 from "@peculiar/x509";
import { certificateNames, certificateProblems, checkCertificates, makeCertificates } from "../lib/cli/certs.ts";
import { certificateRunArgs, type CertificateRunOptions } from "../lib/cli/launcher.ts";
import { certFiles, type HerdConfig, parseConfig } from "../lib/config/config.ts";
import { PeerTransport } from "../lib/peer/transport.ts";
import { exchange, HERD_TEST_PERMISSIONS, TestHerd } from "./testing/herd.ts";
import { waitFor } from "./testing/wait.ts";

/** A config for a small herd in `dir`, certificates in `dir/certs`. */
function configIn(dir: string): HerdConfig {
  return parseConfig(
    JSON.stringify({
      servers: {
        A: { host: "127.0.0.1", port: 1, peerPort: 2 },
        B: { host: "10.0.0.2", port: 3, peerPort: 4, peerAddress: "b.example:9004" },
        C: { host: "127.0.0.1", port: 5, peerPort: 6 },
      },
      links: [["A", "B"], ["B", "C"]],
      places: { url: "http://127.0.0.1:9/unused" },
      logDir: "logs",
    }),
    `${dir}/herd.config.json`,
  );
}

async function temporaryDir(): Promise<string> {
  return await Deno.makeTempDir({ dir: "/tmp", prefix: "herd-certs-" });
}

Deno.test("certificateNames() names the server and every address its peer port is reached at", () => {
  const config = configIn("/tmp/x");
  assert.deepEqual(certificateNames("A", config.servers.get("A")!), { dns: ["A"], ip: ["127.0.0.1"] });
  assert.deepEqual(certificateNames("B", config.servers.get("B")!), { dns: ["B", "b.example"], ip: ["10.0.0.2"] });
});

Deno.test({
  name: "makeCertificates() makes a CA and, per server, a key and a certificate for both ends of a link, all 0600",
  permissions: { read: ["/tmp"], write: ["/tmp"] },
}, async () => {
  const dir = await temporaryDir();
  try {
    const config = configIn(dir);
    const written = await makeCertificates(config);
    const files = certFiles(config);
    assert.equal(written.length, 2 + 2 * 3);
    for (const path of written) assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600, path);
    assert.equal((await Deno.stat(config.certDir)).mode! & 0o777, 0o700);
    // Private keys: kept out of git wherever the config puts them.
    assert.ok((await Deno.readTextFile(`${config.certDir}/.gitignore`)).split("\n").includes("*"));
    assert.equal((await Deno.stat(`${config.certDir}/.gitignore`)).mode! & 0o777, 0o600);
    const ca = new x509.X509Certificate(await Deno.readTextFile(files.ca));
    assert.equal(await ca.verify({ signatureOnly: true }), true, "the CA signs itself");
    const b = new x509.X509Certificate(await Deno.readTextFile(files.cert("B")));
    assert.match(b.subject, /CN=B/);
    assert.equal(b.issuer, ca.subject);
    assert.equal(await b.verify({ publicKey: ca.publicKey, signatureOnly: true }), true, "B's is signed by the CA");
    const san = b.getExtension(x509.SubjectAlternativeNameExtension)!;
    assert.deepEqual(san.names.items.map((name) => `${name.type}:${name.value}`), [
      "dns:B",
      "dns:b.example",
      "ip:10.0.0.2",
    ]);
    const usage = b.getExtension(x509.ExtendedKeyUsageExtension)!;
    assert.deepEqual([...usage.usages], [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]);
    assert.equal(b.getExtension(x509.BasicConstraintsExtension)!.ca, false);
    // Run again: nothing to make. Renew B: a new key and certificate from the same CA.
    assert.deepEqual(await makeCertificates(config), []);
    const oldKey = await Deno.readTextFile(files.key("B"));
    assert.deepEqual(await makeCertificates(config, { names: ["B"], renew: true }), [files.key("B"), files.cert("B")]);
    assert.notEqual(await Deno.readTextFile(files.key("B")), oldKey);
    const renewed = new x509.X509Certificate(await Deno.readTextFile(files.cert("B")));
    assert.equal(await renewed.verify({ publicKey: ca.publicKey, signatureOnly: true }), true);
    assert.notEqual(renewed.serialNumber, b.serialNumber);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "a garbled certificate or key, or a key that does not go with its certificate, is refused naming the file",
  permissions: { read: ["/tmp"], write: ["/tmp"] },
}, async () => {
  const dir = await temporaryDir();
  try {
    const config = configIn(dir);
    await makeCertificates(config);
    const files = certFiles(config);
    const transport = (cert: string, key: string, ca = files.ca) =>
      new PeerTransport({ files: { ca, cert, key }, handshakeTimeoutMs: 1_000 });
    transport(files.cert("A"), files.key("A")).load();
    const garbage = `${dir}/garbage.pem`;
    await Deno.writeTextFile(garbage, "garbage\n");
    assert.throws(
      () => transport(garbage, files.key("A")).load(),
      new RegExp(
        `^Error: This server's certificate ${garbage} is not a PEM certificate \\(no whole -----BEGIN CERTIFICATE----- ` +
          "\\.\\.\\. -----END CERTIFICATE----- block\\) \\(`deno task certs NAME --renew` remakes",
      ),
    );
    // Cut short (a copy interrupted): its BEGIN line is there, its END line is not.
    const cut = `${dir}/cut.crt`;
    const certText = await Deno.readTextFile(files.cert("A"));
    await Deno.writeTextFile(cut, certText.slice(0, certText.indexOf("-----END")));
    assert.throws(
      () => transport(cut, files.key("A")).load(),
      (error: Error) =>
        error.message.startsWith(`This server's certificate ${cut} is not a PEM certificate (no whole `),
    );
    assert.throws(
      () => transport(files.cert("A"), garbage).load(),
      new RegExp(`^Error: This server's key ${garbage} is not a PEM private key`),
    );
    assert.throws(
      () => transport(files.cert("A"), files.key("A"), garbage).load(),
      new RegExp(`^Error: The herd's CA certificate ${garbage} is not a PEM certificate`),
    );
    // A CA certificate damaged inside its PEM block: renewing a server's certificate would not mend it.
    const damaged = `${dir}/damaged-ca.crt`;
    const caText = await Deno.readTextFile(files.ca);
    const inside = caText.indexOf("\n") + 20;
    await Deno.writeTextFile(damaged, caText.slice(0, inside) + "!!" + caText.slice(inside + 2));
    assert.throws(
      () => transport(files.cert("A"), files.key("A"), damaged).load(),
      (error: Error) =>
        error.message.startsWith(
          `The herd's CA certificate ${damaged} is not a PEM certificate (its PEM block does not hold a certificate) `,
        ) &&
        error.message.endsWith("(restore it from where the CA is kept)"),
    );
    assert.throws(
      () => transport(files.cert("A"), files.key("B")).load(),
      new RegExp(`^Error: This server's key ${files.key("B")} does not go with its certificate ${files.cert("A")}`),
    );
    // A certificate and key of another herd (another CA) are refused too: the neighbours would refuse them.
    const other = await temporaryDir();
    try {
      const otherFiles = certFiles(configIn(other));
      await makeCertificates(configIn(other));
      assert.throws(
        () => transport(otherFiles.cert("A"), otherFiles.key("A")).load(),
        new RegExp(
          `^Error: This server's certificate ${otherFiles.cert("A")} is not signed by the herd's CA ${files.ca}`,
        ),
      );
    } finally {
      await Deno.remove(other, { recursive: true });
    }
    // A reload that finds a key of another server keeps the working pair.
    const key = `${dir}/A-copy.key`;
    await Deno.copyFile(files.key("A"), key);
    const running = transport(files.cert("A"), key);
    running.load();
    await Deno.copyFile(files.key("B"), key);
    assert.throws(() => running.reload(), /does not go with its certificate/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "deno task certs says which server cannot use its files (garbled, a key of another) and how to remake them, exit 1",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  const dir = await temporaryDir();
  try {
    const config = await writtenConfig(dir);
    await makeCertificates(config);
    const files = certFiles(config);
    const certs = (names?: string[]) => certsInChild(config, { names });
    const whole = await certs();
    assert.equal(whole.code, 0, whole.stderr);
    assert.equal(whole.stdout, `Nothing to make: ${config.certDir} is complete\n`);
    await Deno.writeTextFile(files.cert("B"), "garbage\n");
    await Deno.copyFile(files.key("A"), files.key("C"));
    const broken = await certs();
    assert.equal(broken.code, 1);
    assert.equal(broken.stdout, "");
    const lines = broken.stderr.trimEnd().split("\n");
    assert.equal(lines[0], `A server cannot use what is in ${config.certDir}:`);
    assert.equal(lines.length, 3, broken.stderr);
    assert.match(
      lines[1],
      new RegExp(
        `^  This server's certificate ${files.cert("B")} is not a PEM certificate \\(no whole -----BEGIN ` +
          `CERTIFICATE----- \\.\\.\\. -----END CERTIFICATE----- block\\) \\(\`deno task certs B --renew --config ` +
          `${config.path}\` remakes`,
      ),
    );
    assert.match(
      lines[2],
      new RegExp(
        `^  This server's key ${files.key("C")} does not go with its certificate ${
          files.cert("C")
        } .*deno task certs C --renew`,
      ),
    );
    // Only the servers named are looked at; A's files are sound.
    const justA = await certs(["A"]);
    assert.equal(justA.code, 0, justA.stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * A key and a certificate for `name` (at 127.0.0.1) signed by an intermediate CA that `ca` signed, and that
 * certificate then the intermediate's, in PEM: a chain as an operator's own PKI may hand out.
 */
async function chainedCertificate(
  files: { ca: string; caKey: string },
  name: string,
  interValidity?: { notBefore: Date; notAfter: Date },
): Promise<{ chainPem: string; keyPem: string }> {
  const algorithm = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
  const ca = new x509.X509Certificate(await Deno.readTextFile(files.ca));
  const caKey = await crypto.subtle.importKey(
    "pkcs8",
    x509.PemConverter.decodeFirst(await Deno.readTextFile(files.caKey)),
    algorithm,
    false,
    ["sign"],
  );
  const now = Date.now();
  const validity = { notBefore: new Date(now - 60_000), notAfter: new Date(now + 86_400_000) };
  const interKeys = await crypto.subtle.generateKey(algorithm, true, ["sign", "verify"]) as CryptoKeyPair;
  const inter = await x509.X509CertificateGenerator.create({
    serialNumber: "02",
    subject: "CN=intermediate, O=herd",
    issuer: ca.subject,
    ...(interValidity ?? validity),
    signingAlgorithm: algorithm,
    publicKey: interKeys.publicKey,
    signingKey: caKey,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true),
      await x509.AuthorityKeyIdentifierExtension.create(ca),
      await x509.SubjectKeyIdentifierExtension.create(interKeys.publicKey),
    ],
  });
  const keys = await crypto.subtle.generateKey(algorithm, true, ["sign", "verify"]) as CryptoKeyPair;
  const leaf = await x509.X509CertificateGenerator.create({
    serialNumber: "03",
    subject: `CN=${name}, O=herd`,
    issuer: inter.subject,
    ...validity,
    signingAlgorithm: algorithm,
    publicKey: keys.publicKey,
    signingKey: interKeys.privateKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension([{ type: "dns", value: name }, { type: "ip", value: "127.0.0.1" }]),
      await x509.AuthorityKeyIdentifierExtension.create(inter),
    ],
  });
  return {
    chainPem: `${leaf.toString("pem")}\n${inter.toString("pem")}\n`,
    keyPem: x509.PemConverter.encode(await crypto.subtle.exportKey("pkcs8", keys.privateKey), "PRIVATE KEY"),
  };
}

Deno.test({
  name: "a certificate signed by an intermediate CA, its file holding the chain, is taken and links up; " +
    "a chain from another CA is refused",
  permissions: { read: ["/tmp"], write: ["/tmp"], net: ["127.0.0.1"] },
}, async () => {
  const dir = await temporaryDir();
  const other = await temporaryDir();
  const servers: { close(): void }[] = [];
  try {
    const config = configIn(dir);
    await makeCertificates(config);
    const files = certFiles(config);
    const { chainPem, keyPem } = await chainedCertificate(files, "A");
    const chained = { ca: files.ca, cert: `${dir}/A-chain.crt`, key: `${dir}/A-chain.key`, name: "A" };
    await Deno.writeTextFile(chained.cert, chainPem);
    await Deno.writeTextFile(chained.key, keyPem);
    // TLS sends the chain: the neighbours, which hold the herd's CA alone, take it (A and C, both ways).
    const a = new PeerTransport({ files: chained, handshakeTimeoutMs: 3_000 });
    a.load();
    const c = new PeerTransport({
      files: { ca: files.ca, cert: files.cert("C"), key: files.key("C"), name: "C" },
      handshakeTimeoutMs: 3_000,
    });
    c.load();
    const proven: string[] = [];
    const refused: string[] = [];
    const listen = async (transport: PeerTransport) => {
      const server = await transport.listen({
        host: "127.0.0.1",
        port: 0,
        maxConnections: 8,
        onPeer: ({ socket, provenName }) => {
          proven.push(String(provenName));
          socket.destroy();
        },
        onRefused: (_address, reason) => refused.push(reason),
      });
      servers.push(server);
      return (server.address() as { port: number }).port;
    };
    const [aPort, cPort] = [await listen(a), await listen(c)];
    (await c.dial("127.0.0.1", aPort, "A")).destroy();
    (await a.dial("127.0.0.1", cPort, "C")).destroy();
    await waitFor(() => proven.length === 2, { what: "both links' acceptors to prove the dialler" });
    assert.deepEqual(proven.toSorted(), ["A", "C"], refused.join("; "));
    // The intermediate CA out of its dates (TLS would refuse the chain): refused at load, naming it and the file.
    const expired = await chainedCertificate(files, "A", {
      notBefore: new Date(Date.now() - 10 * 86_400_000),
      notAfter: new Date(Date.now() - 86_400_000),
    });
    const expiredFiles = { ...chained, cert: `${dir}/A-expired-chain.crt`, key: `${dir}/A-expired-chain.key` };
    await Deno.writeTextFile(expiredFiles.cert, expired.chainPem);
    await Deno.writeTextFile(expiredFiles.key, expired.keyPem);
    assert.throws(
      () => new PeerTransport({ files: expiredFiles, handshakeTimeoutMs: 1 }).load(),
      new RegExp(
        `^Error: The intermediate CA certificate "CN=intermediate, O=herd" in this server's certificate file ` +
          `${expiredFiles.cert} expired on .*: its neighbours would refuse the chain`,
      ),
    );
    // The same chain checked against another herd's CA: refused, naming the file.
    await makeCertificates(configIn(other));
    assert.throws(
      () =>
        new PeerTransport({ files: { ...chained, ca: certFiles(configIn(other)).ca }, handshakeTimeoutMs: 1 }).load(),
      new RegExp(`^Error: This server's certificate ${chained.cert} is not signed by the herd's CA`),
    );
  } finally {
    for (const server of servers) server.close();
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(other, { recursive: true });
  }
});

Deno.test({
  name: "a certificate of another server, an expired one, one not yet valid, or one an expired CA signed is refused",
  permissions: { read: ["/tmp"], write: ["/tmp"] },
}, async () => {
  const dir = await temporaryDir();
  try {
    const config = configIn(dir);
    const files = certFiles(config);
    const day = 86_400_000;
    const transport = (name: string, cert = files.cert(name), key = files.key(name)) =>
      new PeerTransport({ files: { ca: files.ca, cert, key, name }, handshakeTimeoutMs: 1_000 });
    await makeCertificates(config);
    transport("A").load();
    assert.deepEqual(await checkCertificates(config), { problems: [], notes: [] });
    // B's certificate and key put in A's place (an audit's: A started, and no neighbour would link to it).
    assert.throws(
      () => transport("A", files.cert("B"), files.key("B")).load(),
      new RegExp(`^Error: This server's certificate ${files.cert("B")} is "B"'s, not "A"'s: its neighbours would`),
    );
    // Made 826 days ago: it expired yesterday (server certificates last 825 days).
    await makeCertificates(config, { names: ["A"], renew: true, now: Date.now() - 826 * day });
    assert.throws(
      () => transport("A").load(),
      new RegExp(`^Error: This server's certificate ${files.cert("A")} expired on `),
    );
    const { problems } = await checkCertificates(config);
    assert.equal(problems.length, 1);
    assert.match(problems[0], /expired on .* \(`deno task certs A --renew --config .*` remakes/);
    // Made tomorrow (this host's clock behind the one that made it).
    await makeCertificates(config, { names: ["A"], renew: true, now: Date.now() + day });
    assert.throws(() => transport("A").load(), /is not valid before .* \(this host's clock says .*: is it right\?\)$/);
    // Made 810 days ago: usable, and both the server and the certificates task say it expires within 30 days.
    await makeCertificates(config, { names: ["A"], renew: true, now: Date.now() - 810 * day });
    const check = transport("A");
    check.load();
    const left = (check.expiry!.notAfter.getTime() - Date.now()) / day;
    assert.ok(left > 14 && left < 16, `${left} days left`);
    const { notes } = await checkCertificates(config);
    assert.equal(notes.length, 1);
    assert.match(notes[0], new RegExp(`^This server's certificate ${files.cert("A")} expires at .*, in 14 days: `));
    // The CA itself made 3,700 days ago (CAs last 3,650): every certificate it signed is refused, whatever its own dates.
    const old = configIn(`${dir}/old`);
    await makeCertificates(old, { now: Date.now() - 3_700 * day });
    await makeCertificates(old, { names: ["A"], renew: true });
    const oldFiles = certFiles(old);
    const oldTransport = () =>
      new PeerTransport({
        files: { ca: oldFiles.ca, cert: oldFiles.cert("A"), key: oldFiles.key("A"), name: "A" },
        handshakeTimeoutMs: 1_000,
      });
    assert.throws(
      () => oldTransport().load(),
      new RegExp(`^Error: The herd's CA certificate ${oldFiles.ca} that signed this server's certificate expired on `),
    );
    // The CA renewed with its own key, after the expired one in ca.crt: the certificate is taken through the renewed.
    const algorithm = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
    const expiredCa = new x509.X509Certificate(await Deno.readTextFile(oldFiles.ca));
    const privateKey = await crypto.subtle.importKey(
      "pkcs8",
      x509.PemConverter.decodeFirst(await Deno.readTextFile(oldFiles.caKey)),
      algorithm,
      false,
      ["sign"],
    );
    const renewedCa = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: "0102",
      name: expiredCa.subject,
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 365 * day),
      signingAlgorithm: algorithm,
      keys: { privateKey, publicKey: await expiredCa.publicKey.export(algorithm, ["verify"]) },
      extensions: [new x509.BasicConstraintsExtension(true, 0, true)],
    });
    await Deno.writeTextFile(oldFiles.ca, expiredCa.toString("pem") + "\n" + renewedCa.toString("pem") + "\n");
    const renewed = oldTransport();
    renewed.load();
    assert.equal(renewed.expiry!.notAfter.getTime(), renewedCa.notAfter.getTime());
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "a certDir that is a file is said to be no directory",
  permissions: { read: ["/tmp"], write: ["/tmp"] },
}, async () => {
  const dir = await temporaryDir();
  try {
    const config = configIn(dir);
    // An operator audit's: the OS's words about a path under it ("Not a directory (os error 20): stat '.../ca.crt'").
    await Deno.writeTextFile(config.certDir, "not a directory");
    await assert.rejects(
      makeCertificates(config),
      (error: Error) => error.message === `The certificate directory ${config.certDir} is not a directory`,
    );
    assert.equal(await Deno.readTextFile(config.certDir), "not a directory");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "a host that holds its certificates but not the CA's key checks them, and says where to make missing ones",
  permissions: { read: ["/tmp"], write: ["/tmp"] },
}, async () => {
  const dir = await temporaryDir();
  try {
    const config = configIn(dir);
    const files = certFiles(config);
    await makeCertificates(config);
    // As the README says to set up another host: ca.crt and the server's own files, no ca.key.
    await Deno.remove(files.caKey);
    assert.deepEqual(await makeCertificates(config), [], "nothing to make, and no CA key read");
    assert.deepEqual(await makeCertificates(config, { names: ["A"] }), []);
    await Deno.remove(files.cert("C"));
    await assert.rejects(
      makeCertificates(config),
      new RegExp(`^Error: Cannot make C's certificate: the CA's key ${files.caKey} is not on this host`),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "renewing signs with the CA certificate in ca.crt that goes with ca.key, and refuses a ca.key that goes with none",
  permissions: { read: ["/tmp"], write: ["/tmp"] },
}, async () => {
  const [dir, other] = [await temporaryDir(), await temporaryDir()];
  try {
    const [config, otherConfig] = [configIn(dir), configIn(other)];
    await makeCertificates(config);
    await makeCertificates(otherConfig);
    const [files, otherFiles] = [certFiles(config), certFiles(otherConfig)];
    const [oldCa, newCa] = [await Deno.readTextFile(files.ca), await Deno.readTextFile(otherFiles.ca)];
    // Mid-rotation: ca.crt trusts both CAs, the old one first, and ca.key is the new CA's.
    await Deno.writeTextFile(files.ca, oldCa + newCa);
    await Deno.copyFile(otherFiles.caKey, files.caKey);
    await makeCertificates(config, { names: ["A"], renew: true });
    const renewed = new x509.X509Certificate(await Deno.readTextFile(files.cert("A")));
    const newRoot = new x509.X509Certificate(newCa);
    assert.equal(await renewed.verify({ publicKey: newRoot.publicKey, signatureOnly: true }), true);
    // The CAs have the same name (the same servers'), so it is the key identifier that tells which CA signed it.
    assert.equal(
      renewed.getExtension(x509.AuthorityKeyIdentifierExtension)?.keyId,
      newRoot.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId,
    );
    assert.deepEqual(await certificateProblems(config, ["A"]), []);
    // A ca.key of neither CA in ca.crt (one left from before a rotation, say): nothing is signed with it.
    const third = configIn(`${dir}/third`);
    await makeCertificates(third);
    await Deno.copyFile(certFiles(third).caKey, files.caKey);
    const before = await Deno.readTextFile(files.cert("A"));
    await assert.rejects(
      makeCertificates(config, { names: ["A"], renew: true }),
      new RegExp(`^Error: The CA's key ${files.caKey} goes with no certificate in ${files.ca}`),
    );
    assert.equal(await Deno.readTextFile(files.cert("A")), before, "A's certificate is left as it was");
  } finally {
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(other, { recursive: true });
  }
});

Deno.test({
  name: "five servers starting at once make the certificates once, and each finds its own",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  const dir = await temporaryDir();
  try {
    const config = await writtenConfig(dir);
    const runs = await Promise.all(Array.from({ length: 5 }, () =>
      new Deno.Command("deno", {
        args: certificateRunArgs(config, { ifMissing: true }),
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output()));
    const said = runs.map((run) => new TextDecoder().decode(run.stdout));
    for (const [index, run] of runs.entries()) {
      assert.equal(run.code, 0, `run ${index}: ${new TextDecoder().decode(run.stderr)}`);
    }
    assert.equal(said.filter((text) => text.includes("Made the herd's certificates")).length, 1, said.join("|"));
    const files = certFiles(config);
    const ca = new x509.X509Certificate(await Deno.readTextFile(files.ca));
    for (const name of config.servers.keys()) {
      const cert = new x509.X509Certificate(await Deno.readTextFile(files.cert(name)));
      assert.equal(await cert.verify({ publicKey: ca.publicKey, signatureOnly: true }), true, name);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "a server takes a renewed certificate on SIGHUP, without stopping, and new links use it",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  await using herd = await TestHerd.create({
    placesUrl: "http://127.0.0.1:9/unused",
    names: ["A", "B"],
    links: [["A", "B"]],
    places: { provider: "offline" },
  });
  await herd.startAll();
  const files = certFiles(herd.config);
  const before = await Deno.readTextFile(files.cert("B"));
  // Made as if 815 days ago: 10 days left of its 825, which B warns of once it has taken it.
  await makeCertificates(herd.config, { names: ["B"], renew: true, now: Date.now() - 815 * 86_400_000 });
  assert.notEqual(await Deno.readTextFile(files.cert("B")), before);
  assert.doesNotMatch(await herd.log("B"), /expires at/, "the certificate B started with has years left");
  herd.signal("B", "SIGHUP");
  await waitFor(async () => /"B" reloaded its TLS certificates/.test(await herd.log("B")), {
    what: "B to reload its certificates",
  });
  await waitFor(
    async () => /\[WRN\] .*This server's certificate .*B\.crt" expires at ".*", in 9 days: /.test(await herd.log("B")),
    {
      what: "B to warn that its certificate expires soon",
    },
  );
  // B kept running; A starts again and dials B, whose new certificate it checks against the same CA.
  await herd.stop("A", "SIGKILL");
  await herd.start("A");
  await herd.waitConverged(["A", "B"]);
  assert.match(await exchange(herd.port("B"), "IAMAT renewed +1+1 1700000000\n"), /^AT B /);
  await waitFor(async () => (await exchange(herd.port("A"), "WHATSAT renewed 1 0\n")).startsWith("AT B "), {
    what: "B's record to reach A over the link B's new certificate serves",
  });
});

/** Writes a config for A, B, C in `dir` (certificates in `certDir`, relative to it) and loads it. */
async function writtenConfig(dir: string, certDir = "certs"): Promise<HerdConfig> {
  const text = JSON.stringify({
    servers: {
      A: { host: "127.0.0.1", port: 1, peerPort: 2 },
      B: { host: "127.0.0.1", port: 3, peerPort: 4 },
      C: { host: "127.0.0.1", port: 5, peerPort: 6 },
    },
    links: [["A", "B"], ["B", "C"]],
    places: { url: "http://127.0.0.1:9/unused" },
    logDir: "logs",
    certDir,
  });
  await Deno.writeTextFile(`${dir}/herd.config.json`, text);
  return parseConfig(text, `${dir}/herd.config.json`);
}

/** Runs `main.ts make-certs --if-missing` as `deno task herd` (no names) or `serve NAME` do before starting. */
function ensureInChild(config: HerdConfig, names?: string[]) {
  return certsInChild(config, { names, ifMissing: true });
}

/** Runs `main.ts make-certs` (what `deno task certs` runs) with `options`: its exit code, output and time. */
async function certsInChild(config: HerdConfig, options: CertificateRunOptions) {
  const started = performance.now();
  const run = await new Deno.Command("deno", {
    args: certificateRunArgs(config, options),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: run.code,
    stdout: decoder.decode(run.stdout),
    stderr: decoder.decode(run.stderr),
    ms: performance.now() - started,
  };
}

Deno.test({
  name: "the first start makes certDir with its missing parents, the directory itself 0700",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  const dir = await temporaryDir();
  try {
    const config = await writtenConfig(dir, "deep/er/certs");
    const run = await ensureInChild(config);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /Made the herd's certificates in .*\/deep\/er\/certs \(first start\)/);
    assert.equal((await Deno.stat(config.certDir)).mode! & 0o777, 0o700);
    assert.ok((await Deno.readTextFile(`${config.certDir}/.gitignore`)).split("\n").includes("*"), "kept out of git");
    assert.equal((await Deno.stat(`${dir}/deep/er`)).mode! & 0o755, 0o755, "a parent gets the usual mode");
    for (const name of ["A", "B", "C"]) assert.ok((await Deno.stat(certFiles(config).cert(name))).isFile, name);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "a start that finds certDir lacking a server's files makes them at once with ca.key, and refuses at once without it",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  const dir = await temporaryDir();
  try {
    const config = await writtenConfig(dir);
    const files = certFiles(config);
    await makeCertificates(config, { names: ["A", "B"] });
    // C is new to the herd: with the CA's key at hand, its files are made as `deno task certs` would.
    const made = await ensureInChild(config);
    assert.equal(made.code, 0, made.stderr);
    assert.match(made.stdout, /Made the missing certificates, as `deno task certs` would: .*C\.key, .*C\.crt/);
    const ca = new x509.X509Certificate(await Deno.readTextFile(files.ca));
    const c = new x509.X509Certificate(await Deno.readTextFile(files.cert("C")));
    assert.equal(await c.verify({ publicKey: ca.publicKey, signatureOnly: true }), true);
    // Another host of the herd: the CA's certificate and its own server's files, no ca.key.
    await Deno.remove(files.caKey);
    await Deno.remove(files.cert("C"));
    await Deno.remove(files.key("C"));
    const own = await ensureInChild(config, ["A"]);
    assert.equal(own.code, 0, `serve A needs only A's files: ${own.stderr}`);
    const refused = await ensureInChild(config);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /lacks .*C\.crt, .*C\.key, and the CA's key .*ca\.key is not there to make them/);
    // The directory named once, by the message itself.
    assert.ok(refused.stderr.startsWith(`The certificate directory ${config.certDir} lacks `), refused.stderr);
    // With this herd's config named: the project's own is another herd.
    assert.ok(
      refused.stderr.includes(`run \`deno task certs --config ${config.path}\` where ca.key is kept`),
      refused.stderr,
    );
    assert.ok(refused.ms < 10_000, `refused at once, not after a wait: ${refused.ms} ms`);
    assert.equal(refused.stderr.trim().split("\n").length, 1, refused.stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "two servers new to the herd starting at once each get their certificate from the CA in certDir",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  const dir = await temporaryDir();
  try {
    const config = await writtenConfig(dir);
    await makeCertificates(config, { names: ["A"] });
    const runs = await Promise.all([ensureInChild(config, ["B"]), ensureInChild(config, ["C"])]);
    for (const run of runs) assert.equal(run.code, 0, run.stderr);
    const files = certFiles(config);
    const ca = new x509.X509Certificate(await Deno.readTextFile(files.ca));
    for (const name of ["B", "C"]) {
      const cert = new x509.X509Certificate(await Deno.readTextFile(files.cert(name)));
      assert.equal(await cert.verify({ publicKey: ca.publicKey, signatureOnly: true }), true, name);
    }
    await assert.rejects(Deno.stat(`${config.certDir}/.making.lock`), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "a lock left in certDir by a process that died making certificates is taken over, not waited out",
  permissions: HERD_TEST_PERMISSIONS,
}, async () => {
  const dir = await temporaryDir();
  try {
    const config = await writtenConfig(dir);
    await makeCertificates(config, { names: ["A", "B"] });
    // As a Ctrl-C during a first start leaves it: a minute old, C's files still to make.
    const lock = `${config.certDir}/.making.lock`;
    await Deno.writeTextFile(lock, "12345\n", { mode: 0o600 });
    const minuteAgo = new Date(Date.now() - 60_000);
    await Deno.utime(lock, minuteAgo, minuteAgo);
    const made = await ensureInChild(config);
    assert.equal(made.code, 0, made.stderr);
    assert.match(made.stdout, /Made the missing certificates, as `deno task certs` would: .*C\.key, .*C\.crt/);
    await assert.rejects(Deno.stat(lock), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
