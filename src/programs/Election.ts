import { HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { Clock, Deferred, Duration, Effect, Either, Fiber, Ref } from "effect"
import type { ConsulError } from "../domain/Errors.js"
import { Leadership } from "../services/Leadership.js"
import type { LockState } from "../services/Leadership.js"
import { Metrics } from "../services/Metrics.js"
import { retryForever } from "./EventSource.js"
import { jsonAnswer } from "./JsonAnswer.js"
import { routedPath } from "./RoutedPath.js"
import { Readiness } from "./Operations.js"

/**
 * `--leader-election`: instances sharing a registration id elect one leader through a Consul session lock.
 * Each instance holds a session (TTL, renewed at TTL/2, LockDelay 1 s, Behavior release) and tries to lock the
 * leader key with it; the one that holds the lock runs the leader's work (sync, purge, subscription, events),
 * the others watch the key with blocking queries and take over when it is free.
 *
 * A leader stops writing before Consul can have given the lock to another: its lease ends TTL - TTL/5 after the
 * last renewal it sent that Consul confirmed (Consul never invalidates a session before its TTL), and every event
 * is checked against the lease, every pass against the key itself (a process paused past its lease must not
 * write as a stale leader).
 */

/** The flags: `--leader-key`, `--session-ttl`, and the version the leader writes in the key. */
export interface LeaderElectionOptions {
  /** the KV key whose lock elects the leader (never under consular/) */
  readonly key: string
  readonly sessionTtl: Duration.Duration
  /** Consul keeps a key from being locked again this long after its session was invalidated (default 1 s) */
  readonly lockDelay?: Duration.Duration | undefined
  readonly version: string
}

export interface ElectionSettings extends LeaderElectionOptions {
  /** what the leader writes in the key with the version: its callback host and port */
  readonly host: string
  readonly port: number
  readonly registrationId: string
}

/** The leader key's value: who leads, where its callback is. */
export interface LeaderValue {
  readonly host: string
  readonly port: number
  readonly version: string
}

const leaderAtOf = (value: string | undefined): string | null => {
  if (value === undefined) return null
  try {
    const parsed: unknown = JSON.parse(value)
    if (typeof parsed === "object" && parsed !== null && "host" in parsed && "port" in parsed) {
      return `${String(parsed.host)}:${String(parsed.port)}`
    }
  } catch {
    // another program's value: no address to name
  }
  return null
}

export interface Election {
  /** leading now: elected, and within the lease (no I/O: checked for every event) */
  readonly leading: Effect.Effect<boolean>
  /** "host:port" of the leader as last seen; null while none is known */
  readonly leaderAt: Effect.Effect<string | null>
  /**
   * Before a pass: leading, and the key still held by this instance's session (one read). When it is not, the
   * instance steps down and the answer is false.
   */
  readonly confirm: Effect.Effect<boolean>
  /**
   * Campaigns forever; runs `work` while leading and interrupts it on stepping down, then runs `stepDown` (which
   * must stop every write: unsubscribe the callback). Interrupted (SIGTERM): stops the work, releases the lock and
   * destroys the session, so that another instance leads within about a second.
   */
  readonly run: <R>(work: Effect.Effect<void, never, R>, stepDown: Effect.Effect<void>) => Effect.Effect<never, never, R>
}

interface Lease {
  readonly session: string
  /** the lock is ours, as far as this instance knows */
  readonly leading: boolean
  /** Clock millis after which this instance must not write: TTL - margin past the last confirmed renewal's send */
  readonly until: number
}

/** How long to wait on the key per blocking query (Consul's default is 5 minutes; shorter keeps connections fresh). */
const watchWait = Duration.seconds(30)

export const makeElection = (settings: ElectionSettings) =>
  Effect.gen(function*() {
    const leadership = yield* Leadership
    const metrics = yield* Metrics
    const readiness = yield* Readiness
    const ttlMillis = Duration.toMillis(settings.sessionTtl)
    const lockDelay = settings.lockDelay ?? Duration.seconds(1)
    // a leader whose renewals fail stops writing this long before the TTL runs out
    const marginMillis = ttlMillis / 5
    const self = `${settings.host}:${settings.port}`
    const value = JSON.stringify({ host: settings.host, port: settings.port, version: settings.version } satisfies LeaderValue)

    const lease = yield* Ref.make<Lease | undefined>(undefined)
    const leaderAt = yield* Ref.make<string | null>(null)
    /** completed when the current attempt's session or lock is lost: the attempt ends */
    const lost = yield* Ref.make<Deferred.Deferred<string> | undefined>(undefined)

    const publishRole = Effect.gen(function*() {
      const current = yield* Ref.get(lease)
      const at = yield* Ref.get(leaderAt)
      yield* readiness.role({ leader: current?.leading === true, leaderAt: current?.leading === true ? self : at, standingBy: current !== undefined })
    })

    const leading = Effect.gen(function*() {
      const current = yield* Ref.get(lease)
      return current !== undefined && current.leading && (yield* Clock.currentTimeMillis) < current.until
    })

    const loseWith = (reason: string) =>
      Effect.flatMap(Ref.get(lost), (signal) => signal === undefined ? Effect.void : Effect.asVoid(Deferred.succeed(signal, reason)))

    const confirm = Effect.gen(function*() {
      const current = yield* Ref.get(lease)
      if (current === undefined || !(yield* leading)) return false
      const state = yield* Effect.either(leadership.readLock(settings.key))
      if (Either.isRight(state) && state.right.session === current.session) return true
      const reason = Either.isLeft(state) ? `cannot read the lock: ${state.left.message}` : "the lock is held by another session"
      yield* Effect.logWarning("leadership not confirmed; stepping down").pipe(Effect.annotateLogs({ reason }))
      yield* loseWith(reason)
      return false
    })

    /** Renews at TTL/2; a renewal that fails is retried until the lease's end, then the session counts as lost. */
    const renewLoop = (session: string, signal: Deferred.Deferred<string>, createdAt: number) =>
      Effect.gen(function*() {
        let confirmedAt = createdAt
        for (let failures = 0; ;) {
          const now = yield* Clock.currentTimeMillis
          const deadline = confirmedAt + ttlMillis - marginMillis
          const next = failures === 0 ? confirmedAt + ttlMillis / 2 : now + Math.min(1_000, 250 * 2 ** failures)
          yield* Effect.sleep(Duration.millis(Math.max(0, Math.min(next, deadline) - now)))
          const sentAt = yield* Clock.currentTimeMillis
          if (sentAt >= deadline) return yield* Deferred.succeed(signal, "the session could not be renewed in time")
          const renewed = yield* leadership.renewSession(session).pipe(
            Effect.timeoutFail({ duration: Duration.millis(deadline - sentAt), onTimeout: () => "no answer before the lease ended" as const }),
            Effect.either
          )
          if (Either.isRight(renewed)) {
            confirmedAt = sentAt
            failures = 0
            yield* Ref.update(lease, (current) => current === undefined ? current : { ...current, until: sentAt + ttlMillis - marginMillis })
            continue
          }
          const error = renewed.left
          if (typeof error === "object" && error._tag === "NotFound") return yield* Deferred.succeed(signal, "the session ended")
          failures++
          yield* Effect.logWarning("session renewal failed; retrying").pipe(
            Effect.annotateLogs({ error: typeof error === "string" ? error : error.message })
          )
        }
      })

    /** Follows the key until it is free (or held by `session`); keeps leaderAt up to date on the way. */
    const waitForFreeLock = (session: string): Effect.Effect<void, ConsulError> =>
      Effect.gen(function*() {
        let state: LockState = yield* leadership.readLock(settings.key)
        for (;;) {
          yield* Ref.set(leaderAt, state.session === undefined ? null : leaderAtOf(state.value))
          yield* publishRole
          if (state.session === undefined || state.session === session) return
          state = yield* leadership.readLock(settings.key, { index: state.index, wait: watchWait })
        }
      })

    /**
     * While leading: returns as soon as the key is no longer held by `session` (released, deleted, taken). A
     * Consul that cannot be read is no reason to step down: the renewals and the lease decide that.
     */
    const watchOwnLock = (session: string) =>
      Effect.gen(function*() {
        for (let index: number | undefined; ;) {
          const state = yield* Effect.either(leadership.readLock(settings.key, index === undefined ? undefined : { index, wait: watchWait }))
          if (Either.isLeft(state)) {
            index = undefined
            yield* Effect.sleep(Duration.seconds(1))
            continue
          }
          if (state.right.session !== session) return "the lock is no longer held by this instance's session"
          index = state.right.index
        }
      })

    const lead = <R>(session: string, work: Effect.Effect<void, never, R>, stepDown: Effect.Effect<void>) =>
      Effect.gen(function*() {
        yield* Ref.update(lease, (current) => current === undefined ? current : { ...current, leading: true })
        yield* Ref.set(leaderAt, self)
        yield* Effect.all([metrics.leader(true), metrics.leaderChanged, publishRole], { discard: true })
        yield* Effect.logInfo("leading").pipe(Effect.annotateLogs({ key: settings.key }))
        // work that ends (a callback subscribed, one pass run) leaves the instance leading all the same; joined, a
        // defect in it still ends the process; whatever ends the leading, the work has stopped before anything else
        const working = yield* Effect.fork(Effect.zipRight(work, Effect.never))
        const reason = yield* Effect.raceFirst(Fiber.join(working), watchOwnLock(session)).pipe(Effect.ensuring(Fiber.interrupt(working)))
        yield* Effect.logWarning("stepping down").pipe(Effect.annotateLogs({ reason }))
      }).pipe(
        // the work has stopped by now: refuse events, then give the lock back while Marathon is told to stop
        // calling (the next leader need not wait for that)
        Effect.ensuring(Effect.gen(function*() {
          yield* Ref.update(lease, (current) => current === undefined ? current : { ...current, leading: false })
          yield* Effect.all([
            stepDown.pipe(Effect.timeout(Duration.seconds(5)), Effect.ignore),
            leadership.release(settings.key, session, value).pipe(
              Effect.timeout(Duration.seconds(2)),
              Effect.catchAll((error) => Effect.logDebug("lock not released").pipe(Effect.annotateLogs({ error: String(error) })))
            )
          ], { concurrency: "unbounded", discard: true })
          yield* Effect.all([metrics.leader(false), metrics.leaderChanged, publishRole], { discard: true })
        }))
      )

    /** One session: campaign with it, lead while holding the lock, until the session is lost. */
    const attempt = <R>(work: Effect.Effect<void, never, R>, stepDown: Effect.Effect<void>) =>
      Effect.scoped(Effect.gen(function*() {
        const createdAt = yield* Clock.currentTimeMillis
        const session = yield* leadership.createSession({ name: `consular ${settings.registrationId}`, ttl: settings.sessionTtl, lockDelay })
        yield* Effect.addFinalizer(() =>
          Effect.all([
            Ref.set(lease, undefined),
            leadership.destroySession(session).pipe(Effect.timeout(Duration.seconds(2)), Effect.ignore),
            publishRole
          ], { discard: true })
        )
        yield* Ref.set(lease, { session, leading: false, until: createdAt + ttlMillis - marginMillis })
        yield* publishRole
        const signal = yield* Deferred.make<string>()
        yield* Ref.set(lost, signal)
        yield* Effect.forkScoped(renewLoop(session, signal, createdAt))
        const campaign = Effect.gen(function*() {
          for (;;) {
            const acquired = yield* leadership.acquire(settings.key, session, value)
            if (acquired) {
              yield* lead(session, work, stepDown)
              continue
            }
            const state = yield* leadership.readLock(settings.key)
            // free but refused: the lock delay of a session that just ended
            if (state.session === undefined) yield* Effect.sleep(lockDelay)
            else yield* waitForFreeLock(session)
          }
        })
        // the campaign (and a leader's work, step-down and release) has ended before the session is destroyed:
        // destroyed first, the session would put its key under the lock delay
        const campaigning = yield* Effect.fork(campaign)
        const reason = yield* Effect.raceFirst(Fiber.join(campaigning), Deferred.await(signal)).pipe(Effect.ensuring(Fiber.interrupt(campaigning)))
        yield* Effect.logWarning("leadership session lost").pipe(Effect.annotateLogs({ reason }))
      }))

    const run = <R>(work: Effect.Effect<void, never, R>, stepDown: Effect.Effect<void>): Effect.Effect<never, never, R> =>
      Effect.gen(function*() {
        yield* metrics.leader(false)
        // an attempt ends when its session is lost: campaign again at once; a failed one again after the backoff
        return yield* Effect.forever(retryForever({ reconnectBase: "1 second", reconnectCap: "10 seconds" }, "leader election", attempt(work, stepDown)))
      }).pipe(Effect.annotateLogs("job", "election"))

    return { leading, leaderAt: Ref.get(leaderAt), confirm, run } satisfies Election
  })

/** The routes only the leader serves, with what a follower says about each. */
const leaderRoutes: ReadonlyArray<{ readonly method: string; readonly path: string; readonly detail: string }> = [
  { method: "POST", path: "/events", detail: "this instance stands by; the leader applies Marathon's events" },
  { method: "POST", path: "/sync", detail: "this instance stands by; only the leader syncs: ask the leader" },
  { method: "GET", path: "/diff", detail: "this instance stands by; only the leader plans passes: ask the leader" }
]

/**
 * `POST /events`, `POST /sync` and `GET /diff` on an instance that does not lead: 503 naming the leader, nothing
 * read or written (Marathon may still call a follower whose subscription a killed leader left behind). Other
 * routes pass.
 */
export const refuseEventsUnlessLeading = (election: Pick<Election, "leading" | "leaderAt"> | undefined) =>
  <E, R>(app: Effect.Effect<HttpServerResponse.HttpServerResponse, E, R>) =>
    election === undefined ? app : Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) =>
      Effect.flatMap(followerRefusal(election, request.method, request.url), (refusal) => refusal ?? app))

/** What a follower answers to `method url` (the daemon's listener asks too), or undefined when the request may pass. */
export const followerRefusal = (
  election: Pick<Election, "leading" | "leaderAt">,
  method: string,
  url: string
): Effect.Effect<HttpServerResponse.HttpServerResponse | undefined> => {
  const path = routedPath(url)
  const route = leaderRoutes.find((candidate) => candidate.method === method && candidate.path === path)
  if (route === undefined) return Effect.succeed(undefined)
  return Effect.flatMap(election.leading, (leading) =>
    leading ? Effect.succeed(undefined) : Effect.map(election.leaderAt, (leader) => notTheLeader(leader, route.detail)))
}

/** 503 naming the leader ("host:port", null while none is known). */
export const notTheLeader = (leader: string | null, detail: string): HttpServerResponse.HttpServerResponse =>
  jsonAnswer({ error: "not the leader", detail, leader }, 503, { "retry-after": "1" })
