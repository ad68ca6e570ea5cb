import { Effect } from "effect"

/** Those waiting for a held key, first come first served; `granted` once the key was handed to the waiter. */
interface Waiter {
  wake: () => void
  granted: boolean
}

/**
 * One lock per key, held only while someone uses it: effects for the same key run one at a time, in the order
 * they asked, and a key nobody holds costs no memory.
 *
 * Not one Effect semaphore per key: nearly every use is uncontended (a sync pass writes each task once), and a
 * semaphore per use (made, taken, released, forgotten) cost about 12 µs of CPU, more than the rest of a write's
 * Effect steps together. A free key is taken and released in plain code; only a contended one waits, in an
 * `Effect.async` woken by the holder on release.
 */
export class KeyedLock {
  /** a held key and who waits for it, in order */
  private readonly held = new Map<string, Array<Waiter>>()

  withLock<A, E, R>(key: string, effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> {
    // taking the key and arranging its release happen with no interruption in between, as Semaphore.withPermits does
    return Effect.uninterruptibleMask((restore) =>
      Effect.suspend(() => {
        const queue = this.held.get(key)
        if (queue === undefined) {
          this.held.set(key, [])
          return Effect.ensuring(restore(effect), Effect.sync(() => this.release(key)))
        }
        const waiter: Waiter = { wake: () => {}, granted: false }
        queue.push(waiter)
        // interrupted while waiting, or just after being handed the key: leave the queue, or pass the key on
        let left = false
        const leave = Effect.sync(() => {
          if (left) return
          left = true
          if (waiter.granted) this.release(key)
          else if (queue.includes(waiter)) queue.splice(queue.indexOf(waiter), 1)
        })
        const wait = Effect.async<void>((resume) => {
          // handed the key before this fiber got here (it may yield in between)
          if (waiter.granted) return resume(Effect.void)
          waiter.wake = () => resume(Effect.void)
        })
        return Effect.zipRight(Effect.onInterrupt(restore(wait), () => leave), Effect.ensuring(restore(effect), Effect.sync(() => this.release(key))))
      })
    )
  }

  /** Hands the key to the next waiter, or frees it. */
  private release(key: string): void {
    const queue = this.held.get(key)
    const next = queue?.shift()
    if (next === undefined) {
      this.held.delete(key)
      return
    }
    next.granted = true
    next.wake()
  }

  get size(): number {
    return this.held.size
  }
}
