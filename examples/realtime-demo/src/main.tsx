/**
 * The realtime demo page: one user's cross-device state through seed C's `useUserSession`
 * hook, and a channel through the v1 `RealtimeClient`. Open it in two tabs (two devices of
 * one user) and watch each change in the other.
 *
 * Elements carry `data-testid`s: the browser test (clients/js/test) drives this very page.
 */

import { StrictMode, useEffect, useMemo, useState } from "react";
import { createRoot } from "react-dom/client";

import {
  type ChannelMessage,
  type ConnectionState,
  type Device,
  listDevices,
  type Presence,
  type PresenceMap,
  RealtimeClient,
  useUserSession,
} from "../../../clients/js/src/index.js";

declare global {
  interface Window {
    /** The page's v1 client, for experiments in the console (and the browser test). */
    sessiondDemo?: { client: RealtimeClient; events: string[] };
  }
}

function Login({ onLogin }: { onLogin: (userId: string) => void }) {
  const [userId, setUserId] = useState("alice");
  const [error, setError] = useState<string | null>(null);
  const submit = async () => {
    const response = await fetch("/demo/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ userId }),
    });
    if (response.ok) onLogin(userId);
    else setError(`sign-in failed: ${response.status} ${await response.text()}`);
  };
  return (
    <section>
      <h2>Sign in</h2>
      <p>Creates a sessiond session and stores its id in this site's session cookie.</p>
      <input data-testid="login-user" value={userId} onChange={(e) => setUserId(e.target.value)} />
      <button data-testid="login" onClick={() => void submit()}>
        Sign in
      </button>
      {error && <p data-testid="login-error">{error}</p>}
    </section>
  );
}

function UserSessionPanel({ userId, onLoggedOut }: { userId: string; onLoggedOut: () => void }) {
  const [gameId, setGameId] = useState("game-1");
  const [log, setLog] = useState<string[]>([]);
  const note = (line: string) => setLog((lines) => [line, ...lines].slice(0, 20));
  const session = useUserSession({
    userId,
    onGameJoined: (id) => note(`joined ${id}`),
    onGameLeft: (id) => note(`left ${id}`),
    onPresenceChanged: (presence) => note(`presence ${presence}`),
    onSessionExpiring: (seconds) => note(`session expiring in ${seconds}s`),
    onLoggedOut,
  });
  const status = session.isLoading
    ? "connecting"
    : session.isConnected
      ? "connected"
      : "disconnected";
  return (
    <section>
      <h2>
        User session <small data-testid="status">{status}</small>
      </h2>
      {session.error && <p data-testid="error">error: {session.error}</p>}
      <p>
        Presence: <b data-testid="presence">{session.state?.presence ?? "?"}</b>{" "}
        <select
          data-testid="presence-select"
          value={session.state?.presence ?? "online"}
          onChange={(e) => session.updatePresence(e.target.value as Presence)}
        >
          <option value="online">online</option>
          <option value="away">away</option>
          <option value="offline">offline</option>
        </select>
      </p>
      <p>
        <input data-testid="game-id" value={gameId} onChange={(e) => setGameId(e.target.value)} />
        <button data-testid="join" onClick={() => session.joinGame(gameId)}>
          Join game
        </button>
        <button data-testid="leave" onClick={() => session.leaveGame(gameId)}>
          Leave game
        </button>
        <button data-testid="extend-session" onClick={() => session.extendSession()}>
          Stay signed in
        </button>
      </p>
      <p>
        Last active:{" "}
        <span data-testid="last-active">
          {session.state?.lastActive ? new Date(session.state.lastActive).toISOString() : "never"}
        </span>
      </p>
      <p>Active games:</p>
      <ul data-testid="games">
        {(session.state?.activeGames ?? []).map((game) => (
          <li key={game}>{game}</li>
        ))}
      </ul>
      <button data-testid="logout-all" onClick={session.logoutAllDevices}>
        Log out all devices
      </button>
      <p>Events:</p>
      <ul data-testid="log">
        {log.map((line, i) => (
          <li key={i}>{line}</li>
        ))}
      </ul>
    </section>
  );
}

