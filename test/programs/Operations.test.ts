import { HttpRouter, HttpServerResponse } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Either, Fiber, Layer, TestClock } from "effect"
import { listen } from "../../src/embedded/Listen.js"
import { ConsulError, MarathonError } from "../../src/domain/Errors.js"
import { decodeEvent } from "../../src/programs/Events.js"
import type { EventOutcome } from "../../src/programs/Events.js"
import { observeEvent, observeSync, operationsApp, operationsRoutes, Readiness, ReadinessLive } from "../../src/programs/Operations.js"
import type { SyncCounts } from "../../src/services/Metrics.js"
import { Metrics, MetricsLive } from "../../src/services/Metrics.js"
import { parsePrometheus } from "../support/Prometheus.js"

/** without --leader-election an instance always leads, and names itself */
const leading = { leader: true, leaderAt: "10.0.0.5:7000", standingBy: false }

const services = (requireSync: boolean) => Layer.merge(MetricsLive, ReadinessLive({ requireSync, self: "10.0.0.5:7000" }))

const parse = (text: string): unknown => {
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}

/** The operations routes on a free loopback port, with a catch-all behind them as in the daemon. */
const serve = Effect.gen(function*() {
  const routes = yield* operationsApp
  const app = HttpRouter.empty.pipe(
    HttpRouter.get("/", Effect.succeed(HttpServerResponse.unsafeJson([]))),
    HttpRouter.concat(routes),
    HttpRouter.all("*", Effect.succeed(HttpServerResponse.unsafeJson({ error: "not found" }, { status: 404 })))
  )
  const port = yield* listen(app, { address: "127.0.0.1", port: 0 })
  return (path: string) =>
    Effect.promise(async () => {
      const response = await fetch(`http://127.0.0.1:${port}${path}`)
      const text = await response.text()
      return { status: response.status, contentType: response.headers.get("content-type") ?? "", text, json: parse(text) }
    })
})

const report = (counts: Partial<SyncCounts> = {}): SyncCounts => ({
  registered: 0, fallbackRegistered: 0, deregistered: 0, keysSet: 0, keysDeleted: 0, failures: [], consulReached: true, ...counts
})

const decoded = (body: object) => Either.getOrThrow(decodeEvent(JSON.stringify(body)))

const statusUpdate = (taskId: string, taskStatus: string) => ({
  eventType: "status_update_event",
  timestamp: "2026-11-25T10:00:00.000Z",
  taskId,
  taskStatus,
  appId: "/web",
  host: "127.0.0.2",
  ports: [31000]
})

const scrape = Effect.flatMap(Metrics, (metrics) => Effect.map(metrics.exposition, ({ body }) => parsePrometheus(body)))

