/**
 * `listDevices()`: a user's devices — their sessions, each with the live sockets it opened on
 * any node — for a "your devices" page (`GET /v1/users/{u}/devices`).
 *
 * The route needs sessiond's full API key, which must never reach a browser: in a page, point
 * `baseUrl` at your backend, which checks that the signed-in user asks for their own devices
 * and forwards the call with the key (the realtime demo's server does exactly that); on a
 * server, call sessiond directly with `apiKey`. End a device with your backend's call to
 * `DELETE /v1/sessions/{id}`: that also closes its sockets.
 */

/** One live socket or SSE connection of a device. */
export interface DeviceConnection {
  id: string;
  /** The session that opened it; `null` for sockets opened with a service key. */
  session_id: string | null;
  protocol: "v1" | "seed" | "sse";
  device_id: string;
  presence: "online" | "away" | "offline";
  connected_at: number;
  /** The client's latest application frame (ms), `null` before the first. */
  last_frame_at: number | null;
  ip: string | null;
  user_agent: string | null;
  channels: string[];
}

/** A session as sessiond sends it (`GET /v1/sessions/{id}`). */
export interface DeviceSession {
  id: string;
  user_id: string | null;
  data: Record<string, unknown>;
  device: unknown;
  created_at: number;
  last_seen_at: number;
  expires_at: number;
  origin: "service" | "open_route";
  [field: string]: unknown;
}

/** One device: a session and its connections (`session: null` groups service-key sockets). */
export interface Device {
  session: DeviceSession | null;
  connections: DeviceConnection[];
}

export interface ListDevicesOptions {
  /** The user whose devices to list. */
  userId: string;
  /** Where `/v1/users/{u}/devices` is answered: your backend (in a page; default: this origin) or sessiond (on a server). */
  baseUrl?: string;
  /** sessiond's full API key: only where the code runs on a server. */
  apiKey?: string;
  /** A `fetch` to use (tests, custom agents); default: the global one. */
  fetch?: typeof fetch;
}

/** Why `listDevices` failed: the answer's status and body. */
export class DevicesError extends Error {
  constructor(
    readonly status: number,
    readonly body: string,
  ) {
    super(`listing devices failed: ${status} ${body}`);
    this.name = "DevicesError";
  }
}

/** The user's devices, most recently active first. */
export async function listDevices(options: ListDevicesOptions): Promise<Device[]> {
  const doFetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  const base = (options.baseUrl ?? "").replace(/\/+$/, "");
  const headers: Record<string, string> = { Accept: "application/json" };
  if (options.apiKey) headers.Authorization = `Bearer ${options.apiKey}`;
  const response = await doFetch(`${base}/v1/users/${encodeURIComponent(options.userId)}/devices`, {
    headers,
    credentials: "same-origin",
  });
  const text = await response.text();
  if (!response.ok) throw new DevicesError(response.status, text);
  const body = JSON.parse(text) as { devices?: unknown };
  if (!Array.isArray(body.devices)) throw new DevicesError(response.status, "answer without a devices list");
  return body.devices as Device[];
}
