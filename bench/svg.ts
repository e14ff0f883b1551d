/** Small SVG charts for the benchmark report: grouped bars, no dependencies. */

/** One series of a bar chart. */
export interface BarSeries {
  name: string;
  values: number[];
}

/** Options for {@linkcode barChart}. */
export interface BarChartOptions {
  title: string;
  /** Labels of the groups along the x axis. */
  groups: string[];
  series: BarSeries[];
  /** Label of the y axis. */
  unit: string;
  /** Draw the y axis on a log scale (latencies). */
  log?: boolean;
}

const _COLORS = ["#3b6ea8", "#d9822b", "#5a9e4b", "#a33f6b"];

function _escape(text: string): string {
  return text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
}

function _format(value: number): string {
  if (value >= 1000) return `${Math.round(value / 100) / 10}k`;
  if (value >= 10) return String(Math.round(value));
  return String(Math.round(value * 100) / 100);
}

/** A grouped bar chart as an SVG document. */
export function barChart(options: BarChartOptions): string {
  const width = 720;
  const height = 360;
  const left = 70;
  const right = 20;
  const top = 40;
  const bottom = 60;
  const plotWidth = width - left - right;
  const plotHeight = height - top - bottom;
  const all = options.series.flatMap((series) => series.values).filter((value) => value > 0);
  const max = Math.max(...all, 1);
  const min = options.log ? Math.min(...all) : 0;
  const lo = options.log ? Math.pow(10, Math.floor(Math.log10(min))) : 0;
  const hi = options.log ? Math.pow(10, Math.ceil(Math.log10(max))) : max * 1.1;
  const y = (value: number) => {
    if (options.log) {
      const v = Math.max(value, lo);
      return top + plotHeight - (Math.log10(v / lo) / Math.log10(hi / lo)) * plotHeight;
    }
    return top + plotHeight - (value / hi) * plotHeight;
  };
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="15">${_escape(options.title)}</text>`,
  );
  const ticks = options.log
    ? Array.from({ length: Math.round(Math.log10(hi / lo)) + 1 }, (_, i) => lo * Math.pow(10, i))
    : Array.from({ length: 6 }, (_, i) => (hi / 5) * i);
  for (const tick of ticks) {
    const ty = y(tick);
    parts.push(
      `<line x1="${left}" x2="${width - right}" y1="${ty}" y2="${ty}" stroke="#ddd"/>`,
      `<text x="${left - 6}" y="${ty + 4}" text-anchor="end">${_format(tick)}</text>`,
    );
  }
  parts.push(
    `<text x="16" y="${top + plotHeight / 2}" transform="rotate(-90 16 ${top + plotHeight / 2})" text-anchor="middle">${
      _escape(options.unit)
    }</text>`,
  );
  const groupWidth = plotWidth / options.groups.length;
  const barWidth = (groupWidth * 0.8) / options.series.length;
  options.groups.forEach((group, g) => {
    const gx = left + g * groupWidth + groupWidth * 0.1;
    options.series.forEach((series, s) => {
      const value = series.values[g] ?? 0;
      const bx = gx + s * barWidth;
      const by = y(value);
      parts.push(
        `<rect x="${bx}" y="${by}" width="${barWidth - 2}" height="${Math.max(0, top + plotHeight - by)}" fill="${
          _COLORS[s % _COLORS.length]
        }"><title>${_escape(`${series.name} ${group}: ${value}`)}</title></rect>`,
        `<text x="${bx + barWidth / 2 - 1}" y="${by - 3}" text-anchor="middle" font-size="10">${_format(value)}</text>`,
      );
    });
    parts.push(
      `<text x="${gx + groupWidth * 0.4}" y="${top + plotHeight + 16}" text-anchor="middle">${_escape(group)}</text>`,
    );
  });
  options.series.forEach((series, s) => {
    const lx = left + s * 170;
    const ly = height - 18;
    parts.push(
      `<rect x="${lx}" y="${ly - 10}" width="12" height="12" fill="${_COLORS[s % _COLORS.length]}"/>`,
      `<text x="${lx + 18}" y="${ly}">${_escape(series.name)}</text>`,
    );
  });
  parts.push("</svg>\n");
  return parts.join("\n");
}
