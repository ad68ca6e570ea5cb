import { HttpServer } from "@effect/platform"
import type { HttpApp, HttpServerError, HttpServerRequest } from "@effect/platform"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as NodeHttpServerRequest from "@effect/platform-node/NodeHttpServerRequest"
import { Effect } from "effect"
import type { Scope } from "effect"
import * as Http from "node:http"
import * as Https from "node:https"

/** What the embedded servers have in common: one Node listener per address, optionally TLS. */

export interface ServerTls {
  /** PEM contents */
  readonly cert: string
  readonly key: string
}

export interface ListenOptions {
  readonly address: string
  /** 0: any free port */
  readonly port: number
  readonly tls?: ServerTls | undefined
}

/**
 * Serves `app` on one address until the scope closes; answers the port bound. Closing drops every open
 * connection first: a hanging request or an event stream would otherwise hold `server.close()` forever.
 */
export const listen = <E, R>(
  app: HttpApp.Default<E, R>,
  options: ListenOptions
): Effect.Effect<number, HttpServerError.ServeError, Scope.Scope | Exclude<Exclude<R, HttpServerRequest.HttpServerRequest>, HttpServer.HttpServer>> =>
  Effect.gen(function*() {
    const tls = options.tls
    const node: Http.Server = tls === undefined
      ? Http.createServer()
      : Https.createServer({ cert: tls.cert, key: tls.key })
    const server = yield* NodeHttpServer.make(() => node, { host: options.address, port: options.port })
    yield* Effect.addFinalizer(() => Effect.sync(() => node.closeAllConnections()))
    // no tracer is exported: spans would only cost each request a stack trace
    yield* HttpServer.serveEffect(app).pipe(Effect.provideService(HttpServer.HttpServer, server), Effect.withTracerEnabled(false))
    return server.address._tag === "TcpAddress" ? server.address.port : options.port
  })

/**
 * Drops the connection without an answer: the closest an open listener gets to a refused connection. The
 * handler then waits to be interrupted, which the socket's close does.
 */
export const dropConnection = (request: HttpServerRequest.HttpServerRequest): Effect.Effect<never> =>
  Effect.zipRight(
    Effect.sync(() => NodeHttpServerRequest.toIncomingMessage(request).socket.destroy()),
    Effect.never
  )

/** Path and query of a request; the path stays percent-encoded, so that an encoded "/" is told from a slash. */
export const requestTarget = (request: HttpServerRequest.HttpServerRequest): { readonly path: string; readonly query: URLSearchParams } => {
  const url = new URL(request.url, "http://embedded.invalid")
  return { path: url.pathname, query: url.searchParams }
}

/** decodeURIComponent that answers undefined for a malformed escape instead of throwing */
export const decodePath = (raw: string): string | undefined => {
  try {
    return decodeURIComponent(raw)
  } catch {
    return undefined
  }
}
