/**
 * `RealtimeClient`: a small client for sessiond's v1 realtime protocol (`/v1/realtime`).
 *
 * What it takes off an app's hands:
 * - **Reconnect with backoff and jitter** after any drop, except a logout (close 4001), a
 *   message the server refused as too big (1009, retrying cannot help), an explicit
 *   {@link RealtimeClient.close}, or a server-side disconnect (4003) unless the app opts in.
 * - **Recovery by offset**: every channel remembers the epoch of its last `subscribed` and the
 *   offset of the last message delivered; a reconnect re-subscribes with `since`, delivers the
 *   missed messages in order, drops duplicates, and tells the app (`onRecoveryFailed`, the
 *   `recovery_failed` event) when history was lost so it can reload.
 * - **Presence**: the current {@link PresenceMap} per channel, kept from `presence_state` and
 *   `presence_diff`.
 * - **Requests with ids**: `subscribe`, `publish`, `updatePresence`, `unsubscribe` return
 *   promises settled by the matching reply or `error` frame (or a timeout, or the drop).
 * - **Dead-connection detection**: an application ping at the server's `pingIntervalMs`; no
 *   pong within the request timeout closes the socket and reconnects.
 *
 * Authentication: in a browser on the server's origin the session cookie rides on the
 * upgrade; otherwise pass `token` (sent as `?token=`, which ends up in access logs: prefer
 * the cookie where possible).
 */

import { type BackoffPolicy, DEFAULT_BACKOFF, backoffDelay } from "./backoff.js";
import { Emitter } from "./emitter.js";
import { type PresenceMap, applyPresenceDiff, parsePresence } from "./presence.js";
import {
  type ChannelMessage,
  CloseCode,
  type ConnectedFrame,
  RealtimeError,
  type ServerFrame,
  type SubscribedFrame,
  isLogoutClose,
  parseFrame,
  sameOriginSocketUrl,
} from "./protocol.js";

/** Where the client is in its life. `closed` and `logged_out` are terminal until `connect()`. */
export type ConnectionState =
  | "idle"
  | "connecting"
  | "connected"
  | "reconnecting"
  | "closed"
  | "logged_out";

export interface RealtimeClientOptions {
  /** Socket URL; default `ws(s)://<page host>/v1/realtime`. */
  url?: string;
  /** Session token or service key, or a function returning a fresh one per connect. */
  token?: string | (() => string | Promise<string>);
  /** Device label (default: the server's `unknown`). */
  deviceId?: string;
  /** With a service key: the user to act for. With a session token it must match, if given. */
  userId?: string;
  /** Reconnect policy; defaults to 1 s·2ⁿ ≤ 30 s with half jitter, forever. */
  backoff?: Partial<BackoffPolicy>;
  /** Reconnect after a server-API disconnect (close 4003). Default false. */
  reconnectOnServerDisconnect?: boolean;
  /** How long a request waits for its reply (ms). Default 10 s. */
  requestTimeoutMs?: number;
  /** WebSocket implementation (default: the global one). */
  WebSocket?: typeof WebSocket;
  /**
   * The session's idle deadline is `expiresInS` seconds away (`session_expiring`, sent
   * `sessions.expiry_warning_s` before it): ask the user, then call `extendSession()`.
   */
  onSessionExpiring?: (expiresInS: number) => void;
}

export interface SubscribeOptions {
  /** Signed grant for a `room:` channel (docs/realtime.md §2.3). */
  grant?: string;
  /** This connection's presence meta in the channel. */
  meta?: Record<string, unknown>;
  /** Every message, live or recovered, in offset order, without duplicates. */
  onMessage?: (message: ChannelMessage) => void;
  /** The channel's presence after each change. */
  onPresence?: (presence: PresenceMap) => void;
  /** After a reconnect whose missed messages are gone: reload what you show from the app. */
  onRecoveryFailed?: () => void;
}

/** What a (re)subscribe established. */
export interface Subscription {
  channel: string;
  epoch: string;
  /** The channel's latest offset when the reply was sent. */
  offset: number;
  /** Only after a re-subscribe: whether every missed message was delivered. */
  recovered?: boolean;
  /** Messages delivered by this re-subscribe's recovery. */
  recoveredCount: number;
}

export interface RealtimeEvents {
  state: ConnectionState;
  connected: ConnectedFrame;
  message: ChannelMessage;
  presence: { channel: string; presence: PresenceMap };
  subscribed: Subscription;
  recovery_failed: { channel: string };
  unsubscribed: { channel: string; reason: string };
  error: RealtimeError;
  closed: { code: number; reason: string };
  logout: { code: number; reason: string };
  session_expiring: { expiresInS: number };
  /** The session ended (`revoked`, `expired_idle`, …); the logout close follows. */
  session_ended: { reason: string };
}

