/**
 * Certificates for TLS between servers, in one directory laid out as
 * `ca.crt`, `<Name>.crt` and `<Name>.key` (PEM): a CA, and one certificate
 * per server, good both as a TLS server and as a TLS client certificate
 * (extendedKeyUsage serverAuth and clientAuth), so the same pair serves a
 * link's two ends and both can be authenticated. The herd's own
 * `deno task certs` is to make such a directory; until it does, the bench
 * makes one with `openssl` ({@linkcode makeCertificateDir}). Everything is
 * done through `openssl`, so the directory need not be readable by Deno.
 */

import { runCommand } from "./command.ts";

/** The files one server uses from a certificate directory. */
export interface ServerCertificate {
  /** The CA that signed every server's certificate. */
  ca: string;
  /** The server's certificate. */
  cert: string;
  /** The server's private key. */
  key: string;
}

/** Paths of `name`'s files in certificate directory `dir`. */
export function serverCertificate(dir: string, name: string): ServerCertificate {
  return { ca: `${dir}/ca.crt`, cert: `${dir}/${name}.crt`, key: `${dir}/${name}.key` };
}

async function _openssl(args: string[]): Promise<string> {
  const { code, stdout, stderr } = await runCommand("openssl", args);
  if (code !== 0) {
    throw new Error(`openssl ${args.join(" ")} failed (exit code ${code}): ${stderr.trim().split("\n")[0]}`);
  }
  return stdout;
}

/**
 * Checks `dir` for every server in `names`: its certificate chains to
 * `ca.crt`, may be used as TLS server and TLS client, and matches its key.
 * Throws an `Error` naming the first file that fails.
 */
export async function checkCertificateDir(dir: string, names: string[]): Promise<void> {
  for (const name of names) {
    const files = serverCertificate(dir, name);
    for (const purpose of ["sslserver", "sslclient"]) {
      await _openssl(["verify", "-CAfile", files.ca, "-purpose", purpose, files.cert]);
    }
    const certKey = await _openssl(["x509", "-in", files.cert, "-noout", "-pubkey"]);
    const key = await _openssl(["pkey", "-in", files.key, "-pubout"]);
    if (certKey !== key) throw new Error(`${files.cert} does not match ${files.key}`);
  }
}

/**
 * Makes a certificate directory in `dir` (which must exist): a new CA, and
 * for each of `names` a P-256 key and a certificate with subject
 * `CN=<Name>`, subjectAltName IP:127.0.0.1 and DNS:localhost, valid for two
 * days. The CA's key is deleted once every certificate is signed.
 */
export async function makeCertificateDir(dir: string, names: string[]): Promise<void> {
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  const caKey = `${dir}/ca.key`;
  await _openssl([
    "req",
    "-x509",
    ...ec,
    "-keyout",
    caKey,
    "-out",
    `${dir}/ca.crt`,
    "-days",
    "2",
    "-subj",
    "/CN=herd bench CA",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ]);
  const extensions = `${dir}/server.ext`;
  await Deno.writeTextFile(
    extensions,
    [
      "basicConstraints=critical,CA:FALSE",
      "keyUsage=critical,digitalSignature",
      "extendedKeyUsage=serverAuth,clientAuth",
      "subjectAltName=IP:127.0.0.1,DNS:localhost",
      "",
    ].join("\n"),
  );
  try {
    for (const name of names) {
      const files = serverCertificate(dir, name);
      const request = `${dir}/${name}.csr`;
      await _openssl(["req", "-new", ...ec, "-keyout", files.key, "-out", request, "-subj", `/CN=${name}`]);
      await _openssl([
        "x509",
        "-req",
        "-in",
        request,
        "-CA",
        files.ca,
        "-CAkey",
        caKey,
        "-CAcreateserial",
        "-CAserial",
        `${dir}/ca.srl`,
        "-days",
        "2",
        "-extfile",
        extensions,
        "-out",
        files.cert,
      ]);
      await Deno.remove(request);
    }
  } finally {
    for (const file of [caKey, `${dir}/ca.srl`, extensions]) await Deno.remove(file).catch(() => {});
  }
}
