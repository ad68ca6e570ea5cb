import { HttpClientRequest } from "@effect/platform"
import type { HttpServerError } from "@effect/platform"
import { Cause, Clock, Console, Context, Duration, Effect, Either, Exit, Fiber, Layer, LogLevel, Option, Schema } from "effect"
import type { Scope } from "effect"
import * as Net from "node:net"
import type { AgentService } from "./domain/ConsulApi.js"
import { planSize } from "./domain/Diff.js"
import { AppId } from "./domain/MarathonApi.js"
import { appIdTag, appName, callbackUrl, encodeLabelValue, labelKey, regIdTag, registrations } from "./domain/Naming.js"
import { taskEndpoints } from "./domain/Networking.js"
import type { TaskEndpoints } from "./domain/Networking.js"
import { podTaskEndpoints } from "./domain/Pods.js"
import { serveConsul } from "./embedded/ConsulServer.js"
import { serveMarathon } from "./embedded/MarathonServer.js"
import { Consul, ConsulLive } from "./services/Consul.js"
import { ConsulStore } from "./services/ConsulStore.js"
import * as Http from "./services/Http.js"
import { LoggerLive } from "./services/Logger.js"
import { MarathonLive } from "./services/Marathon.js"
import type { Marathon } from "./services/Marathon.js"
import { MarathonStore } from "./services/MarathonStore.js"
import type { MarathonEvent, StoredTask } from "./services/MarathonStore.js"
import { daemonObservability, runDaemon } from "./programs/Daemon.js"
import type { DaemonSettings } from "./programs/Daemon.js"
import { LedgerLive } from "./programs/Ledger.js"
import type { Ledger } from "./programs/Ledger.js"
import { summaryLines, syncOnce } from "./programs/Sync.js"
import type { SyncSettings } from "./programs/Sync.js"
import { TopologyLive } from "./programs/Topology.js"
import { HostResolver, HostResolverLive } from "./services/HostResolver.js"
import type { Topology } from "./programs/Topology.js"

/**
 * `consular demo`: what a newcomer runs on a machine with no Consul and no Marathon. An embedded Marathon and an
 * embedded Consul datacenter (three agents, one port, 127.0.0.1-3) are started on loopback; part 1 runs the real
 * sync through the live HTTP clients and prints the layout it produced; part 2 runs the real daemon, which
 * subscribes its callback with the Marathon, and plays a story through the events that Marathon POSTs to it.
 * After each step Consul is read back over HTTP until it matches Marathon (bounded by a deadline) and printed.
 * Everything the demo builds (stores, servers, clients) lives and dies inside it. It assembles its own layers,
 * as main.ts does for the other commands, so it lives beside main.ts rather than among the programs.
 */

/** A step of the demo that did not come out right: what the step was and what Consul got wrong. */
export class DemoFailed extends Schema.TaggedError<DemoFailed>()("DemoFailed", {
  step: Schema.String,
  detail: Schema.String
}) {
  override get message() {
    return `demo step "${this.step}" failed: ${this.detail}`
  }
}

export interface DemoOptions {
  /** where each line of the report goes; default: stdout */
  readonly print?: ((line: string) => Effect.Effect<void>) | undefined
  /** how long Consul may take to reflect a step; default 5 seconds */
  readonly stepTimeout?: Duration.DurationInput | undefined
}

/** One service as an agent lists it. */
export interface ServiceRow {
  readonly agent: string
  readonly service: AgentService
}

/** What Consul holds, as its HTTP API answers: every agent's services and every KV entry (raw values). */
export interface ConsulLayout {
  /** by agent address, then service ID */
  readonly services: ReadonlyArray<ServiceRow>
  /** every key, consular's and others', by key */
  readonly kv: ReadonlyArray<{ readonly key: string; readonly value: string }>
}

export interface DemoResult {
  /** Consul after the one-shot sync of part 1 */
  readonly afterSync: ConsulLayout
  /** Consul after the last step of the daemon's story */
  readonly final: ConsulLayout
}

// --- the datacenter ----------------------------------------------------------------------------------

const registrationId = "consular"

interface DemoAgent {
  readonly address: string
  readonly node: string
}

const agents: ReadonlyArray<DemoAgent> = [
  { address: "127.0.0.1", node: "consul-1" },
  { address: "127.0.0.2", node: "consul-2" },
  { address: "127.0.0.3", node: "consul-3" }
]

/** What consular must leave alone: another team's service, another consular's service, a key outside consular/. */
const foreignServices: ReadonlyArray<ServiceRow> = [
  { agent: "127.0.0.1", service: { ID: "postgres", Service: "postgres", Address: "127.0.0.1", Port: 5432, Tags: ["primary"] } },
  {
    agent: "127.0.0.2",
    service: {
      ID: "search.x1",
      Service: "search",
      Address: "127.0.0.2",
      Port: 9200,
      Tags: [regIdTag("consular-eu"), appIdTag("/search")]
    }
  }
]
const foreignKv: ReadonlyArray<{ readonly key: string; readonly value: string }> = [{ key: "config/maintenance", value: "false" }]

