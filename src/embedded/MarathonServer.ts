import { HttpClientRequest, HttpRouter, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import type { HttpServerError } from "@effect/platform"
import * as NodeHttpServerRequest from "@effect/platform-node/NodeHttpServerRequest"
import { Context, Effect, Layer, Option, Queue, Schedule, Stream } from "effect"
import type { Duration, Scope } from "effect"
import { STATUS_CODES } from "node:http"
import type { TlsSettings } from "../services/Http.js"
import * as Http from "../services/Http.js"
import { appView, podStatusView, podView, taskView } from "../services/Marathon.js"
import type { MarathonEvent, MarathonFault, MarathonOperation, MarathonStore } from "../services/MarathonStore.js"
import type { ServerTls } from "./Listen.js"
import { decodePath, dropConnection, listen, requestTarget } from "./Listen.js"

/**
 * A Marathon over HTTP, served from a `MarathonStore`: the REST subset consular reads, the event stream
 * (SSE), and http_callback delivery of every event the store emits, with Marathon's status codes and bodies.
 */

export interface MarathonServerOptions {
  /** default 127.0.0.1 */
  readonly address?: string | undefined
  /** 0 or absent: a free port */
  readonly port?: number | undefined
  /** with `basicAuth` and/or `token`, a request carrying neither gets Marathon's 401 */
  readonly basicAuth?: { readonly user: string; readonly password: string } | undefined
  /** DC/OS style: `Authorization: token=<token>` */
  readonly token?: string | undefined
  readonly tls?: ServerTls | undefined
  /** per callback POST; default 2 seconds */
  readonly callbackTimeout?: Duration.DurationInput | undefined
  /** for https callback URLs (a self-signed receiver: its CA, or skipVerify) */
  readonly callbackTls?: TlsSettings | undefined
  /**
   * Events delivered at once. 1 (the default): each event reaches every subscriber before the next is sent,
   * so a subscriber sees them in the order the store emitted them. More: faster, in no particular order.
   */
  readonly callbackConcurrency?: number | undefined
  /** between the CRLF heartbeats of an event stream (Jetty's EventSourceServlet: 10 seconds) */
  readonly heartbeat?: Duration.DurationInput | undefined
}

export interface MarathonServer {
  readonly port: number
  readonly address: string
  /** e.g. "http://127.0.0.1:34567" */
  readonly url: string
}

/** What a route answers before faults apply: JSON can be broken by a fault, a stream cannot. */
type Reply =
  | { readonly _tag: "Json"; readonly status: number; readonly body: unknown }
  | { readonly _tag: "Response"; readonly response: HttpServerResponse.HttpServerResponse }

const json = (body: unknown, status = 200): Reply => ({ _tag: "Json", status, body })
const message = (text: string, status: number): Reply => json({ message: text }, status)

/** Marathon's own answer for a route it does not have (what a >= 1.5 Marathon says to /v2/eventSubscriptions) */
const noSuchRoute = (store: MarathonStore, path: string): Reply =>
  store.unknownRouteStatus === 404 ? message(`URI not found: ${path}`, 404) : message("URI not found", 500)
/** NoopHttpCallbackSubscriptionService's BadRequestException (1.4), a stripMargin'd message with its line break */
const callbacksDisabled = message(
  "http event callback system is not running on this Marathon instance. Please re-start this instance with\n\"--event_subscriber http_callback\".",
  400
)
/**
 * InfoEmbedResolver: an embed value is taken with any of the prefixes `group.apps.`, `apps.`, `app.` or none;
 * `tasks` embeds the tasks, and so does the deprecated `failures`.
 */
const embedsTasks = (value: string): boolean => {
  const prefix = ["group.apps.", "apps.", "app."].find((candidate) => value.startsWith(candidate)) ?? ""
  const rest = value.slice(prefix.length)
  return rest === "tasks" || rest === "failures"
}

const appMissing = (id: string) => message(`App '${id}' does not exist`, 404)

const render = (reply: Reply, fault: MarathonFault | undefined): HttpServerResponse.HttpServerResponse => {
  if (reply._tag === "Response") return reply.response
  const body = JSON.stringify(reply.body)
  switch (fault?._tag) {
    case "InvalidJson":
      return HttpServerResponse.text("{\"apps\": [", { status: 200, contentType: "application/json" })
    case "Truncated":
      return HttpServerResponse.text(body.slice(0, Math.floor(body.length / 2)), { status: 200, contentType: "application/json" })
    default:
      return HttpServerResponse.text(body, { status: reply.status, contentType: "application/json" })
  }
}

const authorized = (request: HttpServerRequest.HttpServerRequest, options: MarathonServerOptions): boolean => {
  if (options.basicAuth === undefined && options.token === undefined) return true
  const header = request.headers["authorization"] ?? ""
  if (options.token !== undefined && header === `token=${options.token}`) return true
  if (options.basicAuth !== undefined && header.startsWith("Basic ")) {
    const given = Buffer.from(header.slice("Basic ".length), "base64").toString("utf8")
    return given === `${options.basicAuth.user}:${options.basicAuth.password}`
  }
  return false
}

const remoteAddress = (request: HttpServerRequest.HttpServerRequest): string =>
  Option.getOrElse(request.remoteAddress, () => "")

/** "/v2/apps/grp/web" -> "/grp/web": each segment URL-decoded, no trailing slash; undefined when malformed */
const appIdOf = (path: string): string | undefined => {
  const segments = path.slice("/v2/apps/".length).split("/").filter((segment) => segment !== "")
  const decoded = segments.map(decodePath)
  return decoded.every((segment) => segment !== undefined) ? `/${decoded.join("/")}` : undefined
}

/** Jetty's emitter: the name, then one `data:` line per line of the payload, each ended by CRLF, then CRLF. */
const sseFrame = (event: MarathonEvent): string =>
  `event: ${event.eventType}\r\n${JSON.stringify(event).split("\n").map((line) => `data: ${line}\r\n`).join("")}\r\n`

/** Jetty reads each `Accept` header line as one value: `text/event-stream` must be one of them, exactly. */
const acceptLines = (rawHeaders: ReadonlyArray<string>): ReadonlyArray<string> => {
  const lines: Array<string> = []
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    if (rawHeaders[i]!.toLowerCase() === "accept") lines.push(rawHeaders[i + 1]!)
  }
  return lines
}

