// Realtime: who is connected to this node and which channels it holds (refreshed live),
// presence of a channel, disconnecting a user, publishing a test message.

import { call, describe, seg } from "./api";
import { h, replace, table, when } from "./dom";
import { every, type Page } from "./page";

interface Conn {
  id: string;
  device_id: string;
  connected_at: number;
  ip: string | null;
  protocol: string;
  channels: string[];
}

export const realtime: Page = {
  mount(root) {
    const stats = h("p", { class: "muted", "data-testid": "realtime-stats" });
    const message = h("p", { class: "message", "data-testid": "realtime-message" });
    const users = h("div", { "data-testid": "realtime-users" });
    const channels = h("div", { "data-testid": "realtime-channels" });
    const presence = h("pre", { class: "presence", "data-testid": "realtime-presence" });

    const disconnect = async (user: string) => {
      if (!window.confirm(`Disconnect every socket of ${user}?`)) return;
      const done = await call("DELETE", `/v1/realtime/users/${seg(user)}/connections`);
      message.textContent = done.ok ? `Asked ${done.body.closed} socket(s) of ${user} to close` : `Failed: ${describe(done)}`;
    };
    const showPresence = async (channel: string) => {
      const answer = await call("GET", `/v1/realtime/channels/${seg(channel)}/presence`);
      presence.textContent = answer.ok
        ? `${channel}\n${JSON.stringify(answer.body.presence, null, 2)}`
        : `presence of ${channel}: ${describe(answer)}`;
    };

    // Tables are rebuilt only when their data changed, so a button stays put under the
    // operator's pointer between refreshes.
    const shown = new Map<HTMLElement, string>();
    const changed = (target: HTMLElement, data: unknown) => {
      const text = JSON.stringify(data);
      if (shown.get(target) === text) return false;
      shown.set(target, text);
      return true;
    };

    const refresh = async () => {
      const [s, u, c] = await Promise.all([
        call("GET", "/v1/realtime/stats"),
        call("GET", "/v1/realtime/connections"),
        call("GET", "/v1/realtime/channels"),
      ]);
      if (!s.ok) {
        stats.textContent = `Realtime unavailable: ${describe(s)}`;
        return;
      }
      stats.textContent = `This node: ${s.body.connections} sockets, ${s.body.resident_users} users in memory, ${s.body.channels} channels`;
      if (u.ok && changed(users, u.body.users)) {
        const rows = (u.body.users as { user_id: string; connections: Conn[] }[]).flatMap(({ user_id, connections }) =>
          connections.map((c, i) => [
            i === 0 ? h("b", {}, user_id) : "",
            c.device_id,
            c.protocol,
            c.ip ?? "—",
            when(c.connected_at),
            c.channels.join(", ") || "—",
            i === 0
              ? h("button", { class: "danger", "data-testid": `disconnect-${user_id}`, onclick: () => void disconnect(user_id) }, "Disconnect user")
              : "",
          ]),
        );
        replace(users, table("connections-table", ["user", "device", "protocol", "ip", "connected", "channels", ""], rows));
      }
      if (c.ok && changed(channels, c.body.channels)) {
        const rows = (c.body.channels as { channel: string; subscribers: number; present_users: number; history_bytes: number }[]).map(
          (ch) => [
            h("a", { href: "#", onclick: (e) => (e.preventDefault(), void showPresence(ch.channel)) }, ch.channel),
            String(ch.subscribers),
            String(ch.present_users),
            String(ch.history_bytes),
          ],
        );
        replace(channels, table("channels-table", ["channel", "subscribers", "present users", "history bytes"], rows));
      }
    };

    const channel = h("input", { name: "channel", placeholder: "channel, e.g. room:lobby", required: true, "data-testid": "publish-channel" });
    const data = h("input", { name: "data", value: '{"hello":"from the admin console"}', "data-testid": "publish-data" });
    const publish = h(
      "form",
      {
        class: "toolbar",
        onsubmit: async (event) => {
          event.preventDefault();
          let payload: unknown;
          try {
            payload = JSON.parse(data.value);
          } catch {
            message.textContent = "The message must be JSON";
            return;
          }
          const done = await call("POST", "/v1/realtime/publish", { channel: channel.value.trim(), data: payload });
          message.textContent = done.ok ? `Published at offset ${done.body.offset} on ${done.body.channel}` : `Publish failed: ${describe(done)}`;
        },
      },
      channel,
      data,
      h("button", { type: "submit", "data-testid": "publish" }, "Publish test message"),
    );

    replace(
      root,
      h("h2", {}, "Realtime"),
      stats,
      message,
      h("h3", {}, "Connected users"),
      users,
      h("h3", {}, "Channels"),
      channels,
      presence,
      h("h3", {}, "Publish"),
      publish,
    );
    return every(2000, refresh);
  },
};
