import { Effect, Exit, Scope } from "effect"
import { readFileSync } from "node:fs"
import * as os from "node:os"
import { performance } from "node:perf_hooks"
import { fileURLToPath } from "node:url"
import { Pool } from "undici"
import type { Registration } from "../src/domain/ConsulApi.js"
import { serveConsul } from "../src/embedded/ConsulServer.js"
import { serveMarathon } from "../src/embedded/MarathonServer.js"
import { ConsulStore } from "../src/services/ConsulStore.js"
import { MarathonStore } from "../src/services/MarathonStore.js"
import { cpuMsOf, freePort, killAll, memoryOf, ownCpuMs, run, sleep, start, waitFor } from "./children.js"
import type { Daemon } from "./children.js"
import { agentAddresses, appIdOf, coldSyncWrites, hostOf, mainAgent, makeSeed, registrationId, sizesFromEnv, taskId } from "./seed.js"
import type { Sizes } from "./seed.js"

/**
 * `npm run bench`: consular against an embedded Consul (one port on 127.0.0.1 … 127.0.0.(H+1)) and an embedded
 * Marathon, both in this process; consular itself always runs as a child process, as operators run it
 * (`node dist/main.js …`). Prints a table, then one JSON line with every figure. Exit code 1 only when a
 * measurement is invalid (a sync that did not produce the layout, an event that failed, a child that died);
 * a missed target is reported, not failed: the bench does not gate CI.
 */

const root = fileURLToPath(new URL("../../", import.meta.url))
const mainJs = `${root}dist/main.js`
const floorJs = fileURLToPath(new URL("./floor.js", import.meta.url))
const node = process.execPath
const version = (JSON.parse(readFileSync(`${root}package.json`, "utf8")) as { version: string }).version

const MiB = 1024
const mib = (kib: number | undefined) => kib === undefined ? NaN : round(kib / MiB)
const round = (n: number, digits = 1) => Number(n.toFixed(digits))
const median = (values: ReadonlyArray<number>): number => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}
const percentile = (sorted: ReadonlyArray<number>, p: number): number =>
  sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!

/** Why a figure cannot be trusted; any entry makes the exit code 1. */
const invalid: Array<string> = []
const note = (line: string) => process.stderr.write(`bench: ${line}\n`)

// --- the datacenter --------------------------------------------------------------------------------------

const sizes: Sizes = sizesFromEnv()
const agents = agentAddresses(sizes)
const allAgents = [mainAgent, ...agents]
const seed = makeSeed(sizes)
const expected = coldSyncWrites(seed)

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

const servicesPerAgent = () => Object.fromEntries(allAgents.map((agent) => [agent, consul.services(agent).size]))

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

// --- measurements ----------------------------------------------------------------------------------------

interface StartupFigures {
  readonly runsMs: ReadonlyArray<number>
  readonly medianMs: number
}

const measureStartup = async (): Promise<StartupFigures> => {
  const runsMs: Array<number> = []
  for (let i = 0; i < sizes.startups; i++) {
    const finished = await run(node, [mainJs, "--version"], { timeoutMs: 20_000 })
    if (finished.code !== 0 || !finished.stdout.includes(version)) {
      invalid.push(`--version: exit ${finished.code}, stdout ${JSON.stringify(finished.stdout.slice(0, 200))}`)
    }
    runsMs.push(finished.ms)
  }
  return { runsMs: runsMs.map((ms) => round(ms)), medianMs: round(median(runsMs)) }
}

const consulUrl = (port: number) => `http://${mainAgent}:${port}`

interface FloorRun {
  readonly ms: number
  /** CPU of this process (the embedded Consul) over the floor child's whole run, ms */
  readonly benchCpuMs: number
}

const measureFloor = async (port: number): Promise<FloorRun> => {
  resetConsul()
  const cpu0 = ownCpuMs()
  const finished = await run(node, [floorJs, JSON.stringify({ port, sizes })], { timeoutMs: 300_000 })
  const benchCpuMs = ownCpuMs() - cpu0
  const result = JSON.parse(finished.stdout.trim().split("\n").pop() ?? "{}") as { ms?: number; failures?: number }
  if (finished.code !== 0 || result.ms === undefined) {
    invalid.push(`floor client failed: exit ${finished.code}: ${finished.stderr.slice(-500)}`)
    return { ms: NaN, benchCpuMs }
  }
  if (result.failures !== 0) invalid.push(`floor: ${result.failures} requests failed`)
  const problems = layoutProblems()
  if (problems.length > 0) invalid.push(`floor did not write the layout: ${problems.join("; ")}`)
  return { ms: result.ms, benchCpuMs }
}

