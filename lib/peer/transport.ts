/**
 * The sockets of peer links: mutually authenticated TLS by default, plain
 * TCP only when the config says `"peers": { "tls": false }`. Both ends use
 * `node:tls` (`node:net` in plain text), whose sockets can turn Nagle off
 * (Deno's own TLS sockets cannot, which stalled bursts of batches for tens
 * of milliseconds) and whose server can ask for and check the dialler's
 * certificate (`Deno.listenTls` cannot).
 *
 * With TLS, the dialler checks that the acceptor's certificate, signed by
 * the herd's CA, names the neighbour it meant to reach (the server name it
 * asks for); the acceptor checks that the dialler's certificate is signed
 * by the CA and tells the link which server it names, so the link can hold
 * the dialler's `HELLO` to it. Nothing a dialler sends reaches the link
 * before its certificate is verified.
 */

import { createPrivateKey, X509Certificate } from "node:crypto";
import net from "node:net";
import tls from "node:tls";

/** The files a server's peer links use: the herd's CA, and its own certificate and key. */
export interface PeerTlsFiles {
  /** The CA certificates (PEM; several during a CA rotation). */
  ca: string;
  /** This server's certificate (PEM). */
  cert: string;
  /** This server's key (PEM). */
  key: string;
  /** The server they are for, named in what an error says to do. */
  name?: string;
  /** The command that remakes the server's key and certificate, as an error says it (`deno task certs NAME --renew`). */
  renewCommand?: string;
}

/** The contents of {@linkcode PeerTlsFiles}: the CA certificates, the server's certificate and its key, in PEM. */
export interface PeerTlsPems {
  /** The CA certificates. */
  ca: string;
  /** This server's certificate. */
  cert: string;
  /** This server's key. */
  key: string;
}

/** What {@linkcode checkPeerCredentials} found of usable files: when the first of them stops being usable. */
export interface PeerCredentialsCheck {
  /** When the server's certificate, or the CA that signed it if that is sooner, expires. */
  notAfter: Date;
  /** Which of the two that is, in words with its file. */
  expiring: string;
  /** What renews it, in words. */
  remedy: string;
}

/** How many days before its certificate (or its CA) expires a server starts to warn. */
export const CERT_WARN_DAYS = 30;

/** Options for {@linkcode PeerTransport}. */
export interface PeerTransportOptions {
  /** The TLS files, or null for plain text links. */
  files: PeerTlsFiles | null;
  /** How long a dialler has to finish the TLS handshake, in milliseconds. */
  handshakeTimeoutMs: number;
}

/** A connection the acceptor was given: the socket, and the server its certificate names (none in plain text). */
export interface AcceptedPeer {
  /** The socket, handshake done. */
  socket: net.Socket;
  /** The name the dialler's certificate proves (subject CN, also a DNS name of it); undefined in plain text. */
  provenName: string | undefined;
  /** Where it came from, `host:port`, for the log. */
  address: string;
  /**
   * Says the connection has proven who it is (its `HELLO` was taken): from
   * then on it is no longer counted among the connections of its address
   * that have not, nor dropped to make room for a new one (see
   * {@linkcode PeerTransport.listen}).
   */
  prove(): void;
}

/** Options for {@linkcode PeerTransport.listen}. */
export interface PeerListenOptions {
  /** Host to listen on. */
  host: string;
  /** Port to listen on. */
  port: number;
  /**
   * Most connections open at once, handshakes included. One more makes
   * room by closing the oldest connection that has not proven who it is
   * yet, but one of the two newest from an address in `neighbourHosts`
   * only for another from such an address; when there is none to close, it
   * is closed at once. Either is reported refused.
   */
  maxConnections: number;
  /**
   * The addresses the neighbours listen on, from which they dial as a rule:
   * the two newest handshakes from each are not cut short to make room for
   * a connection from anywhere else, so that connections from many other
   * addresses that never finish a handshake cannot keep a neighbour out
   * (and only two, so that someone sharing such an address cannot hold the
   * port against a neighbour dialling from another).
   */
  neighbourHosts?: ReadonlySet<string>;
  /** Each connection whose handshake succeeded. */
  onPeer(peer: AcceptedPeer): void;
  /** Each connection refused during the handshake (no certificate, wrong CA, timeout), with the reason. */
  onRefused(address: string, reason: string): void;
}

