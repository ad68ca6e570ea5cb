import type { HttpServerError } from "@effect/platform"
import { Context, Effect, Layer } from "effect"
import * as Http from "node:http"
import { isIP } from "node:net"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import { daemonObservability, makeDaemonApp, nodeServer } from "../../src/programs/Daemon.js"
import type { DaemonSettings } from "../../src/programs/Daemon.js"
import { makeDatacenter } from "./Datacenter.js"
import type { Datacenter } from "./Datacenter.js"

export const daemonSettings = (dc: Datacenter, overrides: Partial<DaemonSettings> = {}): DaemonSettings => ({
  registrationId: "consular",
  purge: false,
  fallback: false,
  fallbackTimeout: "300 millis",
  consulUrl: dc.consulUrl,
  maxEventBytes: 1024 * 1024,
  scheme: "http",
  host: "127.0.0.1",
  port: 7000,
  syncInterval: 0,
  events: "callback",
  reconnectBase: "5 millis",
  reconnectCap: "50 millis",
  ...overrides
})

/** The app and listener as the daemon serves them, with its own metrics and readiness and the datacenter's live services. */
const daemonParts = (dc: Datacenter, settings: DaemonSettings) =>
  makeDaemonApp(settings).pipe(Effect.provide(daemonObservability(settings)), Effect.provide(dc.services))

/** The app as the daemon's router serves it (every request but `POST /events` spelled exactly). */
export const daemonApp = (dc: Datacenter, settings: DaemonSettings) => Effect.map(daemonParts(dc, settings), ({ app }) => app)

/** The daemon's HTTP app served on a free loopback port, with the datacenter's live services. */
export const serveDaemon = (dc: Datacenter, overrides: Partial<DaemonSettings> = {}) =>
  Effect.gen(function*() {
    // the daemon's own Node listener: POST /events straight to its handler, every other request to the platform
    const { listener } = yield* daemonParts(dc, daemonSettings(dc, overrides))
    const node = nodeServer(listener)
    const server = yield* NodeHttpServer.make(() => node, { host: "127.0.0.1", port: 0 })
    // a hanging request would otherwise hold the server's close forever
    yield* Effect.addFinalizer(() => Effect.sync(() => node.closeAllConnections()))
    const port = server.address._tag === "TcpAddress" ? server.address.port : 0
    const base = `http://127.0.0.1:${port}`
    const post = (body: string | object, headers: Record<string, string> = { "content-type": "application/json" }) =>
      Effect.promise(async () => {
        const response = await fetch(`${base}/events`, {
          method: "POST",
          headers,
          body: typeof body === "string" ? body : JSON.stringify(body)
        })
        const text = await response.text()
        return { status: response.status, contentType: response.headers.get("content-type") ?? "", text, json: parse(text) }
      })
    const get = (path: string) =>
      Effect.promise(async () => {
        const response = await fetch(`${base}${path}`)
        const text = await response.text()
        return { status: response.status, contentType: response.headers.get("content-type") ?? "", text, json: parse(text) }
      })
    return { base, post, get }
  })

const parse = (text: string): unknown => {
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}

export const statusUpdate = (fields: {
  readonly taskId: string
  readonly taskStatus: string
  readonly appId: string
  readonly host: string
  readonly ports?: ReadonlyArray<number>
  readonly version?: string
}) => ({
  eventType: "status_update_event",
  timestamp: "2026-11-25T10:00:00.000Z",
  slaveId: "20140909-054127-177048842-5050-1494-0",
  message: "",
  // Marathon writes the task's IP addresses (Mesos' NetworkInfo), never a host name: a named host gets none here
  ...(isIP(fields.host) === 0 ? {} : { ipAddresses: [{ ipAddress: fields.host, protocol: isIP(fields.host) === 6 ? "IPv6" : "IPv4" }] }),
  ports: [],
  ...fields
})

export type DaemonClient = Effect.Effect.Success<ReturnType<typeof serveDaemon>>

export interface Answer {
  readonly status: number
  readonly contentType: string
  readonly text: string
  readonly json: unknown
}

/**
 * POST /events with exactly these bytes and headers: a string is sent as its UTF-8 bytes, so that fetch adds no
 * Content-Type of its own. Interrupting the effect aborts the request.
 */
