import { HttpClientRequest } from "@effect/platform"
import { assert, describe, expect, it } from "@effect/vitest"
import { Cause, Chunk, Effect, Either, Fiber, Stream } from "effect"
import { vi } from "vitest"
import { createServer } from "node:http"
import type { IncomingMessage, ServerResponse } from "node:http"
import { createServer as createTcpServer, Socket as NetSocket } from "node:net"
import type { AddressInfo, Socket } from "node:net"
import { makeTransport, streamKeepAliveMillis } from "../../src/services/HttpTransport.js"
import { describeFailure, makeHttp } from "../../src/services/Http.js"
import { listenOnLoopback } from "../support/Listen.js"

/**
 * The wire under Http.ts, against a bare Node server on loopback that can misbehave in ways the embedded
 * Consul and Marathon do not: cut a body short, stall after the headers, drop a stream.
 */

interface Seen {
  readonly method: string
  readonly url: string
  readonly headers: IncomingMessage["headers"]
  readonly body: string
}

interface RawServer {
  readonly url: string
  readonly seen: Array<Seen>
  readonly connections: () => number
  readonly closed: () => number
}

const rawServer = (handle: (request: IncomingMessage, response: ServerResponse, socket: Socket) => void) =>
  Effect.gen(function*() {
    const seen: Array<Seen> = []
    let connections = 0
    let closed = 0
    const server = createServer((request, response) => {
      const chunks: Array<Buffer> = []
      request.on("data", (chunk: Buffer) => chunks.push(chunk))
      request.on("end", () => {
        seen.push({ method: request.method ?? "", url: request.url ?? "", headers: request.headers, body: Buffer.concat(chunks).toString("utf8") })
        handle(request, response, request.socket)
      })
    })
    server.on("connection", (socket: Socket) => {
      connections++
      socket.on("close", () => closed++)
    })
    const port = yield* listenOnLoopback(server)
    return { url: `http://127.0.0.1:${port}`, seen, connections: () => connections, closed: () => closed } satisfies RawServer
  })

/**
 * A raw HTTP/1.1 server that answers `{}` with keep-alive (with the status `status(connection)` gives, 200 by
 * default), or resets the connection once it has read a request when `resets(connection, requestOnIt)` says so
 * (connections and requests counted from 1).
 */