const ourTags = (app: string): Array<string> => [regIdTag(registrationId), appIdTag(app)]

const seed = (consul: ConsulStore, marathon: MarathonStore): void => {
  for (const agent of agents) consul.addAgent(agent.address, agent.node)
  for (const { agent, service } of foreignServices) {
    consul.register(agent, { ID: service.ID, Name: service.Service, Address: service.Address, Port: service.Port, Tags: [...(service.Tags ?? [])] })
  }
  for (const { key, value } of foreignKv) consul.put(key, value)
  // ours, but dead: /billing is gone from Marathon, and /shop/web no longer has the label "old"
  consul.register("127.0.0.3", { ID: "billing.d1", Name: "billing", Address: "127.0.0.3", Port: 31500, Tags: ourTags("/billing") })
  consul.put("consular/billing/owner", "\"finance\"")
  consul.put("consular/shop-web/old", "\"yes\"")

  marathon.putApp("/shop/web", { domain: "shop.example.org", tier: "frontend" })
  marathon.setTask("/shop/web", { id: "shop_web.a1", host: "127.0.0.1", ports: [31001, 31000] }, false)
  marathon.setTask("/shop/web", { id: "shop_web.a2", host: "127.0.0.2", ports: [31002, 31003] }, false)
  // Marathon checks /shop/web's health, and both tasks pass (the daemon relays that to Consul: --health-checks ttl)
  marathon.setHealthChecks("/shop/web", [{ protocol: "HTTP", path: "/health", portIndex: 0, intervalSeconds: 10 }])
  marathon.setTaskHealth("/shop/web", "shop_web.a1", true, { emit: false })
  marathon.setTaskHealth("/shop/web", "shop_web.a2", true, { emit: false })
  marathon.putApp("/worker", { queue: "orders", canary: "" })
  marathon.setTask("/worker", { id: "worker.w1", host: "127.0.0.3", ports: [] }, false)
  marathon.putApp("/api", { owner: "platform" })
  marathon.setTask("/api", { id: "api.p1", host: "127.0.0.2", ports: [31010] }, false)
  marathon.setTask("/api", { id: "api.p2", host: "127.0.0.3", ports: [31011], state: "TASK_STAGING" }, false)
  // IP per task (Marathon 1.5+ on a CNI network): reached at the task's own address and its container port
  marathon.setNetworking("/payments", {
    networks: [{ mode: "container", name: "calico" }],
    container: { portMappings: [{ containerPort: 9090, name: "admin" }, { containerPort: 8080, name: "http" }] }
  })
  marathon.setTask("/payments", { id: "payments.c1", host: "127.0.0.3", ports: [], ipAddresses: [{ ipAddress: "10.32.0.5", protocol: "IPv4" }] }, false)
  // a pod (Marathon 1.4+): its web container is a service at the agent's allocated host port; the sidecar is not
  marathon.putPod("/shop/cart", {
    labels: { tier: "cart" },
    networks: [{ mode: "host" }],
    containers: [{ name: "web", endpoints: [{ name: "http", containerPort: 8080, hostPort: 0 }] }, { name: "sidecar" }]
  })
  marathon.setPodInstance("/shop/cart", { id: "shop_cart.instance-k1", agentHostname: "127.0.0.1", hostPorts: { web: [31020] } }, false)
}

// --- what Consul should hold, what it holds --------------------------------------------------------------

const byAgentThenId = (a: ServiceRow, b: ServiceRow): number =>
  a.agent === b.agent ? a.service.ID.localeCompare(b.service.ID) : a.agent.localeCompare(b.agent)

/** Consul as it must be once it matches Marathon: the foreign entries, plus Marathon's running tasks and labels. */
const expectedLayout = (marathon: MarathonStore): ConsulLayout => {
  const services: Array<ServiceRow> = [...foreignServices]
  const kv = new Map(foreignKv.map(({ key, value }) => [key, value]))
  const expect = (agent: string, appId: string, taskId: string, endpoints: TaskEndpoints) => {
    const [r] = registrations(registrationId, { appId, taskId, endpoints })
    services.push({ agent, service: { ID: r!.ID, Service: r!.Name, Address: r!.Address, Port: r!.Port ?? 0, Tags: r!.Tags } })
  }
  for (const app of marathon.apps.values()) {
    const id = AppId.make(app.id)
    for (const task of app.tasks) {
      if (task.state === "TASK_RUNNING") expect(task.host, id, task.id, taskEndpoints(app.networking ?? {}, task))
    }
    for (const [label, value] of Object.entries(app.labels)) kv.set(labelKey(appName(id), label), encodeLabelValue(value))
  }
  for (const pod of marathon.pods.values()) {
    for (const instance of pod.instances) {
      for (const container of instance.containers) {
        const declared = pod.containers.find((c) => c.name === container.name)?.endpoints ?? []
        if (container.status !== "TASK_RUNNING" || declared.length === 0) continue
        const task = { host: instance.agentHostname, ports: container.allocatedHostPorts, ipAddresses: instance.addresses.map((ipAddress) => ({ ipAddress })) }
        expect(instance.agentHostname, pod.id, container.containerId, podTaskEndpoints(pod, container.name, task))
      }
    }
    for (const [label, value] of Object.entries(pod.labels)) kv.set(labelKey(appName(pod.id), label), encodeLabelValue(value))
  }
  return {
    services: services.sort(byAgentThenId),
    kv: [...kv].map(([key, value]) => ({ key, value })).sort((a, b) => a.key.localeCompare(b.key))
  }
}

