import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Stream } from "effect"
import { Context, Layer } from "effect"
import { daemonObservability, runDaemon } from "../../src/programs/Daemon.js"
import type { DaemonSettings } from "../../src/programs/Daemon.js"
import { Marathon, streamOpened } from "../../src/services/Marathon.js"
import type { CallbackSupport } from "../../src/services/MarathonStore.js"
import { daemonSettings } from "../support/Daemon.js"
import { makeDatacenter } from "../support/Datacenter.js"
import type { Datacenter } from "../support/Datacenter.js"
import { eventually, freePort } from "../support/Process.js"

/**
 * The event stream against the strict embedded Marathon (its /v2/events refuses what Marathon's Jetty servlet
 * refuses), through the live Marathon layer and the whole daemon.
 */

const startDaemon = (dc: Datacenter, overrides: Partial<DaemonSettings>) =>
  Effect.gen(function*() {
    const settings = daemonSettings(dc, { port: yield* freePort(), ...overrides })
    return yield* Effect.forkScoped(runDaemon(settings).pipe(Effect.provide(daemonObservability(settings)), Effect.provide(dc.services)))
  })

describe("the event stream against the strict embedded Marathon", () => {
  it.scopedLive("the stream request carries Accept: text/event-stream and the event_type filter, as Marathon sees it", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      const marathon = Context.get(yield* Layer.build(dc.services), Marathon)
      const first = yield* marathon.eventStream(["status_update_event"]).pipe(Stream.take(1), Stream.runCollect, Effect.timeout("2 seconds"))
      expect([...first]).toEqual([streamOpened])
      expect(dc.marathon.streamRequests).toEqual([{ accept: ["text/event-stream"], eventTypes: ["status_update_event"] }])
    }))

  const refusals: ReadonlyArray<[string, CallbackSupport, 404 | 500]> = [
    ["1.5-1.6: no such route, 404", "removed", 404],
    ["1.7-1.10: no such route, 500 URI not found", "removed", 500],
    ["< 1.5 without http_callback: 400", "disabled", 404]
  ]
  for (const [name, callbacks, unknownRouteStatus] of refusals) {
    it.scopedLive(`--events auto, Marathon refuses callbacks (${name}): a task is registered within a second of its RUNNING event`, () =>
      Effect.gen(function*() {
        const dc = yield* makeDatacenter()
        dc.marathon.callbacks = callbacks
        dc.marathon.unknownRouteStatus = unknownRouteStatus
        const daemon = yield* startDaemon(dc, { events: "auto", syncInterval: 0 })
        yield* eventually("the stream attached", () => dc.marathon.streamRequests.length > 0 && dc.marathon.listenerCount >= 2)
        expect(dc.marathon.subscriptions).toEqual([])
        dc.marathon.setTask("/web", { id: "web.1", host: "127.0.0.2", ports: [31000] })
        yield* eventually("web.1 registered from its RUNNING event", () => dc.consul.services("127.0.0.2").has("web.1"), 1_000)
        expect(dc.marathon.streamRequests.every((request) => request.accept.includes("text/event-stream"))).toBe(true)
        expect(daemon.unsafePoll()).toBeNull()
        yield* Fiber.interrupt(daemon)
      }))
  }
})
