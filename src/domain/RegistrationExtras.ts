import type { AgentCheck, AgentService, Meta, Registration, TtlCheck } from "./ConsulApi.js"
import { parseGoDuration } from "./GoDuration.js"
import { serviceMeta } from "./ServiceMeta.js"
import type { SkippedLabel } from "./ServiceMeta.js"

/**
 * What `--health-checks ttl` and `--service-meta` add to a registration, as functions over the registration that
 * the one builder (domain/Naming.ts `registration`) made, so that without the flags the body stays today's; and
 * how to tell whether an agent already holds what they add (the diff asks only when they are on).
 */

export interface TtlCheckSettings {
  /** Go duration, as given to `--health-ttl` */
  readonly ttl: string
  /** Go duration, as given to `--deregister-critical-after`; absent: never */
  readonly deregisterCriticalAfter?: string | undefined
}

/** The check's Notes: what an operator reads beside the status in the UI. */
export const ttlCheckNotes = (registrationId: string): string =>
  `Marathon's health verdict on this task, relayed by consular (registration ${registrationId})`

export const ttlCheck = (registrationId: string, settings: TtlCheckSettings): TtlCheck => ({
  TTL: settings.ttl,
  Notes: ttlCheckNotes(registrationId),
  ...(settings.deregisterCriticalAfter === undefined ? {} : { DeregisterCriticalServiceAfter: settings.deregisterCriticalAfter })
})

export const withTtlCheck = (registration: Registration, check: TtlCheck): Registration => ({ ...registration, Check: check })

export const withServiceMeta = (registration: Registration, meta: Meta): Registration => ({ ...registration, Meta: meta })

/** Same Meta; no wanted Meta means none at all (`{}` or absent, as every Consul lists a service without). */
export const sameMeta = (held: AgentService["Meta"], wanted: Meta | undefined): boolean => {
  const heldKeys = held === null || held === undefined ? [] : Object.keys(held)
  if (wanted === undefined) return heldKeys.length === 0
  const wantedKeys = Object.keys(wanted)
  return heldKeys.length === wantedKeys.length && wantedKeys.every((key) => held?.[key] === wanted[key])
}

const sameDuration = (held: string | undefined, wanted: string | undefined): boolean => {
  // an agent that does not show the definition cannot be compared: what it holds is taken as right
  if (held === undefined) return true
  return (parseGoDuration(held) ?? -1) === (wanted === undefined ? 0 : parseGoDuration(wanted) ?? -2)
}

/**
 * The agent holds the check the registration asks for: present with the same Notes, TTL and reaping delay; and
 * holds none when the registration asks for none. The status is not part of it: statuses are pushed, not registered.
 */
export const checkHolds = (held: AgentCheck | undefined, wanted: TtlCheck | undefined): boolean => {
  if (wanted === undefined) return held === undefined
  if (held === undefined) return false
  return held.Notes === wanted.Notes &&
    sameDuration(held.Definition?.TTL, wanted.TTL) &&
    sameDuration(held.Definition?.DeregisterCriticalServiceAfter, wanted.DeregisterCriticalServiceAfter)
}

export interface ExtrasSettings {
  readonly registrationId: string
  /** `--service-meta` */
  readonly serviceMeta: boolean
  /** `--health-checks ttl`: the check every registration carries */
  readonly check: TtlCheck | undefined
}

/**
 * A task's registration with what the flags add; `skipped`: labels Meta could not take (warned once per app
 * version by the caller). Without either flag, the registration itself.
 */
export const decorate = (
  settings: ExtrasSettings,
  plain: Registration,
  app: { readonly id: string; readonly labels?: Readonly<Record<string, string>> | undefined },
  /** the Marathon task (a registration per port has an ID of its own) */
  taskId: string = plain.ID
): { readonly registration: Registration; readonly skipped: ReadonlyArray<SkippedLabel> } => {
  let registration = plain
  let skipped: ReadonlyArray<SkippedLabel> = []
  if (settings.serviceMeta) {
    const made = serviceMeta({ appId: app.id, taskId, registrationId: settings.registrationId, labels: app.labels })
    registration = withServiceMeta(registration, made.meta)
    skipped = made.skipped
  }
  if (settings.check !== undefined) registration = withTtlCheck(registration, settings.check)
  return { registration, skipped }
}
