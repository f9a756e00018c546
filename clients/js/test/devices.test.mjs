// "Your devices" in real Chromium: two tabs signed in as one user (two sessions) list both
// devices through `listDevices()` (the demo backend forwards with the API key, for the
// signed-in user only), each with the hook's seed socket and the v1 client's socket; ending
// one device with `DELETE /v1/sessions/{id}` removes it from the list.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { startDemoServer } from "../../../examples/realtime-demo/serve.mjs";
import { launchBrowser, listItems, signIn, startSessiond, uniqueUser, waitFor, waitForText } from "./harness.mjs";

let sessiond;
let demo;
let browser;

before(async () => {
  sessiond = await startSessiond();
  demo = await startDemoServer({ upstream: sessiond.url, apiKey: sessiond.apiKey });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await demo?.close();
  await sessiond?.stop();
});

/** Clicks refresh until the devices list satisfies `accept`; returns its items. */
async function devicesWhen(page, accept, what) {
  return waitFor(async () => {
    await page.click('[data-testid="devices-refresh"]');
    const items = await listItems(page, "devices");
    return accept(items) ? items : false;
  }, { what });
}

test("your devices: both tabs' sessions with their sockets, and ending one removes it", async () => {
  const user = uniqueUser("devices");
  const first = await browser.context.newPage();
  await signIn(browser, demo.url, first, user);
  await waitForText(first, "status", (t) => t === "connected", "first tab's hook");
  await waitForText(first, "v1-state", (t) => t === "connected", "first tab's v1 client");
  const second = await browser.context.newPage();
  await signIn(browser, demo.url, second, user);
  await waitForText(second, "status", (t) => t === "connected", "second tab's hook");
  await waitForText(second, "v1-state", (t) => t === "connected", "second tab's v1 client");

  const items = await devicesWhen(
    second,
    (list) => list.length === 2 && list.every((l) => l.includes("seed ") && l.includes("v1 ")),
    "two devices, each with its seed and v1 sockets",
  );
  assert.ok(items.every((l) => l.includes("(online)")), items.join("\n"));

  // Another user's devices are not this user's to see.
  const other = await second.evaluate(async () => (await fetch("/v1/users/someone-else/devices")).status);
  assert.equal(other, 403);

  // The same list through sessiond, then the first tab's device ends.
  const listed = await sessiond.api("GET", `/v1/users/${user}/devices`);
  assert.equal(listed.status, 200);
  const sessions = listed.body.devices.map((d) => d.session.id);
  assert.equal(sessions.length, 2);
  // The cookie now names the second tab's session: end the other one (the first tab's).
  const secondSession = (await browser.context.cookies()).find((c) => c.name === "sessiond_session").value;
  const ended = sessions.find((id) => id !== secondSession);
  assert.equal((await sessiond.api("DELETE", `/v1/sessions/${ended}`)).status, 204);
  await waitForText(first, "v1-state", (t) => t !== "connected", "the ended device's v1 client closes");
  const left = await devicesWhen(second, (list) => list.length === 1, "one device left");
  assert.ok(left[0].includes("seed ") && left[0].includes("v1 "), left.join("\n"));
  await first.close();
  await second.close();
});
