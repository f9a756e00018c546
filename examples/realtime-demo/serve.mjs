// The demo's web server: serves dist/ and plays the app backend in front of sessiond.
//
// - GET /…                 the built page (dist/)
// - POST /demo/login       {"userId"} → creates a sessiond session (with the API key, which
//                          never reaches the browser) and stores its id in the
//                          `sessiond_session` cookie (HttpOnly, SameSite=Lax)
// - GET /demo/me           {"userId"} of the cookie's session, or 401
// - GET /v1/users/{u}/devices  the signed-in user's own devices (`listDevices()` in the page):
//                          forwarded with the API key only when {u} is the cookie's user
// - /__user-session, /v1/realtime…  proxied to sessiond, WebSocket upgrades included, so the
//                          page and its sockets share one origin and the cookie rides along
//
// Usage: node serve.mjs   (env: SESSIOND_URL=http://127.0.0.1:7700, SESSIOND_API_KEY=…,
//                          PORT=8080, HOST=127.0.0.1)
import { readFile } from "node:fs/promises";
import http from "node:http";
import net from "node:net";
import { extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";

const COOKIE = "sessiond_session";
const MAX_BODY = 4096;
const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".map": "application/json",
  ".css": "text/css",
};

const isProxied = (path) =>
  path === "/__user-session" || path.startsWith("/__user-session?") ||
  path === "/v1/realtime" || path.startsWith("/v1/realtime?") || path.startsWith("/v1/realtime/sse");

function json(res, status, body, headers = {}) {
  res.writeHead(status, { "Content-Type": "application/json", ...headers });
  res.end(JSON.stringify(body));
}

function cookieValue(header, name) {
  for (const part of (header ?? "").split(";")) {
    const [key, ...rest] = part.trim().split("=");
    if (key === name) return rest.join("=");
  }
  return null;
}

async function readBody(req) {
  let body = "";
  for await (const chunk of req) {
    body += chunk;
    if (body.length > MAX_BODY) throw new Error("body too large");
  }
  return body;
}

/**
 * Starts the demo server. Returns its URL and the controls the browser test uses to cut the
 * network between page and sessiond (dropSockets, setUpgradesBlocked).
 */
