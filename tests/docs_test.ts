/**
 * The README's Layout section against the tree: every module under lib/ is
 * named there (in its folder's entry, or by its path), and every file the
 * section names exists.
 */

import assert from "node:assert/strict";

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
