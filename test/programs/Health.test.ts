import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Layer, TestClock } from "effect"
import type { Registration } from "../../src/domain/ConsulApi.js"
import { Consul, makeConsulMemory } from "../../src/services/Consul.js"
import { Marathon, makeMarathonMemory } from "../../src/services/Marathon.js"
import { MarathonStore } from "../../src/services/MarathonStore.js"
import { LedgerLive } from "../../src/programs/Ledger.js"
import { ConsulStore } from "../../src/services/ConsulStore.js"
import type { StoredCheck } from "../../src/services/ConsulStore.js"
import { HostResolverMemory } from "../../src/services/HostResolver.js"
import { LoggedLines, LoggerMemory } from "../../src/services/Logger.js"
import { makeEventHandler } from "../../src/programs/Events.js"
import { runEventSource } from "../../src/programs/EventSource.js"
import type { HealthSettings } from "../../src/programs/HealthBook.js"
import { repushLoop } from "../../src/programs/HealthRelay.js"
import { TopologyLive, Topology } from "../../src/programs/Topology.js"
import { syncOnce } from "../../src/programs/Sync.js"
import { makeDatacenter, syncPass } from "../support/Datacenter.js"
import type { Datacenter } from "../support/Datacenter.js"
import { serveDaemon, statusUpdate } from "../support/Daemon.js"

const ttl: HealthSettings = { ttl: "1h", ttlMillis: 3_600_000, initial: "critical" }
const notes = "Marathon's health verdict on this task, relayed by consular (registration consular)"
const ours = (app: string) => ["consular-reg-id=consular", `consular-app-id=${app}`]

const checkOf = (dc: Datacenter, agent: string, taskId: string): StoredCheck | undefined => dc.consul.checks(agent).get(`service:${taskId}`)

/** Every registration body that reaches the embedded Consul, in order. */
const recordRegistrations = (dc: Datacenter) => {
  const bodies: Array<Registration> = []
  const original = dc.consul.register.bind(dc.consul)
  dc.consul.register = (agent, registration, options) => {
    bodies.push(registration)
    original(agent, registration, options)
  }
  return bodies
}

/** Polls (bounded) until `done` holds: events over callbacks and streams land asynchronously. */
const eventually = (done: () => boolean, what: string) =>
  Effect.gen(function*() {
    for (let i = 0; i < 200; i++) {
      if (done()) return
      yield* Effect.sleep("10 millis")
    }
    expect.fail(`not reached in 2 s: ${what}`)
  })

/** An app with one HTTP health check and one running task on 127.0.0.2, healthy as Marathon last saw it. */
const healthyWeb = (dc: Datacenter) => {
  dc.marathon.putApp("/web")
  dc.marathon.setHealthChecks("/web", [{ protocol: "HTTP", path: "/health", portIndex: 0 }])
  dc.marathon.setTask("/web", { id: "web.instance-1._app.1", host: "127.0.0.2", ports: [31001] }, false)
  dc.marathon.setTaskHealth("/web", "web.instance-1._app.1", true, { emit: false })
}

