/**
 * The herd's certificates: a CA of its own, and for each server a key and a
 * certificate signed by that CA, naming the server (subject CN, and a DNS
 * name) and the addresses its peer port is dialled at. Made with
 * `@peculiar/x509` on WebCrypto (ECDSA P-256), into `certDir`: `ca.crt`,
 * `ca.key`, `<Name>.crt`, `<Name>.key`, every file 0600. Each certificate
 * serves both ends of a link (server and client authentication).
 */

import { type CertFiles, certFiles, type HerdConfig, type ServerConfig, taskCommand } from "../config/config.ts";
import { createPrivateKey, X509Certificate } from "node:crypto";
import { CERT_WARN_DAYS, checkPeerCredentials, pemCertificates } from "../peer/transport.ts";
import { ignoreInGit } from "../private_files.ts";

/** How long the herd's CA is valid, in days. */
const _CA_DAYS = 3650;
/** How long a server's certificate is valid, in days. */
const _SERVER_DAYS = 825;
/** How long a server waits for another process that is making the certificates, in milliseconds. */
const _WAIT_MS = 20_000;

const _ALGORITHM = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
const _IPV4 = /^[0-9]{1,3}(?:\.[0-9]{1,3}){3}$/;

/** The names and addresses a server's certificate is valid for: its name, its host, and where it is dialled. */
export function certificateNames(name: string, server: ServerConfig): { dns: string[]; ip: string[] } {
  const dns = new Set([name]);
  const ip = new Set<string>();
  for (const host of [server.host, server.peerDialHost]) {
    if (_IPV4.test(host) || host.includes(":")) ip.add(host.replace(/^\[|\]$/g, ""));
    else dns.add(host);
  }
  return { dns: [...dns], ip: [...ip] };
}

function _serial(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[0] &= 0x7f; // a positive serial number
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

async function _writePrivate(path: string, text: string): Promise<void> {
  // Written whole under a temporary name, then renamed: a reader never sees half a file.
  const temporary = `${path}.${crypto.randomUUID()}.tmp`;
  await Deno.writeTextFile(temporary, text, { mode: 0o600 });
  await Deno.chmod(temporary, 0o600);
  await Deno.rename(temporary, path);
}

async function _exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/** A loaded or new CA: its certificate and signing key. */
interface _Ca {
  // deno-lint-ignore no-explicit-any
  cert: any;
  key: CryptoKey;
}

// The library is large (about a second to import): only the processes that make certificates load it.
async function _x509() {
  return await import("@peculiar/x509");
}

async function _newCa(herdName: string, now: number): Promise<{ ca: _Ca; keyPem: string }> {
  const x509 = await _x509();
  const keys = await crypto.subtle.generateKey(_ALGORITHM, true, ["sign", "verify"]) as CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: _serial(),
    name: `CN=${herdName} CA, O=herd`,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + _CA_DAYS * 86_400_000),
    signingAlgorithm: _ALGORITHM,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const keyPem = x509.PemConverter.encode(await crypto.subtle.exportKey("pkcs8", keys.privateKey), "PRIVATE KEY");
  return { ca: { cert, key: keys.privateKey }, keyPem };
}

/**
 * The CA to sign with: `ca.key`, and the certificate of `ca.crt` (which may
 * hold several during a CA rotation) that goes with it. Throws when none
 * does (a `ca.key` left from before a rotation, say): a certificate signed
 * with it would be refused by every neighbour.
 */
async function _loadCa(files: CertFiles): Promise<_Ca> {
  const x509 = await _x509();
  const keyPem = await Deno.readTextFile(files.caKey);
  let privateKey;
  try {
    privateKey = createPrivateKey(keyPem);
  } catch (error) {
    throw new Error(`The CA's key ${files.caKey} is not a PEM private key: ${(error as Error).message}`);
  }
  const pem = pemCertificates(await Deno.readTextFile(files.ca)).find((block) => {
    try {
      return new X509Certificate(block).checkPrivateKey(privateKey);
    } catch {
      return false;
    }
  });
  if (pem === undefined) {
    throw new Error(
      `The CA's key ${files.caKey} goes with no certificate in ${files.ca}: put the key of a CA ${files.ca} holds ` +
        "beside it (after a CA rotation, the new CA's ca.key)",
    );
  }
  const cert = new x509.X509Certificate(pem);
  const der = x509.PemConverter.decodeFirst(keyPem);
  const key = await crypto.subtle.importKey("pkcs8", der, _ALGORITHM, false, ["sign"]);
  return { cert, key };
}

