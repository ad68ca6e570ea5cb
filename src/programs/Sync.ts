import { Clock as EffectClock, Duration, Effect, Either } from "effect"
import type { AgentDirectory } from "../domain/Agents.js"
import { maxTxnOperations } from "../domain/ConsulApi.js"
import type { AgentService, Registration, TxnOperation } from "../domain/ConsulApi.js"
import * as Diff from "../domain/Diff.js"
import type { AppWithTasks, Plan, SkippedTask } from "../domain/Diff.js"
import { describeRefusedOperation, isUnreachable } from "../domain/Errors.js"
import type { ConsulError, MarathonError } from "../domain/Errors.js"
import { isRunning } from "../domain/MarathonApi.js"
import type { App, Labels, PodListing, RejectedApp, Task } from "../domain/MarathonApi.js"
import { appName, isOwnedBy, kvRoot, parseLabelKey, taskIdOfService, ttlCheckId } from "../domain/Naming.js"
import { podServices } from "../domain/Pods.js"
import { guardPurge, keysUnder } from "../domain/PurgeGuard.js"
import type { PurgeRefusal } from "../domain/PurgeGuard.js"
import { appRunSpec } from "../domain/RunSpec.js"
import type { RunSpec } from "../domain/RunSpec.js"
import { decorate, ttlCheck } from "../domain/RegistrationExtras.js"
import type { SkippedLabel } from "../domain/ServiceMeta.js"
import { isOwnedByMeta } from "../domain/ServiceMeta.js"
import { Consul } from "../services/Consul.js"
import { Marathon } from "../services/Marathon.js"
import * as Clock from "../services/Clock.js"
import { makeAgentLookup } from "./Catalog.js"
import { forEachInLanes } from "./Lanes.js"
import { Ledger } from "./Ledger.js"
import { makePlacement } from "./Placement.js"
import { Topology } from "./Topology.js"
import type { HealthSettings } from "./HealthBook.js"
import { relayInPass } from "./HealthRelay.js"

export interface SyncSettings {
  readonly registrationId: string
  readonly purge: boolean
  readonly fallback: boolean
  /** bounds the fallback registration on the main agent */
  readonly fallbackTimeout: Duration.DurationInput
  /** the `--consul` URL: its host is the main agent */
  readonly consulUrl: URL
  /** compute and report the plan, write nothing */
  readonly dryRun?: boolean | undefined
  /** requests in flight at once (reads and writes) */
  readonly concurrency?: number | undefined
  /** one service per port of a task, not only the lowest port's */
  readonly servicePerPort?: boolean | undefined
  /** `--max-purge N`: a purge over N services or N keys is skipped whole; undefined: no limit */
  readonly maxPurge?: number | undefined
  /** run as the pass begins reading Marathon: what changed in Marathon before then is in this pass (POST /sync) */
  readonly readingMarathon?: Effect.Effect<void> | undefined
  /** `--service-meta`: Meta on every registration, and ownership recognised by Meta too */
  readonly serviceMeta?: boolean | undefined
  /** `--health-checks ttl`; absent: `none` */
  readonly health?: HealthSettings | undefined
  /**
   * Without TTL checks, the first pass of this process looks for checks an earlier `--health-checks ttl` left on
   * our services, and drops them (the daemon sets it; a one-shot sync reads Consul exactly as before)
   */
  readonly sweepStaleChecks?: boolean | undefined
}

export interface SyncFailure {
  /** "agent 127.0.0.2", "kv", "catalog", "marathon" */
  readonly scope: string
  /** what did not land or could not be read, when it is one thing: "task web.1", "key consular/web/a", "app /odd" */
  readonly subject?: string | undefined
  readonly message: string
}

/**
 * complete: everything planned landed, and nothing was left out. incomplete: the rest landed, but a write failed,
 * an agent or an app could not be read, or something was skipped (a name clash, an unknown host).
 * unread: no Consul read succeeded, so nothing was planned against Consul and nothing was written.
 */
export type SyncOutcome = "complete" | "incomplete" | "unread"

export interface SyncReport {
  /** when the pass began, by the clock in use */
  readonly startedAt: Date
  readonly apps: number
  readonly tasks: number
  readonly agents: number
  readonly plan: Plan
  readonly registered: number
  readonly fallbackRegistered: number
  readonly deregistered: number
  readonly keysSet: number
  readonly keysDeleted: number
  /** TTL check statuses pushed (`--health-checks ttl`) */
  readonly checksUpdated?: number | undefined
  readonly clashes: ReadonlyArray<Diff.Clash>
  /** running tasks not registered because their host is no known Consul agent (no request went to it) */
  readonly skipped: ReadonlyArray<SkippedTask>
  readonly failures: ReadonlyArray<SyncFailure>
  /** `--max-purge`: the purge this pass skipped because it was over the limit */
  readonly purgeRefused: PurgeRefusal | undefined
  /** the keys below `plan.kvDeleteTree`, as read: what deleting those trees removes */
  readonly treeKeys: ReadonlyArray<string>
  /** KV was read and at least one agent answered */
  readonly consulReached: boolean
  readonly outcome: SyncOutcome
}

