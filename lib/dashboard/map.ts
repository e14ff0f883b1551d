/**
 * The dashboard's world map, drawn on the server: Natural Earth's country
 * outlines (world-atlas's `countries-110m.json`, TopoJSON, imported into the
 * module graph so it needs no read permission) projected with d3-geo's
 * Natural Earth projection into SVG path data once, and the cells of a
 * density report projected the same way. The browser only inserts paths:
 * it loads no library and no map data from anywhere.
 */

import world from "world-atlas/countries-110m.json" with { type: "json" };
// @ts-types="@types/topojson-client"
import { feature } from "topojson-client";
import type { GeometryCollection, Topology } from "topojson-specification";
// @ts-types="@types/d3-geo"
import { geoGraticule10, geoNaturalEarth1, geoPath, type GeoProjection } from "d3-geo";

/** The world as SVG path data in a `width` by `height` box. */
export interface WorldDrawing {
  /** Width of the drawing, in SVG units. */
  width: number;
  /** Height of the drawing, in SVG units. */
  height: number;
  /** The outline of the globe (the sea). */
  sphere: string;
  /** Lines every 10 degrees. */
  graticule: string;
  /** Each country's outline, with its name. */
  countries: { name: string; d: string }[];
  /** The point a longitude and latitude land on, or null when it cannot be projected. */
  project(longitude: number, latitude: number): [number, number] | null;
}

/** Options for {@linkcode drawWorld}. */
export interface DrawWorldOptions {
  /**
   * Width of the drawing.
   * @default {960}
   */
  width?: number;
  /**
   * Height of the drawing.
   * @default {500}
   */
  height?: number;
}

type _Countries = Topology<{ countries: GeometryCollection<{ name: string }> }>;

/** Projects Natural Earth's 1:110m country outlines into SVG path data. */
export function drawWorld(options: DrawWorldOptions = {}): WorldDrawing {
  const width = options.width ?? 960;
  const height = options.height ?? 500;
  const projection: GeoProjection = geoNaturalEarth1().fitExtent([[4, 4], [width - 4, height - 4]], {
    type: "Sphere",
  });
  const path = geoPath(projection).digits(1);
  const topology = world as unknown as _Countries;
  const collection = feature(topology, topology.objects.countries);
  const countries: { name: string; d: string }[] = [];
  for (const country of collection.features) {
    const d = path(country);
    if (d !== null && d !== "") countries.push({ name: country.properties?.name ?? "", d });
  }
  return {
    width,
    height,
    sphere: path({ type: "Sphere" }) ?? "",
    graticule: path(geoGraticule10()) ?? "",
    countries,
    project(longitude, latitude) {
      return projection([longitude, latitude]);
    },
  };
}

/**
 * The path data of a density cell: the quadrilateral from latitude
 * `-90 + row * size` and longitude `-180 + column * size`, `size` degrees
 * each way, clipped to the globe; "" when it has no area.
 */
export function cellPath(drawing: WorldDrawing, row: number, column: number, size: number): string {
  const south = Math.max(-90, -90 + row * size);
  const north = Math.min(90, -90 + (row + 1) * size);
  const west = Math.max(-180, -180 + column * size);
  const east = Math.min(180, -180 + (column + 1) * size);
  if (north <= south || east <= west) return "";
  const corners = [[west, south], [west, north], [east, north], [east, south]];
  const points: string[] = [];
  for (const [longitude, latitude] of corners) {
    const point = drawing.project(longitude, latitude);
    if (point === null) return "";
    points.push(`${point[0].toFixed(1)},${point[1].toFixed(1)}`);
  }
  return `M${points.join("L")}Z`;
}
