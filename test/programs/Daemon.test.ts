import { describe, expect, it } from "@effect/vitest"
import { Context, Deferred, Effect, Fiber, Layer, Ref, TestClock } from "effect"
import { Consul, makeConsulMemory } from "../../src/services/Consul.js"
import { ConsulStore } from "../../src/services/ConsulStore.js"
import { Marathon, makeMarathonMemory } from "../../src/services/Marathon.js"
import { MarathonStore } from "../../src/services/MarathonStore.js"
import { daemonObservability, periodicSync, runDaemon } from "../../src/programs/Daemon.js"
import { makePassQueue } from "../../src/programs/Control.js"
import { NotLeading } from "../../src/domain/Errors.js"
import { runEventSource, subscribeForever } from "../../src/programs/EventSource.js"
import type { EventSourceHooks } from "../../src/programs/EventSource.js"
import { Readiness } from "../../src/programs/Operations.js"
import type { DaemonSettings } from "../../src/programs/Daemon.js"
import { LedgerLive } from "../../src/programs/Ledger.js"
import { TopologyLive } from "../../src/programs/Topology.js"
import { HostResolverMemory } from "../../src/services/HostResolver.js"

const consulUrl = new URL("http://127.0.0.1:8500")

const settings = (overrides: Partial<DaemonSettings> = {}): DaemonSettings => ({
  registrationId: "consular",
  purge: true,
  fallback: false,
  fallbackTimeout: "1 second",
  consulUrl,
  maxEventBytes: 1024,
  scheme: "http",
  host: "10.1.2.3",
  port: 7000,
  syncInterval: 30,
  events: "callback",
  ...overrides
})

/** In-memory Consul and Marathon, so that schedules run under the TestClock. */
const memory = () => {
  const consul = new ConsulStore("127.0.0.1")
  consul.addAgent("127.0.0.1")
  consul.addAgent("127.0.0.2")
  const marathon = new MarathonStore()
  const layer = Layer.mergeAll(
    Layer.succeed(Consul, makeConsulMemory(consul, { retries: 0 })),
    Layer.succeed(Marathon, makeMarathonMemory(marathon, { retries: 0 })),
    LedgerLive,
    TopologyLive(consulUrl),
    HostResolverMemory(),
    daemonObservability(settings())
  )
  return { consul, marathon, layer }
}

describe("the callback subscription", () => {
  it.effect("subscribes exactly <scheme>://<host>:<port>/events?registration=<regid>", () =>
    Effect.gen(function*() {
      const { marathon, layer } = memory()
      yield* subscribeForever(settings({ registrationId: "blue" })).pipe(Effect.provide(layer))
      expect(marathon.subscriptions).toEqual(["http://10.1.2.3:7000/events?registration=blue"])
    }))

  it.effect("does not post again when Marathon already has the URL", () =>
    Effect.gen(function*() {
      const { marathon, layer } = memory()
      marathon.subscriptions.push("http://10.1.2.3:7000/events?registration=consular")
      yield* subscribeForever(settings()).pipe(Effect.provide(layer))
      expect(marathon.requestLog.filter((op) => op === "subscribe")).toEqual([])
      expect(marathon.subscriptions).toHaveLength(1)
    }))

  it.effect("keeps retrying with backoff until Marathon is back", () =>
    Effect.gen(function*() {
      const { marathon, layer } = memory()
      marathon.fault = { _tag: "Refuse" }
      const fiber = yield* Effect.fork(subscribeForever(settings()).pipe(Effect.provide(layer)))
      yield* TestClock.adjust("10 minutes")
      expect(marathon.subscriptions).toEqual([])
      expect(fiber.unsafePoll()).toBeNull()
      marathon.fault = undefined
      yield* TestClock.adjust("1 minute")
      yield* Fiber.join(fiber)
      expect(marathon.subscriptions).toEqual(["http://10.1.2.3:7000/events?registration=consular"])
    }))
})

