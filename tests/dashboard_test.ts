/**
 * The dashboard in a real browser: Debian's chromium, driven by
 * puppeteer-core, against a herd of real servers with admin ports and the
 * dashboard started with the flags `deno task dashboard` gives it. The page
 * shows every server and link, a cell on the map for every client location,
 * a killed server's links down within two seconds and up again when it is
 * back; its screenshots are checked pixel by pixel; and the page asks
 * nothing of any address but the dashboard's. Ignored, saying why, where
 * chromium is not installed (`apt-get install chromium`).
 *
 * The screenshot taken after the kill is written to /tmp/herd-dashboard.png
 * (docs/dashboard.png is a copy of one).
 */

import assert from "node:assert/strict";
import { decode } from "fast-png";
import puppeteer, { type Browser, type Page } from "puppeteer-core";
import type { HerdConfig } from "../lib/config/config.ts";
import { dashboardRunArgs } from "../lib/cli/launcher.ts";
import { exchange, freePorts, HERD_TEST_PERMISSIONS, TestHerd } from "./testing/herd.ts";
import { waitFor } from "./testing/wait.ts";

const CHROMIUM = "/usr/bin/chromium";
/** The flags chromium runs with: headless, and nothing that reaches a network on its own. */
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--no-first-run",
  "--disable-sync",
];
/**
 * The environment variables puppeteer-core and its `ws` read (as it loads and
 * as it launches chromium); the test task grants exactly these.
 */
const PUPPETEER_ENV = [
  "WS_NO_BUFFER_UTIL",
  "PUPPETEER_TEST_EXPERIMENTAL_CHROME_FEATURES",
  "PUPPETEER_DANGEROUS_NO_SANDBOX",
  "NODE_V8_COVERAGE",
];
const PERMISSIONS: Deno.PermissionOptionsObject = {
  ...HERD_TEST_PERMISSIONS,
  run: ["deno", CHROMIUM],
  read: [".", "/tmp", CHROMIUM],
  env: PUPPETEER_ENV,
};
const SCREENSHOT = "/tmp/herd-dashboard.png";
/** How soon a killed server must be shown down (the issue's bound). */
const DOWN_WITHIN_MS = 2000;
const KILLED = "Smith";

async function whyNotHere(): Promise<string | undefined> {
  try {
    if (!(await Deno.stat(CHROMIUM)).isFile) return `${CHROMIUM} is not a file`;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return `${CHROMIUM} is not installed (Debian: apt-get install chromium)`;
    return `cannot look for ${CHROMIUM}: ${(error as Error).message}`;
  }
  return undefined;
}

const skipped = await whyNotHere();
if (skipped !== undefined) console.log(`dashboard_test.ts: skipped: ${skipped}`);

/** Client locations: a few per city, a deterministic spread, well away from the herd's probes at +0+0. */
function clientLocations(): { latitude: number; longitude: number }[] {
  const cities: [number, number, number][] = [
    [34.05, -118.25, 40], // Los Angeles
    [40.71, -74.0, 30], // New York
    [51.5, -0.12, 28], // London
    [35.68, 139.69, 26], // Tokyo
    [28.61, 77.2, 20], // Delhi
    [-23.55, -46.63, 16], // São Paulo
    [-33.87, 151.21, 12], // Sydney
    [-1.29, 36.82, 8], // Nairobi
    [55.75, 37.62, 10], // Moscow
    [19.43, -99.13, 10], // Mexico City
  ];
  let seed = 13;
  const next = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  const locations: { latitude: number; longitude: number }[] = [];
  for (const [latitude, longitude, count] of cities) {
    for (let i = 0; i < count; i++) {
      // The sum of three uniforms: most near the city, a few farther.
      const spread = () => (next() + next() + next() - 1.5) * 4;
      locations.push({ latitude: latitude + spread(), longitude: longitude + spread() * 1.5 });
    }
  }
  return locations;
}

/** The 2-degree grid cell of a location, as lib/admin/density.ts counts it: "row column". */
function cellOf(latitude: number, longitude: number): string {
  return `${Math.floor((latitude + 90) / 2)} ${Math.floor((longitude + 180) / 2)}`;
}

