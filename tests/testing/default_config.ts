/**
 * The shipped default herd, for tests: `tests/testing/default/herd.config.json`
 * is a copy of the `herd.config.json` the project ships (Hill, Jaquez, Smith,
 * Campbell, Singleton on 127.0.0.1, ports 12000–12004, 12100–12104 and
 * 12200–12204). Tests that expect the default's names, ports, links or
 * directories read this copy, never the project root's file, which is the
 * user's to edit: the README promises that editing it changes nothing else, and
 * that includes `deno task test`. The copy's paths (logs, data, certs) are
 * relative to its own folder, {@linkcode DEFAULT_CONFIG_DIR}.
 */

import { type HerdConfig, parseConfig } from "../../lib/config/config.ts";

/** The absolute path of the copy of the shipped default config. */
export const DEFAULT_CONFIG_PATH: string = new URL("./default/herd.config.json", import.meta.url).pathname;

/** The folder of {@linkcode DEFAULT_CONFIG_PATH}, against which its logDir, dataDir and certDir resolve. */
export const DEFAULT_CONFIG_DIR: string = DEFAULT_CONFIG_PATH.slice(0, DEFAULT_CONFIG_PATH.lastIndexOf("/"));

/** The copy of the shipped default config, parsed with its own path. */
export async function loadDefaultConfig(): Promise<HerdConfig> {
  return parseConfig(await Deno.readTextFile(DEFAULT_CONFIG_PATH), DEFAULT_CONFIG_PATH);
}
