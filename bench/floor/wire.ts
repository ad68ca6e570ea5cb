import * as http from "node:http"

/**
 * What both floor programs share: a keep-alive HTTP/1.1 client on Node's own `http` module, flag parsing, and
 * the Consul layout's strings (app name, tags, label values). Plain Node 20, no dependency, nothing from src/:
 * the floor is what a person would write by hand to do consular's job, and is compared with it.
 */

export interface Answer {
  readonly status: number
  readonly body: string
}

export class RequestFailed extends Error {}

/** `GET`/`PUT`/… with a string body; the whole answer is read; `timeoutMs` covers both ways. */
export type Send = (origin: URL, method: string, path: string, body?: string, timeoutMs?: number) => Promise<Answer>

export const makeClient = (connections: number): { readonly send: Send; readonly close: () => void } => {
  const agent = new http.Agent({ keepAlive: true, maxSockets: connections, maxFreeSockets: connections, scheduling: "lifo", timeout: 4_000 })
  const send: Send = (origin, method, path, body, timeoutMs = 5_000) =>
    new Promise((resolve, reject) => {
      const headers: Record<string, string | number> = body === undefined
        ? { "content-length": 0 }
        : { "content-type": "application/json", "content-length": Buffer.byteLength(body) }
      const request = http.request({ hostname: origin.hostname, port: origin.port, path, method, headers, agent }, (response) => {
        const chunks: Array<Buffer> = []
        response.on("data", (chunk: Buffer) => chunks.push(chunk))
        response.on("error", reject)
        response.on("end", () => {
          clearTimeout(timer)
          resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") })
        })
      })
      const timer = setTimeout(() => request.destroy(new RequestFailed(`${method} ${origin.host}${path}: no answer in ${timeoutMs} ms`)), timeoutMs)
      request.on("error", (error) => {
        clearTimeout(timer)
        reject(error)
      })
      request.end(body)
    })
  return { send, close: () => agent.destroy() }
}

/** `--name value` and `--flag` options; unknown ones are refused. */
export const parseFlags = (argv: ReadonlyArray<string>, known: ReadonlyArray<string>, switches: ReadonlyArray<string>): Map<string, string> => {
  const flags = new Map<string, string>()
  for (let i = 0; i < argv.length; i++) {
    const name = argv[i]!.replace(/^--/, "")
    if (switches.includes(name)) flags.set(name, "true")
    else if (known.includes(name) && i + 1 < argv.length) flags.set(name, argv[++i]!)
    else throw new Error(`unknown or incomplete option ${argv[i]}`)
  }
  return flags
}

// --- the Consul layout (ORIGINAL.md) ---------------------------------------------------------------------

export const appName = (appId: string): string => appId.replace(/^\/+/, "").replaceAll("/", "-")

export const regIdTag = (registrationId: string): string => `consular-reg-id=${registrationId}`
const appIdTagPrefix = "consular-app-id="

/** The app id of a service we own: exactly one app-id tag; undefined when it is not ours to judge. */
export const ownedAppId = (tags: ReadonlyArray<string> | null | undefined, registrationId: string): string | undefined => {
  if (tags == null || !tags.includes(regIdTag(registrationId))) return undefined
  const found = tags.filter((tag) => tag.startsWith(appIdTagPrefix))
  return found.length === 1 ? found[0]!.slice(appIdTagPrefix.length) : undefined
}

export interface RegistrationBody {
  readonly ID: string
  readonly Name: string
  readonly Address: string
  readonly Port?: number
  readonly Tags: ReadonlyArray<string>
}

export const registrationOf = (registrationId: string, appId: string, task: { id: string; host: string; ports?: ReadonlyArray<number> | undefined }): RegistrationBody => {
  const base = { ID: task.id, Name: appName(appId), Address: task.host, Tags: [regIdTag(registrationId), `${appIdTagPrefix}${appId}`] }
  const ports = task.ports ?? []
  return ports.length === 0 ? base : { ...base, Port: ports.reduce((low, port) => Math.min(low, port)) }
}

/** A label value as the Python consular stored it: JSON-encoded, non-ASCII as \uXXXX; "" stays empty. */
export const encodeLabel = (value: string): string =>
  value === "" ? "" : JSON.stringify(value).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`)

/** `/v1/kv/<key>` with each segment escaped */
export const kvPath = (key: string): string => `/v1/kv/${key.split("/").map(encodeURIComponent).join("/")}`

/** An agent's origin: the main Consul URL with the host swapped, same scheme and port. */
export const agentOrigin = (consul: URL, host: string): URL => {
  const url = new URL(consul.href)
  url.hostname = host
  return url
}

/** `[{ KV: … }]` operations of `PUT /v1/txn`: sets (value in base64), deletes and tree deletes. */
export type TxnOperation = { readonly KV: { readonly Verb: "set" | "delete" | "delete-tree"; readonly Key: string; readonly Value?: string } }

export const setOperation = (key: string, value: string): TxnOperation => ({ KV: { Verb: "set", Key: key, Value: Buffer.from(value, "utf8").toString("base64") } })

/** Consul's limit of operations per transaction. */
export const maxTxnOperations = 64

/** Runs `job` over `items`, `lanes` at a time; never rejects (a job records its own failure). */
export const inLanes = async <A>(items: ReadonlyArray<A>, lanes: number, job: (item: A) => Promise<void>): Promise<void> => {
  let next = 0
  const lane = async () => {
    while (next < items.length) await job(items[next++]!)
  }
  await Promise.all(Array.from({ length: Math.max(1, Math.min(lanes, items.length)) }, lane))
}

/** `Value` of a KV entry (base64, null for empty) as text. */
export const kvValue = (value: string | null): string => value === null ? "" : Buffer.from(value, "base64").toString("utf8")
