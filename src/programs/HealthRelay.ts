import { Clock, Duration, Effect } from "effect"
import type { AgentCheck } from "../domain/ConsulApi.js"
import type { ConsulError, NotFound } from "../domain/Errors.js"
import { instanceOfTask } from "../domain/Health.js"
import type { HealthCheckResult, HealthObservation, HealthVerdict } from "../domain/Health.js"
import { ttlCheckId } from "../domain/Naming.js"
import { Consul } from "../services/Consul.js"
import { firstRepushDelay, repushDelay, repushTick } from "./HealthBook.js"
import type { HealthSettings, TrackedTask } from "./HealthBook.js"
import { Topology } from "./Topology.js"

/**
 * `--health-checks ttl`: Marathon's verdict on each task pushed to its TTL check. A status is pushed when it
 * changes (events, passes) and re-pushed by the daemon's own timer before half the TTL has gone, so that the
 * check lapses only when consular is gone. Every push is made under the task's lock, as every other write for it.
 */

/** Pushes the verdict to the task's check and books it with its next re-push. */
export const pushVerdict = (
  taskId: string,
  tracked: TrackedTask,
  verdict: HealthVerdict,
  settings: HealthSettings
): Effect.Effect<void, ConsulError | NotFound, Consul> =>
  Effect.gen(function*() {
    const consul = yield* Consul
    yield* consul.updateCheck(tracked.agent, ttlCheckId(taskId), { Status: verdict.status, Output: verdict.output })
    const now = yield* Clock.currentTimeMillis
    tracked.pushed = { status: verdict.status, output: verdict.output, at: now }
    tracked.due = now + repushDelay(taskId, settings.ttlMillis)
  })

const samePushed = (tracked: TrackedTask, verdict: HealthVerdict): boolean =>
  tracked.pushed !== undefined && tracked.pushed.status === verdict.status && tracked.pushed.output === verdict.output

/**
 * A health event: Marathon's word on an instance, applied to each of its tasks that holds a check (the tasks
 * of an instance share its health). The number of checks whose status changed.
 */
export const applyHealthEvent = (
  instance: string,
  observation: HealthObservation,
  settings: HealthSettings
): Effect.Effect<number, ConsulError | NotFound, Consul | Topology> =>
  Effect.gen(function*() {
    const topology = yield* Topology
    const book = topology.health
    // booked at once, in arrival order: the verdict each task gets below is the latest word, whichever runs first
    book.observeEvent(instance, observation)
    let changed = 0
    for (const taskId of book.tasksOf(instance)) {
      yield* topology.locks.withLock(book.taskOf(taskId), Effect.suspend(() => {
        const tracked = book.tasks.get(taskId)
        if (tracked === undefined) return Effect.void
        // an event says the app has health checks, whatever the last pass saw
        const verdict = book.verdict(taskId, true, settings.initial)
        if (samePushed(tracked, verdict)) return Effect.void
        changed++
        return pushVerdict(taskId, tracked, verdict, settings)
      }))
    }
    return changed
  })

/**
 * Right after a registration: the task's check gets its status now (Consul starts a new check critical, and a
 * re-registered one keeps its old status).
 */
export const pushAfterRegistration = (
  serviceId: string,
  agent: string,
  appHasHealthChecks: boolean,
  settings: HealthSettings,
  /** the Marathon task, when the service's ID is not its id (a service per port) */
  taskId: string = serviceId
): Effect.Effect<void, ConsulError | NotFound, Consul | Topology> =>
  Effect.gen(function*() {
    const book = (yield* Topology).health
    const tracked = book.track(serviceId, agent, appHasHealthChecks, taskId)
    yield* pushVerdict(serviceId, tracked, book.verdict(serviceId, appHasHealthChecks, settings.initial), settings)
  })

/**
 * The daemon's re-push timer: every tick, the checks whose re-push is due get their booked status again, a few
 * at a time. A failed re-push is tried again at the next tick; a check Consul no longer has is left to the next
 * pass (which registers the service again and pushes).
 */
