/**
 * Wire shapes of the v1 realtime protocol (docs/realtime.md §2) and the close codes both
 * protocols share (§0), in one place so the client and the hook agree on them.
 */

import type { PresenceMap } from "./presence.js";

/** Close codes sent by sessiond. */
export const CloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  PolicyViolation: 1008,
  MessageTooBig: 1009,
  TryAgainLater: 1013,
  /** `logout_all`, or the user's sessions were revoked: do not reconnect. */
  LoggedOut: 4001,
  /** The user's state was cleared (`POST …/clear`). */
  StateCleared: 4002,
  /** Closed through the server API; reconnect only if the app wants. */
  DisconnectedByServer: 4003,
} as const;

/** The close reason that accompanies {@link CloseCode.LoggedOut} (seed C's hook matches it). */
export const LOGOUT_REASON = "Logged out from all devices";

/** Whether a close means "logged out everywhere": by code, or by seed C's reason string. */
export function isLogoutClose(code: number, reason: string): boolean {
  return code === CloseCode.LoggedOut || reason === LOGOUT_REASON;
}

/** A message published on a channel, live or recovered. */
export interface ChannelMessage {
  channel: string;
  offset: number;
  data: unknown;
  /** Publishing user, or `null` when the app's backend published through the server API. */
  from: string | null;
  ts: number;
}

/** First frame of every v1 connection. */
export interface ConnectedFrame {
  type: "connected";
  v: number;
  connId: string;
  userId: string;
  deviceId: string;
  pingIntervalMs: number;
}

/** Reply to `subscribe`. `recovered`/`messages` are present when `since` was sent. */
export interface SubscribedFrame {
  type: "subscribed";
  id?: string | number;
  channel: string;
  epoch: string;
  offset: number;
  recovered?: boolean;
  messages?: ChannelMessage[];
}

/** Error codes of v1 `error` frames. */
export type ErrorCode =
  | "bad_request"
  | "unauthorized"
  | "forbidden"
  | "not_found"
  | "too_large"
  | "limit_reached"
  | "internal"
  | "disconnected"
  | "timeout";

/** A refused request, or the connection failing under a pending request. */
export class RealtimeError extends Error {
  constructor(
    readonly code: ErrorCode | string,
    message: string,
  ) {
    super(message);
    this.name = "RealtimeError";
  }
}

/** Server frames the client acts on (others are ignored). */
export type ServerFrame =
  | ConnectedFrame
  | SubscribedFrame
  | ({ type: "message" } & ChannelMessage)
  | { type: "presence_state"; channel: string; presence: PresenceMap }
  | { type: "presence_diff"; channel: string; joins: PresenceMap; leaves: PresenceMap }
  | { type: "unsubscribed"; id?: string | number; channel: string; reason?: string }
  | { type: "published"; id?: string | number; channel: string; offset: number }
  | { type: "presence_updated"; id?: string | number; channel: string }
  | { type: "pong"; id?: string | number }
  | { type: "session_expiring"; expires_in_s: number }
  | { type: "session_extended"; id?: string | number; idle_expires_at: number }
  | { type: "session_ended"; reason: string }
  | { type: "error"; id?: string | number; code: string; message: string };

/** Reads a frame: a JSON object with a string `type`, or `null`. */
export function parseFrame(text: unknown): ServerFrame | null {
  if (typeof text !== "string") return null;
  try {
    const value: unknown = JSON.parse(text);
    if (
      typeof value === "object" &&
      value !== null &&
      typeof (value as { type?: unknown }).type === "string"
    ) {
      return value as ServerFrame;
    }
  } catch {
    // Not JSON: the caller treats it like an unknown frame.
  }
  return null;
}

/**
 * Base WebSocket URL of `path` on the page's own origin (`wss:` under https), the way seed
 * C's hook builds it: same origin, so the browser sends the session cookie on the upgrade.
 */
export function sameOriginSocketUrl(path: string): string {
  const location = globalThis.location;
  if (!location) {
    throw new Error("no window.location: pass an explicit `url` outside a browser");
  }
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${path}`;
}
