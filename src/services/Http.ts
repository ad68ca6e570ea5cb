import { HttpClientRequest } from "@effect/platform"
import type { HttpClientError, HttpClientResponse } from "@effect/platform"
import { Cause, Duration, Effect, ParseResult, Schedule } from "effect"
import type { Scope, Stream } from "effect"
import { NotFound } from "../domain/Errors.js"
import type { Reason } from "../domain/Errors.js"
import { makeTransport, statusFailure } from "./HttpTransport.js"
import type { TlsSettings } from "./HttpTransport.js"

export type { TlsSettings } from "./HttpTransport.js"

/**
 * The one outbound HTTP helper: every Consul and Marathon request goes through `HttpApi.send`, which sets the
 * headers, bounds each attempt by a timeout, retries only transient failures with capped, jittered exponential
 * backoff, and leaves through `mapFailure` (404 -> NotFound, the rest -> the service's own error).
 */

export interface HttpSettings {
  /** per attempt, connect to body read */
  readonly timeout: Duration.DurationInput
  /** transient failures are retried this many times after the first attempt */
  readonly retries: number
  /** first backoff delay; doubles per retry, jittered, capped at `retryCap` */
  readonly retryBase?: Duration.DurationInput | undefined
  readonly retryCap?: Duration.DurationInput | undefined
  /** sent with every request (ACL token, Authorization); never logged */
  readonly headers?: Readonly<Record<string, string>> | undefined
  readonly tls?: TlsSettings | undefined
  /** log each request and response at debug level (method, URL, status, time; never a header) */
  readonly debug?: boolean | undefined
  /** keep-alive connections per origin */
  readonly connections?: number | undefined
}

export type HttpFailure = HttpClientError.HttpClientError | Cause.TimeoutException | ParseResult.ParseError

/** The statuses that say "try again later"; every other 4xx is final. */
const transientStatus = new Set([429, 500, 502, 503, 504])
export const isTransientStatus = (status: number): boolean => transientStatus.has(status)

/** The one retry delay: exponential from `retryBase`, doubled per retry, jittered, capped at `retryCap`. */
export const retrySchedule = (settings: Pick<HttpSettings, "retryBase" | "retryCap">) => {
  const cap = Duration.toMillis(settings.retryCap ?? "2 seconds")
  return Schedule.exponential(settings.retryBase ?? "100 millis", 2).pipe(
    Schedule.jittered,
    Schedule.modifyDelay((delay) => Duration.millis(Math.min(Duration.toMillis(delay), cap)))
  )
}

/** Worth another try: the connection failed, no answer in time, or a status that says "later". Never a 4xx. */
export const isTransient = (failure: HttpFailure): boolean => {
  switch (failure._tag) {
    case "RequestError":
      return failure.reason === "Transport"
    case "TimeoutException":
      return true
    case "ResponseError":
      return failure.reason === "StatusCode" && transientStatus.has(failure.response.status)
    case "ParseError":
      return false
  }
}

/** Refused, reset or silent: the agent is not there (as opposed to an agent that answered an error). */
export const isUnreachableFailure = (failure: HttpFailure): boolean =>
  (failure._tag === "RequestError" && failure.reason === "Transport") || failure._tag === "TimeoutException"

export const reasonOf = (failure: HttpFailure): Reason => {
  switch (failure._tag) {
    case "RequestError":
      return failure.reason === "Transport" ? "Transport" : "Status"
    case "TimeoutException":
      return "Timeout"
    case "ParseError":
      return "Decode"
    case "ResponseError":
      if (failure.reason !== "StatusCode") return "Decode"
      if (failure.response.status === 403) return "Forbidden"
      if (failure.response.status === 401) return "Unauthorized"
      return "Status"
  }
}

const statusOf = (failure: HttpFailure): number | undefined =>
  failure._tag === "ResponseError" ? failure.response.status : undefined

/** A short description without URLs' userinfo or headers: safe for logs and HTTP answers. */
export const describeFailure = (failure: HttpFailure): string => {
  switch (failure._tag) {
    case "RequestError": {
      const cause = failure.cause
      const code = typeof cause === "object" && cause !== null && "code" in cause ? String(cause.code) : undefined
      const message = cause instanceof Error ? cause.message : failure.description ?? failure.reason
      const inner = cause instanceof Error && cause.cause instanceof Error ? `: ${cause.cause.message}` : ""
      return `${failure.request.method} ${redactUrl(failure.request.url)}: ${code ?? message}${code ? "" : inner}`
    }
    case "TimeoutException":
      return "no answer in time"
    case "ParseError":
      return `unexpected body: ${ParseResult.TreeFormatter.formatErrorSync(failure)}`
    case "ResponseError":
      return failure.reason === "StatusCode"
        ? `${failure.request.method} ${redactUrl(failure.request.url)} answered ${failure.response.status}`
        : `${failure.request.method} ${redactUrl(failure.request.url)}: unreadable body`
  }
}

export const redactUrl = (raw: string): string => {
  try {
    const url = new URL(raw)
    url.username = ""
    url.password = ""
    for (const key of [...url.searchParams.keys()]) {
      if (/token|secret|password/i.test(key)) url.searchParams.set(key, "redacted")
    }
    return url.href
  } catch {
    return "<url>"
  }
}

export interface UpstreamFailure {
  readonly reason: Reason
  readonly status: number | undefined
  readonly detail: string
  readonly unreachable: boolean
}

