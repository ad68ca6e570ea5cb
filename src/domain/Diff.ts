import type { AgentCheck, AgentService, Registration } from "./ConsulApi.js"
import type { AgentDirectory } from "./Agents.js"
import type { AppId, Labels, Task } from "./MarathonApi.js"
import { isRunning } from "./MarathonApi.js"
import type { AppName } from "./Naming.js"
import {
  appIdFromTags, appKvPrefix, appName, encodeLabelValue, isOwnedBy, labelKey, parseLabelKey, registrationsOfApp, ttlCheckId
} from "./Naming.js"
import type { RegistrationOptions } from "./Naming.js"
import { appTaskEndpoints } from "./Networking.js"
import type { AppNetworking, TaskEndpoints } from "./Networking.js"
import type { PodServices } from "./Pods.js"
import { checkHolds, sameMeta } from "./RegistrationExtras.js"
import { isOwnedByMeta } from "./ServiceMeta.js"

/**
 * The pure reconciliation core: from what Marathon runs (desired) and what Consul holds (actual), the writes
 * that make Consul match. An empty plan when Consul already matches: an idle pass writes nothing.
 */

/** An app whose tasks are known (embedded in the listing or fetched separately), with its networking. */
export interface AppWithTasks extends AppNetworking {
  readonly id: AppId
  /** absent: none */
  readonly labels?: Labels | undefined
  readonly version?: string | undefined
  /** Marathon runs health checks for this app (`--health-checks ttl` relays their verdict) */
  readonly hasHealthChecks?: boolean | undefined
  readonly tasks: ReadonlyArray<Task>
}

/**
 * What `--service-meta` and `--health-checks ttl` add to each registration of a task (RegistrationExtras.ts);
 * `taskId`: the Marathon task, apart from the registration's ID (a registration per port has an ID of its own).
 */
export type Decorate = (registration: Registration, workload: DecoratedWorkload, taskId: string) => Registration

/** The app or pod a registration is of, as `Decorate` sees it. */
export interface DecoratedWorkload {
  readonly id: AppId | string
  readonly labels?: Labels | undefined
}

export interface DesiredService {
  readonly agent: string
  readonly registration: Registration
  /** the task the service is of; absent: the registration's ID (one of several services of a task has its own) */
  readonly taskId?: string | undefined
  /** on the main agent because the task's host is no known agent (`--fallback`) */
  readonly fallback?: boolean | undefined
}

/** A running task left out because its host is no known Consul agent (and there is no `--fallback`). */
export interface SkippedTask {
  readonly taskId: string
  /** the app or pod id */
  readonly appId: AppId | string
  readonly host: string
}

/** An app or a pod: what has a Consul name, labels in KV and running tasks as services. */
interface Workload {
  readonly id: AppId | string
  readonly labels?: Labels | undefined
  /** calls `service` for each running task, with where it is reached */
  readonly eachService: (service: (taskId: string, host: string, endpoints: TaskEndpoints) => void) => void
}

const appWorkload = (app: AppWithTasks): Workload => ({
  id: app.id,
  labels: app.labels,
  eachService: (service) => {
    const endpointsOf = appTaskEndpoints(app)
    for (const task of app.tasks) if (isRunning(task)) service(task.id, task.host, endpointsOf(task))
  }
})

const podWorkload = (pod: PodServices): Workload => ({
  id: pod.id,
  labels: pod.labels,
  eachService: (service) => {
    for (const task of pod.tasks) service(task.id, task.host, task.endpoints)
  }
})

interface WantedService {
  readonly taskId: string
  readonly host: string
  readonly registrations: ReadonlyArray<Registration>
}

export interface Clash {
  readonly name: AppName
  /** app and pod ids */
  readonly ids: ReadonlyArray<string>
}

export interface Desired {
  /** running tasks' services by service id (the task id; with --service-per-port also "<task id>:<port>") */
  readonly services: ReadonlyMap<string, DesiredService>
  /** label keys with their stored (JSON-encoded) values */
  readonly labels: ReadonlyMap<string, string>
  /** names of the apps and pods consular manages in this pass */
  readonly apps: ReadonlySet<AppName>
  /** names and ids that two or more apps or pods share: skipped entirely, their Consul entries left alone */
  readonly clashes: ReadonlyArray<Clash>
  /** ids whose Consul entries are left alone: clashing apps and pods, and those Marathon listed but could not read */
  readonly clashingIds: ReadonlySet<string>
  /** names whose KV trees are left alone, for the same reasons */
  readonly protectedNames: ReadonlySet<AppName>
  /** running tasks whose host is no known agent: neither registered nor contacted */
  readonly skipped: ReadonlyArray<SkippedTask>
}

