import { HttpRouter, HttpServerRequest } from "@effect/platform"
import * as NodeHttpServerRequest from "@effect/platform-node/NodeHttpServerRequest"
import { Duration, Effect, Either, Option, ParseResult, Schema, SchemaAST as AST } from "effect"
import type { IncomingMessage } from "node:http"
import { compiledDecoder } from "../domain/CompiledDecoder.js"
import { ConsulError, InvalidEvent, isUnreachable, PayloadTooLarge } from "../domain/Errors.js"
import type { MarathonError, NotFound } from "../domain/Errors.js"
import * as Diff from "../domain/Diff.js"
import { instanceOfTask } from "../domain/Health.js"
import {
  HealthStatusChangedEvent, InstanceHealthChangedEvent, isTerminal, KnownEventType, StatusUpdateEvent
} from "../domain/MarathonApi.js"
import type { TaskState } from "../domain/MarathonApi.js"
import type { AppId, Labels, PodListing } from "../domain/MarathonApi.js"
import { appKvPrefix, appName, isOwnedBy, registrations, taskIdOfService } from "../domain/Naming.js"
import { appRunSpec, isServiceTask, taskEndpointsOf, unknownRunSpec } from "../domain/RunSpec.js"
import type { RunSpec } from "../domain/RunSpec.js"
import { decorate, ttlCheck } from "../domain/RegistrationExtras.js"
import { isOwnedByMeta } from "../domain/ServiceMeta.js"
import type { HealthSettings, KnownApp } from "./HealthBook.js"
import { applyHealthEvent, pushAfterRegistration } from "./HealthRelay.js"
import { Consul } from "../services/Consul.js"
import { Metrics } from "../services/Metrics.js"
import type { SkipReason } from "../services/Metrics.js"
import { Marathon } from "../services/Marathon.js"
import { jsonAnswer } from "./JsonAnswer.js"
import { Ledger } from "./Ledger.js"
import { requestPath } from "./RoutedPath.js"
import { makeAgentLookup } from "./Catalog.js"
import type { AgentLookup } from "./Catalog.js"
import { makePlacement } from "./Placement.js"
import { makeKvWriter } from "./Sync.js"
import { Topology } from "./Topology.js"

/**
 * Marathon events in, Consul writes out. Every answer is JSON: 2xx when the event was applied or needs nothing,
 * 4xx for input consular cannot act on (nothing is written), 502 when Consul or Marathon failed the request.
 */

export interface EventSettings {
  readonly registrationId: string
  /** the `--consul` URL: its host is the main agent, its catalog lists the others */
  readonly consulUrl: URL
  readonly fallback: boolean
  readonly fallbackTimeout: Duration.DurationInput
  /** bodies over this many bytes are refused with 413 */
  readonly maxEventBytes: number
  /** one service per port of a task, not only the lowest port's */
  readonly servicePerPort?: boolean | undefined
  /** `--service-meta` */
  readonly serviceMeta?: boolean | undefined
  /** `--health-checks ttl`; absent: `none` (health events are acknowledged and ignored) */
  readonly health?: HealthSettings | undefined
}

/** Marathon's word on an instance's health, from either health event type. */
export interface HealthEvent {
  readonly eventType: "health_status_changed_event" | "instance_health_changed_event"
  /** the instance (1.4+), or the task of an older Marathon, which is its own instance */
  readonly instance: string
  /** null: Marathon has no result (instance_health_changed_event `healthy: null`) */
  readonly alive: boolean | null
  readonly timestamp: string | undefined
}

export type DecodedEvent =
  | { readonly _tag: "StatusUpdate"; readonly event: StatusUpdateEvent }
  | { readonly _tag: "Health"; readonly eventType: HealthEvent["eventType"]; readonly event: HealthEvent }
  | { readonly _tag: "Other"; readonly eventType: string }

/**
 * What a value is, never the value itself beyond a short scalar: a field may hold a megabyte of data, or arrays
 * nested deeper than any recursive formatter's stack (Effect's own formatter throws a RangeError on those).
 */
