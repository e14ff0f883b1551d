/**
 * Prometheus metrics, in the text exposition format (version 0.0.4): the
 * few kinds the herd uses, kept cheap on the hot path. A counter or a
 * histogram with labels hands out one series object per label set, made
 * once; counting is then adding to a number field. Gauges are read when
 * scraped. (The `prom-client` package takes longer to import than a
 * server's whole start-up, docs/PERFORMANCE.md, and hashes label objects on
 * each call.)
 */

/** Label values of one series, in the order of the metric's label names. */
export type LabelValues = readonly string[];

/** One counter series. */
export class CounterSeries {
  /** The count so far. */
  value = 0;

  /** Adds `n` (1 by default). */
  inc(n = 1): void {
    this.value += n;
  }
}

/** One histogram series: a count per bucket, the sum and the count. */
export class HistogramSeries {
  /** Counts of observations at or under each bound (not cumulative: one bucket each), then over the last. */
  readonly counts: Float64Array;
  /** Sum of every observation. */
  sum = 0;
  /** Number of observations. */
  count = 0;
  #bounds: readonly number[];

  /** A series over `bounds`, in ascending order. */
  constructor(bounds: readonly number[]) {
    this.#bounds = bounds;
    this.counts = new Float64Array(bounds.length + 1);
  }

  /** Records one observation. */
  observe(value: number): void {
    const bounds = this.#bounds;
    let i = 0;
    while (i < bounds.length && value > bounds[i]) i++;
    this.counts[i]++;
    this.sum += value;
    this.count++;
  }
}

/** A metric: its name, help and type, and how it prints. */
export interface Metric {
  /** Its name in the text format. */
  readonly name: string;
  /** Appends its lines in the text format to `out`. */
  render(out: string[]): void;
}

