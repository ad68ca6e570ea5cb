import type { Registration, TxnOperation } from "../src/domain/ConsulApi.js"
import { maxTxnOperations } from "../src/domain/ConsulApi.js"
import type { AppId, Host, TaskId } from "../src/domain/MarathonApi.js"
import { appName, encodeLabelValue, labelKey, registration } from "../src/domain/Naming.js"

/**
 * The benchmark's datacenter, the same in every process that needs it (the bench, the floor client): A apps of
 * T tasks and L labels each, tasks spread round-robin over H agents at 127.0.0.2 … 127.0.0.(H+1); 127.0.0.1 is
 * the main agent (KV, catalog) and runs no task.
 */

export interface Sizes {
  /** apps */
  readonly apps: number
  /** tasks per app */
  readonly tasks: number
  /** agents that run tasks (127.0.0.1 is the main agent on top of these) */
  readonly agents: number
  /** labels per app */
  readonly labels: number
  /** RUNNING events, then as many KILLED events */
  readonly events: number
  /** requests in flight at once (floor client, event sender) */
  readonly concurrency: number
  /** events of consular's soak (RUNNING/KILLED pairs); 0, the default: no soak */
  readonly soak: number
  /** cold syncs and floors measured (the medians are compared) */
  readonly runs: number
  /** `--version` start-ups measured (and as many `node -e 0`) */
  readonly startups: number
  /** periodic passes timed inside the daemon (after its first) */
  readonly passes: number
}

const positive = (name: string, fallback: number, min = 1): number => {
  const raw = process.env[name]
  if (raw === undefined || raw === "") return fallback
  const value = Number(raw)
  if (!Number.isInteger(value) || value < min) throw new Error(`${name} must be an integer >= ${min}, got ${JSON.stringify(raw)}`)
  return value
}

export const sizesFromEnv = (): Sizes => {
  // TASKS=50000 is the large datacenter: as many apps of T tasks as it takes
  const tasks = positive("T", 5)
  const total = positive("TASKS", 0, 0)
  const sizes: Sizes = {
    apps: total > 0 ? Math.ceil(total / tasks) : positive("A", 1000),
    tasks,
    agents: positive("H", 3),
    labels: positive("L", 3, 0),
    events: positive("E", 2000),
    concurrency: positive("C", 32),
    soak: positive("S", 0, 0),
    runs: positive("R", 3),
    startups: positive("STARTUPS", 7),
    passes: positive("PASSES", 5)
  }
  // 127.0.0.2 … 127.0.0.(H+1) must stay inside one /24 of loopback
  if (sizes.agents > 250) throw new Error("H must be at most 250")
  return sizes
}

export const registrationId = "bench"
export const mainAgent = "127.0.0.1"

export const agentAddresses = (sizes: Pick<Sizes, "agents">): ReadonlyArray<string> =>
  Array.from({ length: sizes.agents }, (_, i) => `127.0.0.${i + 2}`)

export interface SeedTask {
  readonly id: TaskId
  readonly host: Host
  readonly ports: ReadonlyArray<number>
}

export interface SeedApp {
  readonly id: AppId
  readonly labels: Readonly<Record<string, string>>
  readonly tasks: ReadonlyArray<SeedTask>
}

const pad = (n: number, width = 5) => String(n).padStart(width, "0")

/** A Marathon-looking task id: `<app path with _>.<uuid-like suffix>`, unique per (app, n). */
export const taskId = (app: number, n: number, kind = "0000"): TaskId =>
  `bench_app-${pad(app)}.${pad(n, 8)}-${kind}-11ef-8000-${pad(app, 12)}` as TaskId

export const appIdOf = (app: number): AppId => `/bench/app-${pad(app)}` as AppId

/** The agent a task runs on: round-robin over the task agents. */
export const hostOf = (sizes: Pick<Sizes, "agents">, n: number): Host => `127.0.0.${(n % sizes.agents) + 2}` as Host

export const makeSeed = (sizes: Pick<Sizes, "apps" | "tasks" | "agents" | "labels">): ReadonlyArray<SeedApp> =>
  Array.from({ length: sizes.apps }, (_, a) => {
    const labels: Record<string, string> = {}
    for (let l = 0; l < sizes.labels; l++) labels[`label-${l}`] = `value ${l} of app ${a}`
    const tasks = Array.from({ length: sizes.tasks }, (_, t): SeedTask => {
      const n = a * sizes.tasks + t
      return { id: taskId(a, t), host: hostOf(sizes, n), ports: [20_000 + (n % 40_000), 60_000 + t] }
    })
    return { id: appIdOf(a), labels, tasks }
  })

/** What a cold sync cannot avoid writing: one registration per task on its agent, every label in KV. */
export interface Writes {
  readonly registrations: ReadonlyArray<{ readonly agent: string; readonly registration: Registration }>
  readonly kv: ReadonlyArray<{ readonly key: string; readonly value: string }>
}

export const coldSyncWrites = (seed: ReadonlyArray<SeedApp>): Writes => {
  const registrations: Array<{ agent: string; registration: Registration }> = []
  const kv: Array<{ key: string; value: string }> = []
  for (const app of seed) {
    for (const task of app.tasks) registrations.push({ agent: task.host, registration: registration(registrationId, app.id, task) })
    for (const [label, value] of Object.entries(app.labels)) kv.push({ key: labelKey(appName(app.id), label), value: encodeLabelValue(value) })
  }
  return { registrations, kv }
}

/** The label writes as Consul transactions of at most 64 operations. */
export const txnBatches = (kv: Writes["kv"]): ReadonlyArray<ReadonlyArray<TxnOperation>> => {
  const batches: Array<Array<TxnOperation>> = []
  for (let i = 0; i < kv.length; i += maxTxnOperations) {
    batches.push(kv.slice(i, i + maxTxnOperations).map(({ key, value }): TxnOperation => ({
      KV: { Verb: "set", Key: key, Value: Buffer.from(value, "utf8").toString("base64") }
    })))
  }
  return batches
}
