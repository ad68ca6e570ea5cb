import { HttpRouter, HttpServerResponse } from "@effect/platform"
import { Cause, Clock, Context, Effect, Exit, Layer, Option, Ref } from "effect"
import { ConsulError, MarathonError } from "../domain/Errors.js"
import type { UpstreamError } from "../domain/Errors.js"
import { Metrics } from "../services/Metrics.js"
import type { MetricsService, SyncCounts } from "../services/Metrics.js"
import type { DecodedEvent, EventOutcome } from "./Events.js"
import { jsonAnswer } from "./JsonAnswer.js"

/**
 * The operations endpoints: `GET /health` (the process serves), `GET /ready` (consul is being kept in sync:
 * a first pass succeeded and events arrive) and `GET /metrics` (Prometheus text). They share the event
 * receiver's server, so a load balancer or an orchestrator probes the very listener Marathon calls back.
 */

export interface ReadinessSettings {
  /**
   * false when periodic sync is off (`--sync-interval 0`): no pass may ever run, so only the event source
   * decides readiness.
   */
  readonly requireSync: boolean
  /** "host:port" of this instance's callback, named as the leader while it leads */
  readonly self?: string | undefined
  /** with --leader-election: a follower is ready while it stands by for the lock */
  readonly election?: boolean | undefined
}

/** Who leads, as this instance knows it. Without election an instance always leads. */
export interface Role {
  readonly leader: boolean
  /** "host:port" of the leader; null while none is known */
  readonly leaderAt: string | null
  /** a follower holding a Consul session, watching the lock: ready to take over */
  readonly standingBy: boolean
}

export type ReadyState =
  | { readonly ready: true; readonly role: Role }
  | { readonly ready: false; readonly reason: string; readonly role: Role }

export interface ReadinessService {
  /** A sync pass returned its report; readiness never goes back on it (later failures show in the metrics). */
  readonly syncSucceeded: Effect.Effect<void>
  /** The event source came up (callback subscribed, SSE stream attached) or went down. */
  readonly eventSourceConnected: (connected: boolean) => Effect.Effect<void>
  /** the election's view of who leads (with --leader-election) */
  readonly role: (role: Role) => Effect.Effect<void>
  readonly state: Effect.Effect<ReadyState>
}

export class Readiness extends Context.Tag("consular/Readiness")<Readiness, ReadinessService>() {}

export const makeReadiness = (settings: ReadinessSettings): Effect.Effect<ReadinessService> =>
  Effect.gen(function*() {
    const synced = yield* Ref.make(false)
    const connected = yield* Ref.make(false)
    const role = yield* Ref.make<Role>(
      settings.election === true
        ? { leader: false, leaderAt: null, standingBy: false }
        : { leader: true, leaderAt: settings.self ?? null, standingBy: false }
    )
    const state = Effect.map(Effect.all([Ref.get(synced), Ref.get(connected), Ref.get(role)]), ([hasSynced, isConnected, current]): ReadyState => {
      // a follower in contention is a healthy standby: it does not sync, and is ready to take over
      if (!current.leader) {
        return current.standingBy
          ? { ready: true, role: current }
          : { ready: false, reason: "not standing by for leadership: no Consul session", role: current }
      }
      const missing: Array<string> = []
      if (settings.requireSync && !hasSynced) missing.push("no successful sync yet")
      if (!isConnected) missing.push("event source not connected")
      return missing.length === 0 ? { ready: true, role: current } : { ready: false, reason: missing.join("; "), role: current }
    })
    return Readiness.of({
      syncSucceeded: Ref.set(synced, true),
      eventSourceConnected: (up) => Ref.set(connected, up),
      role: (next) => Ref.set(role, next),
      state
    })
  })

export const ReadinessLive = (settings: ReadinessSettings): Layer.Layer<Readiness> =>
  Layer.effect(Readiness, makeReadiness(settings))


/** The three routes over the given services; concat them with the event routes before any catch-all. */
export const operationsRoutes = (readiness: ReadinessService, metrics: MetricsService): HttpRouter.HttpRouter =>
  HttpRouter.empty.pipe(
    HttpRouter.get("/health", Effect.succeed(jsonAnswer({ status: "ok" }, 200))),
    HttpRouter.get("/ready", Effect.map(readiness.state, (state) => {
      const role = { leader: state.role.leader, leaderAt: state.role.leaderAt }
      return state.ready
        ? jsonAnswer({ status: "ready", ...role }, 200)
        : jsonAnswer({ status: "not ready", reason: state.reason, ...role }, 503)
    })),
    HttpRouter.get("/metrics", Effect.map(metrics.exposition, ({ body, contentType }) =>
      HttpServerResponse.text(body, { contentType })))
  )

