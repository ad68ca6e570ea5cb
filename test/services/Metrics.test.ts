import { describe, expect, it } from "@effect/vitest"
import { Effect, TestClock } from "effect"
import { ConsulError, MarathonError } from "../../src/domain/Errors.js"
import { failureLabels, Metrics, MetricsLive } from "../../src/services/Metrics.js"
import type { SyncCounts } from "../../src/services/Metrics.js"
import { parsePrometheus } from "../support/Prometheus.js"

const scrape = Effect.gen(function*() {
  const { contentType, body } = yield* (yield* Metrics).exposition
  return { contentType, exposition: parsePrometheus(body) }
})

const ours = {
  consular_sync_passes_total: "counter",
  consular_sync_duration_seconds: "histogram",
  consular_last_successful_sync_timestamp_seconds: "gauge",
  consular_registrations_total: "counter",
  consular_deregistrations_total: "counter",
  consular_kv_writes_total: "counter",
  consular_kv_deletes_total: "counter",
  consular_upstream_failures_total: "counter",
  consular_events_total: "counter",
  consular_event_duration_seconds: "histogram",
  consular_event_source_connected: "gauge",
  consular_event_source_reconnects_total: "counter",
  consular_events_skipped_total: "counter",
  consular_sync_skipped_tasks: "gauge",
  consular_leader: "gauge",
  consular_leader_changes_total: "counter",
  consular_purge_refused_total: "counter"
} as const

const emptyReport: SyncCounts = { registered: 0, fallbackRegistered: 0, deregistered: 0, keysSet: 0, keysDeleted: 0, failures: [], consulReached: true }

