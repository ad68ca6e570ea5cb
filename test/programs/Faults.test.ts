import { HttpClientRequest } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Either, Fiber, FiberStatus, HashMap, Layer, Logger, LogLevel, Option } from "effect"
import type { AgentFault, ConsulOperation, ConsulStore } from "../../src/services/ConsulStore.js"
import { ConsulStore as Store } from "../../src/services/ConsulStore.js"
import { Consul, makeConsulMemory } from "../../src/services/Consul.js"
import * as Http from "../../src/services/Http.js"
import { Marathon, makeMarathonMemory } from "../../src/services/Marathon.js"
import type { MarathonFault, MarathonOperation, MarathonStore } from "../../src/services/MarathonStore.js"
import { MarathonStore as MStore } from "../../src/services/MarathonStore.js"
import { decodeEvent, makeEventHandler } from "../../src/programs/Events.js"
import type { DecodedEvent } from "../../src/programs/Events.js"
import { LedgerLive } from "../../src/programs/Ledger.js"
import { TopologyLive } from "../../src/programs/Topology.js"
import { HostResolverMemory } from "../../src/services/HostResolver.js"
import { makeDatacenter, syncPass } from "../support/Datacenter.js"
import { serveDaemon, statusUpdate } from "../support/Daemon.js"
import type { Answer } from "../support/Daemon.js"

/**
 * Faults while handling valid events and syncing: upstream failures are 502s naming the upstream, one agent's
 * trouble stays its own, transient failures are retried a bounded number of times and a 4xx never, a failing
 * Marathon purges nothing, and what an event could not do the next sync does.
 */

const ours = (app: string) => ["consular-reg-id=consular", `consular-app-id=${app}`]

const event = (taskId: string, taskStatus: string, host = "127.0.0.2", appId = "/web") =>
  statusUpdate({ taskId, taskStatus, appId, host, ports: [31000] })

const sync = syncPass

/**
 * Counts every request the embedded Consul sees, those a fault answers included (the store's own counters
 * only count the requests that get through).
 */
const countConsulAttempts = (store: ConsulStore) => {
  const seen: Array<{ readonly agent: string; readonly operation: ConsulOperation }> = []
  const admit = store.admit.bind(store)
  store.admit = (agent, operation) => {
    seen.push({ agent, operation })
    return admit(agent, operation)
  }
  return (agent: string, operation: ConsulOperation): number =>
    seen.filter((entry) => entry.agent === agent && entry.operation === operation).length
}

/** The same for the embedded Marathon; optionally a fault on one kind of request only, from its `from`-th on. */
const countMarathonAttempts = (store: MarathonStore, only?: { readonly operation: MarathonOperation; readonly fault: MarathonFault; readonly from?: number }) => {
  const seen: Array<MarathonOperation> = []
  const admit = store.admit.bind(store)
  store.admit = (operation) => {
    seen.push(operation)
    const nth = seen.filter((op) => op === operation).length
    if (only !== undefined && operation === only.operation && nth >= (only.from ?? 1)) return only.fault
    return admit(operation)
  }
  return (operation: MarathonOperation): number => seen.filter((op) => op === operation).length
}

/** A 502 whose JSON body names the upstream, carries no stack, and says which request failed. */
const expectUpstreamFailure = (answer: Answer, upstream: "consul" | "marathon", mentions?: string) => {
  expect(answer.status, answer.text).toBe(502)
  expect(answer.contentType).toContain("application/json")
  expect(answer.json).toMatchObject({ error: expect.any(String), upstream, detail: expect.any(String) })
  // no stack frame ("at f (file.js:1:2)"), no fiber dump
  expect(answer.text).not.toMatch(/\bat \S+ \(\S+:\d+:\d+\)|\\n\s+at |FiberFailure/)
  if (mentions !== undefined) expect(answer.text).toContain(mentions)
}

/** Bounded polling for something a server does on its own time. */
const eventually = (condition: () => boolean, what: string) =>
  Effect.gen(function*() {
    for (let i = 0; i < 1000; i++) {
      if (condition()) return
      yield* Effect.sleep("5 millis")
    }
    return yield* Effect.dieMessage(`not within 5 seconds: ${what}`)
  })

const consulFaults: ReadonlyArray<readonly [string, AgentFault]> = [
  ["refusing connections", { _tag: "Refuse" }],
  ["hanging", { _tag: "Hang" }],
  ["answering 500", { _tag: "Status", status: 500 }]
]

