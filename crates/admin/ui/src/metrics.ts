// The server's own Prometheus text (`/metrics`), scraped by the page: the charts show what an
// operator's Prometheus would, without one. Counters become rates between two scrapes.

import { h } from "./dom";

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

/** Parses the text exposition format (comments and malformed lines are skipped). */
export function parse(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = LINE.exec(line);
    if (!match) continue;
    const labels: Record<string, string> = {};
    for (const [, name, value] of (match[2] ?? "").matchAll(LABEL)) {
      labels[name] = value.replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c));
    }
    const value = Number(match[3]);
    if (!Number.isNaN(value)) samples.push({ name: match[1], labels, value });
  }
  return samples;
}

export type Filter = (labels: Record<string, string>) => boolean;

/** Sum of the series `name` (matching `filter`). */
export function total(samples: Sample[], name: string, filter: Filter = () => true): number {
  return samples.filter((s) => s.name === name && filter(s.labels)).reduce((sum, s) => sum + s.value, 0);
}

/** Sums of the series `name` per value of `label`. */
export function byLabel(samples: Sample[], name: string, label: string): Map<string, number> {
  const sums = new Map<string, number>();
  for (const s of samples) {
    if (s.name !== name) continue;
    const key = s.labels[label] ?? "";
    sums.set(key, (sums.get(key) ?? 0) + s.value);
  }
  return sums;
}

/** Two consecutive scrapes. */
export interface Scrape {
  at: number;
  samples: Sample[];
  previous?: { at: number; samples: Sample[] };
}

/** Per-second increase of counter `name` between the two scrapes (0 on a reset or the first). */
export function rate(scrape: Scrape, name: string, filter?: Filter): number {
  const prev = scrape.previous;
  if (!prev) return 0;
  const seconds = (scrape.at - prev.at) / 1000;
  const delta = total(scrape.samples, name, filter) - total(prev.samples, name, filter);
  return seconds > 0 && delta > 0 ? delta / seconds : 0;
}

/** Per-second increase of counter `name` per value of `label`. */
export function rateBy(scrape: Scrape, name: string, label: string): Map<string, number> {
  const out = new Map<string, number>();
  const prev = scrape.previous;
  if (!prev) return out;
  const seconds = (scrape.at - prev.at) / 1000;
  const before = byLabel(prev.samples, name, label);
  for (const [key, now] of byLabel(scrape.samples, name, label)) {
    const delta = now - (before.get(key) ?? 0);
    out.set(key, seconds > 0 && delta > 0 ? delta / seconds : 0);
  }
  return out;
}

/** Mean of a histogram's observations between the two scrapes (null: none). */
export function meanBetween(scrape: Scrape, name: string): number | null {
  const prev = scrape.previous;
  if (!prev) return null;
  const count = total(scrape.samples, `${name}_count`) - total(prev.samples, `${name}_count`);
  const sum = total(scrape.samples, `${name}_sum`) - total(prev.samples, `${name}_sum`);
  return count > 0 ? sum / count : null;
}

/** Scrapes `/metrics` every `everyMs` while started; each scrape goes to `onScrape`. */
export class Poller {
  private timer: number | undefined;
  private last: { at: number; samples: Sample[] } | undefined;
  readonly status = h("span", { class: "muted", "data-testid": "metrics-status" }, "waiting for /metrics");

  constructor(
    private readonly onScrape: (scrape: Scrape) => void,
    private readonly everyMs = 2000,
  ) {}

  start(): void {
    const tick = async () => {
      try {
        const response = await fetch("/metrics", { cache: "no-store" });
        if (!response.ok) throw new Error(`/metrics answered ${response.status}`);
        const samples = parse(await response.text());
        const at = Date.now();
        this.onScrape({ at, samples, previous: this.last });
        this.last = { at, samples };
        this.status.textContent = `live · scraped ${new Date(at).toLocaleTimeString()}`;
      } catch (error) {
        this.status.textContent = `metrics unavailable: ${String(error)}`;
      }
    };
    void tick();
    this.timer = window.setInterval(tick, this.everyMs);
  }

  stop(): void {
    window.clearInterval(this.timer);
  }
}