interface SyncRun {
  readonly ms: number
  readonly peakKiB: number | undefined
  /** CPU of the consular process (to its last sample) and of this one (the embedded Consul and Marathon), ms */
  readonly cpuMs: number | undefined
  readonly benchCpuMs: number
  readonly summary: string
}

/** More flags for both the sync and the daemon, e.g. BENCH_FLAGS="--health-checks ttl --service-meta". */
const benchFlags = (process.env["BENCH_FLAGS"] ?? "").split(/\s+/).filter((flag) => flag !== "")

const syncArgs = (consulPort: number, marathonUrl: string) =>
  [mainJs, "sync", "--purge", "--consul", consulUrl(consulPort), "--marathon", marathonUrl, "--registration-id", registrationId, ...benchFlags]

const runSync = async (consulPort: number, marathonUrl: string, what: string): Promise<SyncRun> => {
  const cpu0 = ownCpuMs()
  const finished = await run(node, syncArgs(consulPort, marathonUrl), { timeoutMs: 300_000, sampleMs: 20 })
  const benchCpuMs = ownCpuMs() - cpu0
  if (finished.code !== 0) invalid.push(`${what}: exit ${finished.code ?? finished.signal}: ${(finished.stderr || finished.stdout).slice(-800)}`)
  return { ms: finished.ms, peakKiB: finished.peakKiB, cpuMs: finished.cpuMs, benchCpuMs, summary: finished.stdout.trim() }
}

const measureColdSync = async (consulPort: number, marathonUrl: string): Promise<SyncRun> => {
  resetConsul()
  const result = await runSync(consulPort, marathonUrl, "cold sync")
  const problems = layoutProblems()
  if (problems.length > 0) invalid.push(`cold sync did not produce the layout: ${problems.join("; ")}`)
  return result
}

interface IdleFigures {
  readonly ms: number
  readonly consulRequests: number
  readonly marathonRequests: number
  readonly requests: number
  readonly writes: number
  readonly limit: number
  readonly operations: Readonly<Record<string, number>>
}

const measureIdle = async (consulPort: number, marathonUrl: string): Promise<IdleFigures> => {
  consul.resetCounters()
  marathon.requests = 0
  marathon.requestLog.length = 0
  const result = await runSync(consulPort, marathonUrl, "idle sync")
  const operations: Record<string, number> = {}
  for (const record of consul.log) operations[record.operation] = (operations[record.operation] ?? 0) + 1
  for (const operation of marathon.requestLog) operations[`marathon.${operation}`] = (operations[`marathon.${operation}`] ?? 0) + 1
  const problems = layoutProblems()
  if (problems.length > 0) invalid.push(`idle sync changed the layout: ${problems.join("; ")}`)
  return {
    ms: round(result.ms),
    consulRequests: consul.requests,
    marathonRequests: marathon.requests,
    requests: consul.requests + marathon.requests,
    writes: consul.writes,
    limit: allAgents.length + 3,
    operations
  }
}

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
  /** share of one core used while the events ran: the daemon, and this process (embedded Consul + sender) */
  readonly daemonCpuPercent: number
  readonly benchCpuPercent: number
  /** daemon CPU per event, µs */
  readonly daemonCpuUsPerEvent: number
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
  daemonPid: number,
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
            path: "/events",
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
  const daemonCpu0 = cpuMsOf(daemonPid) ?? NaN
  const benchCpu0 = ownCpuMs()
  const start = performance.now()
  await Promise.all(Array.from({ length: sizes.concurrency }, worker))
  const wall = performance.now() - start
  const daemonCpu = (cpuMsOf(daemonPid) ?? NaN) - daemonCpu0
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
    daemonCpuPercent: round((daemonCpu / wall) * 100, 0),
    benchCpuPercent: round((benchCpu / wall) * 100, 0),
    daemonCpuUsPerEvent: round((daemonCpu / Math.max(1, events)) * 1000, 0)
  }
}

interface DaemonFigures {
  readonly readyMs: number
  readonly running: EventFigures
  readonly killed: EventFigures
  readonly peakKiB: number | undefined
  readonly soak: SoakFigures | undefined
}

