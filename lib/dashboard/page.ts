/**
 * The dashboard's page, made once at start from the config and the world
 * drawing: the herd as a graph (servers on a circle, the config's links as
 * lines), a table of the servers' figures, and the world map with an empty
 * layer for density cells. Every element that changes carries a `data-`
 * attribute naming its server or link, which the page's script
 * (`page_script.js`) updates from the server-sent events.
 */

import type { HerdConfig } from "../config/config.ts";
import type { WorldDrawing } from "./map.ts";

/** The graph's drawing box, in SVG units. */
const _GRAPH = { width: 440, height: 400, margin: 52 };

/** Text made safe for HTML and attribute values. */
export function escapeHtml(text: string): string {
  return text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;").replaceAll('"', "&quot;")
    .replaceAll("'", "&#39;");
}

/** Where each server's node goes: evenly on a circle, the first at the top, clockwise. */
export function graphLayout(
  names: string[],
  width: number,
  height: number,
  margin: number,
): Map<string, { x: number; y: number }> {
  const layout = new Map<string, { x: number; y: number }>();
  const cx = width / 2;
  const cy = height / 2;
  const radius = names.length === 1 ? 0 : Math.min(width, height) / 2 - margin;
  names.forEach((name, index) => {
    const angle = -Math.PI / 2 + (2 * Math.PI * index) / names.length;
    layout.set(name, {
      x: Math.round((cx + radius * Math.cos(angle)) * 10) / 10,
      y: Math.round((cy + radius * Math.sin(angle)) * 10) / 10,
    });
  });
  return layout;
}

/** The key of a link in `data-link`: its ends as the config gives them, joined by a space. */
export function linkKey(a: string, b: string): string {
  return `${a} ${b}`;
}

function _graph(config: HerdConfig): string {
  const names = [...config.servers.keys()];
  const layout = graphLayout(names, _GRAPH.width, _GRAPH.height, _GRAPH.margin);
  const links = config.links.map(([a, b]) => {
    const from = layout.get(a)!;
    const to = layout.get(b)!;
    const key = escapeHtml(linkKey(a, b));
    return `<line class="link" data-link="${key}" data-state="unknown" x1="${from.x}" y1="${from.y}" x2="${to.x}" ` +
      `y2="${to.y}"><title>${escapeHtml(`${a} – ${b}`)}</title></line>`;
  });
  const nodes = names.map((name) => {
    const { x, y } = layout.get(name)!;
    const safe = escapeHtml(name);
    return `<g class="node" data-server="${safe}" data-state="unknown" transform="translate(${x} ${y})">` +
      `<circle r="36"></circle><text class="name" y="-2">${safe}</text>` +
      `<text class="records" y="14" data-field="records">–</text><title>${safe}</title></g>`;
  });
  return `<svg class="graph" viewBox="0 0 ${_GRAPH.width} ${_GRAPH.height}" role="img" ` +
    `aria-label="The herd's servers and links">${links.join("")}${nodes.join("")}</svg>`;
}

const _COLUMNS: [field: string, heading: string][] = [
  ["state", "state"],
  ["records", "records"],
  ["commandsPerSecond", "cmd/s"],
  ["replyP99Ms", "p99 ms"],
  ["clientConnections", "conns"],
  ["links", "links"],
  ["digest", "digest"],
  ["uptimeS", "uptime"],
];

function _table(config: HerdConfig): string {
  const head = `<tr><th>server</th>${_COLUMNS.map(([, heading]) => `<th>${heading}</th>`).join("")}</tr>`;
  const rows = [...config.servers.keys()].map((name) => {
    const safe = escapeHtml(name);
    const cells = _COLUMNS.map(([field]) => `<td data-field="${field}">–</td>`).join("");
    return `<tr data-server="${safe}" data-state="unknown"><th scope="row">${safe}</th>${cells}</tr>`;
  });
  return `<table class="servers"><thead>${head}</thead><tbody>${rows.join("")}</tbody></table>`;
}

function _links(config: HerdConfig): string {
  const rows = config.links.map(([a, b]) => {
    const key = escapeHtml(linkKey(a, b));
    return `<tr data-link="${key}" data-state="unknown"><th scope="row">${escapeHtml(`${a} – ${b}`)}</th>` +
      `<td data-field="state">–</td><td data-field="reported">–</td></tr>`;
  });
  return `<table class="links"><thead><tr><th>link</th><th>state</th><th>as its ends report it</th></tr></thead>` +
    `<tbody>${rows.join("")}</tbody></table>`;
}

function _map(drawing: WorldDrawing): string {
  const countries = drawing.countries.map((country) =>
    `<path class="country" d="${country.d}"><title>${escapeHtml(country.name)}</title></path>`
  );
  return `<svg class="map" viewBox="0 0 ${drawing.width} ${drawing.height}" role="img" ` +
    `aria-label="Where clients are: client counts per grid cell">` +
    `<path class="sphere" d="${drawing.sphere}"></path><path class="graticule" d="${drawing.graticule}"></path>` +
    `<g class="countries">${countries.join("")}</g><g id="density"></g></svg>`;
}

/** The dashboard's HTML: it loads only `/dashboard.css`, `/dashboard.js` and `/events`, from where it came. */
export function dashboardPage(config: HerdConfig, drawing: WorldDrawing): string {
  const count = config.servers.size;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>herd dashboard</title>
<link rel="icon" href="/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/dashboard.css">
<script src="/dashboard.js" defer></script>
</head>
<body>
<header>
<h1>herd</h1>
<span id="summary" data-whole="unknown">waiting for the first answers from ${count} server${
    count === 1 ? "" : "s"
  }</span>
<span id="connection" data-state="connecting">connecting</span>
<span id="updated"></span>
</header>
<main>
<section class="herd">
<h2>Servers and links</h2>
${_graph(config)}
<p class="legend"><span class="key up">up</span> <span class="key lagging">lagging</span> <span class="key down">down</span> <span class="key unknown">no admin port</span></p>
</section>
<section class="figures">
<h2>Figures <small>(rates over the last 10 s)</small></h2>
${_table(config)}
${_links(config)}
</section>
<section class="where">
<h2>Where clients are <small id="density-note">no count yet</small></h2>
${_map(drawing)}
<p class="legend density-legend"><span>1</span><span class="ramp"></span><span id="density-max">–</span> clients per <span id="density-cell">2°</span> cell</p>
</section>
</main>
</body>
</html>
`;
}

/** The page's icon: a small herd of three dots. */
export const FAVICON_SVG: string = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">` +
  `<circle cx="4" cy="11" r="3" fill="#2a9d4b"/><circle cx="12" cy="11" r="3" fill="#2a9d4b"/>` +
  `<circle cx="8" cy="4" r="3" fill="#2a9d4b"/></svg>`;
