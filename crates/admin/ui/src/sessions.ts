// Sessions: one user's sessions with their devices; revoke one or all (after confirmation).

import { call, describe, seg } from "./api";
import { h, replace, table, when } from "./dom";
import type { Page } from "./page";

interface Session {
  id: string;
  created_at: number;
  last_seen_at: number;
  expires_at: number;
  device: unknown;
}

/** A short, still unique-looking form of a session id (the id is the user's credential). */
const short = (id: string) => `${id.slice(0, 6)}…${id.slice(-4)}`;

function device(value: unknown): string {
  if (value === null || value === undefined) return "—";
  if (typeof value !== "object") return String(value);
  return Object.entries(value as Record<string, unknown>)
    .map(([k, v]) => `${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`)
    .join(", ");
}

export const sessions: Page = {
  mount(root) {
    const input = h("input", { name: "user", placeholder: "user id", required: true, "data-testid": "sessions-user" });
    const message = h("p", { class: "message", "data-testid": "sessions-message" });
    const results = h("div", { "data-testid": "sessions-results" });

    const load = async (user: string) => {
      const answer = await call<{ sessions: Session[] }>("GET", `/v1/users/${seg(user)}/sessions`);
      if (!answer.ok) {
        replace(results);
        message.textContent = `Could not list: ${describe(answer)}`;
        return;
      }
      const list = answer.body.sessions;
      message.textContent = `${list.length} live session${list.length === 1 ? "" : "s"} of ${user}`;
      const revokeOne = async (s: Session) => {
        if (!window.confirm(`Revoke session ${short(s.id)} of ${user}?`)) return;
        const done = await call("DELETE", `/v1/sessions/${seg(s.id)}`);
        await load(user);
        message.textContent = done.ok ? `Revoked ${short(s.id)}` : `Revoke failed: ${describe(done)}`;
      };
      const revokeAll = async () => {
        if (!window.confirm(`Revoke every session of ${user}?`)) return;
        const done = await call("DELETE", `/v1/users/${seg(user)}/sessions`);
        await load(user);
        message.textContent = done.ok ? `Revoked ${done.body.revoked} sessions of ${user}` : `Revoke failed: ${describe(done)}`;
      };
      replace(
        results,
        table(
          "sessions-table",
          ["session", "device", "created", "last seen", "expires", ""],
          list.map((s) => [
            h("code", { title: s.id, "data-session": s.id }, short(s.id)),
            device(s.device),
            when(s.created_at),
            when(s.last_seen_at),
            when(s.expires_at),
            h("button", { class: "danger", "data-testid": `revoke-${s.id}`, onclick: () => void revokeOne(s) }, "Revoke"),
          ]),
        ),
        list.length > 0 &&
          h("button", { class: "danger", "data-testid": "revoke-all", onclick: () => void revokeAll() }, "Revoke all"),
      );
    };

    const form = h(
      "form",
      {
        class: "toolbar",
        onsubmit: (event) => {
          event.preventDefault();
          void load(input.value.trim());
        },
      },
      input,
      h("button", { type: "submit", "data-testid": "sessions-search" }, "Search"),
    );
    replace(root, h("h2", {}, "Sessions"), form, message, results);
    input.focus();
    return () => {};
  },
};
