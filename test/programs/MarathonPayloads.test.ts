import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Either, Fiber, Layer } from "effect"
import { createServer } from "node:http"
import { decodeEvent } from "../../src/programs/Events.js"
import type { DecodedEvent } from "../../src/programs/Events.js"
import { runEventSource } from "../../src/programs/EventSource.js"
import type { EventSourceHooks } from "../../src/programs/EventSource.js"
import { Marathon, MarathonLive } from "../../src/services/Marathon.js"
import { otherEvents, statusUpdate, statusUpdates } from "../fixtures/marathon/Events.js"
import { listen } from "../../src/embedded/Listen.js"
import { LoggedLines, LoggerMemory } from "../../src/services/Logger.js"
import { daemonApp, daemonSettings, sendEvent, serveDaemon } from "../support/Daemon.js"
import { makeDatacenter } from "../support/Datacenter.js"
import { eventually } from "../support/Process.js"
import { listenOnLoopback } from "../support/Listen.js"

/** Every event shape real Marathons send (0.x to 1.10), by callback and by stream, in every SSE framing. */

const typeOf = (event: Readonly<Record<string, unknown>>) => String(event["eventType"])

describe("Marathon's events as real Marathons send them", () => {
  it("every one decodes: status updates and health verdicts as such, the other known types as acknowledged", () => {
    for (const { release, event } of otherEvents) {
      const decoded = decodeEvent(JSON.stringify(event))
      const type = typeOf(event)
      if (type === "health_status_changed_event" || type === "instance_health_changed_event") {
        // relayed with --health-checks ttl (issue 13): the instance, or the task of a Marathon before 1.4
        expect(Either.isRight(decoded) && decoded.right._tag === "Health" && decoded.right.event.instance !== "", `${release} ${type}`).toBe(true)
        continue
      }
      expect(decoded, `${release} ${type}`).toEqual(Either.right({ _tag: "Other", eventType: type }))
    }
    for (const { release, event } of statusUpdates) {
      const decoded = decodeEvent(JSON.stringify(event))
      expect(Either.isRight(decoded) && decoded.right._tag, release).toBe("StatusUpdate")
    }
  })

  it.scopedLive("POST /events: every known type other than a status update gets a 2xx and no Consul write", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      const daemon = yield* serveDaemon(dc)
      const staging = statusUpdate({ taskStatus: "TASK_STAGING", host: "127.0.0.2" })
      for (const { release, event } of [...otherEvents, { release: "1.10", event: staging }]) {
        const answer = yield* daemon.post(event)
        expect(answer.status, `${release} ${typeOf(event)}: ${answer.text}`).toBe(200)
        expect(answer.json).toEqual({ status: "ok", outcome: "ignored" })
      }
      expect(dc.consul.writes).toBe(0)
    }))
})

/** A Marathon stand-in that answers /v2/events with fixed bytes (the stream stays open afterwards). */
const sseServer = (body: string) =>
  Effect.gen(function*() {
    const accepts: Array<string | undefined> = []
    const server = createServer((request, response) => {
      if (request.url?.startsWith("/v2/events") !== true) {
        response.writeHead(404).end()
        return
      }
      accepts.push(request.headers.accept)
      response.writeHead(200, { "content-type": "text/event-stream;charset=utf-8", connection: "close" })
      response.write(body)
    })
    const port = yield* listenOnLoopback(server)
    return { url: `http://127.0.0.1:${port}`, accepts }
  })

const framings: ReadonlyArray<[string, (event: Readonly<Record<string, unknown>>) => string]> = [
  ["event: and data: lines, LF (Marathon's docs)", (event) => `event: ${typeOf(event)}\ndata: ${JSON.stringify(event)}\n\n`],
  ["event: and data: lines, CRLF (Jetty's EventSourceServlet), with heartbeats", (event) => `\r\nevent: ${typeOf(event)}\r\ndata: ${JSON.stringify(event)}\r\n\r\n`],
  ["data: lines only (0.x-1.1 captures)", (event) => `data: ${JSON.stringify(event)}\n\n`]
]

describe("the event stream reads every framing real Marathons write", () => {
  for (const [name, frame] of framings) {
    it.scopedLive(name, () =>
      Effect.gen(function*() {
        const events = [...otherEvents.map((entry) => entry.event), ...statusUpdates.map((entry) => entry.event)]
        const server = yield* sseServer(events.map(frame).join(""))
        const marathon = Context.get(yield* Layer.build(MarathonLive({ url: new URL(server.url), timeout: "2 seconds", retries: 0 })), Marathon)
        const handled: Array<DecodedEvent> = []
        const hooks: EventSourceHooks = {
          connected: () => Effect.void,
          disconnected: () => Effect.void,
          resync: Effect.void,
          handler: {
            handle: (decoded) => Effect.sync(() => handled.push(decoded)).pipe(Effect.as("ignored" as const)),
            statusUpdate: () => Effect.succeed("ignored" as const)
          }
        }
        const source = yield* Effect.forkScoped(runEventSource({
          events: "sse",
          scheme: "http",
          host: "127.0.0.1",
          port: 7000,
          registrationId: "consular"
        }, hooks).pipe(Effect.provideService(Marathon, marathon)))
        // stream_attached/detached are the stream's own bookkeeping: not handed to the handler
        const expected = events.filter((event) => typeOf(event) !== "event_stream_attached" && typeOf(event) !== "event_stream_detached")
        yield* eventually("every event handled", () => handled.length >= expected.length, 5_000)
        expect(handled.map((decoded) => decoded._tag === "StatusUpdate" ? decoded.event.eventType : decoded.eventType).sort())
          .toEqual(expected.map(typeOf).sort())
        expect(handled.filter((decoded) => decoded._tag === "StatusUpdate")).toHaveLength(statusUpdates.length)
        expect(server.accepts).toEqual(["text/event-stream"])
        yield* Fiber.interrupt(source)
      }))
  }
})

describe("an unknown eventType", () => {
  it.scopedLive("is quoted cut to 100 characters in the 400 and in the log, however long it is", () =>
    Effect.gen(function*() {
      const lines = yield* LoggedLines
      const dc = yield* makeDatacenter()
      const app = yield* daemonApp(dc, daemonSettings(dc))
      const port = yield* listen(app, { address: "127.0.0.1", port: 0 })
      const huge = "z".repeat(900_000)
      const answer = yield* sendEvent(`http://127.0.0.1:${port}`, JSON.stringify({ eventType: huge }), { "content-type": "application/json" })
      expect(answer.status).toBe(400)
      expect(answer.json).toEqual({ error: `Event type ${"z".repeat(100)}… (900000 characters) not supported.`, detail: "unknown eventType" })
      yield* eventually("the refusal logged", () => lines.some((line) => line.includes("event refused")), 2_000)
      const logged = lines.filter((line) => line.includes("event refused"))
      expect(logged.join("\n")).toContain(`Event type ${"z".repeat(100)}… (900000 characters) not supported.`)
      expect(logged.join("\n").length).toBeLessThan(1_000)
      const short = yield* sendEvent(`http://127.0.0.1:${port}`, JSON.stringify({ eventType: "no_such_event" }))
      expect(short.json).toEqual({ error: "Event type no_such_event not supported.", detail: "unknown eventType" })
    }).pipe(Effect.provide(LoggerMemory("json"))))
})