/**
 * What `HttpServletResponse.sendError(status, message)` answers in Marathon's Jetty 9.4: the message as the
 * status line's reason phrase, and Jetty's default HTML error page (Marathon installs no error handler).
 */
const servletRefusal = (request: HttpServerRequest.HttpServerRequest, status: number, reason: string): Reply => {
  NodeHttpServerRequest.toServerResponse(request).statusMessage = reason
  const uri = escapeHtml(requestTarget(request).path)
  const page = `<html>\n<head>\n<meta http-equiv="Content-Type" content="text/html;charset=utf-8"/>\n<title>Error ${status} ${reason}</title>\n` +
    `</head>\n<body><h2>HTTP ERROR ${status}</h2>\n<p>Problem accessing ${uri}. Reason:\n<pre>    ${reason}</pre></p>` +
    `<hr><a href="http://eclipse.org/jetty">Powered by Jetty:// 9.4.8.v20171121</a><hr/>\n\n</body>\n</html>\n`
  return {
    _tag: "Response",
    response: HttpServerResponse.text(page, {
      status,
      contentType: "text/html;charset=iso-8859-1",
      headers: { "cache-control": "must-revalidate,no-cache,no-store" }
    })
  }
}

const escapeHtml = (text: string): string =>
  text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;")

export const marathonRouter = (store: MarathonStore, options: MarathonServerOptions = {}) => {
  /** The store decides first whether the request gets through (a down or hanging Marathon), then auth. */
  const admitted = (
    operation: MarathonOperation,
    handle: (request: HttpServerRequest.HttpServerRequest) => Effect.Effect<Reply>
  ) =>
    Effect.gen(function*() {
      const request = yield* HttpServerRequest.HttpServerRequest
      const fault = store.admit(operation)
      switch (fault?._tag) {
        case "Refuse":
          return yield* dropConnection(request)
        case "Hang":
          return yield* Effect.never
        case "Status":
          return render(message(STATUS_CODES[fault.status] ?? `status ${fault.status}`, fault.status), undefined)
        default:
          break
      }
      if (!authorized(request, options)) return render(message("Invalid username or password.", 401), undefined)
      return render(yield* handle(request), fault)
    })

  const apps = admitted("apps", (request) => {
    const embed = requestTarget(request).query.getAll("embed")
    const withTasks = store.embedTasks && embed.some(embedsTasks)
    return Effect.succeed(json({ apps: [...store.apps.values()].map((app) => appView(app, withTasks)) }))
  })

  const appOrTasks = Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const path = requestTarget(request).path
    const full = appIdOf(path)
    // "/v2/apps/<id>/tasks" unless an app is really called ".../tasks"
    const tasksOf = path.endsWith("/tasks") && (full === undefined || !store.apps.has(full))
      ? appIdOf(path.slice(0, -"/tasks".length))
      : undefined
    if (tasksOf !== undefined) {
      return yield* admitted("tasks", () => {
        const app = store.apps.get(tasksOf)
        if (app === undefined || (app.tasks.length === 0 && store.tasksNotFoundWhenEmpty)) {
          return Effect.succeed(appMissing(tasksOf))
        }
        return Effect.succeed(json({ tasks: app.tasks.map((task) => taskView(app, task)) }))
      })
    }
    return yield* admitted("app", () => {
      const app = full === undefined ? undefined : store.apps.get(full)
      return Effect.succeed(app === undefined ? appMissing(full ?? path) : json({ app: appView(app, true) }))
    })
  })

  const subscriptions = admitted("subscriptions", (request) =>
    Effect.succeed(
      store.callbacks === "removed"
        ? noSuchRoute(store, requestTarget(request).path)
        : store.callbacks === "disabled"
        ? callbacksDisabled
        : json({ callbackUrls: [...store.subscriptions] })
    ))

  /** (Un)subscribing answers the event Marathon puts on its bus for it, and emits that event. */
  const changeSubscription = (operation: "subscribe" | "unsubscribe") =>
    admitted(operation, (request) => {
      if (store.callbacks === "removed") return Effect.succeed(noSuchRoute(store, requestTarget(request).path))
      if (store.callbacks === "disabled") return Effect.succeed(callbacksDisabled)
      const callbackUrl = requestTarget(request).query.get("callbackUrl")
      if (callbackUrl === null || callbackUrl === "") return Effect.succeed(message("Missing callbackUrl", 400))
      const at = store.subscriptions.indexOf(callbackUrl)
      if (operation === "subscribe" && at === -1) store.subscriptions.push(callbackUrl)
      if (operation === "unsubscribe" && at !== -1) store.subscriptions.splice(at, 1)
      const event: MarathonEvent = {
        eventType: `${operation}_event`,
        callbackUrl,
        clientIp: remoteAddress(request),
        timestamp: new Date().toISOString()
      }
      store.emit(event)
      return Effect.succeed(json(event))
    })

  /** Marathon < 1.4 has no pods: every `/v2/pods` route is a route it does not have */
  const allPods = admitted("pods", (request) =>
    Effect.succeed(store.podsSupported ? json([...store.pods.values()].map(podView)) : noSuchRoute(store, requestTarget(request).path)))

  /** `/v2/pods/::status`, `/v2/pods/<id>::status` and `/v2/pods/<id>` */
  const onePod = Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const path = requestTarget(request).path
    if (path === "/v2/pods/::status") {
      return yield* admitted("pods", () =>
        Effect.succeed(store.podsSupported ? json([...store.pods.values()].map(podStatusView)) : noSuchRoute(store, path)))
    }
    const status = path.endsWith("::status")
    const id = appIdOf(`/v2/apps/${path.slice("/v2/pods/".length, status ? -"::status".length : undefined)}`)
    return yield* admitted(status ? "pods" : "pod", () => {
      if (!store.podsSupported) return Effect.succeed(noSuchRoute(store, path))
      const pod = id === undefined ? undefined : store.pods.get(id)
      if (pod === undefined) return Effect.succeed(status ? message(`Pod '${id ?? path}' does not exist`, 404) : message(`pod with ${id ?? path} does not exist`, 404))
      return Effect.succeed(json(status ? podStatusView(pod) : podView(pod)))
    })
  })

  const leader = admitted("leader", (request) => {
    // LeaderResource: 404 "There is no leader" while an election is under way
    if (store.leader === null) return Effect.succeed(message("There is no leader", 404))
    const socket = NodeHttpServerRequest.toIncomingMessage(request).socket
    return Effect.succeed(json({ leader: store.leader ?? `${socket.localAddress ?? "127.0.0.1"}:${socket.localPort ?? 0}` }))
  })

  /**
   * `GET /v2/events`, as Marathon's Jetty EventSourceServlet serves it: only a request with an `Accept` header
   * that is exactly `text/event-stream` gets the stream; any other (none included) falls through to
   * HttpServlet.doGet, which answers 405 (400 over HTTP/1.0). The stream is `Connection: close`, not chunked;
   * frames are `event:`/`data:` lines ended by CRLF; a CRLF heartbeat goes out every `heartbeat` (Jetty: 10 s).
   * The stream's own `event_stream_attached`/`_detached` go on the event bus, so every listener whose
   * `event_type` filter admits them sees them (callback subscribers too), as in Marathon's stream actor.
   */
  const events = admitted("events", (request) => {
    const incoming = NodeHttpServerRequest.toIncomingMessage(request)
    const accept = acceptLines(incoming.rawHeaders)
    store.streamRequests.push({ accept, eventTypes: requestTarget(request).query.getAll("event_type") })
    if (store.streamRequests.length > 100) store.streamRequests.shift()
    if (!accept.includes("text/event-stream")) {
      return Effect.succeed(servletRefusal(request, incoming.httpVersion === "1.0" ? 400 : 405, "HTTP method GET is not supported by this URL"))
    }
    const wanted = new Set(requestTarget(request).query.getAll("event_type"))
    const address = remoteAddress(request)
    const onBus = (eventType: string): MarathonEvent => ({ eventType, remoteAddress: address, timestamp: new Date().toISOString() })
    // listening starts before "attached" is published: whatever the client does once it sees it is not missed
    const outgoing = NodeHttpServerRequest.toServerResponse(request)
    const frames = Stream.asyncScoped<MarathonEvent>((emit) =>
      Effect.acquireRelease(
        Effect.sync(() => {
          // Jetty flushes the head at once (respond(): flushBuffer()), before any event: the client is attached
          outgoing.flushHeaders()
          const stop = store.listen((event) => {
            if (wanted.size === 0 || wanted.has(event.eventType)) void emit.single(event)
          })
          store.emit(onBus("event_stream_attached"))
          return stop
        }),
        (stop) => Effect.sync(() => {
          stop()
          store.emit(onBus("event_stream_detached"))
        })
      ), "unbounded").pipe(
        Stream.map(sseFrame),
        Stream.merge(Stream.repeatEffectWithSchedule(Effect.succeed("\r\n"), Schedule.spaced(options.heartbeat ?? "10 seconds")).pipe(Stream.drop(1))),
        Stream.encodeText
      )
    // Jetty's EventSourceServlet disables chunking: the body runs until the connection closes
    outgoing.removeHeader("transfer-encoding")
    outgoing.removeHeader("content-length")
    return Effect.succeed({
      _tag: "Response",
      response: HttpServerResponse.stream(frames, {
        contentType: "text/event-stream;charset=utf-8",
        headers: { connection: "close" }
      })
    } satisfies Reply)
  })

  return HttpRouter.empty.pipe(
    HttpRouter.get("/v2/apps", apps),
    HttpRouter.get("/v2/apps/*", appOrTasks),
    HttpRouter.get("/v2/eventSubscriptions", subscriptions),
    HttpRouter.post("/v2/eventSubscriptions", changeSubscription("subscribe")),
    HttpRouter.del("/v2/eventSubscriptions", changeSubscription("unsubscribe")),
    HttpRouter.get("/v2/pods", allPods),
    HttpRouter.get("/v2/pods/*", onePod),
    HttpRouter.get("/v2/leader", leader),
    HttpRouter.get("/v2/events", events)
  )
}

