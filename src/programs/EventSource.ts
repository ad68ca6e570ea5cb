import { Duration, Effect, Either, Stream } from "effect"
import type { MarathonError } from "../domain/Errors.js"
import { callbackUrl } from "../domain/Naming.js"
import { Marathon, streamOpened } from "../services/Marathon.js"
import type { MarathonStreamEvent } from "../services/Marathon.js"
import { decodeEvent } from "./Events.js"
import type { EventHandler } from "./Events.js"

/**
 * Where Marathon's events come from. `callback`: Marathon POSTs them to /events (the original's way, removed in
 * Marathon 1.5). `sse`: consular reads `GET /v2/events`, reconnecting forever, with a full sync after every
 * (re)connect to repair what was missed. `auto`: callbacks when Marathon accepts them, the stream otherwise.
 */
export type EventSourceMode = "auto" | "callback" | "sse"
export type EventSourceKind = "callback" | "sse"

export interface EventSourceSettings {
  readonly events: EventSourceMode
  readonly scheme: "http" | "https"
  readonly host: string
  readonly port: number
  readonly registrationId: string
  /** appended to the callback URL as `&secret=`; absent: the URL is exactly the original's */
  readonly eventsSecret?: string | undefined
  /** capped exponential backoff, jittered, of every retry-forever loop */
  readonly reconnectBase?: Duration.DurationInput | undefined
  readonly reconnectCap?: Duration.DurationInput | undefined
}

export interface EventSourceHooks {
  readonly connected: (source: EventSourceKind) => Effect.Effect<void>
  readonly disconnected: (source: EventSourceKind, reason: string) => Effect.Effect<void>
  /** a full pass, run after every (re)connect of the stream (never overlapping another pass) */
  readonly resync: Effect.Effect<void>
  /** every event taken from the stream goes through the same handler as callbacks */
  readonly handler: EventHandler
}

/** The nth delay of a capped exponential backoff with full jitter. */
export const backoffDelay = (settings: Pick<EventSourceSettings, "reconnectBase" | "reconnectCap">, attempt: number): Duration.Duration => {
  const base = Duration.toMillis(settings.reconnectBase ?? "1 second")
  const cap = Duration.toMillis(settings.reconnectCap ?? "30 seconds")
  const ceiling = Math.min(cap, base * 2 ** Math.min(attempt, 30))
  return Duration.millis(ceiling / 2 + Math.random() * ceiling / 2)
}

/** Retries `effect` forever with the backoff, logging each failure; for loops that must outlive any outage. */
const retryForever = <A>(
  settings: EventSourceSettings,
  what: string,
  effect: Effect.Effect<A, MarathonError | { readonly _tag: "NotFound"; readonly message: string }, Marathon>
) =>
  Effect.gen(function*() {
    for (let attempt = 0; ; attempt++) {
      const result = yield* Effect.either(effect)
      if (Either.isRight(result)) return result.right
      yield* Effect.logWarning(`${what} failed; retrying`).pipe(Effect.annotateLogs({ error: result.left.message }))
      yield* Effect.sleep(backoffDelay(settings, attempt))
    }
  })

export const eventsCallbackUrl = (settings: EventSourceSettings): string =>
  callbackUrl({
    scheme: settings.scheme,
    host: settings.host,
    port: settings.port,
    registrationId: settings.registrationId,
    secret: settings.eventsSecret
  })

/** Subscribes the callback URL, only when Marathon does not list it yet (a second URL means duplicate events). */
export const subscribe = (settings: EventSourceSettings) =>
  Effect.gen(function*() {
    const marathon = yield* Marathon
    const url = eventsCallbackUrl(settings)
    const existing = yield* marathon.eventSubscriptions
    if (existing.includes(url)) {
      yield* Effect.logInfo("event callback already subscribed").pipe(Effect.annotateLogs({ callback: redactSecret(url) }))
      return
    }
    yield* marathon.subscribe(url)
    yield* Effect.logInfo("event callback subscribed").pipe(Effect.annotateLogs({ callback: redactSecret(url) }))
  })

const redactSecret = (url: string): string => url.replace(/([?&]secret=)[^&]*/, "$1redacted")