interface Pending {
  resolve: (frame: ServerFrame) => void;
  reject: (error: RealtimeError) => void;
  timer: ReturnType<typeof setTimeout>;
}

interface ChannelRecord {
  name: string;
  options: SubscribeOptions;
  /** Epoch and offset of the last message delivered; `null` epoch = never subscribed. */
  epoch: string | null;
  offset: number;
  presence: PresenceMap;
  /** Subscribed on the open connection (its `subscribed` reply arrived). */
  active: boolean;
  /** Callers of `subscribe` waiting for the next `subscribed`. */
  waiters: Array<{ resolve: (s: Subscription) => void; reject: (e: RealtimeError) => void }>;
}

export class RealtimeClient extends Emitter<RealtimeEvents> {
  private readonly options: RealtimeClientOptions;
  private readonly backoff: BackoffPolicy;
  private readonly channels = new Map<string, ChannelRecord>();
  private readonly pending = new Map<number, Pending>();
  private socket: WebSocket | null = null;
  private currentState: ConnectionState = "idle";
  private attempt = 0;
  private nextRequestId = 1;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private pingTimer: ReturnType<typeof setInterval> | null = null;
  private connection: ConnectedFrame | null = null;
  /** Bumped on every connect/close so callbacks of an older socket are ignored. */
  private generation = 0;

  constructor(options: RealtimeClientOptions = {}) {
    super();
    this.options = options;
    this.backoff = { ...DEFAULT_BACKOFF, ...options.backoff };
  }

  /** Current connection state. */
  get state(): ConnectionState {
    return this.currentState;
  }

  /** The server's `connected` frame of the open connection, if any. */
  get connectionInfo(): ConnectedFrame | null {
    return this.connection;
  }

  /** Channels the client is subscribed to (or will re-subscribe to on reconnect). */
  get subscriptions(): string[] {
    return [...this.channels.keys()];
  }

  /** Current presence of a subscribed channel. */
  presence(channel: string): PresenceMap {
    return this.channels.get(channel)?.presence ?? {};
  }

  /**
   * Opens the connection (again, after `close()` or a logout; keeps subscriptions). While
   * waiting to reconnect it retries at once (e.g. on the browser's `online` event).
   */
  connect(): void {
    if (this.currentState === "connecting" || this.currentState === "connected") return;
    this.clearTimers();
    this.attempt = 0;
    void this.open("connecting");
  }

  /** Closes for good (no reconnect). Subscriptions are kept for a later `connect()`. */
  close(): void {
    this.generation += 1;
    this.clearTimers();
    const socket = this.socket;
    this.socket = null;
    this.connection = null;
    socket?.close(CloseCode.Normal, "client closed");
    this.failPending(new RealtimeError("disconnected", "the client was closed"));
    this.setState("closed");
  }

  /**
   * Subscribes (or updates the options of an existing subscription). Resolves with the
   * server's `subscribed`; rejects on `error` (e.g. `forbidden`). While disconnected the
   * subscription waits for the next connection.
   */
  subscribe(channel: string, options: SubscribeOptions = {}): Promise<Subscription> {
    let record = this.channels.get(channel);
    if (record) {
      record.options = options;
    } else {
      record = {
        name: channel,
        options,
        epoch: null,
        offset: 0,
        presence: {},
        active: false,
        waiters: [],
      };
      this.channels.set(channel, record);
    }
    const settled = new Promise<Subscription>((resolve, reject) => {
      record.waiters.push({ resolve, reject });
    });
    if (this.currentState === "connected") this.sendSubscribe(record);
    return settled;
  }

  /** Unsubscribes; forgets the channel's offset (a later subscribe starts from now). */
  async unsubscribe(channel: string): Promise<void> {
    const record = this.channels.get(channel);
    this.channels.delete(channel);
    record?.waiters.forEach((w) => w.reject(new RealtimeError("disconnected", "unsubscribed")));
    if (this.currentState === "connected") {
      await this.request({ type: "unsubscribe", channel });
    }
  }

  /** Publishes on a subscribed channel; resolves with the message's offset. */
  async publish(channel: string, data: unknown): Promise<number> {
    const reply = await this.request({ type: "publish", channel, data });
    return reply.type === "published" ? reply.offset : 0;
  }

  /**
   * Slides the idle deadline of the session this socket was opened with; resolves with the
   * new deadline (Unix ms). Rejects on a socket opened without a session.
   */
  async extendSession(): Promise<number> {
    const reply = await this.request({ type: "extend_session" });
    return reply.type === "session_extended" ? reply.idle_expires_at : 0;
  }