interface Delivery {
  readonly event: MarathonEvent
  readonly urls: ReadonlyArray<string>
}

/**
 * http_callback delivery, as Marathon does it: every event the store emits is POSTed as JSON to every
 * subscribed URL, each POST bounded by a short timeout, failures ignored (Marathon does not retry either).
 */
const deliverCallbacks = (store: MarathonStore, options: MarathonServerOptions): Effect.Effect<void, never, Scope.Scope> =>
  Effect.gen(function*() {
    const http = yield* Http.makeHttp({
      timeout: options.callbackTimeout ?? "2 seconds",
      retries: 0,
      tls: options.callbackTls
    })
    // the subscribers are those of the moment the event happens; none while the callback system is off
    const queue = yield* Effect.acquireRelease(Queue.unbounded<Delivery>(), Queue.shutdown)
    yield* Effect.acquireRelease(
      Effect.sync(() =>
        store.listen((event) => {
          if (store.callbacks === "enabled" && store.subscriptions.length > 0) {
            Queue.unsafeOffer(queue, { event, urls: [...store.subscriptions] })
          }
        })
      ),
      (stop) => Effect.sync(stop)
    )
    const post = ({ event, urls }: Delivery) =>
      Effect.forEach(
        urls,
        (url) =>
          HttpClientRequest.post(url).pipe(
            HttpClientRequest.bodyUnsafeJson(event),
            (request) => http.send(request, Http.ignoreBody),
            Effect.ignore
          ),
        { concurrency: "unbounded", discard: true }
      )
    yield* Stream.fromQueue(queue).pipe(
      Stream.mapEffect(post, { concurrency: options.callbackConcurrency ?? 1 }),
      Stream.runDrain,
      Effect.forkScoped
    )
  })

/** Serves the store until the scope closes, and delivers its events to the subscribed callback URLs. */
export const serveMarathon = (
  store: MarathonStore,
  options: MarathonServerOptions = {}
): Effect.Effect<MarathonServer, HttpServerError.ServeError, Scope.Scope> =>
  Effect.gen(function*() {
    const address = options.address ?? "127.0.0.1"
    yield* deliverCallbacks(store, options)
    const port = yield* listen(marathonRouter(store, options), { address, port: options.port ?? 0, tls: options.tls })
    const scheme = options.tls === undefined ? "http" : "https"
    return { port, address, url: `${scheme}://${address}:${port}` } satisfies MarathonServer
  })

/** The running embedded Marathon, for programs that take it from a layer (demo, bench). */
export class EmbeddedMarathon extends Context.Tag("consular/EmbeddedMarathon")<EmbeddedMarathon, MarathonServer>() {}

export const EmbeddedMarathonLive = (
  store: MarathonStore,
  options: MarathonServerOptions = {}
): Layer.Layer<EmbeddedMarathon, HttpServerError.ServeError> => Layer.scoped(EmbeddedMarathon, serveMarathon(store, options))
