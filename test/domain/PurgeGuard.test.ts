import { describe, expect, it } from "@effect/vitest"
import type { Actual, Plan } from "../../src/domain/Diff.js"
import { emptyPlan } from "../../src/domain/Diff.js"
import { guardPurge } from "../../src/domain/PurgeGuard.js"

const ours = (id: string, app: string) => ({ ID: id, Service: app.slice(1), Tags: ["consular-reg-id=consular", `consular-app-id=${app}`], Address: "h", Port: 1 })

const actual: Actual = {
  agents: new Map([["127.0.0.2", { _tag: "Read", services: new Map([["a.1", ours("a.1", "/a")], ["b.1", ours("b.1", "/b")], ["c.1", ours("c.1", "/c")]]) }]]),
  kv: new Map([["consular/a/x", "\"1\""], ["consular/a/y", "\"2\""], ["consular/b/x", "\"3\""], ["consular/c/x", "\"4\""], ["consular/c/z", "\"5\""]])
}

const purging: Plan = {
  ...emptyPlan,
  register: [{ agent: "127.0.0.2", registration: { ID: "d.1", Name: "d", Address: "h", Port: 2, Tags: [] } }],
  deregister: [
    { agent: "127.0.0.2", serviceId: "a.1", why: "dead" },
    { agent: "127.0.0.2", serviceId: "b.1", why: "dead" },
    { agent: "127.0.0.1", serviceId: "c.1", why: "moved" }
  ],
  kvSet: [{ key: "consular/d/x", value: "\"9\"" }],
  kvDelete: ["consular/c/z"],
  kvDeleteTree: ["consular/a/", "consular/b/"]
}

describe("guardPurge", () => {
  it("no limit: the plan as it is", () => {
    expect(guardPurge(purging, actual, undefined)).toEqual({ plan: purging, refused: undefined })
  })

  it("within the limit (2 services, 3 keys <= 3): the plan as it is", () => {
    expect(guardPurge(purging, actual, 3).refused).toBeUndefined()
  })

  it("over the limit by keys (3 keys > 2): every purge deletion is dropped, the rest stays", () => {
    const { plan, refused } = guardPurge(purging, actual, 2)
    expect(refused).toEqual({ services: 2, keys: 3, limit: 2, apps: ["a", "b"] })
    expect(plan.register).toEqual(purging.register)
    expect(plan.kvSet).toEqual(purging.kvSet)
    // a label gone from a running app, and a move back from the fallback agent, are no purge
    expect(plan.kvDelete).toEqual(["consular/c/z"])
    expect(plan.deregister).toEqual([{ agent: "127.0.0.1", serviceId: "c.1", why: "moved" }])
    expect(plan.kvDeleteTree).toEqual([])
  })

  it("over the limit by services alone", () => {
    const { refused } = guardPurge({ ...purging, kvDeleteTree: [] }, actual, 1)
    expect(refused?.services).toBe(2)
    expect(refused?.keys).toBe(0)
  })

  it("--max-purge 0 refuses any purge at all, and lets a plan without one through", () => {
    expect(guardPurge(purging, actual, 0).refused).toBeDefined()
    const noPurge = { ...purging, deregister: [purging.deregister[2]!], kvDeleteTree: [] }
    expect(guardPurge(noPurge, actual, 0)).toEqual({ plan: noPurge, refused: undefined })
  })
})
