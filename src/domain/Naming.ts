import { Schema } from "effect"
import type { AppId, Host, TaskId } from "./MarathonApi.js"
import type { Registration } from "./ConsulApi.js"
import { taskEndpoints } from "./Networking.js"
import type { TaskEndpoints, TaskPort } from "./Networking.js"

/**
 * The one place that builds Consul strings. The layout is the Python consular's, byte for byte:
 * consul-template and existing users read it.
 */

/** A Consul service name derived from an app id: "/grp/web" -> "grp-web". */
export const AppName = Schema.String.pipe(Schema.brand("AppName"))
export type AppName = typeof AppName.Type

// a brand on a plain string checks nothing: `make` without its validation, which is a Schema run per call (a pass
// names every app, task and key)
const nameOf = (name: string): AppName => AppName.make(name, { disableValidation: true })

export const appName = (id: AppId | string): AppName => nameOf(id.replace(/^\/+/, "").replaceAll("/", "-"))

const regIdTagPrefix = "consular-reg-id="
const appIdTagPrefix = "consular-app-id="

export const regIdTag = (registrationId: string): string => `${regIdTagPrefix}${registrationId}`
export const appIdTag = (id: AppId | string): string => `${appIdTagPrefix}${id}`

/** The app id in a service's tags; undefined when there is none, or more than one (we cannot tell whose it is). */
export const appIdFromTags = (tags: ReadonlyArray<string>): string | undefined => {
  let found: string | undefined
  for (const tag of tags) {
    if (!tag.startsWith(appIdTagPrefix)) continue
    if (found !== undefined) return undefined
    found = tag
  }
  return found?.slice(appIdTagPrefix.length)
}

export const isOwnedBy = (tags: ReadonlyArray<string> | null, registrationId: string): boolean =>
  tags !== null && tags.includes(regIdTag(registrationId))

export interface RegistrationOptions {
  /** one service per port of the task, not only its lowest port's */
  readonly servicePerPort?: boolean | undefined
}

/** What is registered for one running task (an app's or a pod's): whose it is and where it is reached. */
export interface TaskService {
  /** the app or pod id */
  readonly appId: AppId | string
  readonly taskId: TaskId | string
  readonly endpoints: TaskEndpoints
}

/** The ID of the service of one of a task's other ports: "<task id>:<port name, or its index>". */
export const portServiceId = (taskId: string, port: TaskPort): string => `${taskId}:${port.name ?? port.index}`

/** The Name of the service of one of a task's other ports: "<app-name>-<port name>", or "<app-name>-port<index>". */
export const portServiceName = (app: AppId | string, port: TaskPort): string =>
  `${appName(app)}-${port.name ?? `port${port.index}`}`

/** The task a service ID belongs to: "<task id>" itself, or the part before ":" of one port's service. */
export const taskIdOfService = (serviceId: string): string => {
  const colon = serviceId.indexOf(":")
  return colon === -1 ? serviceId : serviceId.slice(0, colon)
}

/**
 * The one registration builder: the registrations of a running task, reached at `endpoints` (domain/Networking).
 * The first is the original's: ID the task id, Name the app name, the lowest port (none when the task has no
 * port; Consul then shows 0). With `servicePerPort`, every other port follows as a service of its own. Each
 * carries the two tags that mark it as ours and say whose it is. The key order is the original's JSON's.
 */
export const registrations = (
  registrationId: string,
  service: TaskService,
  options: RegistrationOptions = {}
): ReadonlyArray<Registration> => registrationsOfApp(registrationId, service.appId, options)(service.taskId, service.endpoints)

/** `registrations` for the tasks of one app or pod: its name and tags made once (one Tags array shared by all). */
export const registrationsOfApp = (
  registrationId: string,
  appId: AppId | string,
  options: RegistrationOptions = {}
): (taskId: TaskId | string, endpoints: TaskEndpoints) => ReadonlyArray<Registration> => {
  const tags: ReadonlyArray<string> = [regIdTag(registrationId), appIdTag(appId)]
  const name = appName(appId)
  return (taskId, endpoints) => {
    const lowest = endpoints.lowest
    const first: Registration = lowest === undefined
      ? { ID: taskId, Name: name, Address: endpoints.address, Tags: tags }
      : { ID: taskId, Name: name, Address: endpoints.address, Tags: tags, Port: lowest.port }
    if (options.servicePerPort !== true || lowest === undefined) return [first]
    const others = endpoints.ports.filter((port) => port !== lowest).map((port): Registration => ({
      ID: portServiceId(taskId, port),
      Name: portServiceName(appId, port),
      Address: endpoints.address,
      Tags: tags,
      Port: port.port
    }))
    return [first, ...others]
  }
}

