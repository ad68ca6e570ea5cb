import { HttpRouter, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Queue, Schedule, Scope } from "effect"
import { listen } from "../../src/embedded/Listen.js"
import { serveMarathon } from "../../src/embedded/MarathonServer.js"
import type { MarathonServerOptions } from "../../src/embedded/MarathonServer.js"
import { MarathonStore } from "../../src/services/MarathonStore.js"
import * as Http from "node:http"
import { call } from "../support/Fetch.js"
import type { Answer } from "../support/Fetch.js"

/** The embedded Marathon's wire format, event stream and callback delivery. */

const json = (answer: Answer): unknown => JSON.parse(answer.text)

const setup = (options: MarathonServerOptions = {}) =>
  Effect.gen(function*() {
    const store = new MarathonStore()
    store.putApp("/grp/web", { domain: "example.org" })
    store.setTask("/grp/web", { id: "web.1", host: "127.0.0.2", ports: [31000] }, false)
    store.putApp("/empty")
    const server = yield* serveMarathon(store, options)
    return { store, server, url: server.url }
  })

interface Frame {
  readonly event: string
  readonly data: unknown
}

/**
 * An open `GET /v2/events` over Node's http (raw bytes and headers, as a client sees them); `next(n)` reads the
 * next n frames, bounded by a timeout, skipping heartbeats. Closed with the scope.
 */
const openEvents = (url: string, headers: Record<string, string> = { accept: "text/event-stream" }) =>
  Effect.gen(function*() {
    const response = yield* Effect.async<Http.IncomingMessage, Error>((resume) => {
      const request = Http.get(url, { headers, agent: false }, (incoming) => resume(Effect.succeed(incoming)))
      request.on("error", (error) => resume(Effect.fail(error)))
    })
    yield* Effect.addFinalizer(() => Effect.sync(() => response.destroy()))
    let raw = ""
    let ended = false
    const waiters = new Set<() => void>()
    const wake = () => waiters.forEach((waiter) => waiter())
    response.setEncoding("utf8")
    response.on("data", (chunk: string) => {
      raw += chunk
      wake()
    })
    response.on("close", () => {
      ended = true
      wake()
    })
    let read = 0
    const nextFrame = (): Frame | undefined => {
      for (;;) {
        // a frame never starts with CRLF: that is a heartbeat
        if (raw.startsWith("\r\n", read)) {
          read += 2
          continue
        }
        const end = raw.indexOf("\r\n\r\n", read)
        if (end === -1) return undefined
        const lines = raw.slice(read, end).split("\r\n")
        read = end + 4
        const field = (name: string) => lines.find((line) => line.startsWith(`${name}: `))?.slice(name.length + 2) ?? ""
        return { event: field("event"), data: JSON.parse(field("data")) }
      }
    }
    const next = (n: number) =>
      Effect.async<Array<Frame>, Error>((resume) => {
        const frames: Array<Frame> = []
        const check = () => {
          while (frames.length < n) {
            const frame = nextFrame()
            if (frame === undefined) break
            frames.push(frame)
          }
          if (frames.length === n) {
            waiters.delete(check)
            resume(Effect.succeed(frames))
          } else if (ended) {
            waiters.delete(check)
            resume(Effect.fail(new Error("stream ended")))
          }
        }
        waiters.add(check)
        check()
        return Effect.sync(() => waiters.delete(check))
      }).pipe(Effect.timeout("2 seconds"))
    return { response, next, raw: () => raw, close: () => response.destroy() }
  })

/** Polls (bounded) until the store has `count` listeners again: a dropped stream unsubscribes asynchronously. */
const listenersBack = (store: MarathonStore, count: number) =>
  Effect.repeat(Effect.sync(() => store.listenerCount), { until: (n) => n === count, schedule: Schedule.spaced("5 millis") }).pipe(
    Effect.timeout("2 seconds")
  )

