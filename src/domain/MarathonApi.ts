import { ParseResult, Schema } from "effect"
import type { Either } from "effect"
import { compiledDecoder } from "./CompiledDecoder.js"

/** Wire schemas for the parts of Marathon's REST API that consular reads. Unknown fields are dropped. */

const noControlChars = (s: string) => !/[\u0000-\u001f\u007f\s]/.test(s)

/**
 * A Marathon app id: absolute ("/grp/web"), no empty segment, no whitespace or control characters. One filter
 * per type, not one per rule: Marathon's app list is decoded at every pass, thousands of ids and hosts, and each
 * filter is a step of its own for the decoder.
 */
export const AppId = Schema.String.pipe(
  Schema.filter((s) =>
    !s.startsWith("/")
      ? "must start with \"/\""
      : s.length === 1 || s.slice(1).split("/").includes("")
      ? "must not have an empty path segment"
      : noControlChars(s) || "must not contain whitespace or control characters"
  ),
  Schema.brand("AppId")
)
export type AppId = typeof AppId.Type

export const TaskId = Schema.String.pipe(
  Schema.filter((s) =>
    s.length === 0
      ? "must not be empty"
      : !noControlChars(s)
      ? "must not contain whitespace or control characters"
      : !s.includes("/") || "must not contain \"/\""
  ),
  Schema.brand("TaskId")
)
export type TaskId = typeof TaskId.Type

const ipv4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/
const hostname = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)*$/
const ipv6 = /^[0-9A-Fa-f:.]+$/
const isIpv6 = (s: string) => s.includes(":") && ipv6.test(s) && URL.canParse(`http://[${s}]/`)
/**
 * The URL parser must read a name as that very host: `agentUrl` swaps hosts with the `hostname` setter, which
 * silently keeps the old host for one it rejects ("node.1" ends in a number) and rewrites "0x7f.1" to 127.0.0.1.
 */
const isUrlHostname = (s: string) => URL.canParse(`http://${s}/`) && new URL(`http://${s}/`).hostname === s.toLowerCase()

/** The host a task runs on, as Marathon reports it: a host name, an IPv4 or an IPv6 address. */
export const Host = Schema.String.pipe(
  Schema.filter((s) => ipv4.test(s) || isIpv6(s) || (hostname.test(s) && !/^[\d.]+$/.test(s) && isUrlHostname(s)) ||
    "must be a host name or an IP address"),
  Schema.brand("Host")
)
export type Host = typeof Host.Type

export const Port = Schema.Number.pipe(
  Schema.filter((n) => (Number.isInteger(n) && n >= 0 && n <= 65535) || "must be an integer from 0 to 65535", {
    arbitrary: () => (fc) => fc.integer({ min: 0, max: 65535 })
  })
)

/** Mesos task states. Only TASK_RUNNING tasks are services; see `isTerminal` for those that end one. */
export const TaskState = Schema.Literal(
  "TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_KILLING", "TASK_FINISHED", "TASK_FAILED",
  "TASK_KILLED", "TASK_ERROR", "TASK_LOST", "TASK_DROPPED", "TASK_UNREACHABLE", "TASK_GONE",
  "TASK_GONE_BY_OPERATOR", "TASK_UNKNOWN"
)
export type TaskState = typeof TaskState.Type

/** States that take a task out of Consul. TASK_KILLING is one: Marathon asks discovery to stop routing to it. */
export const isTerminal = (state: TaskState): boolean =>
  state !== "TASK_STAGING" && state !== "TASK_STARTING" && state !== "TASK_RUNNING"

export const Labels = Schema.Record({ key: Schema.String, value: Schema.String })
export type Labels = typeof Labels.Type

/**
 * A task's own addresses (`ipAddresses`, Marathon 0.15+): on a container network the address to register.
 * Each must be an IP address (Marathon writes Mesos' NetworkInfo), as Consul gets it as the service's Address.
 */