/** Reads Consul over HTTP: the catalog's agents, each agent's services, and the whole KV store. */
const readLayout = Effect.gen(function*() {
  const consul = yield* Consul
  const nodes = yield* consul.catalogNodes
  const perAgent = yield* Effect.forEach(nodes, (node) =>
    Effect.map(consul.agentServices(node.Address), (services) =>
      // the tables show no Meta: every Consul lists an empty one for a service registered without
      [...services.values()].map(({ Meta: _meta, ...service }): ServiceRow => ({ agent: node.Address, service }))), { concurrency: 4 })
  const kv = yield* consul.kvTree("").pipe(Effect.catchTag("NotFound", () => Effect.succeed(new Map<string, string>())))
  return {
    services: perAgent.flat().sort(byAgentThenId),
    kv: [...kv].map(([key, value]) => ({ key, value })).sort((a, b) => a.key.localeCompare(b.key))
  } satisfies ConsulLayout
})

/** A raw KV value as printed: as stored (a label is JSON-encoded), "(empty)" for an empty one. */
const showValue = (value: string): string => value === "" ? "(empty)" : value

const rowKey = (row: ServiceRow): string => `${row.agent} ${row.service.ID}`

const sameService = (a: AgentService, b: AgentService): boolean =>
  a.Service === b.Service && a.Address === b.Address && a.Port === b.Port &&
  JSON.stringify([...(a.Tags ?? [])].sort()) === JSON.stringify([...(b.Tags ?? [])].sort())

const describeService = (s: AgentService): string =>
  `${s.Service} ${s.Address}:${s.Port} [${(s.Tags ?? []).join(", ")}]`

/** What keeps `actual` from being `expected`, one line per service or key; empty when they match. */
const differences = (expected: ConsulLayout, actual: ConsulLayout): Array<string> => {
  const problems: Array<string> = []
  const got = new Map(actual.services.map((row) => [rowKey(row), row]))
  const want = new Map(expected.services.map((row) => [rowKey(row), row]))
  for (const [key, row] of want) {
    const found = got.get(key)
    if (found === undefined) problems.push(`service ${row.service.ID} missing on agent ${row.agent}`)
    else if (!sameService(found.service, row.service)) {
      problems.push(`service ${row.service.ID} on agent ${row.agent} is ${describeService(found.service)}, expected ${describeService(row.service)}`)
    }
  }
  for (const [key, row] of got) if (!want.has(key)) problems.push(`service ${row.service.ID} on agent ${row.agent} should not be there`)
  const gotKv = new Map(actual.kv.map(({ key, value }) => [key, value]))
  const wantKv = new Map(expected.kv.map(({ key, value }) => [key, value]))
  for (const [key, value] of wantKv) {
    const found = gotKv.get(key)
    if (found === undefined) problems.push(`key ${key} missing`)
    else if (found !== value) problems.push(`key ${key} holds ${showValue(found)}, expected ${showValue(value)}`)
  }
  for (const key of gotKv.keys()) if (!wantKv.has(key)) problems.push(`key ${key} should not be there`)
  return problems
}

// --- printing ----------------------------------------------------------------------------------------

/** Columns padded to their widest cell; the last column is not padded. */
const table = (rows: ReadonlyArray<ReadonlyArray<string>>, indent: string): Array<string> => {
  const widths: Array<number> = []
  for (const row of rows) row.forEach((cell, i) => {
    widths[i] = Math.max(widths[i] ?? 0, cell.length)
  })
  return rows.map((row) => (indent + row.map((cell, i) => i === row.length - 1 ? cell : cell.padEnd(widths[i]!)).join("  ")).trimEnd())
}

type Mark = " " | "+" | "-"

/**
 * The entries of `now`, each marked against `before`: `+` appeared or changed, `-` gone (or the old version of a
 * changed one, just before its new one), blank unchanged. Without `before`, nothing is marked.
 */
const marked = <A>(
  now: ReadonlyArray<A>,
  before: ReadonlyArray<A> | undefined,
  key: (a: A) => string,
  same: (a: A, b: A) => boolean,
  order: (a: A, b: A) => number
): Array<{ readonly mark: Mark; readonly item: A }> => {
  if (before === undefined) return now.map((item) => ({ mark: " ", item }))
  const old = new Map(before.map((item) => [key(item), item]))
  const current = new Set(now.map(key))
  const out: Array<{ readonly mark: Mark; readonly item: A }> = []
  for (const item of now) {
    const was = old.get(key(item))
    if (was !== undefined && !same(was, item)) out.push({ mark: "-", item: was })
    out.push({ mark: was !== undefined && same(was, item) ? " " : "+", item })
  }
  for (const item of before) if (!current.has(key(item))) out.push({ mark: "-", item })
  // a stable sort: the "-" of a changed entry stays just before its "+"
  return out.map((entry, index) => ({ entry, index }))
    .sort((a, b) => order(a.entry.item, b.entry.item) || a.index - b.index)
    .map(({ entry }) => entry)
}

