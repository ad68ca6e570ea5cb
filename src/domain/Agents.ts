import type { CatalogNode } from "./ConsulApi.js"

/**
 * Which Consul agent a task host means. consular talks (and sends its ACL token) only to the `--consul` host and
 * to the agents of the catalog, at the address the catalog gives each node: a host is an agent when it is a
 * node's address or name (or that name's first label, as in Marathon's `slave-1.acme.org` for node `slave-1`),
 * or when it resolves to a node's address (looked up elsewhere: this module does no I/O). Any other host is no
 * known agent, and nothing is sent to it.
 */
export interface AgentDirectory {
  /** the agent of the `--consul` URL */
  readonly main: string
  /** every agent consular knows: each catalog node, and the main agent */
  readonly all: ReadonlyArray<string>
  /** the agent a task host names, or undefined when it names none (it may still resolve to one) */
  readonly agentOf: (host: string) => string | undefined
  /** the agent among a host's addresses (its DNS answer), or undefined */
  readonly agentAt: (addresses: ReadonlyArray<string>) => string | undefined
  /** true when the agent is a catalog node, so its identity is certain */
  readonly inCatalog: (agent: string) => boolean
  /** catalog nodes with an address */
  readonly nodes: number
}

// a Map, not an object literal: a host named "constructor" must not find Object.prototype's members
const loopbackNames: ReadonlyMap<string, ReadonlyArray<string>> = new Map([["localhost", ["127.0.0.1", "::1"]]])

const stripBrackets = (host: string): string => host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host

const ipv4 = /^\d{1,3}(\.\d{1,3}){3}$/
/** an IP address (IPv6 possibly in brackets), as opposed to a name: there is nothing to look up */
export const isAddress = (host: string): boolean => ipv4.test(host) || host.includes(":")

/** "slave-1.acme.org" -> "slave-1"; an address or a single label has none */
const firstLabel = (host: string): string | undefined => {
  if (isAddress(host)) return undefined
  const dot = host.indexOf(".")
  return dot > 0 ? host.slice(0, dot) : undefined
}

export const agentDirectory = (nodes: ReadonlyArray<CatalogNode>, mainHost: string): AgentDirectory => {
  const addresses = new Set<string>()
  const byName = new Map<string, string>()
  for (const node of nodes) {
    if (node.Address === "") continue
    addresses.add(node.Address)
    byName.set(node.Node.toLowerCase(), node.Address)
  }
  const inCatalog = (raw: string): string | undefined => {
    const host = stripBrackets(raw)
    if (addresses.has(host)) return host
    const lower = host.toLowerCase()
    const named = byName.get(lower)
    if (named !== undefined) return named
    const label = firstLabel(lower)
    const labelled = label === undefined ? undefined : byName.get(label)
    if (labelled !== undefined) return labelled
    for (const alias of loopbackNames.get(lower) ?? []) {
      if (addresses.has(alias)) return alias
    }
    return undefined
  }
  const mainRaw = stripBrackets(mainHost)
  const main = inCatalog(mainRaw) ?? mainRaw
  const agentOf = (host: string): string | undefined => {
    const found = inCatalog(host)
    if (found !== undefined) return found
    const bare = stripBrackets(host)
    // the --consul host is an agent consular talks to anyway
    return bare.toLowerCase() === mainRaw.toLowerCase() ? main : undefined
  }
  const agentAt = (found: ReadonlyArray<string>): string | undefined => {
    for (const address of found) {
      if (addresses.has(address)) return address
      if (address === main) return main
    }
    return undefined
  }
  const all = addresses.has(main) ? [...addresses] : [...addresses, main]
  return { main, all, agentOf, agentAt, inCatalog: (agent) => addresses.has(agent), nodes: addresses.size }
}
