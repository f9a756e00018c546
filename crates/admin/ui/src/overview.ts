// Overview: what the server is and how busy it is, live from its own /metrics.

import { call } from "./api";
import { Chart } from "./chart";
import { h, replace } from "./dom";
import { meanBetween, Poller, rate, rateBy, total } from "./metrics";
import type { Page } from "./page";

function uptime(seconds: number): string {
  const d = Math.floor(seconds / 86400);
  const hms = new Date((seconds % 86400) * 1000).toISOString().slice(11, 19);
  return d ? `${d}d ${hms}` : hms;
}

export const overview: Page = {
  mount(root) {
    const facts = h("dl", { class: "facts", "data-testid": "facts" });
    const requests = new Chart("Requests/s by route", "chart-requests", "/s");
    const commits = new Chart("Engine commits", "chart-commits");
    const appends = new Chart("Stream appends/s", "chart-appends", "/s");
    const sockets = new Chart("Open connections", "chart-sockets");
    const alarms = new Chart("Alarms/s", "chart-alarms", "/s");
    const poller = new Poller((scrape) => {
      requests.push(rateBy(scrape, "sessiond_http_requests_total", "route"));
      commits.push({
        "commits/s": rate(scrape, "sessiond_engine_commits_total"),
        "mean batch size": meanBetween(scrape, "sessiond_engine_commit_batch_size") ?? 0,
      });
      appends.push({ appends: rate(scrape, "sessiond_streams_appends_total") });
      sockets.push({
        "realtime sockets": total(scrape.samples, "sessiond_realtime_connections"),
        "stream SSE readers": total(scrape.samples, "sessiond_streams_live_open", (l) => l.mode === "sse"),
        "stream long-polls": total(scrape.samples, "sessiond_streams_live_open", (l) => l.mode !== "sse"),
      });
      alarms.push({
        fired: rate(scrape, "sessiond_alarm_fires_total"),
        retried: rate(scrape, "sessiond_alarm_retries_total"),
        failed: rate(scrape, "sessiond_alarm_failures_total"),
      });
    });
    replace(
      root,
      h("h2", {}, "Overview"),
      facts,
      poller.status,
      h("div", { class: "grid" }, requests.element, commits.element, appends.element, sockets.element, alarms.element),
    );
    let started: number | null = null;
    const showFacts = async () => {
      const info = await call("GET", "/admin/api/info");
      if (!info.ok) return;
      started = Date.now() - info.body.uptime_s * 1000;
      const fact = (name: string, value: string, id: string) => [h("dt", {}, name), h("dd", { "data-testid": id }, value)];
      replace(
        facts,
        ...fact("Engine", info.body.engine, "fact-engine"),
        ...fact("Version", info.body.version, "fact-version"),
        ...fact("Started", new Date(info.body.started_at).toLocaleString(), "fact-started"),
        ...fact("Uptime", uptime(info.body.uptime_s), "fact-uptime"),
      );
    };
    void showFacts();
    const clock = window.setInterval(() => {
      const cell = facts.querySelector('[data-testid="fact-uptime"]');
      if (cell && started !== null) cell.textContent = uptime(Math.floor((Date.now() - started) / 1000));
    }, 1000);
    poller.start();
    return () => {
      poller.stop();
      window.clearInterval(clock);
    };
  },
};