describe("--health-checks ttl against the embedded Marathon and Consul", () => {
  it.scopedLive("every registration carries one TTL check, named service:<id>, with the TTL, the Notes and the reaping delay", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      const bodies = recordRegistrations(dc)
      dc.marathon.setTask("/plain", { id: "plain.1", host: "127.0.0.3", ports: [8080] }, false)
      const report = yield* syncPass(dc, { health: { ...ttl, deregisterCriticalAfter: "10m" } })
      expect(bodies).toEqual([{
        ID: "plain.1",
        Name: "plain",
        Address: "127.0.0.3",
        Port: 8080,
        Tags: ours("/plain"),
        Check: { TTL: "1h", Notes: notes, DeregisterCriticalServiceAfter: "10m" }
      }])
      // Consul's view, over HTTP: the check as /v1/agent/checks shows it, TTL in Go's format
      const listed = (yield* Effect.promise(() => fetch(`${dc.consulUrl.origin.replace("127.0.0.1", "127.0.0.3")}/v1/agent/checks`).then((r) => r.json()))) as Record<string, Record<string, unknown>>
      expect(listed["service:plain.1"]).toMatchObject({
        CheckID: "service:plain.1",
        ServiceID: "plain.1",
        Status: "passing",
        Output: "Marathon: the app has no health checks",
        Notes: notes,
        Type: "ttl",
        Definition: { TTL: "1h0m0s", DeregisterCriticalServiceAfter: "10m0s" }
      })
      expect(report.checksUpdated).toBe(1)
    }))

  it.scopedLive("a task whose app has health checks: Marathon's results decide; none yet: --initial-health", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      healthyWeb(dc)
      dc.marathon.setTask("/web", { id: "web.instance-2._app.1", host: "127.0.0.3", ports: [31002] }, false)
      dc.marathon.setTask("/web", { id: "web.instance-3._app.1", host: "127.0.0.3", ports: [31003] }, false)
      dc.marathon.setTaskHealth("/web", "web.instance-3._app.1", false, { emit: false, cause: "502 Bad Gateway" })
      yield* syncPass(dc, { health: { ...ttl, initial: "warning" } })
      expect(checkOf(dc, "127.0.0.2", "web.instance-1._app.1")).toMatchObject({ Status: "passing", Output: "Marathon: 1 health check alive" })
      expect(checkOf(dc, "127.0.0.3", "web.instance-2._app.1")).toMatchObject({ Status: "warning", Output: "Marathon: no health check result yet" })
      expect(checkOf(dc, "127.0.0.3", "web.instance-3._app.1")?.Status).toBe("critical")
      expect(checkOf(dc, "127.0.0.3", "web.instance-3._app.1")?.Output).toMatch(/^Marathon: health check failed at .*: 502 Bad Gateway$/)
      // consul-template's query: only the passing instance
      const passing = (yield* Effect.promise(() => fetch(`${dc.consulUrl.origin}/v1/health/service/web?passing`).then((r) => r.json()))) as Array<{ Service: { ID: string } }>
      expect(passing.map((entry) => entry.Service.ID)).toEqual(["web.instance-1._app.1"])
    }))

  it.scopedLive("a second pass with nothing changed writes nothing, checks included", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      healthyWeb(dc)
      dc.marathon.setTask("/other", { id: "other.1", host: "127.0.0.3", ports: [1] }, false)
      yield* syncPass(dc, { health: ttl, serviceMeta: true, purge: true })
      dc.consul.resetCounters()
      const report = yield* syncPass(dc, { health: ttl, serviceMeta: true, purge: true })
      expect(dc.consul.writes).toBe(0)
      expect(report.checksUpdated).toBe(0)
      expect(report.registered).toBe(0)
    }))

  it.scopedLive("passing -> critical -> passing through health events over callbacks (both types, and the pre-1.4 taskId form)", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      healthyWeb(dc)
      const daemon = yield* serveDaemon(dc, { health: ttl })
      yield* syncPass(dc, { health: ttl })
      const task = "web.instance-1._app.1"
      expect(checkOf(dc, "127.0.0.2", task)?.Status).toBe("passing")
      const down = yield* daemon.post({ eventType: "health_status_changed_event", timestamp: "2026-12-02T07:00:00.000Z", appId: "/web", instanceId: "web.instance-1", version: "v", alive: false })
      expect(down.status).toBe(200)
      expect(down.json).toMatchObject({ outcome: "health" })
      expect(checkOf(dc, "127.0.0.2", task)).toMatchObject({ Status: "critical", Output: "Marathon: health check failed at 2026-12-02T07:00:00.000Z" })
      const up = yield* daemon.post({ eventType: "instance_health_changed_event", timestamp: "2026-12-02T07:01:00.000Z", instanceId: "web.instance-1", runSpecId: "/web", runSpecVersion: "v", healthy: true })
      expect(up.status).toBe(200)
      expect(checkOf(dc, "127.0.0.2", task)?.Status).toBe("passing")
      // the same word again changes nothing and writes nothing
      dc.consul.resetCounters()
      const again = yield* daemon.post({ eventType: "instance_health_changed_event", timestamp: "2026-12-02T07:01:00.000Z", instanceId: "web.instance-1", runSpecId: "/web", healthy: true })
      expect(again.json).toMatchObject({ outcome: "ignored" })
      expect(dc.consul.writes).toBe(0)
      // an older Marathon names the task itself
      dc.marathon.setTask("/old", { id: "old_0-1396592784349", host: "127.0.0.3", ports: [2] }, false)
      dc.marathon.setHealthChecks("/old", [{ protocol: "TCP" }])
      yield* syncPass(dc, { health: ttl })
      expect(checkOf(dc, "127.0.0.3", "old_0-1396592784349")?.Status).toBe("critical") // no result yet: the initial status
      yield* daemon.post({ eventType: "health_status_changed_event", appId: "/old", taskId: "old_0-1396592784349", version: "v", alive: true })
      expect(checkOf(dc, "127.0.0.3", "old_0-1396592784349")?.Status).toBe("passing")
    }))

  it.scopedLive("a task registered by a RUNNING event gets its check and status at once", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.marathon.putApp("/web", { tier: "front" })
      dc.marathon.setHealthChecks("/web", [{ protocol: "HTTP" }])
      const daemon = yield* serveDaemon(dc, { health: ttl, serviceMeta: true })
      const response = yield* daemon.post(statusUpdate({ taskId: "web.instance-9._app.1", taskStatus: "TASK_RUNNING", appId: "/web", host: "127.0.0.2", ports: [5] }))
      expect(response.status).toBe(200)
      expect(dc.consul.services("127.0.0.2").get("web.instance-9._app.1")?.Meta).toEqual({
        "consular-reg-id": "consular",
        "external-source": "marathon",
        "marathon-app-id": "/web",
        "marathon-task-id": "web.instance-9._app.1",
        tier: "front"
      })
      expect(checkOf(dc, "127.0.0.2", "web.instance-9._app.1")).toMatchObject({ Status: "critical", Output: "Marathon: no health check result yet" })
      yield* daemon.post({ eventType: "health_status_changed_event", appId: "/web", instanceId: "web.instance-9", alive: true })
      expect(checkOf(dc, "127.0.0.2", "web.instance-9._app.1")?.Status).toBe("passing")
      yield* daemon.post(statusUpdate({ taskId: "web.instance-9._app.1", taskStatus: "TASK_KILLED", appId: "/web", host: "127.0.0.2" }))
      expect(dc.consul.checks("127.0.0.2").size).toBe(0)
    }))

  it.scopedLive("passing -> critical -> passing over the event stream, as the embedded Marathon emits it", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      healthyWeb(dc)
      const settings = {
        registrationId: "consular", fallback: false, fallbackTimeout: "300 millis", maxEventBytes: 1 << 20, health: ttl,
        consulUrl: dc.consulUrl, events: "sse", scheme: "http", host: "127.0.0.1", port: 7000, reconnectBase: "5 millis", reconnectCap: "50 millis"
      } as const
      const source = yield* Effect.gen(function*() {
        const handler = yield* makeEventHandler(settings)
        return yield* Effect.forkScoped(runEventSource(settings, {
          handler,
          resync: syncOnce({ ...settings, purge: false, consulUrl: dc.consulUrl }).pipe(Effect.orDie, Effect.asVoid, Effect.provide(dc.services)),
          connected: () => Effect.void,
          disconnected: () => Effect.void
        }))
      }).pipe(Effect.provide(dc.services))
      const task = "web.instance-1._app.1"
      yield* eventually(() => checkOf(dc, "127.0.0.2", task)?.Status === "passing", "the resync's check")
      dc.marathon.setTaskHealth("/web", task, false)
      yield* eventually(() => checkOf(dc, "127.0.0.2", task)?.Status === "critical", "critical from the stream")
      dc.marathon.setTaskHealth("/web", task, true)
      yield* eventually(() => checkOf(dc, "127.0.0.2", task)?.Status === "passing", "passing again from the stream")
      yield* Fiber.interrupt(source)
    }))

  it.scopedLive("a pass repairs a status an event could not land", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter({ timeout: 200 })
      healthyWeb(dc)
      const daemon = yield* serveDaemon(dc, { health: ttl })
      yield* syncPass(dc, { health: ttl })
      const task = "web.instance-1._app.1"
      dc.consul.setFault("127.0.0.2", { _tag: "Status", status: 500 })
      dc.marathon.setTaskHealth("/web", task, false, { emit: false, cause: "connection refused" })
      const lost = yield* daemon.post({ eventType: "health_status_changed_event", appId: "/web", instanceId: "web.instance-1", alive: false })
      expect(lost.status).toBe(502)
      dc.consul.setFault("127.0.0.2", undefined)
      expect(checkOf(dc, "127.0.0.2", task)?.Status).toBe("passing")
      const report = yield* syncPass(dc, { health: ttl })
      expect(report.checksUpdated).toBe(1)
      expect(checkOf(dc, "127.0.0.2", task)?.Status).toBe("critical")
      expect(checkOf(dc, "127.0.0.2", task)?.Output).toMatch(/connection refused$/)
    }))

  it.scopedLive("--health-checks none and no --service-meta: the registration is today's, byte for byte", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      const bodies = recordRegistrations(dc)
      dc.marathon.putApp("/web", { tier: "front" })
      dc.marathon.setHealthChecks("/web", [{ protocol: "HTTP" }])
      dc.marathon.setTask("/web", { id: "web.1", host: "127.0.0.2", ports: [31001] }, false)
      yield* syncPass(dc)
      expect(bodies.map((body) => JSON.stringify(body))).toEqual([
        JSON.stringify({ ID: "web.1", Name: "web", Address: "127.0.0.2", Port: 31001, Tags: ours("/web") })
      ])
      expect(dc.consul.checks("127.0.0.2").size).toBe(0)
    }))
})

