/**
 * The README against the tree: every module under lib/ is named in the Layout
 * section (in its folder's entry, or by its path), and every file the section
 * names exists; the permission flags it shows for the default herd are those
 * the code computes for the shipped default config (tests/testing/default).
 */

import assert from "node:assert/strict";
import { dashboardPermissionFlags, serverPermissionFlags } from "../lib/cli/permissions.ts";
import { DEFAULT_CONFIG_DIR, loadDefaultConfig } from "./testing/default_config.ts";

const ROOT = new URL("../", import.meta.url);

/** The code block of the README's `## Layout` section. */
async function layoutBlock(): Promise<string> {
  const readme = await Deno.readTextFile(new URL("README.md", ROOT));
  const section = readme.split(/^## /m).find((part) => part.startsWith("Layout\n"));
  assert.ok(section !== undefined, "README.md has a Layout section");
  const block = section.match(/```\n([\s\S]*?)```/);
  assert.ok(block !== null, "the Layout section has a code block");
  return block[1];
}

/** Each entry of the block: the path in its first column, and its text with the lines that continue it. */
function entries(block: string): Map<string, string> {
  const found = new Map<string, string>();
  let current = "";
  for (const line of block.split("\n")) {
    const head = line.match(/^(\S+)\s/);
    if (head !== null) {
      current = head[1];
      found.set(current, line.slice(head[1].length));
    } else if (current !== "") {
      found.set(current, found.get(current) + " " + line.trim());
    }
  }
  return found;
}

async function modulesUnder(dir: string): Promise<string[]> {
  const files: string[] = [];
  for await (const entry of Deno.readDir(new URL(dir, ROOT))) {
    if (entry.isDirectory) files.push(...await modulesUnder(`${dir}${entry.name}/`));
    else if (/\.(ts|js)$/.test(entry.name)) files.push(`${dir}${entry.name}`);
  }
  return files.sort();
}

Deno.test({
  name: "the README's Layout section names every module under lib/, and only files that exist",
  permissions: { read: ["."] },
}, async () => {
  const layout = entries(await layoutBlock());
  const missing: string[] = [];
  for (const path of await modulesUnder("lib/")) {
    const folder = path.slice(0, path.lastIndexOf("/") + 1);
    const name = path.slice(folder.length);
    const named = layout.has(path) || new RegExp(`(^|[\\s,;(])${name.replace(".", "\\.")}[:,;)\\s]`)
      .test((layout.get(folder) ?? "") + " ");
    if (!named) missing.push(path);
  }
  assert.deepEqual(missing, [], "modules the Layout section does not name");
  for (const path of layout.keys()) {
    await Deno.stat(new URL(path, ROOT)).catch(() =>
      assert.fail(`the Layout section names ${path}, which is not there`)
    );
  }
});

/** The flags in the first code block of the README after `marker`, split on white space. */
async function flagsShownAfter(marker: string): Promise<string[]> {
  const readme = await Deno.readTextFile(new URL("README.md", ROOT));
  const at = readme.indexOf(marker);
  assert.ok(at >= 0, `README.md says ${marker}`);
  const block = readme.slice(at).match(/```\n([\s\S]*?)```/);
  assert.ok(block !== null, `a code block follows ${marker} in README.md`);
  return block[1].split(/\s+/).filter((flag) => flag !== "");
}

/** `flags` with the default config's folder written as the README writes it, /path/to. */
function asShown(flags: string[]): string[] {
  return flags.map((flag) => flag.replaceAll(`${DEFAULT_CONFIG_DIR}/`, "/path/to/"));
}

Deno.test({
  name: "the README's flags for Hill are what serverPermissionFlags() gives Hill in the default herd with a key",
  permissions: { read: ["."] },
}, async () => {
  const computed = serverPermissionFlags(await loadDefaultConfig(), "Hill", { keyPresent: true });
  assert.deepEqual(await flagsShownAfter("main.ts flags Hill"), asShown(computed));
});

Deno.test({
  name: "the README's flags for the dashboard are what dashboardPermissionFlags() gives the default herd",
  permissions: { read: ["."] },
}, async () => {
  const computed = dashboardPermissionFlags(await loadDefaultConfig());
  assert.deepEqual(await flagsShownAfter("`dashboardPermissionFlags()`"), asShown(computed));
});
