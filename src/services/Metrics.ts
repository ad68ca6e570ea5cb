import { Clock, Context, Effect, Layer } from "effect"
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client"
import type { UpstreamError } from "../domain/Errors.js"
import { KnownEventType, TaskState } from "../domain/MarathonApi.js"

/**
 * What consular counts, exposed in Prometheus text format on `GET /metrics`. Every label takes its values from
 * a bounded set (outcomes, upstreams, Marathon's event types and task states, the cluster's hosts), so that a
 * stray event type or task id can never grow the series without end.
 */

export type Upstream = "consul" | "marathon"
export type EventSource = "callback" | "sse"
/** why an event was answered "skipped": its host is no known Consul agent, or its app's name clashes */
export type SkipReason = "unknown_host" | "name_clash"

/**
 * The counts of a sync pass that metrics need. `SyncReport` (programs/Sync.ts) has this shape; it is restated
 * here because services never import programs.
 */
export interface SyncCounts {
  readonly registered: number
  readonly fallbackRegistered: number
  readonly deregistered: number
  readonly keysSet: number
  readonly keysDeleted: number
  /** scope as Sync.ts writes it: "agent 127.0.0.2", "agent 127.0.0.1 (fallback)", "kv", "catalog", "marathon" */
  readonly failures: ReadonlyArray<{ readonly scope: string }>
  /** Consul was there: KV read and at least one agent read (a pass without that synced nothing) */
  readonly consulReached: boolean
  /** running tasks the pass left out: their host is no known Consul agent */
  readonly skipped?: ReadonlyArray<unknown> | undefined
  /** `--max-purge`: the purge the pass skipped, over the limit */
  readonly purgeRefused?: unknown
}

export interface MetricsService {
  /**
   * A pass that returned its report, per-agent or per-key failures included (those are counted by upstream):
   * outcome "ok", its duration, the last successful sync time (now, by Effect's Clock) and `addReport(report)`.
   */
  readonly syncSucceeded: (report: SyncCounts, seconds: number) => Effect.Effect<void>
  /** A pass that failed as a whole (Marathon unreadable): outcome "failed", its duration, and the error's upstream. */
  readonly syncFailed: (seconds: number, error?: UpstreamError) => Effect.Effect<void>
  /** Registrations (fallback ones included), deregistrations, KV writes and deletes, failures and a refused purge of a report. */
  readonly addReport: (report: SyncCounts) => Effect.Effect<void>
  readonly registered: (count?: number) => Effect.Effect<void>
  readonly deregistered: (count?: number) => Effect.Effect<void>
  readonly kvWritten: (sets: number, deletes: number) => Effect.Effect<void>
  /** `agent` is the agent's host; leave it out for Marathon and for KV and catalog calls to the main Consul. */
  readonly upstreamFailure: (upstream: Upstream, agent?: string) => Effect.Effect<void>
  /** `upstreamFailure` with the labels read from the error (a ConsulError's `agent`). */
  readonly upstreamError: (error: UpstreamError) => Effect.Effect<void>
  /**
   * One event handled (or refused) in `seconds`. A type outside Marathon's known list is counted as "unknown";
   * `taskState` is a status update's state (an unknown one: "unknown"), undefined (counted as "") otherwise.
   */
  readonly event: (eventType: string, taskState: string | undefined, seconds: number) => Effect.Effect<void>
  /** An event answered "skipped" (nothing sent to Consul); no host label, so unknown hosts add no series. */
  readonly eventSkipped: (reason: SkipReason) => Effect.Effect<void>
  /** Sets the gauge of `source` to 1 or 0. */
  readonly eventSourceConnected: (source: EventSource, connected: boolean) => Effect.Effect<void>
  readonly eventSourceReconnected: (source: EventSource) => Effect.Effect<void>
  /** Sets `consular_leader`: 1 while this instance leads (always, without election), 0 while it stands by. */
  readonly leader: (leading: boolean) => Effect.Effect<void>
  /** This instance became leader or stepped down. */
  readonly leaderChanged: Effect.Effect<void>
  /** The Prometheus text of every metric, ours and the process's. */
  readonly exposition: Effect.Effect<{ readonly contentType: string; readonly body: string }>
}

