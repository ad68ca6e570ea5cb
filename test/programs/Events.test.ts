import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Either, Fiber, Layer } from "effect"
import { Consul, makeConsulMemory } from "../../src/services/Consul.js"
import { ConsulStore } from "../../src/services/ConsulStore.js"
import { Marathon, makeMarathonMemory } from "../../src/services/Marathon.js"
import { MarathonStore } from "../../src/services/MarathonStore.js"
import { decodeEvent, makeEventHandler } from "../../src/programs/Events.js"
import { LedgerLive } from "../../src/programs/Ledger.js"
import { TopologyLive } from "../../src/programs/Topology.js"
import { HostResolverMemory } from "../../src/services/HostResolver.js"
import { KnownEventType } from "../../src/domain/MarathonApi.js"
import { syncOnce } from "../../src/programs/Sync.js"
import { makeDatacenter } from "../support/Datacenter.js"
import { serveDaemon, statusUpdate } from "../support/Daemon.js"

const ours = (app: string) => ["consular-reg-id=consular", `consular-app-id=${app}`]

/** A memory datacenter with one running task, web.1 on 127.0.0.2, for the races between events and a pass. */
const oneRunningTask = () => {
  const consul = new ConsulStore("127.0.0.1")
  consul.addAgent("127.0.0.1")
  consul.addAgent("127.0.0.2")
  const marathon = new MarathonStore()
  marathon.setTask("/web", { id: "web.1", host: "127.0.0.2", ports: [1] }, false)
  return { consul, marathon }
}

const raceContext = (consul: Consul["Type"], marathon: Marathon["Type"]) =>
  Layer.mergeAll(Layer.succeed(Consul, consul), Layer.succeed(Marathon, marathon), LedgerLive, TopologyLive(new URL("http://127.0.0.1:8500")), HostResolverMemory())

const raceSettings = { registrationId: "consular", consulUrl: new URL("http://127.0.0.1:8500"), fallback: false, fallbackTimeout: "1 second", maxEventBytes: 1000 } as const
const killWeb1 = () =>
  Either.getOrThrow(decodeEvent(JSON.stringify(statusUpdate({ taskId: "web.1", taskStatus: "TASK_KILLED", appId: "/web", host: "127.0.0.2" }))))

const terminalStates = [
  "TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_LOST", "TASK_KILLING", "TASK_ERROR", "TASK_DROPPED",
  "TASK_GONE", "TASK_GONE_BY_OPERATOR", "TASK_UNKNOWN", "TASK_UNREACHABLE"
] as const