describe("Metrics", () => {
  it.effect("exposes our seventeen metrics, each with HELP and TYPE, and the process metrics, in Prometheus text", () =>
    Effect.gen(function*() {
      const { contentType, exposition } = yield* scrape
      expect(contentType).toBe("text/plain; version=0.0.4; charset=utf-8")
      for (const [name, type] of Object.entries(ours)) {
        expect(exposition.types.get(name), name).toBe(type)
        expect(exposition.help.get(name), name).not.toBe("")
      }
      // nothing else carries our prefix: a misspelt name would show here
      expect([...exposition.types.keys()].filter((name) => name.startsWith("consular_")).sort()).toEqual(Object.keys(ours).sort())
      // prom-client's default process metrics keep their standard names
      expect(exposition.types.get("process_cpu_user_seconds_total")).toBe("counter")
      expect(exposition.types.get("process_start_time_seconds")).toBe("gauge")
      expect(exposition.types.get("nodejs_heap_size_total_bytes")).toBe("gauge")
      expect(exposition.types.get("nodejs_eventloop_lag_seconds")).toBe("gauge")
      expect(exposition.value("process_start_time_seconds")).toBeGreaterThan(0)
    }).pipe(Effect.provide(MetricsLive)))

  it.effect("skipped events are counted by reason only (no host label), and a pass's skipped tasks are a gauge", () =>
    Effect.gen(function*() {
      const metrics = yield* Metrics
      expect((yield* scrape).exposition.value("consular_events_skipped_total", { reason: "unknown_host" })).toBe(0)
      expect((yield* scrape).exposition.value("consular_events_skipped_total", { reason: "name_clash" })).toBe(0)
      yield* metrics.eventSkipped("unknown_host")
      yield* metrics.eventSkipped("unknown_host")
      yield* metrics.eventSkipped("name_clash")
      yield* metrics.syncSucceeded({ ...emptyReport, skipped: [{}, {}, {}] }, 1)
      const { exposition } = yield* scrape
      expect(exposition.series("consular_events_skipped_total")).toHaveLength(2)
      expect(exposition.value("consular_events_skipped_total", { reason: "unknown_host" })).toBe(2)
      expect(exposition.value("consular_events_skipped_total", { reason: "name_clash" })).toBe(1)
      expect(exposition.value("consular_sync_skipped_tasks")).toBe(3)
      yield* metrics.syncSucceeded(emptyReport, 1)
      expect((yield* scrape).exposition.value("consular_sync_skipped_tasks")).toBe(0)
    }).pipe(Effect.provide(MetricsLive)))

  it.effect("before anything happens: the series alerts rely on exist at zero, and no event series exist", () =>
    Effect.gen(function*() {
      const { exposition } = yield* scrape
      expect(exposition.value("consular_sync_passes_total", { outcome: "ok" })).toBe(0)
      expect(exposition.value("consular_sync_passes_total", { outcome: "failed" })).toBe(0)
      expect(exposition.value("consular_last_successful_sync_timestamp_seconds")).toBe(0)
      expect(exposition.value("consular_sync_duration_seconds_count")).toBe(0)
      expect(exposition.value("consular_registrations_total")).toBe(0)
      expect(exposition.value("consular_deregistrations_total")).toBe(0)
      expect(exposition.value("consular_kv_writes_total")).toBe(0)
      expect(exposition.value("consular_kv_deletes_total")).toBe(0)
      // without --leader-election an instance always leads; the election sets the gauge to 0 when it starts
      expect(exposition.value("consular_leader")).toBe(1)
      expect(exposition.value("consular_leader_changes_total")).toBe(0)
      for (const source of ["callback", "sse"]) {
        expect(exposition.value("consular_event_source_connected", { source })).toBe(0)
        expect(exposition.value("consular_event_source_reconnects_total", { source })).toBe(0)
      }
      expect(exposition.series("consular_events_total")).toEqual([])
      expect(exposition.series("consular_upstream_failures_total")).toEqual([])
    }).pipe(Effect.provide(MetricsLive)))

  it.effect("a known sequence of passes, failures, events and source changes gives exact values", () =>
    Effect.gen(function*() {
      const metrics = yield* Metrics
      yield* TestClock.setTime(1_700_000_000_000)
      yield* metrics.syncSucceeded({
        consulReached: true,
        registered: 3,
        fallbackRegistered: 1,
        deregistered: 2,
        keysSet: 5,
        keysDeleted: 1,
        failures: [{ scope: "agent 127.0.0.2" }, { scope: "agent 127.0.0.1 (fallback)" }, { scope: "kv" }, { scope: "catalog" }, { scope: "agent 127.0.0.2" }]
      }, 0.3)
      yield* TestClock.adjust("60 seconds")
      yield* metrics.syncFailed(12, new MarathonError({ operation: "list apps", reason: "Transport", detail: "connection refused" }))
      yield* TestClock.adjust("30 seconds")
      yield* metrics.syncSucceeded(emptyReport, 0.05)
      yield* metrics.registered()
      yield* metrics.deregistered(2)
      yield* metrics.kvWritten(1, 0)
      yield* metrics.upstreamError(new ConsulError({ operation: "register", reason: "Timeout", detail: "no answer", agent: "127.0.0.3" }))
      yield* metrics.upstreamFailure("marathon")
      yield* metrics.event("status_update_event", "TASK_RUNNING", 0.002)
      yield* metrics.event("status_update_event", "TASK_RUNNING", 0.002)
      yield* metrics.event("status_update_event", "TASK_KILLED", 0.02)
      yield* metrics.event("status_update_event", "TASK_NOT_A_STATE", 0.5)
      yield* metrics.event("deployment_success", undefined, 0.0005)
      yield* metrics.event("my_own_event", undefined, 3)
      yield* metrics.eventSourceConnected("callback", true)
      yield* metrics.eventSourceConnected("callback", false)
      yield* metrics.eventSourceConnected("sse", true)
      yield* metrics.eventSourceReconnected("sse")
      yield* metrics.eventSourceReconnected("sse")

      const { exposition: m } = yield* scrape
      expect(m.value("consular_sync_passes_total", { outcome: "ok" })).toBe(2)
      expect(m.value("consular_sync_passes_total", { outcome: "failed" })).toBe(1)
      expect(m.value("consular_sync_duration_seconds_count")).toBe(3)
      expect(m.value("consular_sync_duration_seconds_sum")).toBeCloseTo(12.35, 9)
      expect(m.value("consular_sync_duration_seconds_bucket", { le: "0.05" })).toBe(1)
      expect(m.value("consular_sync_duration_seconds_bucket", { le: "0.25" })).toBe(1)
      expect(m.value("consular_sync_duration_seconds_bucket", { le: "0.5" })).toBe(2)
      expect(m.value("consular_sync_duration_seconds_bucket", { le: "10" })).toBe(2)
      expect(m.value("consular_sync_duration_seconds_bucket", { le: "30" })).toBe(3)
      expect(m.value("consular_sync_duration_seconds_bucket", { le: "+Inf" })).toBe(3)
      // the time of the last pass that completed, by Effect's Clock: not the failed one in between
      expect(m.value("consular_last_successful_sync_timestamp_seconds")).toBe(1_700_000_090)
      expect(m.value("consular_registrations_total")).toBe(5) // 3 + 1 on the fallback agent + 1
      expect(m.value("consular_deregistrations_total")).toBe(4)
      expect(m.value("consular_kv_writes_total")).toBe(6)
      expect(m.value("consular_kv_deletes_total")).toBe(1)
      expect(m.series("consular_upstream_failures_total")).toHaveLength(5)
      expect(m.value("consular_upstream_failures_total", { upstream: "consul", agent: "127.0.0.2" })).toBe(2)
      expect(m.value("consular_upstream_failures_total", { upstream: "consul", agent: "127.0.0.1" })).toBe(1)
      expect(m.value("consular_upstream_failures_total", { upstream: "consul", agent: "127.0.0.3" })).toBe(1)
      expect(m.value("consular_upstream_failures_total", { upstream: "consul", agent: "" })).toBe(2) // kv, catalog
      expect(m.value("consular_upstream_failures_total", { upstream: "marathon", agent: "" })).toBe(2)
      expect(m.series("consular_events_total")).toHaveLength(5)
      expect(m.value("consular_events_total", { event_type: "status_update_event", task_state: "TASK_RUNNING" })).toBe(2)
      expect(m.value("consular_events_total", { event_type: "status_update_event", task_state: "TASK_KILLED" })).toBe(1)
      expect(m.value("consular_events_total", { event_type: "status_update_event", task_state: "unknown" })).toBe(1)
      expect(m.value("consular_events_total", { event_type: "deployment_success", task_state: "" })).toBe(1)
      expect(m.value("consular_events_total", { event_type: "unknown", task_state: "" })).toBe(1)
      expect(m.value("consular_event_duration_seconds_count")).toBe(6)
      expect(m.value("consular_event_duration_seconds_sum")).toBeCloseTo(3.5245, 9)
      expect(m.value("consular_event_duration_seconds_bucket", { le: "0.001" })).toBe(1)
      expect(m.value("consular_event_duration_seconds_bucket", { le: "0.005" })).toBe(3)
      expect(m.value("consular_event_duration_seconds_bucket", { le: "0.025" })).toBe(4)
      expect(m.value("consular_event_duration_seconds_bucket", { le: "0.5" })).toBe(5)
      expect(m.value("consular_event_duration_seconds_bucket", { le: "2.5" })).toBe(5)
      expect(m.value("consular_event_duration_seconds_bucket", { le: "5" })).toBe(6)
      expect(m.value("consular_event_source_connected", { source: "callback" })).toBe(0)
      expect(m.value("consular_event_source_connected", { source: "sse" })).toBe(1)
      expect(m.value("consular_event_source_reconnects_total", { source: "sse" })).toBe(2)
      expect(m.value("consular_event_source_reconnects_total", { source: "callback" })).toBe(0)
    }).pipe(Effect.provide(MetricsLive)))

  it.effect("each layer has a registry of its own: what one instance counted, the next does not see", () =>
    Effect.gen(function*() {
      const first = yield* Effect.provide(
        Effect.zipRight(Effect.flatMap(Metrics, (m) => m.registered(7)), scrape),
        MetricsLive
      )
      const second = yield* Effect.provide(scrape, MetricsLive)
      expect(first.exposition.value("consular_registrations_total")).toBe(7)
      expect(second.exposition.value("consular_registrations_total")).toBe(0)
    }))

  it("failureLabels reads upstream and agent from a sync failure's scope", () => {
    expect(failureLabels("agent 127.0.0.2")).toEqual({ upstream: "consul", agent: "127.0.0.2" })
    expect(failureLabels("agent 127.0.0.1 (fallback)")).toEqual({ upstream: "consul", agent: "127.0.0.1" })
    expect(failureLabels("agent ::1")).toEqual({ upstream: "consul", agent: "::1" })
    expect(failureLabels("kv")).toEqual({ upstream: "consul", agent: "" })
    expect(failureLabels("catalog")).toEqual({ upstream: "consul", agent: "" })
    expect(failureLabels("marathon")).toEqual({ upstream: "marathon", agent: "" })
  })
})