/** The registration of a running task of a host-networking app: on its host's agent, lowest port only (as the original). */
export const registration = (
  registrationId: string,
  app: AppId,
  task: { readonly id: TaskId; readonly host: Host; readonly ports?: ReadonlyArray<number> | undefined }
): Registration => registrations(registrationId, { appId: app, taskId: task.id, endpoints: taskEndpoints({}, task) })[0]!

/** Every key consular writes lives below this prefix; nothing outside it is ever touched. */
export const kvRoot = "consular/"

/**
 * The key whose lock elects the leader among instances sharing a registration id. Never under `kvRoot`: that
 * tree holds labels and is purged.
 */
export const leaderKey = (registrationId: string): string => `service/consular/${registrationId}/leader`

/** Why a leader key cannot be used, or undefined when it can. */
export const leaderKeyProblem = (key: string): string | undefined =>
  key.trim() === "" || key.startsWith("/") || key.endsWith("/")
    ? "must be a key name, without a leading or trailing '/'"
    : key.startsWith(kvRoot)
    ? `must not be under ${kvRoot}: that tree holds labels and is purged`
    : undefined

/** A KV key in a URL path: each segment encoded, the slashes kept (Consul decodes the path). */
export const kvPath = (key: string): string => `/v1/kv/${key.split("/").map(encodeURIComponent).join("/")}`

/** "consular/<app-name>/": with the trailing slash, so that "web" never lists or deletes "web2". */
export const appKvPrefix = (name: AppName): string => `${kvRoot}${name}/`

export const labelKey = (name: AppName, label: string): string => `${appKvPrefix(name)}${label}`

/**
 * Where a key below `consular/` belongs: the app name and the label. Undefined for keys consular never writes
 * (a leaf right under `consular/`, or an empty app name). `consular/<app>/` itself is where an empty label key
 * lives, so that it is cleaned up and purged like any other label.
 */
export const parseLabelKey = (key: string): { readonly app: AppName; readonly label: string } | undefined => {
  if (!key.startsWith(kvRoot)) return undefined
  const rest = key.slice(kvRoot.length)
  const slash = rest.indexOf("/")
  if (slash <= 0) return undefined
  return { app: nameOf(rest.slice(0, slash)), label: rest.slice(slash + 1) }
}

/**
 * A label value as stored in KV: its JSON encoding as Python's json.dumps wrote it (non-ASCII escaped as \uXXXX),
 * so `bar` is the five bytes `"bar"`. An empty string is stored as an empty value, as before.
 */
export const encodeLabelValue = (value: string): string =>
  value === ""
    ? ""
    : JSON.stringify(value).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`)

/** The agent of a task's host: the main Consul URL with its host swapped, same scheme and port (as before). */
export const agentUrl = (consul: URL, host: string): URL => {
  const url = new URL(consul.href)
  url.hostname = host.includes(":") && !host.startsWith("[") ? `[${host}]` : host
  return url
}

/** The callback Marathon posts events to; exactly the original's, or Marathon delivers every event twice. */
export const callbackUrl = (o: {
  readonly scheme: string
  readonly host: string
  readonly port: number
  readonly registrationId: string
  readonly secret?: string | undefined
}): string => {
  const base = `${o.scheme}://${o.host}:${o.port}/events?registration=${o.registrationId}`
  return o.secret === undefined ? base : `${base}&secret=${encodeURIComponent(o.secret)}`
}

/** The id Consul gives the one check in a registration body: `service:<service id>` (agent/structs CheckTypes). */
export const ttlCheckId = (serviceId: string): string => `service:${serviceId}`
