import { HttpBody, HttpClientRequest, HttpClientResponse } from "@effect/platform"
import { Clock, Context, Duration, Effect, Either, Layer } from "effect"
import { goDurationText, LockEntries, SessionCreate, SessionCreated } from "../domain/ConsulApi.js"
import { ConsulError, NotFound } from "../domain/Errors.js"
import { kvPath } from "../domain/Naming.js"
import type { ConsulSettings } from "./Consul.js"
import type { ConsulOperation, ConsulStore, SessionRefusal } from "./ConsulStore.js"
import * as Http from "./Http.js"
import type { HttpFailure, UpstreamFailure } from "./Http.js"

/**
 * Consul's sessions and locks, as leader election uses them: a session with a TTL, renewed; a key locked with
 * `?acquire=<session>` and freed with `?release=<session>`; the key read, or watched with a blocking query.
 */

export interface SessionSpec {
  readonly name: string
  readonly ttl: Duration.Duration
  /** how long Consul keeps the key from being locked again after the session is invalidated */
  readonly lockDelay: Duration.Duration
}

/** The lock key as read: who holds it (a session id) and what the holder wrote there. */
export interface LockState {
  /** X-Consul-Index of the answer: give it back to `readLock` to block until the key changes */
  readonly index: number
  /** the session holding the key; undefined when none does (or there is no key) */
  readonly session: string | undefined
  /** the key's value, undefined when there is no key */
  readonly value: string | undefined
}

export interface BlockOn {
  /** the index of the last answer: the read returns when the key has moved past it… */
  readonly index: number
  /** …or after this long (Consul caps it at 10 minutes and adds up to 1/16 of jitter) */
  readonly wait: Duration.Duration
}

export class Leadership extends Context.Tag("consular/Leadership")<Leadership, {
  /** `PUT /v1/session/create`: sent once, never retried nor replayed (a second one would be another session) */
  readonly createSession: (spec: SessionSpec) => Effect.Effect<string, ConsulError>
  /** NotFound: the session has ended (expired, destroyed): whatever it held is no longer held */
  readonly renewSession: (session: string) => Effect.Effect<void, NotFound | ConsulError>
  readonly destroySession: (session: string) => Effect.Effect<void, ConsulError>
  /** true: the session holds the key now (and wrote `value`); false: another holds it, or its lock delay runs */
  readonly acquire: (key: string, session: string, value: string) => Effect.Effect<boolean, ConsulError>
  /** true: the session held the key and no longer does */
  readonly release: (key: string, session: string, value: string) => Effect.Effect<boolean, ConsulError>
  /** reads the key at once, or, given `block`, once it has changed (a blocking query) */
  readonly readLock: (key: string, block?: BlockOn) => Effect.Effect<LockState, ConsulError>
}>() {}

const consulError = (operation: string) => (failure: UpstreamFailure): ConsulError =>
  new ConsulError({
    operation,
    reason: failure.reason,
    detail: failure.detail,
    ...(failure.status === undefined ? {} : { status: failure.status })
  })

const notFoundIsError = (operation: string) => (error: NotFound | ConsulError): ConsulError =>
  error._tag === "NotFound" ? new ConsulError({ operation, reason: "Status", status: 404, detail: error.message }) : error

const decodeBase64 = (value: string | null): string => value === null ? "" : Buffer.from(value, "base64").toString("utf8")

const consulIndex = (response: HttpClientResponse.HttpClientResponse): number => {
  const index = Number(response.headers["x-consul-index"])
  return Number.isSafeInteger(index) && index > 0 ? index : 1
}

/** A blocking read may last `wait` plus Consul's jitter (wait/16) before the answer even starts. */
const blockingTimeout = (block: BlockOn, timeout: Duration.DurationInput): Duration.Duration =>
  Duration.sum(Duration.sum(block.wait, Duration.millis(Duration.toMillis(block.wait) / 16)), timeout)

const acceptsBoolean = (response: HttpClientResponse.HttpClientResponse) =>
  Effect.map(response.text, (text) => text.trim() === "true")

