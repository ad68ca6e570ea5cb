import type { CatalogNode } from "./ConsulApi.js"

/**
 * Which Consul agent a host name or address means. An agent is known by the address the catalog gives its node
 * (that is where the original's purge reached it); a task host naming a node by its name, or the main Consul URL
 * pointing at one, resolves to the same agent, so that no agent is read twice or mistaken for another.
 */
export interface AgentDirectory {
  /** the agent of the `--consul` URL */
  readonly main: string
  /** every agent consular knows: each catalog node, and the main agent */
  readonly all: ReadonlyArray<string>
  readonly resolve: (host: string) => string
  /** true when the agent is a catalog node, so its identity is certain */
  readonly inCatalog: (agent: string) => boolean
}

// a Map, not an object literal: a host named "constructor" must not find Object.prototype's members
const loopbackNames: ReadonlyMap<string, ReadonlyArray<string>> = new Map([["localhost", ["127.0.0.1", "::1"]]])

const stripBrackets = (host: string): string => host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host

export const agentDirectory = (nodes: ReadonlyArray<CatalogNode>, mainHost: string): AgentDirectory => {
  const addresses = new Set<string>()
  const byName = new Map<string, string>()
  for (const node of nodes) {
    if (node.Address === "") continue
    addresses.add(node.Address)
    byName.set(node.Node.toLowerCase(), node.Address)
  }
  const resolve = (raw: string): string => {
    const host = stripBrackets(raw)
    if (addresses.has(host)) return host
    const named = byName.get(host.toLowerCase())
    if (named !== undefined) return named
    for (const alias of loopbackNames.get(host.toLowerCase()) ?? []) {
      if (addresses.has(alias)) return alias
    }
    return host
  }
  const main = resolve(mainHost)
  const all = addresses.has(main) ? [...addresses] : [...addresses, main]
  return { main, all, resolve, inCatalog: (agent) => addresses.has(agent) }
}