/** Marathon's apps with their tasks; `tasks` is fetched per app only when the listing did not embed it. */
const readMarathon = (concurrency: number): Effect.Effect<{
  readonly apps: ReadonlyArray<AppWithTasks>
  readonly rejected: ReadonlyArray<RejectedApp>
}, MarathonError, Marathon> =>
  Effect.gen(function*() {
    const marathon = yield* Marathon
    const listing = yield* marathon.apps
    const withTasks = (app: App, tasks: ReadonlyArray<Task>): AppWithTasks => ({ ...app, hasHealthChecks: (app.healthChecks?.length ?? 0) > 0, tasks })
    // embedded, as every Marathon since 0.x honours `embed=apps.tasks`: no fiber per app
    if (listing.apps.every((app) => app.tasks !== undefined)) {
      return { apps: listing.apps.map((app) => withTasks(app, app.tasks ?? [])), rejected: listing.rejected }
    }
    const apps = yield* Effect.forEach(listing.apps, (app) =>
      app.tasks !== undefined
        ? Effect.succeed(withTasks(app, app.tasks))
        : marathon.appTasks(app.id).pipe(
          // Marathon #3881: some releases answer 404 for an app that has no tasks
          Effect.catchTag("NotFound", () => Effect.succeed([])),
          Effect.map((tasks) => withTasks(app, tasks))
        ), { concurrency })
    return { apps, rejected: listing.rejected }
  })

/**
 * Marathon's pods (`GET /v2/pods/::status`, read every pass): a 404 is a Marathon < 1.4, which has none; any other
 * failure leaves the pods unknown, and a pass that does not know them must not purge.
 */
type PodsRead =
  | { readonly _tag: "Read"; readonly listing: PodListing }
  | { readonly _tag: "Unreadable"; readonly error: MarathonError }

const readPods: Effect.Effect<PodsRead, never, Marathon> = Effect.flatMap(Marathon, (marathon) =>
  marathon.pods.pipe(
    Effect.map((listing): PodsRead => ({ _tag: "Read", listing })),
    Effect.catchTags({
      NotFound: () => Effect.succeed<PodsRead>({ _tag: "Read", listing: { pods: [], rejected: [] } }),
      MarathonError: (error) => Effect.succeed<PodsRead>({ _tag: "Unreadable", error })
    })
  ))

const failureOf = (scope: string, error: ConsulError | MarathonError, subject?: string): SyncFailure => ({ scope, subject, message: error.message })

/**
 * Reads Consul: the catalog (the agents consular may talk to), every agent that matters, and every key below
 * `consular/`. Each task host is matched to its agent here (by DNS when the catalog does not name it); a host
 * that is no known agent is never read.
 */
/**
 * `required`: checks decide the pushes (`--health-checks ttl`), an agent whose checks cannot be read is unreadable;
 * `sweep`: read to find checks left by an earlier `--health-checks ttl` (dropped by re-registering), best effort.
 */
type CheckReading = "skip" | "required" | "sweep"

