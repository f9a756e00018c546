// Durable Streams: list by prefix, page by page; one stream's metadata (HEAD), its producers,
// a live tail, delete (after confirmation).

import { call, describe } from "./api";
import { bytes, h, replace, table } from "./dom";
import type { Page } from "./page";
import { producersOf } from "./producers";
import { tail } from "./tail";

interface Listed {
  path: string;
  content_type: string;
  tail_offset: string;
  bytes: number;
  closed: boolean;
  expires_at: string | null;
}

const HEAD_FIELDS: [string, string][] = [
  ["content type", "content-type"],
  ["tail (next offset)", "stream-next-offset"],
  ["start offset", "stream-start-offset"],
  ["closed", "stream-closed"],
  ["TTL (s)", "stream-ttl"],
  ["expires at", "stream-expires-at"],
];

export const streams: Page = {
  mount(root) {
    const prefix = h("input", { name: "prefix", placeholder: "prefix (empty: all)", "data-testid": "streams-prefix" });
    const message = h("p", { class: "message", "data-testid": "streams-message" });
    const list = h("div", { "data-testid": "streams-list" });
    const pager = h("div", { class: "toolbar" });
    const detail = h("section", { class: "detail", "data-testid": "stream-detail" });
    // Cursors of the pages seen so far (the first page has none).
    let cursors: (string | null)[] = [null];
    let stopTail: (() => void) | null = null;
    let current = 0;

    const load = async (page: number) => {
      const query = new URLSearchParams({ prefix: prefix.value, limit: "50" });
      const cursor = cursors[page];
      if (cursor) query.set("cursor", cursor);
      const answer = await call("GET", `/v1/streams?${query}`);
      if (!answer.ok) {
        message.textContent = `Could not list: ${describe(answer)}`;
        return;
      }
      const rows: Listed[] = answer.body.streams;
      current = page;
      cursors = cursors.slice(0, page + 1);
      if (answer.body.next_cursor) cursors.push(answer.body.next_cursor);
      message.textContent = `${rows.length} stream${rows.length === 1 ? "" : "s"} on page ${page + 1}`;
      replace(
        list,
        table(
          "streams-table",
          ["path", "content type", "size", "tail", "closed", "expires"],
          rows.map((s) => [
            h("a", { href: "#", "data-testid": `stream-${s.path}`, onclick: (e) => (e.preventDefault(), void open(s.path)) }, s.path),
            s.content_type,
            bytes(s.bytes),
            h("code", {}, s.tail_offset),
            s.closed ? "yes" : "no",
            s.expires_at ?? "—",
          ]),
        ),
      );
      replace(
        pager,
        page > 0 && h("button", { onclick: () => void load(page - 1) }, "← Previous"),
        cursors.length > page + 1 && h("button", { "data-testid": "streams-next", onclick: () => void load(page + 1) }, "Next →"),
      );
    };

    const open = async (path: string) => {
      stopTail?.();
      stopTail = null;
      const head = await call("HEAD", `/v1/stream/${path}`);
      if (!head.ok) {
        replace(detail, h("p", {}, `${path}: ${head.status === 404 ? "not found" : describe(head)}`));
        return;
      }
      const dl = h("dl", { class: "facts", "data-testid": "stream-head" });
      for (const [label, header] of HEAD_FIELDS) {
        const value = head.headers.get(header) ?? (header === "stream-closed" ? "false" : null);
        if (value !== null) dl.append(h("dt", {}, label), h("dd", { "data-testid": `head-${header}` }, value));
      }
      const events = h("ul", { class: "events", "data-testid": "tail-events" });
      const state = h("span", { class: "muted", "data-testid": "tail-state" }, "not tailing");
      const toggle = h("button", { "data-testid": "tail-toggle" }, "Tail live");
      toggle.addEventListener("click", () => {
        if (stopTail) {
          stopTail();
          stopTail = null;
          return;
        }
        const abort = new AbortController();
        stopTail = () => {
          abort.abort();
          state.textContent = "stopped";
          toggle.textContent = "Tail live";
        };
        state.textContent = "tailing";
        toggle.textContent = "Stop";
        tail(path, abort.signal, (e) => {
          if (e.event === "control") {
            state.textContent = "tailing (live)";
            return;
          }
          events.append(h("li", {}, h("code", {}, e.data)));
        }).catch((error: unknown) => {
          if (!abort.signal.aborted) state.textContent = `tail ended: ${String(error)}`;
        });
      });
      const remove = h("button", { class: "danger", "data-testid": "stream-delete" }, "Delete stream");
      remove.addEventListener("click", async () => {
        if (!window.confirm(`Delete the stream ${path} and all its data?`)) return;
        stopTail?.();
        const done = await call("DELETE", `/v1/stream/${path}`);
        replace(detail);
        await load(current);
        message.textContent = done.ok ? `Deleted ${path}` : `Delete failed: ${describe(done)}`;
      });
      replace(detail, h("h3", {}, path), dl, producersOf(path), h("div", { class: "toolbar" }, toggle, state, remove), events);
    };

    const form = h(
      "form",
      {
        class: "toolbar",
        onsubmit: (event) => {
          event.preventDefault();
          cursors = [null];
          void load(0);
        },
      },
      prefix,
      h("button", { type: "submit", "data-testid": "streams-search" }, "List"),
    );
    replace(root, h("h2", {}, "Streams"), form, message, list, pager, detail);
    void load(0);
    return () => stopTail?.();
  },
};