describe("--health-checks ttl with --service-per-port", () => {
  it.scopedLive("each service of a task has its own check with its task's status: an event on the instance or the task reaches them all, a kill drops them all", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      const perPort = { health: ttl, servicePerPort: true }
      dc.marathon.putApp("/web")
      dc.marathon.setHealthChecks("/web", [{ protocol: "HTTP", path: "/health", portIndex: 0 }])
      dc.marathon.setTask("/web", { id: "web.instance-1._app.1", host: "127.0.0.2", ports: [31001, 31002] }, false)
      dc.marathon.setTaskHealth("/web", "web.instance-1._app.1", true, { emit: false })
      // an older Marathon's task id has no "._app.": its services' checks follow the task itself
      dc.marathon.setTask("/old", { id: "old.1", host: "127.0.0.3", ports: [41001, 41002] }, false)
      dc.marathon.setHealthChecks("/old", [{ protocol: "TCP" }])
      dc.marathon.setTaskHealth("/old", "old.1", true, { emit: false })
      const daemon = yield* serveDaemon(dc, perPort)
      yield* syncPass(dc, perPort)
      const web = ["web.instance-1._app.1", "web.instance-1._app.1:1"]
      const old = ["old.1", "old.1:1"]
      for (const id of web) expect(checkOf(dc, "127.0.0.2", id)?.Status, id).toBe("passing")
      for (const id of old) expect(checkOf(dc, "127.0.0.3", id)?.Status, id).toBe("passing")
      yield* daemon.post({ eventType: "health_status_changed_event", appId: "/web", instanceId: "web.instance-1", alive: false })
      for (const id of web) expect(checkOf(dc, "127.0.0.2", id)?.Status, id).toBe("critical")
      yield* daemon.post({ eventType: "health_status_changed_event", appId: "/old", taskId: "old.1", alive: false })
      for (const id of old) expect(checkOf(dc, "127.0.0.3", id)?.Status, id).toBe("critical")
      // a pass reads Marathon's results (their words as Output), and the next one, nothing changed, writes nothing
      dc.marathon.setTaskHealth("/web", "web.instance-1._app.1", false, { emit: false })
      dc.marathon.setTaskHealth("/old", "old.1", false, { emit: false })
      yield* syncPass(dc, perPort)
      for (const id of web) expect(checkOf(dc, "127.0.0.2", id)?.Status, id).toBe("critical")
      for (const id of old) expect(checkOf(dc, "127.0.0.3", id)?.Status, id).toBe("critical")
      dc.consul.resetCounters()
      yield* syncPass(dc, perPort)
      expect(dc.consul.writes).toBe(0)
      yield* daemon.post(statusUpdate({ taskId: "old.1", taskStatus: "TASK_KILLED", appId: "/old", host: "127.0.0.3" }))
      expect(dc.consul.services("127.0.0.3").size).toBe(0)
      expect(dc.consul.checks("127.0.0.3").size).toBe(0)
    }))
})