const readConsul = (
  apps: ReadonlyArray<AppWithTasks>,
  podHosts: ReadonlyArray<string>,
  consulUrl: URL,
  purge: boolean,
  concurrency: number,
  checkReading: CheckReading = "skip"
) =>
  Effect.gen(function*() {
    const consul = yield* Consul
    const topology = yield* Topology
    const lookup = yield* makeAgentLookup(consulUrl)
    const failures: Array<SyncFailure> = []
    const [catalog, kv] = yield* Effect.all([
      Effect.either(lookup.readCatalog),
      consul.kvTree(kvRoot).pipe(
        Effect.catchTag("NotFound", () => Effect.succeed(new Map<string, string>())),
        Effect.catchTag("ConsulError", (error) => Effect.sync(() => {
          failures.push(failureOf("kv", error))
          return undefined
        }))
      )
    ], { concurrency: 2 })
    if (Either.isLeft(catalog)) {
      failures.push(failureOf("catalog", catalog.left))
      yield* Effect.logError("Consul catalog unreadable").pipe(Effect.annotateLogs({ error: catalog.left.message }))
    }
    // without this pass's catalog, the last one read (the daemon's), or only the main agent
    const directory = Either.isRight(catalog) ? catalog.right : yield* topology.directory
    const hosts = new Set<string>()
    for (const app of apps) {
      for (const task of app.tasks) if (isRunning(task)) hosts.add(task.host)
    }
    for (const host of podHosts) hosts.add(host)
    const agentByHost = new Map<string, string | undefined>()
    yield* Effect.forEach(hosts, (host) =>
      Effect.map(lookup.agentIn(directory, host), (agent) => {
        agentByHost.set(host, agent)
      }), { concurrency: 8, discard: true })
    // without purge only the agents that should hold a task matter, and the main one (fallback copies)
    const agentsToRead = new Set(purge ? directory.all : [directory.main])
    for (const agent of agentByHost.values()) if (agent !== undefined) agentsToRead.add(agent)
    const states = yield* Effect.forEach(agentsToRead, (agent) =>
      // one try for an agent that is not there: the pass goes on without it, the next pass asks again
      consul.agentServices(agent, { retryUnreachable: false }).pipe(
        // with TTL checks, an agent is read only when its checks are too: their statuses decide the pushes
        Effect.flatMap((services) =>
          checkReading === "skip"
            ? Effect.succeed<Diff.AgentState>({ _tag: "Read", services })
            : consul.agentChecks(agent, { retryUnreachable: false }).pipe(
              Effect.map((checks): Diff.AgentState => ({ _tag: "Read", services, checks })),
              checkReading === "sweep" ? Effect.orElseSucceed((): Diff.AgentState => ({ _tag: "Read", services })) : (read) => read
            )
        ),
        Effect.catchAll((error) => Effect.sync((): Diff.AgentState => {
          failures.push(failureOf(`agent ${agent}`, error))
          return { _tag: "Unreadable", unreachable: isUnreachable(error) }
        })),
        Effect.map((state) => [agent, state] as const)
      ), { concurrency })
    const actual: Diff.Actual = { agents: new Map(states), kv }
    const hostAgents = { agentOf: (host: string) => agentByHost.get(host) }
    return { directory, catalogRead: Either.isRight(catalog), hostAgents, actual, failures }
  })

/** Drops from the plan what events did after the pass read Marathon (the events are newer truth). */
const withoutNewerEvents = (plan: Plan, view: { started: ReadonlySet<string>; ended: ReadonlySet<string>; apps: ReadonlySet<string> }): Plan => {
  if (view.started.size === 0 && view.ended.size === 0) return plan
  const touchedApp = (key: string) => {
    const parsed = parseLabelKey(key)
    return parsed !== undefined && view.apps.has(parsed.app)
  }
  const taskOf = (s: Diff.DesiredService) => s.taskId ?? s.registration.ID
  return {
    register: plan.register.filter((s) => !view.ended.has(taskOf(s)) && !view.started.has(taskOf(s))),
    deregister: plan.deregister.filter((d) => !view.started.has(taskIdOfService(d.serviceId)) && !view.ended.has(taskIdOfService(d.serviceId))),
    kvSet: plan.kvSet.filter((op) => !touchedApp(op.key)),
    kvDelete: plan.kvDelete.filter((key) => !touchedApp(key)),
    kvDeleteTree: plan.kvDeleteTree.filter((prefix) => !touchedApp(prefix))
  }
}

const chunk = <A>(items: ReadonlyArray<A>, size: number): Array<ReadonlyArray<A>> => {
  const out: Array<ReadonlyArray<A>> = []
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size))
  return out
}

interface Applied {
  /** service id -> the agent its registration landed on in this pass */
  readonly landed?: Map<string, string>
  registered: number
  fallbackRegistered: number
  deregistered: number
  keysSet: number
  keysDeleted: number
  readonly failures: Array<SyncFailure>
}

export interface KvWritten {
  keysSet: number
  keysDeleted: number
  readonly failures: Array<SyncFailure>
}

/**
 * The KV part of a plan, in transactions of at most 64 operations; a failed transaction is retried key by key,
 * so one bad key blocks nothing (and a Consul without /v1/txn still gets every write).
 */
export type WriteKv = (
  plan: Pick<Plan, "kvSet" | "kvDelete" | "kvDeleteTree">,
  /** asked again just before each batch: a key whose app an event changed meanwhile is left to the event */
  stillWanted?: (key: string) => Effect.Effect<boolean>
) => Effect.Effect<KvWritten>