describe("POST /events through the daemon's HTTP server", () => {
  it.scopedLive("GET / answers []", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      const daemon = yield* serveDaemon(dc)
      const response = yield* daemon.get("/")
      expect(response.status).toBe(200)
      expect(response.json).toEqual([])
      expect(response.contentType).toContain("application/json")
    }))

  it.scopedLive("TASK_RUNNING registers on the task host's agent with the exact layout, then syncs the app's labels", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.marathon.putApp("/grp/web", { domain: "example.org" })
      dc.consul.put("consular/grp-web/stale", "\"x\"")
      const daemon = yield* serveDaemon(dc)
      const response = yield* daemon.post(statusUpdate({ taskId: "web.1", taskStatus: "TASK_RUNNING", appId: "/grp/web", host: "127.0.0.3", ports: [31005, 31004] }))
      expect(response.status).toBe(200)
      expect(response.json).toMatchObject({ status: "ok" })
      expect(Object.fromEntries(dc.consul.services("127.0.0.3"))).toEqual({
        "web.1": { ID: "web.1", Service: "grp-web", Address: "127.0.0.3", Port: 31004, Tags: ours("/grp/web") }
      })
      expect(dc.consul.services("127.0.0.2").size).toBe(0)
      expect(Object.fromEntries(dc.consul.kv)).toEqual({ "consular/grp-web/domain": "\"example.org\"" })
    }))

  it.scopedLive("labels follow RUNNING events, and a known app version costs no Marathon read", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      const app = dc.marathon.putApp("/web", { a: "1" })
      const daemon = yield* serveDaemon(dc)
      yield* daemon.post(statusUpdate({ taskId: "web.1", taskStatus: "TASK_RUNNING", appId: "/web", host: "127.0.0.2", version: app.version }))
      expect(dc.consul.kv.get("consular/web/a")).toBe("\"1\"")
      const reads = dc.marathon.requests
      yield* daemon.post(statusUpdate({ taskId: "web.2", taskStatus: "TASK_RUNNING", appId: "/web", host: "127.0.0.2", version: app.version }))
      expect(dc.marathon.requests).toBe(reads)
      dc.marathon.setLabels("/web", { b: "2" })
      yield* daemon.post(statusUpdate({ taskId: "web.3", taskStatus: "TASK_RUNNING", appId: "/web", host: "127.0.0.2", version: app.version }))
      expect(Object.fromEntries(dc.consul.kv)).toEqual({ "consular/web/b": "\"2\"" })
    }))

  it.scopedLive("a new app version's KV tree is read at the same time as its definition; a failed definition read still writes nothing", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter({ timeout: 100 })
      const app = dc.marathon.putApp("/web", { a: "1" })
      const daemon = yield* serveDaemon(dc)
      dc.consul.resetCounters()
      // every read of the definition hangs until the client gives up: a read made only after it would never be made
      dc.marathon.fault = { _tag: "Hang" }
      const response = yield* daemon.post(statusUpdate({ taskId: "web.1", taskStatus: "TASK_RUNNING", appId: "/web", host: "127.0.0.2", version: app.version }))
      expect(response.status).toBe(502)
      expect(dc.consul.log.map((request) => request.operation)).toEqual(["kv.recurse"])
      expect(dc.consul.services("127.0.0.2").size).toBe(0)
      expect(dc.consul.kv.size).toBe(0)
    }))

  it.scopedLive("a RUNNING task of an app Marathon no longer has is registered, and nothing more happens (2xx)", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      const daemon = yield* serveDaemon(dc)
      const response = yield* daemon.post(statusUpdate({ taskId: "gone.1", taskStatus: "TASK_RUNNING", appId: "/gone", host: "127.0.0.2" }))
      expect(response.status).toBe(200)
      expect(dc.consul.kv.size).toBe(0)
    }))

  for (const state of terminalStates) {
    it.scopedLive(`${state} deregisters the task`, () =>
      Effect.gen(function*() {
        const dc = yield* makeDatacenter()
        dc.consul.register("127.0.0.2", { ID: "web.1", Name: "web", Address: "127.0.0.2", Port: 1, Tags: ours("/web") })
        dc.consul.register("127.0.0.2", { ID: "web.2", Name: "web", Address: "127.0.0.2", Port: 2, Tags: ours("/web") })
        const daemon = yield* serveDaemon(dc)
        const response = yield* daemon.post(statusUpdate({ taskId: "web.1", taskStatus: state, appId: "/web", host: "127.0.0.2" }))
        expect(response.status).toBe(200)
        expect([...dc.consul.services("127.0.0.2").keys()]).toEqual(["web.2"])
      }))
  }

  it.scopedLive("deregistering a task Consul does not have is success (no 500)", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      const daemon = yield* serveDaemon(dc)
      const response = yield* daemon.post(statusUpdate({ taskId: "never.1", taskStatus: "TASK_KILLED", appId: "/web", host: "127.0.0.2" }))
      expect(response.status).toBe(200)
    }))

  it.scopedLive("a service with the task's id that is not ours is never deregistered", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.consul.register("127.0.0.2", { ID: "web.1", Name: "web", Address: "127.0.0.2", Tags: ["consular-reg-id=other", "consular-app-id=/web"] })
      const daemon = yield* serveDaemon(dc)
      const response = yield* daemon.post(statusUpdate({ taskId: "web.1", taskStatus: "TASK_KILLED", appId: "/web", host: "127.0.0.2" }))
      expect(response.status).toBe(200)
      expect([...dc.consul.services("127.0.0.2").keys()]).toEqual(["web.1"])
    }))

  for (const state of ["TASK_STAGING", "TASK_STARTING"]) {
    it.scopedLive(`${state} is answered 2xx with no Consul call`, () =>
      Effect.gen(function*() {
        const dc = yield* makeDatacenter()
        const daemon = yield* serveDaemon(dc)
        dc.consul.resetCounters()
        const response = yield* daemon.post(statusUpdate({ taskId: "web.1", taskStatus: state, appId: "/web", host: "127.0.0.2" }))
        expect(response.status).toBe(200)
        expect(dc.consul.requests).toBe(0)
      }))
  }

  it.scopedLive("every other Marathon event type is answered 2xx with no write", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      const daemon = yield* serveDaemon(dc)
      dc.consul.resetCounters()
      // the health events have schemas of their own (test/programs/Health.test.ts)
      const others = KnownEventType.literals.filter((type) =>
        type !== "status_update_event" && type !== "health_status_changed_event" && type !== "instance_health_changed_event"
      )
      expect(others.length).toBeGreaterThanOrEqual(20)
      for (const eventType of others) {
        const response = yield* daemon.post({ eventType, timestamp: "2026-11-25T10:00:00.000Z", appId: "/web" })
        expect(response.status, eventType).toBe(200)
      }
      expect(dc.consul.writes).toBe(0)
    }))

  it.scopedLive("an unknown or missing eventType gets 400 with a JSON object body, as the original", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      const daemon = yield* serveDaemon(dc)
      const unknown = yield* daemon.post({ eventType: "no_such_event" })
      expect(unknown.status).toBe(400)
      expect(unknown.json).toMatchObject({ error: "Event type no_such_event not supported." })
      const missing = yield* daemon.post({ taskId: "x" })
      expect(missing.status).toBe(400)
      expect(missing.json).toMatchObject({ error: "invalid event" })
    }))

  it.scopedLive("a RUNNING event after its task was killed (out of order) does not resurrect it", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      const daemon = yield* serveDaemon(dc)
      yield* daemon.post(statusUpdate({ taskId: "web.1", taskStatus: "TASK_KILLED", appId: "/web", host: "127.0.0.2" }))
      const response = yield* daemon.post(statusUpdate({ taskId: "web.1", taskStatus: "TASK_RUNNING", appId: "/web", host: "127.0.0.2" }))
      expect(response.status).toBe(200)
      expect(dc.consul.services("127.0.0.2").size).toBe(0)
    }))

  it.scopedLive("events for one task are applied in arrival order", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.marathon.putApp("/web")
      const daemon = yield* serveDaemon(dc)
      // many tasks, each started then killed at once: every kill must win
      yield* Effect.forEach(Array.from({ length: 40 }, (_, i) => i), (i) =>
        Effect.all([
          daemon.post(statusUpdate({ taskId: `web.${i}`, taskStatus: "TASK_RUNNING", appId: "/web", host: "127.0.0.2" })),
          daemon.post(statusUpdate({ taskId: `web.${i}`, taskStatus: "TASK_KILLED", appId: "/web", host: "127.0.0.2" }))
        ], { concurrency: 1 }), { concurrency: 10 })
      expect(dc.consul.services("127.0.0.2").size).toBe(0)
    }))

  describe("fallback", () => {
    it.scopedLive("a refused agent: registration on the main agent, and the kill reaches it there", () =>
      Effect.gen(function*() {
        const dc = yield* makeDatacenter({ timeout: 200 })
        dc.consul.setFault("127.0.0.3", { _tag: "Refuse" })
        const daemon = yield* serveDaemon(dc, { fallback: true })
        const up = yield* daemon.post(statusUpdate({ taskId: "web.1", taskStatus: "TASK_RUNNING", appId: "/web", host: "127.0.0.3", ports: [5] }))
        expect(up.status).toBe(200)
        expect(Object.fromEntries(dc.consul.services("127.0.0.1"))).toEqual({
          "web.1": { ID: "web.1", Service: "web", Address: "127.0.0.3", Port: 5, Tags: ours("/web") }
        })
        const down = yield* daemon.post(statusUpdate({ taskId: "web.1", taskStatus: "TASK_KILLED", appId: "/web", host: "127.0.0.3" }))
        expect(down.status).toBe(200) // the copy that served is gone; the task's own agent is cleaned by the next sync
        expect(dc.consul.services("127.0.0.1").size).toBe(0)
      }))

    it.scopedLive("a hanging agent: registration on the main agent after the timeout", () =>
      Effect.gen(function*() {
        const dc = yield* makeDatacenter({ timeout: 200 })
        dc.consul.setFault("127.0.0.3", { _tag: "Hang" })
        const daemon = yield* serveDaemon(dc, { fallback: true })
        const up = yield* daemon.post(statusUpdate({ taskId: "web.1", taskStatus: "TASK_RUNNING", appId: "/web", host: "127.0.0.3", ports: [5] }))
        expect(up.status).toBe(200)
        expect([...dc.consul.services("127.0.0.1").keys()]).toEqual(["web.1"])
      }))

    it.scopedLive("without --fallback the task waits for its agent, and the event reports the failure", () =>
      Effect.gen(function*() {
        const dc = yield* makeDatacenter({ timeout: 200 })
        dc.consul.setFault("127.0.0.3", { _tag: "Refuse" })
        const daemon = yield* serveDaemon(dc, { fallback: false })
        const up = yield* daemon.post(statusUpdate({ taskId: "web.1", taskStatus: "TASK_RUNNING", appId: "/web", host: "127.0.0.3", ports: [5] }))
        expect(up.status).toBe(502)
        expect(up.json).toMatchObject({ upstream: "consul" })
        expect(dc.consul.services("127.0.0.1").size).toBe(0)
        const other = yield* daemon.post(statusUpdate({ taskId: "web.2", taskStatus: "TASK_RUNNING", appId: "/web", host: "127.0.0.2", ports: [6] }))
        expect(other.status).toBe(200)
      }))
  })

  it.effect("a sync that read Marathon before a kill event does not re-register the killed task", () =>
    Effect.gen(function*() {
      const { consul, marathon } = oneRunningTask()
      const marathonRead = yield* Deferred.make<void>()
      const killApplied = yield* Deferred.make<void>()
      const memory = makeMarathonMemory(marathon)
      let passUnderWay = false
      // the pass reads Marathon, then waits until the kill event has been handled (the handler's start-up read does not)
      const slowMarathon = Marathon.of({
        ...memory,
        apps: Effect.suspend(() =>
          passUnderWay
            ? memory.apps.pipe(Effect.tap(() => Deferred.succeed(marathonRead, undefined)), Effect.zipLeft(Deferred.await(killApplied)))
            : memory.apps
        )
      })
      yield* Effect.gen(function*() {
        const handler = yield* makeEventHandler(raceSettings)
        passUnderWay = true
        const pass = yield* Effect.fork(syncOnce({ ...raceSettings, purge: true, consulUrl: new URL("http://127.0.0.1:8500") }))
        yield* Deferred.await(marathonRead)
        marathon.endTask("/web", "web.1", "TASK_KILLED", false)
        yield* handler.handle(killWeb1())
        yield* Deferred.succeed(killApplied, undefined)
        const report = yield* Fiber.join(pass)
        expect(report.plan.register).toEqual([])
        expect(consul.services("127.0.0.2").has("web.1")).toBe(false)
      }).pipe(Effect.provide(raceContext(makeConsulMemory(consul), slowMarathon)))
    }))

  it.effect("a kill that lands while a sync is writing that task waits for the write, then removes it", () =>
    Effect.gen(function*() {
      const { consul, marathon } = oneRunningTask()
      const writing = yield* Deferred.make<void>()
      const gate = yield* Deferred.make<void>()
      const inner = makeConsulMemory(consul)
      const gatedConsul = Consul.of({
        ...inner,
        register: (agent, registration, options) =>
          Effect.zipRight(
            Effect.zipRight(Deferred.succeed(writing, undefined), Deferred.await(gate)),
            inner.register(agent, registration, options)
          )
      })
      yield* Effect.gen(function*() {
        const handler = yield* makeEventHandler(raceSettings)
        const pass = yield* Effect.fork(syncOnce({ ...raceSettings, purge: false, consulUrl: new URL("http://127.0.0.1:8500") }))
        yield* Deferred.await(writing)
        // Marathon kills the task while the pass's registration of it is in flight
        marathon.endTask("/web", "web.1", "TASK_KILLED", false)
        const kill = yield* Effect.fork(handler.handle(killWeb1()))
        yield* Effect.yieldNow()
        expect(kill.unsafePoll()).toBeNull() // it waits for the task's lock
        yield* Deferred.succeed(gate, undefined)
        yield* Fiber.join(pass)
        expect(yield* Fiber.join(kill)).toBe("deregistered")
        expect(consul.services("127.0.0.2").has("web.1")).toBe(false)
      }).pipe(Effect.provide(raceContext(gatedConsul, makeMarathonMemory(marathon))))
    }))
})