describe("--service-meta", () => {
  it.scopedLive("Meta exactly as specified; labels breaking Consul's rules are skipped with one warning per app version", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.marathon.putApp("/shop/cart", {
        HAPROXY_GROUP: "external",
        "traefik.enable": "true",
        "consul-weight": "3",
        "marathon-app-id": "/elsewhere",
        big: "x".repeat(513),
        "unicode_ok": "é".repeat(256)
      })
      dc.marathon.setTask("/shop/cart", { id: "shop_cart.instance-1._app.1", host: "127.0.0.2", ports: [9000] }, false)
      const lines = yield* Effect.gen(function*() {
        yield* syncPass(dc, { serviceMeta: true })
        yield* syncPass(dc, { serviceMeta: true })
        return yield* LoggedLines
      }).pipe(Effect.provide(LoggerMemory()))
      const listed = (yield* Effect.promise(() => fetch(`http://127.0.0.2:${dc.consulUrl.port}/v1/agent/services`).then((r) => r.json()))) as Record<string, { Meta: unknown; Tags: unknown }>
      expect(listed["shop_cart.instance-1._app.1"]?.Meta).toEqual({
        HAPROXY_GROUP: "external",
        "consular-reg-id": "consular",
        "external-source": "marathon",
        "marathon-app-id": "/shop/cart",
        "marathon-task-id": "shop_cart.instance-1._app.1",
        unicode_ok: "é".repeat(256)
      })
      expect(listed["shop_cart.instance-1._app.1"]?.Tags).toEqual(ours("/shop/cart"))
      const warnings = lines.filter((line) => line.includes("app labels left out of Service Meta"))
      expect(warnings).toHaveLength(1)
      for (const label of ["traefik.enable", "consul-weight", "marathon-app-id", "big"]) expect(warnings[0]).toContain(label)
      dc.marathon.setLabels("/shop/cart", { "bad key": "v" })
      const after = yield* Effect.gen(function*() {
        yield* syncPass(dc, { serviceMeta: true })
        return yield* LoggedLines
      }).pipe(Effect.provide(LoggerMemory()))
      expect(after.filter((line) => line.includes("app labels left out of Service Meta"))).toHaveLength(1) // a new version: warned again
    }))

  it.scopedLive("purge recognises ownership by Meta: a service whose tags someone edited is still ours", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.marathon.setTask("/web", { id: "web.1", host: "127.0.0.2", ports: [1] }, false)
      yield* syncPass(dc, { serviceMeta: true })
      const registered = dc.consul.services("127.0.0.2").get("web.1")!
      // someone re-registers it with their own tags; then Marathon kills the task while nobody listens
      dc.consul.register("127.0.0.2", { ID: "web.1", Name: "web", Address: "127.0.0.2", Port: 1, Tags: ["edited-by-hand"], Meta: registered.Meta! })
      dc.marathon.endTask("/web", "web.1", "TASK_KILLED", false)
      const withoutFlag = yield* syncPass(dc, { purge: true })
      expect(withoutFlag.deregistered).toBe(0)
      expect(dc.consul.services("127.0.0.2").has("web.1")).toBe(true)
      const withFlag = yield* syncPass(dc, { purge: true, serviceMeta: true })
      expect(withFlag.deregistered).toBe(1)
      expect(dc.consul.services("127.0.0.2").has("web.1")).toBe(false)
    }))

  it.scopedLive("a service of another registration id, or untagged without our Meta, is left alone", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.consul.register("127.0.0.2", { ID: "x.1", Name: "x", Address: "127.0.0.2", Tags: [], Meta: { "external-source": "marathon", "consular-reg-id": "other", "marathon-app-id": "/x" } })
      dc.consul.register("127.0.0.2", { ID: "y.1", Name: "y", Address: "127.0.0.2", Tags: [], Meta: { "external-source": "kubernetes", "consular-reg-id": "consular", "marathon-app-id": "/y" } })
      const report = yield* syncPass(dc, { purge: true, serviceMeta: true })
      expect(report.deregistered).toBe(0)
      expect([...dc.consul.services("127.0.0.2").keys()].sort()).toEqual(["x.1", "y.1"])
    }))
})