const describeValue = (value: unknown): string => {
  if (value === null) return "null"
  if (Array.isArray(value)) return "an array"
  switch (typeof value) {
    case "string":
      return value.length <= 40 ? JSON.stringify(value) : `a string of ${value.length} characters`
    case "number":
    case "boolean":
      return String(value)
    case "undefined":
      return "nothing"
    case "object":
      return "an object"
    default:
      return `a ${typeof value}`
  }
}

const maxIssues = 5

/** A value from the request, as it may appear in an answer or a log: at most 100 characters, the cut said. */
const quoteCut = (value: string): string =>
  value.length <= 100 ? value : `${value.slice(0, 100)}… (${value.length} characters)`

/** The problems of a decode, one per field, each "path: what is wrong"; short whatever the input. */
const describeParseError = (error: ParseResult.ParseError): string => {
  const found: Array<string> = []
  const at = (path: ReadonlyArray<PropertyKey>, message: string) => {
    if (found.length < maxIssues) found.push(path.length === 0 ? message : `${path.map(String).join(".")}: ${message}`)
  }
  const expectedGot = (ast: AST.AST, actual: unknown) => `expected ${String(ast)}, got ${describeValue(actual)}`
  // a walk bounded by the schema's depth, not the input's: the issues only go as deep as the schema does
  const walk = (issue: ParseResult.ParseIssue, path: ReadonlyArray<PropertyKey>): void => {
    switch (issue._tag) {
      case "Pointer":
        return walk(issue.issue, [...path, ...(Array.isArray(issue.path) ? issue.path : [issue.path])])
      case "Refinement":
      case "Transformation":
        return walk(issue.issue, path)
      case "Composite":
        if (AST.isUnion(issue.ast)) {
          // an optional field is "X | undefined": a present value failed X, so say what is wrong with it
          const present = (Array.isArray(issue.issues) ? issue.issues : [issue.issues])
            .filter((inner) => !(inner._tag === "Type" && AST.isUndefinedKeyword(inner.ast)))
          // a union of alternatives (the task states): one line for all of them, not one per member
          return present.length === 1 ? walk(present[0]!, path) : at(path, expectedGot(issue.ast, issue.actual))
        }
        for (const inner of Array.isArray(issue.issues) ? issue.issues : [issue.issues]) walk(inner, path)
        return
      case "Missing":
        return at(path, issue.message ?? "is missing")
      case "Unexpected":
        return at(path, issue.message ?? "is unexpected")
      case "Forbidden":
        return at(path, issue.message ?? "cannot be checked")
      case "Type":
        return at(path, issue.message ?? expectedGot(issue.ast, issue.actual))
    }
  }
  walk(error.issue, [])
  return found.length === 0 ? "does not match the event schema" : found.join("; ")
}

const decodeStatusUpdate = compiledDecoder(StatusUpdateEvent)
const decodeHealthStatusChanged = Schema.decodeUnknownEither(HealthStatusChangedEvent)
const decodeInstanceHealthChanged = Schema.decodeUnknownEither(InstanceHealthChangedEvent)

const healthDecoded = (event: HealthEvent): DecodedEvent => ({ _tag: "Health", eventType: event.eventType, event })

/** The two health events, each by its own schema: an instance (or, before Marathon 1.4, a task) and its verdict. */
const decodeHealthEvent = (eventType: HealthEvent["eventType"], json: unknown): Either.Either<DecodedEvent, InvalidEvent> => {
  if (eventType === "instance_health_changed_event") {
    return decodeInstanceHealthChanged(json).pipe(Either.mapBoth({
      onLeft: (error) => new InvalidEvent({ problem: `invalid ${eventType}`, detail: describeParseError(error) }),
      onRight: (event) => healthDecoded({ eventType, instance: event.instanceId, alive: event.healthy, timestamp: event.timestamp })
    }))
  }
  return decodeHealthStatusChanged(json).pipe(
    Either.mapLeft((error) => new InvalidEvent({ problem: `invalid ${eventType}`, detail: describeParseError(error) })),
    Either.flatMap((event) => {
      const instance = event.instanceId ?? (event.taskId === undefined ? undefined : instanceOfTask(event.taskId))
      return instance === undefined
        ? Either.left(new InvalidEvent({ problem: `invalid ${eventType}`, detail: "instanceId or taskId is missing" }))
        : Either.right(healthDecoded({ eventType, instance, alive: event.alive, timestamp: event.timestamp }))
    })
  )
}
const isKnownEventType = Schema.is(KnownEventType)