export const makeKvWriter: Effect.Effect<WriteKv, never, Consul> = Effect.map(Consul, (consul): WriteKv => (plan, stillWanted = () => Effect.succeed(true)) =>
  Effect.gen(function*() {
    const written: KvWritten = { keysSet: 0, keysDeleted: 0, failures: [] }
    const operations: Array<TxnOperation> = [
      ...plan.kvSet.map(({ key, value }): TxnOperation => ({ KV: { Verb: "set", Key: key, Value: Buffer.from(value, "utf8").toString("base64") } })),
      ...plan.kvDelete.map((key): TxnOperation => ({ KV: { Verb: "delete", Key: key } })),
      ...plan.kvDeleteTree.map((key): TxnOperation => ({ KV: { Verb: "delete-tree", Key: key } }))
    ]
    const count = (operation: TxnOperation) => Effect.sync(() => {
      if (operation.KV.Verb === "set") written.keysSet++
      else written.keysDeleted++
    })
    const one = (operation: TxnOperation) => {
      const { Verb, Key, Value } = operation.KV
      const write = Verb === "set"
        ? consul.kvPut(Key, Buffer.from(Value ?? "", "base64").toString("utf8"))
        : consul.kvDelete(Key, { recurse: Verb === "delete-tree" })
      return write.pipe(
        Effect.zipRight(count(operation)),
        Effect.catchAll((error) => Effect.sync(() => {
          written.failures.push(failureOf("kv", error, `key ${Key}`))
        }))
      )
    }
    const batch = (planned: ReadonlyArray<TxnOperation>): Effect.Effect<void> =>
      Effect.flatMap(Effect.filter(planned, (operation) => stillWanted(operation.KV.Key)), (operations) =>
        operations.length === 0
          ? Effect.void
          : operations.length === 1
          ? one(operations[0]!)
          : consul.txn(operations).pipe(
            Effect.zipRight(Effect.forEach(operations, count, { discard: true })),
            Effect.catchAll((error) => {
              // a 409 names each operation Consul refused: those fail with its words, the rest go again together
              const refused = error.refused ?? []
              if (refused.length === 0) return Effect.forEach(operations, one, { discard: true })
              const refusedAt = new Set(refused.map((operation) => operation.index))
              return Effect.sync(() => {
                for (const operation of refused) written.failures.push({ scope: "kv", subject: `key ${operation.key}`, message: describeRefusedOperation(operation) })
              }).pipe(Effect.zipRight(batch(operations.filter((_, index) => !refusedAt.has(index)))))
            })
          ))
    yield* Effect.forEach(chunk(operations, maxTxnOperations), batch, { concurrency: 4, discard: true })
    return written
  }))

const applyPlan = (plan: Plan, actual: Diff.Actual, directory: AgentDirectory, settings: SyncSettings, concurrency: number, mark: number) =>
  Effect.gen(function*() {
    const consul = yield* Consul
    const ledger = yield* Ledger
    const topology = yield* Topology
    const place = yield* makePlacement(settings)
    const writeKv = yield* makeKvWriter
    /**
     * A task's write happens under the lock events take for it, and not at all when an event changed the task
     * since this pass read Marathon: the event is newer truth (a kill landing mid-pass stays a kill).
     */
    const unlessNewerEvent = (taskId: string, write: Effect.Effect<void>) =>
      topology.locks.withLock(taskId, Effect.flatMap(ledger.taskTouchedSince(taskId, mark), (touched) => touched ? Effect.void : write))
    const applied: Applied = { landed: new Map(), registered: 0, fallbackRegistered: 0, deregistered: 0, keysSet: 0, keysDeleted: 0, failures: [] }
    const fail = (scope: string, taskId: string) => (error: ConsulError) => Effect.sync(() => {
      applied.failures.push(failureOf(scope, error, `task ${taskId}`))
    })
    const unreachable = new Set<string>()
    for (const [agent, state] of actual.agents) if (state._tag === "Unreadable" && state.unreachable) unreachable.add(agent)
    // a check of ours left by an earlier `--health-checks ttl` goes with the registration that no longer has it
    const staleCheck = (agent: string, registration: Registration) => {
      const state = actual.agents.get(agent)
      return registration.Check === undefined && state?._tag === "Read" && state.checks?.has(ttlCheckId(registration.ID)) === true
    }

    const register = ({ agent, registration, fallback, taskId }: Diff.DesiredService) => unlessNewerEvent(taskId ?? registration.ID, Effect.suspend(() => {
      const down = unreachable.has(agent)
      // known down in this pass: straight to the fallback, or wait for the agent (reported once, when read)
      if (down && !(settings.fallback && agent !== directory.main)) return Effect.void
      return place({ agent: fallback === true ? undefined : agent, main: directory.main, down }, registration, (on) => staleCheck(on, registration)).pipe(
        Effect.flatMap((placed) => Effect.sync(() => {
          applied.landed?.set(registration.ID, placed.agent)
          if (placed.fallback) applied.fallbackRegistered++
          else applied.registered++
        })),
        Effect.catchAll((error) =>
          fail(fallback === true || (error.agent === directory.main && agent !== directory.main) ? `agent ${directory.main} (fallback)` : `agent ${agent}`, registration.ID)(error)
        )
      )
    }))

    const deregister = ({ agent, serviceId }: Plan["deregister"][number]) =>
      unlessNewerEvent(
        taskIdOfService(serviceId),
        consul.deregister(agent, serviceId).pipe(
          Effect.catchTag("NotFound", () => Effect.void), // already gone: that is what we wanted
          Effect.tap(() => Effect.sync(() => {
            applied.deregistered++
          })),
          Effect.catchTag("ConsulError", fail(`agent ${agent}`, serviceId))
        )
      )

    yield* Effect.all([
      forEachInLanes(plan.register, register, concurrency),
      forEachInLanes(plan.deregister, deregister, concurrency),
      writeKv(plan, (key) => {
        const parsed = parseLabelKey(key)
        return parsed === undefined ? Effect.succeed(true) : Effect.map(ledger.appTouchedSince(parsed.app, mark), (touched) => !touched)
      }).pipe(Effect.tap((written) => Effect.sync(() => {
        applied.keysSet += written.keysSet
        applied.keysDeleted += written.keysDeleted
        applied.failures.push(...written.failures)
      })))
    ], { concurrency: "unbounded", discard: true })
    return applied
  })