interface LayoutView {
  /** mark what changed since this layout */
  readonly previous?: ConsulLayout | undefined
  /** print only what changed since `previous`, and how much did not */
  readonly changesOnly?: boolean | undefined
}

/** Consul as two tables: the services of every agent, and the KV store with raw values. */
const layoutLines = (layout: ConsulLayout, view: LayoutView = {}): Array<string> => {
  const services = marked(layout.services, view.previous?.services, rowKey, (a, b) => sameService(a.service, b.service), byAgentThenId)
  const kv = marked(layout.kv, view.previous?.kv, (e) => e.key, (a, b) => a.value === b.value, (a, b) => a.key.localeCompare(b.key))
  const shown = <A>(entries: Array<{ readonly mark: Mark; readonly item: A }>) =>
    view.changesOnly === true ? entries.filter((entry) => entry.mark !== " ") : entries
  const serviceRows = shown(services).map(({ mark, item: { agent, service } }) =>
    [mark, agent, service.ID, service.Service, service.Address, String(service.Port), (service.Tags ?? []).join(", ")])
  const kvRows = shown(kv).map(({ mark, item }) => [mark, item.key, showValue(item.value)])
  const lines: Array<string> = []
  if (serviceRows.length > 0) {
    lines.push(...table([[" ", "agent", "ID", "Name", "Address", "Port", "Tags"], ...serviceRows], "    "))
  }
  if (kvRows.length > 0) lines.push(...table([[" ", "KV key", "raw value"], ...kvRows], "    "))
  if (view.changesOnly === true) {
    const same = (entries: ReadonlyArray<{ readonly mark: Mark }>) => entries.filter((entry) => entry.mark === " ").length
    lines.push(`    (unchanged: ${same(services)} services, ${same(kv)} keys)`)
  }
  return lines
}

const marathonLines = (marathon: MarathonStore): Array<string> => {
  const rows: Array<Array<string>> = [["app", "labels", "task", "state", "host", "ports"]]
  for (const app of [...marathon.apps.values()].sort((a, b) => a.id.localeCompare(b.id))) {
    const labels = Object.entries(app.labels).map(([k, v]) => `${k}=${v === "" ? "\"\"" : v}`).join(", ") || "-"
    if (app.tasks.length === 0) rows.push([app.id, labels, "-", "", "", ""])
    // a task on a container network is reached at its own address: shown beside its agent
    const at = (task: StoredTask) => app.networking?.networks?.some((n) => n.mode === "container") === true && task.ipAddresses !== undefined
      ? `${task.host} (${task.ipAddresses.map((a) => a.ipAddress).join(", ")})`
      : task.host
    app.tasks.forEach((task, i) =>
      rows.push([i === 0 ? app.id : "", i === 0 ? labels : "", task.id, task.state, at(task), task.ports.join(", ") || "-"]))
  }
  for (const pod of [...marathon.pods.values()].sort((a, b) => a.id.localeCompare(b.id))) {
    const labels = Object.entries(pod.labels).map(([k, v]) => `${k}=${v}`).join(", ") || "-"
    const containers = pod.instances.flatMap((instance) => instance.containers.map((container) => ({ instance, container })))
    containers.forEach(({ container, instance }, i) =>
      rows.push([i === 0 ? `${pod.id} (pod)` : "", i === 0 ? labels : "", container.containerId, container.status, instance.agentHostname, container.allocatedHostPorts.join(", ") || "-"]))
  }
  return ["  Marathon", ...table(rows, "    ")]
}

const field = (event: MarathonEvent, name: string): string => {
  const value = event[name]
  return typeof value === "string" ? value : ""
}

/** An event as one table row: its type, and the task (id, state, host) or the app it is about. */
const eventRow = (event: MarathonEvent): Array<string> =>
  event.eventType === "status_update_event"
    ? [event.eventType, `${field(event, "taskId")} ${field(event, "taskStatus")} on ${field(event, "host")}`]
    : event.eventType === "health_status_changed_event" || event.eventType === "instance_health_changed_event"
    ? [event.eventType, `${field(event, "instanceId")} ${event["alive"] ?? event["healthy"] ? "healthy" : "unhealthy"}`]
    : [event.eventType, field(event, "appId") || field(event, "uri")]

// --- the story the daemon is told ----------------------------------------------------------------------

interface Step {
  readonly title: string
  /** what happens in Marathon, in a line */
  readonly says: string
  readonly act: (marathon: MarathonStore) => void
}

const now = () => new Date().toISOString()