/** The type is decoded first, so a malformed status_update_event is a 400 and never passes for another type. */
export const decodeEvent = (text: string): Either.Either<DecodedEvent, InvalidEvent> => {
  if (text.trim() === "") return Either.left(new InvalidEvent({ problem: "empty body", detail: "expected a Marathon event as a JSON object" }))
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (error) {
    return Either.left(new InvalidEvent({ problem: "invalid JSON", detail: error instanceof Error ? error.message : "unparseable body" }))
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    const kind = json === null ? "null" : Array.isArray(json) ? "an array" : `a ${typeof json}`
    return Either.left(new InvalidEvent({ problem: "invalid event", detail: `expected a JSON object, got ${kind}` }))
  }
  if (!("eventType" in json)) return Either.left(new InvalidEvent({ problem: "invalid event", detail: "eventType is missing" }))
  // only the dispatch: the event itself is decoded by its type's schema below
  const eventType = json.eventType
  if (typeof eventType !== "string") return Either.left(new InvalidEvent({ problem: "invalid event", detail: "eventType must be a string" }))
  if (eventType === "health_status_changed_event" || eventType === "instance_health_changed_event") return decodeHealthEvent(eventType, json)
  if (eventType !== "status_update_event") {
    return isKnownEventType(eventType)
      ? Either.right({ _tag: "Other", eventType })
      : Either.left(new InvalidEvent({ problem: `Event type ${quoteCut(eventType)} not supported.`, detail: "unknown eventType" }))
  }
  return decodeStatusUpdate(json).pipe(
    Either.mapBoth({
      onLeft: (error) => new InvalidEvent({ problem: "invalid status_update_event", detail: describeParseError(error) }),
      onRight: (event): DecodedEvent => ({ _tag: "StatusUpdate", event })
    })
  )
}

/** States after which a task never runs again: a late RUNNING event for one of these is stale. */
const finalStates: ReadonlySet<TaskState> = new Set([
  "TASK_KILLING", "TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_ERROR", "TASK_DROPPED", "TASK_GONE", "TASK_GONE_BY_OPERATOR"
])

/** Tasks that ended recently: bounded, oldest forgotten first. */
class EndedTasks {
  private readonly ids = new Set<string>()
  constructor(private readonly capacity: number) {}
  add(id: string): void {
    this.ids.delete(id)
    this.ids.add(id)
    if (this.ids.size > this.capacity) this.ids.delete(this.ids.values().next().value!)
  }
  has(id: string): boolean {
    return this.ids.has(id)
  }
}

/** An app's or a pod's definition, as far as events need it. */
interface Definition {
  readonly id: AppId
  readonly labels: Labels | undefined
  readonly version: string | undefined
  readonly runSpec: RunSpec
  /** Marathon runs health checks for it (a pod's are not relayed) */
  readonly hasHealthChecks: boolean
}

export type EventOutcome = "registered" | "deregistered" | "ignored" | "stale" | "skipped" | "health"

const ignored: Effect.Effect<EventOutcome> = Effect.succeed("ignored")