function ChannelPanel({ userId }: { userId: string }) {
  const client = useMemo(
    () => new RealtimeClient({ deviceId: `demo-${Math.random().toString(36).slice(2, 8)}` }),
    [],
  );
  const [state, setState] = useState<ConnectionState>(client.state);
  const [messages, setMessages] = useState<ChannelMessage[]>([]);
  const [presence, setPresence] = useState<PresenceMap>({});
  const [text, setText] = useState("hello");
  const channel = `user:${userId}`;

  useEffect(() => {
    const events: string[] = [];
    window.sessiondDemo = { client, events };
    const offs = [
      client.on("state", setState),
      client.on("subscribed", (s) =>
        events.push(`subscribed ${s.channel} recovered=${String(s.recovered)} n=${s.recoveredCount}`),
      ),
      client.on("recovery_failed", ({ channel: c }) => events.push(`recovery_failed ${c}`)),
      client.on("session_expiring", ({ expiresInS }) => events.push(`session_expiring ${expiresInS}`)),
      client.on("closed", ({ code }) => events.push(`closed ${code}`)),
    ];
    void client
      .subscribe(channel, {
        onMessage: (m) => setMessages((list) => [...list, m]),
        onPresence: setPresence,
      })
      .catch((error: unknown) => events.push(`subscribe failed ${String(error)}`));
    client.connect();
    return () => {
      offs.forEach((off) => off());
      client.close();
    };
  }, [client, channel]);

  return (
    <section>
      <h2>
        Channel <code>{channel}</code> <small data-testid="v1-state">{state}</small>
      </h2>
      <p>
        Devices here:{" "}
        <span data-testid="v1-presence">
          {Object.values(presence)
            .flatMap((entry) => entry.metas.map((m) => m.deviceId))
            .sort()
            .join(", ")}
        </span>
      </p>
      <input data-testid="v1-text" value={text} onChange={(e) => setText(e.target.value)} />
      <button
        data-testid="v1-publish"
        onClick={() => void client.publish(channel, { text }).catch(() => undefined)}
      >
        Publish
      </button>
      <ol data-testid="v1-messages">
        {messages.map((m, i) => (
          // Offsets restart when the channel's history is lost (new epoch): not a unique key.
          <li key={i} data-offset={m.offset}>
            {JSON.stringify(m.data)}
          </li>
        ))}
      </ol>
    </section>
  );
}

/** "Your devices": each session of the user with the sockets it has open on any node. */
function DevicesPanel({ userId }: { userId: string }) {
  const [devices, setDevices] = useState<Device[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const refresh = () =>
    listDevices({ userId }).then(
      (list) => {
        setDevices(list);
        setError(null);
      },
      (e: unknown) => setError(String(e)),
    );
  return (
    <section>
      <h2>Your devices</h2>
      <button data-testid="devices-refresh" onClick={() => void refresh()}>
        Refresh
      </button>
      {error && <p data-testid="devices-error">{error}</p>}
      <ul data-testid="devices">
        {(devices ?? []).map((d, i) => (
          <li key={d.session?.id ?? `service-${i}`} data-session={d.session?.id ?? ""}>
            {d.session ? `signed in ${new Date(d.session.created_at).toISOString()}` : "server connections"}
            {": "}
            {d.connections.map((c) => `${c.protocol} ${c.device_id} (${c.presence})`).join(", ") || "no live socket"}
          </li>
        ))}
      </ul>
    </section>
  );
}

function App() {
  const [userId, setUserId] = useState<string | null>(null);
  const [checked, setChecked] = useState(false);
  const [loggedOut, setLoggedOut] = useState(false);

  useEffect(() => {
    fetch("/demo/me")
      .then(async (r) => (r.ok ? ((await r.json()) as { userId: string }).userId : null))
      .then(setUserId, () => setUserId(null))
      .finally(() => setChecked(true));
  }, []);

  if (!checked) return <p>Loading…</p>;
  if (!userId) return <Login onLogin={setUserId} />;
  // After a logout the panels stay mounted: the hook and the client must stay down on their
  // own (no reconnect), not because they were unmounted.
  return (
    <>
      {loggedOut ? (
        <p className="banner">
          <b data-testid="logged-out">Logged out from all devices</b>{" "}
          <button onClick={() => window.location.reload()}>Sign in again</button>
        </p>
      ) : (
        <p>
          Signed in as <b data-testid="user">{userId}</b>
        </p>
      )}
      <UserSessionPanel userId={userId} onLoggedOut={() => setLoggedOut(true)} />
      <ChannelPanel userId={userId} />
      <DevicesPanel userId={userId} />
    </>
  );
}

const root = document.getElementById("root");
if (root) {
  createRoot(root).render(
    <StrictMode>
      <App />
    </StrictMode>,
  );
}