describe("parsePrometheus (test support)", () => {
  it("reads HELP, TYPE, escaped label values, histogram suffixes and special values", () => {
    const m = parsePrometheus([
      "# HELP a_total Things \\\\ counted",
      "# TYPE a_total counter",
      "a_total{path=\"/a\\\"b\\\\c\\nd\",code=\"200\"} 3",
      "# a free comment",
      "# TYPE h histogram",
      "h_bucket{le=\"+Inf\"} 2",
      "h_sum 0.5",
      "h_count 2",
      "# TYPE g gauge",
      "g NaN",
      "g{x=\"1\"} -Inf 1700000000000"
    ].join("\n"))
    expect(m.help.get("a_total")).toBe("Things \\ counted")
    expect(m.value("a_total", { path: "/a\"b\\c\nd", code: "200" })).toBe(3)
    expect(m.value("a_total", { code: "200" })).toBeUndefined()
    expect(m.value("h_bucket", { le: "+Inf" })).toBe(2)
    expect(m.value("h_count")).toBe(2)
    expect(m.value("g")).toBeNaN()
    expect(m.value("g", { x: "1" })).toBe(-Infinity)
  })

  it("refuses what Prometheus would not read", () => {
    expect(() => parsePrometheus("x 1")).toThrow("sample without a TYPE")
    expect(() => parsePrometheus("# TYPE x counter\nx{a=1} 1")).toThrow("unreadable labels")
    expect(() => parsePrometheus("# TYPE x counter\nx one")).toThrow("not a sample value")
    expect(() => parsePrometheus("# TYPE x counter\n# TYPE x gauge")).toThrow("bad or repeated TYPE")
    expect(() => parsePrometheus("# TYPE x counter\nx{a=\"1\",a=\"2\"} 1")).toThrow("label a twice")
  })
})