const apiPost = (marathon: MarathonStore, id: string, instances: number): void =>
  marathon.emit({
    eventType: "api_post_event",
    timestamp: now(),
    clientIp: "127.0.0.1",
    uri: `/v2/apps${id}`,
    appDefinition: { id, instances, labels: marathon.apps.get(id)?.labels ?? {} }
  })

const deploymentSuccess = (marathon: MarathonStore, id: string): void =>
  marathon.emit({ eventType: "deployment_success", timestamp: now(), appId: id })

/** A task goes through STAGING to RUNNING, each with its status_update_event, as Marathon launches it. */
const launch = (marathon: MarathonStore, app: string, id: string, host: string, ports: ReadonlyArray<number>): void => {
  marathon.setTask(app, { id, host, ports, state: "TASK_STAGING" })
  marathon.setTask(app, { id, host, ports, state: "TASK_RUNNING" })
}

/** Marathon kills a task: KILLING (stop routing to it), then KILLED, when it leaves the app. */
const kill = (marathon: MarathonStore, app: string, id: string): void => {
  const task = marathon.apps.get(app)?.tasks.find((t) => t.id === id)
  if (task === undefined) return
  if (task.state === "TASK_RUNNING") marathon.setTask(app, { id, host: task.host, ports: task.ports, state: "TASK_KILLING" })
  marathon.endTask(app, id, "TASK_KILLED")
}

const story: ReadonlyArray<Step> = [
  {
    title: "Deploy /blog",
    says: "POST /v2/apps {id: /blog, instances: 1, labels: {domain: blog.example.org}}",
    act: (m) => {
      m.putApp("/blog", { domain: "blog.example.org" })
      apiPost(m, "/blog", 1)
      launch(m, "/blog", "blog.b1", "127.0.0.2", [31100])
      deploymentSuccess(m, "/blog")
    }
  },
  {
    title: "Scale /blog to 3 instances",
    says: "PUT /v2/apps/blog {instances: 3}",
    act: (m) => {
      apiPost(m, "/blog", 3)
      launch(m, "/blog", "blog.b2", "127.0.0.3", [31101])
      launch(m, "/blog", "blog.b3", "127.0.0.1", [31102])
      deploymentSuccess(m, "/blog")
    }
  },
  {
    title: "Kill a task of /blog",
    says: "DELETE /v2/apps/blog/tasks/blog.b2?scale=true",
    act: (m) => kill(m, "/blog", "blog.b2")
  },
  {
    title: "Change a label of /blog",
    says: "PUT /v2/apps/blog {labels: {domain: www.blog.example.org}}: a new version, so Marathon replaces each task",
    act: (m) => {
      m.setLabels("/blog", { domain: "www.blog.example.org" })
      apiPost(m, "/blog", 2)
      launch(m, "/blog", "blog.b4", "127.0.0.2", [31103])
      kill(m, "/blog", "blog.b1")
      launch(m, "/blog", "blog.b5", "127.0.0.1", [31104])
      kill(m, "/blog", "blog.b3")
      deploymentSuccess(m, "/blog")
    }
  },
  {
    title: "Scale the pod /shop/cart to 2 instances",
    says: "PUT /v2/pods/shop/cart {scaling: {instances: 2}}: each container of the new instance is a task with its events",
    act: (m) => {
      const instance = { id: "shop_cart.instance-k2", agentHostname: "127.0.0.2", hostPorts: { web: [31021] } }
      m.setPodInstance("/shop/cart", { ...instance, state: "TASK_STAGING" })
      m.setPodInstance("/shop/cart", { ...instance, state: "TASK_RUNNING" })
    }
  },
  {
    title: "Destroy /api",
    says: "DELETE /v2/apps/api: its tasks are killed and the app is gone (its labels go with the next periodic sync)",
    act: (m) => {
      for (const task of [...(m.apps.get("/api")?.tasks ?? [])]) kill(m, "/api", task.id)
      m.removeApp("/api")
      m.emit({ eventType: "app_terminated_event", timestamp: now(), appId: "/api" })
      deploymentSuccess(m, "/api")
    }
  }
]

// --- health in Consul ------------------------------------------------------------------------------------

/** One instance as `GET /v1/health/service/<name>` lists it: what consul-template and DNS route by. */
const HealthEntries = Schema.Array(Schema.Struct({
  Node: Schema.Struct({ Address: Schema.String }),
  Service: Schema.Struct({ ID: Schema.String }),
  Checks: Schema.Array(Schema.Struct({ CheckID: Schema.String, Status: Schema.String, Output: Schema.String }))
}))
type HealthEntries = typeof HealthEntries.Type

interface HealthStep {
  readonly title: string
  readonly says: string
  readonly act: (marathon: MarathonStore) => void
  /** the status each task's check must reach */
  readonly expected: Readonly<Record<string, string>>
}

