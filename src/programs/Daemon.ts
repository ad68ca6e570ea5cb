import { HttpMiddleware, HttpRouter, HttpServer, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { timingSafeEqual } from "node:crypto"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import { Duration, Effect, Layer, Option, Ref, Runtime, Schedule } from "effect"
import type { Context } from "effect"
import { createServer } from "node:http"
import type { IncomingMessage, RequestListener, ServerResponse } from "node:http"
import { answerEvent, eventRoutes, isEventsPost, makeEventHandler } from "./Events.js"
import { jsonAnswer, writeJsonAnswer } from "./JsonAnswer.js"
import { routedPath } from "./RoutedPath.js"
import { controlRoutes, makePassQueue } from "./Control.js"
import type { Control } from "./Control.js"
import { NotLeading } from "../domain/Errors.js"
import type { EventHandler } from "./Events.js"
import type { EventSettings } from "./Events.js"
import { syncOnce } from "./Sync.js"
import type { SyncSettings } from "./Sync.js"
import { recheckSubscription, runEventSource } from "./EventSource.js"
import { repushLoop } from "./HealthRelay.js"
import { Metrics, MetricsLive } from "../services/Metrics.js"
import { observeEventWith, observeSync, operationsApp, Readiness, ReadinessLive } from "./Operations.js"
import type { EventSourceHooks, EventSourceSettings } from "./EventSource.js"
import { eventsCallbackUrl } from "./EventSource.js"
import { followerRefusal, makeElection, refuseEventsUnlessLeading } from "./Election.js"
import type { Election, LeaderElectionOptions } from "./Election.js"
import { Leadership } from "../services/Leadership.js"
import { Marathon } from "../services/Marathon.js"
import { Topology } from "./Topology.js"

/**
 * `consular run`: the event receiver, the Marathon subscription and the periodic sync, side by side, so that a
 * defect in any of them ends the process (exit 1) instead of leaving a daemon that serves but no longer syncs.
 */

export interface DaemonSettings extends EventSettings, SyncSettings, EventSourceSettings {
  /** seconds between sync passes; 0: events only */
  readonly syncInterval: number
  /** --leader-election: only the instance holding the Consul lock syncs, purges and applies events */
  readonly leaderElection?: LeaderElectionOptions | undefined
}

/** One pass, measured, its failure logged (once, whoever waits for it). */
const observedPass = (settings: DaemonSettings, readingMarathon?: Effect.Effect<void>) =>
  syncOnce({ ...settings, readingMarathon }).pipe(
    observeSync,
    Effect.tapError((error) => Effect.logError("sync failed").pipe(Effect.annotateLogs({ error: error.message }))),
    Effect.annotateLogs("job", "sync")
  )

/** One pass, measured, whose failure is logged, not raised: the loops that run it must go on. */
const loggedPass = (settings: DaemonSettings) => Effect.ignore(observedPass(settings))

/** Runs `pass` now and every `syncInterval` seconds; a failed pass is logged and the next still runs. */
export const periodicSync = (settings: DaemonSettings, pass: Effect.Effect<void, never, SyncRequirements> = loggedPass(settings)) =>
  pass.pipe(Effect.repeat(Schedule.fixed(Duration.seconds(settings.syncInterval))), Effect.asVoid)

type SyncRequirements = Effect.Effect.Context<ReturnType<typeof syncOnce>> | Metrics | Readiness

const notFound = jsonAnswer({ error: "not found" }, 404)
const unauthorized = jsonAnswer({ error: "unauthorized", detail: "missing or wrong secret" }, 401)

const sameSecret = (given: string, expected: string): boolean => {
  const a = Buffer.from(given)
  const b = Buffer.from(expected)
  return a.length === b.length && timingSafeEqual(a, b)
}

/** the routes that act on Consul or read the plan: with --events-secret-file, only with the secret */
const securedPaths: ReadonlySet<string> = new Set(["/events", "/sync", "/diff"])

const bearer = (authorization: string | undefined): string | undefined => {
  const match = authorization === undefined ? null : /^Bearer\s+(\S+)\s*$/i.exec(authorization)
  return match === null ? undefined : match[1]
}

/**
 * With --events-secret-file, POST /events, POST /sync and GET /diff must carry the secret, as `?secret=<s>`
 * (Marathon sends the callback URL as given) or `Authorization: Bearer <s>`; checked before anything else.
 * The refusal, or undefined when the request may pass (the daemon's listener asks too).
 */
const secretRefusal = (secret: string | undefined, url: string, authorization: string | undefined): Effect.Effect<HttpServerResponse.HttpServerResponse> | undefined => {
  if (secret === undefined) return undefined
  const path = routedPath(url)
  if (!securedPaths.has(path)) return undefined
  const parsed = new URL(url, "http://consular.invalid")
  const given = [parsed.searchParams.get("secret") ?? undefined, bearer(authorization)]
  if (given.some((candidate) => candidate !== undefined && sameSecret(candidate, secret))) return undefined
  return Effect.as(Effect.logWarning("request refused: missing or wrong secret").pipe(Effect.annotateLogs({ path })), unauthorized)
}

const requireSecret = (secret: string | undefined) => <E, R>(app: Effect.Effect<HttpServerResponse.HttpServerResponse, E, R>) =>
  secret === undefined ? app : Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) =>
    secretRefusal(secret, request.url, request.headers["authorization"]) ?? app)