describe("operations endpoints", () => {
  it.scopedLive("GET /health answers 200 {status: ok} from the start", () =>
    Effect.gen(function*() {
      const get = yield* serve
      const response = yield* get("/health")
      expect(response.status).toBe(200)
      expect(response.contentType).toContain("application/json")
      expect(response.json).toEqual({ status: "ok" })
    }).pipe(Effect.provide(services(true))))

  it.scopedLive("GET /ready: 503 naming what is missing until a sync succeeded and the source is connected, then 200", () =>
    Effect.gen(function*() {
      const get = yield* serve
      const readiness = yield* Readiness
      const before = yield* get("/ready")
      expect(before.status).toBe(503)
      expect(before.contentType).toContain("application/json")
      expect(before.json).toEqual({ status: "not ready", reason: "no successful sync yet; event source not connected", leader: true, leaderAt: "10.0.0.5:7000" })

      yield* readiness.syncSucceeded
      expect((yield* get("/ready")).json).toEqual({ status: "not ready", reason: "event source not connected", leader: true, leaderAt: "10.0.0.5:7000" })

      yield* readiness.eventSourceConnected(true)
      const ready = yield* get("/ready")
      expect(ready.status).toBe(200)
      expect(ready.json).toEqual({ status: "ready", leader: true, leaderAt: "10.0.0.5:7000" })

      // a lost stream is not ready again, though the first sync stays done
      yield* readiness.eventSourceConnected(false)
      const lost = yield* get("/ready")
      expect(lost.status).toBe(503)
      expect(lost.json).toEqual({ status: "not ready", reason: "event source not connected", leader: true, leaderAt: "10.0.0.5:7000" })
    }).pipe(Effect.provide(services(true))))

  it.scopedLive("GET /ready: a connected source without a successful sync is not ready", () =>
    Effect.gen(function*() {
      const get = yield* serve
      yield* (yield* Readiness).eventSourceConnected(true)
      const response = yield* get("/ready")
      expect(response.status).toBe(503)
      expect(response.json).toEqual({ status: "not ready", reason: "no successful sync yet", leader: true, leaderAt: "10.0.0.5:7000" })
    }).pipe(Effect.provide(services(true))))

  it.scopedLive("GET /ready with requireSync false (sync interval 0): the event source alone decides", () =>
    Effect.gen(function*() {
      const get = yield* serve
      const readiness = yield* Readiness
      const before = yield* get("/ready")
      expect(before.status).toBe(503)
      expect(before.json).toEqual({ status: "not ready", reason: "event source not connected", leader: true, leaderAt: "10.0.0.5:7000" })
      yield* readiness.eventSourceConnected(true)
      const ready = yield* get("/ready")
      expect(ready.status).toBe(200)
      expect(ready.json).toEqual({ status: "ready", leader: true, leaderAt: "10.0.0.5:7000" })
    }).pipe(Effect.provide(services(false))))

  it.scopedLive("the routes concat with others: the rest of the app and its catch-all still answer", () =>
    Effect.gen(function*() {
      const get = yield* serve
      expect((yield* get("/")).json).toEqual([])
      const missing = yield* get("/nope")
      expect(missing.status).toBe(404)
      expect(missing.json).toEqual({ error: "not found" })
    }).pipe(Effect.provide(services(true))))

  it.scopedLive("GET /metrics: Prometheus text with prom-client's content type, counters exact after known passes and events", () =>
    Effect.gen(function*() {
      const get = yield* serve
      const metrics = yield* Metrics
      const ok = observeSync(Effect.succeed(report({ registered: 2, fallbackRegistered: 1, deregistered: 1, keysSet: 3, keysDeleted: 2, failures: [{ scope: "agent 127.0.0.3" }] })))
      yield* ok
      yield* Effect.either(observeSync(Effect.fail(new MarathonError({ operation: "list apps", reason: "Timeout", detail: "no answer" }))))
      yield* ok
      const running = decoded(statusUpdate("web.1", "TASK_RUNNING"))
      const killed = decoded(statusUpdate("web.1", "TASK_KILLED"))
      const staging = decoded(statusUpdate("web.2", "TASK_STAGING"))
      const deployment = decoded({ eventType: "deployment_success" })
      yield* observeEvent(running, Effect.succeed<EventOutcome>("registered"))
      yield* observeEvent(killed, Effect.succeed<EventOutcome>("deregistered"))
      yield* observeEvent(staging, Effect.succeed<EventOutcome>("ignored"))
      yield* observeEvent(deployment, Effect.succeed<EventOutcome>("ignored"))
      yield* Effect.either(observeEvent(running, Effect.fail(new ConsulError({ operation: "register", reason: "Transport", detail: "refused", agent: "127.0.0.2" }))))
      yield* metrics.eventSourceConnected("sse", true)
      yield* metrics.eventSourceReconnected("sse")

      const response = yield* get("/metrics")
      expect(response.status).toBe(200)
      expect(response.contentType).toBe("text/plain; version=0.0.4; charset=utf-8")
      const m = parsePrometheus(response.text)
      expect(m.value("consular_sync_passes_total", { outcome: "ok" })).toBe(2)
      expect(m.value("consular_sync_passes_total", { outcome: "failed" })).toBe(1)
      expect(m.value("consular_sync_duration_seconds_count")).toBe(3)
      expect(m.value("consular_last_successful_sync_timestamp_seconds")).toBeGreaterThan(Date.now() / 1000 - 60)
      expect(m.value("consular_registrations_total")).toBe(2 * 3 + 1) // two passes of 2 + 1 fallback, one event
      expect(m.value("consular_deregistrations_total")).toBe(2 * 1 + 1)
      expect(m.value("consular_kv_writes_total")).toBe(6)
      expect(m.value("consular_kv_deletes_total")).toBe(4)
      expect(m.value("consular_upstream_failures_total", { upstream: "consul", agent: "127.0.0.3" })).toBe(2)
      expect(m.value("consular_upstream_failures_total", { upstream: "consul", agent: "127.0.0.2" })).toBe(1)
      expect(m.value("consular_upstream_failures_total", { upstream: "marathon", agent: "" })).toBe(1)
      expect(m.series("consular_upstream_failures_total")).toHaveLength(3)
      expect(m.value("consular_events_total", { event_type: "status_update_event", task_state: "TASK_RUNNING" })).toBe(2)
      expect(m.value("consular_events_total", { event_type: "status_update_event", task_state: "TASK_KILLED" })).toBe(1)
      expect(m.value("consular_events_total", { event_type: "status_update_event", task_state: "TASK_STAGING" })).toBe(1)
      expect(m.value("consular_events_total", { event_type: "deployment_success", task_state: "" })).toBe(1)
      expect(m.series("consular_events_total")).toHaveLength(4)
      expect(m.value("consular_event_duration_seconds_count")).toBe(5)
      expect(m.value("consular_event_source_connected", { source: "sse" })).toBe(1)
      expect(m.value("consular_event_source_reconnects_total", { source: "sse" })).toBe(1)
      // the readiness saw the successful passes through observeSync
      expect((yield* get("/ready")).json).toEqual({ status: "not ready", reason: "event source not connected", leader: true, leaderAt: "10.0.0.5:7000" })
    }).pipe(Effect.provide(services(true))))
})

