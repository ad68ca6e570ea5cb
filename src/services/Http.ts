import { Headers, HttpBody, HttpClientRequest } from "@effect/platform"
import type { HttpClientError, HttpClientResponse } from "@effect/platform"
import { Cause, Duration, Effect, ParseResult, Schedule } from "effect"
import type { Schema, Scope, Stream } from "effect"
import { compiledDecoder } from "../domain/CompiledDecoder.js"
import { NotFound } from "../domain/Errors.js"
import type { Reason, UpstreamError } from "../domain/Errors.js"
import { BufferedResponse, isIdempotent, makeTransport, statusFailure } from "./HttpTransport.js"
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
  /** the largest answer read whole, in bytes (default 256 MiB, see `defaultMaxBodyBytes`) */
  readonly maxBodyBytes?: number | undefined
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

/** The connection could not be opened (refused, no such host, no route): the request was not sent at all. */
const notConnected = new Set(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH", "ENETUNREACH"])

/**
 * The request certainly never reached the server: it failed before it was sent (a URL or header Node refuses)
 * or its connection could not be opened. A reset, a timeout or an answer may come after the server read it.
 */
export const isNeverSent = (failure: HttpFailure): boolean => {
  if (failure._tag !== "RequestError") return false
  if (failure.reason !== "Transport") return true
  const cause = failure.cause
  const code = typeof cause === "object" && cause !== null && "code" in cause ? String(cause.code) : undefined
  return code !== undefined && notConnected.has(code)
}

/** The same rule for a failure already read into an upstream error (what the in-memory layers fail with). */
export const isTransientError = (error: UpstreamError): boolean =>
  error.reason === "Transport" || error.reason === "Timeout" ||
  (error.reason === "Status" && error.status !== undefined && isTransientStatus(error.status))

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
      return failure.reason === "StatusCode" ? reasonOfStatus(failure.response.status) : "Decode"
  }
}

/** The reason an answered failure status gives (the in-memory layers map their answers with it too). */
export const reasonOfStatus = (status: number): Reason =>
  status === 403 ? "Forbidden" : status === 401 ? "Unauthorized" : "Status"

const statusOf = (failure: HttpFailure): number | undefined =>
  failure._tag === "ResponseError" ? failure.response.status : undefined

/** How much of an upstream's answer a failure line quotes. */
export const upstreamWordsLimit = 200

const secretAssignment = /\b([\w-]*(?:token|secret|password|passwd|pwd)[\w-]*)(["']?\s*[:=]\s*["']?)([^\s"'&,;}]+)/gi

/**
 * Secrets taken out of a text an upstream wrote: the request's own secret header values (the ACL token, the
 * Authorization) wherever they appear, `Bearer`/`Basic` credentials, a URL's userinfo, and any value assigned
 * to a name like token, secret or password (`secret=…`, `"token": "…"`).
 */
export const redactSecrets = (text: string, secrets: ReadonlyArray<string> = []): string => {
  let out = text
  for (const secret of secrets) if (secret.length >= 4) out = out.split(secret).join("<redacted>")
  return out
    .replace(/\b(Bearer|Basic|token)\s+[A-Za-z0-9._~+/=-]{8,}/gi, "$1 <redacted>")
    .replace(/\/\/[^/\s@]+@/g, "//<redacted>@")
    .replace(secretAssignment, "$1$2<redacted>")
}

/** The values of the request's headers that carry credentials (never to be shown) */
const secretHeaderValues = (request: HttpClientRequest.HttpClientRequest): Array<string> => {
  const out: Array<string> = []
  for (const [name, value] of Object.entries(request.headers)) {
    if (/token|authorization|secret|password/i.test(name)) {
      out.push(value)
      const credentials = /^\S+\s+(\S+)$/.exec(value)?.[1]
      if (credentials !== undefined) out.push(credentials)
    }
  }
  return out
}

/**
 * What the upstream said in a non-2xx answer: the body's first 200 characters, whitespace folded, secrets
 * redacted; undefined when it said nothing (or the failure is no answer at all).
 */
export const upstreamWords = (failure: HttpFailure): string | undefined => {
  if (failure._tag !== "ResponseError" || failure.reason !== "StatusCode" || !(failure.response instanceof BufferedResponse)) {
    return undefined
  }
  const raw = failure.response.body.toString("utf8", 0, Math.min(failure.response.body.length, 64 * 1024))
  const words = redactSecrets(raw.replace(/\s+/g, " ").trim(), secretHeaderValues(failure.request))
  if (words === "") return undefined
  return words.length > upstreamWordsLimit ? `${words.slice(0, upstreamWordsLimit - 1)}\u2026` : words
}

