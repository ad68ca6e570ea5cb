import { HttpRouter, HttpServer, HttpServerResponse } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { Duration, Effect, Layer, Schedule } from "effect"
import { createServer } from "node:http"
import { callbackUrl } from "../domain/Naming.js"
import { Marathon } from "../services/Marathon.js"
import { eventRoutes, makeEventHandler } from "./Events.js"
import type { EventSettings } from "./Events.js"
import { syncOnce } from "./Sync.js"
import type { SyncSettings } from "./Sync.js"

/**
 * `consular run`: the event receiver, the Marathon subscription and the periodic sync, side by side, so that a
 * defect in any of them ends the process (exit 1) instead of leaving a daemon that serves but no longer syncs.
 */

export interface DaemonSettings extends EventSettings, SyncSettings {
  readonly scheme: "http" | "https"
  readonly host: string
  readonly port: number
  /** seconds between sync passes; 0: events only */
  readonly syncInterval: number
  /** capped exponential backoff of the subscription and other retries-forever loops */
  readonly reconnectBase?: Duration.DurationInput | undefined
  readonly reconnectCap?: Duration.DurationInput | undefined
}

/** Retry forever, capped exponential with jitter: for loops that must outlive any outage. */
export const forever = (settings: Pick<DaemonSettings, "reconnectBase" | "reconnectCap">) => {
  const cap = Duration.toMillis(settings.reconnectCap ?? "30 seconds")
  return Schedule.exponential(settings.reconnectBase ?? "1 second", 2).pipe(
    Schedule.jittered,
    Schedule.modifyDelay((delay) => Duration.millis(Math.min(Duration.toMillis(delay), cap)))
  )
}

/** The callback URL exactly as the original built it; subscribed only when Marathon does not have it yet. */
export const subscribeCallback = (settings: DaemonSettings) =>
  Effect.gen(function*() {
    const marathon = yield* Marathon
    const url = callbackUrl({ scheme: settings.scheme, host: settings.host, port: settings.port, registrationId: settings.registrationId })
    const existing = yield* marathon.eventSubscriptions
    if (existing.includes(url)) {
      yield* Effect.logInfo("event callback already subscribed").pipe(Effect.annotateLogs({ callback: url }))
      return
    }
    yield* marathon.subscribe(url)
    yield* Effect.logInfo("event callback subscribed").pipe(Effect.annotateLogs({ callback: url }))
  }).pipe(
    Effect.tapError((error) =>
      Effect.logWarning("event subscription failed; retrying").pipe(Effect.annotateLogs({ error: error.message }))
    ),
    Effect.retry(forever(settings)),
    Effect.annotateLogs("job", "subscribe")
  )

/** Runs now and every `syncInterval` seconds; a failed pass is logged and the next still runs; never overlapping. */
export const periodicSync = (settings: DaemonSettings) =>
  syncOnce(settings).pipe(
    Effect.catchAll((error) => Effect.logError("sync failed").pipe(Effect.annotateLogs({ error: error.message }))),
    Effect.repeat(Schedule.fixed(Duration.seconds(settings.syncInterval))),
    Effect.asVoid,
    Effect.annotateLogs("job", "sync")
  )

const notFound = HttpServerResponse.unsafeJson({ error: "not found" }, { status: 404 })

export const daemonApp = (settings: DaemonSettings) =>
  Effect.map(makeEventHandler(settings), (handler) =>
    eventRoutes(handler, settings).pipe(HttpRouter.all("*", Effect.succeed(notFound))))

export const serveLayer = (settings: Pick<DaemonSettings, "host" | "port">) =>
  NodeHttpServer.layer(() => createServer(), { host: settings.host, port: settings.port })

export const runDaemon = (settings: DaemonSettings) =>
  Effect.gen(function*() {
    const app = yield* daemonApp(settings)
    const server = HttpServer.serve(app).pipe(
      HttpServer.withLogAddress,
      Layer.provide(serveLayer(settings)),
      Layer.launch
    )
    yield* Effect.all([
      server,
      subscribeCallback(settings),
      settings.syncInterval > 0 ? periodicSync(settings) : Effect.void
    ], { concurrency: "unbounded", discard: true })
  })