/** The daemon's HTTP app: events, `GET /`, /health, /ready, /metrics, /sync, /diff, JSON 404s for the rest. */
export const appFor = (settings: DaemonSettings, handler: EventHandler, operations: HttpRouter.HttpRouter, control: Control, election?: Election) => {
  const routed = eventRoutes(handler, settings).pipe(
    HttpRouter.concat(operations),
    HttpRouter.concat(controlRoutes(control)),
    HttpRouter.all("*", Effect.succeed(notFound))
  )
  return routed.pipe(refuseEventsUnlessLeading(election), requireSecret(settings.eventsSecret))
}

/**
 * The daemon's Node listener: `POST /events` spelled exactly is answered by one fiber writing straight to Node's
 * response, past the platform's request object, router and response handling (a fifth to a third of an event's
 * CPU); every other request goes to the platform's handler of `appFor`. Both check the secret and the leader alike.
 */
export const daemonListener = (settings: DaemonSettings, handler: EventHandler, app: ReturnType<typeof appFor>, election: Election | undefined) =>
  Effect.gen(function*() {
    // no tracer is exported (main.ts): the server's span per request would only parse the URL and copy headers
    const platform = yield* HttpMiddleware.withTracerDisabledWhenEffect(NodeHttpServer.makeHandler(app), () => true)
    const runFork = Runtime.runFork(yield* Effect.runtime<never>())
    const event = (request: IncomingMessage, response: ServerResponse) => {
      const url = request.url ?? "/"
      const answer = secretRefusal(settings.eventsSecret, url, request.headers.authorization) ?? (election === undefined
        ? answerEvent(handler, settings, request)
        : Effect.flatMap(followerRefusal(election, "POST", url), (refusal) => refusal === undefined ? answerEvent(handler, settings, request) : Effect.succeed(refusal)))
      const fiber = runFork(answer.pipe(
        Effect.catchAllCause((cause) => Effect.as(Effect.logError("event not applied: defect", cause), jsonAnswer({ error: "internal error" }, 500))),
        Effect.map((answered) => writeJsonAnswer(response, answered))
      ))
      // as the platform does: a client gone before its answer interrupts the work
      response.on("close", () => {
        if (!response.writableEnded) fiber.unsafeInterruptAsFork(fiber.id())
      })
    }
    return (request: IncomingMessage, response: ServerResponse) =>
      isEventsPost(request.method, request.url) ? event(request, response) : platform(request, response)
  })

/** Every event, from callbacks or the stream, counted and timed. */
const measuredHandler = (handler: EventHandler) =>
  // the metrics captured once, not provided per event: the router and the event source take a handler without requirements
  Effect.map(Metrics, (metrics): EventHandler => ({
    ...handler,
    handle: (decoded) => observeEventWith(metrics, decoded, handler.handle(decoded))
  }))

