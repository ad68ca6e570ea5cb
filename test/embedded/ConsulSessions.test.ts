import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { serveConsul } from "../../src/embedded/ConsulServer.js"
import { parseGoDuration } from "../../src/domain/ConsulApi.js"
import { ConsulStore } from "../../src/services/ConsulStore.js"
import { call } from "../support/Fetch.js"

/**
 * The embedded Consul's sessions, locks and blocking queries, as a real Consul behaves (agent/session_endpoint.go,
 * agent/consul/session_endpoint.go, state/kvs.go kvsLockTxn/kvsUnlockTxn, state/session.go deleteSessionTxn,
 * kvs_endpoint.go kvsPreApply).
 */

const setup = Effect.gen(function*() {
  const store = new ConsulStore("127.0.0.1")
  const server = yield* serveConsul(store, { addresses: ["127.0.0.1"] })
  return { store, main: server.url() }
})

const put = (url: string, body?: string) => call(url, body === undefined ? { method: "PUT" } : { method: "PUT", body })

const createSession = (main: string, body: object) =>
  Effect.map(put(`${main}/v1/session/create`, JSON.stringify(body)), (answer) => {
    expect(answer.status, answer.text).toBe(200)
    return (JSON.parse(answer.text) as { ID: string }).ID
  })

const entry = (main: string, key: string) =>
  Effect.map(call(`${main}/v1/kv/${key}`), (answer) => (JSON.parse(answer.text) as Array<Record<string, unknown>>)[0]!)

/** A GET that may block: fetch with a deadline of its own, the X-Consul-Index of the answer. */
const blockingGet = (url: string, deadlineMs: number) =>
  Effect.promise(async () => {
    const response = await fetch(url, { signal: AbortSignal.timeout(deadlineMs) })
    return { status: response.status, index: Number(response.headers.get("x-consul-index")), text: await response.text() }
  })