export interface DesiredOptions extends RegistrationOptions {
  /** apps and pods Marathon listed that could not be read: skipped, and nothing of theirs purged */
  readonly unreadableIds?: ReadonlyArray<string> | undefined
  /** `--fallback`: a task whose host is no known agent goes to this (the main) agent instead of being skipped */
  readonly fallbackAgent?: string | undefined
  /** running pods (Marathon 1.4+): services and labels like apps', and names shared with apps are clashes */
  readonly pods?: ReadonlyArray<PodServices> | undefined
  /** what the flags add to each registration; absent: the registrations as built */
  readonly decorate?: Decorate | undefined
}

export const desiredState = (
  apps: ReadonlyArray<AppWithTasks>,
  registrationId: string,
  /** the agent of a task host; undefined: no known agent */
  directory: Pick<AgentDirectory, "agentOf">,
  options: DesiredOptions = {}
): Desired => {
  const unreadableIds = options.unreadableIds ?? []
  const unreadableNames = new Set(unreadableIds.map((id) => appName(id)))
  const all: Array<Workload> = apps.map(appWorkload)
  for (const pod of options.pods ?? []) all.push(podWorkload(pod))
  const workloads = all.map((workload) => {
    const name = appName(workload.id)
    const registrationsOf = registrationsOfApp(registrationId, workload.id, options)
    // every Consul name it registers: its own, and with --service-per-port those of its other ports (for which
    // its registrations are made here, once)
    if (options.servicePerPort !== true) return { workload, name, registrationsOf, wanted: undefined, claimed: [name] }
    const wanted: Array<WantedService> = []
    workload.eachService((taskId, host, endpoints) => {
      wanted.push({ taskId, host, registrations: registrationsOf(taskId, endpoints) })
    })
    const claimed = new Set<string>([name])
    for (const service of wanted) for (const r of service.registrations) claimed.add(r.Name)
    return { workload, name, registrationsOf, wanted, claimed: [...claimed] }
  })
  const claimants = new Map<string, Array<string>>()
  for (const { claimed, workload } of workloads) {
    for (const claim of claimed) {
      const ids = claimants.get(claim)
      if (ids === undefined) claimants.set(claim, [workload.id])
      else ids.push(workload.id)
    }
  }
  const clashes: Array<Clash> = []
  const clashingIds = new Set<string>(unreadableIds)
  for (const [name, ids] of claimants) {
    if (ids.length < 2) continue
    const distinct = [...new Set(ids)].sort()
    clashes.push({ name: name as AppName, ids: distinct })
    for (const id of distinct) clashingIds.add(id)
  }
  const services = new Map<string, DesiredService>()
  const labels = new Map<string, string>()
  const names = new Set<AppName>()
  const skipped: Array<SkippedTask> = []
  const protectedNames = new Set<AppName>([...clashes.map((clash) => clash.name), ...unreadableNames])
  const decorate = options.decorate
  for (const { name, registrationsOf, wanted, workload } of workloads) {
    if (clashingIds.has(workload.id) || unreadableNames.has(name)) {
      clashingIds.add(workload.id)
      protectedNames.add(name)
      continue
    }
    names.add(name)
    const appLabels = workload.labels
    if (appLabels !== undefined) for (const label of Object.keys(appLabels)) labels.set(labelKey(name, label), encodeLabelValue(appLabels[label]!))
    const want = (taskId: string, host: string, all: ReadonlyArray<Registration>) => {
      const known = directory.agentOf(host)
      const agent = known ?? options.fallbackAgent
      if (agent === undefined) {
        skipped.push({ taskId, appId: workload.id, host })
        return
      }
      for (const plain of all) {
        const r = decorate === undefined ? plain : decorate(plain, workload, taskId)
        const service: { agent: string; registration: Registration; taskId?: string; fallback?: boolean } = { agent, registration: r }
        if (r.ID !== taskId) service.taskId = taskId
        if (known === undefined) service.fallback = true
        services.set(r.ID, service)
      }
    }
    if (wanted !== undefined) for (const { host, registrations: all, taskId } of wanted) want(taskId, host, all)
    else workload.eachService((taskId, host, endpoints) => want(taskId, host, registrationsOf(taskId, endpoints)))
  }
  return { services, labels, apps: names, clashes, clashingIds, protectedNames, skipped }
}