export const makeEventHandler = (settings: EventSettings) =>
  Effect.gen(function*() {
    const consul = yield* Consul
    const marathon = yield* Marathon
    const ledger = yield* Ledger
    const topology = yield* Topology
    const lookup = yield* makeAgentLookup(settings.consulUrl)
    const place = yield* makePlacement(settings)
    const writeKv = yield* makeKvWriter
    // the daemon counts label writes and skipped events; other users of the handler need no metrics
    const metrics = yield* Effect.serviceOption(Metrics)
    const ended = new EndedTasks(20_000)
    const extras = {
      registrationId: settings.registrationId,
      serviceMeta: settings.serviceMeta === true,
      check: settings.health === undefined ? undefined : ttlCheck(settings.registrationId, settings.health)
    }
    const decorated = extras.serviceMeta || extras.check !== undefined

    /**
     * The app as the registration needs it (labels, health checks): known from the last pass, or from this
     * version's read of its definition (the event's own, when it made one).
     */
    const knownApp = (event: StatusUpdateEvent, read: Definition | undefined | "unread"): Effect.Effect<KnownApp | undefined> => {
      const known = topology.health.apps.get(event.appId)
      if (known !== undefined && event.version !== undefined && known.version === event.version) return Effect.succeed(known)
      const remember = (definition: Definition | undefined): KnownApp | undefined => {
        if (definition === undefined) return undefined
        const app = { version: definition.version, labels: definition.labels, hasHealthChecks: definition.hasHealthChecks }
        topology.health.apps.set(definition.id, app)
        return app
      }
      if (read !== "unread") return Effect.succeed(remember(read))
      return readDefinition(event.appId).pipe(
        Effect.map(remember),
        // the task is registered all the same: without the labels in Meta and with the initial status until the next pass
        Effect.catchTag("MarathonError", (error) =>
          Effect.as(Effect.logWarning("app of a running task unreadable: registered without its labels in Meta").pipe(
            Effect.annotateLogs({ app: event.appId, error: error.message })
          ), undefined))
      )
    }

    // Before the first event (and any pass): the agents of the catalog, and the app names that clash
    yield* learnDatacenter(lookup, marathon, topology)

    const skipped = (reason: SkipReason, message: string, annotations: Record<string, string>) =>
      Effect.gen(function*() {
        yield* (reason === "name_clash" ? Effect.logError(message) : Effect.logWarning(message)).pipe(Effect.annotateLogs(annotations))
        if (Option.isSome(metrics)) yield* metrics.value.eventSkipped(reason)
        return "skipped" as const
      })

    /**
     * The definition of the task's app, or of its pod (Marathon 1.4+: a pod task's `appId` is the pod's id): how
     * the task is reached, and the labels. Undefined when Marathon has neither any more.
     */
    const readDefinition = (id: AppId): Effect.Effect<Definition | undefined, MarathonError> =>
      marathon.app(id).pipe(
        Effect.map((app): Definition | undefined => ({
          id: app.id,
          labels: app.labels,
          version: app.version,
          runSpec: appRunSpec(app),
          hasHealthChecks: (app.healthChecks?.length ?? 0) > 0
        })),
        Effect.catchTag("NotFound", () =>
          marathon.pod(id).pipe(
            Effect.map((pod): Definition => ({
              id: pod.id,
              labels: pod.labels ?? undefined,
              version: pod.version ?? undefined,
              runSpec: { _tag: "Pod", spec: pod },
              hasHealthChecks: false
            })),
            Effect.catchTag("NotFound", () => Effect.succeed(undefined))
          ))
      )

    /** The definition, read for an app id this event claimed: the name stays claimed only for one Marathon confirms. */
    const readClaimed = (event: StatusUpdateEvent, claim: "known" | "new") =>
      readDefinition(event.appId).pipe(
        Effect.tapBoth({
          onFailure: () => claim === "new" ? topology.releaseApp(event.appId) : Effect.void,
          onSuccess: (found) => claim === "new" && found === undefined ? topology.releaseApp(event.appId) : Effect.void
        })
      )

    /** The app's label keys in KV, as they are before this event writes them (none yet: empty). */
    const readLabels = (id: AppId) =>
      consul.kvTree(appKvPrefix(appName(id))).pipe(Effect.catchTag("NotFound", () => Effect.succeed<ReadonlyMap<string, string>>(new Map())))

    /**
     * Labels of the app or pod, unless KV already holds this version's. A vanished one: nothing more to do.
     * `existingRead` is the app's KV tree when it was read beside the definition; a failure of that read fails the
     * event here, after the registration, as a read made here would.
     */
    const refreshLabels = (
      event: StatusUpdateEvent,
      claim: "known" | "new",
      read: Definition | undefined | "unread",
      existingRead?: Either.Either<ReadonlyMap<string, string>, ConsulError | NotFound>
    ) =>
      Effect.gen(function*() {
        if (yield* topology.labelsKnown(event.appId, event.version)) return
        const app = read === "unread" ? yield* readClaimed(event, claim) : read
        if (app === undefined) {
          yield* Effect.logWarning("app of a running task not found in Marathon").pipe(Effect.annotateLogs({ app: event.appId, task: event.taskId }))
          return
        }
        const existing = existingRead !== undefined && app.id === event.appId
          ? yield* Either.match(existingRead, {
            onLeft: (error) => error._tag === "NotFound" ? Effect.succeed<ReadonlyMap<string, string>>(new Map()) : Effect.fail(error),
            onRight: Effect.succeed
          })
          : yield* readLabels(app.id)
        const directory = yield* topology.directory
        const desired = Diff.desiredState([{ id: app.id, labels: app.labels, tasks: [] }], settings.registrationId, directory)
        const plan = Diff.plan(desired, { agents: new Map(), kv: existing }, {
          registrationId: settings.registrationId,
          purge: false,
          fallback: false,
          directory
        })
        const written = yield* writeKv(plan)
        if (Option.isSome(metrics)) yield* metrics.value.kvWritten(written.keysSet, written.keysDeleted)
        if (written.failures.length > 0) {
          return yield* new ConsulError({ operation: "write labels", reason: "Status", detail: written.failures.map((f) => f.message).join("; ") })
        }
        yield* topology.rememberLabels(app.id, app.version)
      })

    const register = (event: StatusUpdateEvent) =>
      Effect.gen(function*() {
        const claim = yield* topology.claimApp(event.appId)
        if (claim === "clash") {
          return yield* skipped("name_clash", "app id shares its Consul name with another app: not registered", { app: event.appId, task: event.taskId })
        }
        const agent = yield* lookup.agentOfHost(event.host).pipe(
          Effect.tapError(() => claim === "new" ? topology.releaseApp(event.appId) : Effect.void)
        )
        if (agent === undefined && !settings.fallback) {
          if (claim === "new") yield* topology.releaseApp(event.appId)
          return yield* skipped("unknown_host", "task host is no known Consul agent: not registered", { host: event.host, app: event.appId, task: event.taskId })
        }
        // how the task is reached comes from its app's (or pod's) definition, read once per version: a failed
        // read fails the event (502) before anything is written
        const known = yield* topology.knownRunSpec(event.appId, event.version)
        const labelsKnown = yield* topology.labelsKnown(event.appId, event.version)
        // a new version's labels: its KV tree is read at the same time as its definition, not after the registration
        const [read, existingRead] = known === undefined || !labelsKnown
          ? labelsKnown
            ? [yield* readClaimed(event, claim), undefined] as const
            : yield* Effect.all([readClaimed(event, claim), Effect.either(readLabels(event.appId))], { concurrency: 2 })
          : ["unread" as const, undefined] as const
        const runSpec = known ?? (read === "unread" ? undefined : read?.runSpec) ?? unknownRunSpec
        if (known === undefined && read !== "unread" && read !== undefined) yield* topology.rememberRunSpec(read.id, read.version, read.runSpec)
        // a pod's container without endpoints (a sidecar) is no service, as a sync pass sees it
        if (!isServiceTask(runSpec, event.taskId)) return "ignored" as const
        const endpoints = taskEndpointsOf(runSpec, { id: event.taskId, host: event.host, ports: event.ports, ipAddresses: event.ipAddresses })
        const main = (yield* topology.directory).main
        const app = decorated ? yield* knownApp(event, read) : undefined
        for (const plain of registrations(settings.registrationId, { appId: event.appId, taskId: event.taskId, endpoints }, settings)) {
          const wanted = decorated ? decorate(extras, plain, { id: event.appId, labels: app?.labels }, event.taskId).registration : plain
          const placed = yield* place({ agent, main }, wanted).pipe(
            Effect.tapError(() => claim === "new" ? topology.releaseApp(event.appId) : Effect.void)
          )
          yield* topology.rememberOwned(placed.agent, wanted.ID)
          if (settings.health !== undefined) {
            // an app Marathon no longer lists: no word on its checks, so the initial status until it says
            yield* pushAfterRegistration(wanted.ID, placed.agent, app?.hasHealthChecks ?? true, settings.health, event.taskId).pipe(
              Effect.catchTag("NotFound", (error) => Effect.fail(new ConsulError({ operation: "update check", reason: "Status", status: 404, detail: error.message }))),
              Effect.provideService(Consul, consul),
              Effect.provideService(Topology, topology)
            )
          }
        }
        yield* ledger.taskStarted(event.taskId, event.appId)
        yield* refreshLabels(event, claim, read, existingRead)
        return "registered" as const
      })

    /**
     * Only a service carrying our reg-id tag is ever deregistered; absent already is success. One we registered
     * (or the last sync saw as ours) needs no look at its tags first.
     */
    const deregisterFrom = (agent: string, taskId: string) =>
      Effect.flatMap(topology.isOwned(agent, taskId), (known) =>
        (known
          ? Effect.succeed(true)
          : consul.agentService(agent, taskId).pipe(Effect.map((service) =>
            isOwnedBy(service.Tags, settings.registrationId) ||
            (settings.serviceMeta === true && isOwnedByMeta(service.Meta, settings.registrationId))
          ))
        ).pipe(
          Effect.flatMap((isOurs) =>
            isOurs
              ? consul.deregister(agent, taskId)
              : Effect.logWarning("service with a task's id is not ours: left alone").pipe(Effect.annotateLogs({ service: taskId, agent }))
          ),
          Effect.catchTag("NotFound", () => Effect.void),
          Effect.zipRight(topology.forgetOwned(agent, taskId))
        ))

    /**
     * With --service-per-port a task has a service per port, "<task id>:<port>": those of ours on the agent end
     * with it. The agent is asked, not the app: its definition may have changed, or be gone.
     */
    const deregisterPortServices = (agent: string, taskId: string) =>
      settings.servicePerPort !== true ? Effect.void : consul.agentServices(agent).pipe(
        Effect.flatMap((services) =>
          Effect.forEach(
            [...services.values()].filter((service) =>
              service.ID !== taskId && taskIdOfService(service.ID) === taskId && isOwnedBy(service.Tags, settings.registrationId)
            ),
            (service) => consul.deregister(agent, service.ID).pipe(
              Effect.catchTag("NotFound", () => Effect.void),
              Effect.zipRight(topology.forgetOwned(agent, service.ID)),
              Effect.tap(() => Effect.sync(() => topology.health.forget(service.ID)))
            ),
            { discard: true }
          )
        )
      )

    /**
     * A task's own service id is its task id, shared with no other app: a kill deregisters it even when the app's
     * name clashes (leaving a dead task registered would send traffic to it).
     */
    const deregister = (event: StatusUpdateEvent) =>
      Effect.gen(function*() {
        const agent = yield* lookup.agentOfHost(event.host)
        const main = (yield* topology.directory).main
        if (agent === undefined && !settings.fallback) {
          return yield* skipped("unknown_host", "task host is no known Consul agent: not deregistered", { host: event.host, app: event.appId, task: event.taskId })
        }
        // a fallback registration sits on the main agent: it ends with its task too
        const agents = agent === undefined ? [main] : settings.fallback && main !== agent ? [agent, main] : [agent]
        const deregisterAll = (target: string) => Effect.zipRight(deregisterFrom(target, event.taskId), deregisterPortServices(target, event.taskId))
        const results = agents.length === 1
          ? [yield* Effect.either(deregisterAll(agents[0]!))]
          : yield* Effect.forEach(agents, (target) => Effect.either(deregisterAll(target)), { concurrency: 2 })
        yield* ledger.taskEnded(event.taskId, event.appId)
        topology.health.forget(event.taskId)
        const [onHost, onMain] = results
        if (onHost !== undefined && Either.isLeft(onHost)) {
          const hostDown = onHost.left._tag === "ConsulError" && isUnreachable(onHost.left)
          // with --fallback the copy that serves traffic while its agent is down is the main agent's: gone is enough;
          // the task's own agent is cleaned by the next sync once it is back
          if (!(hostDown && onMain !== undefined && Either.isRight(onMain))) return yield* onHost.left
          yield* Effect.logWarning("task's agent unreachable: deregistered from the fallback agent only").pipe(Effect.annotateLogs({ agent: agents[0]! }))
        }
        if (onMain !== undefined && Either.isLeft(onMain)) return yield* onMain.left
        return "deregistered" as const
      })

    const statusUpdate = (event: StatusUpdateEvent): Effect.Effect<EventOutcome, ConsulError | MarathonError> =>
      // TASK_STAGING, TASK_STARTING: not a service yet; nothing is read or written, so no turn in the task's lock
      event.taskStatus !== "TASK_RUNNING" && !isTerminal(event.taskStatus) ? ignored : topology.locks.withLock(event.taskId, Effect.gen(function*() {
        if (event.taskStatus === "TASK_RUNNING") {
          if (ended.has(event.taskId)) return "stale" as const
          return yield* register(event)
        }
        if (finalStates.has(event.taskStatus)) ended.add(event.taskId)
        return yield* deregister(event)
      })).pipe(
        Effect.annotateLogs({ task: event.taskId, state: event.taskStatus })
      )

    /** Marathon's word on an instance's health, pushed to its tasks' checks; ignored without `--health-checks ttl`. */
    const healthChanged = (event: HealthEvent): Effect.Effect<EventOutcome, ConsulError> => {
      if (settings.health === undefined || event.alive === null) return Effect.succeed("ignored")
      return applyHealthEvent(event.instance, { _tag: "Event", alive: event.alive, timestamp: event.timestamp }, settings.health).pipe(
        Effect.provideService(Consul, consul),
        Effect.provideService(Topology, topology),
        Effect.catchTag("NotFound", (error) => Effect.fail(new ConsulError({ operation: "update check", reason: "Status", status: 404, detail: error.message }))),
        Effect.map((changed): EventOutcome => changed > 0 ? "health" : "ignored"),
        Effect.annotateLogs({ instance: event.instance, event: event.eventType })
      )
    }

    const handle = (decoded: DecodedEvent): Effect.Effect<EventOutcome, ConsulError | MarathonError> =>
      decoded._tag === "StatusUpdate"
        ? statusUpdate(decoded.event)
        : decoded._tag === "Health"
        ? healthChanged(decoded.event)
        : Effect.succeed("ignored")

    return { handle, statusUpdate }
  })

