import { STATUS_CODES } from "node:http"
import type { AgentService, CatalogNode, Registration, TxnOpError, TxnOperation } from "../domain/ConsulApi.js"
import { maxTxnOperations } from "../domain/ConsulApi.js"

/**
 * The state of a Consul datacenter held in memory: agents with their own service tables, one catalog, one KV
 * store with Consul's `?keys` / `?recurse` / `separator` semantics. Both `ConsulMemory` and the embedded
 * Consul HTTP server run on it, so the double and the server cannot disagree. Tests seed it, inspect it, and
 * make it fail (an agent down or hanging, 500s, a share of random failures).
 */

/** How an agent misbehaves. `refuse`: connection refused; `hang`: never answers; `status`: answers that code. */
export type AgentFault =
  | { readonly _tag: "Refuse" }
  | { readonly _tag: "Hang" }
  | { readonly _tag: "Status"; readonly status: number }

export type Admission = { readonly _tag: "Ok" } | AgentFault

/** What a status fault answers: Consul's short text for the status */
export const faultBody = (status: number): string => STATUS_CODES[status] ?? `status ${status}`

/** A transaction Consul refused per operation (409): nothing was applied. */
export interface TxnRolledBack {
  readonly _tag: "RolledBack"
  readonly errors: ReadonlyArray<TxnOpError>
}

export interface StoredAgent {
  readonly node: string
  readonly address: string
  readonly services: Map<string, AgentService>
  fault: AgentFault | undefined
}

export interface RequestRecord {
  readonly agent: string
  readonly operation: ConsulOperation
  readonly write: boolean
}

export type ConsulOperation =
  | "agent.services"
  | "agent.register"
  | "agent.deregister"
  | "catalog.nodes"
  | "kv.get"
  | "kv.keys"
  | "kv.recurse"
  | "kv.put"
  | "kv.delete"
  | "txn"

const writes: ReadonlySet<ConsulOperation> = new Set(["agent.register", "agent.deregister", "kv.put", "kv.delete", "txn"])