export const sendEvent = (base: string, body: string | Uint8Array, headers: Record<string, string> = {}): Effect.Effect<Answer> =>
  Effect.promise(async (signal) => {
    const bytes = typeof body === "string" ? new TextEncoder().encode(body) : body
    const response = await fetch(`${base}/events`, { method: "POST", headers, body: bytes, signal })
    const text = await response.text()
    return { status: response.status, contentType: response.headers.get("content-type") ?? "", text, json: parse(text) }
  })

export interface StreamedAnswer extends Answer {
  readonly headers: Readonly<Record<string, string | ReadonlyArray<string> | undefined>>
  /** body bytes the client had handed to the socket when the answer arrived (at most one piece short of what the server got) */
  readonly sentBeforeAnswer: number
  /** the server closed the connection after answering (the client never ended its request) */
  readonly closedByServer: boolean
}

/**
 * POST /events on a fresh connection, the body written piece by piece (one event-loop turn between pieces) for as
 * long as no answer has come. The request is ended only with `finish`: without it the body is never complete, so
 * an answer proves the server did not wait for (or buffer) the whole body. Without a Content-Length header the
 * body goes chunked. Resolves once the answer is read and the connection is closed.
 */
export const streamEvent = (
  base: string,
  request: { readonly headers?: Record<string, string>; readonly pieces: Iterable<Uint8Array>; readonly finish?: boolean }
): Effect.Effect<StreamedAnswer> =>
  Effect.async<StreamedAnswer>((resume) => {
    const req = Http.request(`${base}/events`, { method: "POST", agent: false, headers: request.headers ?? {} })
    let sent = 0
    let answer: Omit<StreamedAnswer, "closedByServer"> | undefined
    let failure: string | undefined
    let answered = false
    let done = false
    const settle = (closedByServer: boolean) => {
      if (done) return
      done = true
      resume(Effect.succeed(
        answer === undefined
          ? { status: 0, contentType: "", text: failure ?? "no answer", json: undefined, headers: {}, sentBeforeAnswer: sent, closedByServer }
          : { ...answer, closedByServer }
      ))
    }
    req.on("response", (res) => {
      answered = true
      const sentBeforeAnswer = sent
      const chunks: Array<Buffer> = []
      res.on("data", (chunk: Buffer) => chunks.push(chunk))
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8")
        answer = { status: res.statusCode ?? 0, contentType: String(res.headers["content-type"] ?? ""), text, json: parse(text), headers: res.headers, sentBeforeAnswer }
        // a finished request on a kept-alive connection: nothing more will come
        if (request.finish === true && res.headers.connection !== "close") settle(false)
      })
    })
    // the request is never ended here (unless `finish`): only the server can close the connection
    req.on("socket", (socket) => socket.on("close", () => settle(answer !== undefined)))
    // writes after the server has answered and closed fail (EPIPE, reset): expected, the answer is what counts
    req.on("error", (error) => {
      failure ??= error.message
    })
    const pump = async () => {
      for (const piece of request.pieces) {
        if (answered || req.destroyed) return
        const written = await new Promise<boolean>((resolve) => req.write(piece, (error) => resolve(error == null)))
        if (!written) return
        sent += piece.length
        await new Promise<void>((resolve) => setImmediate(resolve))
      }
      if (request.finish === true && !answered) req.end()
    }
    void pump()
    return Effect.sync(() => req.destroy())
  })

/** The daemon and its datacenter as one scoped service, for `layer(...)` blocks that share a running server. */
export class TestDaemon extends Context.Tag("test/TestDaemon")<TestDaemon, { readonly dc: Datacenter; readonly daemon: DaemonClient }>() {}

export const TestDaemonLive = (
  overrides: Partial<DaemonSettings> = {},
  options: Parameters<typeof makeDatacenter>[0] = {}
): Layer.Layer<TestDaemon, HttpServerError.ServeError> =>
  Layer.scoped(TestDaemon, Effect.gen(function*() {
    const dc = yield* makeDatacenter(options)
    const daemon = yield* serveDaemon(dc, overrides)
    return { dc, daemon }
  }))
