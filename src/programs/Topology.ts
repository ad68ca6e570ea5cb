import { Context, Layer } from "effect"
import { agentDirectory } from "../domain/Agents.js"
import type { AgentDirectory } from "../domain/Agents.js"
import { HealthBook } from "./HealthBook.js"
import { KeyedLock } from "./KeyedLock.js"

/**
 * What the last sync pass learned and events rely on: which agent a task host means (the catalog), which app
 * ids clash on one Consul name (skipped), and which app version's labels are already in KV (so a RUNNING event
 * of a known version costs one Consul request, not three).
 */
export interface TopologyView {
  directory: AgentDirectory
  clashingIds: ReadonlySet<string>
  /** app id -> the Marathon app version whose labels are in KV */
  readonly labelVersions: Map<string, string>
  /**
   * Services known to carry our reg-id, as "<agent> <service id>": seen by the last sync or registered since.
   * A kill of one of these is a single deregistration; any other needs a look at its tags first.
   */
  readonly owned: Set<string>
  /** one lock per task, shared by events and sync passes: their writes for one task never interleave */
  readonly locks: KeyedLock
  /** the TTL checks consular relays (`--health-checks ttl`) */
  readonly health: HealthBook
}

export class Topology extends Context.Tag("consular/Topology")<Topology, TopologyView>() {}

export const makeTopology = (consulUrl: URL): TopologyView => ({
  directory: agentDirectory([], consulUrl.hostname),
  clashingIds: new Set(),
  labelVersions: new Map(),
  owned: new Set(),
  locks: new KeyedLock(),
  health: new HealthBook()
})

/** A cache, not the truth: bounded, and emptied (costing a tag lookup per kill) rather than grown without end. */
const maxOwned = 250_000

export const ownedKey = (agent: string, serviceId: string): string => `${agent} ${serviceId}`

export const rememberOwned = (topology: TopologyView, agent: string, serviceId: string): void => {
  if (topology.owned.size >= maxOwned) topology.owned.clear()
  topology.owned.add(ownedKey(agent, serviceId))
}

export const TopologyLive = (consulUrl: URL): Layer.Layer<Topology> =>
  Layer.sync(Topology, () => makeTopology(consulUrl))

/** labels are in KV for this version of the app */
export const labelsKnown = (topology: TopologyView, appId: string, version: string | undefined): boolean =>
  version !== undefined && topology.labelVersions.get(appId) === version

export const rememberLabels = (topology: TopologyView, appId: string, version: string | undefined): void => {
  if (version === undefined) topology.labelVersions.delete(appId)
  else topology.labelVersions.set(appId, version)
}