export const repushLoop = (settings: HealthSettings): Effect.Effect<never, never, Consul | Topology> =>
  Effect.gen(function*() {
    const topology = yield* Topology
    const book = topology.health
    const tick = Duration.millis(repushTick(settings.ttlMillis))
    for (;;) {
      yield* Effect.sleep(tick)
      const now = yield* Clock.currentTimeMillis
      const due = book.due(now)
      if (due.length === 0) continue
      let failed = 0
      yield* Effect.forEach(due, (taskId) =>
        topology.locks.withLock(book.taskOf(taskId), Effect.suspend(() => {
          const tracked = book.tasks.get(taskId)
          if (tracked?.pushed === undefined || tracked.due === undefined || tracked.due > now) return Effect.void
          const { status, output } = tracked.pushed
          return pushVerdict(taskId, tracked, { status, output }, settings).pipe(
            Effect.catchTag("NotFound", () => Effect.sync(() => book.forget(taskId))),
            Effect.catchTag("ConsulError", () => Effect.sync(() => {
              failed++
            }))
          )
        })), { concurrency: 8, discard: true })
      yield* Effect.logDebug("health checks re-pushed").pipe(Effect.annotateLogs({ checks: due.length, failed }))
      if (failed > 0) yield* Effect.logWarning("health check re-push failed; retried at the next tick").pipe(Effect.annotateLogs({ failed }))
    }
  }).pipe(Effect.annotateLogs("job", "health"))

export interface PassHealth {
  /** running tasks of the pass: where each should be, and its app's health checks and results */
  readonly tasks: ReadonlyArray<{
    /** the service (its check is `service:<taskId>`) */
    readonly taskId: string
    /** the Marathon task, when the service's ID is not its id (a service per port) */
    readonly marathonTaskId?: string | undefined
    readonly agent: string
    readonly appHasHealthChecks: boolean
    readonly results: ReadonlyArray<HealthCheckResult> | undefined
  }>
  /** checks as the pass read them, by agent then CheckID */
  readonly checks: (agent: string) => ReadonlyMap<string, AgentCheck> | undefined
  /** where each registration made by this pass landed (the fallback agent, maybe) */
  readonly landed: ReadonlyMap<string, string>
  /** services the agents held already (no registration needed) */
  readonly held: (taskId: string, agent: string) => boolean
  /** the book's event count when the pass began */
  readonly mark: number
  /** whether a status event changed the task since the pass began (the event is newer truth) */
  readonly touchedSince: (taskId: string) => Effect.Effect<boolean>
}

/**
 * A pass's part: Marathon's results as read, the verdict of every task, pushed where Consul's check differs (a
 * check already right is left to the timer); tasks no longer running are forgotten. Returns how many were pushed and
 * the failures, per agent.
 */
export const relayInPass = (
  pass: PassHealth,
  settings: HealthSettings,
  concurrency: number
): Effect.Effect<{ readonly pushed: number; readonly failures: ReadonlyArray<{ readonly agent: string; readonly error: ConsulError | NotFound }> }, never, Consul | Topology> =>
  Effect.gen(function*() {
    const topology = yield* Topology
    const book = topology.health
    let pushed = 0
    const failures: Array<{ agent: string; error: ConsulError | NotFound }> = []
    const running = new Set<string>()
    for (const task of pass.tasks) {
      running.add(task.taskId)
      book.observePass(instanceOfTask(task.marathonTaskId ?? task.taskId), { _tag: "Results", results: task.results ?? [] }, pass.mark)
    }
    yield* Effect.forEach(pass.tasks, (task) => {
      const landedOn = pass.landed.get(task.taskId)
      const agent = landedOn ?? (pass.held(task.taskId, task.agent) ? task.agent : undefined)
      if (agent === undefined) return Effect.void // not in Consul: nothing to push to
      return topology.locks.withLock(task.marathonTaskId ?? task.taskId, Effect.gen(function*() {
        if (yield* pass.touchedSince(task.marathonTaskId ?? task.taskId)) return
        const tracked = book.track(task.taskId, agent, task.appHasHealthChecks, task.marathonTaskId)
        const verdict = book.verdict(task.taskId, task.appHasHealthChecks, settings.initial)
        const inConsul = landedOn === undefined ? pass.checks(agent)?.get(ttlCheckId(task.taskId)) : undefined
        const current = inConsul !== undefined && inConsul.Status === verdict.status && inConsul.Output === verdict.output
        if (current) {
          // right already: no write now; one a new process has not pushed yet is re-pushed soon by the timer, spread
          if (tracked.pushed === undefined) {
            const now = yield* Clock.currentTimeMillis
            tracked.pushed = { status: verdict.status, output: verdict.output, at: now }
            tracked.due = now + firstRepushDelay(task.taskId, settings.ttlMillis)
          }
          return
        }
        yield* pushVerdict(task.taskId, tracked, verdict, settings).pipe(
          Effect.tap(() => Effect.sync(() => {
            pushed++
          })),
          Effect.catchAll((error) => Effect.sync(() => {
            failures.push({ agent, error })
          }))
        )
      }))
    }, { concurrency, discard: true })
    for (const taskId of [...book.tasks.keys()]) {
      if (!running.has(taskId) && !(yield* pass.touchedSince(book.taskOf(taskId)))) book.forget(taskId)
    }
    book.pruneObservations(pass.mark)
    return { pushed, failures }
  })
