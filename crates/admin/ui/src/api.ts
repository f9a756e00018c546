// Every call the console makes goes to the server's own APIs with the operator's key as a
// bearer, exactly as a script would: the console adds no privileged back door.
//
// The key lives in sessionStorage: it is gone when the tab closes, it is never sent by the
// browser on its own (a cookie would ride along on every request, cross-site ones included,
// and would need CSRF defences), and only this page's own script can read it.

const STORAGE = "sessiond.admin.key";

export function savedKey(): string | null {
  return sessionStorage.getItem(STORAGE);
}

export function saveKey(key: string): void {
  sessionStorage.setItem(STORAGE, key);
}

export function forgetKey(): void {
  sessionStorage.removeItem(STORAGE);
}

/** Called when the server refuses the key (401): the page goes back to the login form. */
let onUnauthorized: () => void = () => {};
export function whenUnauthorized(handler: () => void): void {
  onUnauthorized = handler;
}

export interface Answer<T = any> {
  status: number;
  ok: boolean;
  body: T;
  headers: Headers;
}

/** Request headers with the operator's key. */
export function authHeaders(extra: Record<string, string> = {}): Record<string, string> {
  const key = savedKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

/** One API call; a JSON body in and out. Network errors throw, HTTP errors are answers. */
export async function call<T = any>(method: string, path: string, body?: unknown): Promise<Answer<T>> {
  const headers = authHeaders(body === undefined ? {} : { "Content-Type": "application/json" });
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  const text = method === "HEAD" ? "" : await response.text();
  let parsed: any = text;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: keep the text
  }
  if (response.status === 401) onUnauthorized();
  return { status: response.status, ok: response.ok, body: parsed as T, headers: response.headers };
}

/** The error text of a failed answer. */
export function describe(answer: Answer): string {
  const message = answer.body?.error?.message ?? answer.body?.message ?? answer.body?.error;
  return `${answer.status}${message ? `: ${typeof message === "string" ? message : JSON.stringify(message)}` : ""}`;
}

/** One path segment for a URL (user ids and channel names may hold any character). */
export const seg = encodeURIComponent;