/**
 * Connections from one address that have not proven who they are (TLS
 * handshake and `HELLO` not done) that the peer port holds at once; one
 * more closes the oldest of them. One address, whoever holds it, cannot
 * fill `limits.maxPeerConnections` with connections that never finish, and
 * a neighbour has one link dialled to us at a time.
 */
export const MAX_UNPROVEN_PER_ADDRESS = 16;

/** Unproven connections from one neighbour's address kept from being replaced by a connection from elsewhere. */
const _PROTECTED_PER_NEIGHBOUR_ADDRESS = 2;

/** An address as compared: an IPv4 address mapped into IPv6 (`::ffff:127.0.0.1`, on a dual-stack listener) as IPv4. */
function _plainAddress(host: string): string {
  const lower = host.toLowerCase();
  return lower.startsWith("::ffff:") && lower.includes(".") ? lower.slice(7) : lower;
}

function _address(socket: net.Socket): string {
  // Deno's node:tls keeps the peer's address on the TCP socket under the TLS one.
  const tcp = socket.remoteAddress === undefined ? (socket as { _parent?: net.Socket })._parent ?? socket : socket;
  return `${tcp.remoteAddress ?? "?"}:${tcp.remotePort ?? "?"}`;
}

/** The server a verified certificate names: its subject CN, when the certificate also lists it as a DNS name. */
export function certificateName(cert: tls.PeerCertificate): string | undefined {
  const cn = cert.subject?.CN;
  return _serverNamed(Array.isArray(cn) ? cn : cn === undefined ? [] : [cn], cert.subjectaltname);
}

/** The one CN of `cns`, when the subjectAltName text `altNames` lists it as a DNS name too. */
function _serverNamed(cns: string[], altNames: string | undefined): string | undefined {
  const dns = (altNames ?? "").split(", ").filter((name) => name.startsWith("DNS:")).map((name) => name.slice(4));
  return cns.length === 1 && dns.includes(cns[0]) ? cns[0] : undefined;
}

/** The PEM certificate blocks of a file's text, in order. */
export function pemCertificates(text: string): string[] {
  return text.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
}

/**
 * Throws, naming the file and what remakes it, unless the CA file holds PEM
 * certificates, the server's certificate is one signed by one of them (or by
 * an intermediate CA the certificate file holds after it, itself signed so),
 * and its key is a PEM private key that goes with the certificate. Deno's
 * `tls.createSecureContext` checks none of this: a server started with a
 * garbled certificate, a mismatched key or a certificate of another CA said
 * it listened with TLS, and every handshake then failed ("unsupported
 * protocol", "no TLS handshake in time") with nothing naming the file.
 * `files.name`, when given, is the server the files are for: the
 * certificate must name it, as its neighbours check. Nor may the
 * certificate, or the CA that signed it, be out of its dates at `now` (an
 * audit's expired certificate passed every check; the server started and
 * no neighbour would link to it). Returns when the first of the two expires.
 */