export const IpAddress = Schema.Struct({
  ipAddress: Schema.String.pipe(Schema.filter((s) => ipv4.test(s) || isIpv6(s) || "must be an IPv4 or IPv6 address")),
  protocol: Schema.optional(Schema.String)
})
export const IpAddresses = Schema.optional(Schema.NullOr(Schema.Array(IpAddress)))

/** One entry of a task's `healthCheckResults` (only the fields consular reads). */
export const HealthCheckResult = Schema.Struct({
  alive: Schema.Boolean,
  lastFailure: Schema.optional(Schema.NullOr(Schema.String)),
  lastFailureCause: Schema.optional(Schema.NullOr(Schema.String))
})

export const Task = Schema.Struct({
  id: TaskId,
  host: Host,
  /** absent: no ports (optional rather than defaulted, as App's labels) */
  ports: Schema.optional(Schema.Array(Port)),
  ipAddresses: IpAddresses,
  /** Marathon lists tasks of every state; older releases leave `state` out of running tasks */
  state: Schema.optional(Schema.String),
  startedAt: Schema.optional(Schema.NullOr(Schema.String)),
  /** Marathon's latest result of each of the app's health checks; absent or empty: none yet */
  healthCheckResults: Schema.optional(Schema.Array(HealthCheckResult))
})
export type Task = typeof Task.Type

export const isRunning = (task: Task): boolean =>
  task.state === undefined ? task.startedAt !== undefined && task.startedAt !== null : task.state === "TASK_RUNNING"

/** A port's name (`portDefinitions[].name`, `portMappings[].name`, pod `endpoints[].name`); null when unnamed. */
const PortName = Schema.optional(Schema.NullOr(Schema.String))
const ContainerPortMapping = Schema.Struct({ containerPort: Schema.optional(Schema.NullOr(Port)), name: PortName })
const Network = Schema.Struct({ mode: Schema.optional(Schema.NullOr(Schema.String)), name: Schema.optional(Schema.NullOr(Schema.String)) })

/**
 * How an app's tasks are reached (see domain/Networking.ts), in Marathon's field names: 1.5+ `networks` and
 * `container.portMappings`, 0.x-1.4 `container.docker.network` and `.portMappings`, 1.4 `ipAddress`, and the
 * port names of `portDefinitions`. All optional and nullable: each release writes a different subset.
 */
export const AppNetworkingFields = {
  networks: Schema.optional(Schema.NullOr(Schema.Array(Network))),
  ipAddress: Schema.optional(Schema.NullOr(Schema.Struct({
    discovery: Schema.optional(Schema.NullOr(Schema.Struct({
      ports: Schema.optional(Schema.NullOr(Schema.Array(Schema.Struct({ number: Schema.optional(Schema.NullOr(Port)), name: PortName }))))
    })))
  }))),
  container: Schema.optional(Schema.NullOr(Schema.Struct({
    portMappings: Schema.optional(Schema.NullOr(Schema.Array(ContainerPortMapping))),
    docker: Schema.optional(Schema.NullOr(Schema.Struct({
      network: Schema.optional(Schema.NullOr(Schema.String)),
      portMappings: Schema.optional(Schema.NullOr(Schema.Array(ContainerPortMapping)))
    })))
  }))),
  portDefinitions: Schema.optional(Schema.NullOr(Schema.Array(Schema.Struct({ name: PortName }))))
}

export const App = Schema.Struct({
  ...AppNetworkingFields,
  id: AppId,
  /**
   * absent: no labels. Optional rather than defaulted (here and in Task's ports): a default makes the whole
   * struct a transformation, whose result the decoder checks a second time, tasks and all
   */
  labels: Schema.optional(Labels),
  version: Schema.optional(Schema.String),
  /** the definitions are Marathon's business: consular only asks whether there are any */
  healthChecks: Schema.optional(Schema.Array(Schema.Unknown)),
  /** present with `embed=apps.tasks`; absent means "not embedded", not "no tasks" */
  tasks: Schema.optional(Schema.Array(Task))
})
export type App = typeof App.Type

