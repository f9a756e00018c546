// Browser tests: the demo page (examples/realtime-demo, built from clients/js sources) in real
// Chromium, against the real sessiond binary through the demo server.
//
// 1. seed C hook: two pages = two devices of one user; a join in one shows in the other,
//    presence follows, logout-all logs both out and neither tries to reconnect.
// 2. v1 client: a server publish reaches the page; after a network drop, the reconnect
//    recovers the messages published meanwhile, in order, without duplicates.
// 3. sessiond restarts: both clients come back by themselves, the hook finds the persisted
//    state, the v1 client reports the lost channel history and goes on.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { startDemoServer } from "../../../examples/realtime-demo/serve.mjs";
import {
  holdsFor,
  launchBrowser,
  listItems,
  signIn as signInAs,
  socketCounts,
  startSessiond,
  testText,
  uniqueUser,
  waitFor,
  waitForText,
} from "./harness.mjs";

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

const signIn = (page, userId) => signInAs(browser, demo.url, page, userId);

async function openSignedIn(userId) {
  const page = await browser.context.newPage();
  await page.goto(demo.url);
  await waitForText(page, "user", (t) => t === userId, "signed-in user");
  return page;
}

const connected = (page) => waitForText(page, "status", (t) => t === "connected", "hook connected");
const v1State = (page, state) => waitForText(page, "v1-state", (t) => t === state, `v1 ${state}`);

test("seed hook: two devices of one user stay in sync; logout-all logs both out for good", async () => {
  const user = uniqueUser("alice");
  const phone = await browser.context.newPage();
  await signIn(phone, user);
  const laptop = await openSignedIn(user);
  await Promise.all([connected(phone), connected(laptop)]);

  // The server sees both devices of the user (hook + v1 client per page).
  await waitFor(async () => {
    const state = await sessiond.api("GET", `/__user-session/state?userId=${user}`);
    return state.status === 200 && state.body.connectedDevices === 4;
  }, { what: "4 sockets of the user on the server" });

  // v1 presence on the personal channel: each page sees both devices' connections, and a meta
  // update from the laptop reaches the phone.
  for (const page of [phone, laptop]) {
    await waitForText(page, "v1-presence", (t) => t.split(", ").length === 2, "two devices present");
  }
  await laptop.evaluate((c) => window.sessiondDemo.client.updatePresence(c, { status: "typing" }), `user:${user}`);
  await waitFor(
    () =>
      phone.evaluate((c) => {
        const metas = Object.values(window.sessiondDemo.client.presence(c)).flatMap((e) => e.metas);
        return metas.length === 2 && metas.filter((m) => m.status === "typing").length === 1;
      }, `user:${user}`),
    { what: "the laptop's typing status on the phone" },
  );

  // A join on the phone appears on the laptop.
  await phone.fill('[data-testid="game-id"]', "poker-42");
  await phone.click('[data-testid="join"]');
  for (const page of [laptop, phone]) {
    await waitFor(async () => (await listItems(page, "games")).join() === "poker-42", {
      what: `poker-42 in ${page === phone ? "the phone" : "the laptop"}'s games`,
    });
  }
  await waitFor(async () => (await listItems(laptop, "log")).includes("joined poker-42"), {
    what: "onGameJoined on the laptop",
  });

  // A presence change on the laptop is seen on the phone.
  await laptop.selectOption('[data-testid="presence-select"]', "away");
  await waitForText(phone, "presence", (t) => t === "away", "presence away on the phone");
  const serverState = await sessiond.api("GET", `/__user-session/state?userId=${user}`);
  assert.equal(serverState.body.presence, "away");
  assert.deepEqual(serverState.body.activeGames, ["poker-42"]);

  // Leave on the laptop, seen on the phone.
  await laptop.fill('[data-testid="game-id"]', "poker-42");
  await laptop.click('[data-testid="leave"]');
  await waitFor(async () => (await listItems(phone, "games")).length === 0, {
    what: "poker-42 gone from the phone",
  });

  // Logout-all on the phone: both pages are logged out, the v1 clients too.
  await phone.click('[data-testid="logout-all"]');
  for (const page of [phone, laptop]) {
    await waitForText(page, "logged-out", (t) => t.length > 0, "logged-out banner");
    await waitForText(page, "status", (t) => t === "disconnected", "hook disconnected");
    await v1State(page, "logged_out");
  }

  // Nobody reconnects: no new WebSocket in either page, none on the server, for longer than
  // the first backoff steps of both clients (1 s, 2 s).
  const before = [await socketCounts(phone), await socketCounts(laptop)];
  const upgradesBefore = demo.stats.upgrades;
  await holdsFor(async () => {
    const now = [await socketCounts(phone), await socketCounts(laptop)];
    const connections = await sessiond.api("GET", `/v1/realtime/users/${user}/connections`);
    return (
      JSON.stringify(now) === JSON.stringify(before) &&
      demo.stats.upgrades === upgradesBefore &&
      connections.status === 200 &&
      connections.body.connections.length === 0
    );
  }, 3500, "no reconnect after logout");

  // The sessions were revoked server-side: the cookie no longer signs anyone in.
  const me = await laptop.evaluate(async () => (await fetch("/demo/me")).status);
  assert.equal(me, 401);
  await phone.close();
  await laptop.close();
});

