// A live line chart in SVG: the last N points of a few named series, a legend with each
// series' current value. Drawn by hand: a charting library would outweigh the whole console.

import { h, replace } from "./dom";

const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777"];
const WIDTH = 360;
const HEIGHT = 110;

export class Chart {
  readonly element: HTMLElement;
  private readonly svg = document.createElementNS(SVG, "svg");
  private readonly legend: HTMLElement;
  private readonly series = new Map<string, number[]>();

  /** `testid` names the chart; its legend items are `<testid>-<series>`. */
  constructor(
    title: string,
    private readonly testid: string,
    private readonly unit = "",
    private readonly points = 30,
    private readonly maxSeries = 6,
  ) {
    this.svg.setAttribute("viewBox", `0 0 ${WIDTH} ${HEIGHT}`);
    this.svg.setAttribute("class", "chart");
    this.legend = h("ul", { class: "legend", "data-testid": `${testid}-legend` });
    this.element = h("section", { class: "card", "data-testid": testid }, h("h3", {}, title), this.svg, this.legend);
  }

  /** Adds one point per series (a series absent now counts 0). */
  push(values: Map<string, number> | Record<string, number>): void {
    const now = values instanceof Map ? values : new Map(Object.entries(values));
    for (const name of now.keys()) {
      if (!this.series.has(name)) this.series.set(name, []);
    }
    for (const [name, points] of this.series) {
      points.push(now.get(name) ?? 0);
      if (points.length > this.points) points.shift();
    }
    // Keep the busiest series (by recent peak) when there are too many to read.
    if (this.series.size > this.maxSeries) {
      const ranked = [...this.series].sort((a, b) => Math.max(...b[1]) - Math.max(...a[1]));
      for (const [name] of ranked.slice(this.maxSeries)) this.series.delete(name);
    }
    this.render();
  }

  private render(): void {
    const all = [...this.series.values()].flat();
    const max = Math.max(1e-9, ...all) * 1.1;
    const paths = [...this.series.values()].map((points, i) => {
      const step = WIDTH / Math.max(1, this.points - 1);
      const offset = (this.points - points.length) * step;
      const d = points
        .map((v, j) => `${j ? "L" : "M"}${(offset + j * step).toFixed(1)},${(HEIGHT - (v / max) * HEIGHT).toFixed(1)}`)
        .join("");
      const path = document.createElementNS(SVG, "path");
      path.setAttribute("d", d);
      path.setAttribute("stroke", COLORS[i % COLORS.length]);
      return path;
    });
    replace(this.svg, ...paths);
    replace(
      this.legend,
      ...[...this.series].map(([name, points], i) =>
        h(
          "li",
          { "data-testid": `${this.testid}-${name}` },
          swatch(COLORS[i % COLORS.length]),
          `${name || "(none)"}: `,
          h("b", { "data-value": String(points.at(-1) ?? 0) }, format(points.at(-1) ?? 0) + this.unit),
        ),
      ),
    );
  }
}

/** A colour sample (set through the CSSOM: the page's policy forbids style attributes). */
function swatch(color: string): HTMLElement {
  const element = h("span", { class: "swatch" });
  element.style.background = color;
  return element;
}

/** A figure with at most 3 significant decimals. */
export function format(n: number): string {
  if (n === 0) return "0";
  if (Math.abs(n) >= 100) return n.toFixed(0);
  return Number(n.toPrecision(3)).toString();
}
