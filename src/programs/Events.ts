import { HttpRouter, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import * as NodeHttpServerRequest from "@effect/platform-node/NodeHttpServerRequest"
import { Duration, Effect, Either, Option, ParseResult, Schema, SchemaAST as AST } from "effect"
import { ConsulError, InvalidEvent, isUnreachable, PayloadTooLarge } from "../domain/Errors.js"
import type { MarathonError } from "../domain/Errors.js"
import * as Diff from "../domain/Diff.js"
import { instanceOfTask } from "../domain/Health.js"
import {
  EventEnvelope, HealthStatusChangedEvent, InstanceHealthChangedEvent, isTerminal, KnownEventType, StatusUpdateEvent
} from "../domain/MarathonApi.js"
import type { TaskState } from "../domain/MarathonApi.js"
import { appKvPrefix, appName, isOwnedBy, registration } from "../domain/Naming.js"
import { decorate, ttlCheck } from "../domain/RegistrationExtras.js"
import { isOwnedByMeta } from "../domain/ServiceMeta.js"
import type { HealthSettings, KnownApp } from "./HealthBook.js"
import { applyHealthEvent, pushAfterRegistration } from "./HealthRelay.js"
import { Consul } from "../services/Consul.js"
import { Metrics } from "../services/Metrics.js"
import { Marathon } from "../services/Marathon.js"
import { Ledger } from "./Ledger.js"
import { writeKv } from "./Sync.js"
import { labelsKnown, ownedKey, rememberLabels, rememberOwned, Topology } from "./Topology.js"

/**
 * Marathon events in, Consul writes out. Every answer is JSON: 2xx when the event was applied or needs nothing,
 * 4xx for input consular cannot act on (nothing is written), 502 when Consul or Marathon failed the request.
 */

export interface EventSettings {
  readonly registrationId: string
  readonly fallback: boolean
  readonly fallbackTimeout: Duration.DurationInput
  /** bodies over this many bytes are refused with 413 */
  readonly maxEventBytes: number
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

const decodeEnvelope = Schema.decodeUnknownEither(EventEnvelope)
const decodeStatusUpdate = Schema.decodeUnknownEither(StatusUpdateEvent)
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
  const envelope = decodeEnvelope(json)
  if (Either.isLeft(envelope)) return Either.left(new InvalidEvent({ problem: "invalid event", detail: "eventType must be a string" }))
  const { eventType } = envelope.right
  if (eventType === "health_status_changed_event" || eventType === "instance_health_changed_event") return decodeHealthEvent(eventType, json)
  if (eventType !== "status_update_event") {
    return isKnownEventType(eventType)
      ? Either.right({ _tag: "Other", eventType })
      : Either.left(new InvalidEvent({ problem: `Event type ${eventType} not supported.`, detail: "unknown eventType" }))
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

export type EventOutcome = "registered" | "deregistered" | "ignored" | "stale" | "skipped" | "health"

export const makeEventHandler = (settings: EventSettings) =>
  Effect.gen(function*() {
    const consul = yield* Consul
    const marathon = yield* Marathon
    const ledger = yield* Ledger
    const topology = yield* Topology
    // the daemon counts label writes made by events; other users of the handler need no metrics
    const metrics = yield* Effect.serviceOption(Metrics)
    const ended = new EndedTasks(20_000)
    const extras = {
      registrationId: settings.registrationId,
      serviceMeta: settings.serviceMeta === true,
      check: settings.health === undefined ? undefined : ttlCheck(settings.registrationId, settings.health)
    }
    const decorated = extras.serviceMeta || extras.check !== undefined

    /** The app as the registration needs it (labels, health checks): known from the last pass or this version's read. */
    const knownApp = (event: StatusUpdateEvent): Effect.Effect<KnownApp | undefined> => {
      const known = topology.health.apps.get(event.appId)
      if (known !== undefined && event.version !== undefined && known.version === event.version) return Effect.succeed(known)
      return marathon.app(event.appId).pipe(
        Effect.map((app): KnownApp => {
          const read = { version: app.version, labels: app.labels, hasHealthChecks: (app.healthChecks?.length ?? 0) > 0 }
          topology.health.apps.set(app.id, read)
          return read
        }),
        Effect.catchTag("NotFound", () => Effect.succeed(undefined)),
        // the task is registered all the same: without the labels in Meta and with the initial status until the next pass
        Effect.catchTag("MarathonError", (error) =>
          Effect.as(Effect.logWarning("app of a running task unreadable: registered without its labels in Meta").pipe(
            Effect.annotateLogs({ app: event.appId, error: error.message })
          ), undefined))
      )
    }

    /** Labels of the app, unless KV already holds this version's. A vanished app: nothing more to do. */
    const refreshLabels = (event: StatusUpdateEvent) =>
      Effect.gen(function*() {
        if (labelsKnown(topology, event.appId, event.version)) return
        const app = yield* marathon.app(event.appId).pipe(Effect.catchTag("NotFound", () => Effect.succeed(undefined)))
        if (app === undefined) {
          yield* Effect.logWarning("app of a running task not found in Marathon").pipe(Effect.annotateLogs({ app: event.appId, task: event.taskId }))
          return
        }
        const name = appName(app.id)
        const existing = yield* consul.kvTree(appKvPrefix(name)).pipe(Effect.catchTag("NotFound", () => Effect.succeed(new Map<string, string>())))
        const desired = Diff.desiredState([{ id: app.id, labels: app.labels, tasks: [] }], settings.registrationId, topology.directory)
        const plan = Diff.plan(desired, { agents: new Map(), kv: existing }, {
          registrationId: settings.registrationId,
          purge: false,
          fallback: false,
          directory: topology.directory
        })
        const written = yield* writeKv(plan).pipe(Effect.provideService(Consul, consul))
        if (Option.isSome(metrics)) yield* metrics.value.kvWritten(written.keysSet, written.keysDeleted)
        if (written.failures.length > 0) {
          return yield* new ConsulError({ operation: "write labels", reason: "Status", detail: written.failures.map((f) => f.message).join("; ") })
        }
        rememberLabels(topology, app.id, app.version)
      })

    const register = (event: StatusUpdateEvent) =>
      Effect.gen(function*() {
        if (topology.clashingIds.has(event.appId)) {
          yield* Effect.logError("app id shares its Consul name with another app: not registered").pipe(
            Effect.annotateLogs({ app: event.appId, task: event.taskId })
          )
          return "skipped" as const
        }
        const agent = topology.directory.resolve(event.host)
        const plain = registration(settings.registrationId, event.appId, { id: event.taskId, host: event.host, ports: event.ports })
        const app = decorated ? yield* knownApp(event) : undefined
        const wanted = decorated ? decorate(extras, plain, { id: event.appId, labels: app?.labels }, event.taskId).registration : plain
        const registeredOn = yield* consul.register(agent, wanted, { fallbackMode: settings.fallback }).pipe(
          Effect.as(agent),
          Effect.catchTag("ConsulError", (error) =>
            settings.fallback && (error.reason === "Transport" || error.reason === "Timeout") && agent !== topology.directory.main
              ? consul.register(topology.directory.main, wanted, { fallbackMode: true, timeout: settings.fallbackTimeout }).pipe(
                Effect.as(topology.directory.main),
                Effect.tap(() => Effect.logWarning("registered on the fallback agent").pipe(Effect.annotateLogs({ service: wanted.ID, agent: topology.directory.main, unreachable: agent })))
              )
              : Effect.fail(error)
          )
        )
        rememberOwned(topology, registeredOn, wanted.ID)
        if (settings.health !== undefined) {
          // an app Marathon no longer lists: no word on its checks, so the initial status until it says
          yield* pushAfterRegistration(event.taskId, registeredOn, app?.hasHealthChecks ?? true, settings.health).pipe(
            Effect.catchTag("NotFound", (error) => Effect.fail(new ConsulError({ operation: "update check", reason: "Status", status: 404, detail: error.message }))),
            Effect.provideService(Consul, consul),
            Effect.provideService(Topology, topology)
          )
        }
        yield* ledger.taskStarted(event.taskId, appName(event.appId))
        yield* refreshLabels(event)
        return "registered" as const
      })

    /**
     * Only a service carrying our reg-id tag is ever deregistered; absent already is success. One we registered
     * (or the last sync saw as ours) needs no look at its tags first.
     */
    const deregisterFrom = (agent: string, taskId: string) => {
      const key = ownedKey(agent, taskId)
      const ours = topology.owned.has(key)
        ? Effect.succeed(true)
        : consul.agentService(agent, taskId).pipe(Effect.map((service) =>
          isOwnedBy(service.Tags, settings.registrationId) ||
          (settings.serviceMeta === true && isOwnedByMeta(service.Meta, settings.registrationId))
        ))
      return ours.pipe(
        Effect.flatMap((isOurs) =>
          isOurs
            ? consul.deregister(agent, taskId)
            : Effect.logWarning("service with a task's id is not ours: left alone").pipe(Effect.annotateLogs({ service: taskId, agent }))
        ),
        Effect.catchTag("NotFound", () => Effect.void),
        Effect.tap(() => Effect.sync(() => topology.owned.delete(key)))
      )
    }

    const deregister = (event: StatusUpdateEvent) =>
      Effect.gen(function*() {
        const agent = topology.directory.resolve(event.host)
        const main = topology.directory.main
        // a fallback registration sits on the main agent: it ends with its task too
        const agents = settings.fallback && main !== agent ? [agent, main] : [agent]
        const results = agents.length === 1
          ? [yield* Effect.either(deregisterFrom(agent, event.taskId))]
          : yield* Effect.forEach(agents, (target) => Effect.either(deregisterFrom(target, event.taskId)), { concurrency: 2 })
        yield* ledger.taskEnded(event.taskId, appName(event.appId))
        topology.health.forget(event.taskId)
        const [onHost, onMain] = results
        if (onHost !== undefined && Either.isLeft(onHost)) {
          const hostDown = onHost.left._tag === "ConsulError" && isUnreachable(onHost.left)
          // with --fallback the copy that serves traffic while its agent is down is the main agent's: gone is enough;
          // the task's own agent is cleaned by the next sync once it is back
          if (!(hostDown && onMain !== undefined && Either.isRight(onMain))) return yield* onHost.left
          yield* Effect.logWarning("task's agent unreachable: deregistered from the fallback agent only").pipe(Effect.annotateLogs({ agent }))
        }
        if (onMain !== undefined && Either.isLeft(onMain)) return yield* onMain.left
        return "deregistered" as const
      })

    const statusUpdate = (event: StatusUpdateEvent): Effect.Effect<EventOutcome, ConsulError | MarathonError> =>
      topology.locks.withLock(event.taskId, Effect.gen(function*() {
        if (event.taskStatus === "TASK_RUNNING") {
          if (ended.has(event.taskId)) return "stale" as const
          return yield* register(event)
        }
        if (isTerminal(event.taskStatus)) {
          if (finalStates.has(event.taskStatus)) ended.add(event.taskId)
          return yield* deregister(event)
        }
        return "ignored" as const // TASK_STAGING, TASK_STARTING: not a service yet
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

export type EventHandler = Effect.Effect.Success<ReturnType<typeof makeEventHandler>>

/**
 * Reads at most `limit` bytes of the body: a larger one is refused as soon as it shows (by Content-Length, or
 * while streaming), never buffered whole.
 */
export const readBody = (request: HttpServerRequest.HttpServerRequest, limit: number): Effect.Effect<string, PayloadTooLarge | InvalidEvent> => {
  const declared = Number(request.headers["content-length"])
  if (Number.isFinite(declared) && declared > limit) return Effect.fail(new PayloadTooLarge({ limit }))
  const source = NodeHttpServerRequest.toIncomingMessage(request)
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

const json = (body: unknown, status: number, headers?: Record<string, string>) =>
  HttpServerResponse.unsafeJson(body, { status, ...(headers === undefined ? {} : { headers }) })

const upstreamFailed = (error: ConsulError | MarathonError) =>
  Effect.as(
    Effect.logError("event not applied: upstream failed").pipe(Effect.annotateLogs({ error: error.message })),
    json({ error: `${error._tag === "ConsulError" ? "consul" : "marathon"} failed`, upstream: error._tag === "ConsulError" ? "consul" : "marathon", detail: error.message }, 502)
  )

/** `POST /events` and `GET /`, with every failure turned into a JSON answer in this one place. */
export const eventRoutes = (handler: EventHandler, settings: EventSettings) =>
  HttpRouter.empty.pipe(
    HttpRouter.get("/", Effect.succeed(json([], 200))),
    HttpRouter.post("/events", Effect.gen(function*() {
      const request = yield* HttpServerRequest.HttpServerRequest
      const text = yield* readBody(request, settings.maxEventBytes)
      const decoded = yield* decodeEvent(text)
      const outcome = yield* handler.handle(decoded)
      return json({ status: "ok", outcome }, 200)
    }).pipe(
      Effect.catchTags({
        InvalidEvent: (error) =>
          Effect.as(
            Effect.logWarning("event refused").pipe(Effect.annotateLogs({ error: error.message })),
            json({ error: error.problem, detail: error.detail }, 400)
          ),
        // the rest of the body is not read: close the connection rather than drain it
        PayloadTooLarge: (error) => Effect.succeed(json({ error: "payload too large", detail: error.message }, 413, { connection: "close" })),
        ConsulError: upstreamFailed,
        MarathonError: upstreamFailed
      })
    ))
  )
