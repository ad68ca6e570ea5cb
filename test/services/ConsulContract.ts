import { assert, describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import type { Duration, Scope } from "effect"
import type { Registration, TxnOperation } from "../../src/domain/ConsulApi.js"
import { ConsulError, NotFound } from "../../src/domain/Errors.js"
import { Consul } from "../../src/services/Consul.js"
import { allRights, ConsulStore } from "../../src/services/ConsulStore.js"
import type { AclSettings } from "../../src/services/ConsulStore.js"

/**
 * What every `Consul` layer must do, run against `makeConsulMemory` and against `ConsulLive` talking HTTP to the
 * embedded Consul. Each test gets a fresh store with three agents; the live fixture serves them on 127.0.0.1-3.
 */

export const agents = ["127.0.0.1", "127.0.0.2", "127.0.0.3"] as const

export interface ConsulFixtureOptions {
  readonly timeout: Duration.DurationInput
  readonly retries: number
  /** the ACL token every request carries */
  readonly token?: string | undefined
}

/** Builds a Consul layer over `store` (whose agents are already added), alive for the scope. */
export type MakeConsul = (store: ConsulStore, options: ConsulFixtureOptions) => Effect.Effect<Layer.Layer<Consul>, unknown, Scope.Scope>

export const newStore = (): ConsulStore => {
  const store = new ConsulStore(agents[0])
  store.addAgent(agents[0], "main")
  store.addAgent(agents[1], "node-2")
  store.addAgent(agents[2], "node-3")
  return store
}

const reg = (id: string, overrides: Partial<Registration> = {}): Registration => ({
  ID: id,
  Name: "web",
  Address: "127.0.0.2",
  Port: 31001,
  Tags: ["consular-reg-id=consular", "consular-app-id=/web"],
  ...overrides
})

/** Narrows a failure to ConsulError, failing the test when it is anything else (a NotFound, say). */
export const asConsulError = (error: unknown): ConsulError => {
  assert.instanceOf(error, ConsulError)
  return error
}

const base64 = (value: string) => Buffer.from(value, "utf8").toString("base64")

export const consulContract = (name: string, make: MakeConsul) =>
  describe(name, () => {
    const withConsul = <A, E>(
      body: (consul: Context.Tag.Service<Consul>, store: ConsulStore) => Effect.Effect<A, E>,
      options: Partial<ConsulFixtureOptions> = {},
      seed: (store: ConsulStore) => void = () => {}
    ): Effect.Effect<A, unknown, Scope.Scope> =>
      Effect.gen(function*() {
        const store = newStore()
        seed(store)
        const layer = yield* make(store, { timeout: "500 millis", retries: 2, ...options })
        const consul = Context.get(yield* Layer.build(layer), Consul)
        return yield* body(consul, store)
      })

    describe("agent services", () => {
      it.scopedLive("a fresh agent lists nothing", () =>
        withConsul((consul) =>
          Effect.gen(function*() {
            expect((yield* consul.agentServices(agents[1])).size).toBe(0)
          })
        ))

      it.scopedLive("a registration lands on its agent only", () =>
        withConsul((consul, store) =>
          Effect.gen(function*() {
            yield* consul.register(agents[1], reg("web.1"))
            expect([...(yield* consul.agentServices(agents[1])).keys()]).toEqual(["web.1"])
            expect((yield* consul.agentServices(agents[2])).size).toBe(0)
            expect(store.services(agents[1]).has("web.1")).toBe(true)
            expect(store.services(agents[2]).size).toBe(0)
          })
        ))

      it.scopedLive("round-trips a registration exactly: Name becomes Service, no Port is 0", () =>
        withConsul((consul) =>
          Effect.gen(function*() {
            const { Port: _, ...portless } = reg("worker.1", { Name: "grp-worker", Tags: ["a", "b"] })
            yield* consul.register(agents[2], reg("web.1"))
            yield* consul.register(agents[2], portless)
            const listed = yield* consul.agentServices(agents[2])
            expect(listed.get("web.1")).toEqual({
              ID: "web.1",
              Service: "web",
              Address: "127.0.0.2",
              Port: 31001,
              Tags: ["consular-reg-id=consular", "consular-app-id=/web"],
              Meta: {} // Consul lists a service without Meta with an empty one
            })
            expect(listed.get("worker.1")).toEqual({ ID: "worker.1", Service: "grp-worker", Address: "127.0.0.2", Port: 0, Tags: ["a", "b"], Meta: {} })
          })
        ))

      it.scopedLive("registering the same ID again replaces it", () =>
        withConsul((consul) =>
          Effect.gen(function*() {
            yield* consul.register(agents[1], reg("web.1"))
            yield* consul.register(agents[1], reg("web.1", { Port: 31002 }))
            const listed = yield* consul.agentServices(agents[1])
            expect(listed.size).toBe(1)
            expect(listed.get("web.1")?.Port).toBe(31002)
          })
        ))

      it.scopedLive("deregister removes the service from that agent", () =>
        withConsul((consul) =>
          Effect.gen(function*() {
            yield* consul.register(agents[1], reg("web.1"))
            yield* consul.register(agents[2], reg("web.1"))
            yield* consul.deregister(agents[1], "web.1")
            expect((yield* consul.agentServices(agents[1])).size).toBe(0)
            expect((yield* consul.agentServices(agents[2])).size).toBe(1)
          })
        ))

      it.scopedLive("deregistering a service the agent does not have is NotFound", () =>
        withConsul((consul) =>
          Effect.gen(function*() {
            yield* consul.register(agents[2], reg("web.1"))
            const error = yield* Effect.flip(consul.deregister(agents[1], "web.1"))
            assert.instanceOf(error, NotFound)
          })
        ))

      it.scopedLive("agentService picks exactly the one asked for, and NotFound when absent", () =>
        withConsul((consul) =>
          Effect.gen(function*() {
            yield* consul.register(agents[1], reg("web.1"))
            yield* consul.register(agents[1], reg("web.10"))
            yield* consul.register(agents[1], reg("odd \"id\" \\ x"))
            expect((yield* consul.agentService(agents[1], "web.1")).ID).toBe("web.1")
            expect((yield* consul.agentService(agents[1], "odd \"id\" \\ x")).ID).toBe("odd \"id\" \\ x")
            assert.instanceOf(yield* Effect.flip(consul.agentService(agents[1], "web.2")), NotFound)
            assert.instanceOf(yield* Effect.flip(consul.agentService(agents[2], "web.1")), NotFound)
          })
        ))
    })

    describe("catalog", () => {
      it.scopedLive("lists every node with its agent's address", () =>
        withConsul((consul) =>
          Effect.gen(function*() {
            const nodes = yield* consul.catalogNodes
            expect([...nodes].map((n) => ({ Node: n.Node, Address: n.Address })).sort((a, b) => a.Address.localeCompare(b.Address)))
              .toEqual([
                { Node: "main", Address: agents[0] },
                { Node: "node-2", Address: agents[1] },
                { Node: "node-3", Address: agents[2] }
              ])
          })
        ))
    })

    describe("KV", () => {
      const seedLabels = (store: ConsulStore) => {
        store.put("consular/web/domain", "\"example.org\"")
        store.put("consular/web/empty", "")
        store.put("consular/web2/domain", "\"other.org\"")
        store.put("other/key", "x")
      }

      it.scopedLive("put then get round-trips the value, empty and non-ASCII included", () =>
        withConsul((consul, store) =>
          Effect.gen(function*() {
            yield* consul.kvPut("consular/web/domain", "\"bar\"")
            yield* consul.kvPut("consular/web/empty", "")
            yield* consul.kvPut("consular/web/a key?#%", "caf\u00e9 \u2603")
            expect(yield* consul.kvGet("consular/web/domain")).toBe("\"bar\"")
            expect(yield* consul.kvGet("consular/web/empty")).toBe("")
            expect(yield* consul.kvGet("consular/web/a key?#%")).toBe("caf\u00e9 \u2603")
            expect(store.kv.get("consular/web/a key?#%")).toBe("caf\u00e9 \u2603")
          })
        ))

      it.scopedLive("get of a missing key is NotFound", () =>
        withConsul((consul) =>
          Effect.gen(function*() {
            assert.instanceOf(yield* Effect.flip(consul.kvGet("consular/nope/x")), NotFound)
          }), {}, seedLabels))

      it.scopedLive("keys without separator: every key under the prefix, web/ never web2/", () =>
        withConsul((consul) =>
          Effect.gen(function*() {
            expect(yield* consul.kvKeys("consular/web/")).toEqual(["consular/web/domain", "consular/web/empty"])
            expect(yield* consul.kvKeys("consular/web2/")).toEqual(["consular/web2/domain"])
            // without the slash the prefix matches both apps: why consular always lists with it
            expect(yield* consul.kvKeys("consular/web")).toEqual(["consular/web/domain", "consular/web/empty", "consular/web2/domain"])
          }), {}, seedLabels))

      it.scopedLive("keys with separator: one entry per app folder", () =>
        withConsul((consul) =>
          Effect.gen(function*() {
            expect(yield* consul.kvKeys("consular/", "/")).toEqual(["consular/web/", "consular/web2/"])
            expect(yield* consul.kvKeys("", "/")).toEqual(["consular/", "other/"])
          }), {}, seedLabels))

      it.scopedLive("keys under a prefix with none is NotFound", () =>
        withConsul((consul) =>
          Effect.gen(function*() {
            assert.instanceOf(yield* Effect.flip(consul.kvKeys("consular/nope/")), NotFound)
            assert.instanceOf(yield* Effect.flip(consul.kvKeys("consular/nope/", "/")), NotFound)
          }), {}, seedLabels))

      it.scopedLive("recurse reads the tree with values; NotFound when empty", () =>
        withConsul((consul) =>
          Effect.gen(function*() {
            const tree = yield* consul.kvTree("consular/")
            expect(Object.fromEntries(tree)).toEqual({
              "consular/web/domain": "\"example.org\"",
              "consular/web/empty": "",
              "consular/web2/domain": "\"other.org\""
            })
            assert.instanceOf(yield* Effect.flip(consul.kvTree("consular/nope/")), NotFound)
          }), {}, seedLabels))

      it.scopedLive("delete removes one key; deleting a missing key succeeds", () =>
        withConsul((consul, store) =>
          Effect.gen(function*() {
            yield* consul.kvDelete("consular/web/domain")
            yield* consul.kvDelete("consular/web/never-there")
            expect([...store.kv.keys()].sort()).toEqual(["consular/web/empty", "consular/web2/domain", "other/key"])
          }), {}, seedLabels))

      it.scopedLive("delete recurse with the trailing slash leaves the sibling web2 alone", () =>
        withConsul((consul, store) =>
          Effect.gen(function*() {
            yield* consul.kvDelete("consular/web/", { recurse: true })
            expect([...store.kv.keys()].sort()).toEqual(["consular/web2/domain", "other/key"])
            assert.instanceOf(yield* Effect.flip(consul.kvKeys("consular/web/")), NotFound)
          }), {}, seedLabels))
    })

    describe("transactions", () => {
      const op = (Verb: TxnOperation["KV"]["Verb"], Key: string, value?: string): TxnOperation => ({
        KV: value === undefined ? { Verb, Key } : { Verb, Key, Value: base64(value) }
      })

      it.scopedLive("applies set, delete and delete-tree together", () =>
        withConsul((consul, store) =>
          Effect.gen(function*() {
            store.put("consular/web/old", "\"1\"")
            store.put("consular/gone/a", "\"2\"")
            store.put("consular/gone/b", "\"3\"")
            store.put("consular/gone2/a", "\"4\"")
            yield* consul.txn([
              op("set", "consular/web/domain", "\"example.org\""),
              op("set", "consular/web/empty", ""),
              op("delete", "consular/web/old"),
              op("delete-tree", "consular/gone/")
            ])
            expect(Object.fromEntries(store.kv)).toEqual({
              "consular/web/domain": "\"example.org\"",
              "consular/web/empty": "",
              "consular/gone2/a": "\"4\""
            })
          })
        ))

      it.scopedLive("refuses more than 64 operations and applies none", () =>
        withConsul((consul, store) =>
          Effect.gen(function*() {
            const ops = Array.from({ length: 65 }, (_, i) => op("set", `consular/web/k${i}`, "v"))
            const error = yield* Effect.flip(consul.txn(ops))
            assert.instanceOf(error, ConsulError)
            expect(error.reason).toBe("Status")
            expect(error.status).toBe(413)
            expect(store.kv.size).toBe(0)
            yield* consul.txn(ops.slice(0, 64))
            expect(store.kv.size).toBe(64)
          })
        ))
    })

    describe("ACLs (a real Consul's answers, as the embedded one gives them)", () => {
      /** `admin` may do everything; `web-kv` writes keys under consular/web/ only; `no-nodes` lacks node:read */
      const acl: AclSettings = {
        tokens: {
          admin: allRights,
          "web-kv": { service: "write", node: "read", key: { "consular/web/": "write" } },
          "no-nodes": { service: "write", key: "write" }
        }
      }
      const seeded = (version: ConsulStore["version"] = "1.10") => (store: ConsulStore) => {
        store.acl = acl
        store.version = version
        store.put("consular/web/domain", "\"example.org\"")
        store.register(agents[1], reg("web.1"))
      }

      it.scopedLive("no token: reads are filtered (no services, no nodes, no keys), not refused", () =>
        withConsul((consul, store) =>
          Effect.gen(function*() {
            expect((yield* consul.agentServices(agents[1])).size).toBe(0)
            expect(yield* consul.catalogNodes).toEqual([])
            assert.instanceOf(yield* Effect.flip(consul.kvTree("consular/")), NotFound)
            assert.instanceOf(yield* Effect.flip(consul.kvKeys("consular/", "/")), NotFound)
            expect(store.services(agents[1]).size).toBe(1) // it is there, just not for this token
          }), {}, seeded()))

      it.scopedLive("no token: a write is Forbidden naming the operation, the permission and Consul's words, and is not retried", () =>
        withConsul((consul, store) =>
          Effect.gen(function*() {
            const register = asConsulError(yield* Effect.flip(consul.register(agents[1], reg("web.2"))))
            expect(register.reason).toBe("Forbidden")
            expect(register.status).toBe(403)
            expect(register.message).toContain("consul register on agent 127.0.0.2: permission denied (403)")
            expect(register.message).toContain("lacks service:write")
            expect(register.message).toContain("Permission denied: Missing service:write on web")
            const put = asConsulError(yield* Effect.flip(consul.kvPut("consular/web/a", "1")))
            expect(put.reason).toBe("Forbidden")
            expect(put.message).toContain("lacks key:write")
            expect(put.message).toContain("\"Permission denied\"")
            expect(store.requests).toBe(2) // one attempt each
            expect(store.services(agents[1]).has("web.2")).toBe(false)
          }), {}, seeded()))

      it.scopedLive("an unknown token: UnknownToken (403 `ACL not found`) on reads and writes, said as such", () =>
        withConsul((consul, store) =>
          Effect.gen(function*() {
            const failures = [
              yield* Effect.flip(consul.agentServices(agents[1])),
              yield* Effect.flip(consul.catalogNodes),
              asConsulError(yield* Effect.flip(consul.kvTree("consular/"))),
              yield* Effect.flip(consul.register(agents[1], reg("web.2"))),
              yield* Effect.flip(consul.txn([{ KV: { Verb: "delete", Key: "consular/web/domain" } }, { KV: { Verb: "delete", Key: "consular/web/x" } }]))
            ]
            for (const failure of failures) {
              expect(failure.reason).toBe("UnknownToken")
              expect(failure.status).toBe(403)
              expect(failure.message).toContain("the token is not known to Consul (403 ACL not found)")
            }
            expect(store.requests).toBe(failures.length) // never retried
          }), { token: "not-a-token" }, seeded()))

      it.scopedLive("a transaction answered 409 is read per operation: which ones, their keys, Consul's words; nothing applied", () =>
        withConsul((consul, store) =>
          Effect.gen(function*() {
            const set = (Key: string): TxnOperation => ({ KV: { Verb: "set", Key, Value: base64("1") } })
            const error = asConsulError(yield* Effect.flip(consul.txn([set("consular/web/a"), set("consular/api/a"), set("consular/web/b"), set("consular/db/a")])))
            expect(error.status).toBe(409)
            expect(error.refused).toEqual([
              { index: 1, key: "consular/api/a", what: "Permission denied" },
              { index: 3, key: "consular/db/a", what: "Permission denied" }
            ])
            expect(error.message).toBe(
              "consul txn rolled back (Status 409): 2 operation(s) refused: #1 consular/api/a: Permission denied; #3 consular/db/a: Permission denied"
            )
            expect(store.kv.has("consular/web/a")).toBe(false)
            expect(store.requests).toBe(1)
          }), { token: "web-kv" }, seeded()))

      it.scopedLive("a token without node:read reads an empty catalog while the agents answer", () =>
        withConsul((consul) =>
          Effect.gen(function*() {
            expect(yield* consul.catalogNodes).toEqual([])
            expect([...(yield* consul.agentServices(agents[1])).keys()]).toEqual(["web.1"])
          }), { token: "no-nodes" }, seeded()))

      it.scopedLive("deregistering an id the agent does not have is NotFound, in one request: Consul 1.10 with ACLs (500 Unknown service)", () =>
        withConsul((consul, store) =>
          Effect.gen(function*() {
            assert.instanceOf(yield* Effect.flip(consul.deregister(agents[2], "web.1")), NotFound)
            expect(store.log.filter((r) => r.operation === "agent.deregister")).toHaveLength(1)
          }), { token: "admin" }, seeded("1.10")))

      it.scopedLive("deregistering an id the agent does not have is NotFound, in one request: Consul 1.12 (404)", () =>
        withConsul((consul, store) =>
          Effect.gen(function*() {
            assert.instanceOf(yield* Effect.flip(consul.deregister(agents[2], "web.1")), NotFound)
            expect(store.log.filter((r) => r.operation === "agent.deregister")).toHaveLength(1)
          }), { token: "admin" }, seeded("1.12")))

      it.scopedLive("deregistering an id the agent does not have succeeds on Consul 1.10 without ACLs (200)", () =>
        withConsul((consul, store) =>
          Effect.gen(function*() {
            yield* consul.deregister(agents[2], "web.1")
            expect(store.requests).toBe(1)
          }), {}, (store) => {
            store.version = "1.10"
          }))

      it.scopedLive("with the right token everything works", () =>
        withConsul((consul, store) =>
          Effect.gen(function*() {
            yield* consul.register(agents[2], reg("web.3"))
            yield* consul.kvPut("consular/web/a", "1")
            expect(yield* consul.kvGet("consular/web/a")).toBe("1")
            expect((yield* consul.catalogNodes).length).toBe(3)
            yield* consul.deregister(agents[1], "web.1")
            expect(store.services(agents[1]).size).toBe(0)
          }), { token: "admin" }, seeded()))
    })

    describe("faults", () => {
      it.scopedLive("an agent that refuses connections is a Transport error naming the agent", () =>
        withConsul((consul, store) =>
          Effect.gen(function*() {
            store.setFault(agents[1], { _tag: "Refuse" })
            const error = yield* Effect.flip(consul.agentServices(agents[1]))
            assert.instanceOf(error, ConsulError)
            expect(error.reason).toBe("Transport")
            expect(error.agent).toBe(agents[1])
            // the other agents are unaffected
            expect((yield* consul.agentServices(agents[2])).size).toBe(0)
          })
        ))

      it.scopedLive("an address without an agent is a Transport error", () =>
        withConsul((consul) =>
          Effect.gen(function*() {
            const error = yield* Effect.flip(consul.register("127.0.0.9", reg("web.1")))
            expect(error.reason).toBe("Transport")
          })
        ))

      it.scopedLive("an agent that never answers is a Timeout", () =>
        withConsul((consul, store) =>
          Effect.gen(function*() {
            store.setFault(agents[2], { _tag: "Hang" })
            const error = yield* Effect.flip(consul.register(agents[2], reg("web.1")))
            expect(error.reason).toBe("Timeout")
            expect(error.agent).toBe(agents[2])
          }), { timeout: "200 millis", retries: 1 }))

      it.scopedLive("KV lives on the main agent: its fault fails KV calls", () =>
        withConsul((consul, store) =>
          Effect.gen(function*() {
            store.setFault(agents[0], { _tag: "Refuse" })
            expect(asConsulError(yield* Effect.flip(consul.kvGet("consular/web/x"))).reason).toBe("Transport")
            expect((yield* Effect.flip(consul.catalogNodes)).reason).toBe("Transport")
          })
        ))

      it.scopedLive("a 500 is retried, then a Status error with the status", () =>
        withConsul((consul, store) =>
          Effect.gen(function*() {
            store.setFailureRate(1)
            const error = yield* Effect.flip(consul.kvPut("consular/web/a", "1"))
            assert.instanceOf(error, ConsulError)
            expect(error.reason).toBe("Status")
            expect(error.status).toBe(500)
            expect(store.requests).toBe(3) // the first try and two retries
            expect(store.writes).toBe(0)
            expect(store.kv.size).toBe(0)
          })
        ))

      it.scopedLive("an agent's status fault is that status", () =>
        withConsul((consul, store) =>
          Effect.gen(function*() {
            store.setFault(agents[1], { _tag: "Status", status: 503 })
            const error = yield* Effect.flip(consul.agentServices(agents[1]))
            expect(error.reason).toBe("Status")
            expect(error.status).toBe(503)
          })
        ))

      it.scopedLive("a 403 is Forbidden and not retried", () =>
        withConsul((consul, store) =>
          Effect.gen(function*() {
            store.setFault(agents[1], { _tag: "Status", status: 403 })
            const error = yield* Effect.flip(consul.register(agents[1], reg("web.1")))
            expect(error.reason).toBe("Forbidden")
          })
        ))

      it.scopedLive("transient failures are absorbed by retries: every write lands", () =>
        withConsul((consul, store) =>
          Effect.gen(function*() {
            store.setFailureRate(0.3, 7)
            yield* Effect.forEach(Array.from({ length: 20 }, (_, i) => i), (i) => consul.kvPut(`consular/web/k${i}`, `${i}`), {
              discard: true
            })
            expect(store.kv.size).toBe(20)
            expect(store.requests).toBeGreaterThan(20) // some attempts failed and were tried again
          }), { retries: 10 }))
    })
  })