/** `GET /v2/apps`: each app is decoded on its own (`splitApps`), so one odd app cannot stop a whole sync. */
export const AppsResponse = Schema.Struct({ apps: Schema.Array(Schema.Unknown) })

/** An app Marathon listed that consular cannot read: skipped, and its Consul entries left alone. */
export interface RejectedApp {
  /** its id when it has a usable one; without it, nothing can be told apart from a gone app */
  readonly id: string | undefined
  readonly problem: string
}

export interface AppListing {
  readonly apps: ReadonlyArray<App>
  readonly rejected: ReadonlyArray<RejectedApp>
}

const decodeApp = compiledDecoder(App)

export const splitApps = (raw: ReadonlyArray<unknown>): AppListing => {
  const { decoded: apps, rejected } = splitDecoded(raw, decodeApp)
  return { apps, rejected }
}

/** Each item decoded on its own: the ones that decode, and the others with their id and first problem. */
const splitDecoded = <A>(
  raw: ReadonlyArray<unknown>,
  decode: (candidate: unknown) => Either.Either<A, ParseResult.ParseError>
): { readonly decoded: ReadonlyArray<A>; readonly rejected: ReadonlyArray<RejectedApp> } => {
  const apps: Array<A> = []
  const rejected: Array<RejectedApp> = []
  for (const candidate of raw) {
    const decoded = decode(candidate)
    if (decoded._tag === "Right") {
      apps.push(decoded.right)
      continue
    }
    const id = typeof candidate === "object" && candidate !== null && "id" in candidate && typeof candidate.id === "string" &&
        candidate.id.startsWith("/") && candidate.id.length > 1
      ? candidate.id
      : undefined
    const [first] = ParseResult.ArrayFormatter.formatErrorSync(decoded.left)
    const problem = first === undefined ? "undecodable" : `${first.path.join(".")}: ${first.message}`.slice(0, 300)
    rejected.push({ id, problem })
  }
  return { decoded: apps, rejected }
}
export const AppResponse = Schema.Struct({ app: App })
export const TasksResponse = Schema.Struct({ tasks: Schema.Array(Task) })
export const EventSubscriptions = Schema.Struct({ callbackUrls: Schema.Array(Schema.String) })
export const Leader = Schema.Struct({ leader: Schema.String })

/** Event types Marathon emits (1.x). Any of these other than status_update_event is acknowledged and ignored. */
export const KnownEventType = Schema.Literal(
  "status_update_event", "api_post_event", "framework_message_event", "subscribe_event", "unsubscribe_event",
  "event_stream_attached", "event_stream_detached", "add_health_check_event", "remove_health_check_event",
  "failed_health_check_event", "health_status_changed_event", "unhealthy_task_kill_event",
  "unhealthy_instance_kill_event", "group_change_success", "group_change_failed", "deployment_success",
  "deployment_failed", "deployment_info", "deployment_step_success", "deployment_step_failure",
  "app_terminated_event", "instance_changed_event", "unknown_instance_terminated_event",
  "instance_health_changed_event", "pod_created_event", "pod_updated_event", "pod_deleted_event",
  "scheduler_registered_event", "scheduler_reregistered_event", "scheduler_disconnected_event"
)
export type KnownEventType = typeof KnownEventType.Type

/** Decoded first, so that the type decides which schema the rest of the body must match. */
export const EventEnvelope = Schema.Struct({ eventType: Schema.String })

export const StatusUpdateEvent = Schema.Struct({
  eventType: Schema.Literal("status_update_event"),
  taskId: TaskId,
  taskStatus: TaskState,
  appId: AppId,
  host: Host,
  ports: Schema.optionalWith(Schema.Array(Port), { default: () => [] }),
  /** the task's own addresses: where it is reached on a container network */
  ipAddresses: IpAddresses,
  version: Schema.optional(Schema.String),
  timestamp: Schema.optional(Schema.String)
})
export type StatusUpdateEvent = typeof StatusUpdateEvent.Type

// --- pods (Marathon 1.4+) ---------------------------------------------------------------------------------