/** `operationsRoutes` over the services in context. */
export const operationsApp: Effect.Effect<HttpRouter.HttpRouter, never, Readiness | Metrics> = Effect.map(
  Effect.all([Readiness, Metrics]),
  ([readiness, metrics]) => operationsRoutes(readiness, metrics)
)

const isUpstreamError = (error: unknown): error is UpstreamError =>
  error instanceof ConsulError || error instanceof MarathonError

const secondsSince = (start: bigint) =>
  Effect.map(Clock.currentTimeNanos, (now) => Number(now - start) / 1e9)

/**
 * A sync pass with its metrics and readiness: a report is an "ok" pass (and makes the daemon ready for sync),
 * a failure a "failed" one with its upstream counted. An interrupted pass (shutdown) records nothing.
 * Usage: `syncOnce(settings).pipe(observeSync)`.
 */
export const observeSync = <A extends SyncCounts, E, R>(pass: Effect.Effect<A, E, R>): Effect.Effect<A, E, R | Metrics | Readiness> =>
  Effect.gen(function*() {
    const metrics = yield* Metrics
    const readiness = yield* Readiness
    const start = yield* Clock.currentTimeNanos
    return yield* pass.pipe(
      Effect.onExit((exit) =>
        Effect.flatMap(secondsSince(start), (seconds) => {
          if (Exit.isSuccess(exit)) {
            // Marathon was read, but a pass that reached no Consul synced nothing: not a success for /ready
            return exit.value.consulReached
              ? Effect.zipRight(metrics.syncSucceeded(exit.value, seconds), readiness.syncSucceeded)
              : Effect.zipRight(metrics.addReport(exit.value), metrics.syncFailed(seconds))
          }
          if (Cause.isInterruptedOnly(exit.cause)) return Effect.void
          const error = Option.filter(Cause.failureOption(exit.cause), isUpstreamError)
          return metrics.syncFailed(seconds, Option.getOrUndefined(error))
        }))
    )
  })

/**
 * The handling of one decoded event with its metrics: counted by type and task state with its latency, a
 * registration or deregistration it made, and the upstream of a failure. An interrupted one records nothing.
 * Usage in the route: `observeEvent(decoded, handler.handle(decoded))`.
 */
export const observeEvent = <E, R>(decoded: DecodedEvent, handling: Effect.Effect<EventOutcome, E, R>): Effect.Effect<EventOutcome, E, R | Metrics> =>
  Effect.flatMap(Metrics, (metrics) => observeEventWith(metrics, decoded, handling))

/** `observeEvent` over the given metrics: the daemon wraps every event so, without a context lookup per event. */
export const observeEventWith = <E, R>(metrics: MetricsService, decoded: DecodedEvent, handling: Effect.Effect<EventOutcome, E, R>): Effect.Effect<EventOutcome, E, R> =>
  Effect.flatMap(Clock.currentTimeNanos, (start) => {
    const [eventType, taskState] = decoded._tag === "StatusUpdate"
      ? [decoded.event.eventType, decoded.event.taskStatus]
      : [decoded.eventType, undefined]
    return handling.pipe(
      Effect.onExit((exit) =>
        Effect.flatMap(secondsSince(start), (seconds): Effect.Effect<void> => {
          if (Exit.isFailure(exit) && Cause.isInterruptedOnly(exit.cause)) return Effect.void
          const recorded = metrics.event(eventType, taskState, seconds)
          if (Exit.isSuccess(exit)) {
            if (exit.value === "registered") return Effect.zipRight(recorded, metrics.registered())
            if (exit.value === "deregistered") return Effect.zipRight(recorded, metrics.deregistered())
            return recorded
          }
          const error = Option.filter(Cause.failureOption(exit.cause), isUpstreamError)
          return Option.match(error, { onNone: () => recorded, onSome: (e) => Effect.zipRight(recorded, metrics.upstreamError(e)) })
        }))
    )
  })
