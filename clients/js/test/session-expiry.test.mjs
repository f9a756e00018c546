// Session expiry warnings in real Chromium: the server warns a session's sockets
// `sessions.expiry_warning_s` before its idle deadline (set here to 3 s short of the 30 min
// idle window, so the warning comes ~3 s after sign-in); the v1 client emits
// `session_expiring` and `extendSession()` slides the deadline; the seed hook calls
// `onSessionExpiring` and its `extendSession()` does the same.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { startDemoServer } from "../../../examples/realtime-demo/serve.mjs";
import { launchBrowser, listItems, signIn, startSessiond, uniqueUser, waitFor, waitForText } from "./harness.mjs";

let sessiond;
let demo;
let browser;

before(async () => {
  sessiond = await startSessiond({ config: { SESSIONS__EXPIRY_WARNING_S: 1797 } });
  demo = await startDemoServer({ upstream: sessiond.url, apiKey: sessiond.apiKey });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await demo?.close();
  await sessiond?.stop();
});

/** The idle deadline of the user's one session, as the server has it. */
async function idleDeadline(user) {
  const listed = await sessiond.api("GET", `/v1/users/${user}/sessions`);
  assert.equal(listed.status, 200);
  assert.equal(listed.body.sessions.length, 1);
  // The listing's `expires_at` is the idle deadline here (the absolute one is days away).
  return listed.body.sessions[0].expires_at;
}

test("expiry warning: the v1 client and the seed hook are told, and extending slides the deadline", async () => {
  const user = uniqueUser("sleepy");
  const page = await browser.context.newPage();
  await signIn(browser, demo.url, page, user);
  await waitForText(page, "status", (t) => t === "connected", "hook connected");

  // Both sockets of the page are warned.
  await waitFor(
    () => page.evaluate(() => window.sessiondDemo.events.some((e) => e.startsWith("session_expiring "))),
    { what: "session_expiring on the v1 client" },
  );
  await waitFor(async () => (await listItems(page, "log")).some((l) => l.startsWith("session expiring in ")), {
    what: "onSessionExpiring in the seed hook",
  });

  // The v1 client extends: the answer is the new deadline, which the server now has.
  const before = await idleDeadline(user);
  const extended = await page.evaluate(() => window.sessiondDemo.client.extendSession());
  assert.ok(extended > before, `extended to ${extended}, was ${before}`);
  assert.equal(await idleDeadline(user), extended);

  // The hook's extendSession slides it again.
  await waitFor(async () => Date.now() > extended - 30 * 60_000 + 5, { what: "a clock tick" });
  await page.click('[data-testid="extend-session"]');
  await waitFor(async () => (await idleDeadline(user)) > extended, { what: "the hook's extension on the server" });
  await page.close();
});