/**
 * A pod definition as `GET /v2/pods/<id>` answers it and as `spec` of its status (RAML `Pod`): the parts that
 * say how its containers are reached, and its labels and version. Pod ids are app ids (`PathId`).
 */
export const PodSpec = Schema.Struct({
  id: AppId,
  version: Schema.optional(Schema.NullOr(Schema.String)),
  labels: Schema.optional(Schema.NullOr(Labels)),
  networks: Schema.optional(Schema.NullOr(Schema.Array(Network))),
  containers: Schema.optional(Schema.NullOr(Schema.Array(Schema.Struct({
    name: Schema.String,
    endpoints: Schema.optional(Schema.NullOr(Schema.Array(Schema.Struct({
      name: Schema.String,
      containerPort: Schema.optional(Schema.NullOr(Port)),
      hostPort: Schema.optional(Schema.NullOr(Port))
    }))))
  }))))
})
export type PodSpec = typeof PodSpec.Type

/** One entry of `GET /v2/pods/::status` (RAML `PodStatus`, `PodInstanceStatus`, `ContainerStatus`). */
export const PodStatus = Schema.Struct({
  id: AppId,
  spec: PodSpec,
  instances: Schema.optional(Schema.NullOr(Schema.Array(Schema.Struct({
    id: Schema.String,
    /** 1.4+ writes `agentHostname`; the RAML of some releases names it `agent` */
    agentHostname: Schema.optional(Schema.NullOr(Host)),
    agent: Schema.optional(Schema.NullOr(Host)),
    networks: Schema.optional(Schema.NullOr(Schema.Array(Schema.Struct({
      name: Schema.optional(Schema.NullOr(Schema.String)),
      addresses: Schema.optional(Schema.NullOr(Schema.Array(IpAddress.fields.ipAddress)))
    })))),
    containers: Schema.optional(Schema.NullOr(Schema.Array(Schema.Struct({
      name: Schema.String,
      status: Schema.String,
      containerId: Schema.optional(Schema.NullOr(TaskId)),
      endpoints: Schema.optional(Schema.NullOr(Schema.Array(Schema.Struct({
        name: Schema.String,
        allocatedHostPort: Schema.optional(Schema.NullOr(Port))
      }))))
    }))))
  }))))
})
export type PodStatus = typeof PodStatus.Type

/** `GET /v2/pods/::status`: each pod decoded on its own, as apps are. */
export const PodStatusesResponse = Schema.Array(Schema.Unknown)

export interface PodListing {
  readonly pods: ReadonlyArray<PodStatus>
  readonly rejected: ReadonlyArray<RejectedApp>
}

const decodePodStatus = compiledDecoder(PodStatus)

export const splitPods = (raw: ReadonlyArray<unknown>): PodListing => {
  const { decoded: pods, rejected } = splitDecoded(raw, decodePodStatus)
  return { pods, rejected }
}

/**
 * Marathon's word on one health check of a task: `instanceId` since 1.4, `taskId` before. `alive: false` is one
 * failing check.
 */
export const HealthStatusChangedEvent = Schema.Struct({
  eventType: Schema.Literal("health_status_changed_event"),
  appId: Schema.optional(AppId),
  instanceId: Schema.optional(TaskId),
  taskId: Schema.optional(TaskId),
  alive: Schema.Boolean,
  version: Schema.optional(Schema.String),
  timestamp: Schema.optional(Schema.String)
})
export type HealthStatusChangedEvent = typeof HealthStatusChangedEvent.Type

/** Marathon (1.4+) on an instance as a whole; `healthy` is null while Marathon has no result for it. */
export const InstanceHealthChangedEvent = Schema.Struct({
  eventType: Schema.Literal("instance_health_changed_event"),
  instanceId: TaskId,
  runSpecId: Schema.optional(AppId),
  healthy: Schema.NullOr(Schema.Boolean),
  timestamp: Schema.optional(Schema.String)
})
export type InstanceHealthChangedEvent = typeof InstanceHealthChangedEvent.Type