describe("the re-push timer", () => {
  it.effect("re-pushes each check before half the TTL has gone since its last push, spread, whatever the sync interval", () =>
    Effect.gen(function*() {
      const store = new ConsulStore("127.0.0.1")
      store.addAgent("127.0.0.1")
      store.addAgent("127.0.0.2")
      const settings: HealthSettings = { ttl: "40s", ttlMillis: 40_000, initial: "critical" }
      const layer = Layer.mergeAll(Layer.succeed(Consul, makeConsulMemory(store, { retries: 0 })), TopologyLive(new URL("http://127.0.0.1:8500")))
      yield* Effect.gen(function*() {
        const topology = yield* Topology
        const consul = yield* Consul
        const ids = Array.from({ length: 40 }, (_, i) => `web.${i}`)
        for (const id of ids) {
          yield* consul.register("127.0.0.2", { ID: id, Name: "web", Address: "127.0.0.2", Tags: [], Check: { TTL: "40s", Notes: "n" } })
          const tracked = topology.health.track(id, "127.0.0.2", false)
          tracked.pushed = { status: "passing", output: "Marathon: the app has no health checks", at: 0 }
          tracked.due = 0 + Math.round(40_000 * 0.25) // as if all were pushed at once, at t=0 (a cold start)
        }
        // the first round is what the cold start made due at once; what counts is the next ones
        const pushedAt = new Map<string, Array<number>>()
        const inner = makeConsulMemory(store, { retries: 0 })
        const observed = Consul.of({
          ...inner,
          updateCheck: (agent, checkId, update) =>
            Effect.flatMap(TestClock.currentTimeMillis, (now) => {
              const list = pushedAt.get(checkId) ?? []
              list.push(now)
              pushedAt.set(checkId, list)
              return inner.updateCheck(agent, checkId, update)
            })
        })
        const loop = yield* Effect.fork(repushLoop(settings).pipe(Effect.provideService(Consul, observed)))
        yield* TestClock.adjust("100 seconds")
        yield* Fiber.interrupt(loop)
        const gaps: Array<number> = []
        const secondRound: Array<number> = []
        for (const id of ids) {
          const times = pushedAt.get(`service:${id}`) ?? []
          expect(times.length).toBeGreaterThanOrEqual(5)
          secondRound.push(times[1]!)
          for (let i = 1; i < times.length; i++) gaps.push(times[i]! - times[i - 1]!)
        }
        expect(Math.max(...gaps)).toBeLessThan(20_000) // before half the TTL
        // spread, not a burst: over the window (a quarter to 45% of the TTL), tick by tick
        const perTick = new Map<number, number>()
        for (const at of secondRound) perTick.set(at, (perTick.get(at) ?? 0) + 1)
        expect(perTick.size).toBeGreaterThanOrEqual(6)
        expect(Math.max(...perTick.values())).toBeLessThanOrEqual(15)
        for (const check of store.checks("127.0.0.2").values()) expect(check.Status).toBe("passing") // the booked status, again
      }).pipe(Effect.provide(layer))
    }))
})

