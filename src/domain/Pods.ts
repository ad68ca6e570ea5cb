import { networkMode, taskEndpoints } from "./Networking.js"
import type { AppNetworking, TaskAddressing, TaskEndpoints } from "./Networking.js"

/**
 * Pods (Marathon 1.4+) as services, from `GET /v2/pods/::status`. Each running container of a pod instance that
 * has endpoints is a service: ID its `containerId` (what `status_update_event` carries as `taskId`), Name the pod
 * id as an app name, on the agent of the instance's `agentHostname`; reached at the agent and the lowest
 * `allocatedHostPort`, or, on a container network, at the instance's address and the lowest `containerPort` the
 * pod spec declares for that container. Field names are Marathon's (RAML `PodStatus`, `PodInstanceStatus`,
 * `ContainerStatus`); everything consular does not use is optional, as old and new releases differ.
 */

interface PodEndpointSpec {
  readonly name?: string | null | undefined
  readonly containerPort?: number | null | undefined
  readonly hostPort?: number | null | undefined
}

/** A pod definition (RAML `Pod`): `GET /v2/pods/<id>`, or the `spec` of its status. */
export interface PodSpecView {
  readonly version?: string | null | undefined
  readonly labels?: Readonly<Record<string, string>> | null | undefined
  readonly networks?: ReadonlyArray<{ readonly mode?: string | null | undefined; readonly name?: string | null | undefined }> | null | undefined
  readonly containers?: ReadonlyArray<{ readonly name: string; readonly endpoints?: ReadonlyArray<PodEndpointSpec> | null | undefined }> | null | undefined
}

export interface PodStatusView {
  readonly id: string
  readonly spec?: PodSpecView | null | undefined
  readonly instances?: ReadonlyArray<{
    readonly id: string
    /** 1.4+ writes `agentHostname`; the RAML of some releases names it `agent` */
    readonly agentHostname?: string | null | undefined
    readonly agent?: string | null | undefined
    readonly networks?: ReadonlyArray<{ readonly addresses?: ReadonlyArray<string> | null | undefined }> | null | undefined
    readonly containers?: ReadonlyArray<{
      readonly name: string
      readonly status: string
      readonly containerId?: string | null | undefined
      readonly endpoints?: ReadonlyArray<{ readonly name: string; readonly allocatedHostPort?: number | null | undefined }> | null | undefined
    }> | null | undefined
  }> | null | undefined
}

export interface PodTask {
  /** the container id: the service ID */
  readonly id: string
  /** the instance's agent: where the service is registered */
  readonly host: string
  readonly endpoints: TaskEndpoints
}

export interface PodServices {
  readonly id: string
  readonly labels: Readonly<Record<string, string>>
  readonly version: string | undefined
  /** running containers with endpoints, each a service */
  readonly tasks: ReadonlyArray<PodTask>
}

/**
 * The container a pod task is: Marathon's pod task ids are `<instance id>.<container name>`, and a container
 * name has no dot (RAML `strings.Name`).
 */
export const containerNameOf = (taskId: string): string => taskId.slice(taskId.lastIndexOf(".") + 1)

/**
 * Where a pod container is reached: the container's endpoints, in the spec's words, read as Networking reads an
 * app. `hostPortNames` names the task's host ports in order (by default the endpoints that ask for a host port,
 * the order Marathon allocates them in: what a `status_update_event`'s `ports` are).
 */
export const podTaskEndpoints = (
  spec: PodSpecView,
  containerName: string,
  task: TaskAddressing,
  hostPortNames?: ReadonlyArray<string>
): TaskEndpoints => {
  const declared = (spec.containers ?? []).find((container) => container.name === containerName)?.endpoints ?? []
  const named = hostPortNames ?? declared.flatMap((endpoint) =>
    endpoint.hostPort === undefined || endpoint.hostPort === null ? [] : [endpoint.name ?? ""]
  )
  const networking: AppNetworking = { networks: spec.networks }
  return taskEndpoints(
    networkMode(networking) === "container"
      ? { ...networking, container: { portMappings: declared.map((endpoint) => ({ containerPort: endpoint.containerPort, name: endpoint.name })) } }
      // host and bridge: the host ports' names, by position (bridge reads them off the port mappings)
      : { ...networking, portDefinitions: named.map((name) => ({ name })), container: { portMappings: named.map((name) => ({ name })) } },
    task
  )
}

export const podServices = (pod: PodStatusView): PodServices => {
  const spec = pod.spec ?? {}
  const tasks: Array<PodTask> = []
  for (const instance of pod.instances ?? []) {
    const host = instance.agentHostname ?? instance.agent
    if (host === undefined || host === null || host === "") continue
    const addresses = (instance.networks ?? []).flatMap((network) => network.addresses ?? [])
    for (const container of instance.containers ?? []) {
      const endpoints = container.endpoints ?? []
      if (container.status !== "TASK_RUNNING" || endpoints.length === 0) continue
      if (container.containerId === undefined || container.containerId === null || container.containerId === "") continue
      const withHostPort = endpoints.flatMap((endpoint) =>
        typeof endpoint.allocatedHostPort === "number" ? [{ name: endpoint.name, allocatedHostPort: endpoint.allocatedHostPort }] : []
      )
      tasks.push({
        id: container.containerId,
        host,
        endpoints: podTaskEndpoints(
          spec,
          container.name,
          { host, ports: withHostPort.map((endpoint) => endpoint.allocatedHostPort), ipAddresses: addresses.map((ipAddress) => ({ ipAddress })) },
          withHostPort.map((endpoint) => endpoint.name)
        )
      })
    }
  }
  return { id: pod.id, labels: spec.labels ?? {}, version: spec.version ?? undefined, tasks }
}
