/**
 * Where the data and log directories really are, links followed. Deno
 * checks some operations on an open file (its `stat`: the database's lock
 * file, the log file) against the file's resolved path, not the path it
 * was opened by: a server allowed only `dataDir` cannot use a `dataDir` that
 * is a link. The launcher, which may not read those directories, runs this
 * module in a child allowed to read them (and their parents, for one not
 * made yet) to learn their real paths, and adds those to the server's flags.
 */

import { dirname } from "node:path";

/**
 * The real path of the directory `path` (absolute), links resolved; for one
 * that does not exist yet, its nearest existing parent's real path with the
 * rest of `path` after it (the directory the server will make).
 */
export function realDirectory(path: string): string {
  const missing: string[] = [];
  let current = path;
  for (;;) {
    try {
      const real = Deno.realPathSync(current);
      return [real === "/" ? "" : real, ...missing].join("/") || "/";
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
      const parent = dirname(current);
      if (parent === current) return path;
      missing.unshift(current.slice(parent === "/" ? 1 : parent.length + 1));
      current = parent;
    }
  }
}

/** `path` (absolute) and every directory above it, for the child's `--allow-read`. */
export function pathAndParents(path: string): string[] {
  const paths = [path];
  while (dirname(paths[paths.length - 1]) !== paths[paths.length - 1]) paths.push(dirname(paths[paths.length - 1]));
  return paths;
}

if (import.meta.main) {
  // One real path a line, in the order given; a directory that cannot be resolved is given back as it is.
  for (const path of Deno.args) {
    let real = path;
    try {
      real = realDirectory(path);
    } catch { /* not allowed, or not a directory: the server says what is wrong with it */ }
    console.log(real);
  }
}
