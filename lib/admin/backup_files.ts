/**
 * The copies a server's backups left in `<dataDir>/backups`, as its admin
 * endpoint shows, serves and removes them (`GET /backups`,
 * `GET /backups/<file>`, `DELETE /backups/<file>`). Only this server's own
 * copies are named (`<Name>-<UTC time>.db`, the names a backup gives):
 * a name of any other form is unknown here, whatever is in the directory,
 * so a request cannot reach another file (`..`, a link, another server's
 * copy in a shared `dataDir`). The copy being written is not served.
 */

import { BackupRefused } from "./server.ts";

/** A backup copy kept on the server's host. */
export interface BackupFile {
  /** Its file name in the backup directory. */
  file: string;
  /** Its size in bytes. */
  bytes: number;
  /** When it was last written, as an ISO 8601 UTC time. */
  modified: string;
}

/** A copy opened to be sent. */
export interface OpenBackup {
  /** Its bytes. */
  body: ReadableStream<Uint8Array>;
  /** How many. */
  bytes: number;
}

/** How much of a copy is read at a time while it is sent. */
const _READ_BYTES = 256 * 1024;

/** `20261204T014315384Z.db`: the end of a backup's name, after `<Name>-`. */
const _STAMP = /^\d{8}T\d{9}Z\.db$/;

/** One server's backup copies in its backup directory. */
export class BackupFiles {
  /** The directory the copies are in. */
  readonly directory: string;
  /** The server whose copies these are. */
  readonly serverName: string;
  /** The file name of the copy being written, if one is: not listed, served or removed. */
  inProgress: string | undefined;
  /** The copies being sent: each one's stream, to be cut off at shutdown ({@linkcode BackupFiles.stopSending}). */
  #sending = new Map<ReadableStreamDefaultController<Uint8Array>, () => void>();

  /** The copies of server `serverName` in `directory`. */
  constructor(directory: string, serverName: string) {
    this.directory = directory;
    this.serverName = serverName;
  }

  /** Whether `file` is a name this server's backup gives (`<Name>-<UTC time>.db`). */
  isBackupName(file: string): boolean {
    return file.startsWith(`${this.serverName}-`) && _STAMP.test(file.slice(this.serverName.length + 1));
  }

  /** The copies there, oldest first (their names sort by time). */
  list(): BackupFile[] {
    let entries: Deno.DirEntry[];
    try {
      entries = [...Deno.readDirSync(this.directory)];
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return [];
      throw error;
    }
    const files: BackupFile[] = [];
    for (const entry of entries) {
      if (!entry.isFile || !this.isBackupName(entry.name) || entry.name === this.inProgress) continue;
      try {
        const info = Deno.lstatSync(`${this.directory}/${entry.name}`);
        files.push({ file: entry.name, bytes: info.size, modified: (info.mtime ?? new Date(0)).toISOString() });
      } catch { /* removed meanwhile */ }
    }
    return files.sort((a, b) => a.file < b.file ? -1 : a.file > b.file ? 1 : 0);
  }

  /** The path of copy `file`, once it is found to be one; else a {@linkcode BackupRefused} (404, or 409 while written). */
  #pathOf(file: string): string {
    const listing = "GET /backups lists the copies";
    if (!this.isBackupName(file)) {
      throw new BackupRefused(
        `${JSON.stringify(file)} is not the name of a backup of ${this.serverName}; ${listing}`,
        404,
      );
    }
    if (file === this.inProgress) throw new BackupRefused(`${file} is being written`, 409);
    const path = `${this.directory}/${file}`;
    let info: Deno.FileInfo;
    try {
      info = Deno.lstatSync(path);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) throw new BackupRefused(`no backup ${file}; ${listing}`, 404);
      throw error;
    }
    // A link or a directory under a backup's name was not made by a backup.
    if (!info.isFile) throw new BackupRefused(`${file} is not a file`, 404);
    return path;
  }

  /** Copy `file`, opened for reading; a {@linkcode BackupRefused} when there is none by that name. */
  async open(file: string): Promise<OpenBackup> {
    const path = this.#pathOf(file);
    let opened: Deno.FsFile;
    try {
      opened = await Deno.open(path, { read: true });
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) throw new BackupRefused(`no backup ${file}`, 404);
      throw error;
    }
    let size: number;
    try {
      size = (await opened.stat()).size;
    } catch (error) {
      opened.close();
      throw error;
    }
    // Read as the client takes it; closed when done, when the client goes, or at shutdown.
    const sending = this.#sending;
    let controller: ReadableStreamDefaultController<Uint8Array>;
    let closed = false;
    const close = () => {
      if (closed) return;
      closed = true;
      sending.delete(controller);
      opened.close();
    };
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        controller = c;
        sending.set(c, close);
      },
      async pull(c) {
        const buffer = new Uint8Array(_READ_BYTES);
        let n: number | null;
        try {
          n = closed ? null : await opened.read(buffer);
        } catch (error) {
          close();
          c.error(error);
          return;
        }
        if (n === null) {
          close();
          c.close();
        } else c.enqueue(buffer.subarray(0, n));
      },
      cancel: close,
    });
    return { body, bytes: size };
  }

  /**
   * Cuts off every copy being sent (their clients see the transfer fail):
   * at shutdown, which would otherwise wait for the slowest reader, however
   * slow, with the database locked meanwhile.
   */
  stopSending(): void {
    for (const [controller, close] of [...this.#sending]) {
      close();
      try {
        controller.error(new Error("the server is shutting down"));
      } catch { /* closed meanwhile */ }
    }
  }

  /** How many copies are being sent now. */
  get sending(): number {
    return this.#sending.size;
  }

  /** Removes copy `file`; a {@linkcode BackupRefused} when there is none by that name. */
  async remove(file: string): Promise<void> {
    const path = this.#pathOf(file);
    try {
      await Deno.remove(path);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) throw new BackupRefused(`no backup ${file}`, 404);
      throw error;
    }
  }
}