/**
 * One pass: read Marathon (the truth: if it cannot be read, the pass fails and nothing is written or purged),
 * read Consul, compute the plan, apply it. Each agent and each key stands alone: one failing agent is
 * reported and the rest of the pass still lands.
 */
export const syncOnce = Effect.fn("Sync.syncOnce")(function*(settings: SyncSettings) {
  const ledger = yield* Ledger
  const topology = yield* Topology
  const concurrency = settings.concurrency ?? 32
  const mark = yield* ledger.beginPass
  const startedAt = yield* Clock.now
  return yield* Effect.gen(function*() {
    if (settings.readingMarathon !== undefined) yield* settings.readingMarathon
    const [{ apps, rejected }, podsRead] = yield* Effect.all([readMarathon(concurrency), readPods], { concurrency: 2 })
    const podListing = podsRead._tag === "Read" ? podsRead.listing : { pods: [], rejected: [] }
    const pods = podListing.pods.map(podServices)
    const podHosts = pods.flatMap((pod) => pod.tasks.map((task) => task.host))
    const healthMark = topology.health.seq
    // without TTL checks, the first pass of a process still looks for ours, left by an earlier `ttl`, to drop them
    const checkReading: CheckReading = settings.health !== undefined
      ? "required"
      : settings.sweepStaleChecks === true && !topology.health.checksSwept
      ? "sweep"
      : "skip"
    const { directory, catalogRead, hostAgents, actual, failures } = yield* readConsul(apps, podHosts, settings.consulUrl, settings.purge, concurrency, checkReading)
    // an app or pod without a usable id cannot be told from a gone one, nor can unknown pods, nor a task host from
    // no agent without the catalog: no purge in this pass
    const purge = settings.purge && catalogRead && podsRead._tag === "Read" &&
      [...rejected, ...podListing.rejected].every((app) => app.id !== undefined)
    if (podsRead._tag === "Unreadable") {
      failures.push(failureOf("marathon", podsRead.error, "pods"))
      yield* Effect.logError("pods cannot be read: no purge in this pass").pipe(Effect.annotateLogs({ error: podsRead.error.message }))
    }
    for (const app of rejected) {
      failures.push({ scope: "marathon", message: `app ${app.id ?? "(no id)"} skipped, unreadable: ${app.problem}` })
      yield* Effect.logError("app Marathon listed cannot be read: skipped").pipe(Effect.annotateLogs({ app: app.id ?? "(no id)", problem: app.problem }))
    }
    for (const pod of podListing.rejected) {
      failures.push({ scope: "marathon", message: `pod ${pod.id ?? "(no id)"} skipped, unreadable: ${pod.problem}` })
      yield* Effect.logError("pod Marathon listed cannot be read: skipped").pipe(Effect.annotateLogs({ pod: pod.id ?? "(no id)", problem: pod.problem }))
    }
    const extras = {
      registrationId: settings.registrationId,
      serviceMeta: settings.serviceMeta === true,
      check: settings.health === undefined ? undefined : ttlCheck(settings.registrationId, settings.health)
    }
    const skippedMeta = new Map<string, ReadonlyArray<SkippedLabel>>()
    const decorated = extras.serviceMeta || extras.check !== undefined
    const desired = Diff.desiredState(apps, settings.registrationId, hostAgents, {
      unreadableIds: [...rejected, ...podListing.rejected].flatMap((workload) => workload.id === undefined ? [] : [workload.id]),
      // the fallback takes what is certainly no agent, never what an unreadable catalog could not tell
      fallbackAgent: settings.fallback && catalogRead ? directory.main : undefined,
      servicePerPort: settings.servicePerPort,
      pods,
      decorate: decorated
        ? (plain, workload, taskId) => {
          const made = decorate(extras, plain, workload, taskId)
          if (made.skipped.length > 0) skippedMeta.set(workload.id, made.skipped)
          return made.registration
        }
        : undefined
    })
    const workloads: ReadonlyArray<{ readonly id: string; readonly version: string | undefined; readonly labels: Labels | undefined; readonly hasHealthChecks: boolean }> = [
      ...apps.map((app) => ({ id: app.id, version: app.version, labels: app.labels, hasHealthChecks: app.hasHealthChecks === true })),
      ...pods.map((pod) => ({ id: pod.id, version: pod.version, labels: pod.labels, hasHealthChecks: false }))
    ]
    for (const workload of workloads) {
      // what events need to build the same registration between passes
      if (decorated) topology.health.apps.set(workload.id, { version: workload.version, labels: workload.labels, hasHealthChecks: workload.hasHealthChecks })
      const skipped = skippedMeta.get(workload.id)
      const warned = topology.health.metaWarned.has(workload.id) && topology.health.metaWarned.get(workload.id) === workload.version
      if (skipped === undefined || warned) continue
      topology.health.metaWarned.set(workload.id, workload.version)
      yield* Effect.logWarning("app labels left out of Service Meta").pipe(Effect.annotateLogs({
        app: workload.id,
        version: workload.version ?? "",
        labels: skipped.map((s) => `${s.label} (${s.why})`).join("; ")
      }))
    }
    for (const clash of desired.clashes) {
      yield* Effect.logError("app ids share one Consul name: skipped").pipe(
        Effect.annotateLogs({ name: clash.name, ids: clash.ids.join(", ") })
      )
    }
    yield* logSkipped(desired.skipped)
    const computed = Diff.plan(desired, actual, {
      registrationId: settings.registrationId,
      purge,
      fallback: settings.fallback,
      directory,
      serviceMeta: settings.serviceMeta === true
    })
    // --max-purge (issue 14): a purge over the limit loses all its deletions; registrations and labels still land
    const { plan, refused: purgeRefused } = guardPurge(withoutNewerEvents(computed, yield* ledger.since(mark)), actual, settings.maxPurge)
    if (purgeRefused !== undefined) {
      yield* Effect.logWarning("purge refused: over --max-purge").pipe(Effect.annotateLogs({
        services: purgeRefused.services,
        keys: purgeRefused.keys,
        limit: purgeRefused.limit,
        apps: purgeRefused.apps.join(", ")
      }))
    }
    // with not one Consul read answered (Consul down, or a token it does not know) the plan is a guess: write nothing
    const consulRead = actual.kv !== undefined || catalogRead || [...actual.agents.values()].some((state) => state._tag === "Read")
    const writes = settings.dryRun !== true && consulRead
    const applied: Applied = writes
      ? yield* applyPlan(plan, actual, directory, settings, concurrency, mark)
      : { registered: 0, fallbackRegistered: 0, deregistered: 0, keysSet: 0, keysDeleted: 0, failures: [] }
    if (checkReading === "sweep" && writes && applied.failures.length === 0 &&
      [...actual.agents.values()].every((state) => state._tag === "Read" && state.checks !== undefined)) {
      topology.health.checksSwept = true
    }
    let checksUpdated = 0
    if (settings.health !== undefined && writes) {
      const planned = new Set(plan.register.map((s) => s.registration.ID as string))
      const healthOf = new Map(apps.flatMap((app) => app.tasks.map((task) => [task.id as string, { app, task }] as const)))
      const relayed = yield* relayInPass({
        tasks: [...desired.services.values()].map(({ agent, registration, taskId }) => {
          const of = healthOf.get(taskId ?? registration.ID)
          return {
            taskId: registration.ID,
            marathonTaskId: taskId,
            agent,
            appHasHealthChecks: of?.app.hasHealthChecks === true,
            results: of?.task.healthCheckResults
          }
        }),
        checks: (agent) => {
          const state = actual.agents.get(agent)
          return state?._tag === "Read" ? state.checks : undefined
        },
        landed: applied.landed ?? new Map(),
        held: (taskId, agent) => !planned.has(taskId) && actual.agents.get(agent)?._tag === "Read",
        mark: healthMark,
        touchedSince: (taskId) => ledger.taskTouchedSince(taskId, mark)
      }, settings.health, concurrency)
      checksUpdated = relayed.pushed
      for (const { agent, error } of relayed.failures) applied.failures.push({ scope: `agent ${agent}`, message: error.message })
    }
    if (writes) {
      // ours as the pass saw them, less what it removed, plus what it registered: each once, read as the topology
      // takes them in (an idle pass of 5,000 services builds no set of its own)
      const ours = (service: AgentService | undefined) =>
        service !== undefined && (isOwnedBy(service.Tags, settings.registrationId) ||
          (settings.serviceMeta === true && isOwnedByMeta(service.Meta, settings.registrationId)))
      const removed = new Set(plan.deregister.map(({ agent, serviceId }) => `${agent} ${serviceId}`))
      const held = (agent: string, serviceId: string): boolean => {
        const state = actual.agents.get(agent)
        return state?._tag === "Read" && ours(state.services.get(serviceId)) && (removed.size === 0 || !removed.has(`${agent} ${serviceId}`))
      }
      const owned = function*(): Generator<readonly [agent: string, serviceId: string]> {
        for (const [agent, state] of actual.agents) {
          if (state._tag !== "Read") continue
          for (const [id, service] of state.services) {
            if (ours(service) && (removed.size === 0 || !removed.has(`${agent} ${id}`))) yield [agent, id]
          }
        }
        for (const { agent, registration } of plan.register) if (!held(agent, registration.ID)) yield [agent, registration.ID]
      }
      // labels are known to be in KV only when KV was read and every write landed
      const labelVersions: Array<readonly [string, string]> = []
      if (actual.kv !== undefined && !applied.failures.some((failure) => failure.scope === "kv")) {
        const touched = (yield* ledger.since(mark)).apps
        for (const app of [...apps, ...pods]) {
          // an app an event refreshed meanwhile may have newer labels than this pass read: let the next event look
          if (app.version !== undefined && !desired.clashingIds.has(app.id) && !touched.has(appName(app.id))) {
            labelVersions.push([app.id, app.version])
          }
        }
      }
      // how each version's tasks are reached: a RUNNING event of a version the pass saw reads nothing
      const runSpecs: Array<readonly [string, string, RunSpec]> = []
      for (const app of apps) if (app.version !== undefined) runSpecs.push([app.id, app.version, appRunSpec(app)])
      for (const pod of podListing.pods) {
        if (typeof pod.spec.version === "string") runSpecs.push([pod.id, pod.spec.version, { _tag: "Pod", spec: pod.spec }])
      }
      yield* topology.passApplied({
        directory: catalogRead ? directory : undefined,
        at: yield* EffectClock.currentTimeMillis,
        appIds: [...apps.map((app) => app.id), ...pods.map((pod) => pod.id)],
        clashingIds: desired.clashingIds,
        owned: owned(),
        labelVersions,
        runSpecs
      })
    }
    const report: SyncReport = {
      startedAt,
      apps: apps.length,
      // with --service-per-port a task has several services: count tasks
      tasks: countTasks(desired.services),
      agents: actual.agents.size,
      plan,
      registered: applied.registered,
      fallbackRegistered: applied.fallbackRegistered,
      deregistered: applied.deregistered,
      keysSet: applied.keysSet,
      keysDeleted: applied.keysDeleted,
      ...(settings.health === undefined ? {} : { checksUpdated }),
      clashes: desired.clashes,
      skipped: desired.skipped,
      failures: [...failures, ...applied.failures],
      purgeRefused,
      treeKeys: keysUnder(actual.kv, plan.kvDeleteTree),
      consulReached: actual.kv !== undefined && [...actual.agents.values()].some((state) => state._tag === "Read"),
      outcome: !consulRead
        ? "unread"
        : failures.length + applied.failures.length + desired.clashes.length + desired.skipped.length === 0 && purgeRefused === undefined
        ? "complete"
        : "incomplete"
    }
    yield* Effect.logInfo("sync done").pipe(Effect.annotateLogs({
      apps: report.apps,
      tasks: report.tasks,
      registered: report.registered + report.fallbackRegistered,
      deregistered: report.deregistered,
      keysSet: report.keysSet,
      keysDeleted: report.keysDeleted,
      skipped: report.skipped.length,
      failures: report.failures.length,
      outcome: report.outcome
    }))
    for (const failure of report.failures) {
      yield* Effect.logWarning("sync failure").pipe(Effect.annotateLogs({ scope: failure.scope, error: failure.message }))
    }
    return report
  }).pipe(Effect.ensuring(ledger.endPass))
})

