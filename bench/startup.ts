/**
 * Scenario 7, start-up: shared by the bench (`run.ts`) and the A/B runs
 * (`ab_one.ts`, whose test harness may come from another revision).
 */

/** What the measurement needs of a one-server test herd (`TestHerd` of any revision). */
export interface SoloHerd {
  dir: string;
  port(name: string): number;
  start(name: string): Promise<unknown>;
  stop(name: string, signal: "SIGTERM"): Promise<unknown>;
}

/**
 * Starts `name` of `solo` `times` times on an empty data directory, each
 * time with the load generator's `startup` probe (`probe`, given its
 * arguments) polling the client port; returns each start-up in
 * milliseconds, from just before the spawn to the first accepted connection.
 */
export async function measureStartups(
  solo: SoloHerd,
  name: string,
  probe: (args: string[]) => Promise<{ connected_at_unix_us: number }>,
  times = 5,
): Promise<number[]> {
  const startups: number[] = [];
  for (let i = 0; i < times; i++) {
    await Deno.remove(`${solo.dir}/data`, { recursive: true }).catch(() => {});
    const spawnedAt = Date.now() * 1000;
    const connected = probe(["startup", "--port", String(solo.port(name)), "--timeout-ms", "5000"]);
    await solo.start(name);
    startups.push(((await connected).connected_at_unix_us - spawnedAt) / 1000);
    await solo.stop(name, "SIGTERM");
  }
  return startups;
}
