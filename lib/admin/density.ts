/**
 * Where clients are, as densities: how many records fall in each cell of a
 * grid of `cellDegrees` by `cellDegrees`, never a client's own location.
 * Worked out from the store in slices (a store of millions is read a piece
 * per turn of the event loop), at most once per `maxAgeMs`.
 */

/** Counts per grid cell. */
export interface DensityReport {
  /** A cell's size in degrees of latitude and of longitude. */
  cellDegrees: number;
  /** `[row, column, count]`: the cell from latitude `-90 + row * cellDegrees` and longitude `-180 + column * cellDegrees`. */
  cells: [number, number, number][];
  /** Records counted. */
  records: number;
  /** When the counting finished (ISO time), or null before the first. */
  computedAt: string | null;
}

/**
 * Whether `value` (parsed JSON) is a {@linkcode DensityReport} the dashboard
 * can draw: an admin port may be answered by another program, or by a server
 * of another version.
 */
export function isDensityReport(value: unknown): value is DensityReport {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
  const report = value as Record<string, unknown>;
  return typeof report.cellDegrees === "number" && report.cellDegrees > 0 && typeof report.records === "number" &&
    (report.computedAt === null || typeof report.computedAt === "string") && Array.isArray(report.cells) &&
    report.cells.every((cell) =>
      Array.isArray(cell) && cell.length === 3 && cell.every((n) => typeof n === "number" && Number.isFinite(n))
    );
}

/** Options for {@linkcode DensityMap}. */
export interface DensityMapOptions {
  /** Cell size in degrees. */
  cellDegrees?: number;
  /** How old a report may be before a new count starts, in milliseconds. */
  maxAgeMs?: number;
  /** Records read per turn. */
  slice?: number;
}

/** The AT lines of a store, each with its location as the fifth field. */
export type LineSource = () => Iterator<string>;

/** A grid of record counts, recounted from the store when asked for and older than its age bound. */
export class DensityMap {
  #lines: LineSource;
  #cell: number;
  #maxAgeMs: number;
  #slice: number;
  #report: DensityReport;
  #countedAt = -Infinity;
  #counting = false;

  /** A map over the store whose lines `lines` walks. */
  constructor(lines: LineSource, options: DensityMapOptions = {}) {
    this.#lines = lines;
    this.#cell = options.cellDegrees ?? 2;
    this.#maxAgeMs = options.maxAgeMs ?? 5000;
    this.#slice = options.slice ?? 50_000;
    this.#report = { cellDegrees: this.#cell, cells: [], records: 0, computedAt: null };
  }

  /** The latest report; starts a new count when it is older than the age bound. */
  report(): DensityReport {
    if (!this.#counting && performance.now() - this.#countedAt >= this.#maxAgeMs) this.#count();
    return this.#report;
  }

  /** Counts the whole store, a slice per turn; resolves when done. */
  #count(): Promise<void> {
    this.#counting = true;
    const counts = new Map<number, number>();
    const columns = Math.ceil(360 / this.#cell) + 1;
    const iterator = this.#lines();
    let records = 0;
    return new Promise((resolve) => {
      const slice = () => {
        for (let i = 0; i < this.#slice; i++) {
          const next = iterator.next();
          if (next.done) {
            this.#finish(counts, columns, records);
            resolve();
            return;
          }
          const cell = _cellOf(next.value, this.#cell, columns);
          if (cell < 0) continue;
          counts.set(cell, (counts.get(cell) ?? 0) + 1);
          records++;
        }
        setTimeout(slice, 0);
      };
      slice();
    });
  }

  #finish(counts: Map<number, number>, columns: number, records: number): void {
    const cells: [number, number, number][] = [];
    for (const [cell, count] of counts) cells.push([Math.floor(cell / columns), cell % columns, count]);
    cells.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    this.#report = { cellDegrees: this.#cell, cells, records, computedAt: new Date().toISOString() };
    this.#countedAt = performance.now();
    this.#counting = false;
  }
}

const _LOCATION = /^([+-][0-9.]+)([+-][0-9.]+)$/;

/** The grid cell of an AT line's location, or -1. */
function _cellOf(line: string, size: number, columns: number): number {
  const fields = line.split(" ");
  const match = _LOCATION.exec(fields[4] ?? "");
  if (match === null) return -1;
  const lat = Number(match[1]);
  const lng = Number(match[2]);
  const row = Math.min(Math.floor((lat + 90) / size), Math.floor(180 / size));
  const column = Math.min(Math.floor((lng + 180) / size), columns - 1);
  return row * columns + column;
}