/** Running tasks with a service: with --service-per-port, several services are of one task. */
const countTasks = (services: ReadonlyMap<string, Diff.DesiredService>): number => {
  const ofOtherTasks = new Set<string>()
  for (const service of services.values()) if (service.taskId !== undefined) ofOtherTasks.add(service.taskId)
  if (ofOtherTasks.size === 0) return services.size
  let tasks = ofOtherTasks.size
  for (const [id, service] of services) if (service.taskId === undefined && !ofOtherTasks.has(id)) tasks++
  return tasks
}

/** One warning per host that is no known agent (not per task: an unreadable catalog would make thousands). */
const logSkipped = (skipped: ReadonlyArray<SkippedTask>) => {
  const byHost = new Map<string, number>()
  for (const task of skipped) byHost.set(task.host, (byHost.get(task.host) ?? 0) + 1)
  return Effect.forEach(byHost, ([host, tasks]) =>
    Effect.logWarning("task host is no known Consul agent: its tasks skipped").pipe(Effect.annotateLogs({ host, tasks })), { discard: true })
}

/** skipped tasks listed one per line up to this many, then counted */
const maxSkippedLines = 20

/** The summary `consular sync` prints on stdout: the counts, and whether everything landed. */
export const summaryLines = (report: SyncReport): ReadonlyArray<string> => [
  `apps ${report.apps}, running tasks ${report.tasks}, agents ${report.agents}`,
  `registered ${report.registered}${report.fallbackRegistered > 0 ? ` (+${report.fallbackRegistered} on the fallback agent)` : ""}, ` +
  `deregistered ${report.deregistered}, keys set ${report.keysSet}, keys deleted ${report.keysDeleted}, ` +
  `${report.checksUpdated === undefined ? "" : `checks updated ${report.checksUpdated}, `}errors ${report.failures.length}` +
  (report.skipped.length > 0 ? `, skipped ${report.skipped.length}` : ""),
  outcomeLine(report)
]