/** Over HTTP to the main Consul, with its own connection pool: a blocking read holds a connection for minutes. */
export const LeadershipLive = (settings: ConsulSettings): Layer.Layer<Leadership> =>
  Layer.scoped(Leadership, Effect.gen(function*() {
    const http = yield* Http.makeHttp({ ...settings, connections: 4 })
    const onMain = (path: string): string => new URL(path, settings.url).href

    // each answer's Schema compiled once, as every reader of Consul does (Http.schemaBody)
    const readSessionCreated = Http.schemaBody(SessionCreated)
    const readLockEntries = Http.schemaBody(LockEntries)

    const createSession = (spec: SessionSpec) =>
      HttpClientRequest.put(onMain("/v1/session/create")).pipe(
        HttpClientRequest.schemaBodyJson(SessionCreate)({
          Name: spec.name,
          TTL: goDurationText(Duration.toMillis(spec.ttl)),
          LockDelay: goDurationText(Duration.toMillis(spec.lockDelay)),
          Behavior: "release"
        }),
        Effect.mapError((error) => new ConsulError({ operation: "create session", reason: "Status", detail: `unencodable session: ${error.reason}` })),
        Effect.flatMap((request) =>
          http.send(request, readSessionCreated, { idempotent: false }).pipe(
            Effect.map((created) => created.ID),
            Effect.mapError(Http.mapFailure("session", consulError("create session"))),
            Effect.mapError(notFoundIsError("create session"))
          )
        )
      )

    const renewSession = (session: string) =>
      http.send(HttpClientRequest.put(onMain(`/v1/session/renew/${encodeURIComponent(session)}`)), Http.ignoreBody).pipe(
        Effect.mapError(Http.mapFailure(`session ${session}`, consulError("renew session")))
      )

    const destroySession = (session: string) =>
      http.send(HttpClientRequest.put(onMain(`/v1/session/destroy/${encodeURIComponent(session)}`)), Http.ignoreBody).pipe(
        Effect.mapError(Http.mapFailure(`session ${session}`, consulError("destroy session"))),
        Effect.mapError(notFoundIsError("destroy session"))
      )

    const lockRequest = (operation: "acquire" | "release", key: string, session: string, value: string) =>
      http.send(
        HttpClientRequest.put(onMain(kvPath(key))).pipe(
          HttpClientRequest.setUrlParam(operation, session),
          HttpClientRequest.setBody(HttpBody.text(value, "application/json"))
        ),
        acceptsBoolean
      ).pipe(
        Effect.mapError(Http.mapFailure(`kv ${key}`, consulError(`${operation} lock`))),
        Effect.mapError(notFoundIsError(`${operation} lock`))
      )

    const readLock = (key: string, block?: BlockOn): Effect.Effect<LockState, ConsulError> => {
      const request = HttpClientRequest.get(onMain(kvPath(key))).pipe(
        block === undefined
          ? (r) => r
          : HttpClientRequest.setUrlParams({ index: String(block.index), wait: goDurationText(Duration.toMillis(block.wait)) })
      )
      return http.send(
        request,
        (response) =>
          Effect.map(readLockEntries(response), (entries): LockState => ({
            index: consulIndex(response),
            session: entries[0]?.Session,
            value: entries[0] === undefined ? undefined : decodeBase64(entries[0].Value)
          })),
        block === undefined ? undefined : { timeout: blockingTimeout(block, settings.timeout) }
      ).pipe(
        // no key is a 404 that still carries the index to block on
        Effect.catchIf(
          (failure): failure is HttpFailure & { readonly _tag: "ResponseError" } =>
            failure._tag === "ResponseError" && failure.reason === "StatusCode" && failure.response.status === 404,
          (failure) => Effect.succeed<LockState>({ index: consulIndex(failure.response), session: undefined, value: undefined })
        ),
        Effect.mapError(Http.mapFailure(`kv ${key}`, consulError("read lock"))),
        Effect.mapError(notFoundIsError("read lock"))
      )
    }

    return Leadership.of({
      createSession,
      renewSession,
      destroySession,
      acquire: (key, session, value) => lockRequest("acquire", key, session, value),
      release: (key, session, value) => lockRequest("release", key, session, value),
      readLock
    })
  }))

// --- in memory -----------------------------------------------------------------------------------------

/**
 * The same operations on a `ConsulStore`, timed by Effect's Clock (so a TestClock drives TTLs and lock delays),
 * failing as the live layer does when the store's main agent is made to refuse, hang or answer a status.
 */