describe("turning the flags off again", () => {
  it.scopedLive("--health-checks none and no --service-meta after ttl and Meta: the next daemon's first pass restores today's registration", () =>
    Effect.gen(function*() {
      const before = yield* makeDatacenter()
      before.marathon.putApp("/web", { tier: "front" })
      before.marathon.setTask("/web", { id: "web.1", host: "127.0.0.2", ports: [31001] }, false)
      yield* syncPass(before, { health: ttl, serviceMeta: true })
      expect(checkOf(before, "127.0.0.2", "web.1")).toBeDefined()
      // a new process (a fresh daemon memory) on the same Consul and Marathon, with both flags off
      const after = yield* makeDatacenter()
      for (const [id, service] of before.consul.services("127.0.0.2")) {
        after.consul.register("127.0.0.2", { ID: id, Name: service.Service, Address: service.Address, Port: service.Port, Tags: service.Tags ?? [], Meta: service.Meta!, Check: { TTL: "1h", Notes: notes } })
      }
      after.marathon.putApp("/web", { tier: "front" })
      after.marathon.setTask("/web", { id: "web.1", host: "127.0.0.2", ports: [31001] }, false)
      const report = yield* syncPass(after, { sweepStaleChecks: true })
      expect(report.registered).toBe(1)
      expect(Object.fromEntries(after.consul.services("127.0.0.2"))).toEqual({
        "web.1": { ID: "web.1", Service: "web", Address: "127.0.0.2", Port: 31001, Tags: ours("/web") }
      })
      expect(after.consul.checks("127.0.0.2").size).toBe(0)
      // and once swept, an idle pass is today's: no check reads, no writes
      after.consul.resetCounters()
      yield* syncPass(after, { sweepStaleChecks: true })
      expect(after.consul.writes).toBe(0)
      expect(after.consul.log.filter((entry) => entry.operation === "agent.checks")).toEqual([])
    }))
})