describe("the periodic sync", () => {
  it.effect("runs at start, then every interval; a failing pass does not stop the next", () =>
    Effect.gen(function*() {
      const { consul, marathon, layer } = memory()
      marathon.setTask("/web", { id: "web.1", host: "127.0.0.2", ports: [1] }, false)
      const passes = () => marathon.requestLog.filter((op) => op === "apps").length
      const fiber = yield* Effect.fork(periodicSync(settings({ syncInterval: 30 })).pipe(Effect.provide(layer)))
      yield* TestClock.adjust("1 millis")
      expect(passes()).toBe(1)
      expect(consul.services("127.0.0.2").has("web.1")).toBe(true)
      marathon.fault = { _tag: "Status", status: 500 }
      yield* TestClock.adjust("30 seconds")
      expect(passes()).toBe(2)
      marathon.fault = undefined
      marathon.setTask("/web", { id: "web.2", host: "127.0.0.2", ports: [2] }, false)
      yield* TestClock.adjust("30 seconds")
      expect(passes()).toBe(3)
      expect(consul.services("127.0.0.2").has("web.2")).toBe(true)
      yield* TestClock.adjust("90 seconds")
      expect(passes()).toBe(6)
      yield* Fiber.interrupt(fiber)
      yield* TestClock.adjust("90 seconds")
      expect(passes()).toBe(6)
    }))

  it.effect("a Consul that is down at start is synced once it is back", () =>
    Effect.gen(function*() {
      const { consul, marathon, layer } = memory()
      marathon.setTask("/web", { id: "web.1", host: "127.0.0.2", ports: [1] }, false)
      consul.setFault("127.0.0.2", { _tag: "Refuse" })
      consul.setFault("127.0.0.1", { _tag: "Refuse" })
      const fiber = yield* Effect.fork(periodicSync(settings({ syncInterval: 5 })).pipe(Effect.provide(layer)))
      yield* TestClock.adjust("1 millis")
      expect(consul.services("127.0.0.2").size).toBe(0)
      consul.setFault("127.0.0.2", undefined)
      consul.setFault("127.0.0.1", undefined)
      yield* TestClock.adjust("5 seconds")
      expect(consul.services("127.0.0.2").has("web.1")).toBe(true)
      yield* Fiber.interrupt(fiber)
    }))
})

describe("the queue of passes (the schedule, the event source's resyncs, POST /sync)", () => {
  it.scoped("merged: while a pass that read Marathon runs at most one more waits; every request is served by a pass that read Marathon after it", () =>
    Effect.gen(function*() {
      const started = yield* Ref.make(0)
      const release = yield* Deferred.make<void>()
      const passes = yield* makePassQueue((readingMarathon) =>
        Effect.gen(function*() {
          yield* readingMarathon
          const pass = yield* Ref.updateAndGet(started, (n) => n + 1)
          yield* Deferred.await(release)
          return pass
        }))
      yield* Effect.forkScoped(passes.worker)
      const first = yield* Effect.fork(passes.request)
      yield* TestClock.adjust("1 millis")
      expect(yield* Ref.get(started)).toBe(1)
      // five requests while the first pass runs, past its Marathon read: one more pass, not five
      const waiting = yield* Effect.forEach([1, 2, 3, 4, 5], () => Effect.fork(passes.request))
      yield* TestClock.adjust("1 millis")
      expect(yield* Ref.get(started)).toBe(1)
      yield* Deferred.succeed(release, undefined)
      expect(yield* Fiber.join(first)).toBe(1)
      // each gets the report of the pass that served it
      expect(yield* Effect.forEach(waiting, Fiber.join)).toEqual([2, 2, 2, 2, 2])
      expect(yield* Ref.get(started)).toBe(2)
    }))

  it.scoped("a request made while the pass under way has not read Marathon yet joins that pass", () =>
    Effect.gen(function*() {
      const count = yield* Ref.make(0)
      const beforeRead = yield* Deferred.make<void>()
      const passes = yield* makePassQueue((readingMarathon) =>
        Effect.zipRight(Deferred.await(beforeRead), Effect.zipRight(readingMarathon, Ref.updateAndGet(count, (n) => n + 1))))
      yield* Effect.forkScoped(passes.worker)
      const first = yield* Effect.fork(passes.request)
      yield* TestClock.adjust("1 millis")
      const second = yield* Effect.fork(passes.request) // the pass is confirming its lock, say
      yield* TestClock.adjust("1 millis")
      yield* Deferred.succeed(beforeRead, undefined)
      expect(yield* Fiber.join(first)).toBe(1)
      expect(yield* Fiber.join(second)).toBe(1)
      expect(yield* Ref.get(count)).toBe(1)
    }))

  it.scoped("the passes run in the worker: with it gone (stepped down, stopping), no pass starts and a request fails at once with NotLeading", () =>
    Effect.gen(function*() {
      const started = yield* Ref.make(0)
      const hold = yield* Deferred.make<void>()
      const passes = yield* makePassQueue((readingMarathon) => Effect.zipRight(readingMarathon, Effect.zipRight(Ref.update(started, (n) => n + 1), Deferred.await(hold))))
      const worker = yield* Effect.fork(passes.worker)
      const served = yield* Effect.fork(passes.request)
      yield* TestClock.adjust("1 millis")
      const queued = yield* Effect.fork(passes.request)
      yield* TestClock.adjust("1 millis")
      expect(yield* Ref.get(started)).toBe(1)
      // interrupted mid-pass: the request it served and the one queued are told, not left waiting
      yield* Fiber.interrupt(worker)
      expect(yield* Effect.flip(Fiber.join(served))).toBeInstanceOf(NotLeading)
      expect(yield* Effect.flip(Fiber.join(queued))).toBeInstanceOf(NotLeading)
      expect(yield* Effect.flip(passes.request)).toBeInstanceOf(NotLeading)
      yield* TestClock.adjust("1 hour")
      expect(yield* Ref.get(started)).toBe(1)
    }))
})

