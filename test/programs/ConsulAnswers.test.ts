import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
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