export const makeLeadershipMemory = (store: ConsulStore, settings: { readonly timeout?: Duration.DurationInput } = {}) => {
  const timeout = settings.timeout ?? "5 seconds"
  /** `run` answers the outcome, or Consul's refusal (status and text) */
  const request = <A>(operation: ConsulOperation, label: string, run: (now: number) => Either.Either<A, SessionRefusal>) =>
    Effect.gen(function*() {
      const admission = store.admit(store.main, operation)
      const now = yield* Clock.currentTimeMillis
      const fail = (reason: ConsulError["reason"], detail: string, status?: number) =>
        Effect.fail(new ConsulError({ operation: label, reason, detail, ...(status === undefined ? {} : { status }) }))
      switch (admission._tag) {
        case "Refuse":
          return yield* fail("Transport", `connect ECONNREFUSED ${store.main}`)
        case "Hang":
          return yield* Effect.never
        case "Status":
          return yield* fail(admission.status === 403 ? "Forbidden" : "Status", `answered ${admission.status}`, admission.status)
        case "Ok":
          break
      }
      const outcome = run(now)
      if (Either.isLeft(outcome)) return yield* fail("Status", `answered ${outcome.left.status}: ${outcome.left.body}`, outcome.left.status)
      return outcome.right
    }).pipe(
      Effect.timeoutFail({ duration: timeout, onTimeout: () => new ConsulError({ operation: label, reason: "Timeout", detail: "no answer in time" }) })
    )

  const answered = <A>(outcome: A | SessionRefusal): Either.Either<A, SessionRefusal> =>
    typeof outcome === "object" && outcome !== null && "status" in outcome && "body" in outcome ? Either.left(outcome) : Either.right(outcome)

  const lockState = (key: string): LockState => ({
    index: store.keyIndex(key),
    session: store.keyMeta.get(key)?.Session,
    value: store.kv.get(key)
  })

  /** Returns at the first change of the store, or after `millis`: the caller looks again. */
  const changeOrTimeout = (millis: number) =>
    Effect.async<void>((resume) => {
      const unsubscribe = store.onChange(() => {
        unsubscribe()
        resume(Effect.void)
      })
      return Effect.sync(unsubscribe)
    }).pipe(Effect.timeoutTo({ duration: Duration.millis(millis), onTimeout: () => undefined, onSuccess: () => undefined }))

  const readLock = (key: string, block?: BlockOn): Effect.Effect<LockState, ConsulError> =>
    Effect.gen(function*() {
      const first = yield* request("kv.get", "read lock", (now) => {
        store.expireSessions(now)
        return Either.right(lockState(key))
      })
      if (block === undefined || first.index > block.index) return first
      const deadline = (yield* Clock.currentTimeMillis) + Duration.toMillis(block.wait)
      for (;;) {
        const now = yield* Clock.currentTimeMillis
        store.expireSessions(now)
        const state = lockState(key)
        if (state.index > block.index || now >= deadline) return state
        // sessions end by the clock, not by a request: look again at least every 100 ms
        yield* changeOrTimeout(Math.min(100, deadline - now))
      }
    })

  return Leadership.of({
    createSession: (spec) =>
      request("session.create", "create session", (now) => {
        const created = store.createSession({
          Name: spec.name,
          TTL: goDurationText(Duration.toMillis(spec.ttl)),
          LockDelay: goDurationText(Duration.toMillis(spec.lockDelay)),
          Behavior: "release"
        }, now)
        return "id" in created ? Either.right(created.id) : Either.left(created)
      }),
    renewSession: (session) =>
      request("session.renew", "renew session", (now) => Either.right(store.renewSession(session, now) !== undefined)).pipe(
        Effect.flatMap((found) => found ? Effect.void : Effect.fail(new NotFound({ resource: `session ${session}` })))
      ),
    destroySession: (session) => request("session.destroy", "destroy session", (now) => Either.right(store.destroySession(session, now))),
    acquire: (key, session, value) => request("kv.acquire", "acquire lock", (now) => answered(store.acquire(key, session, value, now))),
    release: (key, session, value) => request("kv.release", "release lock", (now) => Either.right(store.release(key, session, value, now))),
    readLock
  })
}

export const LeadershipMemory = (store: ConsulStore): Layer.Layer<Leadership> => Layer.succeed(Leadership, makeLeadershipMemory(store))
