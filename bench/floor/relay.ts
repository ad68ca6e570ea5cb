import * as http from "node:http"
import {
  agentOrigin, appName, encodeLabel, kvPath, kvValue, makeClient, maxTxnOperations, ownedAppId, parseFlags,
  registrationOf, setOperation
} from "./wire.js"
import type { TxnOperation } from "./wire.js"

/**
 * The event relay floor: consular's callback receiver written by hand on plain Node 20. `POST /events` with a
 * Marathon `status_update_event`: TASK_RUNNING registers the task on its host's agent and, for an app version it
 * has not seen yet, reads the app and its KV tree (at the same time as the registration) and writes the labels
 * that differ; an ending state deregisters the task (only ours: a service it did not register is looked at
 * first). It answers 200 once Consul has the change, 400 for what it cannot read, 502 when Consul or Marathon fail.
 *
 *   node relay.js --host 127.0.0.1 --port P --consul URL --marathon URL --registration-id ID
 */

const flags = parseFlags(process.argv.slice(2), ["host", "port", "consul", "marathon", "registration-id"], [])
const consul = new URL(flags.get("consul") ?? "http://localhost:8500")
const marathon = new URL(flags.get("marathon") ?? "http://localhost:8080")
const registrationId = flags.get("registration-id") ?? "consular"
const { send } = makeClient(64)

const ending = new Set(["TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_LOST", "TASK_KILLING", "TASK_ERROR", "TASK_DROPPED",
  "TASK_GONE", "TASK_GONE_BY_OPERATOR", "TASK_UNREACHABLE", "TASK_UNKNOWN"])
/** app id -> the version whose labels are in KV */
const labelVersions = new Map<string, string>()
/** "agent task" of services this relay registered */
const owned = new Set<string>()

class Upstream extends Error {}
const expect = (what: string, answer: { status: number; body: string }, ok: ReadonlyArray<number> = [200]) => {
  if (!ok.includes(answer.status)) throw new Upstream(`${what}: ${answer.status} ${answer.body.slice(0, 200)}`)
  return answer
}

interface StatusUpdate {
  readonly taskId: string
  readonly taskStatus: string
  readonly appId: string
  readonly host: string
  readonly ports?: ReadonlyArray<number>
  readonly version?: string
}

const refreshLabels = async (appId: string): Promise<void> => {
  const name = appName(appId)
  const [appAnswer, kvAnswer] = await Promise.all([
    send(marathon, "GET", `/v2/apps${appId}`),
    send(consul, "GET", `${kvPath(`consular/${name}/`)}?recurse=true`)
  ])
  if (appAnswer.status === 404) return // the app is gone: nothing more to do
  const { app } = JSON.parse(expect("read app", appAnswer).body) as { app: { labels?: Record<string, string>; version?: string } }
  const existing = new Map((JSON.parse(expect("read kv", kvAnswer, [200, 404]).body || "[]") as Array<{ Key: string; Value: string | null }>)
    .map((entry) => [entry.Key, kvValue(entry.Value)]))
  const operations: Array<TxnOperation> = []
  const wanted = new Set<string>()
  for (const [label, value] of Object.entries(app.labels ?? {})) {
    const key = `consular/${name}/${label}`
    wanted.add(key)
    const encoded = encodeLabel(value)
    if (existing.get(key) !== encoded) operations.push(setOperation(key, encoded))
  }
  for (const key of existing.keys()) if (!wanted.has(key)) operations.push({ KV: { Verb: "delete", Key: key } })
  for (let i = 0; i < operations.length; i += maxTxnOperations) {
    expect("write labels", await send(consul, "PUT", "/v1/txn", JSON.stringify(operations.slice(i, i + maxTxnOperations))))
  }
  if (app.version !== undefined) labelVersions.set(appId, app.version)
}

const register = async (event: StatusUpdate): Promise<void> => {
  const registration = registrationOf(registrationId, event.appId, { id: event.taskId, host: event.host, ports: event.ports })
  const registering = send(agentOrigin(consul, event.host), "PUT", "/v1/agent/service/register", JSON.stringify(registration)).then((answer) => {
    expect("register", answer)
    owned.add(`${event.host} ${event.taskId}`)
  })
  const fresh = event.version === undefined || labelVersions.get(event.appId) !== event.version
  await Promise.all([registering, fresh ? refreshLabels(event.appId) : undefined])
}

const deregister = async (event: StatusUpdate): Promise<void> => {
  const agent = agentOrigin(consul, event.host)
  const key = `${event.host} ${event.taskId}`
  if (!owned.has(key)) {
    const filter = encodeURIComponent(`ID == ${JSON.stringify(event.taskId)}`)
    const listing = JSON.parse(expect("list services", await send(agent, "GET", `/v1/agent/services?filter=${filter}`)).body) as Record<string, { ID: string; Tags?: Array<string> | null }>
    const service = Object.values(listing).find((s) => s.ID === event.taskId)
    if (service === undefined || ownedAppId(service.Tags, registrationId) === undefined) return
  }
  expect("deregister", await send(agent, "PUT", `/v1/agent/service/deregister/${encodeURIComponent(event.taskId)}`), [200, 404])
  owned.delete(key)
}

const reply = (response: http.ServerResponse, status: number, body: unknown) => {
  const text = JSON.stringify(body)
  response.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) })
  response.end(text)
}

const handle = async (text: string): Promise<[number, unknown]> => {
  let event: Partial<StatusUpdate> & { eventType?: unknown }
  try {
    event = JSON.parse(text) as typeof event
  } catch {
    return [400, { error: "invalid JSON" }]
  }
  if (typeof event !== "object" || event === null || typeof event.eventType !== "string") return [400, { error: "invalid event" }]
  if (event.eventType !== "status_update_event") return [200, { status: "ok", outcome: "ignored" }]
  const { taskId, taskStatus, appId, host } = event
  if (typeof taskId !== "string" || typeof taskStatus !== "string" || typeof appId !== "string" || typeof host !== "string") {
    return [400, { error: "invalid status_update_event" }]
  }
  const update: StatusUpdate = { ...event, taskId, taskStatus, appId, host }
  try {
    if (taskStatus === "TASK_RUNNING") {
      await register(update)
      return [200, { status: "ok", outcome: "registered" }]
    }
    if (ending.has(taskStatus)) {
      await deregister(update)
      return [200, { status: "ok", outcome: "deregistered" }]
    }
    return [200, { status: "ok", outcome: "ignored" }]
  } catch (error) {
    return [502, { error: "upstream failed", detail: error instanceof Error ? error.message : String(error) }]
  }
}

const server = http.createServer((request, response) => {
  if (request.method === "GET" && (request.url === "/" || request.url === "/ready")) return reply(response, 200, [])
  if (request.method !== "POST" || !(request.url ?? "").startsWith("/events")) return reply(response, 404, { error: "not found" })
  const chunks: Array<Buffer> = []
  let size = 0
  request.on("data", (chunk: Buffer) => {
    size += chunk.length
    if (size > 1024 * 1024) request.destroy()
    else chunks.push(chunk)
  })
  request.on("end", () => {
    handle(Buffer.concat(chunks).toString("utf8")).then(([status, body]) => reply(response, status, body), (error: unknown) => reply(response, 500, { error: String(error) }))
  })
})
server.keepAliveTimeout = 60_000
server.listen(Number(flags.get("port") ?? 7000), flags.get("host") ?? "localhost")
for (const signal of ["SIGTERM", "SIGINT"] as const) process.once(signal, () => server.close(() => process.exit(0)))