test("v1 client: server publish reaches the page; a drop recovers missed messages in order", async () => {
  const user = uniqueUser("bob");
  const channel = `user:${user}`;
  const page = await browser.context.newPage();
  await signIn(page, user);
  await v1State(page, "connected");
  await waitFor(() => page.evaluate(() => window.sessiondDemo?.events.some((e) => e.startsWith("subscribed"))), {
    what: "first subscribe",
  });

  const publish = async (n) => {
    const reply = await sessiond.api("POST", "/v1/realtime/publish", { channel, data: { n } });
    assert.equal(reply.status, 200, JSON.stringify(reply.body));
    return reply.body.offset;
  };
  assert.equal(await publish(1), 1);
  await waitFor(async () => (await listItems(page, "v1-messages")).length === 1, { what: "message 1" });

  // Presence: the page's own v1 connection is listed.
  const presence = await sessiond.api("GET", `/v1/realtime/channels/${encodeURIComponent(channel)}/presence`);
  assert.equal(presence.body.presence[user].metas.length, 1);
  assert.match(await testText(page, "v1-presence"), /^demo-/);

  // Cut the network and keep it down while three messages are published.
  demo.setUpgradesBlocked(true);
  assert.ok(demo.dropSockets() >= 2, "the page had its sockets through the proxy");
  await v1State(page, "reconnecting");
  await waitFor(async () => {
    const list = await sessiond.api("GET", `/v1/realtime/users/${user}/connections`);
    return list.body.connections.length === 0;
  }, { what: "server to notice the drop" });
  for (const n of [2, 3, 4]) await publish(n);
  assert.equal((await listItems(page, "v1-messages")).length, 1, "nothing arrives while down");

  // Back up: the client reconnects by itself and recovers 2..4 from its last offset.
  demo.setUpgradesBlocked(false);
  await waitFor(async () => (await listItems(page, "v1-messages")).length === 4, {
    timeoutMs: 40_000,
    what: "recovered messages",
  });
  await v1State(page, "connected");
  const offsets = await page.$$eval('[data-testid="v1-messages"] > li', (items) =>
    items.map((li) => Number(li.dataset.offset)),
  );
  assert.deepEqual(offsets, [1, 2, 3, 4]);
  assert.deepEqual(await listItems(page, "v1-messages"), ['{"n":1}', '{"n":2}', '{"n":3}', '{"n":4}']);
  const events = await page.evaluate(() => window.sessiondDemo.events);
  assert.ok(events.includes(`subscribed ${channel} recovered=true n=3`), events.join("; "));

  // The seed hook reconnected too (a drop is not a logout).
  await connected(page);

  // A publish from the page itself is delivered once (live), with the next offset.
  await page.fill('[data-testid="v1-text"]', "from the page");
  await page.click('[data-testid="v1-publish"]');
  await waitFor(async () => (await listItems(page, "v1-messages")).length === 5, { what: "own publish" });
  const last = await page.$$eval('[data-testid="v1-messages"] > li', (items) => items.at(-1)?.dataset.offset);
  assert.equal(last, "5");

  // Unsubscribe: the server drops the page's connection from the channel's presence.
  await page.evaluate((c) => window.sessiondDemo.client.unsubscribe(c), channel);
  await waitFor(async () => {
    const now = await sessiond.api("GET", `/v1/realtime/channels/${encodeURIComponent(channel)}/presence`);
    return now.status === 200 && !(user in now.body.presence);
  }, { what: "the page gone from the channel's presence" });
  assert.deepEqual(await page.evaluate(() => window.sessiondDemo.client.subscriptions), []);
  await page.close();
});

test("sessiond restart: both clients reconnect by themselves; lost history is reported", async () => {
  const user = uniqueUser("carol");
  const channel = `user:${user}`;
  const page = await browser.context.newPage();
  await signIn(page, user);
  await Promise.all([connected(page), v1State(page, "connected")]);
  await page.fill('[data-testid="game-id"]', "chess-7");
  await page.click('[data-testid="join"]');
  await waitFor(async () => (await listItems(page, "games")).join() === "chess-7", { what: "chess-7" });
  await sessiond.api("POST", "/v1/realtime/publish", { channel, data: { n: 1 } });
  await waitFor(async () => (await listItems(page, "v1-messages")).length === 1, { what: "message 1" });
  const countsBefore = await socketCounts(page);
  const lastActiveBefore = await testText(page, "last-active");

  await sessiond.restart();

  // Channel history lives in memory: the new process has a new epoch, and the client says so.
  await waitFor(() => page.evaluate((c) => window.sessiondDemo.events.includes(`recovery_failed ${c}`), channel), {
    timeoutMs: 40_000,
    what: "recovery_failed after the restart",
  });
  await Promise.all([connected(page), v1State(page, "connected")]);
  const countsAfter = await socketCounts(page);
  for (const path of ["/__user-session", "/v1/realtime"]) {
    assert.ok(countsAfter[path] > countsBefore[path], `${path} reconnected (${JSON.stringify(countsAfter)})`);
  }
  // The user's state is persisted (SQLite): the hook's new initial_state (lastActive moved on
  // connect) still has the game.
  await waitForText(page, "last-active", (t) => t !== lastActiveBefore, "a new initial_state");
  assert.deepEqual(await listItems(page, "games"), ["chess-7"]);

  // Live messages flow again on the new epoch.
  await sessiond.api("POST", "/v1/realtime/publish", { channel, data: { n: 2 } });
  await waitFor(async () => (await listItems(page, "v1-messages")).at(-1) === '{"n":2}', { what: "message 2" });
  assert.equal((await listItems(page, "v1-messages")).length, 2);
  await page.close();
});