/** A callback receiver on loopback: each POSTed body lands in the queue. */
const receiver = Effect.gen(function*() {
  const received = yield* Queue.unbounded<unknown>()
  const app = HttpRouter.empty.pipe(
    HttpRouter.post("/events", Effect.gen(function*() {
      const request = yield* HttpServerRequest.HttpServerRequest
      yield* Queue.offer(received, yield* request.json)
      return HttpServerResponse.empty({ status: 200 })
    }).pipe(Effect.orDie))
  )
  const port = yield* listen(app, { address: "127.0.0.1", port: 0 })
  const take = Queue.take(received).pipe(Effect.timeout("2 seconds"))
  return { url: `http://127.0.0.1:${port}/events?registration=consular`, received, take }
})

describe("embedded Marathon", () => {
  it.scopedLive("apps: tasks only with embed=apps.tasks", () =>
    Effect.gen(function*() {
      const { url } = yield* setup()
      const plain = yield* call(`${url}/v2/apps`)
      expect(plain.contentType).toContain("application/json")
      expect(json(plain)).toEqual({ apps: [expect.not.objectContaining({ tasks: expect.anything() }), expect.anything()] })
      expect(json(yield* call(`${url}/v2/apps?embed=apps.tasks`))).toEqual({
        apps: [
          expect.objectContaining({ id: "/grp/web", labels: { domain: "example.org" }, tasks: [expect.objectContaining({ id: "web.1", host: "127.0.0.2", ports: [31000], state: "TASK_RUNNING" })] }),
          expect.objectContaining({ id: "/empty", tasks: [] })
        ]
      })
    }))

  it.scopedLive("one app and its tasks by an id with slashes; Marathon's 404 message", () =>
    Effect.gen(function*() {
      const { url, store } = yield* setup()
      expect(json(yield* call(`${url}/v2/apps/grp/web`))).toEqual({ app: expect.objectContaining({ id: "/grp/web" }) })
      expect(json(yield* call(`${url}/v2/apps/grp/web/tasks`))).toEqual({ tasks: [expect.objectContaining({ id: "web.1", appId: "/grp/web" })] })
      const missing = yield* call(`${url}/v2/apps/grp/nope`)
      expect(missing.status).toBe(404)
      expect(json(missing)).toEqual({ message: "App '/grp/nope' does not exist" })
      expect((yield* call(`${url}/v2/apps/grp/nope/tasks`)).status).toBe(404)
      expect(json(yield* call(`${url}/v2/apps/empty/tasks`))).toEqual({ tasks: [] })
      store.tasksNotFoundWhenEmpty = true
      expect((yield* call(`${url}/v2/apps/empty/tasks`)).status).toBe(404)
    }))

  it.scopedLive("subscriptions: subscribe, list, unsubscribe; 400 when disabled, 404 when removed", () =>
    Effect.gen(function*() {
      const { url, store } = yield* setup()
      const callback = "http://127.0.0.1:7000/events?registration=consular"
      const query = `callbackUrl=${encodeURIComponent(callback)}`
      const subscribed = yield* call(`${url}/v2/eventSubscriptions?${query}`, { method: "POST" })
      expect(json(subscribed)).toEqual(expect.objectContaining({ callbackUrl: callback, clientIp: "127.0.0.1", eventType: "subscribe_event" }))
      expect(json(yield* call(`${url}/v2/eventSubscriptions`))).toEqual({ callbackUrls: [callback] })
      const unsubscribed = yield* call(`${url}/v2/eventSubscriptions?${query}`, { method: "DELETE" })
      expect(json(unsubscribed)).toEqual(expect.objectContaining({ eventType: "unsubscribe_event" }))
      expect(store.subscriptions).toEqual([])

      store.callbacks = "disabled"
      for (const method of ["GET", "POST", "DELETE"]) {
        const refused = yield* call(`${url}/v2/eventSubscriptions?${query}`, { method })
        expect(refused.status).toBe(400)
        expect(json(refused)).toEqual({
          // Marathon 1.4's NoopHttpCallbackSubscriptionService: a stripMargin'd message, line break included
          message: "http event callback system is not running on this Marathon instance. Please re-start this instance with\n\"--event_subscriber http_callback\"."
        })
      }
      // >= 1.5 has no such route: Jersey 1 (up to 1.6) answers 404 naming the path ...
      store.callbacks = "removed"
      const gone = yield* call(`${url}/v2/eventSubscriptions`)
      expect(gone.status).toBe(404)
      expect(json(gone)).toEqual({ message: "URI not found: /v2/eventSubscriptions" })
      expect((yield* call(`${url}/v2/eventSubscriptions?${query}`, { method: "POST" })).status).toBe(404)
      // ... and Jersey 2 (1.6.486 to 1.10) a 500: its NotFoundException meets MarathonExceptionMapper's catch-all
      store.unknownRouteStatus = 500
      const gone500 = yield* call(`${url}/v2/eventSubscriptions`)
      expect(gone500.status).toBe(500)
      expect(json(gone500)).toEqual({ message: "URI not found" })
      expect((yield* call(`${url}/v2/eventSubscriptions?${query}`, { method: "DELETE" })).status).toBe(500)
      expect(store.subscriptions).toEqual([])
    }))

  it.scopedLive("leader is this instance; LeaderResource's 404 while there is none", () =>
    Effect.gen(function*() {
      const { url, server, store } = yield* setup()
      expect(json(yield* call(`${url}/v2/leader`))).toEqual({ leader: `127.0.0.1:${server.port}` })
      store.leader = null
      const none = yield* call(`${url}/v2/leader`)
      expect(none.status).toBe(404)
      expect(json(none)).toEqual({ message: "There is no leader" })
    }))

  it.scopedLive("embed: InfoEmbedResolver takes tasks (or the deprecated failures) with any prefix or none", () =>
    Effect.gen(function*() {
      const { url } = yield* setup()
      for (const embed of ["apps.tasks", "app.tasks", "group.apps.tasks", "tasks", "apps.failures"]) {
        expect((json(yield* call(`${url}/v2/apps?embed=${embed}`)) as { apps: Array<{ tasks?: unknown }> }).apps[0]?.tasks, embed).toBeDefined()
      }
      for (const embed of ["apps.counts", "apps.deployments", "apps.lastTaskFailure"]) {
        expect((json(yield* call(`${url}/v2/apps?embed=${embed}`)) as { apps: Array<{ tasks?: unknown }> }).apps[0]?.tasks, embed).toBeUndefined()
      }
    }))

  it.scopedLive("faults: a status with a JSON message, invalid JSON, a body cut in half, a dropped connection", () =>
    Effect.gen(function*() {
      const { url, store } = yield* setup()
      const whole = (yield* call(`${url}/v2/apps?embed=apps.tasks`)).text

      store.fault = { _tag: "Status", status: 502 }
      const bad = yield* call(`${url}/v2/apps`)
      expect(bad.status).toBe(502)
      expect(json(bad)).toEqual({ message: "Bad Gateway" })

      store.fault = { _tag: "InvalidJson" }
      const invalid = yield* call(`${url}/v2/apps?embed=apps.tasks`)
      expect(invalid.status).toBe(200)
      expect(invalid.text).toBe("{\"apps\": [")

      store.fault = { _tag: "Truncated" }
      const truncated = yield* call(`${url}/v2/apps?embed=apps.tasks`)
      expect(truncated.status).toBe(200)
      expect(truncated.text).toBe(whole.slice(0, Math.floor(whole.length / 2)))

      store.fault = { _tag: "Refuse" }
      expect(Exit.isFailure(yield* Effect.exit(call(`${url}/v2/apps`)))).toBe(true)
      store.fault = undefined
      expect((yield* call(`${url}/v2/apps`)).status).toBe(200)
    }))

  it.scopedLive("auth: 401 with Marathon's message without credentials", () =>
    Effect.gen(function*() {
      const { url } = yield* setup({ basicAuth: { user: "ops", password: "pw" } })
      const denied = yield* call(`${url}/v2/apps`)
      expect(denied.status).toBe(401)
      expect(json(denied)).toEqual({ message: "Invalid username or password." })
      const basic = `Basic ${Buffer.from("ops:pw").toString("base64")}`
      expect((yield* call(`${url}/v2/apps`, { headers: { Authorization: basic } })).status).toBe(200)
      expect((yield* call(`${url}/v2/apps`, { headers: { Authorization: "token=pw" } })).status).toBe(401)
    }))

  it.scopedLive("event stream: Jetty's EventSourceServlet refuses a GET whose Accept is not exactly text/event-stream with 405, none included", () =>
    Effect.gen(function*() {
      const { url, store } = yield* setup()
      const baseline = store.listenerCount
      const refusals: Array<Record<string, string>> = [
        {},
        { accept: "application/json" },
        { accept: "*/*" },
        { accept: "text/event-stream, application/json" }, // one header line: Jetty compares it whole
        { accept: "text/event-stream;q=1" }
      ]
      for (const headers of refusals) {
        const refused = yield* openEvents(`${url}/v2/events`, headers)
        expect(refused.response.statusCode, JSON.stringify(headers)).toBe(405)
        // HttpServlet.doGet's message is the reason phrase, and Jetty's HTML error page says it again
        expect(refused.response.statusMessage).toBe("HTTP method GET is not supported by this URL")
        expect(refused.response.headers["content-type"]).toBe("text/html;charset=iso-8859-1")
        expect(refused.response.headers["cache-control"]).toBe("must-revalidate,no-cache,no-store")
        yield* Effect.async<void>((resume) => {
          refused.response.on("end", () => resume(Effect.void))
          refused.response.resume()
        }).pipe(Effect.timeout("2 seconds"))
        expect(refused.raw()).toContain("<h2>HTTP ERROR 405</h2>")
        expect(refused.raw()).toContain("Problem accessing /v2/events. Reason:\n<pre>    HTTP method GET is not supported by this URL</pre>")
      }
      expect(store.listenerCount).toBe(baseline)
      // a second Accept line with exactly the value is enough
      const twoLines = yield* Effect.async<Http.IncomingMessage>((resume) => {
        Http.get(`${url}/v2/events`, { agent: false, headers: ["host", new URL(url).host, "accept", "application/json", "accept", "text/event-stream"] }, (incoming) => resume(Effect.succeed(incoming)))
      })
      yield* Effect.addFinalizer(() => Effect.sync(() => twoLines.destroy()))
      expect(twoLines.statusCode).toBe(200)
    }))

  it.scopedLive("event stream: text/event-stream;charset=utf-8, Connection: close and not chunked, CRLF frames, CRLF heartbeats", () =>
    Effect.gen(function*() {
      const { url, store } = yield* setup({ heartbeat: "50 millis" })
      const events = yield* openEvents(`${url}/v2/events?event_type=deployment_info`)
      expect(events.response.statusCode).toBe(200)
      expect(events.response.headers["content-type"]).toBe("text/event-stream;charset=utf-8")
      expect(events.response.headers["connection"]).toBe("close")
      expect(events.response.headers["transfer-encoding"]).toBeUndefined()
      expect(events.response.headers["content-length"]).toBeUndefined()
      yield* Effect.repeat(Effect.sync(events.raw), { until: (raw) => raw.startsWith("\r\n\r\n"), schedule: Schedule.spaced("10 millis") }).pipe(Effect.timeout("2 seconds"))
      store.emit({ eventType: "deployment_info", id: "d1" })
      expect(yield* events.next(1)).toEqual([{ event: "deployment_info", data: { eventType: "deployment_info", id: "d1" } }])
      expect(events.raw()).toContain(`event: deployment_info\r\ndata: {"eventType":"deployment_info","id":"d1"}\r\n\r\n`)
    }))

  it.scopedLive("event stream: the store's events filtered by event_type; attached and detached go on the bus, as Marathon's stream actor publishes them", () =>
    Effect.gen(function*() {
      const { url, store } = yield* setup()
      const baseline = store.listenerCount
      const all = yield* openEvents(`${url}/v2/events`)
      const [attached] = yield* all.next(1)
      expect(attached).toEqual({ event: "event_stream_attached", data: expect.objectContaining({ eventType: "event_stream_attached", remoteAddress: "127.0.0.1" }) })
      const filtered = yield* openEvents(`${url}/v2/events?event_type=status_update_event&event_type=deployment_success`)
      // the second stream's attachment is an event for the first; the filtered one does not see its own
      expect((yield* all.next(1))[0]?.event).toBe("event_stream_attached")
      expect(store.listenerCount).toBe(baseline + 2)

      store.emit({ eventType: "api_post_event", appDefinition: {} })
      store.setTask("/grp/web", { id: "web.2", host: "127.0.0.3", ports: [31001] })
      store.emit({ eventType: "deployment_success", id: "d1" })

      expect((yield* all.next(3)).map((frame) => frame.event)).toEqual(["api_post_event", "status_update_event", "deployment_success"])
      const [update, deployment] = yield* filtered.next(2)
      expect(update).toEqual({
        event: "status_update_event",
        data: expect.objectContaining({ taskId: "web.2", taskStatus: "TASK_RUNNING", appId: "/grp/web", host: "127.0.0.3", ports: [31001] })
      })
      expect(deployment?.event).toBe("deployment_success")

      filtered.close()
      expect((yield* all.next(1))[0]).toEqual({ event: "event_stream_detached", data: expect.objectContaining({ eventType: "event_stream_detached" }) })
      all.close()
      // the server notices the closed connections and drops their listeners
      yield* listenersBack(store, baseline)
    }))

  it.scopedLive("callbacks: every event is POSTed to every subscriber, in order; a dead subscriber does not hold it up", () =>
    Effect.gen(function*() {
      const { url, store } = yield* setup({ callbackTimeout: "300 millis" })
      const first = yield* receiver
      const second = yield* receiver
      store.subscriptions.push("http://127.0.0.1:9/events", first.url) // nothing listens on port 9
      yield* call(`${url}/v2/eventSubscriptions?callbackUrl=${encodeURIComponent(second.url)}`, { method: "POST" })
      // subscribing is itself an event on the bus
      expect(yield* first.take).toEqual(expect.objectContaining({ eventType: "subscribe_event", callbackUrl: second.url }))
      expect(yield* second.take).toEqual(expect.objectContaining({ eventType: "subscribe_event" }))

      store.setTask("/grp/web", { id: "web.2", host: "127.0.0.3", ports: [31001] })
      store.endTask("/grp/web", "web.2", "TASK_KILLED")
      for (const subscriber of [first, second]) {
        const running = yield* subscriber.take
        const killed = yield* subscriber.take
        expect(running).toEqual(expect.objectContaining({ eventType: "status_update_event", taskId: "web.2", taskStatus: "TASK_RUNNING" }))
        expect(killed).toEqual(expect.objectContaining({ eventType: "status_update_event", taskId: "web.2", taskStatus: "TASK_KILLED" }))
      }
    }))

  it.scopedLive("callbacks: nothing is delivered while the callback system is disabled", () =>
    Effect.gen(function*() {
      const { store } = yield* setup()
      const subscriber = yield* receiver
      store.subscriptions.push(subscriber.url)
      store.callbacks = "disabled"
      store.emit({ eventType: "deployment_info", id: "ignored" })
      store.callbacks = "enabled"
      store.emit({ eventType: "deployment_info", id: "delivered" })
      // delivery keeps the order, so the first thing to arrive tells whether the earlier event was sent
      expect(yield* subscriber.take).toEqual({ eventType: "deployment_info", id: "delivered" })
    }))

  it.live("closing the scope ends at once, with an event stream open", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const { url, store } = yield* setup().pipe(Scope.extend(scope))
      const events = yield* openEvents(`${url}/v2/events`).pipe(Scope.extend(scope))
      yield* events.next(1)
      yield* Scope.close(scope, Exit.void).pipe(Effect.timeout("2 seconds"))
      // the stream's handler is interrupted once its socket is gone, just after the close
      yield* listenersBack(store, 0)
    }))

  it.scopedLive("health: an app's healthChecks, its tasks' healthCheckResults, and both health events on the stream", () =>
    Effect.gen(function*() {
      const { url, store } = yield* setup()
      store.setHealthChecks("/grp/web", [{ protocol: "HTTP", path: "/health", portIndex: 0 }])
      const before = json(yield* call(`${url}/v2/apps?embed=apps.tasks`)) as { apps: Array<{ id: string; healthChecks: unknown; tasks: Array<{ healthCheckResults?: unknown }> }> }
      const web = before.apps.find((app) => app.id === "/grp/web")!
      expect(web.healthChecks).toEqual([{ protocol: "HTTP", path: "/health", portIndex: 0 }])
      expect(web.tasks[0]?.healthCheckResults).toEqual([]) // no result yet
      expect(before.apps.find((app) => app.id === "/empty")?.healthChecks).toEqual([])
      const events = yield* openEvents(`${url}/v2/events?event_type=event_stream_attached&event_type=health_status_changed_event&event_type=instance_health_changed_event`)
      yield* events.next(1) // attached
      store.setTaskHealth("/grp/web", "web.1", false, { cause: "503" })
      const [changed, instance] = yield* events.next(2)
      expect(changed).toEqual({ event: "health_status_changed_event", data: expect.objectContaining({ appId: "/grp/web", instanceId: "web.1", alive: false }) })
      expect(instance).toEqual({ event: "instance_health_changed_event", data: expect.objectContaining({ instanceId: "web.1", runSpecId: "/grp/web", healthy: false }) })
      const after = json(yield* call(`${url}/v2/apps/grp/web/tasks`)) as { tasks: Array<{ healthCheckResults: Array<Record<string, unknown>> }> }
      expect(after.tasks[0]?.healthCheckResults).toEqual([
        expect.objectContaining({ alive: false, consecutiveFailures: 1, lastFailureCause: "503", instanceId: "web.1" })
      ])
      events.close()
    }))
})

