// Unit tests of the pure parts (built by `npm run build` into dist/): the reconnect schedules
// and the presence diff rules. The protocol itself is tested in the browser (browser.test.mjs).
import assert from "node:assert/strict";
import { test } from "node:test";

import { DEFAULT_BACKOFF, SEED_BACKOFF, backoffDelay } from "../dist/backoff.js";
import { applyPresenceDiff, parsePresence } from "../dist/presence.js";
import { isLogoutClose } from "../dist/protocol.js";

test("seed schedule: 1 s·2ⁿ capped at 30 s, ten attempts, no jitter", () => {
  const delays = Array.from({ length: 11 }, (_, n) => backoffDelay(SEED_BACKOFF, n, () => 0.99));
  assert.deepEqual(delays, [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000, 30000, null]);
});

test("v1 schedule: jitter stays within the lower half of each step and never gives up", () => {
  assert.equal(backoffDelay(DEFAULT_BACKOFF, 3, () => 0), 8000);
  assert.equal(backoffDelay(DEFAULT_BACKOFF, 3, () => 1), 4000);
  assert.equal(backoffDelay(DEFAULT_BACKOFF, 2000, () => 0), 30000);
});

test("logout is recognised by code 4001 or by seed C's reason string", () => {
  assert.ok(isLogoutClose(4001, ""));
  assert.ok(isLogoutClose(1000, "Logged out from all devices"));
  assert.ok(!isLogoutClose(1006, ""));
  assert.ok(!isLogoutClose(4003, "Disconnected by server"));
});

const meta = (connId, extra = {}) => ({ connId, deviceId: `d${connId}`, joinedAt: 1, ...extra });

test("presence: a meta update (leave + join of one connId) keeps the connection", () => {
  const start = { alice: { metas: [meta("1"), meta("2")] } };
  const next = applyPresenceDiff(
    start,
    { alice: { metas: [meta("1", { status: "typing" })] } },
    { alice: { metas: [meta("1")] } },
  );
  assert.deepEqual(next.alice.metas.map((m) => [m.connId, m.status]), [["2", undefined], ["1", "typing"]]);
  assert.equal(start.alice.metas.length, 2, "the input is not modified");
});

test("presence: a user whose last meta leaves is dropped; joins add users", () => {
  const next = applyPresenceDiff(
    { alice: { metas: [meta("1")] } },
    { bob: { metas: [meta("7")] } },
    { alice: { metas: [meta("1")] } },
  );
  assert.deepEqual(Object.keys(next), ["bob"]);
});

test("presence: malformed entries are ignored", () => {
  assert.deepEqual(parsePresence({ a: { metas: [{ nope: 1 }] }, b: null, c: { metas: [meta("3")] } }), {
    c: { metas: [meta("3")] },
  });
  assert.deepEqual(parsePresence("x"), {});
});
