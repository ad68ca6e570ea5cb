import { Effect, Exit, Scope } from "effect"
import { readFileSync } from "node:fs"
import * as os from "node:os"
import { performance } from "node:perf_hooks"
import { fileURLToPath } from "node:url"
import { Pool } from "undici"
import type { Registration } from "../src/domain/ConsulApi.js"
import { appName, encodeLabelValue, labelKey } from "../src/domain/Naming.js"
import { serveConsul } from "../src/embedded/ConsulServer.js"
import { serveMarathon } from "../src/embedded/MarathonServer.js"
import { ConsulStore } from "../src/services/ConsulStore.js"
import { MarathonStore } from "../src/services/MarathonStore.js"
import { agreement } from "./agreement.js"
import { cpuMsOf, freePort, killAll, memoryOf, ownCpuMs, run, sleep, start, waitFor } from "./children.js"
import type { Daemon, Finished } from "./children.js"
import { agentAddresses, appIdOf, coldSyncWrites, hostOf, mainAgent, makeSeed, registrationId, sizesFromEnv, taskId } from "./seed.js"
import type { Sizes } from "./seed.js"

/**
 * `npm run bench`: consular against the honest floor, two bare-Node programs that do the same jobs (bench/floor/:
 * a one-shot sync and an event relay), against an embedded Consul (one port on 127.0.0.1 … 127.0.0.(H+1)) and an
 * embedded Marathon, both in this process. Consular and the floor always run as child processes, as operators
 * run them, one after the other (alternating which goes first), each figure the median of R runs. Prints a table
 * (floor, consular, ratio, target), then one JSON line with every figure. Exit code 1 only when a measurement is
 * invalid (a side that did not leave the expected layout, an event that failed, a child that died); a missed
 * target is reported, not failed: the bench does not gate CI.
 *
 * Sizes from the environment (bench/seed.ts): TASKS=50000 (or A apps x T tasks, default 1,000 x 5), H agents (3),
 * L labels (3), E events per phase (2,000), C concurrency (32), R runs (3), STARTUPS (7), PASSES in one process
 * (5), S soak events of consular's daemon (0: none; SOAK_SECONDS bounds it), BENCH_MINUTES (the run's bound).
 * BENCH_ONLY=startup,sync,passes,events measures only those parts (all by default): a lever's before and after.
 * CONSULAR_NODE_FLAGS are Node flags for consular's children only, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof".
 */

const root = fileURLToPath(new URL("../../", import.meta.url))
const mainJs = `${root}dist/main.js`
const consularNodeFlags = (process.env["CONSULAR_NODE_FLAGS"] ?? "").split(/\s+/).filter((flag) => flag !== "")
/** `node <flags> dist/main.js`: the arguments of a consular child, its Node flags first */
const consular = (...args: ReadonlyArray<string>): Array<string> => [...consularNodeFlags, mainJs, ...args]
const parts = ["startup", "sync", "passes", "events"] as const
const only = (process.env["BENCH_ONLY"] ?? parts.join(",")).split(",").map((part) => part.trim()).filter((part) => part !== "")
for (const part of only) {
  if (!(parts as ReadonlyArray<string>).includes(part)) throw new Error(`BENCH_ONLY: ${part} is none of ${parts.join(", ")}`)
}
const measures = (part: typeof parts[number]) => only.includes(part)
const writeOnlyFloorJs = fileURLToPath(new URL("./floor.js", import.meta.url))
const floorSyncJs = fileURLToPath(new URL("./floor/sync.js", import.meta.url))
const floorRelayJs = fileURLToPath(new URL("./floor/relay.js", import.meta.url))
const node = process.execPath
const version = (JSON.parse(readFileSync(`${root}package.json`, "utf8")) as { version: string }).version

const MiB = 1024
const mib = (kib: number | undefined) => kib === undefined ? NaN : round(kib / MiB)
const round = (n: number, digits = 1) => Number(n.toFixed(digits))
const median = (values: ReadonlyArray<number>): number => {
  const sorted = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b)
  if (sorted.length === 0) return NaN
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}
const percentile = (sorted: ReadonlyArray<number>, p: number): number =>
  sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!

/** Why a figure cannot be trusted; any entry makes the exit code 1. */
const invalid: Array<string> = []
const note = (line: string) => process.stderr.write(`bench: ${line}\n`)

type Side = "floor" | "consular"
const sides: ReadonlyArray<Side> = ["floor", "consular"]
/** run r: the floor first when r is even, consular first when it is odd */
const inTurn = (r: number): ReadonlyArray<Side> => r % 2 === 0 ? sides : [...sides].reverse()

// --- the datacenter --------------------------------------------------------------------------------------

const sizes: Sizes = sizesFromEnv()
const agents = agentAddresses(sizes)
const allAgents = [mainAgent, ...agents]
const seed = makeSeed(sizes)
const expected = coldSyncWrites(seed)
const tasks = sizes.apps * sizes.tasks

const consul = new ConsulStore(mainAgent)
consul.addAgent(mainAgent, "main")
agents.forEach((address, i) => consul.addAgent(address, `node-${i + 1}`))
const marathon = new MarathonStore()
for (const app of seed) {
  marathon.putApp(app.id, app.labels)
  for (const task of app.tasks) marathon.setTask(app.id, { id: task.id, host: task.host, ports: task.ports, state: "TASK_RUNNING" }, false)
}