describe("an upstream failure while handling a valid event is a 502 naming the upstream", () => {
  for (const [name, fault] of [...consulFaults, ["answering 403", { _tag: "Status", status: 403 }] as const]) {
    it.scopedLive(`the task's agent ${name}: 502 consul, nothing half-done elsewhere`, () =>
      Effect.gen(function*() {
        const dc = yield* makeDatacenter({ timeout: 200 })
        dc.marathon.putApp("/web", { a: "1" })
        dc.consul.setFault("127.0.0.2", fault)
        const daemon = yield* serveDaemon(dc)
        const answer = yield* daemon.post(event("web.1", "TASK_RUNNING"))
        expectUpstreamFailure(answer, "consul", "127.0.0.2")
        expect(dc.consul.services("127.0.0.2").size).toBe(0)
        const killed = yield* daemon.post(event("web.0", "TASK_KILLED"))
        expectUpstreamFailure(killed, "consul", "127.0.0.2")
      }))
  }

  it.scopedLive("a catalog node with no Consul agent listening (connection refused): 502 consul", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter({ timeout: 200 })
      // the catalog lists 127.0.0.4, but nothing listens there: the connection is refused by the kernel
      dc.consul.addAgent("127.0.0.4")
      const daemon = yield* serveDaemon(dc)
      const answer = yield* daemon.post(event("web.4", "TASK_RUNNING", "127.0.0.4"))
      expectUpstreamFailure(answer, "consul", "127.0.0.4")
    }))

  it.scopedLive("the main Consul failing the label write: 502 consul; the labels already there are kept", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter({ timeout: 200 })
      dc.marathon.putApp("/web", { a: "2" })
      dc.consul.put("consular/web/a", "\"1\"")
      dc.consul.put("consular/web/old", "\"x\"")
      const daemon = yield* serveDaemon(dc)
      dc.consul.setFault("127.0.0.1", { _tag: "Status", status: 500 })
      const answer = yield* daemon.post(event("web.1", "TASK_RUNNING"))
      expectUpstreamFailure(answer, "consul")
      expect(Object.fromEntries(dc.consul.kv)).toEqual({ "consular/web/a": "\"1\"", "consular/web/old": "\"x\"" })
    }))

  for (const [name, fault] of [
    ["answering 500", { _tag: "Status", status: 500 }],
    ["answering 401", { _tag: "Status", status: 401 }],
    ["answering invalid JSON", { _tag: "InvalidJson" }],
    ["answering truncated JSON", { _tag: "Truncated" }],
    ["hanging", { _tag: "Hang" }],
    ["dropping connections", { _tag: "Refuse" }]
  ] as const) {
    it.scopedLive(`Marathon ${name} on the app read of a RUNNING event: 502 marathon, no label touched`, () =>
      Effect.gen(function*() {
        const dc = yield* makeDatacenter({ timeout: 200 })
        dc.marathon.putApp("/web", { b: "2" })
        dc.consul.put("consular/web/a", "\"1\"")
        const daemon = yield* serveDaemon(dc)
        dc.marathon.fault = fault
        const answer = yield* daemon.post(event("web.1", "TASK_RUNNING"))
        expectUpstreamFailure(answer, "marathon")
        expect(Object.fromEntries(dc.consul.kv)).toEqual({ "consular/web/a": "\"1\"" })
      }))
  }

  it.scopedLive("Consul's 404 on the deregistration itself (gone meanwhile) is success", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.consul.register("127.0.0.2", { ID: "web.1", Name: "web", Address: "127.0.0.2", Port: 1, Tags: ours("/web") })
      // the service is listed, then gone by the time the deregistration arrives: Consul answers 404
      const deregister = dc.consul.deregister.bind(dc.consul)
      const answered404: Array<string> = []
      dc.consul.deregister = (agent, id) => {
        deregister(agent, id)
        answered404.push(id)
        return false
      }
      const daemon = yield* serveDaemon(dc)
      const answer = yield* daemon.post(event("web.1", "TASK_KILLED"))
      expect(answered404).toEqual(["web.1"])
      expect(answer.status, answer.text).toBe(200)
      expect(answer.json).toMatchObject({ status: "ok", outcome: "deregistered" })
    }))
})

