import { Cookies, Headers, HttpClientError, HttpClientResponse, HttpIncomingMessage, UrlParams } from "@effect/platform"
import type { HttpClientRequest } from "@effect/platform"
import * as NodeStream from "@effect/platform-node/NodeStream"
import { Cause, Effect, Either, Inspectable, Option, Stream } from "effect"
import * as http from "node:http"
import type { IncomingHttpHeaders, IncomingMessage } from "node:http"
import * as https from "node:https"

/**
 * The wire under `Http.ts`: Node's own http/https client, keep-alive agents, one `Effect.async` per exchange.
 *
 * Why not @effect/platform-node's undici client: measured on the bench's cold sync (5,047 writes at concurrency
 * 32), it cost about 3× the CPU of a bare client per request (an AbortController, a finalization registry
 * entry, a body stream and an Effect.timeout fiber each), and loading undici with its WebAssembly parser put a
 * bare client at about 150 MiB of RSS against under 60 MiB for Node's http. Requests stay
 * `HttpClientRequest`s, answers `HttpClientResponse`s and failures @effect/platform's `HttpClientError`s, so
 * every caller reads them as before.
 */

export interface TlsSettings {
  /** PEM contents, not paths: main.ts reads the files */
  readonly ca?: string | undefined
  readonly cert?: string | undefined
  readonly key?: string | undefined
  readonly skipVerify?: boolean | undefined
}

export interface TransportSettings {
  /** keep-alive connections per origin */
  readonly connections: number
  /**
   * an idle pooled connection is closed after this long (default 4 s: before the 5 s keep-alive timeout of Node
   * and Go servers, so that a request seldom goes out on a connection the server is closing)
   */
  readonly idleMillis?: number | undefined
  readonly tls?: TlsSettings | undefined
  /**
   * the largest answer read whole (default `defaultMaxBodyBytes`); a bigger one fails as a `ResponseError`
   * naming the cap, before it is read (its content-length) or as soon as it streams past the cap
   */
  readonly maxBodyBytes?: number | undefined
}

/**
 * 256 MiB: far above the largest answer consular reads (Marathon's app list with its tasks, about 35 MB for
 * 50,000 tasks), far below what would exhaust a small container's memory.
 */
export const defaultMaxBodyBytes = 256 * 1024 * 1024

export interface ExchangeOptions {
  /**
   * May the request go out twice? Defaults from the method: GET, HEAD, PUT, DELETE and OPTIONS are idempotent
   * (RFC 9110), POST and PATCH are not. A request that is not (the subscription `POST`, Consul's
   * `PUT /v1/session/create`, which makes a new session each time) is never replayed on a fresh connection.
   */
  readonly idempotent?: boolean | undefined
}

const idempotentMethods = new Set(["GET", "HEAD", "PUT", "DELETE", "OPTIONS"])

/** Whether the request may be sent again after it may have reached the server. */
export const isIdempotent = (request: HttpClientRequest.HttpClientRequest, options?: ExchangeOptions): boolean =>
  options?.idempotent ?? idempotentMethods.has(request.method)

export type ExchangeFailure = HttpClientError.RequestError | HttpClientError.ResponseError | Cause.TimeoutException

export interface Transport {
  /**
   * Sends the request and reads the whole answer, whatever its status; the timeout covers both. A request that is
   * not idempotent (`ExchangeOptions`) is never sent a second time, not even after a stale pooled connection.
   */
  readonly exchange: (
    request: HttpClientRequest.HttpClientRequest,
    timeoutMillis: number,
    options?: ExchangeOptions
  ) => Effect.Effect<BufferedResponse, ExchangeFailure>
  /**
   * A long-lived answer (an event stream) on a connection of its own: the timeout bounds the wait for the
   * headers only. A non-2xx answer is read whole and fails as a `ResponseError`. The stream as a whole has no
   * size cap (it lasts for hours); one frame of it does: more than `maxBodyBytes` without a blank line (the end
   * of a server-sent event) fails the stream, since its parser would hold all of it.
   */
  readonly openStream: (
    request: HttpClientRequest.HttpClientRequest,
    timeoutMillis: number
  ) => Effect.Effect<
    Stream.Stream<Uint8Array, HttpClientError.RequestError | HttpClientError.ResponseError>,
    ExchangeFailure
  >
}