describe("embedded Consul: sessions", () => {
  it.scopedLive("create refuses a TTL outside [10s, 24h] as Consul's Session.Apply does: 500 with its own message", () =>
    Effect.gen(function*() {
      const { main, store } = yield* setup
      const short = yield* put(`${main}/v1/session/create`, JSON.stringify({ TTL: "5s" }))
      expect(short.status).toBe(500)
      expect(short.text).toBe("Invalid Session TTL '5000000000', must be between [10s=24h0m0s]")
      const long = yield* put(`${main}/v1/session/create`, JSON.stringify({ TTL: "25h" }))
      expect(long.status).toBe(500)
      expect(long.text).toBe("Invalid Session TTL '90000000000000', must be between [10s=24h0m0s]")
      const garbled = yield* put(`${main}/v1/session/create`, JSON.stringify({ TTL: "15x" }))
      expect(garbled.status).toBe(500)
      expect(garbled.text).toContain("Session TTL '15x' invalid")
      const behavior = yield* put(`${main}/v1/session/create`, JSON.stringify({ Behavior: "keep" }))
      expect(behavior.status).toBe(500)
      expect(behavior.text).toBe("Invalid Behavior setting 'keep'")
      const notJson = yield* put(`${main}/v1/session/create`, "{")
      expect(notJson.status).toBe(400)
      expect(notJson.text).toMatch(/^Request decode failed/)
      expect(store.sessions.size).toBe(0)
      // field names match case-insensitively (Go's JSON decoder); LockDelay "1s" and a bare 1 both mean a second
      const id = yield* createSession(main, { ttl: "10s", lockdelay: 1, Name: "consular" })
      expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/)
      expect(store.sessions.get(id)).toMatchObject({ TTL: "10s", ttlMillis: 10_000, lockDelayMillis: 1_000, Behavior: "release", Name: "consular" })
      expect(store.sessions.get(yield* createSession(main, {}))?.lockDelayMillis).toBe(15_000) // Consul's default
    }))

  it.scopedLive("renew: the session as a one-element list; an unknown or ended one 404 `Session id '<id>' not found`", () =>
    Effect.gen(function*() {
      const { main } = yield* setup
      const id = yield* createSession(main, { TTL: "15s", LockDelay: "1s", Behavior: "release" })
      const renewed = yield* put(`${main}/v1/session/renew/${id}`)
      expect(renewed.status).toBe(200)
      expect(JSON.parse(renewed.text)).toEqual([expect.objectContaining({ ID: id, TTL: "15s", Behavior: "release", LockDelay: 1_000_000_000 })])
      const unknown = yield* put(`${main}/v1/session/renew/0b1c2d3e-0000-0000-0000-000000000000`)
      expect(unknown.status).toBe(404)
      expect(unknown.text).toBe("Session id '0b1c2d3e-0000-0000-0000-000000000000' not found")
      // destroy answers true, for an unknown session too; info of an unknown session is an empty list
      expect((yield* put(`${main}/v1/session/destroy/${id}`)).text).toBe("true")
      expect((yield* put(`${main}/v1/session/destroy/${id}`)).text).toBe("true")
      expect((yield* put(`${main}/v1/session/renew/${id}`)).status).toBe(404)
      const info = yield* call(`${main}/v1/session/info/${id}`)
      expect([info.status, info.text]).toEqual([200, "[]"])
      expect((yield* put(`${main}/v1/session/renew/`)).status).toBe(400) // "Missing session"
    }))

  it.scopedLive("acquire and release answer true/false; the entry shows Session and LockIndex; an unknown session is a 500", () =>
    Effect.gen(function*() {
      const { main, store } = yield* setup
      const a = yield* createSession(main, { TTL: "15s", LockDelay: "1s" })
      const b = yield* createSession(main, { TTL: "15s", LockDelay: "1s" })
      const key = `${main}/v1/kv/service/consular/consular/leader`
      expect((yield* put(`${key}?acquire=${a}`, "{\"host\":\"a\"}")).text).toBe("true")
      expect((yield* put(`${key}?acquire=${b}`, "{\"host\":\"b\"}")).text).toBe("false")
      expect((yield* put(`${key}?acquire=${a}`, "{\"host\":\"a2\"}")).text).toBe("true") // already held: still true
      expect(yield* entry(main, "service/consular/consular/leader")).toMatchObject({ Session: a, LockIndex: 1, Value: Buffer.from("{\"host\":\"a2\"}").toString("base64") })
      expect((yield* put(`${key}?release=${b}`)).text).toBe("false")
      expect((yield* put(`${key}?release=${a}`, "{\"host\":\"a2\"}")).text).toBe("true")
      const released = yield* entry(main, "service/consular/consular/leader")
      expect(released).not.toHaveProperty("Session")
      expect(released["LockIndex"]).toBe(1)
      // a release imposes no lock delay: the next session takes it at once, and LockIndex counts the new holder
      expect((yield* put(`${key}?acquire=${b}`, "{\"host\":\"b\"}")).text).toBe("true")
      expect((yield* entry(main, "service/consular/consular/leader"))["LockIndex"]).toBe(2)
      const unknown = yield* put(`${main}/v1/kv/other?acquire=0b1c2d3e-0000-0000-0000-000000000000`, "x")
      expect([unknown.status, unknown.text]).toEqual([500, "invalid session \"0b1c2d3e-0000-0000-0000-000000000000\""])
      expect(store.kv.has("other")).toBe(false)
      // lock operations are not consular's data writes
      expect(store.log.filter((record) => record.write)).toEqual([])
    }))

  it.scopedLive("a destroyed session releases its keys, which no session can acquire for its LockDelay", () =>
    Effect.gen(function*() {
      const { main } = yield* setup
      const a = yield* createSession(main, { TTL: "15s", LockDelay: "1s" })
      const b = yield* createSession(main, { TTL: "15s", LockDelay: "1s" })
      const key = `${main}/v1/kv/leader`
      expect((yield* put(`${key}?acquire=${a}`, "a")).text).toBe("true")
      expect((yield* put(`${main}/v1/session/destroy/${a}`)).text).toBe("true")
      expect(yield* entry(main, "leader")).not.toHaveProperty("Session")
      expect((yield* put(`${key}?acquire=${b}`, "b")).text).toBe("false") // within the lock delay
      let acquired = false
      for (let i = 0; i < 60 && !acquired; i++) {
        yield* Effect.sleep("50 millis")
        acquired = (yield* put(`${key}?acquire=${b}`, "b")).text === "true"
      }
      expect(acquired).toBe(true) // once the second has passed
    }))

  it("a session ends when its TTL runs out without renewal (Behavior release): its keys released, then locked out for LockDelay", () => {
    const store = new ConsulStore("127.0.0.1")
    store.addAgent("127.0.0.1", "main")
    const created = store.createSession({ TTL: "10s", LockDelay: "1s", Behavior: "release" }, 0)
    if (!("id" in created)) throw new Error(created.body)
    const other = store.createSession({ TTL: "1m", LockDelay: "1s" }, 0)
    if (!("id" in other)) throw new Error(other.body)
    expect(store.acquire("leader", created.id, "a", 0)).toBe(true)
    expect(store.renewSession(created.id, 6_000)?.expiresAt).toBe(16_000) // a renewal restarts the TTL
    store.expireSessions(15_999)
    expect(store.keyMeta.get("leader")?.Session).toBe(created.id)
    store.expireSessions(16_000)
    expect(store.sessions.has(created.id)).toBe(false)
    expect(store.endedSessions).toEqual([{ id: created.id, at: 16_000, why: "expired" }])
    expect(store.keyMeta.get("leader")?.Session).toBeUndefined()
    expect(store.kv.get("leader")).toBe("a") // released, not deleted
    expect(store.acquire("leader", other.id, "b", 16_999)).toBe(false)
    expect(store.acquire("leader", other.id, "b", 17_000)).toBe(true)
    expect(store.renewSession(created.id, 17_000)).toBeUndefined()
  })

  it("Behavior delete: an ended session's keys are deleted", () => {
    const store = new ConsulStore("127.0.0.1")
    const created = store.createSession({ TTL: "10s", LockDelay: "0s", Behavior: "delete" }, 0)
    if (!("id" in created)) throw new Error(created.body)
    store.acquire("lock", created.id, "x", 0)
    store.destroySession(created.id, 1)
    expect(store.kv.has("lock")).toBe(false)
  })

  it("Go durations as Consul parses them", () => {
    expect([parseGoDuration("15s"), parseGoDuration("1m"), parseGoDuration("1h30m"), parseGoDuration("500ms"), parseGoDuration("0")]).toEqual([15_000, 60_000, 5_400_000, 500, 0])
    expect([parseGoDuration("15"), parseGoDuration("s"), parseGoDuration(""), parseGoDuration("1 m")]).toEqual([undefined, undefined, undefined, undefined])
  })
})