describe("embedded Marathon: networking and pods, in Marathon's shapes", () => {
  const withPod = Effect.gen(function*() {
    const { store, url } = yield* setup()
    store.setNetworking("/grp/web", {
      networks: [{ mode: "container", name: "calico" }],
      container: { portMappings: [{ containerPort: 8080, name: "http" }] }
    })
    store.setTask("/grp/web", { id: "web.2", host: "127.0.0.3", ports: [], ipAddresses: [{ ipAddress: "10.32.0.7", protocol: "IPv4" }] }, false)
    store.putPod("/shop/cart", {
      labels: { tier: "web" },
      networks: [{ mode: "container", name: "dcos" }],
      containers: [{ name: "web", endpoints: [{ name: "http", containerPort: 8080, hostPort: 0 }, { name: "metrics", containerPort: 9100 }] }]
    })
    store.setPodInstance("/shop/cart", { id: "shop_cart.instance-1", agentHostname: "127.0.0.2", addresses: ["10.32.0.9"], hostPorts: { web: [31001] } }, false)
    return { store, url }
  })

  it.scopedLive("apps carry networks and container.portMappings; tasks carry ipAddresses", () =>
    Effect.gen(function*() {
      const { url } = yield* withPod
      const app = json(yield* call(`${url}/v2/apps/grp/web`))
      expect(app).toEqual({
        app: expect.objectContaining({
          networks: [{ mode: "container", name: "calico" }],
          container: { portMappings: [{ containerPort: 8080, name: "http" }] },
          tasks: expect.arrayContaining([expect.objectContaining({ id: "web.2", ports: [], ipAddresses: [{ ipAddress: "10.32.0.7", protocol: "IPv4" }] })])
        })
      })
    }))

  it.scopedLive("GET /v2/pods, /v2/pods/<id> and /v2/pods/::status (RAML Pod and PodStatus, agentHostname as 1.4+ writes it)", () =>
    Effect.gen(function*() {
      const { url } = yield* withPod
      const spec = {
        id: "/shop/cart",
        version: expect.any(String),
        labels: { tier: "web" },
        networks: [{ mode: "container", name: "dcos" }],
        scaling: { kind: "fixed", instances: 1 },
        containers: [{
          name: "web",
          resources: { cpus: 0.1, mem: 32 },
          endpoints: [
            { name: "http", containerPort: 8080, hostPort: 0, protocol: ["tcp"] },
            { name: "metrics", containerPort: 9100, protocol: ["tcp"] }
          ]
        }]
      }
      expect(json(yield* call(`${url}/v2/pods`))).toEqual([spec])
      expect(json(yield* call(`${url}/v2/pods/shop/cart`))).toEqual(spec)
      const statuses = yield* call(`${url}/v2/pods/::status`)
      expect(statuses.status).toBe(200)
      expect(json(statuses)).toEqual([expect.objectContaining({
        id: "/shop/cart",
        spec,
        status: "STABLE",
        instances: [expect.objectContaining({
          id: "shop_cart.instance-1",
          status: "STABLE",
          agentHostname: "127.0.0.2",
          networks: [{ name: "dcos", addresses: ["10.32.0.9"] }],
          containers: [expect.objectContaining({
            name: "web",
            status: "TASK_RUNNING",
            containerId: "shop_cart.instance-1.web",
            // allocated host ports pair with the endpoints that ask for one; the others carry only their name
            endpoints: [{ name: "http", allocatedHostPort: 31001 }, { name: "metrics" }]
          })]
        })]
      })])
      expect(json(yield* call(`${url}/v2/pods/shop/cart::status`))).toEqual(expect.objectContaining({ id: "/shop/cart" }))
    }))

  it.scopedLive("Marathon's 404s: an unknown pod, and every /v2/pods route on a Marathon older than 1.4", () =>
    Effect.gen(function*() {
      const { store, url } = yield* withPod
      const missing = yield* call(`${url}/v2/pods/nope`)
      expect(missing.status).toBe(404)
      expect(json(missing)).toEqual({ message: "pod with /nope does not exist" })
      expect(json(yield* call(`${url}/v2/pods/nope::status`))).toEqual({ message: "Pod '/nope' does not exist" })
      store.podsSupported = false
      for (const path of ["/v2/pods", "/v2/pods/::status", "/v2/pods/shop/cart"]) {
        const answer = yield* call(`${url}${path}`)
        expect(answer.status, path).toBe(404)
        // Marathon < 1.4 is Jersey 1: an unknown route is 404 `URI not found: <path>` (as for /v2/eventSubscriptions above)
        expect(json(answer), path).toEqual({ message: `URI not found: ${path}` })
      }
    }))

  it.scopedLive("a pod task's status_update_event: the pod id as appId, the container's task id, agent, host ports and addresses", () =>
    Effect.gen(function*() {
      const { store } = yield* withPod
      const events: Array<unknown> = []
      const stop = store.listen((event) => events.push(event))
      store.setPodInstance("/shop/cart", { id: "shop_cart.instance-2", agentHostname: "127.0.0.3", addresses: ["fd00::3"], hostPorts: { web: [31002] } })
      store.endPodInstance("/shop/cart", "shop_cart.instance-2", "TASK_KILLED")
      stop()
      expect(events).toEqual([
        expect.objectContaining({
          eventType: "status_update_event",
          appId: "/shop/cart",
          taskId: "shop_cart.instance-2.web",
          taskStatus: "TASK_RUNNING",
          host: "127.0.0.3",
          ports: [31002],
          ipAddresses: [{ ipAddress: "fd00::3", protocol: "IPv6" }],
          version: store.pods.get("/shop/cart")!.version
        }),
        expect.objectContaining({ taskId: "shop_cart.instance-2.web", taskStatus: "TASK_KILLED" })
      ])
    }))
})