const isOk = (status: number) => status >= 200 && status < 300

/**
 * Idle time before the first keep-alive probe on an event stream's socket. The interval and count of the probes
 * that follow are the kernel's (Linux: net.ipv4.tcp_keepalive_intvl and _probes; newer libuv sets 1 s × 10 itself);
 * Node 20 cannot set them per socket. Either way a dead stream connection fails instead of hanging forever.
 */
export const streamKeepAliveMillis = 15_000

const isStaleConnection = (cause: unknown): boolean => {
  const code = typeof cause === "object" && cause !== null && "code" in cause ? cause.code : undefined
  return code === "ECONNRESET" || code === "EPIPE"
}

interface Origin {
  readonly secure: boolean
  readonly options: { readonly protocol: string; readonly hostname: string; readonly port: string }
}

interface Target {
  readonly origin: Origin
  /** path and query, as sent */
  readonly path: string
}

/** A path Node sends as it is: printable ASCII, no fragment. */
const plainPath = /^\/[\x21-\x22\x24-\x7e]*$/

export const statusFailure = (response: BufferedResponse): HttpClientError.ResponseError =>
  new HttpClientError.ResponseError({
    request: response.request,
    response,
    reason: "StatusCode",
    description: "non 2xx status code"
  })

const mebibyte = 1024 * 1024
const sizeText = (bytes: number) => bytes % mebibyte === 0 ? `${bytes / mebibyte} MiB` : `${bytes} bytes`

/** An answer over the cap: a `Decode` failure (final, never retried) naming the cap; its body is not kept. */
const tooLarge = (response: BufferedResponse, maxBodyBytes: number, what: string): HttpClientError.ResponseError =>
  new HttpClientError.ResponseError({
    request: response.request,
    response,
    reason: "Decode",
    description: `${what} is larger than the ${sizeText(maxBodyBytes)} cap on an answer`
  })

const blankLines = [Buffer.from("\n\n"), Buffer.from("\r\r"), Buffer.from("\n\r\n")]
/** Where the last blank line in `bytes` (the end of a server-sent event) ends, or -1. */
const lastFrameEnd = (bytes: Buffer): number => {
  let end = -1
  for (const blank of blankLines) {
    const at = bytes.lastIndexOf(blank)
    if (at >= 0) end = Math.max(end, at + blank.length)
  }
  return end
}