describe("a new process", () => {
  it.effect("writes nothing for checks Consul already shows right, and its timer pushes each once within a fifth of the TTL, spread", () =>
    Effect.gen(function*() {
      const consul = new ConsulStore("127.0.0.1")
      consul.addAgent("127.0.0.1")
      consul.addAgent("127.0.0.2")
      const marathon = new MarathonStore()
      const ids = Array.from({ length: 20 }, (_, i) => `web.${i}`)
      for (const id of ids) marathon.setTask("/web", { id, host: "127.0.0.2", ports: [1] }, false)
      const health: HealthSettings = { ttl: "40s", ttlMillis: 40_000, initial: "critical" }
      const consulUrl = new URL("http://127.0.0.1:8500")
      const settings = { registrationId: "consular", purge: false, fallback: false, fallbackTimeout: "1 second", consulUrl, health } as const
      const process = () =>
        Layer.mergeAll(
          Layer.succeed(Consul, makeConsulMemory(consul, { retries: 0 })),
          Layer.succeed(Marathon, makeMarathonMemory(marathon, { retries: 0 })),
          LedgerLive,
          TopologyLive(consulUrl),
          HostResolverMemory()
        )
      const first = yield* syncOnce(settings).pipe(Effect.provide(process()))
      expect(first.checksUpdated).toBe(20)
      // the daemon restarts: a fresh memory, the same Consul
      consul.resetCounters()
      yield* Effect.gen(function*() {
        const second = yield* syncOnce(settings)
        expect(second.checksUpdated).toBe(0)
        expect(consul.writes).toBe(0)
        const loop = yield* Effect.fork(repushLoop(health))
        const updates = () => consul.log.filter((entry) => entry.operation === "agent.checkUpdate").length
        yield* TestClock.adjust("4 seconds")
        expect(updates()).toBeGreaterThan(0) // spread: some now, the rest later
        expect(updates()).toBeLessThan(20)
        yield* TestClock.adjust("5 seconds") // a fifth of the TTL, and a tick
        yield* Fiber.interrupt(loop)
        expect(updates()).toBe(20)
      }).pipe(Effect.provide(process()))
    }))
})
