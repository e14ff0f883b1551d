/**
 * The protocol and fault suites again, with plain-text peer links
 * (`"peers": { "tls": false }`): each suite module imported with `?plain`
 * registers its tests a second time, their names ending in
 * "[plain-text peer links]" (see `suiteMode()` in testing/herd.ts).
 */

await import("./herd_test.ts?plain");
await import("./partition_test.ts?plain");
await import("./chaos_test.ts?plain");
await import("./durability_test.ts?plain");
await import("./netns_test.ts?plain");
