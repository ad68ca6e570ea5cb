import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber } from "effect"
import { KeyedLock } from "../../src/programs/KeyedLock.js"

/** Lets forked fibers run until `done` holds (bounded). */
const settle = (done: () => boolean) =>
  Effect.gen(function*() {
    for (let i = 0; i < 100 && !done(); i++) yield* Effect.yieldNow()
  })

describe("KeyedLock", () => {
  it.effect("effects of one key run one at a time, in the order they asked; other keys do not wait", () =>
    Effect.gen(function*() {
      const lock = new KeyedLock()
      const log: Array<string> = []
      const gate = yield* Deferred.make<void>()
      const holder = yield* Effect.fork(lock.withLock("a", Effect.sync(() => log.push("a0")).pipe(Effect.zipRight(Deferred.await(gate)))))
      yield* settle(() => log.length === 1)
      const waiters = yield* Effect.forEach([1, 2, 3], (i) => Effect.fork(lock.withLock("a", Effect.sync(() => log.push(`a${i}`)))))
      yield* lock.withLock("b", Effect.sync(() => log.push("b")))
      yield* settle(() => false)
      expect(log).toEqual(["a0", "b"])
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(holder)
      yield* Effect.forEach(waiters, Fiber.join)
      expect(log).toEqual(["a0", "b", "a1", "a2", "a3"])
      expect(lock.size).toBe(0)
    }))

  it.effect("a holder that fails or is interrupted releases the key", () =>
    Effect.gen(function*() {
      const lock = new KeyedLock()
      const failed = yield* Effect.exit(lock.withLock("a", Effect.fail("boom")))
      expect(failed).toEqual(Exit.fail("boom"))
      expect(lock.size).toBe(0)
      const holder = yield* Effect.fork(lock.withLock("a", Effect.never))
      yield* settle(() => lock.size === 1)
      const waiter = yield* Effect.fork(lock.withLock("a", Effect.succeed("next")))
      yield* Fiber.interrupt(holder)
      expect(yield* Fiber.join(waiter)).toBe("next")
      expect(lock.size).toBe(0)
    }))

  it.effect("a waiter interrupted in the queue leaves it: the next one still gets the key, and none is left held", () =>
    Effect.gen(function*() {
      const lock = new KeyedLock()
      const log: Array<string> = []
      const gate = yield* Deferred.make<void>()
      const holder = yield* Effect.fork(lock.withLock("a", Deferred.await(gate)))
      yield* settle(() => lock.size === 1)
      const quitter = yield* Effect.fork(lock.withLock("a", Effect.sync(() => log.push("quitter"))))
      const patient = yield* Effect.fork(lock.withLock("a", Effect.sync(() => log.push("patient"))))
      yield* settle(() => false)
      yield* Fiber.interrupt(quitter)
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(holder)
      yield* Fiber.join(patient)
      expect(log).toEqual(["patient"])
      expect(lock.size).toBe(0)
    }))

  it.effect("a waiter interrupted just as it is handed the key passes it on", () =>
    Effect.gen(function*() {
      const lock = new KeyedLock()
      const log: Array<string> = []
      const gate = yield* Deferred.make<void>()
      let quitter: Fiber.RuntimeFiber<number> | undefined
      // the holder releases the key (handing it to the quitter) and interrupts the quitter before it runs again
      const holder = yield* Effect.fork(
        lock.withLock("a", Deferred.await(gate)).pipe(Effect.zipRight(Effect.suspend(() => Fiber.interrupt(quitter!))))
      )
      yield* settle(() => lock.size === 1)
      quitter = yield* Effect.fork(lock.withLock("a", Effect.sync(() => log.push("quitter"))))
      const patient = yield* Effect.fork(lock.withLock("a", Effect.sync(() => log.push("patient"))))
      yield* settle(() => false)
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(holder)
      yield* Fiber.await(quitter)
      yield* Fiber.join(patient)
      expect(log.filter((entry) => entry === "patient")).toEqual(["patient"])
      expect(lock.size).toBe(0)
    }))

  it.effect("thousands of uncontended keys leave nothing behind", () =>
    Effect.gen(function*() {
      const lock = new KeyedLock()
      let count = 0
      yield* Effect.forEach(Array.from({ length: 5_000 }, (_, i) => `task-${i}`), (key) => lock.withLock(key, Effect.sync(() => count++)), {
        concurrency: 32,
        discard: true
      })
      expect(count).toBe(5_000)
      expect(lock.size).toBe(0)
    }))
})
