/** Builds the Places provider the config asks for, behind the cache. */

import type { PlacesConfig } from "../config/config.ts";
import { chooseProvider, type PlacesProvider, type PlacesProviderName } from "./provider.ts";
import { CachedPlaces } from "./cache.ts";
import { GoogleLegacyPlaces } from "./google_legacy.ts";
import { GoogleNewPlaces } from "./google_new.ts";
import { OfflinePlaces } from "./offline.ts";

/** The provider a server uses, and what to say about it. */
export interface PlacesSetup {
  /** The cached provider. */
  places: CachedPlaces;
  /** What `places.provider` resolved to. */
  provider: PlacesProviderName;
  /** Why, for the log. */
  reason: string;
  /** Loads whatever the provider loads lazily (the offline index), so the first WHATSAT is fast. */
  warm(): Promise<void>;
}

/** Creates the provider for `places` with the API key (empty or undefined when there is none). */
export function createPlaces(places: PlacesConfig, key: string | undefined): PlacesSetup {
  const { provider, reason } = chooseProvider(places.provider, Boolean(key));
  let inner: PlacesProvider;
  let warm = () => Promise.resolve();
  switch (provider) {
    case "google-legacy":
      inner = new GoogleLegacyPlaces({ url: places.url, key, timeoutMs: places.timeoutMs });
      break;
    case "google-new":
      inner = new GoogleNewPlaces({ url: places.newUrl, key, timeoutMs: places.timeoutMs });
      break;
    case "offline": {
      const offline = new OfflinePlaces();
      inner = offline;
      warm = () => offline.warm();
      break;
    }
  }
  const cached = new CachedPlaces(inner, {
    ttlMs: places.cacheTtlMs,
    errorTtlMs: places.errorTtlMs,
    maxEntries: places.cacheEntries,
    maxConcurrent: places.maxConcurrent,
    maxQueued: places.maxQueued,
    timeoutMs: places.timeoutMs,
  });
  return { places: cached, provider, reason, warm };
}