  /** Replaces this connection's presence meta in a subscribed channel. */
  async updatePresence(channel: string, meta: Record<string, unknown>): Promise<void> {
    const record = this.channels.get(channel);
    if (record) record.options = { ...record.options, meta };
    await this.request({ type: "presence_update", channel, meta });
  }

  private setState(state: ConnectionState): void {
    if (this.currentState === state) return;
    this.currentState = state;
    this.emit("state", state);
  }

  private async socketUrl(): Promise<string> {
    const url = new URL(this.options.url ?? sameOriginSocketUrl("/v1/realtime"));
    const { token, deviceId, userId } = this.options;
    const value = typeof token === "function" ? await token() : token;
    if (value) url.searchParams.set("token", value);
    if (deviceId) url.searchParams.set("deviceId", deviceId);
    if (userId) url.searchParams.set("userId", userId);
    return url.toString();
  }

  private async open(state: "connecting" | "reconnecting"): Promise<void> {
    const generation = ++this.generation;
    this.setState(state);
    let url: string;
    try {
      url = await this.socketUrl();
    } catch (error) {
      if (generation !== this.generation) return;
      this.emit("error", new RealtimeError("unauthorized", `no token: ${String(error)}`));
      this.scheduleReconnect();
      return;
    }
    if (generation !== this.generation) return;
    const Socket = this.options.WebSocket ?? globalThis.WebSocket;
    let socket: WebSocket;
    try {
      socket = new Socket(url);
    } catch (error) {
      // A malformed URL: retrying cannot fix it.
      this.setState("closed");
      this.emit("error", new RealtimeError("bad_request", `cannot open ${url}: ${String(error)}`));
      return;
    }
    this.socket = socket;
    socket.onmessage = (event) => {
      if (generation === this.generation) this.onFrame(parseFrame(event.data));
    };
    socket.onclose = (event) => {
      if (generation === this.generation) this.onClose(event.code, event.reason);
    };
  }

