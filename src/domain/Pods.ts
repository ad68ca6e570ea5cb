import { taskEndpoints } from "./Networking.js"
import type { AppNetworking, TaskEndpoints } from "./Networking.js"

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
}

export interface PodStatusView {
  readonly id: string
  readonly spec?: {
    readonly version?: string | null | undefined
    readonly labels?: Readonly<Record<string, string>> | null | undefined
    readonly networks?: ReadonlyArray<{ readonly mode?: string | null | undefined; readonly name?: string | null | undefined }> | null | undefined
    readonly containers?: ReadonlyArray<{ readonly name: string; readonly endpoints?: ReadonlyArray<PodEndpointSpec> | null | undefined }> | null | undefined
  } | null | undefined
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

export const podServices = (pod: PodStatusView): PodServices => {
  const spec = pod.spec ?? {}
  const specEndpoints = new Map((spec.containers ?? []).map((container) => [container.name, container.endpoints ?? []]))
  const tasks: Array<PodTask> = []
  for (const instance of pod.instances ?? []) {
    const host = instance.agentHostname ?? instance.agent
    if (host === undefined || host === null || host === "") continue
    const addresses = (instance.networks ?? []).flatMap((network) => network.addresses ?? [])
    for (const container of instance.containers ?? []) {
      const endpoints = container.endpoints ?? []
      if (container.status !== "TASK_RUNNING" || endpoints.length === 0) continue
      if (container.containerId === undefined || container.containerId === null || container.containerId === "") continue
      const declared = specEndpoints.get(container.name) ?? []
      // the container's endpoints, in the spec's words: what Networking reads for an app
      const networking: AppNetworking = {
        networks: spec.networks,
        container: { portMappings: declared.map((endpoint) => ({ containerPort: endpoint.containerPort, name: endpoint.name })) },
        portDefinitions: endpoints.map((endpoint) => ({ name: endpoint.name }))
      }
      const allocated = endpoints.flatMap((endpoint) => typeof endpoint.allocatedHostPort === "number" ? [endpoint.allocatedHostPort] : [])
      tasks.push({
        id: container.containerId,
        host,
        endpoints: taskEndpoints(networking, { host, ports: allocated, ipAddresses: addresses.map((ipAddress) => ({ ipAddress })) })
      })
    }
  }
  return { id: pod.id, labels: spec.labels ?? {}, version: spec.version ?? undefined, tasks }
}
