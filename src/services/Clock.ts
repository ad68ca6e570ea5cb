import { Clock, Effect, Layer } from "effect"

/**
 * Time, through Effect's own Clock rather than a parallel service: schedules, timeouts, retries and timestamps
 * all read it, so tests control every one of them with the TestClock (`it.effect`) or with `ClockMemory`.
 */

/** The real clock: Effect's default. */
export const ClockLive: Layer.Layer<never> = Layer.empty

/** Wall-clock time of now, as the clock in use tells it. */
export const now: Effect.Effect<Date> = Effect.map(Clock.currentTimeMillis, (millis) => new Date(millis))

/**
 * A clock that stands still until told: for code that only reads time (no sleeps). `advance` moves it.
 * Sleeping on it resolves at once, so it suits tests of timestamps rather than of schedules.
 */
export const makeClockMemory = (startMillis: number) => {
  let current = startMillis
  const clock: Clock.Clock = {
    [Clock.ClockTypeId]: Clock.ClockTypeId,
    unsafeCurrentTimeMillis: () => current,
    unsafeCurrentTimeNanos: () => BigInt(current) * 1_000_000n,
    currentTimeMillis: Effect.sync(() => current),
    currentTimeNanos: Effect.sync(() => BigInt(current) * 1_000_000n),
    sleep: () => Effect.void
  }
  return {
    layer: Layer.setClock(clock),
    advance: (millis: number) => {
      current += millis
    }
  }
}