async function _serverCertificate(
  ca: _Ca,
  name: string,
  server: ServerConfig,
  now: number,
): Promise<{ certPem: string; keyPem: string }> {
  const x509 = await _x509();
  const keys = await crypto.subtle.generateKey(_ALGORITHM, true, ["sign", "verify"]) as CryptoKeyPair;
  const { dns, ip } = certificateNames(name, server);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: _serial(),
    subject: `CN=${name}, O=herd`,
    issuer: ca.cert.subject,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + _SERVER_DAYS * 86_400_000),
    signingAlgorithm: _ALGORITHM,
    publicKey: keys.publicKey,
    signingKey: ca.key,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension([
        ...dns.map((value) => ({ type: "dns" as const, value })),
        ...ip.map((value) => ({ type: "ip" as const, value })),
      ]),
      await x509.AuthorityKeyIdentifierExtension.create(ca.cert),
    ],
  });
  return {
    certPem: cert.toString("pem") + "\n",
    keyPem: x509.PemConverter.encode(await crypto.subtle.exportKey("pkcs8", keys.privateKey), "PRIVATE KEY"),
  };
}

/** Options for {@linkcode makeCertificates}. */
export interface MakeCertificatesOptions {
  /** The servers to make (or remake) a key and certificate for; every server of the config by default. */
  names?: string[];
  /** Remake the servers' keys and certificates even where they exist (rotation); the CA is kept. */
  renew?: boolean;
  /** The time (epoch ms) the certificates are made valid from, less a minute; now by default. Tests make old ones. */
  now?: number;
}

/**
 * Makes the herd's certificates in `certDir`: the CA if there is none, and
 * a key and certificate for each server that lacks one (or for the named
 * servers, with `renew`). Returns the files written.
 */
