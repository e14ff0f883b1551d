/**
 * Deno sets its crypto library up the first time anything needs it: a TLS
 * connection (dialled or accepted), an HTTPS request, a WebCrypto key. On
 * this machine (Deno 2.9.6) that set-up is about 40 ms of CPU, done once per
 * process on whichever thread asks first. Asked by a server's first peer
 * link or first HTTPS request to Places, it ran on the event loop's thread,
 * which answered nobody meanwhile: 38-50 ms when one server restarts into a
 * running herd, 117-199 ms when the five servers of a herd start at once on
 * two cores (docs/PERFORMANCE.md, the session of 2026-12-05 04:48).
 *
 * {@linkcode warmCrypto} asks first, from Deno's pool of blocking threads:
 * WebCrypto's elliptic-curve key generation runs there, where an HMAC key's
 * would run on the caller's thread. `main.ts` starts it first thing in a
 * server that will make TLS connections (TLS peer links, or HTTPS to
 * Places). The server's log, database and ports usually take long enough
 * for it to be done before a link comes up; a TLS connection that comes
 * sooner waits on the event loop for the rest of it only (25-29 ms when one
 * began right after the call, in a review's test), never longer than
 * without it.
 */

/** The key asked for: generated off the event loop's thread, and thrown away. */
const _ALGORITHM: EcKeyGenParams = { name: "ECDH", namedCurve: "P-256" };

/**
 * Has Deno set its crypto library up on a thread of its blocking pool.
 * Resolves once that is done; never rejects (a failure only means the first
 * TLS connection sets it up, as it would have anyway).
 */
export async function warmCrypto(): Promise<void> {
  try {
    await crypto.subtle.generateKey(_ALGORITHM, false, ["deriveBits"]);
  } catch {
    // Nothing lost: the set-up happens on first use instead.
  }
}
