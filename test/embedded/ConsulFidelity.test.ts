import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { serveConsul } from "../../src/embedded/ConsulServer.js"
import { allRights, ConsulStore } from "../../src/services/ConsulStore.js"
import type { AclSettings, ConsulVersion } from "../../src/services/ConsulStore.js"
import { call } from "../support/Fetch.js"

/**
 * The embedded Consul answers what a real Consul answers, for each behaviour consular relies on. Each test names
 * the real behaviour and where it comes from (hashicorp/consul source, or an issue showing a real answer).
 */

const agents = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]

/** A datacenter with ACLs on: `admin` may do everything, the anonymous token nothing (default_policy = deny). */
const aclOn = (overrides: Partial<AclSettings> = {}): AclSettings => ({ tokens: { admin: allRights, ...overrides.tokens }, anonymous: overrides.anonymous })

const setup = (options: { readonly acl?: AclSettings; readonly version?: ConsulVersion } = {}) =>
  Effect.gen(function*() {
    const store = new ConsulStore("127.0.0.1")
    const server = yield* serveConsul(store, { addresses: agents, acl: options.acl, version: options.version })
    store.put("consular/web/domain", "\"example.org\"")
    store.register("127.0.0.2", { ID: "web.1", Name: "web", Address: "127.0.0.2", Port: 1, Tags: [] })
    return { store, server, main: server.url(), agent: server.url("127.0.0.2") }
  })

const as = (token: string) => ({ headers: { "X-Consul-Token": token } })
const put = (url: string, body: string | undefined, token?: string) =>
  call(url, { method: "PUT", ...(body === undefined ? {} : { body }), ...(token === undefined ? {} : as(token)) })
const registration = JSON.stringify({ ID: "web.2", Name: "web", Address: "127.0.0.2", Tags: [] })
const set = (key: string) => ({ KV: { Verb: "set", Key: key, Value: Buffer.from("v").toString("base64") } })

/** One request with its headers (the shared `call` reads status, content type and text only). */
const withHeaders = (url: string, init: RequestInit = {}) =>
  Effect.tryPromise(async () => {
    const response = await fetch(url, { ...init, signal: AbortSignal.timeout(2000) })
    return { status: response.status, headers: response.headers, text: await response.text() }
  })

