// The dashboard page's script, served as /dashboard.js: it follows /events (server-sent events from the dashboard
// server) and updates the graph, the table and the density layer of the map. It loads nothing else.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
/** Density colours, from one client to the most in a cell (the legend's ramp). */
const LOW = [255, 200, 60];
const HIGH = [200, 0, 90];

/** Elements by `data-server` (node and table row) and by `data-link`. */
const nodes = new Map();
const rows = new Map();
const links = new Map();
const linkRows = new Map();
for (const element of document.querySelectorAll(".node[data-server]")) nodes.set(element.dataset.server, element);
for (const element of document.querySelectorAll("tr[data-server]")) rows.set(element.dataset.server, element);
for (const element of document.querySelectorAll(".link[data-link]")) links.set(element.dataset.link, element);
for (const element of document.querySelectorAll("tr[data-link]")) linkRows.set(element.dataset.link, element);

function text(value, format) {
  return value === null || value === undefined ? "–" : format(value);
}

function number(value) {
  return value.toLocaleString("en-US");
}

function uptime(seconds) {
  if (seconds < 120) return `${Math.floor(seconds)} s`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)} min`;
  if (seconds < 172800) return `${Math.floor(seconds / 3600)} h`;
  return `${Math.floor(seconds / 86400)} d`;
}

const STATE_TEXT = { up: "up", unhealthy: "unhealthy", down: "down", unwatched: "no admin port" };

function showServer(server) {
  const node = nodes.get(server.name);
  if (node !== undefined) {
    node.dataset.state = server.state;
    node.querySelector("[data-field=records]").textContent = text(server.records, (n) => `${number(n)} rec`);
    node.querySelector("title").textContent = server.state === "up"
      ? `${server.name}: up`
      : `${server.name}: ${STATE_TEXT[server.state]} (${server.reason})`;
  }
  const row = rows.get(server.name);
  if (row === undefined) return;
  row.dataset.state = server.state;
  const cell = (field) => row.querySelector(`[data-field=${field}]`);
  cell("state").textContent = STATE_TEXT[server.state];
  cell("state").title = server.reason;
  cell("records").textContent = text(server.records, number);
  cell("commandsPerSecond").textContent = text(server.commandsPerSecond, (n) => n.toFixed(1));
  cell("replyP99Ms").textContent = text(server.replyP99Ms, (n) => n.toFixed(n < 10 ? 2 : 1));
  cell("clientConnections").textContent = text(server.clientConnections, number);
  cell("links").textContent = `${server.links.live}/${server.links.configured}`;
  cell("digest").textContent = text(server.digest, (d) => d.slice(0, 8) + (server.digestAgrees ? " =" : " ≠"));
  cell("digest").dataset.agrees = String(server.digestAgrees);
  cell("digest").title = server.digest === null
    ? ""
    : server.digestAgrees
    ? "same records as most servers"
    : "different records from most servers";
  cell("uptimeS").textContent = text(server.uptimeS, uptime);
}

const LINK_TEXT = { up: "up", lagging: "lagging", down: "down", unknown: "unknown" };

/** What one end says of a link: its state, or why it says nothing. */
function endText(name, state, serverStates) {
  if (state === null) return `${name}: no admin port`;
  if (serverStates.get(name) === "down") return `${name}: not answering`;
  return `${name}: ${LINK_TEXT[state]}`;
}

function showLink(link, serverStates) {
  const key = link.ends.join(" ");
  const [a, b] = link.ends;
  const reported = `${endText(a, link.reported[0], serverStates)}, ${endText(b, link.reported[1], serverStates)}`;
  const line = links.get(key);
  if (line !== undefined) {
    line.dataset.state = link.state;
    line.querySelector("title").textContent = `${a} – ${b}: ${LINK_TEXT[link.state]} (${reported})`;
  }
  const row = linkRows.get(key);
  if (row !== undefined) {
    row.dataset.state = link.state;
    row.querySelector("[data-field=state]").textContent = LINK_TEXT[link.state];
    row.querySelector("[data-field=reported]").textContent = reported;
  }
}

function showStatus(view) {
  for (const server of view.servers) showServer(server);
  const serverStates = new Map(view.servers.map((server) => [server.name, server.state]));
  for (const link of view.links) showLink(link, serverStates);
  const up = view.servers.filter((server) => server.state === "up").length;
  const summary = document.getElementById("summary");
  summary.dataset.whole = String(view.whole);
  summary.textContent = view.whole
    ? `all ${view.servers.length} servers up, same records`
    : `${up} of ${view.servers.length} servers up` +
      (view.servers.some((server) => server.digestAgrees === false) ? ", records differ" : "");
  document.getElementById("updated").textContent = `updated ${new Date(view.at).toLocaleTimeString("en-GB")}`;
}

function colour(count, max) {
  const t = max <= 1 ? 0.5 : Math.log(count) / Math.log(max);
  const channel = (i) => Math.round(LOW[i] + (HIGH[i] - LOW[i]) * t);
  return `rgb(${channel(0)}, ${channel(1)}, ${channel(2)})`;
}

function showDensity(view) {
  const layer = document.getElementById("density");
  const paths = view.cells.map((cell) => {
    const path = document.createElementNS(SVG_NS, "path");
    path.setAttribute("d", cell.d);
    path.dataset.cell = `${cell.row} ${cell.column}`;
    path.dataset.count = String(cell.count);
    path.setAttribute("fill", colour(cell.count, view.max));
    const title = document.createElementNS(SVG_NS, "title");
    title.textContent = `${number(cell.count)} client${cell.count === 1 ? "" : "s"}`;
    path.append(title);
    return path;
  });
  layer.replaceChildren(...paths);
  layer.dataset.cells = String(view.cells.length);
  document.getElementById("density-note").textContent = `${number(view.records)} clients, counted by ${view.from} at ${
    view.computedAt === null ? "–" : new Date(view.computedAt).toLocaleTimeString("en-GB")
  }`;
  document.getElementById("density-max").textContent = number(Math.max(view.max, 1));
  document.getElementById("density-cell").textContent = `${view.cellDegrees}°`;
}

const connection = document.getElementById("connection");
const events = new EventSource("/events");
events.addEventListener("open", () => {
  connection.dataset.state = "open";
  connection.textContent = "live";
});
events.addEventListener("error", () => {
  connection.dataset.state = "lost";
  // Closed for good: the dashboard refused the stream (401: this page came without its key, or the admin token
  // changed); an EventSource does not try again after such an answer.
  connection.textContent = events.readyState === EventSource.CLOSED
    ? "refused by the dashboard: open the address it printed when it started"
    : "dashboard server not reachable: retrying";
});
events.addEventListener("status", (event) => showStatus(JSON.parse(event.data)));
events.addEventListener("density", (event) => showDensity(JSON.parse(event.data)));
