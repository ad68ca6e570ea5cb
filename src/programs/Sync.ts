import { Duration, Effect } from "effect"
import { agentDirectory } from "../domain/Agents.js"
import type { AgentDirectory } from "../domain/Agents.js"
import { maxTxnOperations } from "../domain/ConsulApi.js"
import type { Registration, TxnOperation } from "../domain/ConsulApi.js"
import * as Diff from "../domain/Diff.js"
import type { AppWithTasks, Plan } from "../domain/Diff.js"
import { isUnreachable } from "../domain/Errors.js"
import type { ConsulError, MarathonError } from "../domain/Errors.js"
import { isRunning } from "../domain/MarathonApi.js"
import type { RejectedApp } from "../domain/MarathonApi.js"
import { appName, isOwnedBy, kvRoot, parseLabelKey, ttlCheckId } from "../domain/Naming.js"
import { decorate, ttlCheck } from "../domain/RegistrationExtras.js"
import type { SkippedLabel } from "../domain/ServiceMeta.js"
import { isOwnedByMeta } from "../domain/ServiceMeta.js"
import { Consul } from "../services/Consul.js"
import { Marathon } from "../services/Marathon.js"
import * as Clock from "../services/Clock.js"
import { forEachInLanes } from "./Lanes.js"
import { Ledger } from "./Ledger.js"
import { ownedKey, rememberOwned, Topology } from "./Topology.js"
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
  readonly message: string
}

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
  readonly failures: ReadonlyArray<SyncFailure>
  /** KV was read and at least one agent answered */
  readonly consulReached: boolean
}

/** Marathon's apps with their tasks; `tasks` is fetched per app only when the listing did not embed it. */
const readMarathon = (concurrency: number): Effect.Effect<{
  readonly apps: ReadonlyArray<AppWithTasks>
  readonly rejected: ReadonlyArray<RejectedApp>
}, MarathonError, Marathon> =>
  Effect.gen(function*() {
    const marathon = yield* Marathon
    const listing = yield* marathon.apps
    const apps = yield* Effect.forEach(listing.apps, (app) =>
      app.tasks !== undefined
        ? Effect.succeed({ id: app.id, labels: app.labels, version: app.version, hasHealthChecks: (app.healthChecks?.length ?? 0) > 0, tasks: app.tasks })
        : marathon.appTasks(app.id).pipe(
          // Marathon #3881: some releases answer 404 for an app that has no tasks
          Effect.catchTag("NotFound", () => Effect.succeed([])),
          Effect.map((tasks) => ({ id: app.id, labels: app.labels, version: app.version, hasHealthChecks: (app.healthChecks?.length ?? 0) > 0, tasks }))
        ), { concurrency })
    return { apps, rejected: listing.rejected }
  })

const failureOf = (scope: string, error: ConsulError | MarathonError): SyncFailure => ({ scope, message: error.message })

/** Reads Consul: the catalog, every agent that matters, and every key below `consular/`. */
/**
 * `required`: checks decide the pushes (`--health-checks ttl`), an agent whose checks cannot be read is unreadable;
 * `sweep`: read to find checks left by an earlier `--health-checks ttl` (dropped by re-registering), best effort.
 */
type CheckReading = "skip" | "required" | "sweep"

const readConsul = (apps: ReadonlyArray<AppWithTasks>, consulUrl: URL, purge: boolean, concurrency: number, checkReading: CheckReading = "skip") =>
  Effect.gen(function*() {
    const consul = yield* Consul
    const failures: Array<SyncFailure> = []
    const [nodes, kv] = yield* Effect.all([
      consul.catalogNodes.pipe(
        Effect.catchAll((error) => Effect.sync(() => {
          failures.push(failureOf("catalog", error))
          return []
        }))
      ),
      consul.kvTree(kvRoot).pipe(
        Effect.catchTag("NotFound", () => Effect.succeed(new Map<string, string>())),
        Effect.catchTag("ConsulError", (error) => Effect.sync(() => {
          failures.push(failureOf("kv", error))
          return undefined
        }))
      )
    ], { concurrency: 2 })
    const directory = agentDirectory(nodes, consulUrl.hostname)
    // without purge only the agents that should hold a task matter, and the main one (fallback copies)
    const agentsToRead = new Set(purge ? directory.all : [directory.main])
    for (const app of apps) {
      for (const task of app.tasks) if (isRunning(task)) agentsToRead.add(directory.resolve(task.host))
    }
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
    return { directory, actual, failures }
  })

