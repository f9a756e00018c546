// Drives sessiond with the official client (@durable-streams/client): create, append, read
// back, live tailing (long-poll and SSE), resuming from an offset, and an idempotent producer.
import { expect, test } from "vitest"
import { DurableStream, IdempotentProducer, stream } from "@durable-streams/client"

const base = process.env.CONFORMANCE_TEST_URL
const name = (what) => `${base}/v1/stream/client-${what}-${Date.now()}-${Math.random().toString(36).slice(2)}`

test("create, append, read back and resume from an offset", async () => {
  const url = name("resume")
  const handle = await DurableStream.create({ url, contentType: "application/json" })
  await handle.append(JSON.stringify({ n: 1 }))
  await handle.append(JSON.stringify({ n: 2 }))
  const first = await stream({ url, offset: "-1", live: false })
  expect(await first.json()).toEqual([{ n: 1 }, { n: 2 }])
  const resumeAt = first.offset
  await handle.append(JSON.stringify({ n: 3 }))
  const rest = await stream({ url, offset: resumeAt, live: false })
  expect(await rest.json()).toEqual([{ n: 3 }])
})

for (const live of ["long-poll", "sse"]) {
  test(`live tailing with ${live}`, async () => {
    const url = name(live)
    const handle = await DurableStream.create({ url, contentType: "application/json" })
    await handle.append(JSON.stringify({ n: 1 }))
    const res = await stream({ url, offset: "-1", live })
    const seen = []
    const done = new Promise((resolve) => {
      res.subscribeJson(async (batch) => {
        seen.push(...batch.items)
        if (seen.length >= 3) resolve()
      })
    })
    await new Promise((r) => setTimeout(r, 100))
    await handle.append(JSON.stringify({ n: 2 }))
    await handle.append(JSON.stringify({ n: 3 }))
    await done
    res.cancel()
    expect(seen).toEqual([{ n: 1 }, { n: 2 }, { n: 3 }])
  })
}

test("idempotent producer writes each item once", async () => {
  const url = name("producer")
  const handle = await DurableStream.create({ url, contentType: "application/json" })
  const producer = new IdempotentProducer(handle, "client-test", { autoClaim: true })
  for (let i = 0; i < 50; i++) producer.append(JSON.stringify({ i }))
  await producer.flush()
  await producer.close()
  const res = await stream({ url, offset: "-1", live: false })
  const items = await res.json()
  expect(items.map((x) => x.i)).toEqual([...Array(50).keys()])
})
