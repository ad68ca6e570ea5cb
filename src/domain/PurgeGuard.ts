import type { Actual, Plan } from "./Diff.js"
import { appIdFromTags, appName, parseLabelKey } from "./Naming.js"

/**
 * `--max-purge N`: a Marathon that answers with a suspiciously small app list must not wipe discovery. A plan
 * whose purge would deregister more than N services, or delete more than N keys (counted per key, the keys of
 * whole trees included), keeps its registrations and label writes and loses all its purge deletions. Removing
 * a label from an app that still runs is no purge, and neither is moving a service back from the fallback agent.
 */

export interface PurgeRefusal {
  readonly services: number
  readonly keys: number
  readonly limit: number
  /** the names of the apps the refused deletions belonged to */
  readonly apps: ReadonlyArray<string>
}

export interface GuardedPlan {
  readonly plan: Plan
  readonly refused: PurgeRefusal | undefined
}

/** The keys below any of `prefixes` (the trees a purge deletes), in the KV as read. */
export const keysUnder = (kv: ReadonlyMap<string, string> | undefined, prefixes: ReadonlyArray<string>): ReadonlyArray<string> => {
  if (kv === undefined || prefixes.length === 0) return []
  const keys: Array<string> = []
  for (const key of kv.keys()) if (prefixes.some((prefix) => key.startsWith(prefix))) keys.push(key)
  return keys.sort()
}

export const guardPurge = (plan: Plan, actual: Actual, limit: number | undefined): GuardedPlan => {
  if (limit === undefined) return { plan, refused: undefined }
  const dead = plan.deregister.filter((entry) => entry.why === "dead")
  const keys = keysUnder(actual.kv, plan.kvDeleteTree).length
  if (dead.length <= limit && keys <= limit) return { plan, refused: undefined }
  const apps = new Set<string>()
  for (const { agent, serviceId } of dead) {
    const state = actual.agents.get(agent)
    const tags = state?._tag === "Read" ? state.services.get(serviceId)?.Tags ?? [] : []
    const app = appIdFromTags(tags)
    if (app !== undefined) apps.add(appName(app))
  }
  for (const prefix of plan.kvDeleteTree) {
    const parsed = parseLabelKey(prefix)
    if (parsed !== undefined) apps.add(parsed.app)
  }
  return {
    plan: { ...plan, deregister: plan.deregister.filter((entry) => entry.why !== "dead"), kvDeleteTree: [] },
    refused: { services: dead.length, keys, limit, apps: [...apps].sort() }
  }
}