interface SoakFigures {
  readonly events: number
  readonly effectsPerSecond: number
  readonly p99Ms: number
  readonly rssAfterFirstKiB: number | undefined
  readonly firstEvents: number
  readonly rssAtEndKiB: number | undefined
  /** after every 10,000 events */
  readonly rssSeriesMiB: ReadonlyArray<number>
  readonly growthPercent: number
  readonly peakKiB: number | undefined
}

/** the soak stops taking new events after this long (it is the longest phase by far) */
const soakSeconds = Number(process.env["SOAK_SECONDS"] ?? 300)
/**
 * Tasks of the daemon phase: not in Consul yet, of apps Marathon has. The daemon runs as operators run it, with a
 * periodic sync (first pass at start, which also tells it each app's labels version); the events start once
 * /ready says that pass is done.
 */
const eventTask = (i: number) => taskId(i % sizes.apps, 100_000 + i, "e000")
const soakTask = (i: number) => taskId(i % sizes.apps, 1_000_000 + i, "5000")

const measureDaemon = async (consulPort: number, marathonUrl: string): Promise<DaemonFigures | undefined> => {
  const port = await freePort()
  const started = performance.now()
  const daemon: Daemon = start(node, [
    mainJs, "run", "--host", "127.0.0.1", "--port", String(port),
    "--consul", consulUrl(consulPort), "--marathon", marathonUrl,
    "--registration-id", registrationId, "--sync-interval", "3600", "--events", "callback", ...benchFlags
  ])
  const pool = new Pool(`http://127.0.0.1:${port}`, {
    connections: sizes.concurrency,
    headersTimeout: 20_000,
    bodyTimeout: 20_000,
    connectTimeout: 2_000
  })
  // the embedded Consul logs every request; nobody reads it here, and a full log costs a copy per request
  const trim = setInterval(() => {
    if (consul.log.length > 10_000) consul.log.length = 0
  }, 200)
  try {
    const ready = await waitFor(async () => {
      if (daemon.exited()) return true
      const response = await pool.request({ method: "GET", path: "/ready" })
      await response.body.dump()
      return response.statusCode === 200
    }, 60_000)
    if (!ready || daemon.exited()) {
      invalid.push(`daemon was not ready within 60 s: ${daemon.output().slice(-800)}`)
      return undefined
    }
    const readyMs = performance.now() - started
    // a warm-up the figures leave out: a daemon runs for days, its event path is past the JIT's first passes
    const warmTask = (i: number) => taskId(i % sizes.apps, 500_000 + i, "0a00")
    await sendEvents(pool, daemon.pid, sizes.events, (i) => [statusUpdate(warmTask(i), i, i, "TASK_RUNNING"), statusUpdate(warmTask(i), i, i, "TASK_KILLED")], "warm-up")
    const before = consul.services(agents[0]!).size
    const running = await sendEvents(pool, daemon.pid, sizes.events, (i) => [statusUpdate(eventTask(i), i, i, "TASK_RUNNING")], "RUNNING events")
    const registered = [...Array(sizes.events).keys()].filter((i) => consul.services(hostOf(sizes, i)).has(eventTask(i))).length
    if (registered !== sizes.events) invalid.push(`RUNNING events: ${registered} of ${sizes.events} services on their agents`)
    const killed = await sendEvents(pool, daemon.pid, sizes.events, (i) => [statusUpdate(eventTask(i), i, i, "TASK_KILLED")], "KILLED events")
    const left = [...Array(sizes.events).keys()].filter((i) => consul.services(hostOf(sizes, i)).has(eventTask(i))).length
    if (left !== 0) invalid.push(`KILLED events: ${left} services still registered`)
    if (consul.services(agents[0]!).size !== before) invalid.push("events changed services they do not own")
    const peakKiB = memoryOf(daemon.pid)?.hwmKiB

    let soak: SoakFigures | undefined
    if (sizes.soak > 0) {
      // RUNNING/KILLED pairs in segments of 10,000 events; the daemon's RSS is read after each (once it is idle)
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
      soak = {
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
      const leftovers = [...consul.agents.values()].reduce((n, agent) => n + agent.services.size, 0) - expected.registrations.length
      if (leftovers !== 0) invalid.push(`soak: ${leftovers} services left behind`)
    }
    if (daemon.exited()) invalid.push(`daemon exited during the run: ${daemon.output().slice(-800)}`)
    return { readyMs: round(readyMs), running, killed, peakKiB, soak }
  } finally {
    clearInterval(trim)
    onLanding = undefined
    await pool.destroy().catch(() => undefined)
    const code = await daemon.stop()
    if (code !== 0) note(`daemon exited with ${code} on SIGTERM`)
  }
}

// --- report ----------------------------------------------------------------------------------------------

interface Row {
  readonly figure: string
  readonly measured: string
  readonly target: string
  readonly pass: boolean | undefined
}

const table = (rows: ReadonlyArray<Row>): string => {
  const cells = rows.map((r) => [r.figure, r.measured, r.target, r.pass === undefined ? "-" : r.pass ? "pass" : "FAIL"])
  const header = ["figure", "measured", "target", ""]
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)))
  const line = (c: ReadonlyArray<string>) => c.map((cell, i) => cell.padEnd(widths[i]!)).join("  ").trimEnd()
  return [line(header), line(widths.map((w) => "-".repeat(w))), ...cells.map(line)].join("\n")
}