const resetConsul = () => {
  for (const agent of consul.agents.values()) agent.services.clear()
  consul.kv.clear()
  consul.resetCounters()
}

/** Differences between Consul and the layout a cold sync must leave (the first few of each kind). */
const layoutProblems = (): Array<string> => {
  const problems: Array<string> = []
  const wanted = new Map<string, number>(allAgents.map((agent) => [agent, 0]))
  const same = (a: Registration, service: { Service: string; Address: string; Port: number; Tags: ReadonlyArray<string> | null }) =>
    service.Service === a.Name && service.Address === a.Address && service.Port === (a.Port ?? 0) &&
    JSON.stringify(service.Tags) === JSON.stringify(a.Tags)
  for (const { agent, registration } of expected.registrations) {
    wanted.set(agent, (wanted.get(agent) ?? 0) + 1)
    const service = consul.services(agent).get(registration.ID)
    if (service === undefined || !same(registration, service)) {
      if (problems.length < 5) problems.push(`service ${registration.ID} on ${agent}: ${service === undefined ? "missing" : "differs"}`)
    }
  }
  for (const agent of allAgents) {
    const count = consul.services(agent).size
    if (count !== wanted.get(agent)) problems.push(`agent ${agent}: ${count} services, expected ${wanted.get(agent)}`)
  }
  if (consul.kv.size !== expected.kv.length) problems.push(`kv: ${consul.kv.size} keys, expected ${expected.kv.length}`)
  let wrongValues = 0
  for (const { key, value } of expected.kv) if (consul.kv.get(key) !== value) wrongValues++
  if (wrongValues > 0) problems.push(`kv: ${wrongValues} keys missing or with another value`)
  return problems
}

// Landings: the embedded Consul's store is hooked, so an event's effect is timed when Consul applies it.
let onLanding: ((taskId: string, at: number) => void) | undefined
{
  const register = consul.register.bind(consul)
  const deregister = consul.deregister.bind(consul)
  consul.register = (address, registration) => {
    register(address, registration)
    onLanding?.(registration.ID, performance.now())
  }
  consul.deregister = (address, serviceId) => {
    const found = deregister(address, serviceId)
    if (found) onLanding?.(serviceId, performance.now())
    return found
  }
}

// Pass starts: every pass of either side begins with Marathon's app listing.
let onAppListing: (() => void) | undefined
{
  const admit = marathon.admit.bind(marathon)
  marathon.admit = (operation) => {
    if (operation === "apps") onAppListing?.()
    return admit(operation)
  }
}

const consulUrl = (port: number) => `http://${mainAgent}:${port}`

interface Servers {
  readonly consulPort: number
  readonly marathonUrl: string
}

// --- start-up --------------------------------------------------------------------------------------------

interface StartupFigures {
  readonly nodeMs: ReadonlyArray<number>
  readonly versionMs: ReadonlyArray<number>
}

const measureStartup = async (): Promise<StartupFigures> => {
  const nodeMs: Array<number> = []
  const versionMs: Array<number> = []
  for (let i = 0; i < sizes.startups; i++) {
    const bare = await run(node, ["-e", "0"], { timeoutMs: 20_000 })
    if (bare.code !== 0) invalid.push(`node -e 0: exit ${bare.code}`)
    nodeMs.push(round(bare.ms))
    const finished = await run(node, consular("--version"), { timeoutMs: 20_000 })
    if (finished.code !== 0 || !finished.stdout.includes(version)) {
      invalid.push(`--version: exit ${finished.code}, stdout ${JSON.stringify(finished.stdout.slice(0, 200))}`)
    }
    versionMs.push(round(finished.ms))
  }
  return { nodeMs, versionMs }
}

// --- one-shot syncs --------------------------------------------------------------------------------------

interface SyncRun {
  readonly ms: number
  /** CPU of the child to its last sample (at most 20 ms short of its total), ms */
  readonly cpuMs: number | undefined
  readonly peakKiB: number | undefined
  /** CPU of this process (the embedded Consul and Marathon) meanwhile, ms */
  readonly serversCpuMs: number
  readonly requests: number
  readonly writes: number
}

const floorSyncArgs = ({ consulPort, marathonUrl }: Servers, extra: ReadonlyArray<string> = []) =>
  [floorSyncJs, "--consul", consulUrl(consulPort), "--marathon", marathonUrl, "--registration-id", registrationId, "--purge",
    "--concurrency", String(sizes.concurrency), ...extra]
/** More flags for consular's sync and daemon (not the floor's), e.g. BENCH_FLAGS="--health-checks ttl --service-meta". */
const benchFlags = (process.env["BENCH_FLAGS"] ?? "").split(/\s+/).filter((flag) => flag !== "")

const consularSyncArgs = ({ consulPort, marathonUrl }: Servers) =>
  consular("sync", "--purge", "--consul", consulUrl(consulPort), "--marathon", marathonUrl, "--registration-id", registrationId, ...benchFlags)

/** The floor's last stdout line: its JSON report. */
const floorReport = (finished: Finished): { failures?: number; firstFailures?: Array<string>; passes?: Array<{ ms: number; cpuMs: number }> } => {
  try {
    return JSON.parse(finished.stdout.trim().split("\n").pop() ?? "{}") as ReturnType<typeof floorReport>
  } catch {
    return {}
  }
}