/** A small seeded generator (mulberry32), so that "30% of requests fail at random" is the same run after run. */
const seededRandom = (seed: number) => {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

// --- ACLs and versions -------------------------------------------------------------------------------

/** A Consul release, "major.minor": some answers changed between releases (see `ConsulStore.version`). */
export type ConsulVersion = `${number}.${number}`

const minorOf = (version: ConsulVersion): number => Number(version.split(".")[1] ?? 0)

export type AccessLevel = "deny" | "read" | "write"
export type AclResource = "service" | "node" | "key"

/**
 * A token's rights, as a Consul policy states them: one level for every service and every node (`service_prefix ""`,
 * `node_prefix ""`), and for keys either one level or levels per key prefix (`key_prefix`, the longest prefix
 * wins). What is not granted is denied (`default_policy = "deny"`). Write implies read, as in Consul.
 */
export interface AclRules {
  readonly service?: AccessLevel | undefined
  readonly node?: AccessLevel | undefined
  readonly key?: AccessLevel | Readonly<Record<string, AccessLevel>> | undefined
}

export interface AclSettings {
  /** secret -> rules; any other token is unknown to Consul, which answers 403 `ACL not found` */
  readonly tokens: Readonly<Record<string, AclRules>>
  /** what a request without a token may do (Consul's anonymous token); default: nothing */
  readonly anonymous?: AclRules | undefined
}

/** Every right: what a token with `global-management` may do. */
export const allRights: AclRules = { service: "write", node: "write", key: "write" }

/** What Consul answers a request it does not carry out: its status and its own (text) words. */
export interface Refusal {
  readonly _tag: "Refused"
  readonly status: number
  readonly body: string
}

/** A request's outcome as Consul decides it: the value it answers, or a refusal. */
export type Answer<A> = { readonly _tag: "Ok"; readonly value: A } | Refusal

const ok = <A>(value: A): Answer<A> => ({ _tag: "Ok", value })
export const refused = (status: number, body: string): Refusal => ({ _tag: "Refused", status, body })

/** The token a request resolved to: its rules and how Consul names it in a denial. */
interface Authorizer {
  readonly rules: AclRules | "all"
  /** "anonymous token" or "token with AccessorID '…'" (Consul >= 1.11 names the token in its denials) */
  readonly accessor: string
  readonly anonymous: boolean
}

const levelAllows = (level: AccessLevel | undefined, wanted: "read" | "write"): boolean =>
  level === "write" || (level === "read" && wanted === "read")

const keyLevel = (rule: AclRules["key"], key: string): AccessLevel | undefined => {
  if (rule === undefined || typeof rule === "string") return rule
  let best: string | undefined
  for (const prefix of Object.keys(rule)) {
    if (key.startsWith(prefix) && (best === undefined || prefix.length > best.length)) best = prefix
  }
  return best === undefined ? undefined : rule[best]
}

const allows = (authz: Authorizer, resource: AclResource, wanted: "read" | "write", name: string): boolean => {
  if (authz.rules === "all") return true
  const level = resource === "key" ? keyLevel(authz.rules.key, name) : authz.rules[resource]
  return levelAllows(level, wanted)
}

/** A 16-byte accessor id made from the token's position, shaped as Consul's UUIDs. */
const accessorId = (index: number): string => `00000000-0000-4000-8000-${index.toString(16).padStart(12, "0")}`

export class ConsulStore {
  readonly agents = new Map<string, StoredAgent>()
  readonly kv = new Map<string, string>()
  /** every request that reached the store, in order (bounded: the newest `maxLog`) */
  readonly log: Array<RequestRecord> = []
  requests = 0
  writes = 0
  private maxLog = 100_000
  private failureRate = 0
  private random = seededRandom(1)
  /** the main agent: KV and catalog requests count against it */
  main: string
  /**
   * ACLs: undefined (the default) is a Consul without ACLs, where every request may do everything. With ACLs on,
   * reads are filtered to what the token may read, writes are refused with 403, an unknown token gets 403.
   */
  acl: AclSettings | undefined = undefined
  /**
   * The release whose answers the store gives. Deregistering a service the agent does not have: 200 without ACLs
   * and 500 `Unknown service "<id>"` with ACLs up to 1.11; 404 `Unknown service ID "<id>". …` from 1.12 on.
   * A denial: `Permission denied` (or `Permission denied: Missing service:write on web` from the agent) up to 1.10;
   * `Permission denied: token with AccessorID '…' lacks permission 'key:write' on "k"` from 1.11 on.
   */
  version: ConsulVersion = "1.15"

  constructor(main = "127.0.0.1") {
    this.main = main
  }

  addAgent(address: string, node = `node-${address}`): StoredAgent {
    const existing = this.agents.get(address)
    if (existing !== undefined) return existing
    const agent: StoredAgent = { node, address, services: new Map(), fault: undefined }
    this.agents.set(address, agent)
    return agent
  }

  setFault(address: string, fault: AgentFault | undefined): void {
    const agent = this.agents.get(address)
    if (agent !== undefined) agent.fault = fault
  }

  /** Make a share of all requests fail with a 500, deterministically for a seed. 0 turns it off. */
  setFailureRate(rate: number, seed = 1): void {
    this.failureRate = rate
    this.random = seededRandom(seed)
  }

  resetCounters(): void {
    this.requests = 0
    this.writes = 0
    this.log.length = 0
  }

  /** Counts the request and says whether it gets through. An address with no agent refuses connections. */
  admit(address: string, operation: ConsulOperation): Admission {
    const agent = this.agents.get(address)
    if (agent === undefined) return { _tag: "Refuse" }
    if (agent.fault !== undefined) return agent.fault
    this.requests++
    const write = writes.has(operation)
    if (write) this.writes++
    this.log.push({ agent: address, operation, write })
    if (this.log.length > this.maxLog) this.log.splice(0, this.log.length - this.maxLog)
    if (this.failureRate > 0 && this.random() < this.failureRate) {
      if (write) this.writes-- // a failed write changed nothing
      return { _tag: "Status", status: 500 }
    }
    return { _tag: "Ok" }
  }

  // --- requests as Consul answers them (token-aware) ----------------------------------------------------
  // `ConsulMemory` and the embedded server both answer through these, so the two cannot disagree.

  /** The token's rules; `ACL not found` for a token Consul does not know (a blank token is no token). */
  private authorize(token: string | undefined): Authorizer | Refusal {
    const acl = this.acl
    if (acl === undefined) return { rules: "all", accessor: "", anonymous: false }
    if (token === undefined || token === "") {
      return { rules: acl.anonymous ?? {}, accessor: "anonymous token", anonymous: true }
    }
    const secrets = Object.keys(acl.tokens)
    const index = secrets.indexOf(token)
    if (index === -1) return refused(403, "ACL not found")
    return { rules: acl.tokens[token]!, accessor: `token with AccessorID '${accessorId(index + 1)}'`, anonymous: false }
  }

  private atLeast(minor: number): boolean {
    return minorOf(this.version) >= minor
  }

  /**
   * Consul's 403 for a missing permission, worded as the release words it. Up to 1.10 the agent's own checks
   * (service registration) say what is missing and the servers' (KV, txn) only `Permission denied`.
   */
  private denial(authz: Authorizer, resource: AclResource, level: "read" | "write", name: string, byAgent: boolean): string {
    if (!this.atLeast(11)) return byAgent ? `Permission denied: Missing ${resource}:${level} on ${name}` : "Permission denied"
    const anonymousHint = authz.anonymous ? ". The anonymous token is used implicitly when a request does not specify a token." : ""
    return `Permission denied: ${authz.accessor} lacks permission '${resource}:${level}' on "${name}"${anonymousHint}`
  }

  private check(authz: Authorizer, resource: AclResource, level: "read" | "write", name: string, byAgent: boolean): Refusal | undefined {
    return allows(authz, resource, level, name) ? undefined : refused(403, this.denial(authz, resource, level, name, byAgent))
  }

  /** `GET /v1/agent/services`: only the services the token may read (none for an anonymous deny-all token) */
  listServices(address: string, token: string | undefined): Answer<ReadonlyMap<string, AgentService>> {
    const authz = this.authorize(token)
    if ("_tag" in authz) return authz
    const visible = new Map<string, AgentService>()
    for (const [id, service] of this.services(address)) {
      if (allows(authz, "service", "read", service.Service)) visible.set(id, service)
    }
    return ok(visible)
  }

  /** `PUT /v1/agent/service/register`: service:write on the new name, and on the name it replaces */
  registerService(address: string, token: string | undefined, registration: Registration): Answer<void> {
    const authz = this.authorize(token)
    if ("_tag" in authz) return authz
    const denied = this.check(authz, "service", "write", registration.Name, true) ??
      this.replaced(address, registration.ID, authz)
    if (denied !== undefined) return denied
    this.register(address, registration)
    return ok(undefined)
  }

  private replaced(address: string, serviceId: string, authz: Authorizer): Refusal | undefined {
    const existing = this.services(address).get(serviceId)
    return existing === undefined ? undefined : this.check(authz, "service", "write", existing.Service, true)
  }

  /** `PUT /v1/agent/service/deregister/<id>`: service:write on the service; an unknown id as the release answers it */
  deregisterService(address: string, token: string | undefined, serviceId: string): Answer<void> {
    const authz = this.authorize(token)
    if ("_tag" in authz) return authz
    if (!this.services(address).has(serviceId)) {
      if (this.atLeast(12)) {
        return refused(404, `Unknown service ID "${serviceId}". Ensure that the service ID is passed, not the service name.`)
      }
      // up to 1.11 the ACL check is what finds the service missing; without ACLs the agent just logs it
      return this.acl === undefined ? ok(undefined) : refused(500, `Unknown service "${serviceId}"`)
    }
    const denied = this.replaced(address, serviceId, authz)
    if (denied !== undefined) return denied
    this.deregister(address, serviceId)
    return ok(undefined)
  }

  /** `GET /v1/catalog/nodes`: only the nodes the token may read (node:read) */
  listNodes(token: string | undefined): Answer<ReadonlyArray<CatalogNode>> {
    const authz = this.authorize(token)
    if ("_tag" in authz) return authz
    return ok(this.catalogNodes().filter((node) => allows(authz, "node", "read", node.Node)))
  }

  /** `GET /v1/kv/<key>`: a key the token may not read is a 403 (unlike the listings, which are filtered) */
  kvRead(token: string | undefined, key: string): Answer<string | undefined> {
    const authz = this.authorize(token)
    if ("_tag" in authz) return authz
    return this.check(authz, "key", "read", key, false) ?? ok(this.kv.get(key))
  }

  /** `GET /v1/kv/<prefix>?keys`: filtered to the keys the token may read; undefined (404) when none is left */
  kvListKeys(token: string | undefined, prefix: string, separator?: string): Answer<ReadonlyArray<string> | undefined> {
    const authz = this.authorize(token)
    if ("_tag" in authz) return authz
    return ok(this.keys(prefix, separator, (key) => allows(authz, "key", "read", key)))
  }

  /** `GET /v1/kv/<prefix>?recurse`: filtered as `?keys` is */
  kvReadTree(token: string | undefined, prefix: string): Answer<ReadonlyArray<{ readonly key: string; readonly value: string }> | undefined> {
    const authz = this.authorize(token)
    if ("_tag" in authz) return authz
    const entries = this.recurse(prefix)?.filter((entry) => allows(authz, "key", "read", entry.key))
    return ok(entries === undefined || entries.length === 0 ? undefined : entries)
  }

  /** `PUT /v1/kv/<key>`: key:write */
  kvWrite(token: string | undefined, key: string, value: string): Answer<void> {
    const authz = this.authorize(token)
    if ("_tag" in authz) return authz
    const denied = this.check(authz, "key", "write", key, false)
    if (denied !== undefined) return denied
    this.put(key, value)
    return ok(undefined)
  }

  /** `DELETE /v1/kv/<key>[?recurse]`: key:write, on every key below the prefix for a recursive delete */
  kvRemove(token: string | undefined, key: string, recurse: boolean): Answer<void> {
    const authz = this.authorize(token)
    if ("_tag" in authz) return authz
    const denied = this.check(authz, "key", "write", key, false) ??
      (recurse ? this.sortedKeys(key).map((k) => this.check(authz, "key", "write", k, false)).find((d) => d !== undefined) : undefined)
    if (denied !== undefined) return denied
    this.delete(key, recurse)
    return ok(undefined)
  }

  /**
   * `PUT /v1/txn`: more than 64 operations is a 413 before anything else; an unknown token a 403; then every
   * operation is checked and each one refused is listed (409, `Errors`), and none is applied.
   */
  applyTxn(token: string | undefined, operations: ReadonlyArray<TxnOperation>): Answer<void> | TxnRolledBack {
    if (operations.length > maxTxnOperations) {
      return refused(413, `Transaction contains too many operations (${operations.length} > ${maxTxnOperations})`)
    }
    const authz = this.authorize(token)
    if ("_tag" in authz) return authz
    const errors: Array<TxnOpError> = []
    operations.forEach(({ KV }, index) => {
      if (KV.Key === "" && KV.Verb !== "delete-tree") return errors.push({ OpIndex: index, What: "Must provide key" })
      const denied = this.check(authz, "key", "write", KV.Key, false)
      if (denied !== undefined) errors.push({ OpIndex: index, What: denied.body })
    })
    if (errors.length > 0) return { _tag: "RolledBack", errors }
    this.txn(operations)
    return ok(undefined)
  }

  // --- agents and catalog ------------------------------------------------------------------------------

  services(address: string): ReadonlyMap<string, AgentService> {
    return this.agents.get(address)?.services ?? new Map()
  }

  register(address: string, registration: Registration): void {
    this.agents.get(address)?.services.set(registration.ID, {
      ID: registration.ID,
      Service: registration.Name,
      Tags: [...registration.Tags],
      Address: registration.Address,
      Port: registration.Port ?? 0
    })
  }

  /** false when the agent has no such service (Consul answers 404) */
  deregister(address: string, serviceId: string): boolean {
    return this.agents.get(address)?.services.delete(serviceId) ?? false
  }

  catalogNodes(): ReadonlyArray<CatalogNode> {
    return [...this.agents.values()].map((agent) => ({ Node: agent.node, Address: agent.address }))
      .sort((a, b) => a.Node.localeCompare(b.Node))
  }

  // --- KV ----------------------------------------------------------------------------------------------

  private sortedKeys(prefix: string): Array<string> {
    return [...this.kv.keys()].filter((key) => key.startsWith(prefix)).sort()
  }

  /** `?keys[&separator=s]`: keys under the prefix, cut after the first separator past it; undefined = 404 */
  keys(prefix: string, separator?: string, visible: (key: string) => boolean = () => true): ReadonlyArray<string> | undefined {
    const found = this.sortedKeys(prefix).filter(visible)
    if (found.length === 0) return undefined
    if (separator === undefined || separator === "") return found
    const out: Array<string> = []
    for (const key of found) {
      const at = key.indexOf(separator, prefix.length)
      const cut = at === -1 ? key : key.slice(0, at + separator.length)
      if (out[out.length - 1] !== cut) out.push(cut)
    }
    return out
  }

  /** `?recurse`: every entry under the prefix; undefined = 404 */
  recurse(prefix: string): ReadonlyArray<{ readonly key: string; readonly value: string }> | undefined {
    const found = this.sortedKeys(prefix)
    return found.length === 0 ? undefined : found.map((key) => ({ key, value: this.kv.get(key)! }))
  }

  put(key: string, value: string): void {
    this.kv.set(key, value)
  }

  delete(key: string, recurse: boolean): void {
    if (recurse) for (const k of this.sortedKeys(key)) this.kv.delete(k)
    else this.kv.delete(key)
  }

  /** Applies every operation, without checks (`applyTxn` checks first). Values of `set` are base64. */
  txn(operations: ReadonlyArray<TxnOperation>): void {
    for (const { KV } of operations) {
      if (KV.Verb === "set") this.put(KV.Key, Buffer.from(KV.Value ?? "", "base64").toString("utf8"))
      else this.delete(KV.Key, KV.Verb === "delete-tree")
    }
  }
}