/**
 * The start-up read: the catalog's agents, and the names Marathon's apps and pods clash on, so that events are
 * checked before the first pass has run. Neither failing stops the daemon: the catalog is read again for the
 * first unknown host, and clashes are known from the first pass.
 */
const learnDatacenter = (lookup: AgentLookup, marathon: Marathon["Type"], topology: Topology["Type"]) =>
  Effect.all([
    lookup.refreshCatalog.pipe(Effect.ignore),
    Effect.all([
      marathon.apps,
      // a Marathon < 1.4 has no pods (404); pods unreadable now: their clashes are known from the first pass
      marathon.pods.pipe(Effect.orElseSucceed((): PodListing => ({ pods: [], rejected: [] })))
    ], { concurrency: 2 }).pipe(
      Effect.flatMap(([apps, pods]) => {
        const unreadable = [...apps.rejected, ...pods.rejected].flatMap((workload) => workload.id === undefined ? [] : [workload.id])
        const ids = [...apps.apps.map((app) => app.id), ...pods.pods.map((pod) => pod.id)]
        return topology.appsRead(ids, Diff.clashingIdsOf(ids, unreadable))
      }),
      Effect.catchAll((error) =>
        Effect.logWarning("Marathon unreadable at start-up: name clashes are known from the first pass").pipe(Effect.annotateLogs({ error: error.message }))
      )
    )
  ], { concurrency: 2, discard: true })