/**
 * The ids of a Marathon listing (apps and pods) whose Consul entries are left alone: ids sharing one Consul name,
 * and those it listed but could not read (as `desiredState` finds them, without planning anything).
 */
export const clashingIdsOf = (ids: ReadonlyArray<string>, unreadableIds: ReadonlyArray<string> = []): ReadonlySet<string> => {
  const unreadableNames = new Set(unreadableIds.map((id) => appName(id)))
  const byName = new Map<AppName, Array<string>>()
  for (const id of ids) {
    const name = appName(id)
    const group = byName.get(name)
    if (group === undefined) byName.set(name, [id])
    else group.push(id)
  }
  const clashing = new Set<string>(unreadableIds)
  for (const [name, group] of byName) {
    if (group.length > 1 || unreadableNames.has(name)) for (const id of group) clashing.add(id)
  }
  return clashing
}

/** What an agent answered when asked for its services. */
export type AgentState =
  | {
    readonly _tag: "Read"
    readonly services: ReadonlyMap<string, AgentService>
    /** by CheckID; read only when checks matter (`--health-checks ttl`): absent, checks are not compared */
    readonly checks?: ReadonlyMap<string, AgentCheck> | undefined
  }
  /** `unreachable`: refused or timed out (fallback applies); otherwise it answered an error */
  | { readonly _tag: "Unreadable"; readonly unreachable: boolean }

export interface Actual {
  readonly agents: ReadonlyMap<string, AgentState>
  /** every key below `consular/` with its value; undefined when the KV store could not be read */
  readonly kv: ReadonlyMap<string, string> | undefined
}

export interface PlanOptions {
  readonly registrationId: string
  readonly purge: boolean
  readonly fallback: boolean
  readonly directory: Pick<AgentDirectory, "main" | "inCatalog">
  /** `--service-meta`: a service is also ours by its Meta (external-source + consular-reg-id), whatever its tags */
  readonly serviceMeta?: boolean | undefined
}

export interface Plan {
  readonly register: ReadonlyArray<DesiredService>
  readonly deregister: ReadonlyArray<{ readonly agent: string; readonly serviceId: string; readonly why: "dead" | "moved" }>
  readonly kvSet: ReadonlyArray<{ readonly key: string; readonly value: string }>
  readonly kvDelete: ReadonlyArray<string>
  /** `consular/<app>/` trees of apps gone from Marathon (purge only) */
  readonly kvDeleteTree: ReadonlyArray<string>
}

export const emptyPlan: Plan = { register: [], deregister: [], kvSet: [], kvDelete: [], kvDeleteTree: [] }

export const planSize = (plan: Plan): number =>
  plan.register.length + plan.deregister.length + plan.kvSet.length + plan.kvDelete.length + plan.kvDeleteTree.length

/** Consul holds the registration exactly: same name, address, port (0 when none), the same tags and Meta. */
export const matches = (service: AgentService, wanted: Registration): boolean =>
  service.Service === wanted.Name &&
  service.Address === wanted.Address &&
  service.Port === (wanted.Port ?? 0) &&
  sameTags(service.Tags ?? [], wanted.Tags) &&
  sameMeta(service.Meta, wanted.Meta)

const sameTags = (a: ReadonlyArray<string>, b: ReadonlyArray<string>): boolean => {
  if (a.length !== b.length) return false
  // as Consul gives them back, in the order registered: equal without sorting
  let inOrder = true
  for (let i = 0; i < a.length && inOrder; i++) inOrder = a[i] === b[i]
  if (inOrder) return true
  const sorted = [...b].sort()
  return [...a].sort().every((tag, i) => tag === sorted[i])
}

