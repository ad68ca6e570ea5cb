import type { CheckStatus, HealthObservation, HealthVerdict } from "../domain/Health.js"
import { healthVerdict, instanceOfTask } from "../domain/Health.js"
import type { Labels } from "../domain/MarathonApi.js"

/**
 * What the daemon knows about the TTL checks it relays (`--health-checks ttl`): Marathon's latest word per
 * instance, and per task the agent that holds its check, what was pushed there and when the next re-push is due.
 * Memory only: after a start (or a takeover) nothing is known as pushed, so every check is pushed once.
 */

export interface HealthSettings {
  /** Go duration, as given to `--health-ttl` */
  readonly ttl: string
  readonly ttlMillis: number
  /** `--initial-health`: until Marathon has a first result for a task whose app has health checks */
  readonly initial: CheckStatus
  /** Go duration, as given to `--deregister-critical-after` */
  readonly deregisterCriticalAfter?: string | undefined
}

export interface Pushed {
  readonly status: CheckStatus
  readonly output: string
  /** by the clock in use, milliseconds */
  readonly at: number
}

export interface TrackedTask {
  readonly agent: string
  /** the Marathon task the service is of: its lock is the one every write for the task takes */
  readonly taskId: string
  readonly instance: string
  readonly appHasHealthChecks: boolean
  pushed: Pushed | undefined
  /** when the re-push is due; undefined: not pushed yet */
  due: number | undefined
}

/** An app as events need it to build a registration: its labels (Meta) and whether it has health checks. */
export interface KnownApp {
  readonly version: string | undefined
  readonly labels: Labels | undefined
  readonly hasHealthChecks: boolean
}

/** 32-bit FNV-1a, mixed, as a fraction in [0, 1): where a task's re-push falls in the window, the same every time. */
const spreadOf = (id: string): number => {
  let hash = 0x811c9dc5
  for (let i = 0; i < id.length; i++) {
    hash ^= id.charCodeAt(i)
    hash = Math.imul(hash, 0x01000193) >>> 0
  }
  // murmur3's finaliser: ids that differ in their last character (web.1, web.2) land far apart
  hash ^= hash >>> 16
  hash = Math.imul(hash, 0x85ebca6b) >>> 0
  hash ^= hash >>> 13
  hash = Math.imul(hash, 0xc2b2ae35) >>> 0
  hash ^= hash >>> 16
  return (hash >>> 0) / 4294967296
}

/**
 * Re-pushes fall between a quarter and 45% of the TTL after the last push, each task at its own point of that
 * window: never a burst, and with the timer's tick (at most a fortieth of the TTL) always before half the TTL.
 */
export const repushDelay = (taskId: string, ttlMillis: number): number => Math.round(ttlMillis * (0.25 + 0.2 * spreadOf(taskId)))

/**
 * A check a new process finds already right in Consul: it was pushed by the process before, at most about half
 * the TTL ago, so the timer pushes it once within the first fifth of the TTL, each at its own point.
 */
export const firstRepushDelay = (taskId: string, ttlMillis: number): number => Math.round(ttlMillis * 0.2 * spreadOf(taskId))

/** The timer's tick: a fortieth of the TTL, between 10 ms and a minute. */
export const repushTick = (ttlMillis: number): number => Math.min(60_000, Math.max(10, Math.floor(ttlMillis / 40)))

export class HealthBook {
  readonly tasks = new Map<string, TrackedTask>()
  private readonly byInstance = new Map<string, Set<string>>()
  private readonly observations = new Map<string, { readonly observation: HealthObservation; readonly seq: number }>()
  /** app id -> what events need of it; filled by passes and by events' reads of the app */
  readonly apps = new Map<string, KnownApp>()
  /** app id -> the version whose labels left out of Meta were warned about */
  readonly metaWarned = new Map<string, string | undefined>()
  /** counts health events: a pass leaves alone what an event said after the pass read Marathon */
  seq = 0
  /** a pass without TTL checks has looked for ours on every agent and dropped them: later passes need not look */
  checksSwept = false