const resettingServer = (
  resets: (connection: number, request: number) => boolean,
  status: (connection: number) => string = () => "200 OK"
) =>
  Effect.gen(function*() {
    let connections = 0
    let requests = 0
    const server = createTcpServer((socket) => {
      const connection = ++connections
      let onThis = 0
      socket.on("error", () => undefined)
      socket.on("data", (chunk: Buffer) => {
        const heads = chunk.toString("latin1").split("\r\n\r\n").length - 1
        onThis += heads
        requests += heads
        if (resets(connection, onThis)) return socket.resetAndDestroy()
        socket.write(`HTTP/1.1 ${status(connection)}\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\n{}`)
      })
    })
    // a raw TCP server (node:net), not an HTTP one: listenOnLoopback does not serve it
    yield* Effect.acquireRelease(
      Effect.async<void>((resume) => {
        server.listen(0, "127.0.0.1", () => resume(Effect.void))
      }),
      () => Effect.async<void>((resume) => {
        server.close(() => resume(Effect.void))
      })
    )
    return {
      url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/agent/services`,
      connections: () => connections,
      requests: () => requests
    }
  })

const waitUntil = (condition: () => boolean) =>
  Effect.gen(function*() {
    for (let i = 0; i < 200 && !condition(); i++) yield* Effect.sleep("10 millis")
    return condition()
  })

describe("HttpTransport (Node's http under Http.ts)", () => {
  it.scopedLive("an empty PUT carries content-length: 0, a JSON body its own length; keep-alive reuses connections", () =>
    Effect.gen(function*() {
      const server = yield* rawServer((_request, response) => response.end("{}"))
      const transport = yield* makeTransport({ connections: 4 })
      const empty = yield* transport.exchange(HttpClientRequest.put(`${server.url}/v1/agent/service/deregister/x`), 2_000)
      expect(empty.status).toBe(200)
      expect(server.seen[0]!.headers["content-length"]).toBe("0")
      expect(server.seen[0]!.headers["transfer-encoding"]).toBeUndefined()
      const body = { ID: "a", Name: "wébapp", Tags: ["x"] }
      yield* transport.exchange(HttpClientRequest.put(`${server.url}/v1/agent/service/register`).pipe(HttpClientRequest.bodyUnsafeJson(body)), 2_000)
      expect(JSON.parse(server.seen[1]!.body)).toEqual(body)
      expect(server.seen[1]!.headers["content-length"]).toBe(String(Buffer.byteLength(JSON.stringify(body))))
      expect(server.seen[1]!.headers["content-type"]).toBe("application/json")
      // one after the other: the same connection every time (closed once idle for idleMillis, below)
      for (let i = 0; i < 20; i++) yield* transport.exchange(HttpClientRequest.get(`${server.url}/v1/agent/services`), 2_000)
      expect(server.connections()).toBe(1)
      // at once: no more connections than the pool allows
      yield* Effect.forEach(Array.from({ length: 40 }, (_, i) => i), () => transport.exchange(HttpClientRequest.get(`${server.url}/x`), 2_000), { concurrency: 40 })
      expect(server.connections()).toBeLessThanOrEqual(4)
    }))

  it.scopedLive("an idle pooled connection is closed by the client after idleMillis; the next request opens another", () =>
    Effect.gen(function*() {
      const server = yield* rawServer((_request, response) => response.end("{}"))
      const transport = yield* makeTransport({ connections: 2, idleMillis: 100 })
      yield* transport.exchange(HttpClientRequest.get(`${server.url}/a`), 2_000)
      expect(yield* waitUntil(() => server.closed() === 1)).toBe(true)
      yield* transport.exchange(HttpClientRequest.get(`${server.url}/b`), 2_000)
      expect(server.connections()).toBe(2)
    }))

  it.scopedLive("URL parameters are encoded; the answer is read whole, whatever its status", () =>
    Effect.gen(function*() {
      const server = yield* rawServer((request, response) => {
        response.statusCode = request.url?.startsWith("/missing") ? 404 : 200
        response.end(request.url?.startsWith("/missing") ? "no such thing" : "[1,2]")
      })
      const transport = yield* makeTransport({ connections: 2 })
      const ok = yield* transport.exchange(
        HttpClientRequest.get(`${server.url}/v1/agent/services`).pipe(HttpClientRequest.setUrlParam("filter", "ID == \"a b\"")),
        2_000
      )
      expect(server.seen[0]!.url).toBe("/v1/agent/services?filter=ID+%3D%3D+%22a+b%22")
      expect(yield* ok.json).toEqual([1, 2])
      // a query written into the URL, and a path that needs encoding, are sent as a browser would
      yield* transport.exchange(HttpClientRequest.get(`${server.url}/v1/kv/consular/?recurse=true`), 2_000)
      expect(server.seen[1]!.url).toBe("/v1/kv/consular/?recurse=true")
      yield* transport.exchange(HttpClientRequest.get(`${server.url}/v1/kv/a b/é#fragment`), 2_000)
      expect(server.seen[2]!.url).toBe("/v1/kv/a%20b/%C3%A9")
      const missing = yield* transport.exchange(HttpClientRequest.get(`${server.url}/missing`), 2_000)
      expect(missing.status).toBe(404)
      expect(yield* missing.text).toBe("no such thing")
    }))

  it.scopedLive("a body cut short is a Transport failure, a stalled one a timeout; Http.send retries both", () =>
    Effect.gen(function*() {
      let calls = 0
      const server = yield* rawServer((request, response, socket) => {
        calls++
        if (request.url === "/cut" || (request.url === "/flaky" && calls <= 2)) {
          response.writeHead(200, { "content-length": "100" })
          response.write("{\"partial\":")
          setTimeout(() => socket.destroy(), 10)
          return
        }
        if (request.url === "/stall") {
          response.writeHead(200, { "content-length": "100" })
          response.write("{")
          return // never ends
        }
        response.end("{\"whole\":true}")
      })
      const transport = yield* makeTransport({ connections: 2 })
      const cut = yield* Effect.flip(transport.exchange(HttpClientRequest.get(`${server.url}/cut`), 2_000))
      assert(cut._tag === "RequestError" && cut.reason === "Transport", `got ${cut._tag}`)
      const stalled = yield* Effect.flip(transport.exchange(HttpClientRequest.get(`${server.url}/stall`), 200))
      expect(Cause.isTimeoutException(stalled)).toBe(true)

      calls = 0
      const http = yield* makeHttp({ timeout: "2 seconds", retries: 3, retryBase: "1 millis" })
      const answer = yield* http.send(HttpClientRequest.get(`${server.url}/flaky`), (response) => response.json)
      expect(answer).toEqual({ whole: true })
      expect(calls).toBe(3) // two cut bodies, then the whole one
    }))

  it.scopedLive("a pooled connection the server closes as a request goes out: replayed once on a fresh one; a fresh one that fails is a failure", () =>
    Effect.gen(function*() {
      // connection 1 answers its first request and resets on the second, as a server whose keep-alive timeout
      // struck just then; connection 2 answers; connection 3 resets at once
      const { url, connections: count } = yield* resettingServer((connection, requests) => (connection === 1 && requests === 2) || connection === 3)
      const connections = () => count()
      const transport = yield* makeTransport({ connections: 1 })
      expect((yield* transport.exchange(HttpClientRequest.get(url), 2_000)).status).toBe(200)
      expect((yield* transport.exchange(HttpClientRequest.get(url), 2_000)).status).toBe(200)
      expect(connections()).toBe(2)
      // a fresh transport: its first connection is new, so a reset is the server's answer, not a stale socket
      const fresh = yield* makeTransport({ connections: 1 })
      const failure = yield* Effect.flip(fresh.exchange(HttpClientRequest.get(url), 2_000))
      assert(failure._tag === "RequestError" && failure.reason === "Transport", `got ${failure._tag}`)
      expect(connections()).toBe(3)
    }))

  it.scopedLive("a request that is not idempotent (POST; a PUT that says so) is not replayed when its pooled connection resets", () =>
    Effect.gen(function*() {
      // every connection answers its first request and resets on the second: the server may have read it
      const server = yield* resettingServer((_connection, requests) => requests === 2)
      const transport = yield* makeTransport({ connections: 1 })
      const subscribe = HttpClientRequest.post(`${server.url.replace("/v1/agent/services", "")}/v2/eventSubscriptions?callbackUrl=x`)
      const sessionCreate = HttpClientRequest.put(`${server.url.replace("/v1/agent/services", "")}/v1/session/create`)
      for (const [request, options] of [[subscribe, undefined], [sessionCreate, { idempotent: false }]] as const) {
        const before = server.connections()
        expect((yield* transport.exchange(HttpClientRequest.get(server.url), 2_000)).status).toBe(200)
        const failure = yield* Effect.flip(transport.exchange(request, 2_000, options))
        assert(failure._tag === "RequestError" && failure.reason === "Transport", `got ${failure._tag}`)
        expect(server.connections() - before).toBe(1) // no second connection: the request went out once
      }
      // the same PUT without the option is idempotent by its method: replayed on a fresh connection
      expect((yield* transport.exchange(HttpClientRequest.get(server.url), 2_000)).status).toBe(200)
      const before = server.connections()
      expect((yield* transport.exchange(sessionCreate, 2_000)).status).toBe(200)
      expect(server.connections() - before).toBe(1)
    }))

  it.scopedLive("Http.send retries a request that is not idempotent only when it was never sent (refused), not after a reset", () =>
    Effect.gen(function*() {
      const server = yield* resettingServer(() => true) // reads each request, then resets
      const http = yield* makeHttp({ timeout: "2 seconds", retries: 3, retryBase: "1 millis" })
      const post = yield* Effect.flip(http.send(HttpClientRequest.post(server.url), (response) => response.json))
      expect(describeFailure(post)).toContain("ECONNRESET")
      expect(server.requests()).toBe(1)
      yield* Effect.flip(http.send(HttpClientRequest.put(server.url), (response) => response.json, { idempotent: false }))
      expect(server.requests()).toBe(2)
      yield* Effect.flip(http.send(HttpClientRequest.put(server.url), (response) => response.json))
      expect(server.requests()).toBe(6) // idempotent: the first attempt and three retries

      // a port nobody listens on yet: refused (never sent), so the POST is retried until the server is up
      const late = createServer((_request, response) => response.end("{\"late\":true}"))
      const port = yield* Effect.async<number>((resume) => {
        const probe = createTcpServer().listen(0, "127.0.0.1", () => {
          const free = (probe.address() as AddressInfo).port
          probe.close(() => resume(Effect.succeed(free)))
        })
      })
      const patient = yield* makeHttp({ timeout: "2 seconds", retries: 8, retryBase: "50 millis", retryCap: "200 millis" })
      const fiber = yield* Effect.fork(patient.send(HttpClientRequest.post(`http://127.0.0.1:${port}/v2/eventSubscriptions`), (response) => response.json))
      yield* Effect.sleep("30 millis")
      yield* Effect.acquireRelease(
        Effect.async<void>((resume) => {
          late.listen(port, "127.0.0.1", () => resume(Effect.void))
        }),
        () => Effect.async<void>((resume) => {
          late.closeAllConnections()
          late.close(() => resume(Effect.void))
        })
      )
      expect(yield* Fiber.join(fiber)).toEqual({ late: true })
    }))

  it.scopedLive("an answer over the body cap fails naming the cap and the request: at once by its content-length, or as it streams", () =>
    Effect.gen(function*() {
      let wrote = 0
      const server = yield* rawServer((request, response) => {
        if (request.url === "/declared") {
          response.writeHead(200, { "content-length": String(10_000_000) })
          response.write("[") // the rest never comes: the answer is refused on its head
          return
        }
        if (request.url === "/small") return response.end("[1,2,3]")
        // chunked, no length: 64 KiB pieces until the client goes away (bounded at 512 pieces, 32 MiB)
        response.writeHead(200, { "content-type": "application/json" })
        const piece = Buffer.alloc(64 * 1024, 0x20)
        const more = () => {
          while (wrote < 512 && !response.destroyed) {
            wrote++
            if (!response.write(piece)) return response.once("drain", more)
          }
          response.end()
        }
        response.on("close", () => undefined)
        more()
      })
      const http = yield* makeHttp({ timeout: "5 seconds", retries: 3, retryBase: "1 millis", maxBodyBytes: 256 * 1024 })
      expect(yield* http.send(HttpClientRequest.get(`${server.url}/small`), (response) => response.json)).toEqual([1, 2, 3])

      const declared = yield* Effect.flip(http.send(HttpClientRequest.get(`${server.url}/declared`), (response) => response.json))
      expect(describeFailure(declared)).toBe(
        `GET ${server.url}/declared: the answer's content-length (10000000 bytes) is larger than the 262144 bytes cap on an answer`
      )
      const streamed = yield* Effect.flip(http.send(HttpClientRequest.get(`${server.url}/chunked`), (response) => response.json))
      expect(describeFailure(streamed)).toBe(`GET ${server.url}/chunked: the answer is larger than the 262144 bytes cap on an answer`)
      expect(wrote).toBeLessThan(512) // the client stopped reading: the server could not write it all
      // final, not transient: each asked once (not retried)
      expect(server.seen.filter((seen) => seen.url === "/declared" || seen.url === "/chunked")).toHaveLength(2)

      // the cap is named in MiB when it is whole MiB
      const transport = yield* makeTransport({ connections: 1, maxBodyBytes: 1024 * 1024 })
      const mib = yield* Effect.flip(transport.exchange(HttpClientRequest.get(`${server.url}/declared`), 2_000))
      expect(mib.message).toContain("1 MiB cap")
    }))

  it.scopedLive("an event stream has no total cap, but one event longer than the cap fails the stream", () =>
    Effect.gen(function*() {
      const frame = `data: ${"x".repeat(900)}\n\n` // under 1 KiB each, 8 KiB in all
      const server = yield* rawServer((request, response) => {
        response.writeHead(200, { "content-type": "text/event-stream" })
        if (request.url === "/long") {
          // one event that never ends, in pieces
          for (let i = 0; i < 8; i++) response.write(`data: ${"y".repeat(900)}`)
          return
        }
        // the blank lines fall across writes ("\n" | "\n", "\r\n\r" | "\n") and inside them
        for (let i = 0; i < 4; i++) response.write(frame.slice(0, -1))
        response.write("\n")
        for (let i = 0; i < 4; i++) response.write(`data: ${"z".repeat(900)}\r\n\r`)
        response.end("\n")
      })
      const transport = yield* makeTransport({ connections: 1, maxBodyBytes: 1024 })
      const many = yield* transport.openStream(HttpClientRequest.get(`${server.url}/many`), 2_000)
      const text = yield* many.pipe(Stream.decodeText(), Stream.runCollect, Effect.map(Chunk.join("")))
      expect(text.length).toBeGreaterThan(1024 * 7)
      const long = yield* transport.openStream(HttpClientRequest.get(`${server.url}/long`), 2_000)
      const failed = yield* long.pipe(Stream.runCollect, Effect.flip)
      assert(failed._tag === "ResponseError", `got ${failed._tag}`)
      expect(failed.message).toContain("an event of the stream is larger than the 1024 bytes cap")
    }))

  it.scopedLive("a request that is not idempotent (a Consul session's creation) reaches the server at most once: no replay on a stale connection, no retry", () =>
    Effect.gen(function*() {
      // connection 1 answers its first request and resets on the second (a keep-alive timeout striking just then);
      // every later connection answers 500, which send retries for an idempotent request
      const server = yield* resettingServer(
        (connection, request) => connection === 1 && request === 2,
        (connection) => connection === 1 ? "200 OK" : "500 Internal Server Error"
      )
      const url = server.url.replace("/v1/agent/services", "/v1/session/create")
      let base = 0
      const requests = () => server.requests() - base
      const http = yield* makeHttp({ timeout: "2 seconds", retries: 3, retryBase: "1 millis", connections: 1 })
      yield* http.send(HttpClientRequest.put(url), (response) => response.json, { idempotent: false })
      base = server.requests()
      const stale = yield* Effect.flip(http.send(HttpClientRequest.put(url), (response) => response.json, { idempotent: false }))
      assert(stale._tag === "RequestError" && stale.reason === "Transport", `got ${stale._tag}`)
      expect(requests()).toBe(1) // the reset one, not sent again on a fresh connection
      base = server.requests()
      const refused = yield* Effect.flip(http.send(HttpClientRequest.put(url), (response) => response.json, { idempotent: false }))
      assert(refused._tag === "ResponseError" && refused.response.status === 500, `got ${refused._tag}`)
      expect(requests()).toBe(1) // a 500 is not retried either
      base = server.requests()
      yield* Effect.flip(http.send(HttpClientRequest.put(url), (response) => response.json))
      expect(requests()).toBe(4) // the same request, idempotent: one try and three retries
    }))

  it.scopedLive("an interrupted exchange closes its connection instead of leaving it in the pool", () =>
    Effect.gen(function*() {
      const server = yield* rawServer(() => {
        // never answers
      })
      const transport = yield* makeTransport({ connections: 2 })
      const fiber = yield* Effect.fork(transport.exchange(HttpClientRequest.get(`${server.url}/hang`), 60_000))
      expect(yield* waitUntil(() => server.seen.length === 1)).toBe(true)
      yield* Fiber.interrupt(fiber)
      expect(yield* waitUntil(() => server.closed() === 1)).toBe(true)
    }))

  it.scopedLive("a header Node refuses and an unparsable URL are failures, not crashes", () =>
    Effect.gen(function*() {
      const server = yield* rawServer((_request, response) => response.end("{}"))
      const transport = yield* makeTransport({ connections: 2 })
      const badHeader = yield* Effect.flip(
        transport.exchange(HttpClientRequest.get(`${server.url}/`).pipe(HttpClientRequest.setHeader("x-token", "a\r\nb")), 2_000)
      )
      assert(badHeader._tag === "RequestError" && badHeader.reason === "Encode", `got ${badHeader._tag}`)
      const badUrl = yield* Effect.flip(transport.exchange(HttpClientRequest.get("http://exa mple:99999/"), 2_000))
      assert(badUrl._tag === "RequestError" && badUrl.reason === "InvalidUrl", `got ${badUrl._tag}`)
      expect(server.seen).toHaveLength(0)
    }))

  it.scopedLive("bodies: empty JSON is null, broken JSON a Decode failure, bytes as sent", () =>
    Effect.gen(function*() {
      const server = yield* rawServer((request, response) => response.end(request.url === "/broken" ? "{nope" : request.url === "/empty" ? "" : "é€"))
      const transport = yield* makeTransport({ connections: 2 })
      expect(yield* (yield* transport.exchange(HttpClientRequest.get(`${server.url}/empty`), 2_000)).json).toBeNull()
      const broken = yield* Effect.flip((yield* transport.exchange(HttpClientRequest.get(`${server.url}/broken`), 2_000)).json)
      expect(broken.reason).toBe("Decode")
      const bytes = yield* transport.exchange(HttpClientRequest.get(`${server.url}/bytes`), 2_000)
      expect(new Uint8Array(yield* bytes.arrayBuffer)).toEqual(new Uint8Array(Buffer.from("é€")))
      expect(yield* bytes.text).toBe("é€")
    }))

  it.scopedLive("streams: chunks as they come, a non-2xx read whole as a ResponseError, a dropped stream a Transport failure", () =>
    Effect.gen(function*() {
      const server = yield* rawServer((request, response, socket) => {
        if (request.url === "/gone") {
          response.statusCode = 404
          response.end("no events here")
          return
        }
        response.writeHead(200, { "content-type": "text/event-stream" })
        response.write("data: one\n\n")
        setTimeout(() => response.write("data: two\n\n"), 20)
        setTimeout(() => request.url === "/drop" ? socket.destroy() : response.end(), 40)
      })
      const transport = yield* makeTransport({ connections: 2 })
      const whole = yield* transport.openStream(HttpClientRequest.get(`${server.url}/events`), 2_000)
      const text = yield* whole.pipe(Stream.decodeText(), Stream.runCollect, Effect.map(Chunk.join("")))
      expect(text).toBe("data: one\n\ndata: two\n\n")

      const gone = yield* Effect.flip(transport.openStream(HttpClientRequest.get(`${server.url}/gone`), 2_000))
      assert(gone._tag === "ResponseError" && gone.response.status === 404, `got ${gone._tag}`)
      expect(yield* gone.response.text).toBe("no events here")

      const dropping = yield* transport.openStream(HttpClientRequest.get(`${server.url}/drop`), 2_000)
      const dropped = yield* dropping.pipe(Stream.runCollect, Effect.either)
      assert(Either.isLeft(dropped) && dropped.left._tag === "RequestError" && dropped.left.reason === "Transport", "a dropped stream fails")
    }))

  it.scopedLive("a stream's socket sends TCP keep-alive probes after 15 s idle; pooled exchanges' sockets do not use that setting", () =>
    Effect.gen(function*() {
      const server = yield* rawServer((request, response) => {
        if (request.url === "/events") response.writeHead(200, { "content-type": "text/event-stream" }).flushHeaders()
        else response.end("{}")
      })
      const port = Number(new URL(server.url).port)
      const spy = vi.spyOn(NetSocket.prototype, "setKeepAlive")
      yield* Effect.addFinalizer(() => Effect.sync(() => spy.mockRestore()))
      const transport = yield* makeTransport({ connections: 2 })
      yield* transport.exchange(HttpClientRequest.get(`${server.url}/v1/agent/services`), 2_000)
      const toServer = () => spy.mock.contexts.flatMap((socket, i) => socket instanceof NetSocket && socket.remotePort === port ? [spy.mock.calls[i]] : [])
      expect(toServer()).not.toContainEqual([true, streamKeepAliveMillis])
      yield* transport.openStream(HttpClientRequest.get(`${server.url}/events`), 2_000)
      expect(streamKeepAliveMillis).toBe(15_000)
      expect(toServer()).toContainEqual([true, streamKeepAliveMillis])
    }))

  it.scopedLive("Http: the client's default headers go under a request's own (a stream's accept survives), never over", () =>
    Effect.gen(function*() {
      const server = yield* rawServer((request, response) => {
        if (request.url === "/v2/events") response.writeHead(200, { "content-type": "text/event-stream" }).end()
        else response.end("{}")
      })
      const http = yield* makeHttp({ timeout: "2 seconds", retries: 0, headers: { Authorization: "token=t" } })
      yield* http.send(HttpClientRequest.get(`${server.url}/v2/apps`), (response) => response.json)
      yield* http.openStream(HttpClientRequest.get(`${server.url}/v2/events`).pipe(HttpClientRequest.setHeader("Accept", "text/event-stream")))
      expect(server.seen.map((seen) => [seen.url, seen.headers["accept"], seen.headers["authorization"]])).toEqual([
        ["/v2/apps", "application/json", "token=t"],
        ["/v2/events", "text/event-stream", "token=t"]
      ])
    }))
})
