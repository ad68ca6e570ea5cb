import { Effect, Either, Schedule, Stream } from "effect"
import type { Duration } from "effect"
import type { MarathonError, NotFound } from "../domain/Errors.js"
import { callbackUrl } from "../domain/Naming.js"
import { retrySchedule } from "../services/Http.js"
import { Marathon, streamOpened } from "../services/Marathon.js"
import type { MarathonStreamEvent } from "../services/Marathon.js"
import { decodeEvent } from "./Events.js"
import type { EventHandler } from "./Events.js"

/**
 * Where Marathon's events come from. `callback`: Marathon POSTs them to /events (the original's way, removed in
 * Marathon 1.5). `sse`: consular reads `GET /v2/events`, reconnecting forever, with a full sync after every
 * (re)connect to repair what was missed. `auto`: callbacks when Marathon lists its subscriptions, the stream
 * otherwise.
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
  /** first delay and cap of the retry policy (Http.retrySchedule) for loops that retry forever */
  readonly reconnectBase?: Duration.DurationInput | undefined
  readonly reconnectCap?: Duration.DurationInput | undefined
}

export interface EventSourceHooks {
  readonly connected: (source: EventSourceKind) => Effect.Effect<void>
  readonly disconnected: (source: EventSourceKind, reason: string) => Effect.Effect<void>
  /**
   * Asks for a full pass and waits for the pass that covers the request: requests are merged, at most one waits
   * behind the pass that runs, and the passes run in the daemon's own fiber (see `makePassQueue` in Control.ts).
   */
  readonly resync: Effect.Effect<void>
  /** every event taken from the stream goes through the same handler as callbacks */
  readonly handler: EventHandler
}

/**
 * The project's one retry policy (Http.retrySchedule: exponential, jittered, capped), with the slower base and
 * cap of loops that must outlive any outage: subscribing, detecting the source, reconnecting the stream.
 */
export const foreverSchedule = (settings: Pick<EventSourceSettings, "reconnectBase" | "reconnectCap">) =>
  retrySchedule({ retryBase: settings.reconnectBase ?? "1 second", retryCap: settings.reconnectCap ?? "30 seconds" })

/** Retries `effect` forever on the policy, logging each failure. */
export const retryForever = <A, E extends { readonly message: string }, R>(
  settings: Pick<EventSourceSettings, "reconnectBase" | "reconnectCap">,
  what: string,
  effect: Effect.Effect<A, E, R>
): Effect.Effect<A, never, R> =>
  effect.pipe(
    Effect.tapError((error) => Effect.logWarning(`${what} failed; retrying`).pipe(Effect.annotateLogs({ error: error.message }))),
    Effect.retry(foreverSchedule(settings)),
    Effect.catchAll((error) => Effect.dieMessage(`${what}: a schedule without end ended (${error.message})`))
  )

export const eventsCallbackUrl = (settings: EventSourceSettings): string =>
  callbackUrl({
    scheme: settings.scheme,
    host: settings.host,
    port: settings.port,
    registrationId: settings.registrationId,
    secret: settings.eventsSecret
  })

/**
 * Subscribes the callback URL, only when Marathon does not list it yet (a second URL means duplicate events).
 * Answers whether it had to.
 */
export const subscribe = (settings: EventSourceSettings): Effect.Effect<"subscribed" | "already", MarathonError | NotFound, Marathon> =>
  Effect.gen(function*() {
    const marathon = yield* Marathon
    const url = eventsCallbackUrl(settings)
    const existing = yield* marathon.eventSubscriptions
    if (existing.includes(url)) return "already" as const
    yield* marathon.subscribe(url)
    yield* Effect.logInfo("event callback subscribed").pipe(Effect.annotateLogs({ callback: redactSecret(url) }))
    return "subscribed" as const
  })

const redactSecret = (url: string): string => url.replace(/([?&]secret=)[^&]*/, "$1redacted")

/** Subscribes, retrying forever on the policy until Marathon takes it. */
export const subscribeForever = (settings: EventSourceSettings) => retryForever(settings, "event subscription", subscribe(settings))

/**
 * `auto`: callbacks only when Marathon lists its subscriptions. Any answer with an error status means the
 * stream, which every Marathon since 0.9 serves: >= 1.5 has no such route (404 up to 1.6, a 500 `URI not
 * found` from 1.6.486), one started without http_callback answers 400. Only an unreachable Marathon is retried.
 */
const detect = Effect.gen(function*() {
  const marathon = yield* Marathon
  return yield* marathon.eventSubscriptions.pipe(
    Effect.as<EventSourceKind>("callback"),
    Effect.catchTag("NotFound", () => Effect.succeed<EventSourceKind>("sse")),
    Effect.catchIf(
      (error): error is MarathonError => error._tag === "MarathonError" && error.status !== undefined,
      (error) => Effect.as(Effect.logInfo("Marathon refuses callback subscriptions").pipe(Effect.annotateLogs({ answer: error.message })), "sse" as const)
    )
  )
})

/** The stream's own attach/detach notices: not events about tasks, not counted as such */
const streamBookkeeping: ReadonlySet<string> = new Set(["event_stream_attached", "event_stream_detached"])