/** Whether /ready waits for a first sync: only when some pass is going to run. */
const readinessSettings = (settings: DaemonSettings) => ({
  // a leader always takes over with a full pass
  requireSync: settings.syncInterval > 0 || settings.events === "sse" || settings.leaderElection !== undefined,
  self: `${settings.host}:${settings.port}`,
  election: settings.leaderElection !== undefined
})

/**
 * The daemon's event handler, the HTTP app and the Node listener that serve it, over a queue of passes whose worker
 * runs in the caller's scope: `runDaemon`'s without its bound port, election and event source (tests serve it).
 */
export const makeDaemonApp = (settings: DaemonSettings) =>
  Effect.gen(function*() {
    const handler = yield* measuredHandler(yield* makeEventHandler(settings))
    const passes = yield* makePasses(settings, undefined, Effect.void)
    yield* Effect.forkScoped(passes.worker)
    const app = appFor(settings, handler, yield* operationsApp, passes)
    return { handler, app, listener: yield* daemonListener(settings, handler, app, undefined) }
  })

/**
 * Every full pass of the daemon, whoever asks for it (the schedule, the event source, POST /sync), through one
 * queue (`makePassQueue`: a request joins the pass that has not read Marathon yet), and the dry runs of GET /diff.
 * Passes never overlap, nor does a dry run with a pass: the ledger follows one pass at a time.
 */
const makePasses = <R>(settings: DaemonSettings, election: Election | undefined, afterPass: Effect.Effect<void, never, R>) =>
  Effect.gen(function*() {
    // a captured Context, not a layer: the passes are handed to the queue's worker without requirements
    const context = yield* Effect.context<SyncRequirements | R>()
    const exclusive = yield* Effect.makeSemaphore(1)
    const pass = (readingMarathon: Effect.Effect<void>) =>
      exclusive.withPermits(1)(Effect.gen(function*() {
        // a leader confirms it still holds the lock before each pass
        if (election !== undefined && !(yield* election.confirm)) {
          yield* Effect.logWarning("sync skipped: not the leader")
          return yield* new NotLeading({ leader: yield* election.leaderAt })
        }
        const result = yield* Effect.either(observedPass(settings, readingMarathon))
        yield* afterPass
        return yield* result
      })).pipe(Effect.provide(context))
    const queue = yield* makePassQueue(pass)
    const diff = exclusive.withPermits(1)(syncOnce({ ...settings, dryRun: true })).pipe(Effect.provide(context))
    return { worker: queue.worker, sync: queue.request, diff } satisfies Control & { readonly worker: Effect.Effect<never> }
  })

/** The metrics and readiness of one daemon. */
export const daemonObservability = (settings: DaemonSettings) => Layer.merge(MetricsLive, ReadinessLive(readinessSettings(settings)))

/** Requests Node cannot even parse (a bad request line, a bad Content-Length) still get a JSON answer. */
export const nodeServer = (listener?: RequestListener) => {
  const server = listener === undefined ? createServer() : createServer(listener)
  server.on("clientError", (error: NodeJS.ErrnoException, socket) => {
    if (!socket.writable) return socket.destroy()
    const status = error.code === "HPE_HEADER_OVERFLOW" ? 431 : 400
    const body = JSON.stringify({ error: "bad request", detail: error.code ?? "unparseable HTTP request" })
    socket.end(
      `HTTP/1.1 ${status} ${status === 431 ? "Request Header Fields Too Large" : "Bad Request"}\r\n` +
        `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`
    )
  })
  return server
}

/**
 * Binds the listener, once the app is ready: a Node server bound earlier accepts requests that nothing ever
 * answers. Closed with the scope.
 */
const listen = (settings: Pick<DaemonSettings, "host" | "port">, listener: RequestListener) =>
  NodeHttpServer.make(() => nodeServer(listener), { host: settings.host, port: settings.port }).pipe(
    Effect.flatMap((server) => Effect.provideService(HttpServer.logAddress, HttpServer.HttpServer, server))
  )

