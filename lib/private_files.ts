/**
 * The log and data directories hold personal data (every client ID and
 * location the server saw), so the server makes them for its user alone:
 * directories 0700, files 0600, whatever the process's umask. A directory
 * that already exists keeps its mode (an operator may have chosen it); one
 * other users can enter is reported, for a warning.
 */

/** Mode of the log and data directories the server makes. */
export const PRIVATE_DIRECTORY_MODE = 0o700;
/** Mode of the log files and databases the server makes. */
export const PRIVATE_FILE_MODE = 0o600;

/** A directory of personal data that other users can enter. */
export interface OpenDirectory {
  /** The directory. */
  path: string;
  /** Its permission bits, in octal (`"755"`). */
  mode: string;
}

/**
 * Keeps what a directory the server made out of version control: a
 * `.gitignore` of `*` in it (0600), as Python's venv and others do. The
 * default directories are git-ignored by the repository; one the config
 * moves elsewhere in a checkout would show up in `git status`, client
 * locations, logs and private keys ready to be committed.
 */
export function ignoreInGit(directory: string): void {
  // Whole or not at all: a disk that fills mid-write must not leave an empty one, which ignores nothing.
  const temporary = `${directory}/.gitignore.${Deno.pid}-${fileTimestamp()}`;
  try {
    Deno.writeTextFileSync(
      temporary,
      "# Made by herd: this directory holds client locations, logs or keys, never for a repository.\n*\n",
      { mode: PRIVATE_FILE_MODE },
    );
    Deno.renameSync(temporary, `${directory}/.gitignore`);
  } catch (error) {
    try {
      Deno.removeSync(temporary);
    } catch { /* never made */ }
    throw error;
  }
}

/**
 * Makes the directory `path` (and its missing parents) with mode 0700 if
 * it is missing, with a `.gitignore` of `*` ({@linkcode ignoreInGit}). When it exists, leaves it as it is, and returns its
 * mode if other users (its group, or anyone) have any access to it. Throws an error whose message says what is wrong
 * with the directory, naming it: it cannot be made, its `.gitignore` cannot be written (it is then taken back, so the
 * next start makes both), or it is not a directory.
 */
export function makePrivateDirectory(path: string): OpenDirectory | undefined {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    // Another server making it at the same moment is no error (recursive), and neither is its mode then.
    try {
      Deno.mkdirSync(path, { recursive: true, mode: PRIVATE_DIRECTORY_MODE });
      Deno.chmodSync(path, PRIVATE_DIRECTORY_MODE);
    } catch (error) {
      throw new Error(`the directory ${path} cannot be made (${(error as Error).message})`);
    }
    try {
      ignoreInGit(path);
    } catch (error) {
      // Taken back while empty, so the next start makes it again with its .gitignore (one found existing gets none).
      try {
        Deno.removeSync(path);
      } catch { /* not empty: another server's files */ }
      throw new Error(
        `the directory ${path} was made, but its .gitignore cannot be written (${(error as Error).message})`,
      );
    }
    return undefined;
  }
  if (!info.isDirectory) throw new Error(`${path} is not a directory`);
  const mode = info.mode;
  if (mode === null || (mode & 0o077) === 0) return undefined;
  return { path, mode: (mode & 0o777).toString(8) };
}

/** The warning for an {@linkcode OpenDirectory} (a LogTape template and its values). */
export function openDirectoryWarning(open: OpenDirectory): [string, Record<string, unknown>] {
  return [
    "The directory {path} can be entered by other users (mode {mode}) and its files hold client IDs and locations: " +
    "make it private (chmod 700); the server makes new ones 0700, with files 0600",
    { path: open.path, mode: open.mode },
  ];
}

/** Whether `path` exists (whatever it is: a dangling link too). */
export function pathExists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/** The UTC time now, for a file name: `20261204T014315384Z` (no `:`, which some filesystems refuse). */
export function fileTimestamp(): string {
  return new Date().toISOString().replaceAll(/[-:]/g, "").replace(".", "");
}