const holds = (state: AgentState | undefined, wanted: Registration): boolean => {
  if (state?._tag !== "Read") return false
  const service = state.services.get(wanted.ID)
  return service !== undefined && matches(service, wanted) &&
    (state.checks === undefined || checkHolds(state.checks.get(ttlCheckId(wanted.ID)), wanted.Check))
}

export const plan = (desired: Desired, actual: Actual, options: PlanOptions): Plan => {
  const register: Array<DesiredService> = []
  for (const wanted of desired.services.values()) {
    const state = actual.agents.get(wanted.agent)
    if (holds(state, wanted.registration)) continue
    // an agent that stays unreachable keeps its fallback copy on the main agent: no rewrite every pass
    if (state?._tag === "Unreadable" && state.unreachable && options.fallback &&
      holds(actual.agents.get(options.directory.main), wanted.registration)) continue
    register.push(wanted)
  }

  const deregister: Array<Plan["deregister"][number]> = []
  for (const [agent, state] of actual.agents) {
    if (state._tag !== "Read") continue
    for (const [id, service] of state.services) {
      const byMeta = options.serviceMeta === true && isOwnedByMeta(service.Meta, options.registrationId)
      if (!byMeta && !isOwnedBy(service.Tags, options.registrationId)) continue
      // tags someone edited leave the Meta, which names the app too
      const app = appIdFromTags(service.Tags ?? []) ?? (byMeta ? service.Meta?.["marathon-app-id"] : undefined)
      if (app === undefined || desired.clashingIds.has(app)) continue // not ours to judge
      const wanted = desired.services.get(id)
      if (wanted === undefined) {
        if (options.purge) deregister.push({ agent, serviceId: id, why: "dead" })
      } else if (
        wanted.agent !== agent &&
        // only between two catalog nodes is it certain these are two agents, and only once the right one holds it
        options.directory.inCatalog(agent) && options.directory.inCatalog(wanted.agent) &&
        holds(actual.agents.get(wanted.agent), wanted.registration)
      ) {
        deregister.push({ agent, serviceId: id, why: "moved" })
      }
    }
  }

  const kvSet: Array<{ key: string; value: string }> = []
  const kvDelete: Array<string> = []
  const kvDeleteTree: Array<string> = []
  if (actual.kv !== undefined) {
    for (const [key, value] of desired.labels) {
      if (actual.kv.get(key) !== value) kvSet.push({ key, value })
    }
    const clashingNames = desired.protectedNames
    const goneApps = new Set<AppName>()
    for (const key of actual.kv.keys()) {
      const parsed = parseLabelKey(key)
      if (parsed === undefined || clashingNames.has(parsed.app)) continue
      if (desired.apps.has(parsed.app)) {
        if (!desired.labels.has(key)) kvDelete.push(key)
      } else if (options.purge) {
        goneApps.add(parsed.app)
      }
    }
    for (const app of goneApps) kvDeleteTree.push(appKvPrefix(app))
  }
  return { register, deregister, kvSet, kvDelete, kvDeleteTree }
}

/** The state Consul is in once every write of `plan` has landed: for tests and dry runs. */
export const applyPlan = (actual: Actual, p: Plan): Actual => {
  const readable = new Map<string, Map<string, AgentService>>()
  const agents = new Map<string, AgentState>()
  for (const [agent, state] of actual.agents) {
    if (state._tag === "Read") {
      const services = new Map(state.services)
      readable.set(agent, services)
      agents.set(agent, { _tag: "Read", services })
    } else {
      agents.set(agent, state)
    }
  }
  for (const { agent, registration: r } of p.register) {
    readable.get(agent)?.set(r.ID, {
      ID: r.ID,
      Service: r.Name,
      Tags: [...r.Tags],
      Address: r.Address,
      Port: r.Port ?? 0,
      ...(r.Meta === undefined ? {} : { Meta: { ...r.Meta } })
    })
  }
  for (const { agent, serviceId } of p.deregister) readable.get(agent)?.delete(serviceId)
  let kv: Map<string, string> | undefined
  if (actual.kv !== undefined) {
    kv = new Map(actual.kv)
    for (const { key, value } of p.kvSet) kv.set(key, value)
    for (const key of p.kvDelete) kv.delete(key)
    for (const prefix of p.kvDeleteTree) {
      for (const key of [...kv.keys()]) if (key.startsWith(prefix)) kv.delete(key)
    }
  }
  return { agents, kv }
}