/** One sync of either side, process start to exit; `cold` empties Consul first. Its end state is checked. */
const measureSync = async (side: Side, servers: Servers, cold: boolean): Promise<SyncRun> => {
  const what = `${side} ${cold ? "cold" : "idle"} sync`
  if (cold) resetConsul()
  consul.resetCounters()
  marathon.requests = 0
  const cpu0 = ownCpuMs()
  const finished = await run(node, side === "floor" ? floorSyncArgs(servers) : consularSyncArgs(servers), { timeoutMs: 300_000, sampleMs: 20 })
  const serversCpuMs = ownCpuMs() - cpu0
  if (finished.code !== 0) invalid.push(`${what}: exit ${finished.code ?? finished.signal}: ${(finished.stderr || finished.stdout).slice(-800)}`)
  if (side === "floor" && floorReport(finished).failures !== 0) invalid.push(`${what}: failures ${JSON.stringify(floorReport(finished).firstFailures)}`)
  const problems = layoutProblems()
  if (problems.length > 0) invalid.push(`${what} did not leave the layout: ${problems.join("; ")}`)
  if (!cold && consul.writes > 0) invalid.push(`${what}: ${consul.writes} writes in an idle pass`)
  return {
    ms: finished.ms,
    cpuMs: finished.cpuMs,
    peakKiB: finished.peakKiB,
    serversCpuMs,
    requests: consul.requests + marathon.requests,
    writes: consul.writes
  }
}

/** The earlier floor: only the writes of a cold sync, timed from its first request. A labelled line, not a target. */
const measureWriteOnlyFloor = async ({ consulPort }: Servers): Promise<number> => {
  resetConsul()
  const finished = await run(node, [writeOnlyFloorJs, JSON.stringify({ port: consulPort, sizes })], { timeoutMs: 300_000 })
  const result = JSON.parse(finished.stdout.trim().split("\n").pop() ?? "{}") as { ms?: number; failures?: number }
  if (finished.code !== 0 || result.ms === undefined || result.failures !== 0) {
    invalid.push(`write-only floor failed: exit ${finished.code}: ${finished.stderr.slice(-500)}`)
    return NaN
  }
  const problems = layoutProblems()
  if (problems.length > 0) invalid.push(`write-only floor did not write the layout: ${problems.join("; ")}`)
  return result.ms
}

// --- idle passes inside a running process ----------------------------------------------------------------

/** CPU per idle pass after the first, ms: the floor looping in one process, consular's daemon on its schedule. */
const measureDaemonPasses = async (side: Side, servers: Servers): Promise<ReadonlyArray<number>> => {
  const what = `${side} idle passes in one process`
  consul.resetCounters()
  if (side === "floor") {
    const finished = await run(node, floorSyncArgs(servers, ["--loop", String(sizes.passes + 1)]), { timeoutMs: 600_000 })
    const report = floorReport(finished)
    if (finished.code !== 0 || report.passes === undefined) {
      invalid.push(`${what}: exit ${finished.code}: ${finished.stderr.slice(-500)}`)
      return []
    }
    if (consul.writes > 0) invalid.push(`${what}: ${consul.writes} writes`)
    return report.passes.slice(1).map((p) => round(p.cpuMs))
  }
  // consular: a pass every second; its CPU between two pass starts (read from /proc when Marathon is asked for
  // the apps) is one pass and its idle second
  const port = await freePort()
  const daemon = start(node, consular(
    "run", "--host", "127.0.0.1", "--port", String(port), "--consul", consulUrl(servers.consulPort), "--marathon", servers.marathonUrl,
    "--registration-id", registrationId, "--purge", "--sync-interval", "1", "--events", "callback"
  ))
  const starts: Array<number> = []
  onAppListing = () => {
    const cpu = cpuMsOf(daemon.pid)
    if (cpu !== undefined) starts.push(cpu)
  }
  try {
    const done = await waitFor(() => daemon.exited() || starts.length >= sizes.passes + 2, 60_000 + sizes.passes * 30_000)
    if (!done || daemon.exited()) {
      invalid.push(`${what}: ${starts.length} passes seen: ${daemon.output().slice(-800)}`)
      return []
    }
    if (consul.writes > 0) invalid.push(`${what}: ${consul.writes} writes`)
    return starts.slice(1).flatMap((cpu, i) => i + 1 < starts.length - 1 ? [round(starts[i + 2]! - cpu)] : [])
  } finally {
    onAppListing = undefined
    await daemon.stop()
    marathon.subscriptions.length = 0
  }
}

// --- events ----------------------------------------------------------------------------------------------

interface EventFigures {
  readonly events: number
  readonly landed: number
  readonly failures: number
  readonly ms: number
  readonly effectsPerSecond: number
  readonly p50Ms: number
  readonly p90Ms: number
  readonly p99Ms: number
  readonly maxMs: number
  /** CPU of the receiving process per event, µs */
  readonly cpuUsPerEvent: number
  /** share of one core used meanwhile: the receiving process, and this one (embedded Consul and Marathon + sender) */
  readonly cpuPercent: number
  readonly benchCpuPercent: number
}