export type EventHandler = Effect.Effect.Success<ReturnType<typeof makeEventHandler>>

/**
 * Reads at most `limit` bytes of the body: a larger one is refused as soon as it shows (by Content-Length, or
 * while streaming), never buffered whole.
 */
export const readBody = (source: IncomingMessage, limit: number): Effect.Effect<string, PayloadTooLarge | InvalidEvent> => {
  const declared = Number(source.headers["content-length"])
  if (Number.isFinite(declared) && declared > limit) return Effect.fail(new PayloadTooLarge({ limit }))
  return Effect.async<string, PayloadTooLarge | InvalidEvent>((resume) => {
    const chunks: Array<Buffer> = []
    let size = 0
    let done = false
    const finish = (effect: Effect.Effect<string, PayloadTooLarge | InvalidEvent>) => {
      if (done) return
      done = true
      source.off("data", onData)
      source.off("end", onEnd)
      source.off("error", onError)
      resume(effect)
    }
    const onData = (chunk: Buffer) => {
      size += chunk.length
      if (size > limit) {
        source.pause()
        finish(Effect.fail(new PayloadTooLarge({ limit })))
      } else {
        chunks.push(chunk)
      }
    }
    const onEnd = () => finish(Effect.sync(() => Buffer.concat(chunks).toString("utf8")))
    const onError = (error: Error) => finish(Effect.fail(new InvalidEvent({ problem: "unreadable body", detail: error.message })))
    source.on("data", onData)
    source.once("end", onEnd)
    source.once("error", onError)
  })
}


