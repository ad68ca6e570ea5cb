import { HttpRouter, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Queue, Schedule, Scope } from "effect"
import { listen } from "../../src/embedded/Listen.js"
import { serveMarathon } from "../../src/embedded/MarathonServer.js"
import type { MarathonServerOptions } from "../../src/embedded/MarathonServer.js"
import { MarathonStore } from "../../src/services/MarathonStore.js"
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

/** An open `GET /v2/events`; `next(n)` reads the next n frames, bounded by a timeout. Closed with the scope. */
const openEvents = (url: string) =>
  Effect.gen(function*() {
    const controller = new AbortController()
    yield* Effect.addFinalizer(() => Effect.sync(() => controller.abort()))
    const response = yield* Effect.tryPromise(() => fetch(url, { signal: controller.signal }))
    const body = response.body
    if (body === null) return yield* Effect.die("no body")
    const reader = body.getReader()
    const decoder = new TextDecoder()
    let buffer = ""
    const next = (n: number) =>
      Effect.tryPromise(async () => {
        const frames: Array<Frame> = []
        while (frames.length < n) {
          const end = buffer.indexOf("\n\n")
          if (end === -1) {
            const chunk = await reader.read()
            if (chunk.done) throw new Error("stream ended")
            buffer += decoder.decode(chunk.value, { stream: true })
            continue
          }
          const lines = buffer.slice(0, end).split("\n")
          buffer = buffer.slice(end + 2)
          const field = (name: string) => lines.find((line) => line.startsWith(`${name}: `))?.slice(name.length + 2) ?? ""
          frames.push({ event: field("event"), data: JSON.parse(field("data")) })
        }
        return frames
      }).pipe(Effect.timeout("2 seconds"))
    return { response, next, close: () => controller.abort() }
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
          message: "http event callback system is not running on this Marathon instance. Please re-start this instance with \"--event_subscriber http_callback\"."
        })
      }
      store.callbacks = "removed"
      expect((yield* call(`${url}/v2/eventSubscriptions`)).status).toBe(404)
      expect((yield* call(`${url}/v2/eventSubscriptions?${query}`, { method: "POST" })).status).toBe(404)
      expect(store.subscriptions).toEqual([])
    }))

  it.scopedLive("leader is this instance", () =>
    Effect.gen(function*() {
      const { url, server } = yield* setup()
      expect(json(yield* call(`${url}/v2/leader`))).toEqual({ leader: `127.0.0.1:${server.port}` })
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

  it.scopedLive("event stream: attached first, then the store's events, filtered by event_type; unsubscribed on close", () =>
    Effect.gen(function*() {
      const { url, store } = yield* setup()
      const baseline = store.listenerCount
      const all = yield* openEvents(`${url}/v2/events`)
      const filtered = yield* openEvents(`${url}/v2/events?event_type=status_update_event&event_type=deployment_success`)
      expect(all.response.headers.get("content-type")).toContain("text/event-stream")
      const [attached] = yield* all.next(1)
      expect(attached).toEqual({ event: "event_stream_attached", data: expect.objectContaining({ eventType: "event_stream_attached" }) })
      expect((yield* filtered.next(1))[0]?.event).toBe("event_stream_attached")
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

      all.close()
      filtered.close()
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
      const events = yield* openEvents(`${url}/v2/events?event_type=health_status_changed_event&event_type=instance_health_changed_event`)
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