const handleStreamEvent = (hooks: EventSourceHooks) => (frame: MarathonStreamEvent) =>
  Effect.gen(function*() {
    // the type is the data's: old Marathons write `data:` lines only, without an `event:` name
    const decoded = decodeEvent(frame.data)
    if (Either.isLeft(decoded)) {
      yield* Effect.logWarning("event from the stream refused").pipe(Effect.annotateLogs({ type: frame.type, error: decoded.left.message }))
      return
    }
    if (decoded.right._tag === "Other" && streamBookkeeping.has(decoded.right.eventType)) return
    yield* hooks.handler.handle(decoded.right).pipe(
      Effect.catchAll((error) =>
        // the next sync repairs what an upstream failure left undone
        Effect.logError("event from the stream not applied").pipe(Effect.annotateLogs({ error: error.message }))
      )
    )
  })

/** What the stream is asked for: task states, and Marathon's health verdicts (`--health-checks ttl` relays them). */
export const streamedEventTypes = ["status_update_event", "health_status_changed_event", "instance_health_changed_event"] as const

/** How one connection of the stream ended: it always does (Marathon closed it, or it broke). */
class StreamEnded {
  readonly _tag = "StreamEnded"
  constructor(readonly opened: boolean, readonly message: string) {}
}

/**
 * One connection: reads the stream until it ends or breaks, and always fails with how it ended. Once Marathon
 * has answered, a resync is asked for (missed events are repaired by a full pass while events keep flowing) and
 * the source counts as connected once that pass has run, unless the connection is gone by then.
 */
const connectOnce = (hooks: EventSourceHooks) =>
  Effect.gen(function*() {
    const marathon = yield* Marathon
    let opened = false
    const outcome = yield* marathon.eventStream(streamedEventTypes).pipe(
      Stream.tap((frame) =>
        frame !== streamOpened ? Effect.void : Effect.gen(function*() {
          opened = true
          yield* Effect.logInfo("event stream connected").pipe(Effect.annotateLogs({ marathon: yield* marathon.current }))
          yield* Effect.forkScoped(Effect.zipRight(hooks.resync, hooks.connected("sse")))
        })
      ),
      Stream.filter((frame) => frame !== streamOpened),
      // per-task order holds: the handler serializes each task's events in the order they start
      Stream.mapEffect(handleStreamEvent(hooks), { concurrency: 16 }),
      Stream.runDrain,
      Effect.either,
      Effect.scoped
    )
    return yield* Effect.fail(new StreamEnded(opened, Either.isLeft(outcome) ? outcome.left.message : "the stream ended"))
  })

/**
 * Reads the stream forever: after each end, reports it, follows the leader, and reconnects on the retry policy,
 * whose backoff starts over after a connection Marathon answered.
 */
const streamForever = (settings: EventSourceSettings, hooks: EventSourceHooks) =>
  Effect.gen(function*() {
    const marathon = yield* Marathon
    const afterEnd = (ended: StreamEnded) =>
      Effect.all([
        hooks.disconnected("sse", ended.message),
        Effect.logWarning("event stream lost; reconnecting").pipe(Effect.annotateLogs({ reason: ended.message })),
        marathon.followLeader.pipe(
          Effect.catchAll((error) => Effect.logDebug("leader lookup failed").pipe(Effect.annotateLogs({ error: error.message })))
        )
      ], { discard: true })
    const policy = Schedule.identity<StreamEnded>().pipe(
      Schedule.intersect(foreverSchedule(settings)),
      Schedule.resetWhen(([ended]) => ended.opened)
    )
    return yield* connectOnce(hooks).pipe(Effect.tapError(afterEnd), Effect.retry(policy), Effect.orDie)
  })

export const runEventSource = (settings: EventSourceSettings, hooks: EventSourceHooks): Effect.Effect<void, never, Marathon> =>
  Effect.gen(function*() {
    const kind = settings.events === "auto" ? yield* retryForever(settings, "event source detection", detect) : settings.events
    yield* Effect.logInfo("event source").pipe(Effect.annotateLogs({ source: kind, mode: settings.events }))
    if (kind === "callback") {
      const outcome = yield* subscribeForever(settings)
      if (outcome === "already") yield* Effect.logInfo("event callback already subscribed")
      yield* hooks.connected("callback")
      return
    }
    yield* streamForever(settings, hooks)
  }).pipe(Effect.annotateLogs("job", "events"))

/**
 * Every pass re-checks the callback subscription: Marathon may have lost it (a restart that dropped its
 * subscribers, an operator's DELETE), and without it no event arrives. Re-made when missing; the source is
 * down (/ready 503) while it cannot be checked or made.
 */
export const recheckSubscription = (settings: EventSourceSettings, hooks: EventSourceHooks, wasUp: boolean): Effect.Effect<boolean, never, Marathon> =>
  subscribe(settings).pipe(
    Effect.matchEffect({
      onSuccess: (outcome) =>
        Effect.gen(function*() {
          if (outcome === "subscribed") yield* Effect.logWarning("the event callback was gone from Marathon: subscribed again")
          if (outcome === "subscribed" || !wasUp) yield* hooks.connected("callback")
          return true
        }),
      onFailure: (error) =>
        Effect.gen(function*() {
          yield* Effect.logError("event callback subscription could not be checked").pipe(Effect.annotateLogs({ error: error.message }))
          if (wasUp) yield* hooks.disconnected("callback", error.message)
          return false
        })
    }),
    Effect.annotateLogs("job", "events")
  )
