import { instanceOfTask } from "../domain/Health.js"
import type { Labels, TaskState } from "../domain/MarathonApi.js"
import type { AppNetworking } from "../domain/Networking.js"

/**
 * The state of a Marathon held in memory: apps with labels and tasks, event subscriptions, and the event bus.
 * `MarathonMemory` and the embedded Marathon HTTP server both run on it. Tests seed it, inspect it and make it
 * fail (down, hanging, 500s, invalid or truncated JSON, Marathon #3881's 404 for an app without tasks).
 */

export interface StoredTask {
  readonly id: string
  readonly host: string
  readonly ports: ReadonlyArray<number>
  /** Marathon's `ipAddresses`: the task's own addresses (on a container network, where it is reached) */
  readonly ipAddresses?: ReadonlyArray<{ readonly ipAddress: string; readonly protocol: "IPv4" | "IPv6" }> | undefined
  state: TaskState
  readonly startedAt: string
  /** one per health check of the app, as Marathon lists them; absent: no result yet */
  healthCheckResults?: ReadonlyArray<StoredHealthResult>
}

/** A task's result of one health check, with Marathon's field names. */
export interface StoredHealthResult {
  readonly alive: boolean
  readonly consecutiveFailures: number
  readonly firstSuccess: string | null
  readonly lastFailure: string | null
  readonly lastSuccess: string | null
  readonly lastFailureCause: string | null
  readonly instanceId: string
}

export interface StoredApp {
  readonly id: string
  labels: Labels
  version: string
  readonly tasks: Array<StoredTask>
  /** how its tasks are reached, in Marathon's fields (`networks`, `container`, `portDefinitions`, `ipAddress`) */
  networking?: AppNetworking | undefined
  /** Marathon's health check definitions; absent: none */
  healthChecks?: ReadonlyArray<Readonly<Record<string, unknown>>>
}

/** A pod's container as its definition declares it (RAML `MesosContainer`): its endpoints. */
export interface StoredPodContainer {
  readonly name: string
  readonly endpoints?: ReadonlyArray<{ readonly name: string; readonly containerPort?: number; readonly hostPort?: number }> | undefined
}

/** A running (or starting) instance of a pod: one Mesos task per container, on one agent. */
export interface StoredPodInstance {
  readonly id: string
  readonly agentHostname: string
  /** the instance's addresses on its container network */
  readonly addresses: ReadonlyArray<string>
  readonly containers: Array<{
    readonly name: string
    readonly containerId: string
    status: TaskState
    /** in the order of the container's endpoints that ask for a host port */
    readonly allocatedHostPorts: ReadonlyArray<number>
  }>
}

export interface StoredPod {
  readonly id: string
  labels: Labels
  version: string
  networks: ReadonlyArray<{ readonly mode: "host" | "container" | "container/bridge"; readonly name?: string }>
  containers: ReadonlyArray<StoredPodContainer>
  readonly instances: Array<StoredPodInstance>
}

export type MarathonFault =
  | { readonly _tag: "Refuse" }
  | { readonly _tag: "Hang" }
  | { readonly _tag: "Status"; readonly status: number }
  | { readonly _tag: "InvalidJson" }
  | { readonly _tag: "Truncated" }

export type MarathonOperation =
  | "apps" | "app" | "tasks" | "subscriptions" | "subscribe" | "unsubscribe" | "events" | "leader" | "pods" | "pod"

/** How this Marathon treats callback subscriptions: Marathon >= 1.5 removed them (404); without
 *  `--event_subscriber http_callback` it refuses them (400). */
export type CallbackSupport = "enabled" | "removed" | "disabled"

/** Any JSON object Marathon puts on its event bus. */
export type MarathonEvent = { readonly eventType: string } & Readonly<Record<string, unknown>>

export class MarathonStore {
  readonly apps = new Map<string, StoredApp>()
  readonly pods = new Map<string, StoredPod>()
  /** Marathon >= 1.4 serves `/v2/pods`; an older one answers 404 there */
  podsSupported = true
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

  /** Sets how the app's tasks are reached (a new app version, as any change of the definition). */
  setNetworking(id: string, networking: AppNetworking): StoredApp {
    const app = this.apps.get(id) ?? this.putApp(id)
    app.networking = networking
    app.version = this.nextVersion()
    return app
  }

  /** Gives the app health checks (a new version, as a deployment would); its tasks have no result until told. */
  setHealthChecks(id: string, checks: ReadonlyArray<Readonly<Record<string, unknown>>>): void {
    const app = this.apps.get(id) ?? this.putApp(id)
    app.healthChecks = checks
    app.version = this.nextVersion()
  }