describe("embedded Consul fidelity: ACLs, no token (the anonymous token, default_policy = deny)", () => {
  it.scopedLive("reads are filtered, not refused: agent services {}, catalog nodes [], KV ?recurse and ?keys 404 (agent/acl.go filterServices, catalog filterNodes, kvs_endpoint.go FilterDirEnt)", () =>
    Effect.gen(function*() {
      const { main, agent } = yield* setup({ acl: aclOn() })
      const services = yield* call(`${agent}/v1/agent/services`)
      expect([services.status, services.text]).toEqual([200, "{}"])
      const nodes = yield* call(`${main}/v1/catalog/nodes`)
      expect([nodes.status, nodes.text]).toEqual([200, "[]"])
      for (const path of ["/v1/kv/consular/?recurse", "/v1/kv/consular/?keys", "/v1/kv/consular/?keys&separator=/"]) {
        const listed = yield* call(`${main}${path}`)
        expect([listed.status, listed.text]).toEqual([404, ""])
      }
      // with the token all of it is there
      expect(Object.keys(JSON.parse((yield* call(`${agent}/v1/agent/services`, as("admin"))).text))).toEqual(["web.1"])
      expect(JSON.parse((yield* call(`${main}/v1/kv/consular/?keys`, as("admin"))).text)).toEqual(["consular/web/domain"])
    }))

  it.scopedLive("one key read without key:read is a 403, unlike the listings (hashicorp/consul#10222: KVS.Get returns ErrPermissionDenied)", () =>
    Effect.gen(function*() {
      const { main } = yield* setup({ acl: aclOn(), version: "1.10" })
      const denied = yield* call(`${main}/v1/kv/consular/web/domain`)
      expect([denied.status, denied.text]).toEqual([403, "Permission denied"])
      expect(denied.contentType).toBe("text/plain; charset=utf-8")
    }))

  it.scopedLive("writes get 403 with Consul 1.10's words: `Permission denied: Missing service:write on web` from the agent, `Permission denied` from the servers (agent/acl.go vetServiceRegister, kvs_endpoint.go kvsPreApply)", () =>
    Effect.gen(function*() {
      const { main, agent, store } = yield* setup({ acl: aclOn(), version: "1.10" })
      const register = yield* put(`${agent}/v1/agent/service/register`, registration)
      expect([register.status, register.text]).toEqual([403, "Permission denied: Missing service:write on web"])
      const deregister = yield* put(`${agent}/v1/agent/service/deregister/web.1`, undefined)
      expect([deregister.status, deregister.text]).toEqual([403, "Permission denied: Missing service:write on web"])
      const kv = yield* put(`${main}/v1/kv/consular/web/a`, "1")
      expect([kv.status, kv.text]).toEqual([403, "Permission denied"])
      const removed = yield* call(`${main}/v1/kv/consular/?recurse`, { method: "DELETE" })
      expect([removed.status, removed.text]).toEqual([403, "Permission denied"])
      expect(store.services("127.0.0.2").has("web.1")).toBe(true)
      expect(store.kv.size).toBe(1)
    }))

  it.scopedLive("from 1.11 a denial names the token and the permission (acl/errors.go PermissionDeniedError)", () =>
    Effect.gen(function*() {
      const { main, agent } = yield* setup({ acl: aclOn({ tokens: { reader: { service: "read", key: "read" } } }) })
      const anonymous = yield* put(`${agent}/v1/agent/service/register`, registration)
      expect(anonymous.text).toBe(
        "Permission denied: anonymous token lacks permission 'service:write' on \"web\". The anonymous token is used implicitly when a request does not specify a token."
      )
      const reader = yield* put(`${main}/v1/kv/consular/web/a`, "1", "reader")
      expect(reader.status).toBe(403)
      expect(reader.text).toMatch(/^Permission denied: token with AccessorID '[0-9a-f-]{36}' lacks permission 'key:write' on "consular\/web\/a"$/)
    }))

  it.scopedLive("a transaction gets 409 with one error per refused operation and applies none (agent/consul/txn_endpoint.go preCheck)", () =>
    Effect.gen(function*() {
      const { main, store } = yield* setup({ acl: aclOn({ tokens: { web: { key: { "consular/web/": "write" } } } }), version: "1.10" })
      const anonymous = yield* put(`${main}/v1/txn`, JSON.stringify([set("consular/web/a")]))
      expect(anonymous.status).toBe(409)
      expect(anonymous.contentType).toContain("application/json")
      expect(JSON.parse(anonymous.text)).toEqual({ Results: null, Errors: [{ OpIndex: 0, What: "Permission denied" }] })

      const mixed = yield* put(`${main}/v1/txn`, JSON.stringify([set("consular/web/a"), set("consular/api/a"), set("consular/web/b"), set("other/x")]), "web")
      expect(mixed.status).toBe(409)
      expect(JSON.parse(mixed.text)).toEqual({
        Results: null,
        Errors: [{ OpIndex: 1, What: "Permission denied" }, { OpIndex: 3, What: "Permission denied" }]
      })
      expect(store.kv.has("consular/web/a")).toBe(false)
      expect((yield* put(`${main}/v1/txn`, JSON.stringify([set("consular/web/a")]), "web")).status).toBe(200)
    }))
})

describe("embedded Consul fidelity: ACLs, an unknown token", () => {
  it.scopedLive("403 `ACL not found` on reads, writes and transactions alike (acl/errors.go ErrNotFound, agent/http.go: 403 with the error's text)", () =>
    Effect.gen(function*() {
      const { main, agent } = yield* setup({ acl: aclOn() })
      const answers = [
        yield* call(`${agent}/v1/agent/services`, as("nope")),
        yield* call(`${main}/v1/catalog/nodes`, as("nope")),
        yield* call(`${main}/v1/kv/consular/?recurse`, as("nope")),
        yield* put(`${agent}/v1/agent/service/register`, registration, "nope"),
        yield* put(`${agent}/v1/agent/service/deregister/web.1`, undefined, "nope"),
        yield* put(`${main}/v1/kv/consular/web/a`, "1", "nope"),
        yield* put(`${main}/v1/txn`, JSON.stringify([set("consular/web/a")]), "nope")
      ]
      for (const answer of answers) expect([answer.status, answer.text]).toEqual([403, "ACL not found"])
    }))
})

describe("embedded Consul fidelity: a token with limited rights", () => {
  it.scopedLive("a token without node:read reads an empty catalog while the agents answer its service reads (catalog filterNodes)", () =>
    Effect.gen(function*() {
      const { main, agent } = yield* setup({ acl: aclOn({ tokens: { "no-nodes": { service: "write", key: "write" } } }) })
      expect((yield* call(`${main}/v1/catalog/nodes`, as("no-nodes"))).text).toBe("[]")
      expect(Object.keys(JSON.parse((yield* call(`${agent}/v1/agent/services`, as("no-nodes"))).text))).toEqual(["web.1"])
      expect(JSON.parse((yield* call(`${main}/v1/catalog/nodes`, as("admin"))).text)).toHaveLength(3)
    }))
})

