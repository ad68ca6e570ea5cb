import { performance } from "node:perf_hooks"
import {
  agentOrigin, appName, encodeLabel, inLanes, kvPath, kvValue, makeClient, maxTxnOperations, ownedAppId, parseFlags,
  registrationOf, setOperation
} from "./wire.js"
import type { RegistrationBody, TxnOperation } from "./wire.js"

/**
 * The sync floor: `consular sync [--purge]` written by hand on plain Node 20. One pass reads Marathon
 * (`/v2/apps?embed=apps.tasks`, and `/v2/pods/::status` as consular does: the bench's Marathon runs none, so the floor
 * only refuses a datacenter that has some) and Consul (catalog nodes, `/v1/agent/services` of each agent, the KV tree under
 * `consular/`), diffs, and writes only what differs in the original's layout, at bounded concurrency; then exits.
 *
 *   node sync.js --consul URL --marathon URL --registration-id ID [--purge] [--concurrency 32] [--loop N]
 *
 * `--loop N` runs N passes in this one process (the daemon's case). Prints one JSON line: the counts of the last
 * pass, the failures of all, and each pass's wall and CPU time.
 */

interface Task {
  readonly id: string
  readonly host: string
  readonly ports?: ReadonlyArray<number>
  readonly state?: string
  readonly startedAt?: string | null
}
interface App {
  readonly id: string
  readonly labels?: Record<string, string>
  readonly tasks?: ReadonlyArray<Task>
}
interface AgentService {
  readonly ID: string
  readonly Service: string
  readonly Tags?: ReadonlyArray<string> | null
  readonly Address?: string
  readonly Port?: number
}

const flags = parseFlags(process.argv.slice(2), ["consul", "marathon", "registration-id", "concurrency", "loop"], ["purge"])
const consul = new URL(flags.get("consul") ?? "http://localhost:8500")
const marathon = new URL(flags.get("marathon") ?? "http://localhost:8080")
const registrationId = flags.get("registration-id") ?? "consular"
const purge = flags.has("purge")
const concurrency = Number(flags.get("concurrency") ?? 32)
const passes = Number(flags.get("loop") ?? 1)
const { send, close } = makeClient(64)

const isRunning = (task: Task) => task.state === undefined ? task.startedAt != null : task.state === "TASK_RUNNING"

const getJson = async <A>(origin: URL, path: string, absent?: A): Promise<A> => {
  const answer = await send(origin, "GET", path)
  if (answer.status === 404 && absent !== undefined) return absent
  if (answer.status !== 200) throw new Error(`GET ${origin.host}${path}: ${answer.status} ${answer.body.slice(0, 200)}`)
  return JSON.parse(answer.body) as A
}

const sameTags = (a: ReadonlyArray<string>, b: ReadonlyArray<string>) => {
  if (a.length !== b.length) return false
  const sorted = [...b].sort()
  return [...a].sort().every((tag, i) => tag === sorted[i])
}
const holds = (service: AgentService | undefined, wanted: RegistrationBody) =>
  service !== undefined && service.Service === wanted.Name && service.Address === wanted.Address &&
  (service.Port ?? 0) === (wanted.Port ?? 0) && sameTags(service.Tags ?? [], wanted.Tags)

interface Counts {
  registered: number
  deregistered: number
  keysSet: number
  keysDeleted: number
  failures: Array<string>
}

