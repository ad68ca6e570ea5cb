import { Effect } from "effect"

/**
 * Runs `f` on every item, at most `lanes` at a time, with one fiber per lane rather than one per item:
 * `Effect.forEach` with `concurrency` forks a fiber for each item, and a cold sync has thousands of them, each
 * a single request (on the bench, forking them was about a tenth of the sync's CPU). Items are taken in order
 * as lanes free up. `f` cannot fail: each item reports its own failure.
 */
export const forEachInLanes = <A, R>(
  items: Iterable<A>,
  f: (item: A) => Effect.Effect<void, never, R>,
  lanes: number
): Effect.Effect<void, never, R> =>
  Effect.suspend(() => {
    const iterator = items[Symbol.iterator]()
    // tail position: the runtime runs a lane in constant stack, however many items it takes
    const lane: Effect.Effect<void, never, R> = Effect.suspend(() => {
      const next = iterator.next()
      return next.done === true ? Effect.void : Effect.zipRight(f(next.value), lane)
    })
    return Effect.all(Array.from({ length: Math.max(1, lanes) }, () => lane), { concurrency: "unbounded", discard: true })
  })