/** Drops from the plan what events did after the pass read Marathon (the events are newer truth). */
const withoutNewerEvents = (plan: Plan, view: { started: ReadonlySet<string>; ended: ReadonlySet<string>; apps: ReadonlySet<string> }): Plan => {
  if (view.started.size === 0 && view.ended.size === 0) return plan
  const touchedApp = (key: string) => {
    const parsed = parseLabelKey(key)
    return parsed !== undefined && view.apps.has(parsed.app)
  }
  return {
    register: plan.register.filter((s) => !view.ended.has(s.registration.ID) && !view.started.has(s.registration.ID)),
    deregister: plan.deregister.filter((d) => !view.started.has(d.serviceId) && !view.ended.has(d.serviceId)),
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
export const writeKv = (
  plan: Pick<Plan, "kvSet" | "kvDelete" | "kvDeleteTree">,
  /** asked again just before each batch: a key whose app an event changed meanwhile is left to the event */
  stillWanted: (key: string) => Effect.Effect<boolean> = () => Effect.succeed(true)
): Effect.Effect<KvWritten, never, Consul> =>
  Effect.gen(function*() {
    const consul = yield* Consul
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
          written.failures.push(failureOf("kv", error))
        }))
      )
    }
    const batch = (planned: ReadonlyArray<TxnOperation>) =>
      Effect.flatMap(Effect.filter(planned, (operation) => stillWanted(operation.KV.Key)), (operations) =>
        operations.length === 0
          ? Effect.void
          : operations.length === 1
          ? one(operations[0]!)
          : consul.txn(operations).pipe(
            Effect.zipRight(Effect.forEach(operations, count, { discard: true })),
            Effect.catchAll(() => Effect.forEach(operations, one, { discard: true }))
          ))
    yield* Effect.forEach(chunk(operations, maxTxnOperations), batch, { concurrency: 4, discard: true })
    return written
  })

