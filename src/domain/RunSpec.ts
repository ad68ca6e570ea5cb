import type { AppNetworking, TaskAddressing, TaskEndpoints } from "./Networking.js"
import { taskEndpoints } from "./Networking.js"
import { containerNameOf, podTaskEndpoints } from "./Pods.js"
import type { PodSpecView } from "./Pods.js"

/**
 * What a `status_update_event`'s `appId` names: an app or (Marathon 1.4+) a pod. The event carries the task's
 * host, host ports and addresses; the definition says which of them reach it (domain/Networking.ts).
 */
export type RunSpec =
  | { readonly _tag: "App"; readonly networking: AppNetworking }
  | { readonly _tag: "Pod"; readonly spec: PodSpecView }

/** A run spec Marathon no longer has: its task is registered as the original did, at its host and lowest port. */
export const unknownRunSpec: RunSpec = { _tag: "App", networking: {} }

/** Only the networking of an app: a cache of it must not hold on to the app's tasks. */
export const appRunSpec = (app: AppNetworking): RunSpec => ({
  _tag: "App",
  networking: { networks: app.networks, ipAddress: app.ipAddress, container: app.container, portDefinitions: app.portDefinitions }
})

export const taskEndpointsOf = (runSpec: RunSpec, task: TaskAddressing & { readonly id: string }): TaskEndpoints =>
  runSpec._tag === "App" ? taskEndpoints(runSpec.networking, task) : podTaskEndpoints(runSpec.spec, containerNameOf(task.id), task)

/**
 * Whether a task of this run spec is a service: every app task is; a pod's container only when the pod spec gives
 * it endpoints (as in `GET /v2/pods/::status`, where a container without endpoints is no service).
 */
export const isServiceTask = (runSpec: RunSpec, taskId: string): boolean =>
  runSpec._tag === "App" ||
  ((runSpec.spec.containers ?? []).find((container) => container.name === containerNameOf(taskId))?.endpoints ?? []).length > 0