const healthStory: ReadonlyArray<HealthStep> = [
  {
    title: "A health check of /shop/web fails",
    says: "Marathon's HTTP health check of shop_web.a2 answers 503",
    act: (m) => m.setTaskHealth("/shop/web", "shop_web.a2", false, { cause: "503 Service Unavailable" }),
    expected: { "shop_web.a1": "passing", "shop_web.a2": "critical" }
  },
  {
    title: "It recovers",
    says: "Marathon's HTTP health check of shop_web.a2 answers 200 again",
    act: (m) => m.setTaskHealth("/shop/web", "shop_web.a2", true),
    expected: { "shop_web.a1": "passing", "shop_web.a2": "passing" }
  }
]

const serviceCheck = (entry: HealthEntries[number]) => entry.Checks.find((check) => check.CheckID === `service:${entry.Service.ID}`)

/** Reads `/v1/health/service/<name>` until every task's check has the expected status, bounded by `timeout`. */
const awaitHealth = (
  step: string,
  url: string,
  expected: Readonly<Record<string, string>>,
  timeout: Duration.DurationInput
): Effect.Effect<HealthEntries, DemoFailed, Scope.Scope> =>
  Effect.gen(function*() {
    const http = yield* Http.makeHttp({ timeout: "1 second", retries: 0 })
    const deadline = (yield* Clock.currentTimeMillis) + Duration.toMillis(timeout)
    let last = "Consul was not read"
    while ((yield* Clock.currentTimeMillis) < deadline) {
      const read = yield* Effect.either(http.send(HttpClientRequest.get(url), Http.schemaBody(HealthEntries)))
      if (Either.isRight(read)) {
        const wrong = Object.entries(expected).filter(([id, status]) => {
          const entry = read.right.find((e) => e.Service.ID === id)
          return entry === undefined || serviceCheck(entry)?.Status !== status
        })
        if (wrong.length === 0) return read.right
        last = wrong.map(([id, status]) => `${id} is not ${status}`).join("; ")
      }
      yield* Effect.sleep(pollEvery)
    }
    return yield* new DemoFailed({ step, detail: last })
  })

const healthLines = (entries: HealthEntries): Array<string> =>
  table([
    ["agent", "ID", "check", "status", "output"],
    ...entries.map((entry) => {
      const check = serviceCheck(entry)
      return [entry.Node.Address, entry.Service.ID, check?.CheckID ?? "-", check?.Status ?? "-", check?.Output ?? ""]
    })
  ], "    ")

// --- waiting, bounded ----------------------------------------------------------------------------------

const pollEvery = Duration.millis(50)

/**
 * Reads Consul until it matches `expected`, at most until the deadline; then prints what is still wrong and
 * fails. Polling with a deadline is the only waiting the demo does.
 */
export const awaitLayout = (
  step: string,
  expected: ConsulLayout,
  timeout: Duration.DurationInput,
  print: (line: string) => Effect.Effect<void>
): Effect.Effect<ConsulLayout, DemoFailed, Consul> =>
  Effect.gen(function*() {
    const deadline = (yield* Clock.currentTimeMillis) + Duration.toMillis(timeout)
    let problems: Array<string> = []
    while (true) {
      const read = yield* Effect.either(readLayout)
      if (Either.isRight(read)) {
        problems = differences(expected, read.right)
        if (problems.length === 0) return read.right
      } else {
        problems = [`Consul could not be read: ${read.left.message}`]
      }
      if ((yield* Clock.currentTimeMillis) >= deadline) break
      yield* Effect.sleep(pollEvery)
    }
    yield* print(`  Consul did not match Marathon within ${Duration.format(timeout)}:`)
    for (const problem of problems) yield* print(`    ${problem}`)
    return yield* new DemoFailed({ step, detail: problems.join("; ") })
  })

/** A port the kernel just had free on loopback: the daemon needs it up front, for its callback URL. */
const freePort = Effect.async<number, DemoFailed>((resume) => {
  const server = Net.createServer()
  server.once("error", (error) => resume(Effect.fail(new DemoFailed({ step: "start the daemon", detail: `no free port: ${error.message}` }))))
  server.listen(0, "127.0.0.1", () => {
    const address = server.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    server.close(() => resume(Effect.succeed(port)))
  })
  return Effect.sync(() => {
    server.close()
  })
})

type DaemonFiber = Fiber.RuntimeFiber<void, unknown>

/**
 * Starts the daemon and waits until its `GET /ready` answers 200: its first sync is done and Marathon has its
 * callback, so from then on no event is lost. A port taken between the probe and the bind is tried again with
 * another one.
 */
