import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { makeKvWriter } from "../../src/programs/Sync.js"
import { Consul, makeConsulMemory } from "../../src/services/Consul.js"
import { ConsulStore as Store } from "../../src/services/ConsulStore.js"
import type { ConsulOperation, ConsulStore, ConsulVersion } from "../../src/services/ConsulStore.js"
import { makeDatacenter } from "../support/Datacenter.js"
import { serveDaemon, statusUpdate } from "../support/Daemon.js"

/**
 * Consul's answers as the event path reads them, against the strict embedded Consul: a service Consul no longer
 * has is "already gone" whichever release answers (500 `Unknown service` up to 1.11 with ACLs, 404 from 1.12),
 * so a TASK_KILLED for it is a 2xx after one request, never three tries and a 502.
 */

const event = (taskId: string, taskStatus: string) =>
  statusUpdate({ taskId, taskStatus, appId: "/web", host: "127.0.0.2", ports: [31000] })

/** Counts every request the embedded Consul sees, per agent and operation. */
const countAttempts = (store: ConsulStore) => {
  const seen: Array<{ readonly agent: string; readonly operation: ConsulOperation }> = []
  const admit = store.admit.bind(store)
  store.admit = (agent, operation) => {
    seen.push({ agent, operation })
    return admit(agent, operation)
  }
  return (agent: string, operation: ConsulOperation): number =>
    seen.filter((entry) => entry.agent === agent && entry.operation === operation).length
}

describe("the event path reads a deregistration Consul no longer has as done", () => {
  for (const [version, answer] of [["1.10", "500 Unknown service"], ["1.12", "404 Unknown service ID"]] as const) {
    it.scopedLive(`Consul ${version} with ACLs (${answer}): TASK_KILLED of a service gone meanwhile is a 2xx after one request`, () =>
      Effect.gen(function*() {
        const dc = yield* makeDatacenter({ consulToken: "tok-1" })
        dc.consul.version = version satisfies ConsulVersion
        dc.marathon.putApp("/web")
        const daemon = yield* serveDaemon(dc)
        expect((yield* daemon.post(event("web.1", "TASK_RUNNING"))).status).toBe(200)
        expect(dc.consul.services("127.0.0.2").has("web.1")).toBe(true)
        // the agent lost it (restarted, or an operator removed it): consular still thinks it is there
        dc.consul.deregister("127.0.0.2", "web.1")
        const attempts = countAttempts(dc.consul)
        const killed = yield* daemon.post(event("web.1", "TASK_KILLED"))
        expect(killed.status, killed.text).toBe(200)
        expect(attempts("127.0.0.2", "agent.deregister")).toBe(1)
      }))
  }
})

describe("the KV writer reads a rolled-back transaction per operation", () => {
  it.effect("keys Consul refused (409) fail with its words; the others land in one more transaction, not key by key", () =>
    Effect.gen(function*() {
      const store = new Store("127.0.0.1")
      store.addAgent("127.0.0.1", "main")
      store.acl = { tokens: { "web-kv": { key: { "consular/web/": "write" } } } }
      store.version = "1.10"
      const plan = {
        kvSet: [
          { key: "consular/web/a", value: "\"1\"" },
          { key: "consular/api/a", value: "\"2\"" },
          { key: "consular/web/b", value: "\"3\"" }
        ],
        kvDelete: ["consular/db/old"],
        kvDeleteTree: []
      }
      const writeKv = yield* makeKvWriter.pipe(Effect.provide(Layer.succeed(Consul, makeConsulMemory(store, { token: "web-kv", retries: 0 }))))
      const written = yield* writeKv(plan)
      expect(written.keysSet).toBe(2)
      expect(written.failures).toEqual([
        { scope: "kv", subject: "key consular/api/a", message: "consul txn: consular/api/a refused (409, operation #1): Permission denied" },
        { scope: "kv", subject: "key consular/db/old", message: "consul txn: consular/db/old refused (409, operation #3): Permission denied" }
      ])
      expect(Object.fromEntries(store.kv)).toEqual({ "consular/web/a": "\"1\"", "consular/web/b": "\"3\"" })
      expect(store.log.map((request) => request.operation)).toEqual(["txn", "txn"])
    }))
})
