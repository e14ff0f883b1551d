/** The dashboard page's stylesheet (the page is made in `page.ts`), served as `/dashboard.css`. */

/** The stylesheet's text. */
export const PAGE_CSS: string = `:root {
  --up: #2a9d4b;
  --lagging: #e0a100;
  --down: #d62828;
  --unhealthy: #e06c00;
  --unknown: #9aa0a6;
  --ink: #1d2433;
  --muted: #5f6b7a;
  --paper: #f6f7f9;
  --card: #ffffff;
  --sea: #dbe9f4;
  --land: #ebe6da;
  --border: #c9c2b2;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  color: var(--ink);
  background: var(--paper);
}
body {
  margin: 0;
}
header {
  display: flex;
  align-items: baseline;
  gap: 1.2em;
  padding: 0.6em 1.2em;
  background: var(--ink);
  color: #fff;
}
header h1 {
  margin: 0;
  font-size: 1.4em;
}
#summary[data-whole="true"]::before {
  content: "● ";
  color: var(--up);
}
#summary[data-whole="false"]::before {
  content: "● ";
  color: var(--down);
}
#connection[data-state="open"] {
  color: #b9c2cf;
}
#connection[data-state="lost"] {
  color: #ffb4b4;
  font-weight: bold;
}
#updated {
  margin-left: auto;
  color: #b9c2cf;
  font-variant-numeric: tabular-nums;
}
main {
  display: grid;
  grid-template-columns: minmax(320px, 440px) 1fr;
  gap: 1em;
  padding: 1em;
}
section {
  background: var(--card);
  border-radius: 8px;
  padding: 0.6em 1em 1em;
  box-shadow: 0 1px 3px rgba(0, 0, 0, 0.12);
}
section.where {
  grid-column: 1 / -1;
}
h2 {
  font-size: 1.05em;
  margin: 0.3em 0 0.6em;
}
h2 small {
  font-weight: normal;
  color: var(--muted);
}
svg.graph {
  width: 100%;
  height: auto;
}
.link {
  stroke-width: 7;
  stroke-linecap: round;
  stroke: var(--unknown);
}
.link[data-state="up"] {
  stroke: var(--up);
}
.link[data-state="lagging"] {
  stroke: var(--lagging);
  stroke-dasharray: 14 8;
}
.link[data-state="down"] {
  stroke: var(--down);
  stroke-dasharray: 4 10;
}
.node circle {
  fill: #fff;
  stroke-width: 5;
  stroke: var(--unknown);
}
.node[data-state="up"] circle {
  stroke: var(--up);
}
.node[data-state="unhealthy"] circle {
  stroke: var(--unhealthy);
}
.node[data-state="down"] circle {
  stroke: var(--down);
  fill: #fde2e2;
}
.node text {
  text-anchor: middle;
  fill: var(--ink);
}
.node .name {
  font-size: 13px;
  font-weight: 600;
}
.node .records {
  font-size: 11px;
  fill: var(--muted);
  font-variant-numeric: tabular-nums;
}
.legend {
  color: var(--muted);
  font-size: 0.9em;
  margin: 0.4em 0 0;
}
.key::before {
  content: "";
  display: inline-block;
  width: 1.6em;
  height: 0.45em;
  margin-right: 0.3em;
  vertical-align: middle;
  border-radius: 2px;
  background: var(--unknown);
}
.key.up::before {
  background: var(--up);
}
.key.lagging::before {
  background: var(--lagging);
}
.key.down::before {
  background: var(--down);
}
table.servers,
table.links {
  border-collapse: collapse;
  width: 100%;
  font-variant-numeric: tabular-nums;
}
table.links {
  margin-top: 1.2em;
}
table.links th,
table.links td {
  text-align: left;
  padding: 0.3em 0.6em;
  border-bottom: 1px solid #e3e6ea;
}
table.links thead th {
  color: var(--muted);
  font-weight: 600;
  font-size: 0.9em;
}
table.links td[data-field="reported"] {
  color: var(--muted);
  font-size: 0.9em;
}
tr[data-link] td[data-field="state"]::before {
  content: "● ";
  color: var(--unknown);
}
tr[data-link][data-state="up"] td[data-field="state"]::before {
  color: var(--up);
}
tr[data-link][data-state="lagging"] td[data-field="state"]::before {
  color: var(--lagging);
}
tr[data-link][data-state="down"] td[data-field="state"]::before {
  color: var(--down);
}
table.servers th,
table.servers td {
  text-align: right;
  padding: 0.35em 0.6em;
  border-bottom: 1px solid #e3e6ea;
  white-space: nowrap;
}
table.servers th:first-child,
table.servers td[data-field="state"],
table.servers td[data-field="digest"] {
  text-align: left;
}
table.servers thead th {
  color: var(--muted);
  font-weight: 600;
  font-size: 0.9em;
}
table.servers td[data-field="digest"] {
  font-family: ui-monospace, "DejaVu Sans Mono", monospace;
  font-size: 0.85em;
}
table.servers td[data-field="digest"][data-agrees="false"] {
  color: var(--down);
}
tr[data-server] td[data-field="state"]::before {
  content: "● ";
  color: var(--unknown);
}
tr[data-server][data-state="up"] td[data-field="state"]::before {
  color: var(--up);
}
tr[data-server][data-state="unhealthy"] td[data-field="state"]::before {
  color: var(--unhealthy);
}
tr[data-server][data-state="down"] td[data-field="state"]::before {
  color: var(--down);
}
tr[data-state="down"] {
  background: #fff1f1;
}
svg.map {
  width: 100%;
  height: auto;
  display: block;
}
.sphere {
  fill: var(--sea);
  stroke: #9fb7cc;
}
.graticule {
  fill: none;
  stroke: #c5d6e4;
  stroke-width: 0.5;
}
.country {
  fill: var(--land);
  stroke: var(--border);
  stroke-width: 0.5;
}
#density path {
  stroke: rgba(106, 0, 53, 0.35);
  stroke-width: 0.4;
}
.density-legend {
  display: flex;
  align-items: center;
  gap: 0.4em;
}
.ramp {
  display: inline-block;
  width: 8em;
  height: 0.7em;
  border-radius: 2px;
  background: linear-gradient(to right, rgb(255, 200, 60), rgb(200, 0, 90));
}
`;