describe("isolation: one agent's trouble fails only the events for tasks on it", () => {
  for (const [name, fault] of consulFaults) {
    it.scopedLive(`agent 127.0.0.3 ${name}`, () =>
      Effect.gen(function*() {
        const dc = yield* makeDatacenter({ timeout: 200 })
        dc.marathon.putApp("/web", { a: "1" })
        dc.consul.register("127.0.0.2", { ID: "web.20", Name: "web", Address: "127.0.0.2", Port: 1, Tags: ours("/web") })
        dc.consul.register("127.0.0.3", { ID: "web.30", Name: "web", Address: "127.0.0.3", Port: 1, Tags: ours("/web") })
        dc.consul.setFault("127.0.0.3", fault)
        const daemon = yield* serveDaemon(dc)

        expectUpstreamFailure(yield* daemon.post(event("web.3", "TASK_RUNNING", "127.0.0.3")), "consul", "127.0.0.3")
        expectUpstreamFailure(yield* daemon.post(event("web.30", "TASK_KILLED", "127.0.0.3")), "consul", "127.0.0.3")

        const up = yield* daemon.post(event("web.2", "TASK_RUNNING", "127.0.0.2"))
        expect(up.status, up.text).toBe(200)
        const down = yield* daemon.post(event("web.20", "TASK_KILLED", "127.0.0.2"))
        expect(down.status, down.text).toBe(200)
        const onMain = yield* daemon.post(event("web.1", "TASK_RUNNING", "127.0.0.1"))
        expect(onMain.status, onMain.text).toBe(200)
        expect([...dc.consul.services("127.0.0.2").keys()]).toEqual(["web.2"])
        expect([...dc.consul.services("127.0.0.1").keys()]).toEqual(["web.1"])
        expect(dc.consul.kv.get("consular/web/a")).toBe("\"1\"")
        // the agent comes back: its events work again
        dc.consul.setFault("127.0.0.3", undefined)
        const back = yield* daemon.post(event("web.3", "TASK_RUNNING", "127.0.0.3"))
        expect(back.status, back.text).toBe(200)
        expect([...dc.consul.services("127.0.0.3").keys()].sort()).toEqual(["web.3", "web.30"])
      }))
  }

  it.scopedLive("an event stuck on a hanging agent does not hold up events for other agents", () =>
    Effect.gen(function*() {
      // a long timeout: the stuck event is certainly still in flight while the others are handled
      const dc = yield* makeDatacenter({ timeout: 20_000 })
      dc.marathon.putApp("/web")
      dc.consul.setFault("127.0.0.3", { _tag: "Hang" })
      const attempts = countConsulAttempts(dc.consul)
      const daemon = yield* serveDaemon(dc)
      const stuck = yield* Effect.fork(daemon.post(event("web.3", "TASK_RUNNING", "127.0.0.3")))
      yield* eventually(() => attempts("127.0.0.3", "agent.register") === 1, "the registration reached the hanging agent")
      for (let i = 0; i < 5; i++) {
        const answer = yield* daemon.post(event(`web.2${i}`, "TASK_RUNNING", "127.0.0.2"))
        expect(answer.status, answer.text).toBe(200)
      }
      // also another event of the same app, and a kill on another agent
      const killed = yield* daemon.post(event("web.20", "TASK_KILLED", "127.0.0.2"))
      expect(killed.status).toBe(200)
      expect(dc.consul.services("127.0.0.2").size).toBe(4)
      expect(Option.isNone(yield* Fiber.poll(stuck))).toBe(true)
      yield* Fiber.interrupt(stuck)
    }))
})