interface Event {
  readonly taskId: string
  readonly body: string
  readonly outcome: "registered" | "deregistered"
}

const statusUpdate = (task: string, app: number, n: number, status: "TASK_RUNNING" | "TASK_KILLED"): Event => {
  const appId = appIdOf(app % sizes.apps)
  const host = hostOf(sizes, n)
  const body = JSON.stringify({
    eventType: "status_update_event",
    timestamp: new Date().toISOString(),
    slaveId: `bench-agent-${host}-S0`,
    taskId: task,
    taskStatus: status,
    message: "",
    appId,
    host,
    ipAddresses: [{ ipAddress: host, protocol: "IPv4" }],
    ports: [30_000 + (n % 30_000)],
    version: marathon.apps.get(appId)?.version
  })
  return { taskId: task, body, outcome: status === "TASK_RUNNING" ? "registered" : "deregistered" }
}

/**
 * Sends jobs at `concurrency`; a job is one or more events sent one after the other (a RUNNING then its KILLED).
 * An event's latency runs from just before its POST to the moment the embedded Consul applies its change.
 */
const sendEvents = async (
  pool: Pool,
  pid: number,
  jobs: number,
  job: (i: number) => ReadonlyArray<Event>,
  what: string,
  /** no new job starts after this performance.now() time */
  deadline = Infinity
): Promise<EventFigures> => {
  const sentAt = new Map<string, number>()
  const latencies: Array<number> = []
  let lastLanding = 0
  onLanding = (id, at) => {
    const t0 = sentAt.get(id)
    if (t0 === undefined) return
    sentAt.delete(id)
    latencies.push(at - t0)
    lastLanding = at
  }
  let next = 0
  let events = 0
  let failures = 0
  let firstFailure: string | undefined
  const worker = async () => {
    for (;;) {
      const i = next++
      if (i >= jobs || performance.now() > deadline) return
      for (const event of job(i)) {
        events++
        sentAt.set(event.taskId, performance.now())
        try {
          const response = await pool.request({
            method: "POST",
            path: `/events?registration=${registrationId}`,
            body: event.body,
            headers: { "content-type": "application/json" }
          })
          const text = await response.body.text()
          if (response.statusCode !== 200 || !text.includes(`"${event.outcome}"`)) {
            failures++
            firstFailure ??= `${response.statusCode} ${text.slice(0, 300)}`
          }
        } catch (error) {
          failures++
          firstFailure ??= error instanceof Error ? error.message : String(error)
        }
      }
    }
  }
  const cpu0 = cpuMsOf(pid) ?? NaN
  const benchCpu0 = ownCpuMs()
  const start = performance.now()
  await Promise.all(Array.from({ length: sizes.concurrency }, worker))
  const wall = performance.now() - start
  const cpu = (cpuMsOf(pid) ?? NaN) - cpu0
  const benchCpu = ownCpuMs() - benchCpu0
  // every landing happens before its answer, so nothing is still on its way here
  onLanding = undefined
  if (failures > 0) invalid.push(`${what}: ${failures} of ${events} events failed (first: ${firstFailure})`)
  if (sentAt.size > 0) invalid.push(`${what}: ${sentAt.size} events answered but never landed in Consul`)
  latencies.sort((a, b) => a - b)
  const ms = (lastLanding > 0 ? lastLanding : performance.now()) - start
  return {
    events,
    landed: latencies.length,
    failures,
    ms: round(ms),
    effectsPerSecond: round((latencies.length / ms) * 1000, 0),
    p50Ms: round(percentile(latencies, 50), 2),
    p90Ms: round(percentile(latencies, 90), 2),
    p99Ms: round(percentile(latencies, 99), 2),
    maxMs: round(latencies[latencies.length - 1] ?? NaN, 2),
    cpuUsPerEvent: round((cpu / Math.max(1, events)) * 1000, 0),
    cpuPercent: round((cpu / wall) * 100, 0),
    benchCpuPercent: round((benchCpu / wall) * 100, 0)
  }
}

interface EventsRun {
  readonly readyMs: number
  /** just started: every RUNNING event is of an app version new to it (its labels not cached) */
  readonly freshRunning: EventFigures
  readonly freshKilled: EventFigures
  /** after a warm-up of as many RUNNING/KILLED pairs: labels cached, JIT past its first passes */
  readonly warmRunning: EventFigures
  readonly warmKilled: EventFigures
  readonly peakKiB: number | undefined
  readonly soak?: SoakFigures | undefined
}

interface SoakFigures {
  readonly events: number
  readonly effectsPerSecond: number
  readonly p99Ms: number
  readonly firstEvents: number
  readonly rssAfterFirstKiB: number | undefined
  readonly rssAtEndKiB: number | undefined
  /** after every 10,000 events */
  readonly rssSeriesMiB: ReadonlyArray<number>
  readonly growthPercent: number
  readonly peakKiB: number | undefined
}

/** the soak stops taking new events after this long */
const soakSeconds = Number(process.env["SOAK_SECONDS"] ?? 300)
/** Tasks of the event phases: not in Consul, of apps Marathon has. */
const freshTask = (i: number) => taskId(i % sizes.apps, 100_000 + i, "e000")
const warmUpTask = (i: number) => taskId(i % sizes.apps, 500_000 + i, "0a00")
const warmTask = (i: number) => taskId(i % sizes.apps, 200_000 + i, "e001")
const soakTask = (i: number) => taskId(i % sizes.apps, 1_000_000 + i, "5000")