const startDaemon = (
  base: Omit<DaemonSettings, "port">,
  services: Context.Context<Consul | Marathon | Ledger | Topology | HostResolver>,
  timeout: Duration.DurationInput
): Effect.Effect<{ readonly fiber: DaemonFiber; readonly settings: DaemonSettings }, DemoFailed, Scope.Scope> =>
  Effect.gen(function*() {
    const http = yield* Http.makeHttp({ timeout: "1 second", retries: 0 })
    let lastFailure = "it did not start"
    for (let attempt = 1; attempt <= 3; attempt++) {
      const settings: DaemonSettings = { ...base, port: yield* freePort }
      const fiber: DaemonFiber = yield* Effect.forkScoped(runDaemon(settings).pipe(
        Effect.provide(daemonObservability(settings)),
        Effect.provide(services)
      ))
      const ready = Effect.gen(function*() {
        const deadline = (yield* Clock.currentTimeMillis) + Duration.toMillis(timeout)
        while ((yield* Clock.currentTimeMillis) < deadline) {
          const answered = yield* Effect.either(http.send(HttpClientRequest.get(`http://${settings.host}:${settings.port}/ready`), Http.ignoreBody))
          if (Either.isRight(answered)) return true
          yield* Effect.sleep(pollEvery)
        }
        return false
      })
      const outcome = yield* Effect.raceFirst(
        Effect.map(ready, (up) => up ? Option.some(fiber) : Option.none()),
        Effect.as(Fiber.await(fiber), Option.none<DaemonFiber>())
      )
      if (Option.isSome(outcome)) return { fiber, settings }
      const exit = yield* Fiber.interrupt(fiber)
      lastFailure = Exit.isFailure(exit) && !Cause.isInterruptedOnly(exit.cause)
        ? Cause.pretty(exit.cause)
        : `not ready on ${settings.host}:${settings.port} within ${Duration.format(timeout)}`
    }
    return yield* new DemoFailed({ step: "start the daemon", detail: lastFailure })
  })

/** ServeError carries the listener's error as its cause; its own message is empty. */
const listenFailure = (error: HttpServerError.ServeError): string => {
  const cause = error.cause instanceof Error ? error.cause.message : String(error.cause)
  return cause.includes("EADDRNOTAVAIL")
    ? `${cause} (the agents listen on 127.0.0.1-3: Linux routes all of 127/8 to lo; elsewhere add the aliases, ` +
      "e.g. on macOS: sudo ifconfig lo0 alias 127.0.0.2 up; sudo ifconfig lo0 alias 127.0.0.3 up)"
    : cause
}

// --- the demo ------------------------------------------------------------------------------------------

