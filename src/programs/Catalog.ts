import { Clock, Effect } from "effect"
import { agentDirectory, isAddress } from "../domain/Agents.js"
import type { AgentDirectory } from "../domain/Agents.js"
import { ConsulError } from "../domain/Errors.js"
import { Consul } from "../services/Consul.js"
import { HostResolver } from "../services/HostResolver.js"
import { Topology } from "./Topology.js"

/**
 * The agents consular may talk to: the catalog's nodes and the `--consul` host. Read at start-up and by every
 * pass; an event naming a host that is none of them re-reads it, at most once a second, before giving up on it.
 */

/** an unknown host re-reads the catalog at most this often */
export const catalogRereadMillis = 1000
/** how long a host name's DNS answer is trusted */
const resolvedMaxAgeMillis = 60_000

export interface AgentLookup {
  /**
   * `GET /v1/catalog/nodes`. A Consul that answers lists at least its own node, so an empty catalog means a token
   * without `node:read`: Consul's ACLs filter what a token may not read instead of refusing it. That is an
   * error, never a datacenter without agents.
   */
  readonly readCatalog: Effect.Effect<AgentDirectory, ConsulError>
  /** `readCatalog` into the topology (the attempt counts for the once-a-second rule), logged loudly when it fails */
  readonly refreshCatalog: Effect.Effect<AgentDirectory, ConsulError>
  /** the agent a host names or resolves to (DNS, remembered a while) in this directory; undefined: none */
  readonly agentIn: (directory: AgentDirectory, host: string) => Effect.Effect<string | undefined>
  /**
   * The agent of an event's task host, or undefined when it is no known agent. A host the last catalog read
   * does not know re-reads it (at most once a second, one read at a time); a catalog that cannot be read fails
   * the event only when it was never read, otherwise the last read stands.
   */
  readonly agentOfHost: (host: string) => Effect.Effect<string | undefined, ConsulError>
}

const neverRead = () => new ConsulError({
  operation: "list catalog nodes",
  reason: "Status",
  detail: "the catalog could not be read yet: no task host can be matched to an agent"
})

export const makeAgentLookup = (consulUrl: URL): Effect.Effect<AgentLookup, never, Consul | HostResolver | Topology> =>
  Effect.gen(function*() {
    const consul = yield* Consul
    const resolver = yield* HostResolver
    const topology = yield* Topology

    const readCatalog = Effect.flatMap(consul.catalogNodes, (nodes) =>
      nodes.some((node) => node.Address !== "")
        ? Effect.succeed(agentDirectory(nodes, consulUrl.hostname))
        : Effect.fail(
          new ConsulError({
            operation: "list catalog nodes",
            reason: "Status",
            detail: "the catalog lists no node although Consul answers: the ACL token (--consul-token) lacks " +
              "node:read (Consul hides what a token may not read); no task host can be matched to an agent"
          })
        ))

    const refreshCatalog = Effect.gen(function*() {
      yield* topology.catalogAsked(yield* Clock.currentTimeMillis)
      const directory = yield* readCatalog.pipe(
        Effect.tapError((error) => Effect.logError("Consul catalog unreadable").pipe(Effect.annotateLogs({ error: error.message })))
      )
      yield* topology.catalogRead(directory, yield* Clock.currentTimeMillis)
      return directory
    })

    const addressesOf = (host: string) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const cached = yield* topology.cachedAddresses(host, now, resolvedMaxAgeMillis)
        if (cached !== undefined) return cached
        const found = yield* resolver.addresses(host)
        yield* topology.rememberAddresses(host, found, now)
        return found
      })

    const agentIn = (directory: AgentDirectory, host: string): Effect.Effect<string | undefined> => {
      const named = directory.agentOf(host)
      if (named !== undefined || isAddress(host)) return Effect.succeed(named)
      return Effect.map(addressesOf(host), (addresses) => directory.agentAt(addresses))
    }

    const agentOfHost = (host: string): Effect.Effect<string | undefined, ConsulError> =>
      Effect.gen(function*() {
        const known = yield* agentIn(yield* topology.directory, host)
        if (known !== undefined) return known
        return yield* topology.catalogLock.withPermits(1)(Effect.gen(function*() {
          const asked = yield* topology.catalogAskedAt
          const now = yield* Clock.currentTimeMillis
          const everRead = (yield* topology.catalogReadAt) !== undefined
          // read meanwhile (by a pass or another event), or asked too recently to ask again
          if (asked !== undefined && now - asked < catalogRereadMillis) {
            return everRead ? yield* agentIn(yield* topology.directory, host) : yield* neverRead()
          }
          const reread = yield* refreshCatalog.pipe(
            Effect.map((directory): AgentDirectory | undefined => directory),
            Effect.catchAll((error) => everRead ? Effect.succeed(undefined) : Effect.fail(error))
          )
          return reread === undefined ? undefined : yield* agentIn(reread, host)
        }))
      })

    return { readCatalog, refreshCatalog, agentIn, agentOfHost }
  })
