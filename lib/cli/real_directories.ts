/**
 * Where the data and log directories really are, links followed. Deno
 * checks some operations on an open file (its `stat`: the database's lock
 * file, the log file) against the file's resolved path, not the path it
 * was opened by: a server allowed only `dataDir` cannot use a `dataDir` that
 * is a link, or lies under one. The launcher, which may not read those
 * directories, runs this module in a child allowed what the server is
 * allowed of them (to read and write them, nothing above), which makes them
 * as the server would (0700, with a `.gitignore`) and prints their real
 * paths, for the launcher to add to the server's flags.
 */

import { makePrivateDirectory } from "../private_files.ts";

/**
 * The real path of each directory, made first when missing; the path as
 * given for one that cannot be made or resolved (the server then says what
 * is wrong with it).
 */
export function realDirectories(paths: string[]): string[] {
  return paths.map((path) => {
    try {
      makePrivateDirectory(path);
      return Deno.realPathSync(path);
    } catch {
      return path;
    }
  });
}

if (import.meta.main) {
  // JSON, not a path a line: a config's directory may hold a newline, which must not become a path of its own.
  console.log(JSON.stringify(realDirectories(Deno.args)));
}