/** Subscribes, retrying forever with backoff until Marathon takes it. */
export const subscribeForever = (settings: EventSourceSettings) => retryForever(settings, "event subscription", subscribe(settings))

/** `auto`: Marathon >= 1.5 answers 404 on subscriptions, one started without http_callback answers 400. */
const detect = Effect.gen(function*() {
  const marathon = yield* Marathon
  return yield* marathon.eventSubscriptions.pipe(
    Effect.as<EventSourceKind>("callback"),
    Effect.catchTag("NotFound", () => Effect.succeed<EventSourceKind>("sse")),
    Effect.catchIf(
      (error): error is MarathonError => error._tag === "MarathonError" && error.status === 400,
      () => Effect.succeed<EventSourceKind>("sse")
    )
  )
})

const handleStreamEvent = (hooks: EventSourceHooks, onFirst: Effect.Effect<void>) => (frame: MarathonStreamEvent) =>
  Effect.gen(function*() {
    yield* onFirst
    if (frame.type === streamOpened.type || frame.type === "event_stream_attached" || frame.type === "event_stream_detached") return
    const decoded = decodeEvent(frame.data)
    if (Either.isLeft(decoded)) {
      yield* Effect.logWarning("event from the stream refused").pipe(Effect.annotateLogs({ type: frame.type, error: decoded.left.message }))
      return
    }
    yield* hooks.handler.handle(decoded.right).pipe(
      Effect.catchAll((error) =>
        // the next sync repairs what an upstream failure left undone
        Effect.logError("event from the stream not applied").pipe(Effect.annotateLogs({ error: error.message }))
      )
    )
  })

/** What the stream is asked for: task states, and Marathon's health verdicts (`--health-checks ttl` relays them). */
export const streamedEventTypes = ["status_update_event", "health_status_changed_event", "instance_health_changed_event"] as const

/** Reads the stream until it ends or breaks; reconnects forever; follows the leader in between. */
const streamForever = (settings: EventSourceSettings, hooks: EventSourceHooks) =>
  Effect.gen(function*() {
    const marathon = yield* Marathon
    for (let failures = 0; ;) {
      let opened = false
      let live = true
      // the first frame is the marker that Marathon answered: from then on the stream is live
      const onFirst = Effect.suspend(() => {
        if (opened) return Effect.void
        opened = true
        return Effect.gen(function*() {
          yield* Effect.logInfo("event stream connected").pipe(Effect.annotateLogs({ marathon: yield* marathon.current }))
          // missed events are repaired by a full pass, while events keep flowing; the source counts as connected
          // (for /ready) once that pass has run
          yield* Effect.forkDaemon(hooks.resync.pipe(Effect.ensuring(Effect.suspend(() => live ? hooks.connected("sse") : Effect.void))))
        })
      })
      const outcome = yield* marathon.eventStream(streamedEventTypes).pipe(
        // per-task order holds: the handler serializes each task's events in the order they start
        Stream.mapEffect(handleStreamEvent(hooks, onFirst), { concurrency: 16 }),
        Stream.runDrain,
        Effect.either
      )
      live = false
      const reason = Either.isLeft(outcome) ? outcome.left.message : "the stream ended"
      yield* hooks.disconnected("sse", reason)
      yield* Effect.logWarning("event stream lost; reconnecting").pipe(Effect.annotateLogs({ reason }))
      failures = opened ? 0 : failures + 1
      yield* marathon.followLeader.pipe(
        Effect.catchAll((error) => Effect.logDebug("leader lookup failed").pipe(Effect.annotateLogs({ error: error.message })))
      )
      yield* Effect.sleep(backoffDelay(settings, failures))
    }
  })

export const runEventSource = (settings: EventSourceSettings, hooks: EventSourceHooks): Effect.Effect<void, never, Marathon> =>
  Effect.gen(function*() {
    const kind = settings.events === "auto" ? yield* retryForever(settings, "event source detection", detect) : settings.events
    yield* Effect.logInfo("event source").pipe(Effect.annotateLogs({ source: kind, mode: settings.events }))
    if (kind === "callback") {
      yield* subscribeForever(settings)
      yield* hooks.connected("callback")
      return
    }
    yield* streamForever(settings, hooks)
  }).pipe(Effect.annotateLogs("job", "events"))