function formatLocation(latitude: number, longitude: number): string {
  const sign = (value: number) => (value < 0 ? "-" : "+") + Math.abs(value).toFixed(6);
  return `${sign(latitude)}${sign(longitude)}`;
}

/** The dashboard in a child process, started as `deno task dashboard` starts it. */
class DashboardProcess implements AsyncDisposable {
  /** Its page's address, from the line it prints once listening. */
  readonly url: string;
  #child: Deno.ChildProcess;
  #reading: Promise<void>;

  private constructor(url: string, child: Deno.ChildProcess, reading: Promise<void>) {
    this.url = url;
    this.#child = child;
    this.#reading = reading;
  }

  static async start(config: HerdConfig): Promise<DashboardProcess> {
    const child = new Deno.Command("deno", {
      args: dashboardRunArgs(config),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    let output = "";
    let exited: number | undefined;
    child.status.then((status) => exited = status.code);
    const read = async (stream: ReadableStream<Uint8Array>) => {
      for await (const text of stream.pipeThrough(new TextDecoderStream())) output += text;
    };
    const reading = Promise.all([read(child.stdout), read(child.stderr)]).then(() => {});
    let url: string | undefined;
    try {
      await waitFor(
        () => (url = /^Dashboard on (http:\S+) /m.exec(output)?.[1]) !== undefined || exited !== undefined,
        {
          timeoutMs: 15_000,
          what: () => `the dashboard to print its URL; it printed ${JSON.stringify(output)}`,
        },
      );
    } catch (error) {
      child.kill("SIGKILL");
      await Promise.all([child.status, reading]);
      throw error;
    }
    if (url === undefined) {
      await reading;
      throw new Error(`The dashboard exited with code ${exited} before listening: ${output}`);
    }
    return new DashboardProcess(url, child, reading);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.#child.kill("SIGTERM");
    await Promise.all([this.#child.status, this.#reading]);
  }
}

/** A decoded screenshot and counts of its pixels. */
class Picture {
  readonly width: number;
  readonly height: number;
  #data: Uint8Array | Uint16Array | Uint8ClampedArray;
  #channels: number;

  constructor(png: Uint8Array) {
    const image = decode(png);
    if (image.depth !== 8 || (image.channels !== 3 && image.channels !== 4)) {
      throw new Error(`Unexpected screenshot format: ${image.channels} channels of ${image.depth} bits`);
    }
    this.width = image.width;
    this.height = image.height;
    this.#data = image.data;
    this.#channels = image.channels;
  }

  get pixels(): number {
    return this.width * this.height;
  }

  /** How many pixels `matches` their red, green and blue. */
  count(matches: (r: number, g: number, b: number) => boolean): number {
    let count = 0;
    for (let i = 0; i < this.#data.length; i += this.#channels) {
      if (matches(this.#data[i], this.#data[i + 1], this.#data[i + 2])) count++;
    }
    return count;
  }

  /** How many pixels are within `tolerance` of `hex` in every channel. */
  near(hex: string, tolerance = 8): number {
    const [r0, g0, b0] = [1, 3, 5].map((at) => parseInt(hex.slice(at, at + 2), 16));
    return this.count((r, g, b) =>
      Math.abs(r - r0) <= tolerance && Math.abs(g - g0) <= tolerance && Math.abs(b - b0) <= tolerance
    );
  }

  /** The number of distinct colours, and the share of the commonest. */
  variety(): { colours: number; commonest: number } {
    const counts = new Map<number, number>();
    for (let i = 0; i < this.#data.length; i += this.#channels) {
      const key = (this.#data[i] << 16) | (this.#data[i + 1] << 8) | this.#data[i + 2];
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
    return { colours: counts.size, commonest: Math.max(...counts.values()) / this.pixels };
  }
}

/** The little of the DOM that the functions run in the page use: Deno's types have no DOM. */
interface PageElement {
  readonly dataset: Record<string, string | undefined>;
  readonly textContent: string | null;
  getAttribute(name: string): string | null;
}
declare const document: {
  querySelector(selector: string): PageElement | null;
  querySelectorAll(selector: string): Iterable<PageElement> & { readonly length: number };
};

/** The page's colours (lib/dashboard/page_style.ts). */
const UP = "#2a9d4b";
const DOWN = "#d62828";
const SEA = "#dbe9f4";
const LAND = "#ebe6da";
/** A density cell: on the ramp from rgb(255, 200, 60) to rgb(200, 0, 90). */
function densityColour(r: number, g: number, b: number): boolean {
  return r >= 195 && g <= 205 && b >= 50 && b <= 100 && r - b >= 100;
}

/** What the page shows of each server and link: the `data-state` of the graph's nodes and lines and the table's rows. */
function shown(
  page: Page,
): Promise<{ nodes: Record<string, string>; rows: Record<string, string>; links: Record<string, string> }> {
  return page.evaluate(() => {
    const states = (selector: string, key: string) =>
      Object.fromEntries(
        [...document.querySelectorAll(selector)].map((element) => [
          element.dataset[key]!,
          element.dataset.state!,
        ]),
      );
    return {
      nodes: states(".node[data-server]", "server"),
      rows: states("tr[data-server]", "server"),
      links: states(".link[data-link]", "link"),
    };
  });
}

async function launchBrowser(profile: string): Promise<Browser> {
  return await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [...CHROMIUM_ARGS, `--user-data-dir=${profile}`],
    // Chromium gets an empty environment: passing ours on would need permission to read every variable.
    env: {},
  });
}

Deno.test({
  name: `The dashboard in chromium shows the herd, a killed server's links down within ${DOWN_WITHIN_MS} ms, ` +
    `and asks nothing of any other address${skipped === undefined ? "" : ` (skipped: ${skipped})`}`,
  ignore: skipped !== undefined,
  permissions: PERMISSIONS,
}, async (t) => {
  const [dashboardPort] = freePorts(1);
  await using herd = await TestHerd.create({
    placesUrl: "http://127.0.0.1:9/unused",
    places: { provider: "offline" },
    admin: true,
    extra: { dashboard: { port: dashboardPort } },
  });
  await herd.startAll();
  const names = herd.names;
  const linkKeys = herd.config.links.map(([a, b]) => `${a} ${b}`);

  const locations = clientLocations();
  const cells = new Map<string, number>();
  const time = (Date.now() / 1000).toFixed(9);
  for (let start = 0; start < locations.length; start += 25) {
    await Promise.all(
      locations.slice(start, start + 25).map(async ({ latitude, longitude }, offset) => {
        const index = start + offset;
        const reply = await exchange(
          herd.port(names[index % names.length]),
          `IAMAT dashboard-client-${index} ${formatLocation(latitude, longitude)} ${time}\n`,
        );
        assert.match(reply, /^AT /, `IAMAT of client ${index}`);
      }),
    );
  }
  for (const { latitude, longitude } of locations) {
    const cell = cellOf(latitude, longitude);
    cells.set(cell, (cells.get(cell) ?? 0) + 1);
  }
  assert.ok(!cells.has(cellOf(0, 0)), "no client shares the probes' cell");
  await herd.waitConverged(names);

  await using dashboard = await DashboardProcess.start(herd.config);
  assert.equal(dashboard.url, `http://127.0.0.1:${dashboardPort}/`);
  const profile = await Deno.makeTempDir({ dir: "/tmp", prefix: "herd-chromium-" });
  const browser = await launchBrowser(profile);
  try {
    const page = await browser.newPage();
    await page.setViewport({ width: 1280, height: 1000 });
    const requests: string[] = [];
    page.on("request", (request) => requests.push(request.url()));
    const errors: string[] = [];
    page.on("pageerror", (error) => errors.push(String(error)));
    await page.goto(dashboard.url, { waitUntil: "load" });
    let before: Picture | undefined;

    await t.step("the page shows every server of the config up, and every link up", async () => {
      await page.waitForFunction(
        (count: number) =>
          document.querySelectorAll('.node[data-state="up"]').length === count &&
          document.querySelectorAll('.link:not([data-state="up"])').length === 0,
        { timeout: 10_000 },
        names.length,
      );
      const state = await shown(page);
      assert.deepEqual(Object.keys(state.nodes), names);
      assert.deepEqual(Object.keys(state.rows), names);
      assert.deepEqual(Object.values(state.rows), names.map(() => "up"));
      assert.deepEqual(Object.keys(state.links), linkKeys);
      const labels = await page.$$eval(".node .name", (elements) => elements.map((element) => element.textContent));
      assert.deepEqual(labels, names);
      assert.match(await page.$eval("#summary", (element) => element.textContent!), /^all 5 servers up, same records$/);
    });

    await t.step(
      "the map has Natural Earth's countries and a cell for every client location, with its count",
      async () => {
        assert.ok(await page.$$eval("svg.map path.country", (paths) => paths.length) >= 170);
        await page.waitForFunction(
          (expected: [string, number][]) =>
            expected.every(([cell, count]) =>
              document.querySelector(`#density path[data-cell="${cell}"]`)?.getAttribute("data-count") === String(count)
            ),
          { timeout: 10_000 },
          [...cells],
        );
        // The probes TestHerd sends at +0+0 make the one other cell.
        assert.equal(await page.$$eval("#density path", (paths) => paths.length), cells.size + 1);
      },
    );

    await t.step("a screenshot shows the sea, the land, the density cells and the links up", async () => {
      const png = await page.screenshot({ fullPage: true });
      assert.ok(png.length > 50_000, `a ${png.length}-byte screenshot is too small to hold the page`);
      before = new Picture(png);
      const { colours, commonest } = before.variety();
      assert.ok(colours >= 100, `only ${colours} colours`);
      assert.ok(commonest < 0.6, `one colour covers ${(commonest * 100).toFixed(1)}% of the page`);
      assert.ok(before.near(UP) >= 2000, `${before.near(UP)} pixels of the links' and nodes' green`);
      const map = new Picture(await (await page.$("svg.map"))!.screenshot());
      assert.ok(map.near(SEA) > map.pixels * 0.1, `${map.near(SEA)} of ${map.pixels} map pixels are sea`);
      assert.ok(map.near(LAND) > map.pixels * 0.1, `${map.near(LAND)} of ${map.pixels} map pixels are land`);
      const density = map.count(densityColour);
      assert.ok(density >= 300, `${density} map pixels have a density cell's colour`);
    });

    await t.step(
      `killing ${KILLED} shows it and its links down within ${DOWN_WITHIN_MS} ms, and nothing else`,
      async () => {
        const killedAt = performance.now();
        await herd.stop(KILLED, "SIGKILL");
        await page.waitForFunction(
          (name: string) =>
            document.querySelector(`.node[data-server="${name}"]`)!.dataset.state === "down" &&
            [...document.querySelectorAll(".link[data-link]")]
              .filter((line) => line.dataset.link!.split(" ").includes(name))
              .every((line) => line.dataset.state === "down"),
          { timeout: DOWN_WITHIN_MS, polling: "mutation" },
          KILLED,
        );
        const elapsed = performance.now() - killedAt;
        console.log(`${KILLED} shown down ${elapsed.toFixed(0)} ms after SIGKILL`);
        assert.ok(elapsed < DOWN_WITHIN_MS);
        const state = await shown(page);
        for (const name of names) assert.equal(state.rows[name], name === KILLED ? "down" : "up", name);
        for (const key of linkKeys) {
          assert.equal(state.links[key], key.split(" ").includes(KILLED) ? "down" : "up", key);
        }
        const png = await page.screenshot({ fullPage: true });
        await Deno.writeFile(SCREENSHOT, png);
        const after = new Picture(png);
        assert.ok(
          after.near(DOWN) > before!.near(DOWN) + 1000,
          `red: ${before!.near(DOWN)} pixels, then ${after.near(DOWN)}`,
        );
        assert.ok(after.near(UP) < before!.near(UP), `green: ${before!.near(UP)} pixels, then ${after.near(UP)}`);
      },
    );

    await t.step(`${KILLED} restarted is shown up again, with its links`, async () => {
      await herd.start(KILLED);
      await page.waitForFunction(
        () => document.querySelectorAll('.node:not([data-state="up"]), .link:not([data-state="up"])').length === 0,
        { timeout: 10_000 },
      );
    });

    await t.step("the page asked nothing of any address but the dashboard's", () => {
      assert.ok(requests.includes(`${dashboard.url}events`), `requests: ${requests.join(", ")}`);
      for (const url of requests) assert.ok(url.startsWith(dashboard.url), `a request to ${url}`);
      assert.deepEqual(errors, []);
    });
  } finally {
    await browser.close();
    await Deno.remove(profile, { recursive: true });
  }
});