export const makeTransport = (settings: TransportSettings): Effect.Effect<Transport, never, import("effect").Scope.Scope> =>
  Effect.gen(function*() {
    const tls = settings.tls
    const maxBodyBytes = settings.maxBodyBytes ?? defaultMaxBodyBytes
    const tlsOptions: https.AgentOptions = {
      ...(tls?.ca !== undefined ? { ca: tls.ca } : {}),
      ...(tls?.cert !== undefined ? { cert: tls.cert } : {}),
      ...(tls?.key !== undefined ? { key: tls.key } : {}),
      rejectUnauthorized: tls?.skipVerify !== true
    }
    const pooled = {
      keepAlive: true,
      maxSockets: settings.connections,
      maxFreeSockets: settings.connections,
      scheduling: "lifo" as const,
      timeout: settings.idleMillis ?? 4_000
    }
    const agents = yield* Effect.acquireRelease(
      Effect.sync(() => ({
        http: new http.Agent(pooled),
        https: new https.Agent({ ...tlsOptions, ...pooled }),
        // an event stream holds its connection for as long as it lasts: never one of the pool's
        httpStream: new http.Agent({ keepAlive: false }),
        httpsStream: new https.Agent({ ...tlsOptions, keepAlive: false })
      })),
      (all) => Effect.sync(() => Object.values(all).forEach((agent) => agent.destroy()))
    )

    // A cold sync sends thousands of requests to a handful of origins: each origin is parsed once, and a URL
    // made of an origin and a plain path is split, not parsed again (anything else goes through URL).
    const origins = new Map<string, Origin>()
    const originOf = (url: URL): Origin => {
      let origin = origins.get(url.origin)
      if (origin === undefined) {
        origin = {
          secure: url.protocol === "https:",
          options: {
            protocol: url.protocol,
            // Node wants an IPv6 host without its brackets
            hostname: url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname,
            port: url.port
          }
        }
        if (origins.size < 1_000) origins.set(url.origin, origin)
      }
      return origin
    }
    const targetOf = (request: HttpClientRequest.HttpClientRequest): Either.Either<Target, unknown> => {
      const raw = request.url
      const pathStart = raw.indexOf("/", raw.indexOf("//") + 2)
      if (request.urlParams.length === 0 && Option.isNone(request.hash) && pathStart > 0) {
        const cached = origins.get(raw.slice(0, pathStart))
        const path = raw.slice(pathStart)
        if (cached !== undefined && plainPath.test(path)) return Either.right({ origin: cached, path })
      }
      // userinfo is not sent: credentials travel in headers (Marathon.ts turns a URL's userinfo into one)
      return Either.map(UrlParams.makeUrl(raw, request.urlParams, request.hash), (url) => ({ origin: originOf(url), path: url.pathname + url.search }))
    }

    /**
     * Starts the request; `onResponse` gets the answer's head. Returns the ClientRequest and its origin, or the failure that
     * stopped it before it was sent (a URL or a header Node refuses).
     */
    const start = (
      request: HttpClientRequest.HttpClientRequest,
      stream: boolean,
      onResponse: (incoming: IncomingMessage) => void
    ): Either.Either<readonly [http.ClientRequest, Origin], HttpClientError.RequestError> => {
      const target = targetOf(request)
      if (Either.isLeft(target)) return Either.left(new HttpClientError.RequestError({ request, reason: "InvalidUrl", cause: target.left }))
      const body = request.body
      if (body._tag !== "Empty" && body._tag !== "Uint8Array") {
        return Either.left(new HttpClientError.RequestError({ request, reason: "Encode", description: `a ${body._tag} body is not supported` }))
      }
      const { origin, path } = target.right
      const agent = origin.secure ? (stream ? agents.httpsStream : agents.https) : (stream ? agents.httpStream : agents.http)
      try {
        // ending with no body sends `content-length: 0`, with one its length (HttpClientRequest set the header)
        const outgoing = (origin.secure ? https : http).request(
          { ...origin.options, path, method: request.method, headers: request.headers, agent },
          onResponse
        )
        // A stream is silent for as long as Marathon has nothing to say: TCP keep-alive probes are what notice a
        // peer that vanished without a FIN or RST (a host that died, a NAT that forgot the connection).
        if (stream) outgoing.once("socket", (socket) => socket.setKeepAlive(true, streamKeepAliveMillis))
        outgoing.end(body._tag === "Uint8Array" ? body.body : undefined)
        return Either.right([outgoing, origin] as const)
      } catch (cause) {
        return Either.left(new HttpClientError.RequestError({ request, reason: "Encode", cause }))
      }
    }

    /**
     * One request under a deadline (the head and, unless streamed, the body), cancelled by interruption.
     * `onAnswer` decides what the answer's head leads to: `finish` it at once (a stream), or `readWhole` first.
     */
    const call = <A, E>(
      request: HttpClientRequest.HttpClientRequest,
      timeoutMillis: number,
      stream: boolean,
      idempotent: boolean,
      onAnswer: (
        incoming: IncomingMessage,
        finish: (outcome: Effect.Effect<A, E | ExchangeFailure>) => void,
        readWhole: (then: (response: BufferedResponse) => Effect.Effect<A, E | ExchangeFailure>) => void
      ) => void
    ): Effect.Effect<A, E | ExchangeFailure> =>
      Effect.async((resume) => {
        let settled = false
        let timer: ReturnType<typeof setTimeout> | undefined
        let outgoing: http.ClientRequest | undefined
        const finish = (outcome: Effect.Effect<A, E | ExchangeFailure>) => {
          if (settled) return
          settled = true
          clearTimeout(timer)
          resume(outcome)
        }
        const transportFailure = (cause: unknown, description?: string) =>
          finish(Effect.fail(new HttpClientError.RequestError({
            request,
            reason: "Transport",
            cause,
            ...(description === undefined ? {} : { description })
          })))
        const send = (replay: boolean): void => {
          let answered = false
          const started = start(request, stream, (incoming) => {
            answered = true
            onAnswer(incoming, finish, (then) => {
              const refuse = (what: string) => {
                const head = new BufferedResponse(request, incoming.statusCode ?? 0, incoming.headers, Buffer.alloc(0))
                finish(Effect.fail(tooLarge(head, maxBodyBytes, what)))
                sent.destroy()
              }
              const declared = Number(incoming.headers["content-length"])
              if (declared > maxBodyBytes) return refuse(`the answer's content-length (${declared} bytes)`)
              const chunks: Array<Buffer> = []
              let length = 0
              incoming.on("data", (chunk: Buffer) => {
                length += chunk.length
                if (length > maxBodyBytes) return refuse("the answer")
                chunks.push(chunk)
              })
              incoming.on("error", transportFailure)
              incoming.on("end", () =>
                finish(then(
                  new BufferedResponse(request, incoming.statusCode ?? 0, incoming.headers, chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks))
                ))
              )
            })
          })
          if (Either.isLeft(started)) return finish(Effect.fail(started.left))
          const [sent, origin] = started.right
          outgoing = sent
          sent.on("error", (cause) => {
            // A pooled connection the server closed just as this request went out (its keep-alive timeout): the
            // request most likely never reached it, so it goes once more on a fresh connection, as Node's docs
            // advise, but only if going twice is harmless (Node cannot tell whether the server read it).
            if (replay && !settled && !answered && sent.reusedSocket && isStaleConnection(cause)) return send(false)
            // TLS 1.3 checks the client's certificate after the handshake: a server that refuses it sends an
            // alert and closes, and a request already on its way often turns that alert into a bare reset
            const refusedTls = origin.secure && !sent.reusedSocket && !answered && isStaleConnection(cause)
            transportFailure(
              cause,
              refusedTls ? "the server closed the new TLS connection unanswered: did it refuse the client certificate?" : undefined
            )
          })
        }
        send(idempotent)
        if (settled) return
        timer = setTimeout(() => {
          finish(Effect.fail(new Cause.TimeoutException()))
          outgoing?.destroy()
        }, timeoutMillis)
        return Effect.sync(() => {
          settled = true
          clearTimeout(timer)
          outgoing?.destroy()
        })
      })

    const exchange: Transport["exchange"] = (request, timeoutMillis, options) =>
      call<BufferedResponse, never>(
        request,
        timeoutMillis,
        false,
        isIdempotent(request, options),
        (_incoming, _finish, readWhole) => readWhole(Effect.succeed)
      )

    const openStream: Transport["openStream"] = (request, timeoutMillis) =>
      call(request, timeoutMillis, true, isIdempotent(request), (incoming, finish, readWhole) => {
        if (!isOk(incoming.statusCode ?? 0)) return readWhole((response) => Effect.fail(statusFailure(response)))
        const bytes = NodeStream.fromReadable<HttpClientError.RequestError | HttpClientError.ResponseError, Uint8Array>(
          () => incoming,
          (cause) => new HttpClientError.RequestError({ request, reason: "Transport", cause })
        )
        // bytes since the last blank line, and the last three bytes (a blank line may straddle two chunks)
        let pending = 0
        let tail = Buffer.alloc(0)
        const bounded = Stream.mapChunksEffect(bytes, (chunks) => {
          for (const chunk of chunks) {
            const buffer = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)
            const inside = lastFrameEnd(buffer)
            const across = inside >= 0 ? -1 : lastFrameEnd(Buffer.concat([tail, buffer.subarray(0, 3)]))
            pending = inside >= 0
              ? buffer.length - inside
              : across >= 0
              ? buffer.length - (across - tail.length)
              : pending + buffer.length
            tail = Buffer.concat([tail, buffer.subarray(-3)]).subarray(-3)
            if (pending > maxBodyBytes) {
              const head = new BufferedResponse(request, incoming.statusCode ?? 0, incoming.headers, Buffer.alloc(0))
              return Effect.fail(tooLarge(head, maxBodyBytes, "an event of the stream"))
            }
          }
          return Effect.succeed(chunks)
        })
        finish(Effect.succeed(bounded))
      })

    return { exchange, openStream }
  })

