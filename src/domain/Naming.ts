import { Schema } from "effect"
import type { AppId, Host, TaskId } from "./MarathonApi.js"
import type { Registration } from "./ConsulApi.js"

/**
 * The one place that builds Consul strings. The layout is the Python consular's, byte for byte:
 * consul-template and existing users read it.
 */

/** A Consul service name derived from an app id: "/grp/web" -> "grp-web". */
export const AppName = Schema.String.pipe(Schema.brand("AppName"))
export type AppName = typeof AppName.Type

export const appName = (id: AppId | string): AppName => AppName.make(id.replace(/^\/+/, "").replaceAll("/", "-"))

const regIdTagPrefix = "consular-reg-id="
const appIdTagPrefix = "consular-app-id="

export const regIdTag = (registrationId: string): string => `${regIdTagPrefix}${registrationId}`
export const appIdTag = (id: AppId | string): string => `${appIdTagPrefix}${id}`

/** The app id in a service's tags; undefined when there is none, or more than one (we cannot tell whose it is). */
export const appIdFromTags = (tags: ReadonlyArray<string>): string | undefined => {
  const found = tags.filter((tag) => tag.startsWith(appIdTagPrefix))
  return found.length === 1 ? found[0]!.slice(appIdTagPrefix.length) : undefined
}

export const isOwnedBy = (tags: ReadonlyArray<string> | null, registrationId: string): boolean =>
  tags !== null && tags.includes(regIdTag(registrationId))

/** The registration of a running task: on its host's agent, lowest port only (as the original). */
export const registration = (
  registrationId: string,
  app: AppId,
  task: { readonly id: TaskId; readonly host: Host; readonly ports?: ReadonlyArray<number> | undefined }
): Registration => {
  const ports = task.ports ?? []
  const base = {
    ID: task.id,
    Name: appName(app),
    Address: task.host,
    Tags: [regIdTag(registrationId), appIdTag(app)]
  }
  // a fold, not Math.min(...ports): spreading a long list (an event may carry 100,000 ports) overflows the stack
  return ports.length === 0 ? base : { ...base, Port: ports.reduce((low, port) => Math.min(low, port)) }
}

/** Every key consular writes lives below this prefix; nothing outside it is ever touched. */
export const kvRoot = "consular/"

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
  return { app: AppName.make(rest.slice(0, slash)), label: rest.slice(slash + 1) }
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