export function checkPeerCredentials(
  pems: PeerTlsPems,
  files: PeerTlsFiles,
  now: Date = new Date(),
): PeerCredentialsCheck {
  const renew = files.renewCommand ?? `deno task certs ${files.name ?? "NAME"} --renew`;
  const fix = `(\`${renew}\` remakes the server's key and certificate)`;
  // The parser's own words ("nom error: Eof") say nothing a user can act on: a certificate that does not parse is said
  // to be no certificate; a key's parser names what it found, which may help.
  const parse = <T>(make: () => T, what: string, remedy = fix, cause = true): T => {
    try {
      return make();
    } catch (error) {
      throw new Error(`${what}${cause ? `: ${(error as Error).message}` : ""} ${remedy}`);
    }
  };
  const noBlock = "no whole -----BEGIN CERTIFICATE----- ... -----END CERTIFICATE----- block";
  const badBlock = "its PEM block does not hold a certificate";
  // Not remade by renewing a server's certificate: that would sign with the CA key, not mend ca.crt.
  const restore = "(restore it from where the CA is kept)";
  const caBlocks = pemCertificates(pems.ca);
  if (caBlocks.length === 0) {
    throw new Error(
      `The herd's CA certificate ${files.ca} is not a PEM certificate (${noBlock}): restore it from where the CA is kept`,
    );
  }
  const cas = caBlocks.map((block) =>
    parse(
      () => new X509Certificate(block),
      `The herd's CA certificate ${files.ca} is not a PEM certificate (${badBlock})`,
      restore,
      false,
    )
  );
  const certBlocks = pemCertificates(pems.cert);
  const cert = parse(
    () => new X509Certificate(pems.cert),
    `This server's certificate ${files.cert} is not a PEM certificate (${
      certBlocks.length === 0 ? noBlock : badBlock
    })`,
    fix,
    false,
  );
  // The certificate file may go on with the chain to the CA (intermediate CAs), which TLS sends along with it: the
  // certificate is then signed by one of them, signed in turn ... by a CA of ca.crt.
  const chain = certBlocks.slice(1).map((block) =>
    parse(
      () => new X509Certificate(block),
      `The chain in this server's certificate ${files.cert} is not PEM (${badBlock})`,
      fix,
      false,
    )
  );
  // The CA of ca.crt at the chain's end: of several with the signing key (a CA renewed with its key), one valid now,
  // the one that lasts longest, as TLS would find a path through it. The intermediate CAs on the way, in order.
  const intermediates: X509Certificate[] = [];
  const signingCa = (certificate: X509Certificate): X509Certificate | undefined => {
    const signers = cas.filter((ca) => certificate.verify(ca.publicKey));
    const valid = signers.filter((ca) => ca.validFromDate <= now && now <= ca.validToDate);
    const ca =
      (valid.length > 0 ? valid : signers).sort((a, b) => b.validToDate.getTime() - a.validToDate.getTime())[0];
    if (ca !== undefined) return ca;
    const issuer = chain.findIndex((candidate) => certificate.verify(candidate.publicKey));
    if (issuer < 0) return undefined;
    // Each of the chain at most once: a chain that loops ends.
    const intermediate = chain.splice(issuer, 1)[0];
    intermediates.push(intermediate);
    return signingCa(intermediate);
  };
  const ca = signingCa(cert);
  if (ca === undefined) {
    throw new Error(
      `This server's certificate ${files.cert} is not signed by the herd's CA ${files.ca}: its neighbours would ` +
        `refuse it ${fix}`,
    );
  }
  const key = parse(() => createPrivateKey(pems.key), `This server's key ${files.key} is not a PEM private key`);
  if (!cert.checkPrivateKey(key)) {
    throw new Error(`This server's key ${files.key} does not go with its certificate ${files.cert} ${fix}`);
  }
  if (files.name !== undefined) {
    const named = ownCertificateName(cert);
    if (named !== files.name) {
      throw new Error(
        `This server's certificate ${files.cert} ${
          named === undefined ? "names no server" : `is ${JSON.stringify(named)}'s`
        }, not ${JSON.stringify(files.name)}'s: its neighbours would refuse it ${fix}`,
      );
    }
  }
  const day = (date: Date) => date.toISOString().slice(0, 16).replace("T", " ") + " UTC";
  const clock = `(this host's clock says ${day(now)}: is it right?)`;
  const caRemedy = `make a new CA and move the herd to it (docs/SECURITY.md, "Certificates")`;
  const chainRemedy = "renew it where it was made, and the chain in the file";
  // Every certificate of the chain TLS sends, and the CA it ends at: one out of its dates makes the neighbours refuse
  // it. `named` opens a refusal, `expired` ends one; `expiring` and `remedy` are for the warning of its end.
  const links = [
    {
      certificate: cert,
      named: `This server's certificate ${files.cert}`,
      expired: ` ${fix}`,
      expiring: `This server's certificate ${files.cert}`,
      remedy: `\`${renew}\` remakes it; then SIGHUP the server, or wait a minute`,
    },
    ...intermediates.map((intermediate) => {
      const which = `The intermediate CA certificate ${
        JSON.stringify(intermediate.subject.replaceAll("\n", ", "))
      } in this server's certificate file ${files.cert}`;
      const expired = `: its neighbours would refuse the chain (${chainRemedy})`;
      return { certificate: intermediate, named: which, expired, expiring: which, remedy: chainRemedy };
    }),
    {
      certificate: ca,
      named: `The herd's CA certificate ${files.ca} that signed this server's certificate`,
      expired: `: ${caRemedy}`,
      expiring: `The herd's CA certificate ${files.ca}`,
      remedy: caRemedy,
    },
  ];
  for (const { certificate, named, expired } of links) {
    if (now < certificate.validFromDate) {
      throw new Error(`${named} is not valid before ${day(certificate.validFromDate)} ${clock}`);
    }
    if (now > certificate.validToDate) throw new Error(`${named} expired on ${day(certificate.validToDate)}${expired}`);
  }
  const ends: PeerCredentialsCheck[] = links.map(({ certificate, expiring, remedy }) => ({
    notAfter: certificate.validToDate,
    expiring,
    remedy,
  }));
  // The first to end; of equal ends, the server's own certificate (its remedy is the herd's own task).
  return ends.reduce((first, end) => end.notAfter < first.notAfter ? end : first);
}

