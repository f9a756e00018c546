// The admin console in Debian's Chromium against the real sessiond binary (keyed mode, the
// console's own admin key): login, each page, and the actions an operator takes, checked
// through the server's APIs. Screenshots of every page go to $ADMIN_TEST_OUTPUT (default
// crates/admin/ui/test-output/, not committed).
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { launchBrowser, startSessiond, testText, uniqueUser, waitFor, waitForText } from "../../../../clients/js/test/harness.mjs";
import { stale } from "../build.mjs";

const output = process.env.ADMIN_TEST_OUTPUT ?? fileURLToPath(new URL("../test-output/", import.meta.url));
const adminKey = randomBytes(24).toString("base64url");

let sessiond;
let browser;
let page;

before(async () => {
  await mkdir(output, { recursive: true });
  sessiond = await startSessiond({ config: { ADMIN__ENABLED: true, ADMIN__KEY: adminKey } });
  browser = await launchBrowser();
  page = await browser.context.newPage();
  // Destructive actions ask first: the operator (this test) says yes.
  page.on("dialog", (dialog) => void dialog.accept());
});

after(async () => {
  await browser?.close();
  await sessiond?.stop();
});

const shot = (name) => page.screenshot({ path: join(output, `${name}.png`), fullPage: true });

async function open(name) {
  await page.click(`[data-testid="nav-${name}"]`);
  await waitFor(() => page.url().endsWith(`#/${name}`), { what: `page ${name}` });
}

test("the committed bundle is built from the current sources", async () => {
  assert.deepEqual(await stale(), [], "run node crates/admin/ui/build.mjs and commit crates/admin/assets");
});

test("login: a wrong key is refused, the admin key opens the console", async () => {
  await page.goto(`${sessiond.url}/admin`);
  await page.fill('[data-testid="login-key"]', "not-the-key-0123456789");
  await page.click('[data-testid="login"]');
  await waitForText(page, "login-message", (t) => t.includes("401"), "refusal");
  await shot("login");
  await page.fill('[data-testid="login-key"]', adminKey);
  await page.click('[data-testid="login"]');
  await waitForText(page, "fact-engine", (t) => t === "sqlite", "engine on the overview");
  // The key stays in the tab's sessionStorage, never in a cookie.
  assert.equal(await page.evaluate(() => sessionStorage.getItem("sessiond.admin.key")), adminKey);
  assert.deepEqual(await browser.context.cookies(), []);
});

test("overview: live request rates from /metrics", async () => {
  // Traffic the charts must show: the session listing route, called repeatedly.
  const user = uniqueUser("traffic");
  await waitFor(
    async () => {
      await sessiond.api("GET", `/v1/users/${user}/sessions`);
      const values = await page.$$eval('[data-testid="chart-requests-legend"] b', (bs) => bs.map((b) => Number(b.dataset.value)));
      return values.some((v) => v > 0);
    },
    { what: "a non-zero requests/s series" },
  );
  const legend = await testText(page, "chart-requests-legend");
  assert.match(legend, /\/v1\/users\/\{user_id\}\/sessions/);
  await waitForText(page, "metrics-status", (t) => t.startsWith("live"), "live metrics");
  await shot("overview");
});

test("sessions: a test's session appears; revoking it makes the API answer 404", async () => {
  const user = uniqueUser("carol");
  const created = await sessiond.api("POST", "/v1/sessions", { user_id: user, device: { user_agent: "AdminTest/1.0" } });
  assert.equal(created.status, 201);
  const id = created.body.id;
  await open("sessions");
  await page.fill('[data-testid="sessions-user"]', user);
  await page.click('[data-testid="sessions-search"]');
  await waitForText(page, "sessions-table", (t) => t.includes("AdminTest/1.0"), "the session with its device");
  assert.ok(await page.$(`[data-session="${id}"]`));
  await shot("sessions");
  await page.click(`[data-testid="revoke-${id}"]`);
  await waitForText(page, "sessions-message", (t) => t.startsWith("Revoked"), "revoke done");
  assert.equal((await sessiond.api("GET", `/v1/sessions/${id}`)).status, 404);
  assert.equal(await page.$(`[data-session="${id}"]`), null, "the revoked session left the list");
});