/** A short description without URLs' userinfo or headers: safe for logs and HTTP answers. */
export const describeFailure = (failure: HttpFailure): string => {
  switch (failure._tag) {
    case "RequestError": {
      const cause = failure.cause
      const code = typeof cause === "object" && cause !== null && "code" in cause ? String(cause.code) : undefined
      const message = cause instanceof Error ? cause.message : failure.description ?? failure.reason
      const inner = cause instanceof Error && cause.cause instanceof Error ? `: ${cause.cause.message}` : ""
      const hint = code !== undefined && failure.description !== undefined ? ` (${failure.description})` : ""
      return `${failure.request.method} ${redactUrl(failure.request.url)}: ${code ?? message}${code ? hint : inner}`
    }
    case "TimeoutException":
      return "no answer in time"
    case "ParseError":
      return `unexpected body: ${ParseResult.TreeFormatter.formatErrorSync(failure)}`
    case "ResponseError": {
      if (failure.reason !== "StatusCode") {
        return `${failure.request.method} ${redactUrl(failure.request.url)}: ${failure.description ?? "unreadable body"}`
      }
      const words = upstreamWords(failure)
      return `${failure.request.method} ${redactUrl(failure.request.url)} answered ${failure.response.status}${
        words === undefined ? "" : `: ${JSON.stringify(words)}`
      }`
    }
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
  /** the status, the request and the upstream's own words (see `upstreamWords`) */
  readonly detail: string
  /** the upstream's own words alone, when it answered with a body */
  readonly words?: string | undefined
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
        words: upstreamWords(failure),
        unreachable: isUnreachableFailure(failure)
      })

export interface SendOptions {
  /** overrides the settings' timeout for this request (the fallback agent has its own) */
  readonly timeout?: Duration.DurationInput | undefined
  /** false: an unreachable host is not retried (the fallback takes over at once); other failures still are */
  readonly retryUnreachable?: boolean | undefined
  /** an answer that is final whatever its status says (Consul's 500 `Unknown service`): never retried */
  readonly final?: ((failure: HttpFailure) => boolean) | undefined
  /**
   * May the request go out twice? Defaults from the method: POST is not, GET/HEAD/PUT/DELETE are. A request
   * that is not (Consul's `PUT /v1/session/create` must say `idempotent: false`) is neither replayed on a fresh
   * connection nor retried after it may have reached the server: only a failure to connect is retried.
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

/**
 * Reads an answer's JSON body with its Schema (compiled once: domain/CompiledDecoder.ts): what it refuses fails as
 * the Schema's ParseError, exactly as `HttpClientResponse.schemaBodyJson` would. Make it once per schema, not per
 * request.
 */
export const schemaBody = <A, I>(schema: Schema.Schema<A, I, never>) => {
  const decode = compiledDecoder(schema)
  return (response: HttpClientResponse.HttpClientResponse): Effect.Effect<A, HttpClientError.ResponseError | ParseResult.ParseError> =>
    Effect.flatMap(response.json, decode)
}

/**
 * A JSON request body: the bytes and headers of `HttpClientRequest.bodyUnsafeJson`, encoded by Buffer rather
 * than a TextEncoder (half the CPU, and a cold sync sends thousands).
 */
export const jsonBody = (value: unknown): HttpBody.HttpBody => HttpBody.uint8Array(Buffer.from(JSON.stringify(value), "utf8"), "application/json")

/** For answers whose body says nothing (a registration, a deregistration): it was read off the wire already. */
export const ignoreBody = (_response: HttpClientResponse.HttpClientResponse): Effect.Effect<void> => Effect.void

/** One client per upstream, with its own keep-alive connection pool and TLS settings. */
export const makeHttp = (settings: HttpSettings): Effect.Effect<HttpApi, never, Scope.Scope> =>
  Effect.gen(function*() {
    const transport = yield* makeTransport({
      connections: settings.connections ?? 64,
      tls: settings.tls,
      maxBodyBytes: settings.maxBodyBytes
    })
    // The client's defaults go UNDER a request's own headers: the event stream's `accept: text/event-stream`
    // must survive the default `accept: application/json` (Marathon answers anything else with 405).
    const defaults = Headers.fromInput({ accept: "application/json", ...settings.headers })
    const prepare = (request: HttpClientRequest.HttpClientRequest) => {
      let clash = false
      for (const name in request.headers) if (name in defaults) clash = true
      // without a clash, laying the defaults over the request's own headers is the same set, in one copy
      return HttpClientRequest.setHeaders(request, clash ? Headers.merge(defaults, request.headers) : defaults)
    }
    const timeoutMillis = Duration.toMillis(settings.timeout)
    const backoff = retrySchedule(settings)

    const send = <A, E>(
      request: HttpClientRequest.HttpClientRequest,
      read: (response: HttpClientResponse.HttpClientResponse) => Effect.Effect<A, E>,
      options?: SendOptions
    ): Effect.Effect<A, E | HttpFailure> => {
      const prepared = prepare(request)
      const attemptTimeout = options?.timeout === undefined ? timeoutMillis : Duration.toMillis(options.timeout)
      const idempotent = isIdempotent(request, options)
      const attempt: Effect.Effect<A, E | HttpFailure> = transport.exchange(prepared, attemptTimeout, { idempotent }).pipe(
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
        isHttpFailure(failure) && isTransient(failure) && (retryUnreachable || !isUnreachableFailure(failure)) &&
        (idempotent || isNeverSent(failure)) && options?.final?.(failure) !== true
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