const outcomeLine = (report: SyncReport): string => {
  switch (report.outcome) {
    case "complete":
      return "complete: everything planned landed"
    case "incomplete":
      return `incomplete: ${[
        report.failures.length > 0 ? `${report.failures.length} failed` : [],
        report.clashes.length > 0 ? `${report.clashes.length} name clashes skipped` : [],
        report.skipped.length > 0 ? `${report.skipped.length} skipped` : [],
        report.purgeRefused !== undefined ? "purge refused (over --max-purge)" : []
      ].flat().join(", ")}; the rest landed`
    case "unread":
      return "not synced: no Consul read succeeded; nothing was written"
  }
}

/** What did not land or was left out, one line each (`consular sync` prints them on stderr). */
export const problemLines = (report: SyncReport): ReadonlyArray<string> => [
  ...(report.purgeRefused === undefined ? [] : [purgeRefusedLine(report.purgeRefused)]),
  ...report.clashes.map((clash) => `name clash: ${clash.name} <- ${clash.ids.join(", ")} (skipped)`),
  ...report.skipped.slice(0, maxSkippedLines).map((task) => `skipped: task ${task.taskId} of ${task.appId}: host ${task.host} is no known Consul agent`),
  ...(report.skipped.length > maxSkippedLines ? [`skipped: ${report.skipped.length - maxSkippedLines} more tasks on hosts that are no known Consul agent`] : []),
  ...report.failures.map((failure) => `error: ${failure.scope}: ${failure.subject === undefined ? "" : `${failure.subject}: `}${failure.message}`)
]

