// A StreamDB (@durable-streams/state) that starts reading after a keyed compaction
// materializes the same collections as one that followed the stream live from its start, and
// both match the model the writer kept. Run by ./run, which starts sessiond.
import assert from "node:assert/strict"
import { createStateSchema } from "@durable-streams/state"
import { createStreamDB } from "@durable-streams/state/db"

const base = process.env.SESSIOND_URL
assert.ok(base, "SESSIOND_URL is required")
const url = `${base}/v1/stream/e2e/state-${process.pid}-${Date.now()}`

// Accepts any value: the test is about the stream, not validation.
const anything = {
  "~standard": { version: 1, vendor: "sessiond-e2e", validate: (value) => ({ value }) },
}
const schema = createStateSchema({
  users: { schema: anything, type: "user", primaryKey: "id" },
  tasks: { schema: anything, type: "task", primaryKey: "id" },
})

const open = () =>
  createStreamDB({ streamOptions: { url, contentType: "application/json" }, state: schema })

/** A row without what the reader adds (`$`-prefixed sync metadata, `_seq`: its position in
 * the events this reader happened to see). */
const ownFields = (row) =>
  Object.fromEntries(Object.entries(row).filter(([k]) => !k.startsWith("$") && k !== "_seq"))

/** The collections as plain sorted data. */
const snapshot = (db) =>
  Object.fromEntries(
    ["users", "tasks"].map((name) => [
      name,
      [...db.collections[name].state.entries()]
        .map(([key, value]) => [String(key), JSON.stringify(ownFields(value))])
        .sort(),
    ]),
  )

let put = await fetch(url, {
  method: "PUT",
  headers: { "content-type": "application/json", "stream-compaction": "key" },
})
assert.equal(put.status, 201, "create")
let tail = put.headers.get("stream-next-offset")

const post = async (events) => {
  const r = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(events),
  })
  assert.equal(r.status, 204, await r.text())
  tail = r.headers.get("stream-next-offset")
}

const live = open()
await live.preload()

// A seeded walk over a few keys per collection: inserts of absent keys, updates and deletes
// of present ones, upserts of any; sometimes several events in one append.
let seed = 42
const rand = (n) => {
  seed = (seed * 1103515245 + 12345) % 2147483648
  return (seed >>> 16) % n
}
const model = { users: new Map(), tasks: new Map() }
const kinds = { users: "user", tasks: "task" }
let total = 0
for (let step = 0; step < 150; step++) {
  const batch = []
  for (let i = 0, n = 1 + (rand(4) === 0 ? rand(3) : 0); i < n; i++) {
    const name = rand(2) ? "users" : "tasks"
    const id = `${kinds[name]}-${rand(6)}`
    const rows = model[name]
    const value = { id, n: step, label: `v${step}.${i}` }
    const helpers = schema[name]
    let event
    if (!rows.has(id)) {
      event = rand(2) ? helpers.insert({ value }) : helpers.upsert({ value })
      rows.set(id, value)
    } else if (rand(4) === 0) {
      event = helpers.delete({ key: id })
      rows.delete(id)
    } else {
      event = rand(2) ? helpers.update({ value }) : helpers.upsert({ value })
      rows.set(id, value)
    }
    batch.push(event)
  }
  total += batch.length
  await post(batch)
}
// The last append carries a txid: once the live reader saw it, it has seen everything.
const last = schema.users.upsert({
  value: { id: "user-final", n: -1 },
  headers: { txid: "final" },
})
model.users.set("user-final", { id: "user-final", n: -1 })
await post([last])
total += 1
await live.utils.awaitTxId("final", 10000)

const before = await (await fetch(`${url}?offset=-1`)).json()
assert.equal(before.length, total)
const compact = await fetch(url, { method: "POST", headers: { "stream-compact-before": tail } })
assert.equal(compact.status, 204, await compact.text())
const after = await (await fetch(`${url}?offset=-1`)).json()
assert.ok(after.length < before.length / 2, `compacted ${before.length} -> ${after.length}`)

const late = open()
await late.preload()
const expected = Object.fromEntries(
  Object.entries(model).map(([name, rows]) => [
    name,
    [...rows.entries()].map(([k, v]) => [k, v]),
  ]),
)
const seen = snapshot(live)
assert.deepEqual(snapshot(late), seen, "late reader == live reader")
for (const name of ["users", "tasks"]) {
  assert.deepEqual(
    seen[name],
    expected[name].map(([k, v]) => [k, JSON.stringify(v)]).sort(),
    `${name}: the writer's rows`,
  )
}
console.log(
  `state e2e: ${before.length} events compacted to ${after.length}; ` +
    `${seen.users.length} users, ${seen.tasks.length} tasks on both readers`,
)
live.close()
late.close()
process.exit(0)