let deployments = 0
/** A deployment of app `a`: a new version whose first label changed, as Marathon stamps it. */
const deploy = (a: number) => {
  const app = seed[a % seed.length]!
  const labels = { ...app.labels }
  if (sizes.labels > 0) labels["label-0"] = `value 0 of app ${a}, deployment ${++deployments}`
  marathon.setLabels(app.id, labels)
}
const restoreLabels = () => {
  for (const app of seed) marathon.setLabels(app.id, app.labels)
}

/** Label keys of the given apps whose KV value is not Marathon's label (JSON-encoded). */
const staleLabels = (apps: Iterable<number>): number => {
  let stale = 0
  for (const a of apps) {
    const app = marathon.apps.get(appIdOf(a))
    for (const [label, value] of Object.entries(app?.labels ?? {})) {
      if (consul.kv.get(labelKey(appName(appIdOf(a)), label)) !== encodeLabelValue(value)) stale++
    }
  }
  return stale
}

const registeredCount = (task: (i: number) => string) =>
  [...Array(sizes.events).keys()].filter((i) => consul.services(hostOf(sizes, i)).has(task(i))).length

/**
 * A receiver just started (consular's daemon with events only, or the relay), then 2,000 RUNNING events of new
 * app versions and their KILLED; a warm-up; 2,000 RUNNING of known versions and their KILLED. Each phase's end
 * state is checked in Consul.
 */
const measureEvents = async (side: Side, servers: Servers): Promise<EventsRun | undefined> => {
  const port = await freePort()
  const started = performance.now()
  const common = ["--host", "127.0.0.1", "--port", String(port), "--consul", consulUrl(servers.consulPort), "--marathon", servers.marathonUrl, "--registration-id", registrationId]
  const receiver: Daemon = start(node, side === "floor"
    ? [floorRelayJs, ...common]
    : consular("run", ...common, "--sync-interval", "0", "--events", "callback", ...benchFlags))
  const pool = new Pool(`http://127.0.0.1:${port}`, { connections: sizes.concurrency, headersTimeout: 20_000, bodyTimeout: 20_000, connectTimeout: 2_000 })
  // the embedded Consul logs every request; nobody reads it here, and a full log costs a copy per request
  const trim = setInterval(() => {
    if (consul.log.length > 10_000) consul.log.length = 0
  }, 200)
  try {
    const ready = await waitFor(async () => {
      if (receiver.exited()) return true
      const response = await pool.request({ method: "GET", path: "/ready" })
      await response.body.dump()
      return response.statusCode === 200
    }, 60_000)
    if (!ready || receiver.exited()) {
      invalid.push(`${side} event receiver was not ready within 60 s: ${receiver.output().slice(-800)}`)
      return undefined
    }
    const readyMs = performance.now() - started
    const before = consul.services(agents[0]!).size
    const what = (phase: string) => `${side} ${phase}`
    const running = (task: (i: number) => string, fresh: boolean) => (i: number) => {
      if (fresh) deploy(i % sizes.apps)
      return [statusUpdate(task(i), i, i, "TASK_RUNNING")]
    }
    const killed = (task: (i: number) => string) => (i: number) => [statusUpdate(task(i), i, i, "TASK_KILLED")]
    const touched = new Set(Array.from({ length: Math.min(sizes.events, sizes.apps) }, (_, i) => i))

    const freshRunning = await sendEvents(pool, receiver.pid, sizes.events, running(freshTask, true), what("RUNNING, just started"))
    if (registeredCount(freshTask) !== sizes.events) invalid.push(`${what("RUNNING, just started")}: ${registeredCount(freshTask)} of ${sizes.events} services on their agents`)
    const stale = staleLabels(touched)
    if (stale > 0) invalid.push(`${what("RUNNING, just started")}: ${stale} label keys not Marathon's after new app versions`)
    const freshKilled = await sendEvents(pool, receiver.pid, sizes.events, killed(freshTask), what("KILLED, just started"))
    if (registeredCount(freshTask) !== 0) invalid.push(`${what("KILLED, just started")}: ${registeredCount(freshTask)} services still registered`)

    await sendEvents(pool, receiver.pid, sizes.events, (i) => [...running(warmUpTask, false)(i), ...killed(warmUpTask)(i)], what("warm-up"))
    const warmRunning = await sendEvents(pool, receiver.pid, sizes.events, running(warmTask, false), what("RUNNING, warm"))
    if (registeredCount(warmTask) !== sizes.events) invalid.push(`${what("RUNNING, warm")}: ${registeredCount(warmTask)} of ${sizes.events} services on their agents`)
    const warmKilled = await sendEvents(pool, receiver.pid, sizes.events, killed(warmTask), what("KILLED, warm"))
    if (registeredCount(warmTask) !== 0) invalid.push(`${what("KILLED, warm")}: ${registeredCount(warmTask)} services still registered`)
    if (consul.services(agents[0]!).size !== before) invalid.push(`${side}: events changed services they do not own`)
    const peakKiB = memoryOf(receiver.pid)?.hwmKiB
    const soak = side === "consular" && sizes.soak > 0 ? await measureSoak(pool, receiver) : undefined
    if (receiver.exited()) invalid.push(`${side} event receiver exited during the run: ${receiver.output().slice(-800)}`)
    return { readyMs: round(readyMs), freshRunning, freshKilled, warmRunning, warmKilled, peakKiB, soak }
  } finally {
    clearInterval(trim)
    onLanding = undefined
    restoreLabels()
    marathon.subscriptions.length = 0
    await pool.destroy().catch(() => undefined)
    const code = await receiver.stop()
    if (code !== 0 && code !== null) note(`${side} event receiver exited with ${code} on SIGTERM`)
  }
}