export class Metrics extends Context.Tag("consular/Metrics")<Metrics, MetricsService>() {}

// sets of the literals, not Schema.is: asked on every event, where a parse of a literal union shows in profiles
const knownEventTypes: ReadonlySet<string> = new Set(KnownEventType.literals)
const taskStates: ReadonlySet<string> = new Set(TaskState.literals)

/** Upstream and agent of a report's failure, from its scope (Sync.ts names the agent in it). */
export const failureLabels = (scope: string): { readonly upstream: Upstream; readonly agent: string } => {
  if (scope === "marathon") return { upstream: "marathon", agent: "" }
  const agent = /^agent (\S+)/.exec(scope)
  return { upstream: "consul", agent: agent?.[1] ?? "" }
}

// passes take seconds (Marathon listing, every agent read); event handling takes milliseconds (a few requests)
const syncBuckets = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]
const eventBuckets = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

/** Metrics over a registry of their own (never prom-client's global one), so that each instance starts at zero. */
export const makeMetrics = (): MetricsService => {
  const registry = new Registry()
  const registers = [registry]
  collectDefaultMetrics({ register: registry })

  const syncPasses = new Counter({
    name: "consular_sync_passes_total",
    help: "Sync passes by outcome: ok (the pass completed, possibly with some agents or keys failing) or failed",
    labelNames: ["outcome"],
    registers
  })
  const syncDuration = new Histogram({
    name: "consular_sync_duration_seconds",
    help: "Duration of sync passes, both outcomes",
    buckets: syncBuckets,
    registers
  })
  const lastSuccess = new Gauge({
    name: "consular_last_successful_sync_timestamp_seconds",
    help: "Unix time at which the last sync pass completed; 0 before the first",
    registers
  })
  const registrations = new Counter({ name: "consular_registrations_total", help: "Services registered in Consul, by sync passes and events", registers })
  const deregistrations = new Counter({ name: "consular_deregistrations_total", help: "Services deregistered from Consul, by sync passes and events", registers })
  const kvWrites = new Counter({ name: "consular_kv_writes_total", help: "Consul KV keys written", registers })
  const kvDeletes = new Counter({ name: "consular_kv_deletes_total", help: "Consul KV deletes (single keys and trees)", registers })
  const upstreamFailures = new Counter({
    name: "consular_upstream_failures_total",
    help: "Failed requests to Consul or Marathon, after retries; agent is the Consul agent's host (empty for Marathon, KV and catalog)",
    labelNames: ["upstream", "agent"],
    registers
  })
  const events = new Counter({
    name: "consular_events_total",
    help: "Marathon events received, by type (unknown types as \"unknown\") and task state (empty for non-status events)",
    labelNames: ["event_type", "task_state"],
    registers
  })
  const eventDuration = new Histogram({
    name: "consular_event_duration_seconds",
    help: "Time to handle one Marathon event",
    buckets: eventBuckets,
    registers
  })
  const eventsSkipped = new Counter({
    name: "consular_events_skipped_total",
    help: "Events answered \"skipped\" without a Consul write: the task host is no known Consul agent (unknown_host), or the app's Consul name clashes (name_clash)",
    labelNames: ["reason"],
    registers
  })
  const syncSkipped = new Gauge({
    name: "consular_sync_skipped_tasks",
    help: "Running tasks the last completed sync pass left out because their host is no known Consul agent",
    registers
  })
  const sourceConnected = new Gauge({
    name: "consular_event_source_connected",
    help: "1 while the event source (callback subscription or SSE stream) is connected",
    labelNames: ["source"],
    registers
  })
  const sourceReconnects = new Counter({
    name: "consular_event_source_reconnects_total",
    help: "Reconnections of the event source",
    labelNames: ["source"],
    registers
  })

  const purgeRefusals = new Counter({
    name: "consular_purge_refused_total",
    help: "Sync passes whose purge was skipped whole because it was over --max-purge (services or keys)",
    registers
  })

  const leader = new Gauge({
    name: "consular_leader",
    help: "1 while this instance leads (syncs, purges and applies events); always 1 without --leader-election",
    registers
  })
  const leaderChanges = new Counter({
    name: "consular_leader_changes_total",
    help: "Times this instance became leader or stepped down",
    registers
  })

  // series that exist from the start: a rate() or an alert on them needs a 0 before the first increment
  syncPasses.inc({ outcome: "ok" }, 0)
  syncPasses.inc({ outcome: "failed" }, 0)
  lastSuccess.set(0)
  syncSkipped.set(0)
  for (const reason of ["unknown_host", "name_clash"] as const) eventsSkipped.inc({ reason }, 0)
  leader.set(1)
  leaderChanges.inc(0)
  purgeRefusals.inc(0)
  for (const source of ["callback", "sse"] as const) {
    sourceConnected.set({ source }, 0)
    sourceReconnects.inc({ source }, 0)
  }

  const upstreamFailure = (upstream: Upstream, agent?: string) =>
    Effect.sync(() => upstreamFailures.inc({ upstream, agent: agent ?? "" }))

  const upstreamError = (error: UpstreamError) =>
    error._tag === "ConsulError" ? upstreamFailure("consul", error.agent) : upstreamFailure("marathon")

  const addReport = (report: SyncCounts) =>
    Effect.sync(() => {
      registrations.inc(report.registered + report.fallbackRegistered)
      deregistrations.inc(report.deregistered)
      kvWrites.inc(report.keysSet)
      kvDeletes.inc(report.keysDeleted)
      for (const failure of report.failures) upstreamFailures.inc(failureLabels(failure.scope))
      if (report.purgeRefused !== undefined) purgeRefusals.inc()
    })

  const syncSucceeded = (report: SyncCounts, seconds: number) =>
    Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      syncPasses.inc({ outcome: "ok" })
      syncDuration.observe(seconds)
      lastSuccess.set(now / 1000)
      syncSkipped.set(report.skipped?.length ?? 0)
      yield* addReport(report)
    })

  const syncFailed = (seconds: number, error?: UpstreamError) =>
    Effect.suspend(() => {
      syncPasses.inc({ outcome: "failed" })
      syncDuration.observe(seconds)
      return error === undefined ? Effect.void : upstreamError(error)
    })

  const event = (eventType: string, taskState: string | undefined, seconds: number) =>
    Effect.sync(() => {
      const state = taskState === undefined ? "" : taskStates.has(taskState) ? taskState : "unknown"
      events.inc({ event_type: knownEventTypes.has(eventType) ? eventType : "unknown", task_state: state })
      eventDuration.observe(seconds)
    })

  return {
    syncSucceeded,
    syncFailed,
    addReport,
    registered: (count = 1) => Effect.sync(() => registrations.inc(count)),
    deregistered: (count = 1) => Effect.sync(() => deregistrations.inc(count)),
    kvWritten: (sets, deletes) =>
      Effect.sync(() => {
        kvWrites.inc(sets)
        kvDeletes.inc(deletes)
      }),
    upstreamFailure,
    upstreamError,
    event,
    eventSkipped: (reason) => Effect.sync(() => eventsSkipped.inc({ reason })),
    eventSourceConnected: (source, connected) => Effect.sync(() => sourceConnected.set({ source }, connected ? 1 : 0)),
    eventSourceReconnected: (source) => Effect.sync(() => sourceReconnects.inc({ source })),
    leader: (leading) => Effect.sync(() => leader.set(leading ? 1 : 0)),
    leaderChanged: Effect.sync(() => leaderChanges.inc()),
    // registry.metrics() only rejects when a collector throws, which would be a bug: a defect, not an error
    exposition: Effect.promise(() => registry.metrics()).pipe(
      Effect.map((body) => ({ contentType: registry.contentType, body }))
    )
  }
}

export const MetricsLive: Layer.Layer<Metrics> = Layer.sync(Metrics, () => Metrics.of(makeMetrics()))
