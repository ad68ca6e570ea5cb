import { Effect } from "effect"

/**
 * One lock per key, held only while someone uses it: effects for the same key run one at a time, in the order
 * they asked (Effect's semaphore is fair), and a key nobody holds costs no memory.
 */
export class KeyedLock {
  private readonly locks = new Map<string, { readonly semaphore: Effect.Semaphore; users: number }>()

  withLock<A, E, R>(key: string, effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> {
    return Effect.suspend(() => {
      let entry = this.locks.get(key)
      if (entry === undefined) {
        entry = { semaphore: Effect.unsafeMakeSemaphore(1), users: 0 }
        this.locks.set(key, entry)
      }
      entry.users++
      const held = entry
      return held.semaphore.withPermits(1)(effect).pipe(
        Effect.ensuring(Effect.sync(() => {
          held.users--
          if (held.users === 0) this.locks.delete(key)
        }))
      )
    })
  }

  get size(): number {
    return this.locks.size
  }
}