/** The server a certificate names as its neighbours see it ({@linkcode certificateName}): its CN, also a DNS name. */
export function ownCertificateName(cert: X509Certificate): string | undefined {
  const cns = cert.subject.split("\n").filter((part) => part.startsWith("CN=")).map((part) => part.slice(3));
  return _serverNamed(cns, cert.subjectAltName);
}

/** Dials and accepts peer connections, with TLS or without. */
export class PeerTransport {
  #files: PeerTlsFiles | null;
  #handshakeTimeoutMs: number;
  #credentials: PeerTlsPems | undefined;
  #expiry: PeerCredentialsCheck | undefined;
  #servers = new Set<net.Server>();

  /** A transport; with TLS files, {@linkcode PeerTransport.load} reads them. */
  constructor(options: PeerTransportOptions) {
    this.#files = options.files;
    this.#handshakeTimeoutMs = options.handshakeTimeoutMs;
  }

  /** Whether links are encrypted and authenticated. */
  get secure(): boolean {
    return this.#files !== null;
  }

  /** Reads the TLS files; throws an error naming the one that cannot be read or used. */
  load(): void {
    if (this.#files === null) return;
    const credentials = this.#read(this.#files);
    this.#expiry = checkPeerCredentials(credentials, this.#files);
    this.#credentials = credentials;
  }

  /** When the files in use stop being usable (the certificate's or its CA's end), once loaded with TLS. */
  get expiry(): PeerCredentialsCheck | undefined {
    return this.#expiry;
  }

  /**
   * Reads the TLS files again (a rotated certificate or CA): new links use
   * them, links already up keep theirs. Returns whether anything changed.
   */
  reload(): boolean {
    if (this.#files === null) return false;
    const fresh = this.#read(this.#files);
    const old = this.#credentials;
    if (old !== undefined && old.ca === fresh.ca && old.cert === fresh.cert && old.key === fresh.key) return false;
    // Checked before use: a key that does not go with its certificate must not replace a working pair.
    const expiry = checkPeerCredentials(fresh, this.#files);
    tls.createSecureContext(fresh);
    this.#credentials = fresh;
    this.#expiry = expiry;
    for (const server of this.#servers) (server as tls.Server).setSecureContext(fresh);
    return true;
  }

  #read(files: PeerTlsFiles): PeerTlsPems {
    const read = (path: string, what: string) => {
      try {
        return Deno.readTextFileSync(path);
      } catch (error) {
        throw new Error(`Cannot read ${what} ${path}: ${(error as Error).message}`);
      }
    };
    return {
      ca: read(files.ca, "the herd's CA certificate"),
      cert: read(files.cert, "this server's certificate"),
      key: read(files.key, "this server's key"),
    };
  }

  /** Listens for peers; resolves once listening. */
  listen(options: PeerListenOptions): Promise<net.Server> {
    // Counted on the TCP connection, before any handshake: a flood of half-open handshakes is bounded too. Keyed by
    // `host:port`, which the TLS socket handed over later has too; in the order they came (the oldest first).
    const open = new Map<string, { socket: net.Socket; host: string; proven: boolean }>();
    /** Connections not proven yet, by host. */
    const unproven = new Map<string, number>();
    const countOut = (host: string) => {
      const count = unproven.get(host)! - 1;
      if (count === 0) unproven.delete(host);
      else unproven.set(host, count);
    };
    const prove = (address: string) => {
      const entry = open.get(address);
      if (entry === undefined || entry.proven) return;
      entry.proven = true;
      countOut(entry.host);
    };
    const accepted = (socket: net.Socket, provenName: string | undefined) => {
      const address = _address(socket);
      options.onPeer({ socket, provenName, address, prove: () => prove(address) });
    };
    const server = this.#credentials === undefined
      ? net.createServer({ noDelay: true }, (socket) => accepted(socket, undefined))
      : this.#tlsServer(this.#credentials, options, accepted);
    this.#servers.add(server);
    server.on("close", () => this.#servers.delete(server));
    const neighbourHosts = new Set([...options.neighbourHosts ?? []].map(_plainAddress));
    /**
     * The oldest connection not proven yet from an address no neighbour listens on; failing that, the oldest from a
     * neighbour's address older than the two newest from it; failing that, when `mayTakeNeighbours` (the new
     * connection comes from a neighbour's address), the oldest not proven yet.
     */
    const oldestUnproven = (mayTakeNeighbours: boolean, newHost: string) => {
      type Entry = { socket: net.Socket; host: string; proven: boolean };
      let beyondNewest: Entry | undefined;
      let fallback: Entry | undefined;
      // A connection from a neighbour's address first takes the place of that address's own beyond its newest two:
      // someone sharing the address must not push out a neighbour dialling from an address not listed (a stranger's).
      if (mayTakeNeighbours) {
        const own = unproven.get(newHost) ?? 0;
        if (own > _PROTECTED_PER_NEIGHBOUR_ADDRESS) {
          const first = [...open.values()].find((entry) => !entry.proven && entry.host === newHost);
          if (first !== undefined) return first;
        }
      }
      // Only the newest few from each neighbour's address are kept from strangers (a neighbour dials one link at a
      // time): someone else on that address cannot hold the whole port that way. A stranger's goes first, though.
      const seen = new Map<string, number>();
      for (const entry of open.values()) {
        if (entry.proven) continue;
        if (!neighbourHosts.has(_plainAddress(entry.host))) return entry;
        const older = seen.get(entry.host) ?? 0;
        seen.set(entry.host, older + 1);
        if ((unproven.get(entry.host) ?? 0) - older > _PROTECTED_PER_NEIGHBOUR_ADDRESS) beyondNewest ??= entry;
        fallback ??= entry;
      }
      return beyondNewest ?? (mayTakeNeighbours ? fallback : undefined);
    };
    /** Closes an unproven connection to make room for a new one; says why. */
    const drop = (entry: { socket: net.Socket; host: string }, why: string) => {
      const address = _address(entry.socket);
      options.onRefused(
        address,
        `dropped for a new connection: ${why}, and this one, the oldest, had not proven who it is`,
      );
      entry.socket.destroy();
      // Its close comes later: counted out now, so the new one has its place.
      open.delete(address);
      countOut(entry.host);
    };
    server.on("connection", (socket: net.Socket) => {
      // Reset before we saw it: it has no address to be counted under (and no key of its own), and nothing to serve.
      if (socket.remoteAddress === undefined || socket.remotePort === undefined) {
        socket.destroy();
        return;
      }
      const address = _address(socket);
      const host = socket.remoteAddress;
      // The newest connection is kept, the oldest unproven one goes: a neighbour dialling from an address someone
      // fills with handshakes that never finish still gets in (its handshake takes milliseconds, theirs never ends).
      const fromHost = unproven.get(host) ?? 0;
      const oldestFromHost = fromHost >= MAX_UNPROVEN_PER_ADDRESS
        ? [...open.values()].find((entry) => !entry.proven && entry.host === host)
        : undefined;
      if (oldestFromHost !== undefined) {
        drop(oldestFromHost, `${fromHost} connections from ${host} have not proven who they are`);
      }
      if (open.size >= options.maxConnections) {
        const oldest = oldestUnproven(neighbourHosts.has(_plainAddress(host)), host);
        if (oldest === undefined) {
          options.onRefused(
            address,
            `${open.size} peer connections are open, limits.maxPeerConnections, none of them one it may replace`,
          );
          socket.destroy();
          return;
        }
        drop(oldest, `${open.size} are open (limits.maxPeerConnections)`);
      }
      const entry = { socket, host, proven: false };
      open.set(address, entry);
      unproven.set(host, (unproven.get(host) ?? 0) + 1);
      socket.once("close", () => {
        if (open.get(address) !== entry) return;
        open.delete(address);
        if (!entry.proven) countOut(host);
      });
    });
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(options.port, options.host, () => {
        server.off("error", reject);
        resolve(server);
      });
    });
  }

  #tlsServer(
    credentials: PeerTlsPems,
    options: PeerListenOptions,
    accepted: (socket: net.Socket, provenName: string) => void,
  ): tls.Server {
    const server = tls.createServer({
      ...credentials,
      requestCert: true,
      rejectUnauthorized: true,
      // What the docs promise: TLS 1.3 only (a dialler offering no more than 1.2 fails the handshake).
      minVersion: "TLSv1.3",
      noDelay: true,
      handshakeTimeout: this.#handshakeTimeoutMs,
    } as tls.TlsOptions, (socket) => {
      const cert = socket.getPeerCertificate();
      const provenName = certificateName(cert);
      if (!socket.authorized || provenName === undefined) {
        options.onRefused(_address(socket), "its certificate names no server");
        socket.destroy();
        return;
      }
      accepted(socket, provenName);
    });
    server.on("tlsClientError", (error, socket) => {
      options.onRefused(_address(socket), _handshakeError(error));
      socket.destroy();
    });
    return server;
  }

  /**
   * Dials a neighbour's peer port. With TLS, resolves only once the
   * acceptor proved it is `neighbour` (a certificate from the herd's CA
   * naming it); rejects otherwise, saying why.
   */
  dial(host: string, port: number, neighbour: string): Promise<net.Socket> {
    const credentials = this.#credentials;
    return new Promise((resolve, reject) => {
      let socket: net.Socket;
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`no handshake within ${this.#handshakeTimeoutMs} ms`));
      }, this.#handshakeTimeoutMs);
      const done = (error?: Error) => {
        clearTimeout(timer);
        socket.off("error", done);
        if (error === undefined) resolve(socket);
        else {
          socket.destroy();
          reject(error);
        }
      };
      if (credentials === undefined) {
        socket = net.connect({ host, port, noDelay: true }, () => done());
      } else {
        socket = tls.connect({
          host,
          port,
          servername: neighbour,
          ...credentials,
          minVersion: "TLSv1.3",
          noDelay: true,
          checkServerIdentity: (_name: string, cert: tls.PeerCertificate) => {
            const named = certificateName(cert);
            return named === neighbour ? undefined : new Error(
              `its certificate names ${named ?? "no server"}, not ${neighbour}`,
            );
          },
        } as tls.ConnectionOptions, () => done());
      }
      socket.once("error", done);
    });
  }
}

/**
 * A handshake failure in words. node:tls reports a wrong CA or an expired
 * certificate as a reset, as it does a dialler that closed mid-handshake (a
 * neighbour killed, a link cut: a fault audit's campaigns logged dozens a run
 * as certificate failures), so a reset says both.
 */
function _handshakeError(error: Error): string {
  const code = (error as { code?: string }).code;
  if (code === "ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE") return "it sent no certificate";
  if (/handshake timeout/i.test(error.message)) return "no TLS handshake in time";
  if (code === "ECONNRESET" || /hang up|reset/i.test(error.message)) {
    return "the TLS handshake failed: closed or reset by the dialler (it went away, or its certificate is not from " +
      "the herd's CA, is expired, or is not for a client)";
  }
  return `the TLS handshake failed: ${error.message}`;
}
