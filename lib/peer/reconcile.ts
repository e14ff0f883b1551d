/**
 * Reconciliation (anti-entropy) between two neighbours, both directions.
 * The dialler sends `DIGEST <hex>`: its store's digest, one XOR of record
 * hashes per bucket of clients (store/digest.ts). The acceptor answers with
 * its records of every bucket that differs, as plain AT lines, then its own
 * `DIGEST <hex>`; the dialler then sends its records of the buckets that
 * still differ. Each side keeps the greater record per client, so after one
 * exchange both hold the same records, whatever was lost in flight.
 */

import { metrics } from "../admin/metrics.ts";
import { log } from "../logging.ts";
import type { LocationRecord } from "../protocol.ts";
import { differingBuckets, type StoreDigest } from "../store/digest.ts";
import { formatDigest } from "./wire.ts";

/** What reconciliation reads of the store. */
export interface ReconcileStore {
  /** The store's digest, kept current as records are stored. */
  readonly digest: StoreDigest;
  /** The stored records of some digest buckets. */
  inBuckets(buckets: ReadonlySet<number>): LocationRecord[];
  /** The stored AT lines of some digest buckets, one at a time. */
  linesInBuckets(buckets: ReadonlySet<number>): Iterable<string>;
}

/**
 * How long after a neighbour started an exchange with us our own link to
 * it skips the exchange it would start on coming up: the neighbour's goes
 * both ways, so ours would only send everything a second time.
 */
const _RECENT_MS = 2000;

/** One server's side of reconciling with each of its neighbours. */
export class Reconciler {
  #store: ReconcileStore;
  /** When each neighbour last started an exchange with us. */
  #startedBy = new Map<string, number>();

  /** Reconciles `store` with the neighbours. */
  constructor(store: ReconcileStore) {
    this.#store = store;
  }

  /** The line that starts an exchange (the dialler's side). */
  request(): string {
    return formatDigest(this.#store.digest.toHex());
  }

  /** Whether our link to `neighbour`, just up, should start an exchange: not if the neighbour just started one. */
  shouldStart(neighbour: string): boolean {
    return performance.now() - (this.#startedBy.get(neighbour) ?? -Infinity) >= _RECENT_MS;
  }

  /**
   * The acceptor's answer to `DIGEST <hex>` from `from`: our records of the
   * buckets that differ, as AT lines, then our digest, made as the caller
   * takes them (a whole store can differ: nothing is gathered first).
   */
  *answer(from: string, digest: Uint32Array): Generator<string, void, undefined> {
    this.#startedBy.set(from, performance.now());
    metrics.reconciliationsAnswered.inc();
    let count = 0;
    for (const line of this.#store.linesInBuckets(differingBuckets(this.#store.digest.words, digest))) {
      count++;
      metrics.reconciliationSent.inc();
      yield line + "\n";
    }
    yield this.request();
    log.peer.info("Reconciling with {neighbour}: sent {count} records", { neighbour: from, count });
  }

  /**
   * The dialler's last step: the acceptor's digest came back after its
   * records (`received`, of which `stored` were new to us); returns our
   * records of the buckets that still differ, to send back.
   */
  finish(neighbour: string, digest: Uint32Array, received: number, stored: number): LocationRecord[] {
    const buckets = differingBuckets(this.#store.digest.words, digest);
    const records = this.#store.inBuckets(buckets);
    metrics.reconciliationReceived.inc(received);
    metrics.reconciliationSent.inc(records.length);
    log.peer.info(
      "Reconciled with {neighbour}: received {received} records, stored {stored}; sending {sent} from {buckets} buckets",
      { neighbour, received, stored, sent: records.length, buckets: buckets.size },
    );
    return records;
  }
}
