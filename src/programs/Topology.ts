import { Context, Effect, Layer } from "effect"
import { agentDirectory } from "../domain/Agents.js"
import type { AgentDirectory } from "../domain/Agents.js"
import type { AppName } from "../domain/Naming.js"
import { appName } from "../domain/Naming.js"
import type { RunSpec } from "../domain/RunSpec.js"
import { HealthBook } from "./HealthBook.js"
import { KeyedLock } from "./KeyedLock.js"

/**
 * What the daemon knows between passes and events rely on, held here and changed only through these methods:
 * which agents the catalog lists (and when it was last read), what host names resolved to, which app ids clash
 * on one Consul name, which app version's labels are already in KV, how each app or pod version's tasks are
 * reached (its run spec), and which services carry our reg-id.
 * Every per-host and per-app record is bounded: an event naming hosts or apps at will cannot grow it without end.
 */
export interface TopologyService {
  /** the agents of the last catalog read (before any: only the main agent) */
  readonly directory: Effect.Effect<AgentDirectory>
  /** millis of the last successful catalog read; undefined before the first */
  readonly catalogReadAt: Effect.Effect<number | undefined>
  readonly catalogRead: (directory: AgentDirectory, at: number) => Effect.Effect<void>
  /** millis of the last attempt to read the catalog, successful or not */
  readonly catalogAskedAt: Effect.Effect<number | undefined>
  readonly catalogAsked: (at: number) => Effect.Effect<void>
  /** held while the catalog is re-read for an unknown host: events asking at the same time wait for that read */
  readonly catalogLock: Effect.Semaphore

  /** a host name's addresses, when looked up less than `maxAgeMillis` ago */
  readonly cachedAddresses: (host: string, now: number, maxAgeMillis: number) => Effect.Effect<ReadonlyArray<string> | undefined>
  readonly rememberAddresses: (host: string, addresses: ReadonlyArray<string>, now: number) => Effect.Effect<void>

  /** Marathon's apps as a read of it (start-up or pass) found them; clashing ids are skipped until the next read */
  readonly appsRead: (ids: Iterable<string>, clashingIds: ReadonlySet<string>) => Effect.Effect<void>
  /**
   * Whether an event may act for this app: "clash" when its id clashes, or its name is another app's (one new
   * since the last read included); "new" claims the name for this id until the claim is confirmed or released.
   */
  readonly claimApp: (appId: string) => Effect.Effect<"known" | "new" | "clash">
  /** Marathon has no such app (or could not say): the claim of `claimApp` ends */
  readonly releaseApp: (appId: string) => Effect.Effect<void>

  readonly labelsKnown: (appId: string, version: string | undefined) => Effect.Effect<boolean>
  readonly rememberLabels: (appId: string, version: string | undefined) => Effect.Effect<void>

  /**
   * How the tasks of this version of the app or pod are reached (networking only, never tasks), when a pass or an
   * event already read it: a RUNNING event of a known version reads nothing from Marathon, as for labels.
   */
  readonly knownRunSpec: (appId: string, version: string | undefined) => Effect.Effect<RunSpec | undefined>
  readonly rememberRunSpec: (appId: string, version: string | undefined, runSpec: RunSpec) => Effect.Effect<void>

  readonly isOwned: (agent: string, serviceId: string) => Effect.Effect<boolean>
  readonly rememberOwned: (agent: string, serviceId: string) => Effect.Effect<void>
  readonly forgetOwned: (agent: string, serviceId: string) => Effect.Effect<void>

  /** What a pass (not a dry run) learned replaces what was known: catalog, apps, ours, labels in KV. */
  readonly passApplied: (pass: {
    readonly directory: AgentDirectory | undefined
    readonly at: number
    readonly appIds: Iterable<string>
    readonly clashingIds: ReadonlySet<string>
    readonly owned: Iterable<readonly [agent: string, serviceId: string]>
    readonly labelVersions: Iterable<readonly [appId: string, version: string]>
    /** the run spec of each app and pod version the pass read */
    readonly runSpecs: Iterable<readonly [appId: string, version: string, runSpec: RunSpec]>
  }) => Effect.Effect<void>

  /** one lock per task, shared by events and sync passes: their writes for one task never interleave */
  readonly locks: KeyedLock
  /** the TTL checks consular relays (`--health-checks ttl`) */
  readonly health: HealthBook
}

export class Topology extends Context.Tag("consular/Topology")<Topology, TopologyService>() {}

/** A cache, not the truth: bounded, and emptied (costing a tag lookup per kill) rather than grown without end. */
const maxOwned = 250_000
/** host names looked up by DNS: a few per cluster; events naming others at will only cycle this many */
const maxResolvedHosts = 256
/** apps new since the last read of Marathon, claimed by events: bounded like any cache */
const maxClaims = 10_000
/** run specs of apps and pods: one per app or pod id, so as many as a large Marathon has, and no more */
const maxRunSpecs = 100_000

const ownedKey = (agent: string, serviceId: string): string => `${agent} ${serviceId}`

