/**
 * Where a task can be reached, by its app's networking: the address and ports to register in Consul.
 *
 * - host networking (`networks` absent or `[{mode: "host"}]`, no `ipAddress`): the task's `host` and its `ports`
 *   (host ports, in the task's order), exactly as the original registered it;
 * - `container/bridge` (1.5+, or 0.x/1.x `container.docker.network: "BRIDGE"`): the task's `host` and its `ports`
 *   (the host ports Marathon mapped), in the task's order;
 * - `container` (IP-per-task: 1.5+ `networks: [{mode: "container"}]`, or 1.4 `ipAddress: {...}`): the task's own
 *   address (its first IPv4 in `ipAddresses`, an IPv6 only when it has no IPv4) and the container ports the app
 *   declares (1.5+ `container.portMappings[].containerPort`; 1.4 `ipAddress.discovery.ports[].number`, or, when
 *   that list is empty, `container.docker.portMappings[].containerPort`).
 *
 * Pure, and shaped after Marathon's own field names so that any decoded app or pod fits it.
 */

export type NetworkMode = "host" | "bridge" | "container"

interface NamedPort {
  readonly name?: string | null | undefined
}
interface ContainerPortMapping extends NamedPort {
  readonly containerPort?: number | null | undefined
}

/** The parts of a Marathon app definition that say how its tasks are reached. */
export interface AppNetworking {
  readonly networks?: ReadonlyArray<{ readonly mode?: string | null | undefined; readonly name?: string | null | undefined }> | null | undefined
  /** Marathon 1.4 IP-per-task; `null` on apps without it */
  readonly ipAddress?: {
    readonly discovery?: { readonly ports?: ReadonlyArray<NamedPort & { readonly number?: number | null | undefined }> | null | undefined } | null | undefined
  } | null | undefined
  readonly container?: {
    readonly portMappings?: ReadonlyArray<ContainerPortMapping> | null | undefined
    readonly docker?: {
      readonly network?: string | null | undefined
      readonly portMappings?: ReadonlyArray<ContainerPortMapping> | null | undefined
    } | null | undefined
  } | null | undefined
  readonly portDefinitions?: ReadonlyArray<NamedPort> | null | undefined
}

export interface TaskAddressing {
  readonly host: string
  readonly ports?: ReadonlyArray<number> | undefined
  readonly ipAddresses?: ReadonlyArray<{ readonly ipAddress: string; readonly protocol?: string | undefined }> | null | undefined
}

/** One port of a task, in the task's port order (`index` is Marathon's `PORT<index>`). */
export interface TaskPort {
  readonly port: number
  readonly index: number
  /** the port's name in the app definition, when it has one */
  readonly name: string | undefined
}

export interface TaskEndpoints {
  readonly mode: NetworkMode
  readonly address: string
  /** every port in the task's order; empty when the task has none */
  readonly ports: ReadonlyArray<TaskPort>
  /** the lowest port: the one the original registered; undefined when there is none */
  readonly lowest: TaskPort | undefined
}

export const networkMode = (app: AppNetworking): NetworkMode => {
  const modes = (app.networks ?? []).map((network) => network.mode ?? "container")
  if (modes.includes("container")) return "container"
  if (app.ipAddress !== undefined && app.ipAddress !== null) return "container"
  if (modes.includes("container/bridge")) return "bridge"
  if ((app.container?.docker?.network ?? "").toUpperCase() === "BRIDGE") return "bridge"
  return "host"
}

const isIpv4 = (address: string, protocol: string | undefined): boolean =>
  protocol === undefined ? !address.includes(":") : protocol.toUpperCase() === "IPV4"

/** The task's own address on a container network: its first IPv4, an IPv6 only when it has none; else its host. */
export const containerAddress = (task: TaskAddressing): string => {
  const addresses = task.ipAddresses ?? []
  const v4 = addresses.find((entry) => isIpv4(entry.ipAddress, entry.protocol))
  return v4?.ipAddress ?? addresses[0]?.ipAddress ?? task.host
}

const nameOf = (port: NamedPort | undefined): string | undefined =>
  port?.name === undefined || port.name === null || port.name === "" ? undefined : port.name

/** The container ports the app declares, with their names, in the definition's order (container mode). */
const declaredContainerPorts = (app: AppNetworking): ReadonlyArray<{ readonly port: number; readonly name: string | undefined }> => {
  const fromMappings = (mappings: ReadonlyArray<ContainerPortMapping> | null | undefined) =>
    (mappings ?? []).flatMap((mapping) =>
      typeof mapping.containerPort === "number" ? [{ port: mapping.containerPort, name: nameOf(mapping) }] : []
    )
  if (app.ipAddress !== undefined && app.ipAddress !== null && !(app.networks ?? []).some((n) => (n.mode ?? "container") === "container")) {
    const discovery = (app.ipAddress.discovery?.ports ?? []).flatMap((port) =>
      typeof port.number === "number" ? [{ port: port.number, name: nameOf(port) }] : []
    )
    return discovery.length > 0 ? discovery : fromMappings(app.container?.docker?.portMappings)
  }
  const mappings = fromMappings(app.container?.portMappings)
  return mappings.length > 0 ? mappings : fromMappings(app.container?.docker?.portMappings)
}

/** The names of the task's host ports, by position: `portDefinitions` in host mode, the port mappings in bridge. */
const hostPortNames = (app: AppNetworking, mode: NetworkMode): ReadonlyArray<string | undefined> =>
  mode === "bridge"
    ? (app.container?.portMappings ?? app.container?.docker?.portMappings ?? []).map(nameOf)
    : (app.portDefinitions ?? []).map(nameOf)

/** A fold, not Math.min(...): an event may carry a very long port list. */
const lowestOf = (ports: ReadonlyArray<TaskPort>): TaskPort | undefined =>
  ports.reduce<TaskPort | undefined>((low, port) => low === undefined || port.port < low.port ? port : low, undefined)

/** Where each task of one app is reached: what the app says worked out once, for all its tasks (a pass reads thousands). */
export const appTaskEndpoints = (app: AppNetworking): (task: TaskAddressing) => TaskEndpoints => {
  const mode = networkMode(app)
  if (mode === "container") {
    const ports = declaredContainerPorts(app).map((declared, index) => ({ port: declared.port, index, name: declared.name }))
    const lowest = lowestOf(ports)
    return (task) => ({ mode, address: containerAddress(task), ports, lowest })
  }
  const names = hostPortNames(app, mode)
  return (task) => {
    const ports = (task.ports ?? []).map((port, index) => ({ port, index, name: names[index] }))
    return { mode, address: task.host, ports, lowest: lowestOf(ports) }
  }
}

export const taskEndpoints = (app: AppNetworking, task: TaskAddressing): TaskEndpoints => appTaskEndpoints(app)(task)
