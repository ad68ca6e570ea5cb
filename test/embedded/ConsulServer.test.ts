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

  describe("checks and Meta, as a Consul agent keeps them", () => {
    const register = (url: string, body: object, query = "") => put(`${url}/v1/agent/service/register${query}`, JSON.stringify(body))
    const web = { ID: "web.1", Name: "web", Address: "127.0.0.2", Port: 1, Tags: [] }
    const update = (url: string, id: string, body: object) => put(`${url}/v1/agent/check/update/${encodeURIComponent(id)}`, JSON.stringify(body))

    it.scopedLive("a body's check becomes service:<id>, critical with no output until updated; /v1/agent/checks shows it with Go's TTL", () =>
      Effect.gen(function*() {
        const { server } = yield* setup()
        const agent = server.url("127.0.0.2")
        expect((yield* register(agent, { ...web, Check: { TTL: "90s", Notes: "n", DeregisterCriticalServiceAfter: "1m" } })).status).toBe(200)
        const checks = JSON.parse((yield* call(`${agent}/v1/agent/checks`)).text)
        expect(checks).toEqual({
          "service:web.1": expect.objectContaining({
            CheckID: "service:web.1", Name: "Service 'web' check", Status: "critical", Output: "", Notes: "n", ServiceID: "web.1",
            ServiceName: "web", Type: "ttl", Definition: expect.objectContaining({ TTL: "1m30s", DeregisterCriticalServiceAfter: "1m0s" })
          })
        })
        expect((yield* update(agent, "service:web.1", { Status: "passing", Output: "fine" })).status).toBe(200)
        expect(JSON.parse((yield* call(`${agent}/v1/agent/checks`)).text)["service:web.1"]).toMatchObject({ Status: "passing", Output: "fine" })
        // re-registering keeps the status (the agent restores it from its snapshot, agent.go addServiceInternal)
        yield* register(agent, { ...web, Check: { TTL: "90s", Notes: "n" } })
        expect(JSON.parse((yield* call(`${agent}/v1/agent/checks`)).text)["service:web.1"]).toMatchObject({ Status: "passing", Output: "fine" })
        // without the check in the body it stays, unless ?replace-existing-checks (agent_endpoint.go AgentRegisterService)
        yield* register(agent, web)
        expect(Object.keys(JSON.parse((yield* call(`${agent}/v1/agent/checks`)).text))).toEqual(["service:web.1"])
        yield* register(agent, web, "?replace-existing-checks=true")
        expect((yield* call(`${agent}/v1/agent/checks`)).text).toBe("{}")
      }))

    it.scopedLive("check/update refuses what Consul refuses: a bad status (400), an unknown check (500, agent.go updateTTLCheck)", () =>
      Effect.gen(function*() {
        const { server } = yield* setup()
        const agent = server.url("127.0.0.2")
        const bad = yield* update(agent, "service:web.1", { Status: "ok", Output: "" })
        expect(bad.status).toBe(400)
        expect(bad.text).toBe("Invalid check status: 'ok'")
        const unknown = yield* update(agent, "service:nope", { Status: "passing", Output: "" })
        expect(unknown.status).toBe(500)
        expect(unknown.text).toBe("CheckID \"service:nope\" does not have associated TTL")
        expect((yield* put(`${agent}/v1/agent/check/update/x`, "{not json")).status).toBe(400)
      }))

    it.scopedLive("a TTL with no update lapses to critical with Consul's output (CheckTTL.getExpiredOutput)", () =>
      Effect.gen(function*() {
        const { server, store } = yield* setup()
        let now = 1_000_000
        store.now = () => now
        const agent = server.url("127.0.0.2")
        yield* register(agent, { ...web, Check: { TTL: "10s", Notes: "" } })
        yield* update(agent, "service:web.1", { Status: "passing", Output: "Marathon: 1 health check alive" })
        now += 9_000
        expect(JSON.parse((yield* call(`${agent}/v1/agent/checks`)).text)["service:web.1"].Status).toBe("passing")
        now += 2_000
        expect(JSON.parse((yield* call(`${agent}/v1/agent/checks`)).text)["service:web.1"]).toMatchObject({
          Status: "critical",
          Output: "TTL expired (last output before timeout follows): Marathon: 1 health check alive"
        })
      }))

    it.scopedLive("/v1/health/service/<name>: every instance with the node's serfHealth and its checks; ?passing keeps only passing ones", () =>
      Effect.gen(function*() {
        const { server, main } = yield* setup()
        yield* register(server.url("127.0.0.2"), { ...web, Check: { TTL: "1h", Notes: "" } })
        yield* register(server.url("127.0.0.3"), { ...web, ID: "web.2", Address: "127.0.0.3", Check: { TTL: "1h", Notes: "" } })
        yield* register(server.url("127.0.0.3"), { ...web, ID: "web.3", Address: "127.0.0.3" })
        yield* update(server.url("127.0.0.3"), "service:web.2", { Status: "passing", Output: "" })
        const all = JSON.parse((yield* call(`${main}/v1/health/service/web`)).text) as Array<{ Service: { ID: string }; Checks: Array<{ CheckID: string }> }>
        expect(all.map((entry) => entry.Service.ID).sort()).toEqual(["web.1", "web.2", "web.3"])
        expect(all.find((entry) => entry.Service.ID === "web.1")?.Checks.map((c) => c.CheckID)).toEqual(["serfHealth", "service:web.1"])
        const passing = JSON.parse((yield* call(`${main}/v1/health/service/web?passing`)).text) as Array<{ Service: { ID: string } }>
        expect(passing.map((entry) => entry.Service.ID).sort()).toEqual(["web.2", "web.3"])
        expect(JSON.parse((yield* call(`${main}/v1/health/service/nothing?passing`)).text)).toEqual([])
      }))

    it.scopedLive("Meta is kept and listed; a registration breaking Meta's rules is refused whole (400, structs.ValidateServiceMetadata)", () =>
      Effect.gen(function*() {
        const { server, store } = yield* setup()
        const agent = server.url("127.0.0.2")
        yield* register(agent, { ...web, Meta: { "external-source": "marathon", k: "v" } })
        expect(JSON.parse((yield* call(`${agent}/v1/agent/services`)).text)["web.1"].Meta).toEqual({ "external-source": "marathon", k: "v" })
        for (const [meta, why] of [
          [{ "consul-x": "1" }, "Key prefix 'consul-' is reserved for internal use"],
          [{ "a.b": "1" }, "Key contains invalid characters"],
          [{ k: "x".repeat(513) }, "Value is too long (limit: 512 characters)"],
          [Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, "v"])), "Service metadata cannot contain more than 64 key/value pairs"]
        ] as const) {
          const refused = yield* register(agent, { ...web, ID: "web.2", Meta: meta })
          expect(refused.status).toBe(400)
          expect(refused.text).toBe(`Invalid Service Meta: ${why}`)
        }
        expect(store.services("127.0.0.2").has("web.2")).toBe(false)
        const badTtl = yield* register(agent, { ...web, ID: "web.2", Check: { TTL: "soon", Notes: "" } })
        expect(badTtl.status).toBe(400)
        expect(badTtl.text).toContain("time: invalid duration")
      }))
  })
})
