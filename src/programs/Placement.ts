import { Duration, Effect } from "effect"
import type { Registration } from "../domain/ConsulApi.js"
import { isUnreachable } from "../domain/Errors.js"
import type { ConsulError } from "../domain/Errors.js"
import { Consul } from "../services/Consul.js"

/**
 * Where a task's service goes, for sync passes and events alike: on its host's agent, or, with `--fallback`, on
 * the main agent when its agent cannot be reached or its host is no known agent (as the original's fallback did).
 */

export interface PlacementSettings {
  readonly fallback: boolean
  /** bounds the registration on the main agent */
  readonly fallbackTimeout: Duration.DurationInput
}

export interface Placed {
  readonly agent: string
  readonly fallback: boolean
}

/** The target: the task's agent (`down`: known unreachable in this pass), or undefined for no known agent. */
export interface PlacementTarget {
  readonly agent: string | undefined
  readonly main: string
  readonly down?: boolean | undefined
}

/**
 * Registers a service where it belongs and answers where it landed. A target that is no known agent goes to the
 * main agent: without `--fallback` callers skip such a task instead of asking.
 */
export type Place = (
  target: PlacementTarget,
  registration: Registration,
  /** whether the agent holds a check the registration no longer has (`?replace-existing-checks` drops it) */
  staleCheckOn?: (agent: string) => boolean
) => Effect.Effect<Placed, ConsulError>

/** Asked only when it is so: without stale checks the request is today's, byte for byte. */
const replacing = (agent: string, staleCheckOn: ((agent: string) => boolean) | undefined) =>
  staleCheckOn?.(agent) === true ? { replaceExistingChecks: true } : {}

export const makePlacement = (settings: PlacementSettings): Effect.Effect<Place, never, Consul> =>
  Effect.map(Consul, (consul) => {
    /** The one fallback registration: on the main agent, bounded by the fallback timeout, said in a warning. */
    const onFallback = (main: string, registration: Registration, why: Record<string, string>, staleCheckOn?: (agent: string) => boolean) =>
      consul.register(main, registration, { fallbackMode: true, timeout: settings.fallbackTimeout, ...replacing(main, staleCheckOn) }).pipe(
        Effect.zipRight(Effect.logWarning("registered on the fallback agent").pipe(Effect.annotateLogs({ service: registration.ID, agent: main, ...why }))),
        Effect.as<Placed>({ agent: main, fallback: true })
      )
    return ({ agent, main, down }, registration, staleCheckOn) => {
      if (agent === undefined) return onFallback(main, registration, { reason: "task host is no known agent" }, staleCheckOn)
      const canFallBack = settings.fallback && agent !== main
      if (down === true && canFallBack) return onFallback(main, registration, { unreachable: agent }, staleCheckOn)
      return consul.register(agent, registration, { fallbackMode: settings.fallback, ...replacing(agent, staleCheckOn) }).pipe(
        Effect.as<Placed>({ agent, fallback: false }),
        Effect.catchAll((error) =>
          canFallBack && isUnreachable(error) ? onFallback(main, registration, { unreachable: agent }, staleCheckOn) : Effect.fail(error)
        )
      )
    }
  })
