// Session middleware: decisions, new against returning clients, fallbacks — from /metrics.

import { Chart } from "./chart";
import { h, replace } from "./dom";
import { Poller, rate } from "./metrics";
import type { Page } from "./page";

export const middleware: Page = {
  mount(root) {
    const decisions = new Chart("Decisions/s", "chart-decisions", "/s");
    const clients = new Chart("Clients/s: new vs returning", "chart-clients", "/s");
    const fallbacks = new Chart("Fallbacks and refusals/s", "chart-fallbacks", "/s");
    const poller = new Poller((scrape) => {
      const all = rate(scrape, "sessiond_middleware_decisions_total");
      const fresh = rate(scrape, "sessiond_middleware_new_clients_total");
      const fallback = rate(scrape, "sessiond_middleware_fallbacks_total");
      decisions.push({ decisions: all, "new sessions": rate(scrape, "sessiond_middleware_new_sessions_total") });
      // A decision is for a new client, a returning one, or answered without the engine.
      clients.push({ new: fresh, returning: Math.max(0, all - fresh - fallback) });
      fallbacks.push({
        fallbacks: fallback,
        "rate limited": rate(scrape, "sessiond_middleware_rate_limited_total"),
        rehydrations: rate(scrape, "sessiond_middleware_rehydrations_total"),
      });
    });
    replace(
      root,
      h("h2", {}, "Session middleware"),
      poller.status,
      h("div", { class: "grid" }, decisions.element, clients.element, fallbacks.element),
    );
    poller.start();
    return () => poller.stop();
  },
};