  /**
   * `serviceId`: the key of the check (`service:<serviceId>`); `taskId`: the Marathon task the service is of, when
   * it differs (a service per port, `<task id>:<port>`), whose instance speaks for its health.
   */
  track(serviceId: string, agent: string, appHasHealthChecks: boolean, taskId: string = serviceId): TrackedTask {
    const existing = this.tasks.get(serviceId)
    if (existing !== undefined && existing.agent === agent && existing.appHasHealthChecks === appHasHealthChecks) return existing
    const instance = instanceOfTask(taskId)
    const tracked: TrackedTask = { agent, taskId, instance, appHasHealthChecks, pushed: existing?.agent === agent ? existing.pushed : undefined, due: existing?.agent === agent ? existing.due : undefined }
    this.tasks.set(serviceId, tracked)
    if (existing !== undefined && existing.instance !== instance) this.byInstance.get(existing.instance)?.delete(serviceId)
    let siblings = this.byInstance.get(instance)
    if (siblings === undefined) {
      siblings = new Set()
      this.byInstance.set(instance, siblings)
    }
    siblings.add(serviceId)
    return tracked
  }

  forget(serviceId: string): void {
    const tracked = this.tasks.get(serviceId)
    if (tracked === undefined) return
    this.tasks.delete(serviceId)
    const siblings = this.byInstance.get(tracked.instance)
    siblings?.delete(serviceId)
    if (siblings !== undefined && siblings.size === 0) {
      this.byInstance.delete(tracked.instance)
      this.observations.delete(tracked.instance)
    }
  }

  tasksOf(instance: string): ReadonlyArray<string> {
    return [...(this.byInstance.get(instance) ?? [])]
  }

  /** An event's word on an instance: newer than anything a pass under way read. */
  observeEvent(instance: string, observation: HealthObservation): void {
    this.seq++
    this.observations.set(instance, { observation, seq: this.seq })
  }

  /** A pass's reading of Marathon, unless an event spoke of the instance after `mark` (the pass's start). */
  observePass(instance: string, observation: HealthObservation, mark: number): void {
    const known = this.observations.get(instance)
    if (known !== undefined && known.seq > mark) return
    this.observations.set(instance, { observation, seq: known?.seq ?? 0 })
  }

  /** The Marathon task of a tracked service (the service's own ID when untracked). */
  taskOf(serviceId: string): string {
    return this.tasks.get(serviceId)?.taskId ?? serviceId
  }

  /** Marathon's word on instances with no task here any more (an event for a task consular never registered). */
  pruneObservations(mark: number): void {
    for (const [instance, known] of this.observations) {
      if (known.seq <= mark && !this.byInstance.has(instance)) this.observations.delete(instance)
    }
  }

  eventSince(instance: string, mark: number): boolean {
    return (this.observations.get(instance)?.seq ?? 0) > mark
  }

  /** The verdict on a tracked service (by its task's instance), or on a task by its id. */
  verdict(serviceId: string, appHasHealthChecks: boolean, initial: CheckStatus): HealthVerdict {
    const instance = this.tasks.get(serviceId)?.instance ?? instanceOfTask(serviceId)
    return healthVerdict({ appHasHealthChecks, latest: this.observations.get(instance)?.observation, initial })
  }

  /** After a takeover (another consular pushed meanwhile): nothing is known as pushed, as after a start. */
  forgetPushes(): void {
    for (const tracked of this.tasks.values()) {
      tracked.pushed = undefined
      tracked.due = undefined
    }
  }

  /** Tasks whose re-push is due at `now`, oldest due first. */
  due(now: number): ReadonlyArray<string> {
    const found: Array<[string, number]> = []
    for (const [taskId, tracked] of this.tasks) if (tracked.due !== undefined && tracked.due <= now) found.push([taskId, tracked.due])
    return found.sort((a, b) => a[1] - b[1]).map(([taskId]) => taskId)
  }
}
