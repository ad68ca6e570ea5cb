import type { Labels, TaskState } from "../domain/MarathonApi.js"

/**
 * The state of a Marathon held in memory: apps with labels and tasks, event subscriptions, and the event bus.
 * `MarathonMemory` and the embedded Marathon HTTP server both run on it. Tests seed it, inspect it and make it
 * fail (down, hanging, 500s, invalid or truncated JSON, Marathon #3881's 404 for an app without tasks).
 */

export interface StoredTask {
  readonly id: string
  readonly host: string
  readonly ports: ReadonlyArray<number>
  state: TaskState
  readonly startedAt: string
}

export interface StoredApp {
  readonly id: string
  labels: Labels
  version: string
  readonly tasks: Array<StoredTask>
}

export type MarathonFault =
  | { readonly _tag: "Refuse" }
  | { readonly _tag: "Hang" }
  | { readonly _tag: "Status"; readonly status: number }
  | { readonly _tag: "InvalidJson" }
  | { readonly _tag: "Truncated" }

export type MarathonOperation = "apps" | "app" | "tasks" | "subscriptions" | "subscribe" | "unsubscribe" | "events" | "leader"

/** How this Marathon treats callback subscriptions: Marathon >= 1.5 removed them (404); without
 *  `--event_subscriber http_callback` it refuses them (400). */
export type CallbackSupport = "enabled" | "removed" | "disabled"

/** Any JSON object Marathon puts on its event bus. */
export type MarathonEvent = { readonly eventType: string } & Readonly<Record<string, unknown>>

export class MarathonStore {
  readonly apps = new Map<string, StoredApp>()
  readonly subscriptions: Array<string> = []
  fault: MarathonFault | undefined
  /** faults that apply to the next requests only, in order, before `fault` */
  readonly faultQueue: Array<MarathonFault> = []
  callbacks: CallbackSupport = "enabled"
  /**
   * What this Marathon answers on a route it does not have (`/v2/eventSubscriptions` once callbacks are
   * "removed"): 404 `URI not found: <path>` up to 1.6 (Jersey 1); 500 `URI not found` from 1.6.486 to 1.10, where
   * Jersey 2's NotFoundException meets Marathon's catch-all exception mapper (MarathonExceptionMapper).
   */
  unknownRouteStatus: 404 | 500 = 404
  /** answer 404 on /v2/apps/<id>/tasks for an app with no tasks (Marathon #3881) */
  tasksNotFoundWhenEmpty = false
  /** what `/v2/leader` answers ("host:port"); undefined: the Marathon that was asked; null: no leader (404) */
  leader: string | null | undefined
  /** honour `embed=apps.tasks` (a Marathon that ignores it lists apps without `tasks`) */
  embedTasks = true
  requests = 0
  readonly requestLog: Array<MarathonOperation> = []
  /** each `GET /v2/events` as the server saw it: its Accept header lines and event_type filters (the last 100) */
  readonly streamRequests: Array<{ readonly accept: ReadonlyArray<string>; readonly eventTypes: ReadonlyArray<string> }> = []
  private readonly listeners = new Set<(event: MarathonEvent) => void>()
  private clock = 0

  /** A fresh version string, as Marathon stamps app definitions (ISO time). */
  private nextVersion(): string {
    this.clock += 1
    return new Date(Date.UTC(2026, 0, 1) + this.clock * 1000).toISOString()
  }

  admit(operation: MarathonOperation): MarathonFault | undefined {
    const queued = this.faultQueue.shift()
    const fault = queued ?? this.fault
    if (fault?._tag === "Refuse") return fault
    this.requests++
    this.requestLog.push(operation)
    if (this.requestLog.length > 10_000) this.requestLog.splice(0, this.requestLog.length - 10_000)
    return fault
  }

  putApp(id: string, labels: Labels = {}): StoredApp {
    const existing = this.apps.get(id)
    if (existing !== undefined) {
      existing.labels = { ...labels }
      existing.version = this.nextVersion()
      return existing
    }
    const app: StoredApp = { id, labels: { ...labels }, version: this.nextVersion(), tasks: [] }
    this.apps.set(id, app)
    return app
  }

  setLabels(id: string, labels: Labels): void {
    const app = this.apps.get(id)
    if (app === undefined) return
    app.labels = { ...labels }
    app.version = this.nextVersion()
  }

  removeApp(id: string): StoredApp | undefined {
    const app = this.apps.get(id)
    this.apps.delete(id)
    return app
  }

  /** Adds or updates a task; emits its status_update_event when `emit` (the default). */
  setTask(
    appId: string,
    task: { readonly id: string; readonly host: string; readonly ports?: ReadonlyArray<number>; readonly state?: TaskState },
    emit = true
  ): StoredTask {
    const app = this.apps.get(appId) ?? this.putApp(appId)
    const state = task.state ?? "TASK_RUNNING"
    let stored = app.tasks.find((t) => t.id === task.id)
    if (stored === undefined) {
      stored = { id: task.id, host: task.host, ports: task.ports ?? [], state, startedAt: new Date(0).toISOString() }
      app.tasks.push(stored)
    } else {
      stored.state = state
    }
    if (emit) this.emit(this.statusUpdate(app, stored))
    return stored
  }

  /** Ends a task in `state`: it leaves the app's task list (as in Marathon) and its event is emitted. */
  endTask(appId: string, taskId: string, state: TaskState = "TASK_KILLED", emit = true): void {
    const app = this.apps.get(appId)
    if (app === undefined) return
    const index = app.tasks.findIndex((t) => t.id === taskId)
    if (index === -1) return
    const [task] = app.tasks.splice(index, 1)
    task!.state = state
    if (emit) this.emit(this.statusUpdate(app, task!))
  }

  statusUpdate(app: StoredApp, task: StoredTask): MarathonEvent {
    return {
      eventType: "status_update_event",
      timestamp: new Date().toISOString(),
      taskId: task.id,
      taskStatus: task.state,
      appId: app.id,
      host: task.host,
      ports: task.ports,
      version: app.version
    }
  }

  emit(event: MarathonEvent): void {
    for (const listener of this.listeners) listener(event)
  }

  /** Event bus subscription (the SSE stream and callback delivery); returns the unsubscribe function. */
  listen(listener: (event: MarathonEvent) => void): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  get listenerCount(): number {
    return this.listeners.size
  }
}