/** Consular only, when S > 0: RUNNING/KILLED pairs in segments of 10,000 events, its RSS read after each. */
const measureSoak = async (pool: Pool, daemon: Daemon): Promise<SoakFigures> => {
  const pairs = Math.floor(sizes.soak / 2)
  const segmentPairs = 5_000
  const deadline = performance.now() + soakSeconds * 1000
  const pair = (offset: number) => (i: number) => {
    const n = offset + i
    return [statusUpdate(soakTask(n), n, n, "TASK_RUNNING"), statusUpdate(soakTask(n), n, n, "TASK_KILLED")]
  }
  const segments: Array<EventFigures> = []
  const rssKiB: Array<number> = []
  for (let done = 0; done < pairs && performance.now() < deadline;) {
    const count = Math.min(segmentPairs, pairs - done)
    segments.push(await sendEvents(pool, daemon.pid, count, pair(done), "soak", deadline))
    done += count
    await sleep(300)
    const memory = memoryOf(daemon.pid)
    if (memory !== undefined) rssKiB.push(memory.rssKiB)
  }
  const events = segments.reduce((n, s) => n + s.events, 0)
  if (events < 2 * pairs) note(`soak: cut after ${soakSeconds} s (SOAK_SECONDS) at ${events} events`)
  const first = rssKiB[0]
  const last = rssKiB[rssKiB.length - 1]
  const landed = segments.reduce((n, s) => n + s.landed, 0)
  const ms = segments.reduce((n, s) => n + s.ms, 0)
  const leftovers = [...consul.agents.values()].reduce((n, agent) => n + agent.services.size, 0) - expected.registrations.length
  if (leftovers !== 0) invalid.push(`soak: ${leftovers} services left behind`)
  return {
    events,
    effectsPerSecond: round((landed / ms) * 1000, 0),
    p99Ms: Math.max(...segments.map((s) => s.p99Ms)),
    firstEvents: segments[0]?.events ?? 0,
    rssAfterFirstKiB: first,
    rssAtEndKiB: last,
    rssSeriesMiB: rssKiB.map(mib),
    growthPercent: first === undefined || last === undefined ? NaN : round((last / first - 1) * 100),
    peakKiB: memoryOf(daemon.pid)?.hwmKiB
  }
}

// --- report ----------------------------------------------------------------------------------------------

interface Row {
  readonly figure: string
  readonly floor: string
  readonly consular: string
  /** consular / floor (for rates: consular's share of the floor's) */
  readonly ratio: number | undefined
  readonly target: string
  readonly pass: boolean | undefined
}

const table = (rows: ReadonlyArray<Row>): string => {
  const cells = rows.map((r) => [
    r.figure, r.floor, r.consular, r.ratio === undefined || !Number.isFinite(r.ratio) ? "-" : `${round(r.ratio, 2)}x`, r.target,
    r.pass === undefined ? "-" : r.pass ? "pass" : "MISS"
  ])
  const header = ["figure", "floor", "consular", "ratio", "target", ""]
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)))
  const line = (c: ReadonlyArray<string>) => c.map((cell, i) => cell.padEnd(widths[i]!)).join("  ").trimEnd()
  return [line(header), line(widths.map((w) => "-".repeat(w))), ...cells.map(line)].join("\n")
}

/** A row of two medians where smaller is better: the target is on consular / floor. */
const costRow = (figure: string, unit: string, floor: number, consular: number, limit: number | undefined): Row => {
  const ratio = consular / floor
  return {
    figure,
    floor: `${round(floor)} ${unit}`,
    consular: `${round(consular)} ${unit}`,
    ratio,
    target: limit === undefined ? "-" : `<= ${limit}x`,
    pass: limit === undefined || !Number.isFinite(ratio) ? undefined : ratio <= limit
  }
}

const eventRows = (label: string, floor: ReadonlyArray<EventFigures>, consular: ReadonlyArray<EventFigures>): Array<Row> => {
  const rate = (runs: ReadonlyArray<EventFigures>) => median(runs.map((r) => r.effectsPerSecond))
  const p99 = (runs: ReadonlyArray<EventFigures>) => median(runs.map((r) => r.p99Ms))
  const cpu = (runs: ReadonlyArray<EventFigures>) => median(runs.map((r) => r.cpuUsPerEvent))
  const rateRatio = rate(consular) / rate(floor)
  return [
    {
      figure: `${label}: effects/s`,
      floor: `${rate(floor)}/s`,
      consular: `${rate(consular)}/s`,
      ratio: rateRatio,
      target: ">= 0.8x",
      pass: Number.isFinite(rateRatio) ? rateRatio >= 0.8 : undefined
    },
    costRow(`${label}: p99 latency`, "ms", p99(floor), p99(consular), 1.5),
    costRow(`${label}: CPU per event`, "us", cpu(floor), cpu(consular), undefined)
  ]
}

