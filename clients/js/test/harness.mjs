// Test harness for the browser tests: the real sessiond binary on a free loopback port with a
// fresh data dir, the demo server in front of it, and Debian's Chromium through playwright-core.
// Nothing here sleeps to synchronize: every wait polls a condition with a deadline.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

const repo = fileURLToPath(new URL("../../../", import.meta.url));

/** The sessiond binary: $SESSIOND_BIN, else the newest release or debug build we can find. */
export function sessiondBinary() {
  if (process.env.SESSIOND_BIN) return process.env.SESSIOND_BIN;
  const targets = [process.env.CARGO_TARGET_DIR, join(repo, "target")].filter(Boolean);
  for (const target of targets) {
    for (const profile of ["release", "debug"]) {
      const bin = join(target, profile, "sessiond");
      if (existsSync(bin)) return bin;
    }
  }
  throw new Error("no sessiond binary: build it (cargo build --release -p sessiond) or set SESSIOND_BIN");
}

/** Polls `check` until it returns a truthy value (returned), or fails after `timeoutMs`. */
export async function waitFor(check, { timeoutMs = 15_000, intervalMs = 50, what = "condition" } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
      last = value;
    } catch (error) {
      if (error?.fatal) throw error;
      last = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${String(last)})`);
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/**
 * Asserts that `check` stays truthy during an observation window: used to show that something
 * does NOT happen (a reconnect). The window is what is tested, not a synchronization sleep.
 */
export async function holdsFor(check, windowMs, what) {
  const deadline = Date.now() + windowMs;
  while (Date.now() < deadline) {
    if (!(await check())) throw new Error(`${what} stopped holding`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** One sessiond process on `listen`; resolves once it listens, with its address. */
async function launchSessiond(bin, args, env) {
  const child = spawn(bin, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  const onData = (chunk) => {
    output += chunk;
  };
  child.stdout.on("data", onData);
  child.stderr.on("data", onData);
  let exited = null;
  child.on("exit", (code, signal) => {
    exited = { code, signal };
  });
  const addr = await waitFor(() => {
    if (exited) {
      const error = new Error(`sessiond exited early (${JSON.stringify(exited)}): ${output}`);
      error.fatal = true;
      throw error;
    }
    return /sessiond listening addr=(\S+)/.exec(output)?.[1];
  }, { timeoutMs: 30_000, what: "sessiond to listen" });
  return {
    addr,
    log: () => output,
    async stop() {
      if (exited) return exited;
      const done = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
      child.kill("SIGTERM");
      return done;
    },
  };
}

/**
 * A running sessiond (SQLite engine, fresh data dir, one API key): its URL, a fetch helper
 * with the key, restart() (same address and data dir) and stop().
 */
export async function startSessiond({ config = {} } = {}) {
  const bin = sessiondBinary();
  const dir = await mkdtemp(join(tmpdir(), "sessiond-js-"));
  const apiKey = randomBytes(24).toString("base64url");
  // Only the settings given here: figment reads every SESSIOND_* variable (SESSIOND_BIN
  // included) as configuration.
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([name]) => !name.startsWith("SESSIOND_")),
  );
  env.RUST_LOG = "info";
  // Settings a test asks for, as SESSIOND_* overrides (e.g. SESSIONS__EXPIRY_WARNING_S).
  for (const [name, value] of Object.entries(config)) env[`SESSIOND_${name}`] = String(value);
  const args = (listen) => ["serve", "--listen", listen, "--data-dir", join(dir, "data"), `--api-key=${apiKey}`];
  let server = await launchSessiond(bin, args("127.0.0.1:0"), env);
  const url = `http://${server.addr}`;

  async function api(method, path, body) {
    const response = await fetch(url + path, {
      method,
      headers: { Authorization: `Bearer ${apiKey}`, "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = text;
    }
    return { status: response.status, body: json };
  }

  return {
    url,
    apiKey,
    api,
    log: () => server.log(),
    /** Graceful stop (SIGTERM), then a new process on the same address and data dir. */
    async restart() {
      const exit = await server.stop();
      if (exit.code !== 0) throw new Error(`sessiond did not exit cleanly: ${JSON.stringify(exit)}`);
      server = await launchSessiond(bin, args(server.addr), env);
    },
    async stop() {
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Chromium with the flags the project requires, one persistent context (shared cookies). */
export async function launchBrowser() {
  const profile = await mkdtemp(join(tmpdir(), "sessiond-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM_BIN ?? "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-quic",
      "--no-first-run",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  // Counts WebSocket constructions per path in every page, so a test can show that a page
  // made no new connection attempt.
  await context.addInitScript(() => {
    const Native = window.WebSocket;
    const counts = {};
    window.__socketCounts = counts;
    window.WebSocket = class extends Native {
      constructor(url, protocols) {
        super(url, protocols);
        const path = new URL(url, window.location.href).pathname;
        counts[path] = (counts[path] ?? 0) + 1;
      }
    };
  });
  return {
    context,
    async close() {
      await context.close();
      await rm(profile, { recursive: true, force: true });
    },
  };
}

/** Text of the element with `data-testid=id` ("" when absent). */
export async function testText(page, id) {
  const element = await page.$(`[data-testid="${id}"]`);
  return element ? ((await element.textContent()) ?? "") : "";
}

/** Waits until the element `id` of `page` has text satisfying `accept`. */
export async function waitForText(page, id, accept, what) {
  return waitFor(async () => {
    const text = await testText(page, id);
    return accept(text) ? text : false;
  }, { what: `${what ?? id} (${page.url()})` });
}

/** The list items' texts under the element `id`. */
export async function listItems(page, id) {
  return page.$$eval(`[data-testid="${id}"] > li`, (items) => items.map((li) => li.textContent ?? ""));
}

/** WebSocket constructions of the page so far, per path. */
export async function socketCounts(page) {
  return page.evaluate(() => ({ ...window.__socketCounts }));
}

/** A user id unique to this run. */
export function uniqueUser(prefix) {
  return `${prefix}-${randomBytes(4).toString("hex")}`;
}

/** Signs `userId` in through the demo page's form; the session cookie then covers the context. */
export async function signIn(browser, demoUrl, page, userId) {
  await browser.context.clearCookies();
  await page.goto(demoUrl);
  await page.fill('[data-testid="login-user"]', userId);
  await page.click('[data-testid="login"]');
  await waitForText(page, "user", (t) => t === userId, "signed-in user");
}
