import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Layer, TestClock } from "effect"
import { Consul, makeConsulMemory } from "../../src/services/Consul.js"
import { ConsulStore } from "../../src/services/ConsulStore.js"
import { Marathon, makeMarathonMemory } from "../../src/services/Marathon.js"
import { MarathonStore } from "../../src/services/MarathonStore.js"
import { daemonObservability, periodicSync } from "../../src/programs/Daemon.js"
import { subscribeForever } from "../../src/programs/EventSource.js"
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