/** Where a registration sends traffic: "10.0.0.7:8080", "[fd00::7]:8080", "10.0.0.7 (no port)". */
const reachedAt = (registration: Registration): string => {
  const address = registration.Address.includes(":") ? `[${registration.Address}]` : registration.Address
  return registration.Port === undefined ? `${registration.Address} (no port)` : `${address}:${registration.Port}`
}

export const purgeRefusedLine = (refused: PurgeRefusal): string =>
  `purge refused: it would deregister ${refused.services} services and delete ${refused.keys} keys (apps: ${
    refused.apps.length === 0 ? "none named" : refused.apps.join(", ")
  }), over --max-purge ${refused.limit}; nothing was purged`

export const planLines = (plan: Plan): ReadonlyArray<string> => [
  ...plan.register.map((s) => `register ${s.registration.ID} (${s.registration.Name}) at ${reachedAt(s.registration)} on agent ${s.agent}`),
  ...plan.deregister.map((d) => `deregister ${d.serviceId} from agent ${d.agent} (${d.why === "dead" ? "task not running" : "moved"})`),
  ...plan.kvSet.map((op) => `set ${op.key} = ${op.value}`),
  ...plan.kvDelete.map((key) => `delete ${key}`),
  ...plan.kvDeleteTree.map((key) => `delete tree ${key}`)
]