/**
 * An answer read whole: what Consul and Marathon send is JSON of bounded size, decoded at once.
 * Not `HttpClientResponse.fromWeb` (@effect/platform 0.97's only public constructor): it wants a WHATWG
 * `Response`, and building one per answer and reading it through its body stream cost about 0.35 ms of CPU and
 * 6-9 KiB more heap per answer (5,000 answers: +1.7 s CPU, +30-45 MiB RSS), more than this transport saves.
 */
export class BufferedResponse extends Inspectable.Class implements HttpClientResponse.HttpClientResponse {
  readonly [HttpIncomingMessage.TypeId]: HttpIncomingMessage.TypeId = HttpIncomingMessage.TypeId
  readonly [HttpClientResponse.TypeId]: HttpClientResponse.TypeId = HttpClientResponse.TypeId

  constructor(
    readonly request: HttpClientRequest.HttpClientRequest,
    readonly status: number,
    private readonly rawHeaders: IncomingHttpHeaders,
    readonly body: Buffer
  ) {
    super()
  }

  get headers(): Headers.Headers {
    return Headers.fromInput(this.rawHeaders as Record<string, string | ReadonlyArray<string>>)
  }

  get cookies(): Cookies.Cookies {
    const header = this.rawHeaders["set-cookie"]
    return header === undefined ? Cookies.empty : Cookies.fromSetCookie(header)
  }