describe("the stream's reconnects", () => {
  const hooks = (log: Array<string>): EventSourceHooks => ({
    connected: (source) => Effect.sync(() => log.push(`connected ${source}`)),
    disconnected: (source) => Effect.sync(() => log.push(`disconnected ${source}`)),
    resync: Effect.sync(() => log.push("resync")),
    handler: { handle: () => Effect.succeed("ignored" as const), statusUpdate: () => Effect.succeed("ignored" as const) }
  })

  it.effect("follow the one retry policy (exponential from 1 s, jittered 0.8-1.2), under the TestClock", () =>
    Effect.gen(function*() {
      const { marathon, layer } = memory()
      marathon.fault = { _tag: "Refuse" }
      const log: Array<string> = []
      const attempts = () => log.filter((line) => line === "disconnected sse").length
      const fiber = yield* Effect.fork(runEventSource(settings({ events: "sse", reconnectBase: "1 second", reconnectCap: "30 seconds" }), hooks(log)).pipe(Effect.provide(layer)))
      yield* TestClock.adjust("790 millis")
      expect(attempts()).toBe(1)
      yield* TestClock.adjust("420 millis") // 1.21 s: the first delay was at most 1.2 s; the second is at least 1.6 s
      expect(attempts()).toBe(2)
      yield* TestClock.adjust("2390 millis") // 3.6 s: at most 1.2 + 2.4; the next at least 0.8 + 1.6 + 3.2
      expect(attempts()).toBe(3)
      // capped at 30 s (jittered at most 36 s): a quarter of an hour later, one attempt at least every 36 s
      const before = attempts()
      yield* TestClock.adjust("15 minutes")
      expect(attempts() - before).toBeGreaterThanOrEqual(Math.floor(900 / 36) - 1)
      expect(attempts() - before).toBeLessThanOrEqual(Math.ceil(900 / 24) + 2)
      marathon.fault = undefined
      yield* TestClock.adjust("40 seconds")
      expect(log.filter((line) => line === "resync")).toEqual(["resync"])
      expect(log.at(-1)).toBe("connected sse")
      yield* Fiber.interrupt(fiber)
    }))
})

describe("the callback subscription, checked on every pass", () => {
  it.scoped("re-made when Marathon lost it; /ready is 503 while it cannot be checked", () =>
    Effect.gen(function*() {
      const { marathon, layer } = memory()
      const daemonSettings = settings({ events: "callback", syncInterval: 30, host: "127.0.0.1", port: 0 })
      const context = yield* Layer.build(layer)
      const readiness = Context.get(context, Readiness)
      yield* Effect.forkScoped(runDaemon(daemonSettings).pipe(Effect.provide(context)))
      const callback = "http://127.0.0.1:0/events?registration=consular"
      yield* TestClock.adjust("1 millis")
      expect(marathon.subscriptions).toEqual([callback])
      expect(yield* readiness.state).toMatchObject({ ready: true })

      marathon.subscriptions.length = 0 // a Marathon restart that dropped its subscribers
      yield* TestClock.adjust("30 seconds")
      expect(marathon.subscriptions).toEqual([callback])
      expect(yield* readiness.state).toMatchObject({ ready: true })

      marathon.fault = { _tag: "Status", status: 403 }
      yield* TestClock.adjust("30 seconds")
      expect(yield* readiness.state).toMatchObject({ ready: false, reason: "event source not connected" })
      marathon.fault = undefined
      marathon.subscriptions.length = 0
      yield* TestClock.adjust("30 seconds")
      expect(marathon.subscriptions).toEqual([callback])
      expect(yield* readiness.state).toMatchObject({ ready: true })
    }))
})