export async function makeCertificates(config: HerdConfig, options: MakeCertificatesOptions = {}): Promise<string[]> {
  const files = certFiles(config);
  const now = options.now ?? Date.now();
  await _makeCertDir(config.certDir);
  const written: string[] = [];
  const wanted: [string, ServerConfig][] = [];
  for (const name of options.names ?? [...config.servers.keys()]) {
    const server = config.servers.get(name);
    if (server === undefined) {
      throw new RangeError(`Unknown server "${name}": expected one of ${[...config.servers.keys()].join(", ")}`);
    }
    if (!options.renew && await _exists(files.cert(name)) && await _exists(files.key(name))) continue;
    wanted.push([name, server]);
  }
  let ca: _Ca | undefined;
  if (!await _exists(files.ca)) {
    const made = await _newCa(_herdLabel(config), now);
    await _writePrivate(files.caKey, made.keyPem);
    await _writePrivate(files.ca, made.ca.cert.toString("pem") + "\n");
    written.push(files.caKey, files.ca);
    ca = made.ca;
  } else if (wanted.length > 0) {
    // Only to sign: a host that holds every certificate it needs has no CA key, and needs none (README).
    if (!await _exists(files.caKey)) {
      throw new Error(
        `Cannot make ${wanted.map(([name]) => `${name}'s`).join(", ")} certificate: the CA's key ${files.caKey} is ` +
          "not on this host (it stays on the machine that made the certificates: make them there, and copy them here)",
      );
    }
    ca = await _loadCa(files);
  }
  for (const [name, server] of wanted) {
    const { certPem, keyPem } = await _serverCertificate(ca!, name, server, now);
    // The key first: a server that reads a new certificate then finds the key that goes with it.
    await _writePrivate(files.key(name), keyPem);
    await _writePrivate(files.cert(name), certPem);
    written.push(files.key(name), files.cert(name));
  }
  return written;
}

/**
 * What is wrong with the certificates in `certDir` of the servers `names`
 * (every server by default), as a server would find at start: a garbled CA,
 * certificate or key, a certificate the CA did not sign, or a key that does
 * not go with its certificate; one message per server, empty when all is
 * well. Missing files are {@linkcode makeCertificates}'s to make.
 */
export async function certificateProblems(config: HerdConfig, names?: string[]): Promise<string[]> {
  return (await checkCertificates(config, names)).problems;
}

/**
 * {@linkcode certificateProblems}, and a note for each server whose
 * certificate (or the CA that signed it) expires within
 * {@linkcode CERT_WARN_DAYS} of `now`.
 */
export async function checkCertificates(
  config: HerdConfig,
  names?: string[],
  now: Date = new Date(),
): Promise<{ problems: string[]; notes: string[] }> {
  const files = certFiles(config);
  const problems: string[] = [];
  const notes: string[] = [];
  for (const name of names ?? [...config.servers.keys()]) {
    const paths = {
      ca: files.ca,
      cert: files.cert(name),
      key: files.key(name),
      name,
      renewCommand: taskCommand(config, "certs", `${name} --renew`),
    };
    try {
      const [ca, cert, key] = await Promise.all(
        [paths.ca, paths.cert, paths.key].map((path) => Deno.readTextFile(path)),
      );
      const { notAfter, expiring, remedy } = checkPeerCredentials({ ca, cert, key }, paths, now);
      const days = Math.floor((notAfter.getTime() - now.getTime()) / 86_400_000);
      if (days < CERT_WARN_DAYS) {
        notes.push(`${expiring} expires at ${notAfter.toISOString()}, in ${days} days: ${remedy}`);
      }
    } catch (error) {
      problems.push((error as Error).message);
    }
  }
  return { problems, notes };
}

function _herdLabel(config: HerdConfig): string {
  return [...config.servers.keys()].slice(0, 3).join("-") + (config.servers.size > 3 ? "-..." : "");
}

/** What {@linkcode ensureCertificates} did. */
export interface EnsureResult {
  /** `present`: nothing was missing; `made`: this process made what was; `waited`: another process made it. */
  outcome: "present" | "made" | "waited";
  /** The files this process wrote: the CA's among them on first start. */
  written: string[];
}

/** The name of the file that says a process is making certificates in `certDir`; the others wait for it. */
const _LOCK = ".making.lock";
/**
 * A lock older than this, in milliseconds, was left by a process that died
 * while making certificates (Ctrl-C on a first start, say): making them takes
 * well under a second. It is taken over rather than waited out.
 */
const _STALE_LOCK_MS = 10_000;

/**
 * Creates `certDir`, mode 0700, and any parent it lacks (with the process's
 * default mode), with a `.gitignore` of `*` (it holds private keys).
 */
async function _makeCertDir(dir: string): Promise<void> {
  try {
    await Deno.mkdir(dir, { mode: 0o700 });
  } catch (error) {
    if (error instanceof Deno.errors.AlreadyExists) {
      if (!(await Deno.stat(dir)).isDirectory) throw new Error(`The certificate directory ${dir} is not a directory`);
      return;
    }
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    // A parent is missing. The permission flags name certDir alone, and a recursive mkdir of it makes its parents too.
    await Deno.mkdir(dir, { recursive: true });
    await Deno.chmod(dir, 0o700);
  }
  ignoreInGit(dir);
}

async function _missing(paths: string[]): Promise<string[]> {
  const missing: string[] = [];
  for (const path of paths) if (!await _exists(path)) missing.push(path);
  return missing;
}

/**
 * Refuses at once, saying why and what to do, to make certificates where it
 * cannot be done as `deno task certs` would: a server certificate needs the
 * CA's key, and a new CA would not have signed the certificates already there.
 */
async function _checkCanMake(config: HerdConfig, missing: string[]): Promise<void> {
  const files = certFiles(config);
  const lacks = `The certificate directory ${config.certDir} lacks ${missing.join(", ")}`;
  const caCert = await _exists(files.ca);
  const caKey = await _exists(files.caKey);
  if (caCert && !caKey) {
    throw new Error(
      `${lacks}, and the CA's key ${files.caKey} is not there to make them: run \`${taskCommand(config, "certs")}\` ` +
        "where ca.key is kept and copy the files here",
    );
  }
  if (caCert) return;
  const others = await _existing(config);
  if (caKey || others.length > 0) {
    throw new Error(
      `${lacks}, and holds ${[...(caKey ? [files.caKey] : []), ...others].join(", ")} without the CA's ` +
        `certificate ${files.ca}: restore it, or remove the directory to start over`,
    );
  }
}

/** The servers' certificate and key files that are in `certDir`. */
async function _existing(config: HerdConfig): Promise<string[]> {
  const files = certFiles(config);
  const found: string[] = [];
  for (const name of config.servers.keys()) {
    for (const path of [files.cert(name), files.key(name)]) if (await _exists(path)) found.push(path);
  }
  return found;
}

/**
 * Makes what the servers `names` (every server by default) need in
 * `certDir` and is not there, as `deno task certs` would: on first start the
 * directory (and its parents), the CA and every server's key and
 * certificate; later, a missing server's, signed with the CA's key when it is
 * in `certDir` (refused at once, saying what to do, when it is not). Safe
 * when several processes start at once: one makes them, the others wait
 * until their files are there.
 */
export async function ensureCertificates(config: HerdConfig, names?: string[]): Promise<EnsureResult> {
  const files = certFiles(config);
  const wanted = names ?? [...config.servers.keys()];
  const needed = [files.ca, ...wanted.flatMap((name) => [files.cert(name), files.key(name)])];
  await _makeCertDir(config.certDir);
  const lock = `${config.certDir}/${_LOCK}`;
  const deadline = Date.now() + _WAIT_MS;
  for (let waited = false;; waited = true) {
    if ((await _missing(needed)).length === 0) return { outcome: waited ? "waited" : "present", written: [] };
    try {
      await Deno.writeTextFile(lock, `${Deno.pid}\n`, { createNew: true, mode: 0o600 });
    } catch (error) {
      if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
      // Another process is making certificates: once it is done, ours are there, or it is our turn.
      await _waitWhileLocked(config, needed, lock, deadline);
      continue;
    }
    try {
      const missing = await _missing(needed);
      if (missing.length === 0) return { outcome: "waited", written: [] };
      await _checkCanMake(config, missing);
      // With a new CA, every server's: a later start of another server then finds its own.
      const written = await makeCertificates(config, { names: await _exists(files.ca) ? wanted : undefined });
      return { outcome: "made", written };
    } finally {
      await Deno.remove(lock).catch(() => {});
    }
  }
}

/**
 * Takes a stale lock (see {@linkcode _STALE_LOCK_MS}) away: renamed first, so
 * of several processes finding it stale one gets it; one that got a fresh
 * lock (taken again meanwhile) puts it back. Returns whether it was taken.
 */
async function _takeStaleLock(lock: string): Promise<boolean> {
  const stale = (info: Deno.FileInfo) => Date.now() - (info.mtime?.getTime() ?? Date.now()) > _STALE_LOCK_MS;
  const info = await Deno.stat(lock).catch(() => undefined);
  if (info === undefined || !stale(info)) return false;
  const aside = `${lock}.${Deno.pid}`;
  try {
    await Deno.rename(lock, aside);
  } catch {
    return false; // another process took it first
  }
  if (stale(await Deno.stat(aside))) {
    await Deno.remove(aside).catch(() => {});
    return true;
  }
  await Deno.rename(aside, lock).catch(() => {});
  return false;
}

/** Waits until the lock is gone or `needed` is all there; throws, saying what to do, past the deadline. */
async function _waitWhileLocked(config: HerdConfig, needed: string[], lock: string, deadline: number): Promise<void> {
  while (await _exists(lock) && (await _missing(needed)).length > 0) {
    if (await _takeStaleLock(lock)) return;
    if (Date.now() > deadline) {
      throw new Error(
        `The certificate directory ${config.certDir} lacks ${(await _missing(needed)).join(", ")}, and another ` +
          `process has been making certificates there for ${_WAIT_MS / 1000} s: if none is, remove ${lock}, or ` +
          `run \`${taskCommand(config, "certs")}\` to make what is missing`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