/** Insertion-ordered map that forgets its oldest entry beyond `capacity`. */
const boundedSet = <K, V>(map: Map<K, V>, capacity: number, key: K, value: V): void => {
  map.delete(key)
  map.set(key, value)
  if (map.size > capacity) map.delete(map.keys().next().value!)
}

export const makeTopology = (consulUrl: URL): TopologyService => {
  let directory = agentDirectory([], consulUrl.hostname)
  let catalogReadAt: number | undefined
  let catalogAskedAt: number | undefined
  const resolved = new Map<string, { readonly addresses: ReadonlyArray<string>; readonly at: number }>()
  // app name -> the id Marathon's last read gave it
  let names = new Map<AppName, string>()
  let clashing: ReadonlySet<string> = new Set()
  // names events claimed for apps new since the last read
  const claims = new Map<AppName, string>()
  const labelVersions = new Map<string, string>()
  const runSpecs = new Map<string, { readonly version: string; readonly runSpec: RunSpec }>()
  const rememberRunSpec = (appId: string, version: string | undefined, runSpec: RunSpec): void => {
    if (version === undefined) runSpecs.delete(appId)
    else boundedSet(runSpecs, maxRunSpecs, appId, { version, runSpec })
  }
  const owned = new Set<string>()
  const rememberOwned = (agent: string, serviceId: string): void => {
    if (owned.size >= maxOwned) owned.clear()
    owned.add(ownedKey(agent, serviceId))
  }
  const appsRead = (ids: Iterable<string>, clashingIds: ReadonlySet<string>): void => {
    names = new Map()
    for (const id of ids) names.set(appName(id), id)
    clashing = clashingIds
    claims.clear()
  }
  return {
    directory: Effect.sync(() => directory),
    catalogReadAt: Effect.sync(() => catalogReadAt),
    catalogRead: (read, at) =>
      Effect.sync(() => {
        directory = read
        catalogReadAt = at
      }),
    catalogAskedAt: Effect.sync(() => catalogAskedAt),
    catalogAsked: (at) =>
      Effect.sync(() => {
        catalogAskedAt = at
      }),
    catalogLock: Effect.unsafeMakeSemaphore(1),
    cachedAddresses: (host, now, maxAge) =>
      Effect.sync(() => {
        const entry = resolved.get(host)
        return entry !== undefined && now - entry.at < maxAge ? entry.addresses : undefined
      }),
    rememberAddresses: (host, addresses, now) => Effect.sync(() => boundedSet(resolved, maxResolvedHosts, host, { addresses, at: now })),
    appsRead: (ids, clashingIds) => Effect.sync(() => appsRead(ids, clashingIds)),
    claimApp: (appId) =>
      Effect.sync(() => {
        if (clashing.has(appId)) return "clash"
        const name = appName(appId)
        const known = names.get(name)
        if (known !== undefined) return known === appId ? "known" : "clash"
        const claimed = claims.get(name)
        if (claimed !== undefined && claimed !== appId) return "clash"
        boundedSet(claims, maxClaims, name, appId)
        return "new"
      }),
    releaseApp: (appId) =>
      Effect.sync(() => {
        const name = appName(appId)
        if (claims.get(name) === appId) claims.delete(name)
      }),
    labelsKnown: (appId, version) => Effect.sync(() => version !== undefined && labelVersions.get(appId) === version),
    rememberLabels: (appId, version) =>
      Effect.sync(() => {
        if (version === undefined) labelVersions.delete(appId)
        else labelVersions.set(appId, version)
      }),
    knownRunSpec: (appId, version) =>
      Effect.sync(() => {
        const known = version === undefined ? undefined : runSpecs.get(appId)
        return known !== undefined && known.version === version ? known.runSpec : undefined
      }),
    rememberRunSpec: (appId, version, runSpec) => Effect.sync(() => rememberRunSpec(appId, version, runSpec)),
    isOwned: (agent, serviceId) => Effect.sync(() => owned.has(ownedKey(agent, serviceId))),
    rememberOwned: (agent, serviceId) => Effect.sync(() => rememberOwned(agent, serviceId)),
    forgetOwned: (agent, serviceId) => Effect.sync(() => void owned.delete(ownedKey(agent, serviceId))),
    passApplied: (pass) =>
      Effect.sync(() => {
        if (pass.directory !== undefined) {
          directory = pass.directory
          catalogReadAt = pass.at
          catalogAskedAt = pass.at
        }
        appsRead(pass.appIds, pass.clashingIds)
        owned.clear()
        for (const [agent, serviceId] of pass.owned) rememberOwned(agent, serviceId)
        labelVersions.clear()
        for (const [appId, version] of pass.labelVersions) labelVersions.set(appId, version)
        runSpecs.clear()
        for (const [appId, version, runSpec] of pass.runSpecs) rememberRunSpec(appId, version, runSpec)
      }),
    locks: new KeyedLock(),
    health: new HealthBook()
  }
}

export const TopologyLive = (consulUrl: URL): Layer.Layer<Topology> =>
  Layer.sync(Topology, () => Topology.of(makeTopology(consulUrl)))