test("realtime: a connected WebSocket is listed; disconnect closes it", async () => {
  const user = uniqueUser("dave");
  const token = (await sessiond.api("POST", "/v1/sessions", { user_id: user })).body.id;
  const phone = await browser.context.newPage();
  await phone.goto(`${sessiond.url}/healthz`);
  // The user's device: a v1 socket subscribed to its personal channel.
  await phone.evaluate(
    ({ token, channel }) =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(`ws://${location.host}/v1/realtime?deviceId=admin-phone&token=${token}`);
        window.__closed = null;
        ws.onopen = () => ws.send(JSON.stringify({ type: "subscribe", id: 1, channel }));
        ws.onmessage = (e) => JSON.parse(e.data).type === "subscribed" && resolve();
        ws.onerror = () => reject(new Error("websocket failed"));
        ws.onclose = (e) => (window.__closed = e.code);
      }),
    { token, channel: `user:${user}` },
  );
  await open("realtime");
  await waitForText(page, "connections-table", (t) => t.includes(user) && t.includes("admin-phone"), "the socket listed");
  await waitForText(page, "realtime-stats", (t) => /[1-9]\d* sockets/.test(t), "socket count");
  const channels = await page.$$eval('[data-testid="channels-table"] tbody tr', (rows) =>
    rows.map((r) => [...r.querySelectorAll("td")].map((td) => td.textContent)),
  );
  assert.ok(
    channels.some(([name, subscribers]) => name === `user:${user}` && subscribers === "1"),
    JSON.stringify(channels),
  );
  await shot("realtime");
  await page.fill('[data-testid="publish-channel"]', "room:admin-test");
  await page.click('[data-testid="publish"]');
  await waitForText(page, "realtime-message", (t) => t.startsWith("Published at offset"), "publish");
  await page.click(`[data-testid="disconnect-${user}"]`);
  await waitFor(() => phone.evaluate(() => window.__closed), { what: "the socket closed by the server" });
  assert.equal(await phone.evaluate(() => window.__closed), 4003);
  await phone.close();
});

test("streams: list by prefix, HEAD details, producers, a live tail shows an append, delete", async () => {
  const prefix = `admin-${randomBytes(3).toString("hex")}`;
  const path = `${prefix}/events`;
  const put = await fetch(`${sessiond.url}/v1/stream/${path}`, {
    method: "PUT",
    headers: { Authorization: `Bearer ${sessiond.apiKey}`, "Content-Type": "application/json" },
  });
  assert.equal(put.status, 201);
  await open("streams");
  await page.fill('[data-testid="streams-prefix"]', prefix);
  await page.click('[data-testid="streams-search"]');
  await page.click(`[data-testid="stream-${path}"]`);
  await waitForText(page, "head-content-type", (t) => t === "application/json", "HEAD content type");
  assert.equal(await testText(page, "head-stream-closed"), "false");
  await waitFor(async () => (await page.$('[data-testid="producers-none"]')) !== null, { what: "no producers yet" });

  await page.click('[data-testid="tail-toggle"]');
  // The tail is a live SSE reader on the server before anything is appended.
  await waitFor(
    async () => {
      const text = await (await fetch(`${sessiond.url}/metrics`)).text();
      return /sessiond_streams_live_open\{mode="sse"\} [1-9]/.test(text);
    },
    { what: "the console's SSE reader" },
  );
  const append = await fetch(`${sessiond.url}/v1/stream/${path}`, {
    method: "POST",
    headers: { Authorization: `Bearer ${sessiond.apiKey}`, "Content-Type": "application/json" },
    body: JSON.stringify({ hello: "from the test" }),
  });
  assert.ok(append.ok, String(append.status));
  await waitForText(page, "tail-events", (t) => t.includes("from the test"), "the append in the tail");
  // An idempotent producer's append: reopening the stream lists it with its epoch and seq.
  const produced = await fetch(`${sessiond.url}/v1/stream/${path}`, {
    method: "POST",
    headers: {
      Authorization: `Bearer ${sessiond.apiKey}`,
      "Content-Type": "application/json",
      "Producer-Id": "writer-1",
      "Producer-Epoch": "2",
      "Producer-Seq": "0",
    },
    body: JSON.stringify({ from: "a producer" }),
  });
  assert.equal(produced.status, 200);
  await shot("streams");
  await page.click(`[data-testid="stream-${path}"]`);
  await waitFor(async () => (await page.$('[data-testid="producer-writer-1"]')) !== null, { what: "the producer listed" });
  const cells = await page.$$eval('[data-testid="producers-table"] tbody td', (tds) => tds.map((td) => td.textContent));
  assert.deepEqual(cells.slice(0, 3), ["writer-1", "2", "0"]);
  assert.notEqual(cells[3], "—", "last write time");
  await shot("streams-producers");
  await page.click('[data-testid="stream-delete"]');
  await waitForText(page, "streams-message", (t) => t.startsWith("Deleted"), "delete");
  const head = await fetch(`${sessiond.url}/v1/stream/${path}`, {
    method: "HEAD",
    headers: { Authorization: `Bearer ${sessiond.apiKey}` },
  });
  assert.equal(head.status, 404);
  assert.equal(await page.$(`[data-testid="stream-${path}"]`), null, "the deleted stream left the list");
});

test("middleware: decisions per second from /metrics", async () => {
  await open("middleware");
  await waitFor(
    async () => {
      await sessiond.api("POST", "/v1/middleware/decide", { ip: "192.0.2.7", url: "https://app.example/", method: "GET" });
      const text = await testText(page, "chart-decisions-legend");
      const value = await page.$eval('[data-testid="chart-decisions-decisions"] b', (b) => Number(b.dataset.value)).catch(() => 0);
      return text.includes("decisions") && value > 0;
    },
    { what: "a non-zero decision rate" },
  );
  await shot("middleware");
});