describe("observeSync and observeEvent", () => {
  it.effect("durations come from Effect's Clock: a pass that takes 2 s observes 2 s, an event that takes 30 ms, 0.03 s", () =>
    Effect.gen(function*() {
      // the TestClock starts at 0: near today's time its nanoseconds (millis * 1e6, a float) lose the last digits
      const event = decoded({ eventType: "deployment_info" })
      yield* observeEvent(event, Effect.as(TestClock.adjust("30 millis"), "ignored" as const))
      yield* observeSync(Effect.as(TestClock.adjust("2 seconds"), report()))
      const m = yield* scrape
      expect(m.value("consular_event_duration_seconds_sum")).toBe(0.03)
      expect(m.value("consular_sync_duration_seconds_sum")).toBe(2)
      expect(m.value("consular_sync_duration_seconds_bucket", { le: "1" })).toBe(0)
      expect(m.value("consular_sync_duration_seconds_bucket", { le: "2.5" })).toBe(1)
      expect(m.value("consular_last_successful_sync_timestamp_seconds")).toBe(2.03)
    }).pipe(Effect.provide(services(true))))

  it.effect("a failed pass does not make the daemon ready for sync; a later success does", () =>
    Effect.gen(function*() {
      const readiness = yield* Readiness
      yield* readiness.eventSourceConnected(true)
      const failed = yield* Effect.flip(observeSync(Effect.fail(new MarathonError({ operation: "list apps", reason: "Status", status: 500, detail: "boom" }))))
      expect(failed._tag).toBe("MarathonError") // the error goes on to the caller unchanged
      expect(yield* readiness.state).toEqual({ ready: false, reason: "no successful sync yet", role: leading })
      // Marathon read, but no Consul reached: the pass synced nothing
      yield* observeSync(Effect.succeed(report({ consulReached: false, failures: [{ scope: "kv" }, { scope: "agent 127.0.0.2" }] })))
      expect(yield* readiness.state).toEqual({ ready: false, reason: "no successful sync yet", role: leading })
      yield* observeSync(Effect.succeed(report()))
      expect(yield* readiness.state).toEqual({ ready: true, role: leading })
    }).pipe(Effect.provide(services(true))))

  it.effect("an interrupted pass or event (shutdown) records nothing", () =>
    Effect.gen(function*() {
      const started = yield* Deferred.make<void>()
      const pass = yield* Effect.fork(observeSync(Effect.zipRight(Deferred.succeed(started, undefined), Effect.never)))
      yield* Deferred.await(started)
      yield* Fiber.interrupt(pass)
      const event = yield* Effect.fork(observeEvent(decoded({ eventType: "deployment_info" }), Effect.never))
      yield* Effect.yieldNow()
      yield* Fiber.interrupt(event)
      const m = yield* scrape
      expect(m.value("consular_sync_passes_total", { outcome: "ok" })).toBe(0)
      expect(m.value("consular_sync_passes_total", { outcome: "failed" })).toBe(0)
      expect(m.value("consular_sync_duration_seconds_count")).toBe(0)
      expect(m.series("consular_events_total")).toEqual([])
      expect(yield* (yield* Readiness).state).toEqual({ ready: false, reason: "no successful sync yet; event source not connected", role: leading })
    }).pipe(Effect.provide(services(true))))

  it.effect("a failure that is not an upstream's counts the pass as failed but no upstream", () =>
    Effect.gen(function*() {
      yield* Effect.either(observeSync(Effect.fail("not an upstream error")))
      const m = yield* scrape
      expect(m.value("consular_sync_passes_total", { outcome: "failed" })).toBe(1)
      expect(m.series("consular_upstream_failures_total")).toEqual([])
    }).pipe(Effect.provide(services(true))))

  it.effect("operationsRoutes can also be built from the services directly", () =>
    Effect.gen(function*() {
      const router = operationsRoutes(yield* Readiness, yield* Metrics)
      const paths = router.routes.pipe((routes) => [...routes].map((route) => `${route.method} ${route.path}`))
      expect(paths).toEqual(["GET /health", "GET /ready", "GET /metrics"])
    }).pipe(Effect.provide(services(true))))
})