describe("retry: transient failures are retried a bounded number of times per request, a 4xx never", () => {
  // the datacenter's clients make 1 attempt + 2 retries
  const transient: ReadonlyArray<readonly [string, AgentFault]> = [
    ...[429, 500, 502, 503, 504].map((status) => [`${status}`, { _tag: "Status", status }] as const),
    ["a dropped connection", { _tag: "Refuse" }],
    ["no answer in time", { _tag: "Hang" }]
  ]
  for (const [name, fault] of transient) {
    it.scopedLive(`Consul ${name}: 3 attempts of the registration, then 502`, () =>
      Effect.gen(function*() {
        const dc = yield* makeDatacenter({ timeout: 200 })
        dc.consul.setFault("127.0.0.2", fault)
        const attempts = countConsulAttempts(dc.consul)
        const daemon = yield* serveDaemon(dc)
        expectUpstreamFailure(yield* daemon.post(event("web.1", "TASK_RUNNING")), "consul")
        expect(attempts("127.0.0.2", "agent.register")).toBe(3)
      }))
  }

  for (const status of [400, 403, 404, 409, 422]) {
    it.scopedLive(`Consul ${status}: one attempt, then 502`, () =>
      Effect.gen(function*() {
        const dc = yield* makeDatacenter({ timeout: 200 })
        dc.consul.setFault("127.0.0.2", { _tag: "Status", status })
        const attempts = countConsulAttempts(dc.consul)
        const daemon = yield* serveDaemon(dc)
        expectUpstreamFailure(yield* daemon.post(event("web.1", "TASK_RUNNING")), "consul")
        expect(attempts("127.0.0.2", "agent.register")).toBe(1)
        // a deregistration too
        dc.consul.register("127.0.0.3", { ID: "web.3", Name: "web", Address: "127.0.0.3", Tags: ours("/web") })
        dc.consul.setFault("127.0.0.3", { _tag: "Status", status })
        expectUpstreamFailure(yield* daemon.post(event("web.3", "TASK_KILLED", "127.0.0.3")), "consul")
        expect(attempts("127.0.0.3", "agent.services")).toBe(1)
      }))
  }

  for (const [status, expected] of [[500, 3], [503, 3], [429, 3], [400, 1], [401, 1], [403, 1]] as const) {
    it.scopedLive(`Marathon ${status} on the app read: ${expected} attempt(s)`, () =>
      Effect.gen(function*() {
        const dc = yield* makeDatacenter({ timeout: 200 })
        dc.marathon.putApp("/web")
        const attempts = countMarathonAttempts(dc.marathon, { operation: "app", fault: { _tag: "Status", status } })
        const daemon = yield* serveDaemon(dc)
        expectUpstreamFailure(yield* daemon.post(event("web.1", "TASK_RUNNING")), "marathon")
        expect(attempts("app")).toBe(expected)
      }))
  }

  it.scopedLive("a refused connection (nothing listening) is retried: 1 + retries attempts", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      const outcomes: Array<string> = []
      const logger = Logger.make(({ annotations }) => {
        const outcome = HashMap.get(annotations, "outcome")
        if (Option.isSome(outcome)) outcomes.push(String(outcome.value))
      })
      const http = yield* Http.makeHttp({ timeout: "2 seconds", retries: 2, retryBase: "5 millis", debug: true })
      // the datacenter's Consul port on an address nothing listens on
      const url = `http://127.0.0.4:${dc.consulUrl.port}/v1/agent/services`
      const result = yield* Effect.either(http.send(HttpClientRequest.get(url), Http.ignoreBody)).pipe(
        Effect.provide(Logger.replace(Logger.defaultLogger, logger)),
        Logger.withMinimumLogLevel(LogLevel.Debug)
      )
      expect(Either.isLeft(result)).toBe(true)
      if (Either.isLeft(result)) {
        expect(Http.reasonOf(result.left)).toBe("Transport")
        expect(Http.isTransient(result.left)).toBe(true)
      }
      expect(outcomes).toHaveLength(3)
      for (const outcome of outcomes) expect(outcome).toContain("127.0.0.4")
    }))
})