  get remoteAddress(): Option.Option<string> {
    return Option.none()
  }

  private decodeFailure(cause: unknown) {
    return new HttpClientError.ResponseError({ request: this.request, response: this, reason: "Decode", cause })
  }

  get text(): Effect.Effect<string, HttpClientError.ResponseError> {
    return Effect.sync(() => this.body.toString("utf8"))
  }

  get json(): Effect.Effect<unknown, HttpClientError.ResponseError> {
    return Effect.try({
      try: () => this.body.length === 0 ? null : JSON.parse(this.body.toString("utf8")) as unknown,
      catch: (cause) => this.decodeFailure(cause)
    })
  }

  get urlParamsBody(): Effect.Effect<UrlParams.UrlParams, HttpClientError.ResponseError> {
    return Effect.sync(() => UrlParams.fromInput(new URLSearchParams(this.body.toString("utf8"))))
  }

  get arrayBuffer(): Effect.Effect<ArrayBuffer, HttpClientError.ResponseError> {
    return Effect.sync(() => {
      const copy = new ArrayBuffer(this.body.byteLength)
      new Uint8Array(copy).set(this.body)
      return copy
    })
  }

  get formData(): Effect.Effect<FormData, HttpClientError.ResponseError> {
    return Effect.fail(this.decodeFailure("Consul and Marathon do not answer form data"))
  }

  get stream(): Stream.Stream<Uint8Array, HttpClientError.ResponseError> {
    return Stream.succeed(new Uint8Array(this.body.buffer, this.body.byteOffset, this.body.byteLength))
  }

  toJSON(): unknown {
    return { _id: "@effect/platform/HttpClientResponse", request: this.request.toJSON(), status: this.status }
  }
}