describe("embedded Consul fidelity: deregistering a service the agent does not have", () => {
  const deregisterMissing = (options: { readonly acl?: AclSettings; readonly version: ConsulVersion }) =>
    Effect.gen(function*() {
      const { agent } = yield* setup(options)
      return yield* put(`${agent}/v1/agent/service/deregister/web.9`, undefined, "admin")
    })

  it.scopedLive("Consul 1.10 without ACLs: 200, the agent only logs it (agent.go removeServiceLocked)", () =>
    Effect.gen(function*() {
      const answer = yield* deregisterMissing({ version: "1.10" })
      expect([answer.status, answer.text]).toEqual([200, ""])
    }))

  it.scopedLive("Consul 1.10 with ACLs: 500 `Unknown service \"<id>\"` (agent/acl.go vetServiceUpdate; hashicorp/consul#9577 shows it on 1.9.2)", () =>
    Effect.gen(function*() {
      const answer = yield* deregisterMissing({ version: "1.10", acl: aclOn() })
      expect([answer.status, answer.text]).toEqual([500, "Unknown service \"web.9\""])
    }))

  it.scopedLive("Consul 1.12 and later, with or without ACLs: 404 `Unknown service ID …` (vetServiceUpdateWithAuthorizer; hashicorp/consul#17218)", () =>
    Effect.gen(function*() {
      for (const acl of [undefined, aclOn()]) {
        const answer = yield* deregisterMissing({ version: "1.12", ...(acl === undefined ? {} : { acl }) })
        expect([answer.status, answer.text]).toEqual([404, "Unknown service ID \"web.9\". Ensure that the service ID is passed, not the service name."])
      }
    }))
})

describe("embedded Consul fidelity: the wire", () => {
  it.scopedLive("a transaction of more than 64 operations is a 413 with Consul's text, even before the token is looked at (agent/txn_endpoint.go maxTxnOps)", () =>
    Effect.gen(function*() {
      const { main, store } = yield* setup({ acl: aclOn() })
      const ops = Array.from({ length: 65 }, (_, i) => set(`consular/web/k${i}`))
      const tooMany = yield* put(`${main}/v1/txn`, JSON.stringify(ops), "nope")
      expect([tooMany.status, tooMany.text]).toEqual([413, "Transaction contains too many operations (65 > 64)"])
      expect(tooMany.contentType).toBe("text/plain; charset=utf-8")
      expect((yield* put(`${main}/v1/txn`, JSON.stringify(ops.slice(0, 64)), "admin")).status).toBe(200)
      expect(store.kv.size).toBe(65)
    }))

  it.scopedLive("a wrong method is a 405 `method POST not allowed` with an Allow header (agent/http.go MethodNotAllowedError)", () =>
    Effect.gen(function*() {
      const { main, agent } = yield* setup()
      const post = yield* withHeaders(`${agent}/v1/agent/service/register`, { method: "POST", body: registration })
      expect([post.status, post.text]).toEqual([405, "method POST not allowed"])
      expect(post.headers.get("allow")).toBe("OPTIONS,PUT")
      const getRegister = yield* withHeaders(`${agent}/v1/agent/service/deregister/web.1`)
      expect([getRegister.status, getRegister.headers.get("allow")]).toEqual([405, "OPTIONS,PUT"])
      const postKv = yield* withHeaders(`${main}/v1/kv/consular/web/a`, { method: "POST", body: "1" })
      expect([postKv.status, postKv.headers.get("allow")]).toEqual([405, "OPTIONS,GET,PUT,DELETE"])
      const deleteServices = yield* withHeaders(`${agent}/v1/agent/services`, { method: "DELETE" })
      expect([deleteServices.status, deleteServices.headers.get("allow")]).toEqual([405, "OPTIONS,GET"])
    }))

  it.scopedLive("reads of KV and catalog carry X-Consul-Index, KnownLeader and LastContact; JSON answers say application/json (agent/http.go setMeta)", () =>
    Effect.gen(function*() {
      const { main, agent } = yield* setup()
      for (const url of [`${main}/v1/kv/consular/?recurse`, `${main}/v1/kv/consular/?keys`, `${main}/v1/catalog/nodes`]) {
        const answer = yield* withHeaders(url)
        expect(answer.status).toBe(200)
        expect(Number(answer.headers.get("x-consul-index"))).toBeGreaterThan(0)
        expect(answer.headers.get("x-consul-knownleader")).toBe("true")
        expect(answer.headers.get("x-consul-lastcontact")).toBe("0")
        expect(answer.headers.get("content-type")).toContain("application/json")
      }
      // a missing key's 404 carries the index too (a blocking query needs it), and no body
      const missing = yield* withHeaders(`${main}/v1/kv/nope`)
      expect([missing.status, missing.text]).toEqual([404, ""])
      expect(Number(missing.headers.get("x-consul-index"))).toBeGreaterThan(0)
      expect((yield* withHeaders(`${agent}/v1/agent/services`)).headers.get("content-type")).toContain("application/json")
    }))
})