describe("a Marathon that fails mid-pass means no purge and no write", () => {
  for (const [name, fault] of [
    ["answers 500", { _tag: "Status", status: 500 }],
    ["answers 401", { _tag: "Status", status: 401 }],
    ["answers invalid JSON", { _tag: "InvalidJson" }],
    ["answers truncated JSON", { _tag: "Truncated" }],
    ["times out", { _tag: "Hang" }],
    ["drops the connection", { _tag: "Refuse" }]
  ] as const) {
    it.scopedLive(`the per-app tasks read ${name} after the app listing succeeded`, () =>
      Effect.gen(function*() {
        const dc = yield* makeDatacenter({ timeout: 200 })
        dc.marathon.embedTasks = false
        dc.marathon.putApp("/a", { l: "new" })
        dc.marathon.setTask("/a", { id: "a.1", host: "127.0.0.2", ports: [1] }, false)
        dc.marathon.setTask("/b", { id: "b.1", host: "127.0.0.3", ports: [2] }, false)
        // ours and dead, an app gone, stale labels: all of it a good pass would remove
        dc.consul.register("127.0.0.2", { ID: "a.0", Name: "a", Address: "127.0.0.2", Tags: ours("/a") })
        dc.consul.register("127.0.0.3", { ID: "gone.1", Name: "gone", Address: "127.0.0.3", Tags: ours("/gone") })
        dc.consul.put("consular/a/old", "\"x\"")
        dc.consul.put("consular/gone/k", "\"y\"")
        const before = { kv: Object.fromEntries(dc.consul.kv), services: [...dc.consul.agents.values()].map((a) => [...a.services.keys()]) }
        // the first tasks read answers, every later one fails
        const attempts = countMarathonAttempts(dc.marathon, { operation: "tasks", fault, from: 2 })
        dc.consul.resetCounters()
        const error = yield* Effect.flip(sync(dc, { purge: true }))
        expect(error._tag).toBe("MarathonError")
        expect(attempts("apps")).toBe(1)
        expect(attempts("tasks")).toBeGreaterThanOrEqual(2)
        expect(dc.consul.writes).toBe(0)
        expect(Object.fromEntries(dc.consul.kv)).toEqual(before.kv)
        expect([...dc.consul.agents.values()].map((a) => [...a.services.keys()])).toEqual(before.services)
      }))
  }

  it.scopedLive("the app listing timing out: no purge, and the next good pass does purge", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter({ timeout: 200 })
      dc.consul.register("127.0.0.2", { ID: "gone.1", Name: "gone", Address: "127.0.0.2", Tags: ours("/gone") })
      dc.marathon.fault = { _tag: "Hang" }
      dc.consul.resetCounters()
      expect((yield* Effect.flip(sync(dc, { purge: true })))._tag).toBe("MarathonError")
      expect(dc.consul.writes).toBe(0)
      expect(dc.consul.services("127.0.0.2").has("gone.1")).toBe(true)
      // the test can fail: a Marathon that answers is obeyed
      dc.marathon.fault = undefined
      yield* sync(dc, { purge: true })
      expect(dc.consul.services("127.0.0.2").has("gone.1")).toBe(false)
    }))
})

describe("nothing lost: what Consul failed for an event, the next sync repairs", () => {
  for (const [name, fault] of [["answering 500", { _tag: "Status", status: 500 }], ["refusing connections", { _tag: "Refuse" }]] as const) {
    it.scopedLive(`a RUNNING event while its agent is ${name}`, () =>
      Effect.gen(function*() {
        const dc = yield* makeDatacenter({ timeout: 200 })
        dc.marathon.putApp("/web", { a: "1" })
        dc.marathon.setTask("/web", { id: "web.1", host: "127.0.0.2", ports: [31000] }, false)
        dc.consul.setFault("127.0.0.2", fault)
        const daemon = yield* serveDaemon(dc)
        expectUpstreamFailure(yield* daemon.post(event("web.1", "TASK_RUNNING")), "consul")
        expect(dc.consul.services("127.0.0.2").size).toBe(0)
        dc.consul.setFault("127.0.0.2", undefined)
        const report = yield* sync(dc)
        expect(report.failures).toEqual([])
        expect(Object.fromEntries(dc.consul.services("127.0.0.2"))).toEqual({
          "web.1": { ID: "web.1", Service: "web", Address: "127.0.0.2", Port: 31000, Tags: ours("/web") }
        })
        expect(dc.consul.kv.get("consular/web/a")).toBe("\"1\"")
      }))
  }

  it.scopedLive("a kill event while the agent answers 500: the next purging sync deregisters", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter({ timeout: 200 })
      dc.marathon.putApp("/web")
      dc.consul.register("127.0.0.2", { ID: "web.1", Name: "web", Address: "127.0.0.2", Port: 1, Tags: ours("/web") })
      dc.consul.setFault("127.0.0.2", { _tag: "Status", status: 500 })
      const daemon = yield* serveDaemon(dc)
      expectUpstreamFailure(yield* daemon.post(event("web.1", "TASK_KILLED")), "consul")
      dc.consul.setFault("127.0.0.2", undefined)
      expect(dc.consul.services("127.0.0.2").has("web.1")).toBe(true)
      yield* sync(dc, { purge: true })
      expect(dc.consul.services("127.0.0.2").has("web.1")).toBe(false)
    }))

  it.scopedLive("labels Consul refused to write for a RUNNING event", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter({ timeout: 200 })
      dc.marathon.putApp("/web", { a: "1", b: "" })
      dc.marathon.setTask("/web", { id: "web.1", host: "127.0.0.2", ports: [31000] }, false)
      const daemon = yield* serveDaemon(dc)
      dc.consul.setFault("127.0.0.1", { _tag: "Status", status: 500 })
      expectUpstreamFailure(yield* daemon.post(event("web.1", "TASK_RUNNING")), "consul")
      expect(dc.consul.kv.size).toBe(0)
      dc.consul.setFault("127.0.0.1", undefined)
      // the event that follows knows the labels are not in KV: it does not skip them either
      yield* sync(dc)
      expect(Object.fromEntries(dc.consul.kv)).toEqual({ "consular/web/a": "\"1\"", "consular/web/b": "" })
      expect(dc.consul.services("127.0.0.2").has("web.1")).toBe(true)
    }))
})