export async function startDemoServer({
  upstream = "http://127.0.0.1:7700",
  apiKey = "",
  host = "127.0.0.1",
  port = 0,
  root = fileURLToPath(new URL("dist/", import.meta.url)),
} = {}) {
  const target = new URL(upstream);
  const auth = apiKey ? { Authorization: `Bearer ${apiKey}` } : {};
  const upgraded = new Set();
  let upgradesBlocked = false;
  const stats = { upgrades: 0 };

  async function sessiond(method, path, body) {
    const response = await fetch(new URL(path, target), {
      method,
      headers: { "Content-Type": "application/json", ...auth },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: response.status, body: await response.json().catch(() => null) };
  }

  async function login(req, res) {
    let userId;
    try {
      userId = JSON.parse(await readBody(req)).userId;
    } catch {
      return json(res, 400, { error: "body must be JSON {\"userId\": string}" });
    }
    if (typeof userId !== "string" || userId.length === 0 || userId.length > 200) {
      return json(res, 400, { error: "userId must be a non-empty string" });
    }
    const created = await sessiond("POST", "/v1/sessions", { user_id: userId, device: { demo: true } });
    if (created.status !== 201) return json(res, 502, { error: "sessiond refused", detail: created.body });
    const cookie = `${COOKIE}=${created.body.id}; Path=/; HttpOnly; SameSite=Lax`;
    json(res, 200, { userId }, { "Set-Cookie": cookie });
  }

  async function me(req, res) {
    const id = cookieValue(req.headers.cookie, COOKIE);
    if (!id) return json(res, 401, { error: "not signed in" });
    const session = await sessiond("GET", `/v1/sessions/${encodeURIComponent(id)}`);
    if (session.status !== 200) return json(res, 401, { error: "session expired or revoked" });
    json(res, 200, { userId: session.body.user_id });
  }

  /** The cookie's user id, or null (no cookie, or the session ended). */
  async function signedInUser(req) {
    const id = cookieValue(req.headers.cookie, COOKIE);
    if (!id) return null;
    const session = await sessiond("GET", `/v1/sessions/${encodeURIComponent(id)}`);
    return session.status === 200 ? session.body.user_id : null;
  }

  // The backend's side of a "your devices" page: the key stays here, and a user sees only
  // their own devices.
  async function devices(req, res, user) {
    const signedIn = await signedInUser(req);
    if (!signedIn) return json(res, 401, { error: "not signed in" });
    if (signedIn !== user) return json(res, 403, { error: "only your own devices" });
    const listed = await sessiond("GET", `/v1/users/${encodeURIComponent(user)}/devices`);
    json(res, listed.status, listed.body);
  }

  async function staticFile(req, res) {
    const path = new URL(req.url, "http://x").pathname;
    const file = normalize(join(root, path === "/" ? "index.html" : path));
    if (!file.startsWith(root)) return json(res, 404, { error: "not found" });
    try {
      const body = await readFile(file);
      res.writeHead(200, { "Content-Type": TYPES[extname(file)] ?? "application/octet-stream" });
      res.end(body);
    } catch {
      json(res, 404, { error: "not found" });
    }
  }

  function proxyHttp(req, res) {
    const forward = http.request(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
      (upstreamRes) => {
        res.writeHead(upstreamRes.statusCode ?? 502, upstreamRes.headers);
        upstreamRes.pipe(res);
      },
    );
    forward.on("error", () => json(res, 502, { error: "sessiond unreachable" }));
    req.pipe(forward);
  }

  // A WebSocket upgrade is forwarded as raw bytes: the request head, then both directions.
  function proxyUpgrade(req, client, head) {
    if (!isProxied(req.url) || upgradesBlocked) {
      client.end("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
      return;
    }
    stats.upgrades += 1;
    const server = net.connect(Number(target.port), target.hostname, () => {
      const lines = [`${req.method} ${req.url} HTTP/1.1`];
      for (let i = 0; i < req.rawHeaders.length; i += 2) {
        lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
      }
      server.write(`${lines.join("\r\n")}\r\n\r\n`);
      if (head.length > 0) server.write(head);
      server.pipe(client);
      client.pipe(server);
    });
    const pair = { client, server };
    upgraded.add(pair);
    const end = () => {
      upgraded.delete(pair);
      client.destroy();
      server.destroy();
    };
    server.on("error", end).on("close", end);
    client.on("error", end).on("close", end);
  }

  const server = http.createServer((req, res) => {
    const handle = async () => {
      if (req.method === "POST" && req.url === "/demo/login") return login(req, res);
      if (req.method === "GET" && req.url === "/demo/me") return me(req, res);
      const devicesOf = /^\/v1\/users\/([^/?]+)\/devices$/.exec(req.url ?? "");
      if (req.method === "GET" && devicesOf) return devices(req, res, decodeURIComponent(devicesOf[1]));
      if (isProxied(req.url)) return proxyHttp(req, res);
      if (req.method === "GET") return staticFile(req, res);
      json(res, 405, { error: "method not allowed" });
    };
    handle().catch((error) => {
      if (!res.headersSent) json(res, 502, { error: String(error.message ?? error) });
    });
  });
  server.on("upgrade", proxyUpgrade);
  await new Promise((resolve) => server.listen(port, host, resolve));
  const address = server.address();

  return {
    url: `http://${host}:${address.port}`,
    stats,
    /** Cuts every proxied socket as a network failure would (no close frame). */
    dropSockets() {
      const count = upgraded.size;
      for (const { client, server: upstreamSocket } of upgraded) {
        client.destroy();
        upstreamSocket.destroy();
      }
      upgraded.clear();
      return count;
    },
    /** While blocked, new upgrades get a 503 (the page's reconnects fail). */
    setUpgradesBlocked(blocked) {
      upgradesBlocked = blocked;
    },
    close() {
      this.dropSockets();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const demo = await startDemoServer({
    upstream: process.env.SESSIOND_URL ?? "http://127.0.0.1:7700",
    apiKey: process.env.SESSIOND_API_KEY ?? "",
    host: process.env.HOST ?? "127.0.0.1",
    port: Number(process.env.PORT ?? 8080),
  });
  console.log(`realtime demo on ${demo.url} (sessiond: ${process.env.SESSIOND_URL ?? "http://127.0.0.1:7700"})`);
}
