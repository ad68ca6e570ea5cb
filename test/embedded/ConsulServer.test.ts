import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Scope } from "effect"
import { serveConsul } from "../../src/embedded/ConsulServer.js"
import { ConsulStore } from "../../src/services/ConsulStore.js"
import { call } from "../support/Fetch.js"

/** The embedded Consul's wire format: what a real Consul answers, byte for byte where consular cares. */

const put = (url: string, body?: string) => call(url, body === undefined ? { method: "PUT" } : { method: "PUT", body })

const setup = (options: { readonly requiredToken?: string } = {}) =>
  Effect.gen(function*() {
    const store = new ConsulStore("127.0.0.1")
    const server = yield* serveConsul(store, { addresses: ["127.0.0.1", "127.0.0.2", "127.0.0.3"], ...options })
    return { store, server, main: server.url() }
  })

describe("embedded Consul", () => {
  it.scopedLive("binds one port on every address and makes each address an agent", () =>
    Effect.gen(function*() {
      const { store, server } = yield* setup()
      expect(server.port).toBeGreaterThan(0)
      expect(server.url("127.0.0.3")).toBe(`http://127.0.0.3:${server.port}`)
      expect([...store.agents.keys()]).toEqual(["127.0.0.1", "127.0.0.2", "127.0.0.3"])
      for (const address of server.addresses) {
        expect((yield* call(`${server.url(address)}/v1/agent/services`)).text).toBe("{}")
      }
    }))

  it.scopedLive("KV: a missing key, keys or tree is a 404 with an empty body", () =>
    Effect.gen(function*() {
      const { main } = yield* setup()
      for (const path of ["/v1/kv/consular/x", "/v1/kv/consular/?keys", "/v1/kv/consular/?keys&separator=/", "/v1/kv/consular/?recurse", "/v1/kv/x?raw"]) {
        const answer = yield* call(`${main}${path}`)
        expect(answer.status).toBe(404)
        expect(answer.text).toBe("")
      }
    }))

  it.scopedLive("KV: entries as Consul gives them, base64 values, null for empty; raw; true for writes", () =>
    Effect.gen(function*() {
      const { main, store } = yield* setup()
      expect((yield* put(`${main}/v1/kv/consular/web/domain`, "\"example.org\"")).text).toBe("true")
      expect((yield* put(`${main}/v1/kv/consular/web/empty`)).text).toBe("true")
      expect((yield* put(`${main}/v1/kv/consular/web/a%20b%2Fc`, "x")).status).toBe(200)
      expect([...store.kv.keys()].sort()).toEqual(["consular/web/a b/c", "consular/web/domain", "consular/web/empty"])

      const entries: unknown = JSON.parse((yield* call(`${main}/v1/kv/consular/web/?recurse`)).text)
      expect(entries).toEqual([
        expect.objectContaining({ Key: "consular/web/a b/c", Value: "eA==", Flags: 0, LockIndex: 0 }),
        expect.objectContaining({ Key: "consular/web/domain", Value: Buffer.from("\"example.org\"").toString("base64") }),
        expect.objectContaining({ Key: "consular/web/empty", Value: null })
      ])
      const one = yield* call(`${main}/v1/kv/consular/web/domain`)
      expect(JSON.parse(one.text)).toEqual([
        { Key: "consular/web/domain", Value: "ImV4YW1wbGUub3JnIg==", Flags: 0, LockIndex: 0, CreateIndex: expect.any(Number), ModifyIndex: expect.any(Number) }
      ])
      expect((yield* call(`${main}/v1/kv/consular/web/domain?raw`)).text).toBe("\"example.org\"")
      expect(JSON.parse((yield* call(`${main}/v1/kv/?keys`)).text)).toHaveLength(3)

      expect((yield* call(`${main}/v1/kv/consular/web/domain`, { method: "DELETE" })).text).toBe("true")
      expect((yield* call(`${main}/v1/kv/consular/?recurse`, { method: "DELETE" })).text).toBe("true")
      expect(store.kv.size).toBe(0)
    }))

  it.scopedLive("KV and catalog are the datacenter's whichever agent is asked", () =>
    Effect.gen(function*() {
      const { server } = yield* setup()
      yield* put(`${server.url("127.0.0.3")}/v1/kv/consular/web/a`, "1")
      expect((yield* call(`${server.url("127.0.0.2")}/v1/kv/consular/web/a?raw`)).text).toBe("1")
      const nodes: unknown = JSON.parse((yield* call(`${server.url("127.0.0.2")}/v1/catalog/nodes`)).text)
      expect(nodes).toEqual([
        expect.objectContaining({ Node: "node-127.0.0.1", Address: "127.0.0.1" }),
        expect.objectContaining({ Node: "node-127.0.0.2", Address: "127.0.0.2" }),
        expect.objectContaining({ Node: "node-127.0.0.3", Address: "127.0.0.3" })
      ])
    }))

  it.scopedLive("agent: register answers 200, a bad body 400 with a text reason, an unknown deregistration 404 (Consul >= 1.12)", () =>
    Effect.gen(function*() {
      const { server, store } = yield* setup()
      const agent = server.url("127.0.0.2")
      const ok = yield* put(`${agent}/v1/agent/service/register`, JSON.stringify({ ID: "web.1", Name: "web", Address: "h", Tags: [] }))
      expect(ok.status).toBe(200)
      expect(store.services("127.0.0.2").get("web.1")?.Port).toBe(0)

      const bad = yield* put(`${agent}/v1/agent/service/register`, "{\"ID\": 1}")
      expect(bad.status).toBe(400)
      expect(bad.contentType).toContain("text/plain")
      expect(bad.text).toContain("Request decode failed")
      expect((yield* put(`${agent}/v1/agent/service/register`, "not json")).status).toBe(400)

      const missing = yield* put(`${server.url("127.0.0.3")}/v1/agent/service/deregister/web.1`)
      expect(missing.status).toBe(404)
      expect(missing.text).toBe("Unknown service ID \"web.1\". Ensure that the service ID is passed, not the service name.")
      expect((yield* put(`${agent}/v1/agent/service/deregister/web.1`)).status).toBe(200)
    }))

  it.scopedLive("agent: the ID filter narrows the listing; another filter is ignored", () =>
    Effect.gen(function*() {
      const { server } = yield* setup()
      const agent = server.url("127.0.0.2")
      for (const id of ["web.1", "web.10"]) {
        yield* put(`${agent}/v1/agent/service/register`, JSON.stringify({ ID: id, Name: "web", Address: "h", Tags: ["t"] }))
      }
      const filtered = (filter: string) =>
        call(`${agent}/v1/agent/services?filter=${encodeURIComponent(filter)}`).pipe(Effect.map((a) => Object.keys(JSON.parse(a.text))))
      expect(yield* filtered("ID == \"web.1\"")).toEqual(["web.1"])
      expect(yield* filtered("ID == \"web.2\"")).toEqual([])
      expect(yield* filtered("\"t\" in Tags")).toEqual(["web.1", "web.10"])
    }))

  it.scopedLive("txn: 200 with Results, 409 with Errors when rolled back, 413 over 64 operations", () =>
    Effect.gen(function*() {
      const { main, store } = yield* setup()
      const set = (key: string) => ({ KV: { Verb: "set", Key: key, Value: Buffer.from("v").toString("base64") } })
      const ok = yield* put(`${main}/v1/txn`, JSON.stringify([set("a/b"), { KV: { Verb: "delete", Key: "a/c" } }]))
      expect(ok.status).toBe(200)
      expect(JSON.parse(ok.text)).toEqual({ Results: [{ KV: expect.objectContaining({ Key: "a/b" }) }], Errors: null })
      expect(store.kv.get("a/b")).toBe("v")

      const rolledBack = yield* put(`${main}/v1/txn`, JSON.stringify([set("a/x"), set("")]))
      expect(rolledBack.status).toBe(409)
      expect(JSON.parse(rolledBack.text)).toEqual({ Results: null, Errors: [expect.objectContaining({ What: expect.any(String) })] })
      expect(store.kv.has("a/x")).toBe(false)

      const tooMany = yield* put(`${main}/v1/txn`, JSON.stringify(Array.from({ length: 65 }, (_, i) => set(`k/${i}`))))
      expect(tooMany.status).toBe(413)
      expect(store.kv.size).toBe(1)

      expect((yield* put(`${main}/v1/txn`, JSON.stringify([{ KV: { Verb: "cas", Key: "a" } }]))).status).toBe(400)
      // Consul's words for a body it cannot read (agent/txn_endpoint.go convertOps)
      const unreadable = yield* put(`${main}/v1/txn`, "not json")
      expect(unreadable.status).toBe(400)
      expect(unreadable.text).toMatch(/^Failed to parse body: /)
    }))

  it.scopedLive("faults: a status with a short text body; a refusing agent drops the connection; a hanging one never answers", () =>
    Effect.gen(function*() {
      const { server, store } = yield* setup()
      store.setFault("127.0.0.2", { _tag: "Status", status: 503 })
      const unavailable = yield* call(`${server.url("127.0.0.2")}/v1/agent/services`)
      expect(unavailable.status).toBe(503)
      expect(unavailable.text).toBe("Service Unavailable")

      store.setFault("127.0.0.2", { _tag: "Refuse" })
      expect(Exit.isFailure(yield* Effect.exit(call(`${server.url("127.0.0.2")}/v1/agent/services`)))).toBe(true)

      store.setFault("127.0.0.3", { _tag: "Hang" })
      const hung = yield* Effect.tryPromise(() =>
        fetch(`${server.url("127.0.0.3")}/v1/agent/services`, { signal: AbortSignal.timeout(200) })
      ).pipe(Effect.exit)
      expect(Exit.isFailure(hung)).toBe(true)

      // the other agent is fine
      expect((yield* call(`${server.url("127.0.0.1")}/v1/agent/services`)).status).toBe(200)
    }))

  it.scopedLive("ACL: requiredToken is a token of every right; it is read from X-Consul-Token, Bearer or ?token=", () =>
    Effect.gen(function*() {
      const { main } = yield* setup({ requiredToken: "s3cret" })
      expect((yield* put(`${main}/v1/kv/x`, "1")).status).toBe(403)
      expect((yield* call(`${main}/v1/kv/x`, { headers: { "X-Consul-Token": "wrong" } })).text).toBe("ACL not found")
      expect((yield* call(`${main}/v1/kv/x`, { method: "PUT", body: "1", headers: { "X-Consul-Token": "s3cret" } })).text).toBe("true")
      expect((yield* call(`${main}/v1/kv/x?raw`, { headers: { Authorization: "Bearer s3cret" } })).text).toBe("1")
      expect((yield* call(`${main}/v1/kv/x?raw&token=s3cret`)).text).toBe("1")
    }))

  it.live("closing the scope ends at once, even with a request hanging", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const { server, store } = yield* setup().pipe(Scope.extend(scope))
      store.setFault("127.0.0.2", { _tag: "Hang" })
      const arrived = yield* Deferred.make<void>()
      const admit = store.admit.bind(store)
      store.admit = (agent, operation) => {
        Deferred.unsafeDone(arrived, Exit.void)
        return admit(agent, operation)
      }
      const pending = fetch(`${server.url("127.0.0.2")}/v1/agent/services`).catch(() => "dropped")
      yield* Deferred.await(arrived).pipe(Effect.timeout("2 seconds"))
      yield* Scope.close(scope, Exit.void).pipe(Effect.timeout("2 seconds"))
      expect(yield* Effect.promise(() => pending)).toBe("dropped")
    }))
})