const pass = async (): Promise<Counts> => {
  const counts: Counts = { registered: 0, deregistered: 0, keysSet: 0, keysDeleted: 0, failures: [] }
  // Marathon is the truth: if it cannot be read, the pass fails before any write
  const [listing, pods, nodes, kvEntries] = await Promise.all([
    getJson<{ apps: Array<App> }>(marathon, "/v2/apps?embed=apps.tasks"),
    // a Marathon older than 1.4 has no pods: 404
    getJson<Array<unknown>>(marathon, "/v2/pods/::status", []),
    getJson<Array<{ Node: string; Address: string }>>(consul, "/v1/catalog/nodes"),
    getJson<Array<{ Key: string; Value: string | null }>>(consul, `${kvPath("consular/")}?recurse=true`, [])
  ])
  if (pods.length > 0) throw new Error(`Marathon runs ${pods.length} pods: the floor registers no pod instances`)
  // a Marathon that ignores embed: the tasks of each app (a 404 is "no tasks", Marathon #3881)
  const apps = await Promise.all(listing.apps.map(async (app) =>
    app.tasks !== undefined ? app : { ...app, tasks: (await getJson<{ tasks: Array<Task> }>(marathon, `/v2/apps${app.id}/tasks`, { tasks: [] })).tasks }))

  // agents: each catalog node by its address (a task host may name the node instead)
  const addresses = new Set<string>()
  const byName = new Map<string, string>()
  for (const node of nodes) {
    if (node.Address === "") continue
    addresses.add(node.Address)
    byName.set(node.Node.toLowerCase(), node.Address)
  }
  const resolve = (host: string) => addresses.has(host) ? host : byName.get(host.toLowerCase()) ?? host
  const main = resolve(consul.hostname)

  // desired: apps whose names clash (/a/b and /a-b) are left alone entirely
  const byAppName = new Map<string, Array<App>>()
  for (const app of apps) {
    const name = appName(app.id)
    byAppName.set(name, [...(byAppName.get(name) ?? []), app])
  }
  const wanted = new Map<string, { agent: string; registration: RegistrationBody }>()
  const labels = new Map<string, string>()
  const managed = new Set<string>()
  const clashing = new Set<string>()
  const clashingIds = new Set<string>()
  for (const [name, group] of byAppName) {
    if (group.length > 1) {
      clashing.add(name)
      for (const app of group) clashingIds.add(app.id)
      continue
    }
    const app = group[0]!
    managed.add(name)
    for (const [label, value] of Object.entries(app.labels ?? {})) labels.set(`consular/${name}/${label}`, encodeLabel(value))
    for (const task of app.tasks ?? []) {
      if (isRunning(task)) wanted.set(task.id, { agent: resolve(task.host), registration: registrationOf(registrationId, app.id, task) })
    }
  }

  const toRead = new Set<string>(purge ? [...addresses, main] : [main])
  for (const { agent } of wanted.values()) toRead.add(agent)
  const actual = new Map<string, Map<string, AgentService>>()
  await inLanes([...toRead], concurrency, async (agent) => {
    try {
      const services = await getJson<Record<string, AgentService>>(agentOrigin(consul, agent), "/v1/agent/services")
      actual.set(agent, new Map(Object.entries(services)))
    } catch (error) {
      counts.failures.push(`agent ${agent}: ${String(error)}`)
    }
  })

  // the plan
  const writes: Array<() => Promise<void>> = []
  const write = (what: string, origin: URL, path: string, body: string | undefined, done: () => void, absentOk = false) =>
    writes.push(async () => {
      try {
        const answer = await send(origin, "PUT", path, body)
        if (answer.status === 200 || (absentOk && answer.status === 404)) done()
        else counts.failures.push(`${what}: ${answer.status} ${answer.body.slice(0, 200)}`)
      } catch (error) {
        counts.failures.push(`${what}: ${String(error)}`)
      }
    })
  for (const { agent, registration } of wanted.values()) {
    const services = actual.get(agent)
    if (services === undefined || holds(services.get(registration.ID), registration)) continue
    write(`register ${registration.ID}`, agentOrigin(consul, agent), "/v1/agent/service/register", JSON.stringify(registration), () => counts.registered++)
  }
  for (const [agent, services] of actual) {
    for (const [id, service] of services) {
      const app = ownedAppId(service.Tags, registrationId)
      if (app === undefined || clashingIds.has(app)) continue
      const want = wanted.get(id)
      const dead = want === undefined && purge
      const moved = want !== undefined && want.agent !== agent && addresses.has(agent) && addresses.has(want.agent) &&
        holds(actual.get(want.agent)?.get(id), want.registration)
      if (dead || moved) {
        write(`deregister ${id}`, agentOrigin(consul, agent), `/v1/agent/service/deregister/${encodeURIComponent(id)}`, undefined, () => counts.deregistered++, true)
      }
    }
  }
  const kv = new Map(kvEntries.map((entry) => [entry.Key, kvValue(entry.Value)]))
  const operations: Array<TxnOperation> = []
  for (const [key, value] of labels) if (kv.get(key) !== value) operations.push(setOperation(key, value))
  const goneApps = new Set<string>()
  for (const key of kv.keys()) {
    const rest = key.slice("consular/".length)
    const slash = rest.indexOf("/")
    if (slash <= 0) continue // not a key consular writes
    const name = rest.slice(0, slash)
    if (clashing.has(name)) continue
    if (managed.has(name)) {
      if (!labels.has(key)) operations.push({ KV: { Verb: "delete", Key: key } })
    } else if (purge) {
      goneApps.add(name)
    }
  }
  for (const name of goneApps) operations.push({ KV: { Verb: "delete-tree", Key: `consular/${name}/` } })
  const batches: Array<Array<TxnOperation>> = []
  for (let i = 0; i < operations.length; i += maxTxnOperations) batches.push(operations.slice(i, i + maxTxnOperations))

  await Promise.all([
    inLanes(writes, concurrency, (run) => run()),
    inLanes(batches, 4, async (batch) => {
      try {
        const answer = await send(consul, "PUT", "/v1/txn", JSON.stringify(batch))
        if (answer.status !== 200) throw new Error(`${answer.status} ${answer.body.slice(0, 200)}`)
        for (const op of batch) op.KV.Verb === "set" ? counts.keysSet++ : counts.keysDeleted++
      } catch (error) {
        counts.failures.push(`txn: ${String(error)}`)
      }
    })
  ])
  return counts
}

const main = async () => {
  const timings: Array<{ ms: number; cpuMs: number }> = []
  const failures: Array<string> = []
  let last: Counts | undefined
  for (let i = 0; i < passes; i++) {
    const cpu0 = process.cpuUsage()
    const t0 = performance.now()
    last = await pass()
    const cpu = process.cpuUsage(cpu0)
    timings.push({ ms: performance.now() - t0, cpuMs: (cpu.user + cpu.system) / 1000 })
    failures.push(...last.failures)
  }
  close()
  process.stdout.write(JSON.stringify({ ...last, failures: failures.length, firstFailures: failures.slice(0, 5), passes: timings }) + "\n")
  process.exitCode = failures.length === 0 ? 0 : 1
}

main().catch((error: unknown) => {
  process.stderr.write(`floor sync: ${error instanceof Error ? error.stack ?? error.message : String(error)}\n`)
  process.exit(1)
})
