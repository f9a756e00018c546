// A stream's idempotent producers (GET /v1/stream-producers/<path>): who writes to it and where
// each writer's epoch and sequence stand, which is what an operator checks when a producer's
// appends are refused as stale or out of order. Paged by producer id with "More".

import { call, describe } from "./api";
import { h, replace, table } from "./dom";

interface Producer {
  id: string;
  epoch: number;
  seq: number;
  last_seen_at: string | null;
}

/** A section listing the producers of `path`, loading its first page now. */
export function producersOf(path: string): HTMLElement {
  const section = h("div", { "data-testid": "stream-producers" });
  const rows: Producer[] = [];
  const load = async (after: string | null) => {
    const query = new URLSearchParams({ limit: "100" });
    if (after) query.set("after", after);
    const answer = await call("GET", `/v1/stream-producers/${path}?${query}`);
    if (!answer.ok) {
      replace(section, h("h4", {}, "Producers"), h("p", { class: "message" }, `Could not list producers: ${describe(answer)}`));
      return;
    }
    rows.push(...(answer.body.producers as Producer[]));
    const next: string | null = answer.body.next_after;
    replace(
      section,
      h("h4", {}, `Producers (${rows.length}${next ? "+" : ""})`),
      rows.length === 0
        ? h("p", { class: "muted", "data-testid": "producers-none" }, "No idempotent producer has written to this stream.")
        : table(
            "producers-table",
            ["id", "epoch", "seq", "last write"],
            rows.map((p) => [h("code", { "data-testid": `producer-${p.id}` }, p.id), p.epoch, p.seq, p.last_seen_at ?? "—"]),
          ),
      next && h("button", { "data-testid": "producers-more", onclick: () => void load(next) }, "More producers"),
    );
  };
  void load(null);
  return section;
}