const main = async () => {
  // a bound for a run gone wrong: a normal run at 5,000 tasks took 22 minutes on 2 cores under a load average of 15
  const minutes = Number(process.env["BENCH_MINUTES"] ?? (tasks > 10_000 ? 120 : 45))
  const deadline = setTimeout(() => {
    note(`the bench took longer than ${minutes} minutes (BENCH_MINUTES): stopped`)
    killAll()
    process.exit(2)
  }, minutes * 60_000)
  deadline.unref()
  const loadAtStart = os.loadavg().map((l) => round(l, 2))
  if (loadAtStart[0]! > os.cpus().length * 0.5) note(`load average ${loadAtStart[0]} on ${os.cpus().length} CPUs: the figures will be noisy`)
  const scope = Effect.runSync(Scope.make())
  try {
    const consulServer = await Effect.runPromise(serveConsul(consul, { addresses: allAgents }).pipe(Scope.extend(scope)))
    const marathonServer = await Effect.runPromise(serveMarathon(marathon, { address: mainAgent }).pipe(Scope.extend(scope)))
    const servers: Servers = { consulPort: consulServer.port, marathonUrl: marathonServer.url }
    note(`${sizes.apps} apps x ${sizes.tasks} tasks x ${sizes.labels} labels on ${sizes.agents} agents; ` +
      `Consul ${consulUrl(servers.consulPort)} (+${agents.join(",")}), Marathon ${servers.marathonUrl}; ${sizes.runs} runs`)

    if (measures("sync")) {
      note("the floor's sync and consular's on an untidy datacenter: the same end state?")
      invalid.push(...await agreement(node, [floorSyncJs, "--purge"], consular("sync", "--purge")))
    }

    note("warming the servers up: one cold sync of each side, not measured")
    for (const side of sides) await measureSync(side, servers, true)

    note("start-up: node -e 0 and consular --version, alternating")
    const startup = measures("startup") ? await measureStartup() : { nodeMs: [], versionMs: [] }

    const cold: Record<Side, Array<SyncRun>> = { floor: [], consular: [] }
    const idle: Record<Side, Array<SyncRun>> = { floor: [], consular: [] }
    const writeOnlyFloor: Array<number> = []
    for (let r = 0; r < sizes.runs && measures("sync"); r++) {
      for (const side of inTurn(r)) {
        note(`run ${r + 1}/${sizes.runs}: ${side} cold sync, then an idle one`)
        cold[side].push(await measureSync(side, servers, true))
        idle[side].push(await measureSync(side, servers, false))
      }
      note(`run ${r + 1}/${sizes.runs}: write-only floor (the earlier one)`)
      writeOnlyFloor.push(await measureWriteOnlyFloor(servers))
    }
    // the layout back in place for what follows
    await measureSync("floor", servers, true)

    const passes: Record<Side, Array<ReadonlyArray<number>>> = { floor: [], consular: [] }
    for (let r = 0; r < sizes.runs && measures("passes"); r++) {
      for (const side of inTurn(r)) {
        note(`run ${r + 1}/${sizes.runs}: ${side}, ${sizes.passes + 1} idle passes in one process`)
        passes[side].push(await measureDaemonPasses(side, servers))
      }
    }

    const events: Record<Side, Array<EventsRun>> = { floor: [], consular: [] }
    for (let r = 0; r < sizes.runs && measures("events"); r++) {
      for (const side of inTurn(r)) {
        note(`run ${r + 1}/${sizes.runs}: ${side} events: ${sizes.events} RUNNING + KILLED just started, then warm`)
        const result = await measureEvents(side, servers)
        if (result !== undefined) events[side].push(result)
      }
    }
    const soak = events.consular.find((e) => e.soak !== undefined)?.soak

    const med = (runs: ReadonlyArray<SyncRun>, f: (s: SyncRun) => number | undefined) => median(runs.map((s) => f(s) ?? NaN))
    const passCpu = (side: Side) => median(passes[side].map(median))
    const peak = (runs: ReadonlyArray<{ peakKiB: number | undefined }>) => Math.max(...runs.map((s) => s.peakKiB ?? NaN))
    const phase = (side: Side, f: (run: EventsRun) => EventFigures) => events[side].map(f)

    const rows: Array<Row> = [
      costRow("start-up: node -e 0 / consular --version", "ms", median(startup.nodeMs), median(startup.versionMs), 2.5),
      costRow(`cold sync --purge, ${tasks} tasks, start to exit`, "ms", med(cold.floor, (s) => s.ms), med(cold.consular, (s) => s.ms), 1.3),
      costRow("cold sync: CPU of the process", "ms", med(cold.floor, (s) => s.cpuMs), med(cold.consular, (s) => s.cpuMs), undefined),
      costRow("cold sync: CPU of the embedded servers", "ms", med(cold.floor, (s) => s.serversCpuMs), med(cold.consular, (s) => s.serversCpuMs), undefined),
      costRow(`idle pass, one-shot, ${tasks} tasks`, "ms", med(idle.floor, (s) => s.ms), med(idle.consular, (s) => s.ms), 1.3),
      {
        figure: "idle pass: requests / writes",
        floor: `${med(idle.floor, (s) => s.requests)} / ${med(idle.floor, (s) => s.writes)}`,
        consular: `${med(idle.consular, (s) => s.requests)} / ${med(idle.consular, (s) => s.writes)}`,
        ratio: undefined,
        // Marathon's apps and pods, the catalog, the KV tree, and each agent's services
        target: `<= ${allAgents.length + 4} / 0`,
        pass: idle.consular.every((s) => s.requests <= allAgents.length + 4 && s.writes === 0)
      },
      costRow(`idle pass CPU inside one process (${sizes.passes} passes after the first)`, "ms", passCpu("floor"), passCpu("consular"), 1.3),
      ...eventRows("RUNNING, just started (new app versions)", phase("floor", (e) => e.freshRunning), phase("consular", (e) => e.freshRunning)),
      ...eventRows("KILLED, just started", phase("floor", (e) => e.freshKilled), phase("consular", (e) => e.freshKilled)),
      ...eventRows("RUNNING, warm", phase("floor", (e) => e.warmRunning), phase("consular", (e) => e.warmRunning)),
      ...eventRows("KILLED, warm", phase("floor", (e) => e.warmKilled), phase("consular", (e) => e.warmKilled)),
      costRow("peak RSS: cold sync", "MiB", mib(peak(cold.floor)), mib(peak(cold.consular)), 1.1),
      costRow(`peak RSS: event receiver after ${6 * sizes.events} events`, "MiB", mib(peak(events.floor)), mib(peak(events.consular)), 1.1),
      {
        figure: "earlier floor: the cold sync's writes only, from its first request",
        floor: `${round(median(writeOnlyFloor))} ms`,
        consular: "-",
        ratio: med(cold.consular, (s) => s.ms) / median(writeOnlyFloor),
        target: "not a target",
        pass: undefined
      }
    ]
    if (soak !== undefined) {
      rows.push({
        figure: `soak ${soak.events} events: RSS after ${soak.firstEvents} -> end`,
        floor: "-",
        consular: `${mib(soak.rssAfterFirstKiB)} -> ${mib(soak.rssAtEndKiB)} MiB (${soak.growthPercent >= 0 ? "+" : ""}${soak.growthPercent}%), ${soak.effectsPerSecond}/s`,
        ratio: undefined,
        target: "<= +10%",
        pass: soak.growthPercent <= 10
      })
    }

    const syncFigures = (runs: ReadonlyArray<SyncRun>) => ({
      runsMs: runs.map((s) => round(s.ms)),
      cpuMs: runs.map((s) => s.cpuMs === undefined ? null : round(s.cpuMs, 0)),
      serversCpuMs: runs.map((s) => round(s.serversCpuMs, 0)),
      peakRssMiB: runs.map((s) => mib(s.peakKiB)),
      requests: runs.map((s) => s.requests),
      writes: runs.map((s) => s.writes)
    })
    const eventFigures = (side: Side) => events[side].map(({ peakKiB, soak: _soak, ...run }) => ({ ...run, peakRssMiB: mib(peakKiB) }))
    const figures = {
      sizes,
      machine: { node: process.version, cpus: os.cpus().length, loadAverageAtStart: loadAtStart, loadAverageAtEnd: os.loadavg().map((l) => round(l, 2)) },
      startup,
      coldSync: { floor: syncFigures(cold.floor), consular: syncFigures(cold.consular) },
      idleSync: { floor: syncFigures(idle.floor), consular: syncFigures(idle.consular) },
      idlePassCpuMs: passes,
      events: { floor: eventFigures("floor"), consular: eventFigures("consular") },
      writeOnlyFloorMs: writeOnlyFloor.map((ms) => round(ms)),
      soak: soak === undefined ? undefined : { ...soak, rssAfterFirstMiB: mib(soak.rssAfterFirstKiB), rssAtEndMiB: mib(soak.rssAtEndKiB), peakRssMiB: mib(soak.peakKiB) },
      table: rows.map((r) => ({ ...r, ratio: r.ratio === undefined || !Number.isFinite(r.ratio) ? null : round(r.ratio, 3) })),
      allPass: rows.every((r) => r.pass !== false),
      invalid
    }
    // a part left out by BENCH_ONLY has no figures: no row
    const unmeasured = (text: string) => /^(NaN|-Infinity|-$)/.test(text)
    process.stdout.write(`\n${table(rows.filter((r) => !(unmeasured(r.floor) && unmeasured(r.consular))))}\n\n`)
    if (invalid.length > 0) process.stdout.write(`INVALID MEASUREMENTS:\n${invalid.map((i) => `  - ${i}`).join("\n")}\n\n`)
    process.stdout.write(JSON.stringify(figures) + "\n")
    return invalid.length === 0 ? 0 : 1
  } finally {
    killAll()
    await Effect.runPromise(Scope.close(scope, Exit.void))
    clearTimeout(deadline)
  }
}

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    killAll()
    process.exit(130)
  })
}
process.once("exit", killAll)

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    killAll()
    process.stderr.write(`bench failed: ${error instanceof Error ? error.stack ?? error.message : String(error)}\n`)
    process.exit(1)
  }
)
