import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { makeConsulMemory, Consul } from "../../src/services/Consul.js"
import { ConsulStore } from "../../src/services/ConsulStore.js"
import { makeClockMemory, now } from "../../src/services/Clock.js"
import { Marathon, makeMarathonMemory } from "../../src/services/Marathon.js"
import { MarathonStore } from "../../src/services/MarathonStore.js"
import { LedgerLive } from "../../src/programs/Ledger.js"
import { syncOnce } from "../../src/programs/Sync.js"
import { TopologyLive } from "../../src/programs/Topology.js"
import { HostResolverMemory } from "../../src/services/HostResolver.js"

describe("Clock", () => {
  it.effect("ClockMemory stands still until advanced, and programs read it", () =>
    Effect.gen(function*() {
      const clock = makeClockMemory(Date.UTC(2026, 10, 25, 12, 0, 0))
      const first = yield* now.pipe(Effect.provide(clock.layer))
      clock.advance(90_000)
      const second = yield* now.pipe(Effect.provide(clock.layer))
      expect(first.toISOString()).toBe("2026-11-25T12:00:00.000Z")
      expect(second.toISOString()).toBe("2026-11-25T12:01:30.000Z")
      const consul = new ConsulStore("127.0.0.1")
      consul.addAgent("127.0.0.1")
      const services = Layer.mergeAll(
        Layer.succeed(Consul, makeConsulMemory(consul)),
        Layer.succeed(Marathon, makeMarathonMemory(new MarathonStore())),
        LedgerLive,
        TopologyLive(new URL("http://127.0.0.1:8500")),
        HostResolverMemory()
      )
      const report = yield* syncOnce({ registrationId: "consular", purge: false, fallback: false, fallbackTimeout: "1 second", consulUrl: new URL("http://127.0.0.1:8500") }).pipe(
        Effect.provide(Layer.merge(services, clock.layer))
      )
      expect(report.startedAt.toISOString()).toBe("2026-11-25T12:01:30.000Z")
    }))
})
