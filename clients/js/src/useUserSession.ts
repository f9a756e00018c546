/**
 * `useUserSession`: the React hook of seed C (User Session Durable Object), kept
 * call-compatible so an app that used it against Cloudflare runs unchanged against sessiond.
 *
 * Contract kept from the seed (docs/realtime.md §1):
 * - socket `ws(s)://<page host>/__user-session?userId=…&deviceId=…` on the page's origin (so
 *   the session cookie rides on the upgrade); deviceId = first 20 characters of the user
 *   agent + `-` + the mount time, one per mount;
 * - a `ping` every 30 s; `isLoading` clears on `initial_state`; `state` frames merge into the
 *   state; `error` frames set `error`; unknown frames are only logged;
 * - on a close whose reason is `Logged out from all devices` (sessiond also sends code 4001,
 *   which is checked too) → `onLoggedOut()` and **no reconnect**; any other close reconnects
 *   after 1 s·2ⁿ capped at 30 s, at most 10 attempts.
 *
 * Additions that do not change the seed's calls: an optional `token` (sent as `?token=` for
 * apps whose page is not on sessiond's origin), and the acknowledgements sessiond adds
 * (`alreadyJoined`, `notJoined`) update `activeGames` without firing `onGameJoined`/`onGameLeft`
 * for a change that did not happen.
 */

import { useCallback, useEffect, useRef, useState } from "react";

import { SEED_BACKOFF, backoffDelay } from "./backoff.js";
import { isLogoutClose, sameOriginSocketUrl } from "./protocol.js";

export type Presence = "online" | "away" | "offline";

/** The user's cross-device state, as the server sends it. */
export interface UserSessionState {
  userId: string;
  activeGames: string[];
  presence: Presence;
  /** Unix ms of the last change; `null` for a user never seen. */
  lastActive: number | null;
  connectedDevices?: number;
}

export interface UseUserSessionOptions {
  userId: string | null;
  enabled?: boolean;
  onGameJoined?: (gameId: string) => void;
  onGameLeft?: (gameId: string) => void;
  onLoggedOut?: () => void;
  onPresenceChanged?: (presence: Presence) => void;
  /**
   * The session's idle deadline is `expiresInS` seconds away (sessiond's `session_expiring`,
   * `sessions.expiry_warning_s` before it): ask the user, then call `extendSession()`.
   */
  onSessionExpiring?: (expiresInS: number) => void;
  /** Session token for a page not served from sessiond's origin (default: the cookie). */
  token?: string;
}

export interface UseUserSessionResult {
  state: UserSessionState | null;
  isConnected: boolean;
  isLoading: boolean;
  error: string | null;
  joinGame: (gameId: string) => void;
  leaveGame: (gameId: string) => void;
  logoutAllDevices: () => void;
  updatePresence: (presence: Presence) => void;
  /** Slides the idle deadline of the session this socket was opened with (a sessiond extension). */
  extendSession: () => void;
}

/** Path of the seed protocol's endpoint (`realtime.seed_path` on the server). */
export const USER_SESSION_PATH = "/__user-session";
/** The seed hook's heartbeat interval. */
export const PING_INTERVAL_MS = 30_000;

type Frame = { type: string; [field: string]: unknown };

function parse(data: unknown): Frame | null {
  if (typeof data !== "string") return null;
  try {
    const value: unknown = JSON.parse(data);
    if (typeof value === "object" && value !== null && "type" in value) return value as Frame;
  } catch {
    // Reported below like any unreadable frame.
  }
  return null;
}

function stringList(value: unknown): string[] | undefined {
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === "string") : undefined;
}

/** The seed's device id: user agent prefix and mount time. */
function mountDeviceId(): string {
  const agent = typeof navigator === "undefined" ? "unknown" : navigator.userAgent;
  return `${agent.substring(0, 20)}-${Date.now()}`;
}

