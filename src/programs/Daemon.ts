import { HttpRouter, HttpServer, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { timingSafeEqual } from "node:crypto"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import { Duration, Effect, Layer, Schedule } from "effect"
import { createServer } from "node:http"
import { eventRoutes, makeEventHandler } from "./Events.js"
import type { EventHandler } from "./Events.js"
import type { EventSettings } from "./Events.js"
import { syncOnce } from "./Sync.js"
import type { SyncSettings } from "./Sync.js"
import { runEventSource } from "./EventSource.js"
import { repushLoop } from "./HealthRelay.js"
import { Metrics, MetricsLive } from "../services/Metrics.js"
import { observeEvent, observeSync, operationsApp, Readiness, ReadinessLive } from "./Operations.js"
import type { EventSourceHooks, EventSourceSettings } from "./EventSource.js"

/**
 * `consular run`: the event receiver, the Marathon subscription and the periodic sync, side by side, so that a
 * defect in any of them ends the process (exit 1) instead of leaving a daemon that serves but no longer syncs.
 */

export interface DaemonSettings extends EventSettings, SyncSettings, EventSourceSettings {
  /** seconds between sync passes; 0: events only */
  readonly syncInterval: number
}

/** One pass, measured, whose failure is logged, not raised: the loops that run it must go on. */
const loggedPass = (settings: DaemonSettings) =>
  syncOnce(settings).pipe(
    observeSync,
    Effect.asVoid,
    Effect.catchAll((error) => Effect.logError("sync failed").pipe(Effect.annotateLogs({ error: error.message }))),
    Effect.annotateLogs("job", "sync")
  )

/** Runs `pass` now and every `syncInterval` seconds; a failed pass is logged and the next still runs. */
export const periodicSync = (settings: DaemonSettings, pass: Effect.Effect<void, never, SyncRequirements> = loggedPass(settings)) =>
  pass.pipe(Effect.repeat(Schedule.fixed(Duration.seconds(settings.syncInterval))), Effect.asVoid)

type SyncRequirements = Effect.Effect.Context<ReturnType<typeof syncOnce>> | Metrics | Readiness

const notFound = HttpServerResponse.unsafeJson({ error: "not found" }, { status: 404 })
const unauthorized = HttpServerResponse.unsafeJson({ error: "unauthorized", detail: "missing or wrong secret" }, { status: 401 })

const sameSecret = (given: string, expected: string): boolean => {
  const a = Buffer.from(given)
  const b = Buffer.from(expected)
  return a.length === b.length && timingSafeEqual(a, b)
}

/** With --events-secret-file, POST /events must carry `secret=<s>` (Marathon sends the callback URL as given). */
const requireSecret = (secret: string | undefined) => <E, R>(app: Effect.Effect<HttpServerResponse.HttpServerResponse, E, R>) =>
  secret === undefined ? app : Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const url = new URL(request.url, "http://consular.invalid")
    if (url.pathname === "/events" && !sameSecret(url.searchParams.get("secret") ?? "", secret)) {
      yield* Effect.logWarning("event refused: missing or wrong secret")
      return unauthorized
    }
    return yield* app
  })

/** The daemon's HTTP app: events, `GET /`, /health, /ready, /metrics, JSON 404s for the rest. */
export const appFor = (settings: DaemonSettings, handler: EventHandler, operations: HttpRouter.HttpRouter) =>
  eventRoutes(handler, settings).pipe(
    HttpRouter.concat(operations),
    HttpRouter.all("*", Effect.succeed(notFound)),
    requireSecret(settings.eventsSecret)
  )

/** Every event, from callbacks or the stream, counted and timed. */
const measuredHandler = (handler: EventHandler) =>
  Effect.map(Effect.context<Metrics>(), (context): EventHandler => ({
    ...handler,
    handle: (decoded) => observeEvent(decoded, handler.handle(decoded)).pipe(Effect.provide(context))
  }))

/** Whether /ready waits for a first sync: only when some pass is going to run. */
const readinessSettings = (settings: DaemonSettings) => ({ requireSync: settings.syncInterval > 0 || settings.events === "sse" })

/** The app as the daemon serves it, with its own metrics and readiness: for tests. */
export const daemonApp = (settings: DaemonSettings) =>
  Effect.gen(function*() {
    const handler = yield* measuredHandler(yield* makeEventHandler(settings))
    return appFor(settings, handler, yield* operationsApp)
  }).pipe(Effect.provide(Layer.merge(MetricsLive, ReadinessLive(readinessSettings(settings)))))

/** The metrics and readiness of one daemon. */
export const daemonObservability = (settings: DaemonSettings) => Layer.merge(MetricsLive, ReadinessLive(readinessSettings(settings)))

/** Requests Node cannot even parse (a bad request line, a bad Content-Length) still get a JSON answer. */
export const nodeServer = () => {
  const server = createServer()
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

export const serveLayer = (settings: Pick<DaemonSettings, "host" | "port">) =>
  NodeHttpServer.layer(nodeServer, { host: settings.host, port: settings.port })

export const runDaemon = (settings: DaemonSettings) =>
  Effect.gen(function*() {
    const handler = yield* measuredHandler(yield* makeEventHandler(settings))
    const app = appFor(settings, handler, yield* operationsApp)
    const metrics = yield* Metrics
    const readiness = yield* Readiness
    const server = HttpServer.serve(app).pipe(
      HttpServer.withLogAddress,
      Layer.provide(serveLayer(settings)),
      Layer.launch
    )
    // passes never overlap, whether the schedule or a stream reconnect asks for one
    const passes = yield* Effect.makeSemaphore(1)
    const pass = passes.withPermits(1)(loggedPass(settings))
    const context = yield* Effect.context<SyncRequirements>()
    const hooks: EventSourceHooks = {
      handler,
      resync: Effect.provide(pass, context),
      connected: (source) =>
        Effect.all([
          Effect.logInfo("event source connected").pipe(Effect.annotateLogs({ source })),
          readiness.eventSourceConnected(true),
          metrics.eventSourceConnected(source, true)
        ], { discard: true }),
      disconnected: (source) =>
        Effect.all([
          readiness.eventSourceConnected(false),
          metrics.eventSourceConnected(source, false),
          metrics.eventSourceReconnected(source)
        ], { discard: true })
    }
    yield* Effect.all([
      server,
      runEventSource(settings, hooks),
      settings.syncInterval > 0 ? periodicSync(settings, pass) : Effect.void,
      // the checks' own timer, whatever --sync-interval is: a check lapses only when consular is gone
      settings.health !== undefined ? repushLoop(settings.health) : Effect.void
    ], { concurrency: "unbounded", discard: true })
  })