/** The demo with its output and waits configurable; answers the layouts it checked. */
export const demo = (options: DemoOptions = {}): Effect.Effect<DemoResult, DemoFailed> =>
  Effect.scoped(Effect.gen(function*() {
    const print = options.print ?? ((line: string) => Console.log(line))
    const say = (...lines: ReadonlyArray<string>) => Effect.forEach(lines, print, { discard: true })
    const heading = (title: string) => say("", `== ${title} ==`)
    const stepTimeout = options.stepTimeout ?? "5 seconds"
    // the daemon's passes purge what events cannot: the labels of a destroyed app
    const syncInterval = 1

    const consulStore = new ConsulStore(agents[0]!.address)
    const marathonStore = new MarathonStore()
    seed(consulStore, marathonStore)
    const cannotStart = (what: string) => (error: HttpServerError.ServeError) =>
      new DemoFailed({ step: `start the embedded ${what}`, detail: listenFailure(error) })
    const consulServer = yield* serveConsul(consulStore, { addresses: agents.map((a) => a.address) }).pipe(Effect.mapError(cannotStart("Consul")))
    const marathonServer = yield* serveMarathon(marathonStore, { address: "127.0.0.1" }).pipe(Effect.mapError(cannotStart("Marathon")))
    const consulUrl = new URL(consulServer.url(agents[0]!.address))
    const marathonUrl = new URL(marathonServer.url)
    // what `consular sync` and `consular run` build from their flags; each part gets its own, as each process would
    const services = () =>
      Layer.build(Layer.mergeAll(
        ConsulLive({ url: consulUrl, timeout: "2 seconds", retries: 2, fallbackTimeout: "1 second" }),
        MarathonLive({ url: marathonUrl, timeout: "2 seconds", retries: 2 }),
        LedgerLive,
        TopologyLive(consulUrl),
        HostResolverLive()
      ))
    const syncSettings: SyncSettings = {
      registrationId,
      purge: true,
      fallback: false,
      fallbackTimeout: "1 second",
      consulUrl
    }

    yield* say(
      "consular demo: an embedded Marathon and an embedded Consul datacenter on loopback, and the real consular",
      "talking HTTP to them.",
      `  Marathon  ${marathonServer.url}`,
      `  Consul    ${agents.map((a) => `${a.node} ${consulServer.url(a.address)}`).join(", ")}`
    )

    // --- part 1: one sync -----------------------------------------------------------------------------
    const oneShot = yield* services()
    const check = (step: string) => awaitLayout(step, expectedLayout(marathonStore), stepTimeout, print).pipe(Effect.provide(oneShot))
    yield* heading("1. Before: what Marathon runs, what Consul holds")
    yield* say(
      "  In Consul: a dead service of ours (billing.d1) and a stale label (consular/shop-web/old) to purge; another",
      "  team's service (postgres), another consular's (search.x1) and a key outside consular/ that must stay.",
      ...marathonLines(marathonStore)
    )
    const before = yield* readLayout.pipe(
      Effect.provide(oneShot),
      Effect.mapError((error) => new DemoFailed({ step: "read Consul", detail: error.message }))
    )
    yield* say("  Consul", ...layoutLines(before))

    const sync = (step: string) =>
      syncOnce(syncSettings).pipe(
        Effect.provide(oneShot),
        Effect.mapError((error) => new DemoFailed({ step, detail: error.message })),
        Effect.filterOrElse((report) => report.failures.length === 0, (report) =>
          Effect.fail(new DemoFailed({ step, detail: report.failures.map((f) => `${f.scope}: ${f.message}`).join("; ") })))
      )
    yield* heading("2. consular sync --purge")
    const first = yield* sync("consular sync --purge")
    yield* say(...summaryLines(first).map((line) => `  ${line}`))
    const afterSync = yield* check("consular sync --purge")
    yield* say("  Consul (+ written, - removed)", ...layoutLines(afterSync, { previous: before }))
    const second = yield* sync("consular sync --purge, again")
    yield* say("  and once more, with nothing left to do:", ...summaryLines(second).map((line) => `  ${line}`))
    if (planSize(second.plan) > 0) {
      return yield* new DemoFailed({ step: "consular sync --purge, again", detail: `a second pass still planned ${planSize(second.plan)} writes` })
    }

    // --- part 2: the daemon ---------------------------------------------------------------------------
    yield* heading(`3. consular run --purge --sync-interval ${syncInterval} --health-checks ttl`)
    const daemonBase: Omit<DaemonSettings, "port"> = {
      ...syncSettings,
      // Marathon POSTs its events to our callback, as it did for the Python consular
      events: "callback",
      scheme: "http",
      host: "127.0.0.1",
      syncInterval,
      maxEventBytes: 1024 * 1024,
      reconnectBase: "100 millis",
      reconnectCap: "1 second",
      // every service gets a TTL check whose status is Marathon's verdict on its task
      health: { ttl: "1h", ttlMillis: 3_600_000, initial: "critical" }
    }
    const daemon = yield* startDaemon(daemonBase, yield* services(), stepTimeout)
    yield* say(
      `  the daemon listens on http://${daemon.settings.host}:${daemon.settings.port} and is ready (GET /ready: 200):`,
      "  its first sync is done, and Marathon POSTs its events to",
      `  ${callbackUrl(daemon.settings)}`
    )

    /** Plays a story step on the Marathon and shows the events it POSTed to the daemon. */
    const playStep = (step: { readonly act: (store: MarathonStore) => void; readonly says: string }) => {
      const emitted: Array<MarathonEvent> = []
      const stop = marathonStore.listen((event) => {
        emitted.push(event)
      })
      step.act(marathonStore)
      stop()
      return say(`  Marathon: ${step.says}`, "  events Marathon POSTed to the daemon:", ...table(emitted.map(eventRow), "    "))
    }

    let previous = afterSync
    let number = 4
    for (const step of story) {
      const title = `${number++}. ${step.title}`
      yield* heading(title)
      yield* playStep(step)
      const layout = yield* check(step.title).pipe(
        Effect.tapError(() =>
          Effect.flatMap(Fiber.poll(daemon.fiber), (exit) =>
            Option.isSome(exit) ? print(`  the daemon had stopped: ${Exit.isFailure(exit.value) ? Cause.pretty(exit.value.cause) : "it returned"}`) : Effect.void))
      )
      yield* say("  Consul, once it matched Marathon:", ...layoutLines(layout, { previous, changesOnly: true }))
      previous = layout
    }

    const healthUrl = `${consulServer.url(agents[0]!.address)}/v1/health/service/shop-web`
    for (const step of healthStory) {
      yield* heading(`${number++}. ${step.title}`)
      yield* playStep(step)
      const entries = yield* awaitHealth(step.title, healthUrl, step.expected, stepTimeout)
      const passing = yield* awaitHealth(step.title, `${healthUrl}?passing`, {}, stepTimeout)
      yield* say(
        "  Consul, GET /v1/health/service/shop-web:",
        ...healthLines(entries),
        `  with ?passing (what consul-template, Fabio and DNS route to): ${passing.map((entry) => entry.Service.ID).sort().join(", ")}`
      )
    }

    yield* heading(`${number}. Stop the daemon`)
    yield* Fiber.interrupt(daemon.fiber)
    yield* say("  The daemon has stopped. Consul matched Marathon after every step; it now holds:", ...layoutLines(previous))
    return { afterSync, final: previous }
  }))

/**
 * `consular demo`: prints to stdout, logs only warnings and errors (to stderr, so they never mix with the
 * report). Fails with DemoFailed, after printing what went wrong, when a step does not come out right.
 */
export const runDemo: Effect.Effect<void, DemoFailed> = demo().pipe(
  Effect.asVoid,
  // the CLI reports no errors of its own (runMain's error reporting is off): say it here
  Effect.tapError((error) => Console.error(`consular demo: ${error.message}`)),
  Effect.provide(LoggerLive({ format: "text", level: LogLevel.Warning, toStderr: true }))
)