export const runDaemon = (settings: DaemonSettings) =>
  Effect.gen(function*() {
    const election = settings.leaderElection === undefined ? undefined : yield* electionFor(settings, settings.leaderElection)
    const handler = yield* measuredHandler(yield* makeEventHandler(settings))
    const metrics = yield* Metrics
    const readiness = yield* Readiness
    // the callback subscription, once made, is checked again after every pass
    const callback = yield* Ref.make<"none" | "up" | "down">("none")
    const hooks: EventSourceHooks = {
      // a leader past its lease (a paused process) applies no event from the stream either
      handler: election === undefined
        ? handler
        : { ...handler, handle: (decoded) => Effect.flatMap(election.leading, (leading) => leading ? handler.handle(decoded) : Effect.succeed("skipped" as const)) },
      resync: Effect.suspend(() => Effect.ignore(passes.sync)),
      connected: (source) =>
        Effect.all([
          Effect.logInfo("event source connected").pipe(Effect.annotateLogs({ source })),
          source === "callback" ? Ref.set(callback, "up") : Effect.void,
          readiness.eventSourceConnected(true),
          metrics.eventSourceConnected(source, true)
        ], { discard: true }),
      disconnected: (source) =>
        Effect.all([
          source === "callback" ? Ref.set(callback, "down") : Effect.void,
          readiness.eventSourceConnected(false),
          metrics.eventSourceConnected(source, false),
          metrics.eventSourceReconnected(source)
        ], { discard: true })
    }
    const recheck = Effect.flatMap(Ref.get(callback), (state) =>
      state === "none" ? Effect.void : Effect.asVoid(recheckSubscription(settings, hooks, state === "up")))
    // the schedule, a stream reconnect and POST /sync all ask the one queue of passes
    const passes = yield* makePasses(settings, election, recheck)
    const pass = Effect.ignore(passes.sync)
    const listener = yield* daemonListener(settings, handler, appFor(settings, handler, yield* operationsApp, passes, election), election)
    const server = Effect.zipRight(listen(settings, listener), Effect.never).pipe(Effect.scoped)
    const work = Effect.all([
      passes.worker,
      runEventSource(settings, hooks),
      settings.syncInterval > 0 ? periodicSync(settings, pass) : election === undefined ? Effect.void : pass,
      // the checks' own timer, whatever --sync-interval is: a check lapses only when consular is gone; after a
      // takeover nothing is known as pushed (another instance pushed meanwhile), so every check is pushed once
      settings.health === undefined
        ? Effect.void
        : Effect.zipRight(Effect.flatMap(Topology, (topology) => Effect.sync(() => topology.health.forgetPushes())), repushLoop(settings.health))
    ], { concurrency: "unbounded", discard: true })
    yield* Effect.all([
      server,
      election === undefined ? work : election.run(work, stepDown(settings, hooks, yield* Marathon))
    ], { concurrency: "unbounded", discard: true })
  })

/** The election, over the Leadership service main.ts provides to a daemon started with --leader-election. */
const electionFor = (settings: DaemonSettings, options: LeaderElectionOptions) =>
  Effect.flatMap(Effect.serviceOption(Leadership), (leadership) =>
    Option.isNone(leadership)
      ? Effect.dieMessage("--leader-election: no Leadership service provided")
      : makeElection({ ...options, host: settings.host, port: settings.port, registrationId: settings.registrationId }).pipe(
        Effect.provideService(Leadership, leadership.value)
      ))

/** A leader stepping down stops Marathon calling it back (a follower answers 503) and its source counts as down. */
const stepDown = (settings: DaemonSettings, hooks: EventSourceHooks, marathon: Context.Tag.Service<typeof Marathon>) =>
  Effect.gen(function*() {
    yield* hooks.disconnected(settings.events === "sse" ? "sse" : "callback", "stepped down")
    if (settings.events === "sse") return
    yield* marathon.unsubscribe(eventsCallbackUrl(settings)).pipe(
      Effect.tap(() => Effect.logInfo("event callback unsubscribed")),
      Effect.catchAll((error) => Effect.logWarning("event callback not unsubscribed").pipe(Effect.annotateLogs({ error: error.message })))
    )
  })