describe("events for one task are applied in arrival order", () => {
  const settings = { registrationId: "consular", consulUrl: new URL("http://127.0.0.1:8500"), fallback: false, fallbackTimeout: "1 second", maxEventBytes: 1 << 20 } as const
  const decoded = (taskId: string, taskStatus: string): DecodedEvent => {
    const result = decodeEvent(JSON.stringify(event(taskId, taskStatus)))
    if (Either.isLeft(result)) throw new Error(result.left.message)
    return result.right
  }
  /** Yields until the fiber waits on something (bounded): it has gone as far as it can go on its own. */
  const untilBlocked = <A, E>(fiber: Fiber.RuntimeFiber<A, E>) =>
    Effect.gen(function*() {
      for (let i = 0; i < 1000; i++) {
        const status = yield* Fiber.status(fiber)
        if (FiberStatus.isSuspended(status) || FiberStatus.isDone(status)) return
        yield* Effect.yieldNow()
      }
    })

  it.effect("a kill that arrives while the task's registration is under way waits for it, then removes it", () =>
    Effect.gen(function*() {
      const store = new Store("127.0.0.1")
      store.addAgent("127.0.0.1")
      store.addAgent("127.0.0.2")
      const marathon = new MStore()
      marathon.putApp("/web")
      const inner = makeConsulMemory(store)
      const calls: Array<string> = []
      const registering = yield* Deferred.make<void>()
      const gate = yield* Deferred.make<void>()
      // the registration of web.1 is held until the test opens the gate
      const consul = Consul.of({
        ...inner,
        register: (agent, registration, options) =>
          Effect.gen(function*() {
            calls.push(`register ${registration.ID}`)
            if (registration.ID === "web.1") {
              yield* Deferred.succeed(registering, undefined)
              yield* Deferred.await(gate)
            }
            yield* inner.register(agent, registration, options)
          }),
        agentService: (agent, id) => Effect.suspend(() => {
          calls.push(`read ${id}`)
          return inner.agentService(agent, id)
        }),
        deregister: (agent, id) => Effect.suspend(() => {
          calls.push(`deregister ${id}`)
          return inner.deregister(agent, id)
        })
      })
      const context = Layer.mergeAll(
        Layer.succeed(Consul, consul),
        Layer.succeed(Marathon, makeMarathonMemory(marathon)),
        LedgerLive,
        TopologyLive(new URL("http://127.0.0.1:8500")),
        HostResolverMemory()
      )
      yield* Effect.gen(function*() {
        const handler = yield* makeEventHandler(settings)
        const up = yield* Effect.fork(handler.handle(decoded("web.1", "TASK_RUNNING")))
        yield* Deferred.await(registering)
        const down = yield* Effect.fork(handler.handle(decoded("web.1", "TASK_KILLED")))
        const again = yield* Effect.fork(handler.handle(decoded("web.1", "TASK_RUNNING")))
        yield* untilBlocked(down)
        yield* untilBlocked(again)
        // both wait behind the registration: neither has touched Consul
        expect(calls).toEqual(["register web.1"])
        expect(Option.isNone(yield* Fiber.poll(down))).toBe(true)
        // another task is not held up meanwhile
        expect(yield* handler.handle(decoded("web.2", "TASK_RUNNING"))).toBe("registered")
        expect(yield* handler.handle(decoded("web.2", "TASK_KILLED"))).toBe("deregistered")
        yield* Deferred.succeed(gate, undefined)
        expect(yield* Fiber.join(up)).toBe("registered")
        expect(yield* Fiber.join(down)).toBe("deregistered")
        // the late RUNNING comes after the kill: stale, not a resurrection
        expect(yield* Fiber.join(again)).toBe("stale")
        // what this handler registered it knows as ours: the kill needs no look at the tags first
        expect(calls).toEqual(["register web.1", "register web.2", "deregister web.2", "deregister web.1"])
        expect(store.services("127.0.0.2").size).toBe(0)
      }).pipe(Effect.provide(context))
    }))
})