/** Every HTTP failure leaves a service through here: 404 -> NotFound, the rest -> the service's error. */
export const mapFailure = <E>(resource: string, onOther: (failure: UpstreamFailure) => E) =>
  (failure: HttpFailure): NotFound | E =>
    failure._tag === "ResponseError" && failure.reason === "StatusCode" && failure.response.status === 404
      ? new NotFound({ resource })
      : onOther({
        reason: reasonOf(failure),
        status: statusOf(failure),
        detail: describeFailure(failure),
        unreachable: isUnreachableFailure(failure)
      })

export interface SendOptions {
  /** overrides the settings' timeout for this request (the fallback agent has its own) */
  readonly timeout?: Duration.DurationInput | undefined
  /** false: an unreachable host is not retried (the fallback takes over at once); other failures still are */
  readonly retryUnreachable?: boolean | undefined
  /**
   * false: the request must reach the server at most once (a Consul session's creation): no retry, and no replay
   * on a fresh connection when a pooled one turns out stale. The caller decides what a failure means.
   */
  readonly idempotent?: boolean | undefined
}

export interface HttpApi {
  readonly send: <A, E>(
    request: HttpClientRequest.HttpClientRequest,
    read: (response: HttpClientResponse.HttpClientResponse) => Effect.Effect<A, E>,
    options?: SendOptions
  ) => Effect.Effect<A, E | HttpFailure>
  /**
   * A long-lived response (an event stream): the timeout bounds the wait for the headers only, and nothing is
   * retried here; the caller reconnects with its own backoff.
   */
  readonly openStream: (
    request: HttpClientRequest.HttpClientRequest
  ) => Effect.Effect<Stream.Stream<Uint8Array, HttpFailure>, HttpFailure>
}

/** For answers whose body says nothing (a registration, a deregistration): it was read off the wire already. */
export const ignoreBody = (_response: HttpClientResponse.HttpClientResponse): Effect.Effect<void> => Effect.void

/** One client per upstream, with its own keep-alive connection pool and TLS settings. */
export const makeHttp = (settings: HttpSettings): Effect.Effect<HttpApi, never, Scope.Scope> =>
  Effect.gen(function*() {
    const transport = yield* makeTransport({ connections: settings.connections ?? 64, tls: settings.tls })
    // merged once: every request carries them (one copy of the request instead of two)
    const headers = { accept: "application/json", ...settings.headers }
    const prepare = (request: HttpClientRequest.HttpClientRequest) => HttpClientRequest.setHeaders(request, headers)
    const timeoutMillis = Duration.toMillis(settings.timeout)
    const backoff = retrySchedule(settings)

    const send = <A, E>(
      request: HttpClientRequest.HttpClientRequest,
      read: (response: HttpClientResponse.HttpClientResponse) => Effect.Effect<A, E>,
      options?: SendOptions
    ): Effect.Effect<A, E | HttpFailure> => {
      const prepared = prepare(request)
      const attemptTimeout = options?.timeout === undefined ? timeoutMillis : Duration.toMillis(options.timeout)
      const idempotent = options?.idempotent ?? true
      const attempt: Effect.Effect<A, E | HttpFailure> = transport.exchange(prepared, attemptTimeout, { replay: idempotent }).pipe(
        Effect.flatMap((response): Effect.Effect<A, E | HttpFailure> =>
          isOk(response.status) ? read(response) : Effect.fail(statusFailure(response))
        )
      )
      const logged = settings.debug === true
        ? attempt.pipe(
          Effect.tapBoth({
            onSuccess: () => Effect.logDebug("http").pipe(Effect.annotateLogs({ method: request.method, url: redactUrl(request.url), outcome: "ok" })),
            onFailure: (failure) =>
              Effect.logDebug("http").pipe(Effect.annotateLogs({
                method: request.method,
                url: redactUrl(request.url),
                outcome: isHttpFailure(failure) ? describeFailure(failure) : "unreadable answer"
              }))
          }),
          Effect.withLogSpan("http")
        )
        : attempt
      const retryUnreachable = options?.retryUnreachable ?? true
      const retryable = (failure: unknown): boolean =>
        idempotent && isHttpFailure(failure) && isTransient(failure) && (retryUnreachable || !isUnreachableFailure(failure))
      // The retry policy is set up only once the first attempt has failed: nearly every request succeeds at
      // once, and a schedule driver per request was a tenth of a cold sync's CPU. The first failure is replayed
      // to the policy, so the delays and the count are exactly Effect.retry's.
      return logged.pipe(
        Effect.catchIf(retryable, (first) => {
          let replayed = false
          const again = Effect.suspend((): Effect.Effect<A, E | HttpFailure> => {
            if (replayed) return logged
            replayed = true
            return Effect.fail(first)
          })
          return Effect.retry(again, { schedule: backoff, times: settings.retries, while: retryable })
        })
      )
    }
    const openStream: HttpApi["openStream"] = (request) => transport.openStream(prepare(request), timeoutMillis)
    return { send, openStream }
  })

const isOk = (status: number) => status >= 200 && status < 300

const httpFailureTags = new Set(["RequestError", "ResponseError", "TimeoutException", "ParseError"])
const isHttpFailure = (failure: unknown): failure is HttpFailure =>
  typeof failure === "object" && failure !== null && "_tag" in failure && httpFailureTags.has(String(failure._tag))