  /**
   * Marathon's health checks of a task report `alive` (every check of the app the same): its results change, and,
   * when `emit`, Marathon's events are put on the bus: `health_status_changed_event` (with `instanceId`, or
   * `taskId` for a Marathon older than 1.4) and, from 1.4, `instance_health_changed_event`.
   */
  setTaskHealth(
    appId: string,
    taskId: string,
    alive: boolean,
    options: { readonly cause?: string; readonly emit?: boolean; readonly before14?: boolean } = {}
  ): void {
    const app = this.apps.get(appId)
    const task = app?.tasks.find((t) => t.id === taskId)
    if (app === undefined || task === undefined) return
    const now = new Date().toISOString()
    const instanceId = instanceOfTask(taskId)
    const previous = task.healthCheckResults?.[0]
    const result: StoredHealthResult = {
      alive,
      consecutiveFailures: alive ? 0 : (previous?.consecutiveFailures ?? 0) + 1,
      firstSuccess: previous?.firstSuccess ?? (alive ? now : null),
      lastFailure: alive ? previous?.lastFailure ?? null : now,
      lastSuccess: alive ? now : previous?.lastSuccess ?? null,
      lastFailureCause: alive ? previous?.lastFailureCause ?? null : options.cause ?? "unhealthy",
      instanceId
    }
    task.healthCheckResults = (app.healthChecks ?? [{}]).map(() => result)
    if (options.emit === false) return
    const id = options.before14 === true ? { taskId } : { instanceId }
    this.emit({ eventType: "health_status_changed_event", timestamp: now, appId, ...id, version: app.version, alive })
    if (options.before14 !== true) {
      this.emit({ eventType: "instance_health_changed_event", timestamp: now, instanceId, runSpecId: appId, runSpecVersion: app.version, healthy: alive })
    }
  }

  removeApp(id: string): StoredApp | undefined {
    const app = this.apps.get(id)
    this.apps.delete(id)
    return app
  }

  /** Adds or updates a task; emits its status_update_event when `emit` (the default). */
  setTask(
    appId: string,
    task: {
      readonly id: string
      readonly host: string
      readonly ports?: ReadonlyArray<number>
      readonly ipAddresses?: StoredTask["ipAddresses"]
      readonly state?: TaskState
    },
    emit = true
  ): StoredTask {
    const app = this.apps.get(appId) ?? this.putApp(appId)
    const state = task.state ?? "TASK_RUNNING"
    let stored = app.tasks.find((t) => t.id === task.id)
    if (stored === undefined) {
      stored = {
        id: task.id,
        host: task.host,
        ports: task.ports ?? [],
        ...(task.ipAddresses === undefined ? {} : { ipAddresses: task.ipAddresses }),
        state,
        startedAt: new Date(0).toISOString()
      }
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
      // Marathon always sends the task's addresses (the agent's for a host-networking task)
      ipAddresses: task.ipAddresses ?? [],
      version: app.version
    }
  }

  /** Adds or replaces a pod definition: a new version. */
  putPod(id: string, definition: {
    readonly labels?: Labels
    readonly networks?: StoredPod["networks"]
    readonly containers: ReadonlyArray<StoredPodContainer>
  }): StoredPod {
    const existing = this.pods.get(id)
    const pod: StoredPod = {
      id,
      labels: { ...definition.labels },
      version: this.nextVersion(),
      networks: definition.networks ?? [{ mode: "host" }],
      containers: definition.containers,
      instances: existing?.instances ?? []
    }
    this.pods.set(id, pod)
    return pod
  }

  removePod(id: string): StoredPod | undefined {
    const pod = this.pods.get(id)
    this.pods.delete(id)
    return pod
  }

  /**
   * Starts (or moves to `state`) an instance of a pod: one task per container, `<instance id>.<container name>`
   * as Marathon names them; emits each container's status_update_event (appId: the pod id) when `emit`.
   */
  setPodInstance(podId: string, instance: {
    readonly id: string
    readonly agentHostname: string
    readonly addresses?: ReadonlyArray<string>
    /** allocated host ports per container name, in the order of its endpoints that ask for one */
    readonly hostPorts?: Readonly<Record<string, ReadonlyArray<number>>>
    readonly state?: TaskState
  }, emit = true): StoredPodInstance {
    const pod = this.pods.get(podId)
    if (pod === undefined) throw new Error(`no pod ${podId}`)
    const state = instance.state ?? "TASK_RUNNING"
    let stored = pod.instances.find((i) => i.id === instance.id)
    if (stored === undefined) {
      stored = {
        id: instance.id,
        agentHostname: instance.agentHostname,
        addresses: instance.addresses ?? [],
        containers: pod.containers.map((container) => ({
          name: container.name,
          containerId: `${instance.id}.${container.name}`,
          status: state,
          allocatedHostPorts: instance.hostPorts?.[container.name] ?? []
        }))
      }
      pod.instances.push(stored)
    } else {
      for (const container of stored.containers) container.status = state
    }
    if (emit) for (const container of stored.containers) this.emit(this.podStatusUpdate(pod, stored, container))
    return stored
  }

  /** Ends an instance in `state`: it leaves the pod's status (as in Marathon) and its containers' events are emitted. */
  endPodInstance(podId: string, instanceId: string, state: TaskState = "TASK_KILLED", emit = true): void {
    const pod = this.pods.get(podId)
    const index = pod?.instances.findIndex((i) => i.id === instanceId) ?? -1
    if (pod === undefined || index === -1) return
    const [instance] = pod.instances.splice(index, 1)
    for (const container of instance!.containers) {
      container.status = state
      if (emit) this.emit(this.podStatusUpdate(pod, instance!, container))
    }
  }

  /** A pod task's status_update_event, as Marathon emits it: the pod id as `appId`, the container's task id. */
  podStatusUpdate(pod: StoredPod, instance: StoredPodInstance, container: StoredPodInstance["containers"][number]): MarathonEvent {
    return {
      eventType: "status_update_event",
      timestamp: new Date().toISOString(),
      slaveId: "",
      taskId: container.containerId,
      taskStatus: container.status,
      message: "",
      appId: pod.id,
      host: instance.agentHostname,
      ipAddresses: instance.addresses.map((ipAddress) => ({ ipAddress, protocol: ipAddress.includes(":") ? "IPv6" : "IPv4" })),
      ports: container.allocatedHostPorts,
      version: pod.version
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