/** Escapes a label value for the text format. */
function _escapeLabel(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

/** Escapes a help text for the text format. */
function _escapeHelp(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

/** A number as the text format writes it. */
function _number(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}

function _labels(names: readonly string[], values: LabelValues, extra?: [string, string]): string {
  const pairs = names.map((name, i) => `${name}="${_escapeLabel(values[i])}"`);
  if (extra !== undefined) pairs.push(`${extra[0]}="${extra[1]}"`);
  return pairs.length === 0 ? "" : `{${pairs.join(",")}}`;
}

/** A counter, with series per label set. */
export class Counter implements Metric {
  /** The metric's name. */
  readonly name: string;
  #help: string;
  #labelNames: readonly string[];
  #series = new Map<string, { values: LabelValues; series: CounterSeries }>();

  /** A counter named `name` (ending in `_total`), with these label names. */
  constructor(name: string, help: string, labelNames: readonly string[] = []) {
    this.name = name;
    this.#help = help;
    this.#labelNames = labelNames;
  }

  /** The series of these label values, made on first use: keep it, and count on it. */
  labels(...values: string[]): CounterSeries {
    const key = values.join("\u0000");
    let entry = this.#series.get(key);
    if (entry === undefined) {
      entry = { values, series: new CounterSeries() };
      this.#series.set(key, entry);
    }
    return entry.series;
  }

  /** Prints the counter. */
  render(out: string[]): void {
    out.push(`# HELP ${this.name} ${_escapeHelp(this.#help)}\n# TYPE ${this.name} counter\n`);
    if (this.#series.size === 0 && this.#labelNames.length === 0) this.labels();
    for (const { values, series } of this.#series.values()) {
      out.push(`${this.name}${_labels(this.#labelNames, values)} ${_number(series.value)}\n`);
    }
  }
}

/**
 * A metric whose series are read when scraped: a gauge, or (with `type`
 * `counter`) a counter whose source keeps the count.
 */
export class Gauge implements Metric {
  /** The metric's name. */
  readonly name: string;
  #help: string;
  #labelNames: readonly string[];
  #collect: () => Iterable<[LabelValues, number]>;
  #type: "gauge" | "counter";

  /** A metric named `name`; `collect` gives each series' label values and value, when scraped. */
  constructor(
    name: string,
    help: string,
    labelNames: readonly string[],
    collect: () => Iterable<[LabelValues, number]>,
    type: "gauge" | "counter" = "gauge",
  ) {
    this.name = name;
    this.#help = help;
    this.#labelNames = labelNames;
    this.#collect = collect;
    this.#type = type;
  }

  /** Prints the metric. */
  render(out: string[]): void {
    out.push(`# HELP ${this.name} ${_escapeHelp(this.#help)}\n# TYPE ${this.name} ${this.#type}\n`);
    for (const [values, value] of this.#collect()) {
      out.push(`${this.name}${_labels(this.#labelNames, values)} ${_number(value)}\n`);
    }
  }
}

/** A histogram, with series per label set. */
export class Histogram implements Metric {
  /** The metric's name. */
  readonly name: string;
  /** The upper bounds of its buckets, ascending. */
  readonly bounds: readonly number[];
  #help: string;
  #labelNames: readonly string[];
  #series = new Map<string, { values: LabelValues; series: HistogramSeries }>();

  /** A histogram named `name` over `bounds` (ascending; `+Inf` is added), with these label names. */
  constructor(name: string, help: string, bounds: readonly number[], labelNames: readonly string[] = []) {
    this.name = name;
    this.#help = help;
    this.bounds = bounds;
    this.#labelNames = labelNames;
  }

  /** The series of these label values, made on first use: keep it, and observe on it. */
  labels(...values: string[]): HistogramSeries {
    const key = values.join("\u0000");
    let entry = this.#series.get(key);
    if (entry === undefined) {
      entry = { values, series: new HistogramSeries(this.bounds) };
      this.#series.set(key, entry);
    }
    return entry.series;
  }

  /** Every series made so far. */
  series(): IterableIterator<{ values: LabelValues; series: HistogramSeries }> {
    return this.#series.values();
  }

  /** Prints the histogram: cumulative buckets, `le="+Inf"`, sum and count per series. */
  render(out: string[]): void {
    out.push(`# HELP ${this.name} ${_escapeHelp(this.#help)}\n# TYPE ${this.name} histogram\n`);
    if (this.#series.size === 0 && this.#labelNames.length === 0) this.labels();
    for (const { values, series } of this.#series.values()) {
      let cumulative = 0;
      this.bounds.forEach((bound, i) => {
        cumulative += series.counts[i];
        out.push(`${this.name}_bucket${_labels(this.#labelNames, values, ["le", _number(bound)])} ${cumulative}\n`);
      });
      cumulative += series.counts[this.bounds.length];
      out.push(`${this.name}_bucket${_labels(this.#labelNames, values, ["le", "+Inf"])} ${cumulative}\n`);
      out.push(`${this.name}_sum${_labels(this.#labelNames, values)} ${_number(series.sum)}\n`);
      out.push(`${this.name}_count${_labels(this.#labelNames, values)} ${series.count}\n`);
    }
  }
}

/** The metrics of one process, printed together. */
export class Registry {
  #metrics: Metric[] = [];

  /** Adds a metric; returns it. */
  add<M extends Counter | Gauge | Histogram>(metric: M): M {
    if (this.#metrics.some((other) => other.name === metric.name)) {
      throw new RangeError(`A metric named ${metric.name} is registered already`);
    }
    this.#metrics.push(metric);
    return metric;
  }

  /** Every metric in the text exposition format. */
  render(): string {
    const out: string[] = [];
    for (const metric of this.#metrics) metric.render(out);
    return out.join("");
  }
}

/**
 * The `q` quantile (0 to 1) of the observations a histogram gained between
 * two snapshots of its bucket counts, as an upper bound: the bucket's top
 * (the last finite bound when the quantile is over all of them). NaN when
 * nothing was observed.
 */
export function quantileOf(bounds: readonly number[], before: Float64Array, after: Float64Array, q: number): number {
  let total = 0;
  for (let i = 0; i < after.length; i++) total += after[i] - before[i];
  if (total <= 0) return NaN;
  const rank = q * total;
  let seen = 0;
  for (let i = 0; i < after.length; i++) {
    seen += after[i] - before[i];
    if (seen >= rank) return i < bounds.length ? bounds[i] : bounds[bounds.length - 1];
  }
  return bounds[bounds.length - 1];
}