  private onClose(code: number, reason: string): void {
    this.socket = null;
    this.connection = null;
    this.clearTimers();
    this.failPending(new RealtimeError("disconnected", `connection closed (${code})`));
    for (const record of this.channels.values()) record.active = false;
    this.emit("closed", { code, reason });
    if (isLogoutClose(code, reason)) {
      this.setState("logged_out");
      this.emit("logout", { code, reason });
      return;
    }
    const stop =
      code === CloseCode.MessageTooBig ||
      (code === CloseCode.DisconnectedByServer && !this.options.reconnectOnServerDisconnect);
    if (stop) {
      this.setState("closed");
      return;
    }
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    const delay = backoffDelay(this.backoff, this.attempt);
    if (delay === null) {
      this.setState("closed");
      this.emit("error", new RealtimeError("disconnected", "gave up reconnecting"));
      return;
    }
    this.attempt += 1;
    this.setState("reconnecting");
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      void this.open("reconnecting");
    }, delay);
  }

  private clearTimers(): void {
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    if (this.pingTimer !== null) clearInterval(this.pingTimer);
    this.reconnectTimer = null;
    this.pingTimer = null;
  }

  private failPending(error: RealtimeError): void {
    for (const pending of this.pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(error);
    }
    this.pending.clear();
  }

  private onConnected(frame: ConnectedFrame): void {
    this.connection = frame;
    this.attempt = 0;
    this.setState("connected");
    this.emit("connected", frame);
    if (frame.pingIntervalMs > 0) {
      this.pingTimer = setInterval(() => this.heartbeat(), frame.pingIntervalMs);
    }
    for (const record of this.channels.values()) this.sendSubscribe(record);
  }

  /** A ping whose pong does not come back in time means a dead link: drop it and reconnect. */
  private heartbeat(): void {
    const socket = this.socket;
    this.request({ type: "ping" }).catch((error: RealtimeError) => {
      if (error.code !== "timeout" || !socket || socket !== this.socket) return;
      this.generation += 1; // the dead socket's own close event is ignored from now on
      socket.close();
      this.onClose(1006, "heartbeat timeout");
    });
  }

  private request(body: Record<string, unknown>): Promise<ServerFrame> {
    const socket = this.socket;
    if (this.currentState !== "connected" || !socket) {
      return Promise.reject(new RealtimeError("disconnected", "not connected"));
    }
    const id = this.nextRequestId++;
    return new Promise<ServerFrame>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new RealtimeError("timeout", `no reply to ${String(body.type)}`));
      }, this.options.requestTimeoutMs ?? 10_000);
      this.pending.set(id, { resolve, reject, timer });
      socket.send(JSON.stringify({ ...body, id }));
    });
  }

  private sendSubscribe(record: ChannelRecord): void {
    const body: Record<string, unknown> = { type: "subscribe", channel: record.name };
    if (record.options.grant) body.grant = record.options.grant;
    if (record.options.meta) body.meta = record.options.meta;
    if (record.epoch !== null) body.since = { epoch: record.epoch, offset: record.offset };
    this.request(body).then(
      (frame) => {
        if (frame.type === "subscribed") this.onSubscribed(record, frame);
      },
      (error: RealtimeError) => {
        const waiters = record.waiters.splice(0);
        waiters.forEach((w) => w.reject(error));
        if (error.code === "disconnected" || error.code === "timeout") return;
        // Refused (grant expired, forbidden…): the subscription is over.
        if (this.channels.get(record.name) === record) this.channels.delete(record.name);
        if (waiters.length === 0) this.emit("error", error);
        this.emit("unsubscribed", { channel: record.name, reason: error.code });
      },
    );
  }

  private onSubscribed(record: ChannelRecord, frame: SubscribedFrame): void {
    if (this.channels.get(record.name) !== record) return;
    let recoveredCount = 0;
    if (frame.recovered === true) {
      for (const message of frame.messages ?? []) {
        if (this.deliver(record, message)) recoveredCount += 1;
      }
      record.offset = Math.max(record.offset, frame.offset);
    } else {
      if (frame.recovered === false) {
        record.options.onRecoveryFailed?.();
        this.emit("recovery_failed", { channel: record.name });
      }
      record.offset = frame.offset;
    }
    record.epoch = frame.epoch;
    record.active = true;
    const subscription: Subscription = {
      channel: record.name,
      epoch: frame.epoch,
      offset: frame.offset,
      recoveredCount,
    };
    if (frame.recovered !== undefined) subscription.recovered = frame.recovered;
    record.waiters.splice(0).forEach((w) => w.resolve(subscription));
    this.emit("subscribed", subscription);
  }

  /** Hands a message to the app once: offsets at or below the last delivered are replays. */
  private deliver(record: ChannelRecord, message: ChannelMessage): boolean {
    if (message.offset <= record.offset) return false;
    record.offset = message.offset;
    const clean: ChannelMessage = {
      channel: message.channel,
      offset: message.offset,
      data: message.data,
      from: message.from ?? null,
      ts: message.ts,
    };
    record.options.onMessage?.(clean);
    this.emit("message", clean);
    return true;
  }

  private setPresence(record: ChannelRecord, presence: PresenceMap): void {
    record.presence = presence;
    record.options.onPresence?.(presence);
    this.emit("presence", { channel: record.name, presence });
  }

  private onFrame(frame: ServerFrame | null): void {
    if (!frame) return;
    if ("id" in frame && frame.id !== undefined && typeof frame.id === "number") {
      const pending = this.pending.get(frame.id);
      if (pending) {
        this.pending.delete(frame.id);
        clearTimeout(pending.timer);
        if (frame.type === "error") pending.reject(new RealtimeError(frame.code, frame.message));
        else pending.resolve(frame);
        return;
      }
    }
    switch (frame.type) {
      case "connected":
        this.onConnected(frame);
        break;
      case "message": {
        const record = this.channels.get(frame.channel);
        // The server queues `subscribed` before any live message of the channel; `deliver`
        // drops what recovery already handed over.
        if (record?.active) this.deliver(record, frame);
        break;
      }
      case "presence_state": {
        const record = this.channels.get(frame.channel);
        if (record) this.setPresence(record, parsePresence(frame.presence));
        break;
      }
      case "presence_diff": {
        const record = this.channels.get(frame.channel);
        if (record) {
          const joins = parsePresence(frame.joins);
          const leaves = parsePresence(frame.leaves);
          this.setPresence(record, applyPresenceDiff(record.presence, joins, leaves));
        }
        break;
      }
      case "unsubscribed":
        if (this.channels.delete(frame.channel)) {
          this.emit("unsubscribed", { channel: frame.channel, reason: frame.reason ?? "server" });
        }
        break;
      case "error":
        this.emit("error", new RealtimeError(frame.code, frame.message));
        break;
      case "session_expiring":
        this.options.onSessionExpiring?.(frame.expires_in_s);
        this.emit("session_expiring", { expiresInS: frame.expires_in_s });
        break;
      case "session_ended":
        this.emit("session_ended", { reason: frame.reason });
        break;
      default:
        break;
    }
  }
}