const applyPlan = (plan: Plan, actual: Diff.Actual, directory: AgentDirectory, settings: SyncSettings, concurrency: number, mark: number) =>
  Effect.gen(function*() {
    const consul = yield* Consul
    const ledger = yield* Ledger
    const topology = yield* Topology
    /**
     * A task's write happens under the lock events take for it, and not at all when an event changed the task
     * since this pass read Marathon: the event is newer truth (a kill landing mid-pass stays a kill).
     */
    const unlessNewerEvent = (taskId: string, write: Effect.Effect<void>) =>
      topology.locks.withLock(taskId, Effect.flatMap(ledger.taskTouchedSince(taskId, mark), (touched) => touched ? Effect.void : write))
    const applied: Applied = { landed: new Map(), registered: 0, fallbackRegistered: 0, deregistered: 0, keysSet: 0, keysDeleted: 0, failures: [] }
    const fail = (scope: string) => (error: ConsulError) => Effect.sync(() => {
      applied.failures.push(failureOf(scope, error))
    })
    const unreachable = new Set<string>()
    for (const [agent, state] of actual.agents) if (state._tag === "Unreadable" && state.unreachable) unreachable.add(agent)
    // a check of ours left by an earlier `--health-checks ttl` goes with the registration that no longer has it
    const staleCheck = (agent: string, registration: Registration) => {
      const state = actual.agents.get(agent)
      return registration.Check === undefined && state?._tag === "Read" && state.checks?.has(ttlCheckId(registration.ID)) === true
    }

    const fallbackRegister = (registration: Registration) =>
      consul.register(directory.main, registration, { fallbackMode: true, timeout: settings.fallbackTimeout, replaceExistingChecks: staleCheck(directory.main, registration) }).pipe(
        Effect.tap(() => Effect.sync(() => {
          applied.landed?.set(registration.ID, directory.main)
          applied.fallbackRegistered++
        })),
        Effect.tap(() => Effect.logWarning("registered on the fallback agent").pipe(Effect.annotateLogs({ service: registration.ID, agent: directory.main }))),
        Effect.catchAll(fail(`agent ${directory.main} (fallback)`))
      )

    const register = ({ agent, registration }: Diff.DesiredService) => unlessNewerEvent(registration.ID, Effect.suspend(() => {
      if (unreachable.has(agent)) {
        // known down in this pass: straight to the fallback, or wait for the agent (reported once, when read)
        return settings.fallback && agent !== directory.main ? fallbackRegister(registration) : Effect.void
      }
      return consul.register(agent, registration, { fallbackMode: settings.fallback, replaceExistingChecks: staleCheck(agent, registration) }).pipe(
        Effect.tap(() => Effect.sync(() => {
          applied.landed?.set(registration.ID, agent)
          applied.registered++
        })),
        Effect.catchAll((error) =>
          settings.fallback && isUnreachable(error) && agent !== directory.main
            ? fallbackRegister(registration)
            : fail(`agent ${agent}`)(error)
        )
      )
    }))

    const deregister = ({ agent, serviceId }: Plan["deregister"][number]) =>
      unlessNewerEvent(
        serviceId,
        consul.deregister(agent, serviceId).pipe(
          Effect.catchTag("NotFound", () => Effect.void), // already gone: that is what we wanted
          Effect.tap(() => Effect.sync(() => {
            applied.deregistered++
          })),
          Effect.catchTag("ConsulError", fail(`agent ${agent}`))
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
    const { apps, rejected } = yield* readMarathon(concurrency)
    // an app without a usable id cannot be told from a gone one: no purge in this pass
    const purge = settings.purge && rejected.every((app) => app.id !== undefined)
    const healthMark = topology.health.seq
    // without TTL checks, the first pass of a process still looks for ours, left by an earlier `ttl`, to drop them
    const checkReading: CheckReading = settings.health !== undefined
      ? "required"
      : settings.sweepStaleChecks === true && !topology.health.checksSwept
      ? "sweep"
      : "skip"
    const { directory, actual, failures } = yield* readConsul(apps, settings.consulUrl, purge, concurrency, checkReading)
    for (const app of rejected) {
      failures.push({ scope: "marathon", message: `app ${app.id ?? "(no id)"} skipped, unreadable: ${app.problem}` })
      yield* Effect.logError("app Marathon listed cannot be read: skipped").pipe(Effect.annotateLogs({ app: app.id ?? "(no id)", problem: app.problem }))
    }
    const extras = {
      registrationId: settings.registrationId,
      serviceMeta: settings.serviceMeta === true,
      check: settings.health === undefined ? undefined : ttlCheck(settings.registrationId, settings.health)
    }
    const skippedMeta = new Map<string, ReadonlyArray<SkippedLabel>>()
    const decorated = extras.serviceMeta || extras.check !== undefined
    const desired = Diff.desiredState(
      apps,
      settings.registrationId,
      directory,
      rejected.flatMap((app) => app.id === undefined ? [] : [app.id]),
      decorated
        ? (plain, app, task) => {
          const made = decorate(extras, plain, app, task.id)
          if (made.skipped.length > 0) skippedMeta.set(app.id, made.skipped)
          return made.registration
        }
        : undefined
    )
    for (const app of apps) {
      // what events need to build the same registration between passes
      if (decorated) topology.health.apps.set(app.id, { version: app.version, labels: app.labels, hasHealthChecks: app.hasHealthChecks === true })
      const skipped = skippedMeta.get(app.id)
      const warned = topology.health.metaWarned.has(app.id) && topology.health.metaWarned.get(app.id) === app.version
      if (skipped === undefined || warned) continue
      topology.health.metaWarned.set(app.id, app.version)
      yield* Effect.logWarning("app labels left out of Service Meta").pipe(Effect.annotateLogs({
        app: app.id,
        version: app.version ?? "",
        labels: skipped.map((s) => `${s.label} (${s.why})`).join("; ")
      }))
    }
    for (const clash of desired.clashes) {
      yield* Effect.logError("app ids share one Consul name: skipped").pipe(
        Effect.annotateLogs({ name: clash.name, ids: clash.ids.join(", ") })
      )
    }
    const computed = Diff.plan(desired, actual, {
      registrationId: settings.registrationId,
      purge,
      fallback: settings.fallback,
      directory,
      serviceMeta: settings.serviceMeta === true
    })
    const plan = withoutNewerEvents(computed, yield* ledger.since(mark))
    const applied: Applied = settings.dryRun === true
      ? { registered: 0, fallbackRegistered: 0, deregistered: 0, keysSet: 0, keysDeleted: 0, failures: [] }
      : yield* applyPlan(plan, actual, directory, settings, concurrency, mark)
    if (checkReading === "sweep" && settings.dryRun !== true && applied.failures.length === 0 &&
      [...actual.agents.values()].every((state) => state._tag === "Read" && state.checks !== undefined)) {
      topology.health.checksSwept = true
    }
    let checksUpdated = 0
    if (settings.health !== undefined && settings.dryRun !== true) {
      const planned = new Set(plan.register.map((s) => s.registration.ID as string))
      const healthOf = new Map(apps.flatMap((app) => app.tasks.map((task) => [task.id as string, { app, task }] as const)))
      const relayed = yield* relayInPass({
        tasks: [...desired.services.values()].map(({ agent, registration }) => {
          const of = healthOf.get(registration.ID)
          return { taskId: registration.ID, agent, appHasHealthChecks: of?.app.hasHealthChecks === true, results: of?.task.healthCheckResults }
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
    if (settings.dryRun !== true) {
      topology.directory = directory
      topology.clashingIds = desired.clashingIds
      topology.labelVersions.clear()
      // ours as the pass saw them, less what it removed, plus what it registered
      topology.owned.clear()
      for (const [agent, state] of actual.agents) {
        if (state._tag !== "Read") continue
        for (const [id, service] of state.services) {
          if (isOwnedBy(service.Tags, settings.registrationId) || (settings.serviceMeta === true && isOwnedByMeta(service.Meta, settings.registrationId))) {
            rememberOwned(topology, agent, id)
          }
        }
      }
      for (const { agent, serviceId } of plan.deregister) topology.owned.delete(ownedKey(agent, serviceId))
      for (const { agent, registration } of plan.register) rememberOwned(topology, agent, registration.ID)
      // labels are known to be in KV only when KV was read and every write landed
      if (actual.kv !== undefined && !applied.failures.some((failure) => failure.scope === "kv")) {
        const touched = (yield* ledger.since(mark)).apps
        for (const app of apps) {
          // an app an event refreshed meanwhile may have newer labels than this pass read: let the next event look
          if (app.version !== undefined && !desired.clashingIds.has(app.id) && !touched.has(appName(app.id))) {
            topology.labelVersions.set(app.id, app.version)
          }
        }
      }
    }
    const report: SyncReport = {
      startedAt,
      apps: apps.length,
      tasks: desired.services.size,
      agents: actual.agents.size,
      plan,
      registered: applied.registered,
      fallbackRegistered: applied.fallbackRegistered,
      deregistered: applied.deregistered,
      keysSet: applied.keysSet,
      keysDeleted: applied.keysDeleted,
      ...(settings.health === undefined ? {} : { checksUpdated }),
      clashes: desired.clashes,
      failures: [...failures, ...applied.failures],
      consulReached: actual.kv !== undefined && [...actual.agents.values()].some((state) => state._tag === "Read")
    }
    yield* Effect.logInfo("sync done").pipe(Effect.annotateLogs({
      apps: report.apps,
      tasks: report.tasks,
      registered: report.registered + report.fallbackRegistered,
      deregistered: report.deregistered,
      keysSet: report.keysSet,
      keysDeleted: report.keysDeleted,
      failures: report.failures.length
    }))
    for (const failure of report.failures) {
      yield* Effect.logWarning("sync failure").pipe(Effect.annotateLogs({ scope: failure.scope, error: failure.message }))
    }
    return report
  }).pipe(Effect.ensuring(ledger.endPass))
})

/** The summary `consular sync` prints. */
export const summaryLines = (report: SyncReport): ReadonlyArray<string> => [
  `apps ${report.apps}, running tasks ${report.tasks}, agents ${report.agents}`,
  `registered ${report.registered}${report.fallbackRegistered > 0 ? ` (+${report.fallbackRegistered} on the fallback agent)` : ""}, ` +
  `deregistered ${report.deregistered}, keys set ${report.keysSet}, keys deleted ${report.keysDeleted}, ` +
  `${report.checksUpdated === undefined ? "" : `checks updated ${report.checksUpdated}, `}errors ${report.failures.length}`,
  ...report.clashes.map((clash) => `name clash: ${clash.name} <- ${clash.ids.join(", ")} (skipped)`),
  ...report.failures.map((failure) => `error: ${failure.scope}: ${failure.message}`)
]

export const planLines = (plan: Plan): ReadonlyArray<string> => [
  ...plan.register.map((s) => `register ${s.registration.ID} (${s.registration.Name}) on agent ${s.agent}`),
  ...plan.deregister.map((d) => `deregister ${d.serviceId} from agent ${d.agent} (${d.why === "dead" ? "task not running" : "moved"})`),
  ...plan.kvSet.map((op) => `set ${op.key} = ${op.value}`),
  ...plan.kvDelete.map((key) => `delete ${key}`),
  ...plan.kvDeleteTree.map((key) => `delete tree ${key}`)
]