describe("embedded Consul: blocking queries on a key", () => {
  it.scopedLive("?index=<X-Consul-Index>&wait= returns when the key's ModifyIndex moves past it, with the new index", () =>
    Effect.gen(function*() {
      const { main } = yield* setup
      yield* put(`${main}/v1/kv/leader`, "a")
      const first = yield* blockingGet(`${main}/v1/kv/leader`, 2_000)
      expect(first.index).toBeGreaterThan(0)
      const waiting = yield* Effect.fork(blockingGet(`${main}/v1/kv/leader?index=${first.index}&wait=10s`, 10_000))
      yield* Effect.sleep("200 millis")
      expect(waiting.unsafePoll()).toBeNull() // still blocked: nothing changed
      yield* put(`${main}/v1/kv/other`, "x") // another key: not this one's change
      yield* Effect.sleep("100 millis")
      expect(waiting.unsafePoll()).toBeNull()
      yield* put(`${main}/v1/kv/leader`, "b")
      const changed = yield* Fiber.join(waiting)
      expect(changed.index).toBeGreaterThan(first.index)
      expect(JSON.parse(changed.text)).toEqual([expect.objectContaining({ Value: Buffer.from("b").toString("base64"), ModifyIndex: changed.index })])
    }))

  it.scopedLive("without a change it answers at `wait` with the same index; a bad wait or index is Consul's 400", () =>
    Effect.gen(function*() {
      const { main } = yield* setup
      yield* put(`${main}/v1/kv/leader`, "a")
      const first = yield* blockingGet(`${main}/v1/kv/leader`, 2_000)
      const timedOut = yield* blockingGet(`${main}/v1/kv/leader?index=${first.index}&wait=300ms`, 5_000)
      expect([timedOut.status, timedOut.index]).toEqual([200, first.index])
      // an unchanged write leaves ModifyIndex alone, as in Consul
      yield* put(`${main}/v1/kv/leader`, "a")
      expect((yield* blockingGet(`${main}/v1/kv/leader`, 2_000)).index).toBe(first.index)
      const badWait = yield* call(`${main}/v1/kv/leader?index=1&wait=soon`)
      expect([badWait.status, badWait.text]).toEqual([400, "Invalid wait time"])
      const badIndex = yield* call(`${main}/v1/kv/leader?index=-1`)
      expect([badIndex.status, badIndex.text]).toEqual([400, "Invalid index"])
    }))

  it.scopedLive("a session that expires wakes the watchers of the key it held (the embedded server ends it on its own)", () =>
    Effect.gen(function*() {
      const { main, store } = yield* setup
      const id = yield* createSession(main, { TTL: "10s", LockDelay: "1s" })
      expect((yield* put(`${main}/v1/kv/leader?acquire=${id}`, "a")).text).toBe("true")
      const held = yield* blockingGet(`${main}/v1/kv/leader`, 2_000)
      // end it now rather than in ten seconds: the sweeper and the store's expiry are the same code
      store.sessions.get(id)!.expiresAt = 0
      const released = yield* blockingGet(`${main}/v1/kv/leader?index=${held.index}&wait=5s`, 5_000)
      expect(released.index).toBeGreaterThan(held.index)
      expect(JSON.parse(released.text)[0]).not.toHaveProperty("Session")
    }))
})