const upstreamFailed = (error: ConsulError | MarathonError) =>
  Effect.as(
    Effect.logError("event not applied: upstream failed").pipe(Effect.annotateLogs({ error: error.message })),
    jsonAnswer({ error: `${error._tag === "ConsulError" ? "consul" : "marathon"} failed`, upstream: error._tag === "ConsulError" ? "consul" : "marathon", detail: error.message }, 502)
  )

/**
 * `POST /events` of one Node request, with every failure turned into a JSON answer in this one place: the daemon's
 * listener runs it directly, the router through `eventsPost`.
 */
export const answerEvent = (handler: EventHandler, settings: EventSettings, source: IncomingMessage) =>
  Effect.gen(function*() {
    const text = yield* readBody(source, settings.maxEventBytes)
    const decoded = yield* decodeEvent(text)
    const outcome = yield* handler.handle(decoded)
    return jsonAnswer({ status: "ok", outcome }, 200)
  }).pipe(
    Effect.catchTags({
      InvalidEvent: (error) =>
        Effect.as(
          Effect.logWarning("event refused").pipe(Effect.annotateLogs({ error: error.message })),
          jsonAnswer({ error: error.problem, detail: error.detail }, 400)
        ),
      // the rest of the body is not read: close the connection rather than drain it
      PayloadTooLarge: (error) => Effect.succeed(jsonAnswer({ error: "payload too large", detail: error.message }, 413, { connection: "close" })),
      ConsulError: upstreamFailed,
      MarathonError: upstreamFailed
    })
  )

/** `POST /events` as a route of the platform's router. */
export const eventsPost = (handler: EventHandler, settings: EventSettings) =>
  Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) => answerEvent(handler, settings, NodeHttpServerRequest.toIncomingMessage(request)))

/** Whether a request is `POST /events` spelled exactly (any query string), a spelling the router also serves. */
export const isEventsPost = (method: string | undefined, url: string | undefined): boolean =>
  method === "POST" && url !== undefined && requestPath(url) === "/events"

/** `POST /events` and `GET /`. */
export const eventRoutes = (handler: EventHandler, settings: EventSettings) =>
  HttpRouter.empty.pipe(
    HttpRouter.get("/", Effect.succeed(jsonAnswer([], 200))),
    HttpRouter.post("/events", eventsPost(handler, settings))
  )
