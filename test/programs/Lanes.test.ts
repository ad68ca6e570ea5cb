import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Fiber } from "effect"
import { forEachInLanes } from "../../src/programs/Lanes.js"

describe("forEachInLanes", () => {
  it.effect("runs every item once, in order of start, never more than `lanes` at a time", () =>
    Effect.gen(function*() {
      const started: Array<number> = []
      let running = 0
      let most = 0
      yield* forEachInLanes(Array.from({ length: 100 }, (_, i) => i), (i) =>
        Effect.gen(function*() {
          started.push(i)
          running++
          most = Math.max(most, running)
          // uneven work, so that lanes finish out of step
          for (let k = 0; k < i % 4; k++) yield* Effect.yieldNow()
          running--
        }), 7)
      expect(started).toEqual(Array.from({ length: 100 }, (_, i) => i))
      expect(most).toBe(7)
      expect(running).toBe(0)
    }))

  it.effect("no items, fewer items than lanes, and a lane count below one", () =>
    Effect.gen(function*() {
      const seen: Array<string> = []
      yield* forEachInLanes([], () => Effect.sync(() => seen.push("never")), 4)
      yield* forEachInLanes(["a", "b"], (s) => Effect.sync(() => seen.push(s)), 32)
      yield* forEachInLanes(new Set(["c", "d"]), (s) => Effect.sync(() => seen.push(s)), 0)
      expect(seen).toEqual(["a", "b", "c", "d"])
    }))

  it.effect("a lane takes any number of items in constant stack", () =>
    Effect.gen(function*() {
      let count = 0
      yield* forEachInLanes(Array.from({ length: 200_000 }, (_, i) => i), () => Effect.sync(() => count++), 2)
      expect(count).toBe(200_000)
    }))

  it.effect("interrupted, it starts no further item", () =>
    Effect.gen(function*() {
      const started: Array<number> = []
      const blocked = yield* Deferred.make<void>()
      const fiber = yield* Effect.fork(forEachInLanes(Array.from({ length: 10 }, (_, i) => i), (i) =>
        Effect.sync(() => started.push(i)).pipe(Effect.zipRight(Deferred.await(blocked))), 3))
      for (let i = 0; i < 10 && started.length < 3; i++) yield* Effect.yieldNow()
      yield* Fiber.interrupt(fiber)
      yield* Deferred.succeed(blocked, undefined)
      expect(started).toEqual([0, 1, 2])
    }))
})
