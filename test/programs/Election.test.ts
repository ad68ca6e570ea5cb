import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Fiber, Layer, Ref, TestClock } from "effect"
import { makeElection } from "../../src/programs/Election.js"
import { ReadinessLive } from "../../src/programs/Operations.js"
import { ConsulStore } from "../../src/services/ConsulStore.js"
import { LeadershipMemory } from "../../src/services/Leadership.js"
import { MetricsLive } from "../../src/services/Metrics.js"

/** The election over the in-memory Consul, under the TestClock: TTLs, renewals and lock delays without waiting. */

const key = "service/consular/blue/leader"

const instance = (store: ConsulStore, port: number) =>
  Effect.gen(function*() {
    const election = yield* makeElection({
      key,
      sessionTtl: Duration.seconds(10),
      version: "0.1.0",
      host: "10.0.0.5",
      port,
      registrationId: "blue"
    })
    const working = yield* Ref.make(false)
    const stepDowns = yield* Ref.make(0)
    const work = Effect.acquireRelease(Ref.set(working, true), () => Ref.set(working, false)).pipe(Effect.zipRight(Effect.never), Effect.scoped)
    const fiber = yield* Effect.fork(election.run(work, Ref.update(stepDowns, (n) => n + 1)))
    return { election, working, stepDowns, fiber }
  }).pipe(Effect.provide(Layer.mergeAll(LeadershipMemory(store), MetricsLive, ReadinessLive({ requireSync: true, election: true }))))

describe("Election (in memory, TestClock)", () => {
  it.effect("one of two leads; a leader that cannot renew stops working before its session's TTL lapses; the other then takes over after the lock delay", () =>
    Effect.gen(function*() {
      const store = new ConsulStore("127.0.0.1")
      store.addAgent("127.0.0.1", "main")
      const a = yield* instance(store, 7001)
      yield* TestClock.adjust("1 millis")
      const b = yield* instance(store, 7002)
      yield* TestClock.adjust("1 millis")
      expect(yield* Ref.get(a.working)).toBe(true)
      expect(yield* a.election.leading).toBe(true)
      expect(yield* Ref.get(b.working)).toBe(false)
      expect(yield* b.election.leaderAt).toBe("10.0.0.5:7001")
      expect(yield* b.election.confirm).toBe(false) // a follower never passes the check before a pass

      // renewals at TTL/2 keep it leading
      yield* TestClock.adjust("30 seconds")
      expect(yield* a.election.confirm).toBe(true)
      const session = store.keyMeta.get(key)!.Session!

      // A cannot reach Consul any more: its renewals fail, and it stops before the session could be given away
      store.setFault("127.0.0.1", { _tag: "Refuse" })
      const lapse = store.sessions.get(session)!.expiresAt!
      let steppedDownAt: number | undefined
      for (let t = 0; t < 15_000 && steppedDownAt === undefined; t += 100) {
        yield* TestClock.adjust("100 millis")
        if (!(yield* Ref.get(a.working))) steppedDownAt = (yield* TestClock.currentTimeMillis)
      }
      expect(steppedDownAt).toBeDefined()
      expect(steppedDownAt!).toBeLessThan(lapse)
      expect(yield* a.election.leading).toBe(false)
      expect(yield* Ref.get(a.stepDowns)).toBe(1)

      // Consul back: the session has expired by its TTL; after the lock delay one of them leads again, only one
      store.setFault("127.0.0.1", undefined)
      yield* TestClock.adjust("20 seconds")
      const workingNow = [yield* Ref.get(a.working), yield* Ref.get(b.working)]
      expect(workingNow.filter(Boolean)).toHaveLength(1)
      expect(store.endedSessions.find((ended) => ended.id === session)?.why).toBe("expired")
      yield* Fiber.interrupt(a.fiber)
      yield* Fiber.interrupt(b.fiber)
      // stopped: the lock is released and both sessions destroyed
      expect(store.keyMeta.get(key)?.Session).toBeUndefined()
      expect(store.sessions.size).toBe(0)
    }))
})