export function useUserSession(options: UseUserSessionOptions): UseUserSessionResult {
  const { userId, enabled = true, token } = options;
  const [state, setState] = useState<UserSessionState | null>(null);
  const [isConnected, setIsConnected] = useState(false);
  const [isLoading, setIsLoading] = useState(enabled && !!userId);
  const [error, setError] = useState<string | null>(null);
  const [deviceId] = useState(mountDeviceId);
  const socketRef = useRef<WebSocket | null>(null);
  // Callbacks change on every render of the caller; reading them through a ref keeps the
  // socket from reconnecting when they do.
  const callbacks = useRef(options);
  callbacks.current = options;

  useEffect(() => {
    if (!enabled || !userId) {
      setIsLoading(false);
      return undefined;
    }
    setState(null);
    setIsLoading(true);
    let disposed = false;
    let attempts = 0;
    let pingTimer: ReturnType<typeof setInterval> | undefined;
    let reconnectTimer: ReturnType<typeof setTimeout> | undefined;

    const onFrame = (frame: Frame) => {
      switch (frame.type) {
        case "initial_state":
          setState({
            userId: String(frame.userId ?? userId),
            activeGames: stringList(frame.activeGames) ?? [],
            presence: (frame.presence as Presence) ?? "offline",
            lastActive: typeof frame.lastActive === "number" ? frame.lastActive : null,
          });
          setIsLoading(false);
          break;
        case "state": {
          const { type: _type, ...fields } = frame;
          setState((prev) => ({ ...(prev ?? emptyState(userId)), ...fields }) as UserSessionState);
          break;
        }
        case "game_joined":
        case "game_left": {
          const games = stringList(frame.activeGames);
          if (games) setState((prev) => ({ ...(prev ?? emptyState(userId)), activeGames: games }));
          const gameId = String(frame.gameId ?? "");
          if (frame.type === "game_joined" && frame.alreadyJoined !== true) {
            callbacks.current.onGameJoined?.(gameId);
          }
          if (frame.type === "game_left" && frame.notJoined !== true) {
            callbacks.current.onGameLeft?.(gameId);
          }
          break;
        }
        case "presence_updated": {
          const presence = frame.presence as Presence;
          setState((prev) => ({ ...(prev ?? emptyState(userId)), presence }));
          callbacks.current.onPresenceChanged?.(presence);
          break;
        }
        case "session_expiring":
          if (typeof frame.expires_in_s === "number") {
            callbacks.current.onSessionExpiring?.(frame.expires_in_s);
          }
          break;
        case "session_extended":
        case "pong":
          break;
        case "error":
          setError(typeof frame.message === "string" ? frame.message : "Unknown error");
          break;
        default:
          console.log("[useUserSession] unhandled message", frame);
      }
    };

    const connect = () => {
      if (disposed) return;
      const url = new URL(sameOriginSocketUrl(USER_SESSION_PATH));
      url.searchParams.set("userId", userId);
      url.searchParams.set("deviceId", deviceId);
      if (token) url.searchParams.set("token", token);
      const socket = new WebSocket(url.toString());
      socketRef.current = socket;
      socket.onopen = () => {
        attempts = 0;
        setIsConnected(true);
        setError(null);
        pingTimer = setInterval(() => {
          if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "ping" }));
        }, PING_INTERVAL_MS);
      };
      socket.onmessage = (event) => {
        const frame = parse(event.data);
        if (frame) onFrame(frame);
        else console.error("[useUserSession] unreadable message", event.data);
      };
      socket.onerror = () => {
        if (!disposed) setError("WebSocket error");
      };
      socket.onclose = (event) => {
        clearInterval(pingTimer);
        if (socketRef.current === socket) socketRef.current = null;
        if (disposed) return;
        setIsConnected(false);
        if (isLogoutClose(event.code, event.reason)) {
          callbacks.current.onLoggedOut?.();
          return;
        }
        const delay = backoffDelay(SEED_BACKOFF, attempts);
        if (delay === null) {
          setIsLoading(false);
          setError(`Could not reconnect after ${SEED_BACKOFF.maxAttempts} attempts`);
          return;
        }
        attempts += 1;
        reconnectTimer = setTimeout(connect, delay);
      };
    };

    connect();
    return () => {
      disposed = true;
      clearInterval(pingTimer);
      clearTimeout(reconnectTimer);
      socketRef.current?.close(1000, "unmounted");
      socketRef.current = null;
      setIsConnected(false);
    };
  }, [userId, enabled, token, deviceId]);

  const send = useCallback((frame: Frame) => {
    const socket = socketRef.current;
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify(frame));
    } else {
      console.warn("[useUserSession] not connected; dropped", frame.type);
    }
  }, []);

  const joinGame = useCallback((gameId: string) => send({ type: "join_game", gameId }), [send]);
  const leaveGame = useCallback((gameId: string) => send({ type: "leave_game", gameId }), [send]);
  const logoutAllDevices = useCallback(() => send({ type: "logout_all" }), [send]);
  const updatePresence = useCallback(
    (presence: Presence) => send({ type: "update_presence", presence }),
    [send],
  );
  const extendSession = useCallback(() => send({ type: "extend_session" }), [send]);

  return {
    state,
    isConnected,
    isLoading,
    error,
    joinGame,
    leaveGame,
    logoutAllDevices,
    updatePresence,
    extendSession,
  };
}

function emptyState(userId: string): UserSessionState {
  return { userId, activeGames: [], presence: "offline", lastActive: null };
}