const main = async () => {
  const deadline = setTimeout(() => {
    note("the bench took longer than 20 minutes: stopped")
    killAll()
    process.exit(2)
  }, 20 * 60_000)
  deadline.unref()
  const loadAtStart = os.loadavg().map((l) => round(l, 2))
  if (loadAtStart[0]! > os.cpus().length * 0.5) note(`load average ${loadAtStart[0]} on ${os.cpus().length} CPUs: the figures will be noisy`)
  const scope = Effect.runSync(Scope.make())
  try {
    const consulServer = await Effect.runPromise(serveConsul(consul, { addresses: allAgents }).pipe(Scope.extend(scope)))
    const marathonServer = await Effect.runPromise(serveMarathon(marathon, { address: mainAgent }).pipe(Scope.extend(scope)))
    const consulPort = consulServer.port
    const marathonUrl = marathonServer.url
    note(`${sizes.apps} apps x ${sizes.tasks} tasks x ${sizes.labels} labels on ${sizes.agents} agents; ` +
      `Consul ${consulUrl(consulPort)} (+${agents.join(",")}), Marathon ${marathonUrl}`)

    note("start-up: --version")
    const startup = await measureStartup()

    const floors: Array<FloorRun> = []
    const syncs: Array<SyncRun> = []
    for (let i = 0; i < sizes.runs; i++) {
      note(`floor ${i + 1}/${sizes.runs}`)
      floors.push(await measureFloor(consulPort))
      note(`cold sync ${i + 1}/${sizes.runs}`)
      syncs.push(await measureColdSync(consulPort, marathonUrl))
    }
    const layout = { servicesPerAgent: servicesPerAgent(), kvKeys: consul.kv.size }
    note("idle pass")
    const idle = await measureIdle(consulPort, marathonUrl)
    note(`daemon: ${sizes.events} RUNNING, ${sizes.events} KILLED, soak of ${sizes.soak}`)
    const daemon = await measureDaemon(consulPort, marathonUrl)

    const floorMs = median(floors.map((f) => f.ms))
    const syncMs = median(syncs.map((s) => s.ms))
    const ratio = syncMs / floorMs
    const syncPeakKiB = Math.max(...syncs.map((s) => s.peakKiB ?? NaN))
    const peakKiB = Math.max(syncPeakKiB, daemon?.peakKiB ?? NaN)
    const tasks = sizes.apps * sizes.tasks

    const rows: Array<Row> = [
      { figure: `floor: ${tasks} registrations + ${Math.ceil(expected.kv.length / 64)} txn, C=${sizes.concurrency}`, measured: `${round(floorMs)} ms (embedded Consul CPU ${round(median(floors.map((f) => f.benchCpuMs)), 0)} ms)`, target: "-", pass: undefined },
      { figure: "cold sync: CPU of consular / of the embedded servers", measured: `${round(median(syncs.map((s) => s.cpuMs ?? NaN)), 0)} / ${round(median(syncs.map((s) => s.benchCpuMs)), 0)} ms`, target: "-", pass: undefined },
      { figure: "cold sync --purge (process start to exit)", measured: `${round(syncMs)} ms = ${round(ratio, 2)}x floor`, target: "<= 1.3x floor", pass: ratio <= 1.3 },
      { figure: "idle pass: writes", measured: `${idle.writes}`, target: "0", pass: idle.writes === 0 },
      { figure: "idle pass: requests (Consul + Marathon)", measured: `${idle.requests} (${idle.consulRequests} + ${idle.marathonRequests})`, target: `<= ${idle.limit}`, pass: idle.requests <= idle.limit },
      { figure: "start-up: --version (median)", measured: `${startup.medianMs} ms`, target: "<= 400 ms", pass: startup.medianMs <= 400 }
    ]
    if (daemon !== undefined) {
      const { running, killed, soak } = daemon
      rows.push(
        { figure: `RUNNING events: effects/s`, measured: `${running.effectsPerSecond} (CPU: daemon ${running.daemonCpuPercent}%, bench ${running.benchCpuPercent}%)`, target: ">= 1000", pass: running.effectsPerSecond >= 1000 },
        { figure: `RUNNING: latency p50/p90/p99/max`, measured: `${running.p50Ms}/${running.p90Ms}/${running.p99Ms}/${running.maxMs} ms`, target: "p99 <= 30 ms", pass: running.p99Ms <= 30 },
        { figure: `KILLED events: effects/s`, measured: `${killed.effectsPerSecond} (CPU: daemon ${killed.daemonCpuPercent}%, bench ${killed.benchCpuPercent}%)`, target: ">= 1500", pass: killed.effectsPerSecond >= 1500 },
        { figure: `KILLED: latency p50/p90/p99/max`, measured: `${killed.p50Ms}/${killed.p90Ms}/${killed.p99Ms}/${killed.maxMs} ms`, target: "p99 <= 30 ms", pass: killed.p99Ms <= 30 }
      )
      if (soak !== undefined) {
        rows.push({
          figure: `soak ${soak.events} events: RSS after ${soak.firstEvents} -> end`,
          measured: `${mib(soak.rssAfterFirstKiB)} -> ${mib(soak.rssAtEndKiB)} MiB (${soak.growthPercent >= 0 ? "+" : ""}${soak.growthPercent}%), ${soak.effectsPerSecond}/s`,
          target: "<= +10%",
          pass: soak.growthPercent <= 10
        })
      }
    }
    rows.push({
      figure: `peak RSS: sync of ${tasks} tasks / daemon after ${2 * sizes.events} events`,
      measured: `${mib(syncPeakKiB)} / ${mib(daemon?.peakKiB)} MiB`,
      target: "<= 100 MiB",
      pass: peakKiB <= 100 * MiB
    })

    const figures = {
      sizes,
      machine: { node: process.version, cpus: os.cpus().length, loadAverageAtStart: loadAtStart, loadAverageAtEnd: os.loadavg().map((l) => round(l, 2)) },
      startup,
      floor: {
        runsMs: floors.map((f) => round(f.ms)),
        medianMs: round(floorMs),
        requests: expected.registrations.length + Math.ceil(expected.kv.length / 64),
        embeddedConsulCpuMs: floors.map((f) => round(f.benchCpuMs, 0))
      },
      coldSync: {
        runsMs: syncs.map((s) => round(s.ms)),
        consularCpuMs: syncs.map((s) => s.cpuMs === undefined ? null : round(s.cpuMs, 0)),
        embeddedCpuMs: syncs.map((s) => round(s.benchCpuMs, 0)),
        medianMs: round(syncMs),
        ratioToFloor: round(ratio, 3),
        peakRssMiB: mib(syncPeakKiB),
        layout,
        summary: syncs[syncs.length - 1]?.summary
      },
      idle,
      daemon: daemon === undefined ? undefined : {
        readyMs: daemon.readyMs,
        running: daemon.running,
        killed: daemon.killed,
        peakRssMiB: mib(daemon.peakKiB),
        soak: daemon.soak === undefined ? undefined : {
          ...daemon.soak,
          rssAfterFirstMiB: mib(daemon.soak.rssAfterFirstKiB),
          rssAtEndMiB: mib(daemon.soak.rssAtEndKiB),
          peakRssMiB: mib(daemon.soak.peakKiB)
        }
      },
      peakRssMiB: mib(peakKiB),
      pass: Object.fromEntries(rows.filter((r) => r.pass !== undefined).map((r) => [r.figure, r.pass])),
      allPass: rows.every((r) => r.pass !== false),
      invalid
    }
    process.stdout.write(`\n${table(rows)}\n\n`)
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
