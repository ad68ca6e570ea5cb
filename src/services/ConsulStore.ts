import { STATUS_CODES } from "node:http"
import type { AgentService, CatalogNode, Registration, TxnOpError, TxnOperation } from "../domain/ConsulApi.js"
import { goDurationText, maxTxnOperations, parseGoDuration, sessionTtlMaxMillis, sessionTtlMinMillis } from "../domain/ConsulApi.js"
import { ttlCheckId } from "../domain/Naming.js"

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
  /** TTL checks by CheckID, each of a service of this agent */
  readonly checks: Map<string, StoredCheck>
  fault: AgentFault | undefined
}

export type CheckStatus = "passing" | "warning" | "critical"

/** A TTL check as a Consul agent keeps it: its status lapses to critical when no update came within the TTL. */
export interface StoredCheck {
  readonly CheckID: string
  readonly ServiceID: string
  readonly ServiceName: string
  readonly Notes: string
  /** as registered (Go duration) */
  readonly TTL: string
  readonly DeregisterCriticalServiceAfter: string | undefined
  Status: CheckStatus
  Output: string
  /** by the store's clock: when the TTL lapses */
  expiresAt: number
  /** by the store's clock: since when the check is critical (for DeregisterCriticalServiceAfter) */
  criticalSince: number | undefined
}

/** Consul's minimum for DeregisterCriticalServiceAfter: a shorter one is raised to it (agent.go). */
const minimumReapMillis = 60_000

export interface RequestRecord {
  readonly agent: string
  readonly operation: ConsulOperation
  readonly write: boolean
  /** the ACL token the request carried (tests give each consular process its own, to tell who wrote) */
  readonly token?: string | undefined
  /** when it arrived (Date.now()) */
  readonly at?: number | undefined
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
  | SessionOperation
  | "agent.checks"
  | "agent.checkUpdate"
  | "health.service"

/** Sessions and locks: Consul writes, but not consular's data (`writes` does not count them). */
export type SessionOperation =
  | "session.create"
  | "session.renew"
  | "session.destroy"
  | "session.info"
  | "kv.acquire"
  | "kv.release"

const writes: ReadonlySet<ConsulOperation> = new Set(["agent.register", "agent.deregister", "kv.put", "kv.delete", "txn", "agent.checkUpdate"])

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
  /** the clock TTLs run on; tests move it */
  now: () => number = () => Date.now()

  constructor(main = "127.0.0.1") {
    this.main = main
  }

  addAgent(address: string, node = `node-${address}`): StoredAgent {
    const existing = this.agents.get(address)
    if (existing !== undefined) return existing
    const agent: StoredAgent = { node, address, services: new Map(), checks: new Map(), fault: undefined }
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
  admit(address: string, operation: ConsulOperation, token?: string): Admission {
    const agent = this.agents.get(address)
    if (agent === undefined) return { _tag: "Refuse" }
    if (agent.fault !== undefined) return agent.fault
    this.requests++
    const write = writes.has(operation)
    if (write) this.writes++
    this.log.push(token === undefined ? { agent: address, operation, write } : { agent: address, operation, write, token, at: Date.now() })
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
  registerService(
    address: string,
    token: string | undefined,
    registration: Registration,
    options?: { readonly replaceExistingChecks?: boolean | undefined }
  ): Answer<void> {
    const authz = this.authorize(token)
    if ("_tag" in authz) return authz
    const denied = this.check(authz, "service", "write", registration.Name, true) ??
      this.replaced(address, registration.ID, authz)
    if (denied !== undefined) return denied
    this.register(address, registration, options)
    return ok(undefined)
  }

  /** `GET /v1/agent/checks`: only the checks of services the token may read, as the services are filtered */
  listChecks(address: string, token: string | undefined): Answer<ReadonlyMap<string, StoredCheck>> {
    const authz = this.authorize(token)
    if ("_tag" in authz) return authz
    const visible = new Map<string, StoredCheck>()
    for (const [id, check] of this.checks(address)) {
      if (allows(authz, "service", "read", check.ServiceName)) visible.set(id, check)
    }
    return ok(visible)
  }

  /**
   * `PUT /v1/agent/check/update/<id>`: service:write on the check's service (agent vetCheckUpdate); Ok(false) when
   * the agent has no such TTL check.
   */
  updateServiceCheck(address: string, token: string | undefined, checkId: string, status: CheckStatus, output: string): Answer<boolean> {
    const authz = this.authorize(token)
    if ("_tag" in authz) return authz
    const held = this.agents.get(address)?.checks.get(checkId)
    if (held !== undefined) {
      const denied = this.check(authz, "service", "write", held.ServiceName, true)
      if (denied !== undefined) return denied
    }
    return ok(this.updateCheck(address, checkId, status, output))
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
    this.reapCritical()
    return this.agents.get(address)?.services ?? new Map()
  }

  /**
   * As Consul's agent: the body's check becomes `service:<ID>`; re-registering keeps the check's status and
   * output (the agent restores them from its snapshot) and restarts its TTL. A body without a check leaves an
   * existing one alone, unless `replaceExistingChecks` (`?replace-existing-checks`).
   */
  register(address: string, registration: Registration, options?: { readonly replaceExistingChecks?: boolean | undefined }): void {
    const agent = this.agents.get(address)
    if (agent === undefined) return
    agent.services.set(registration.ID, {
      ID: registration.ID,
      Service: registration.Name,
      Tags: [...registration.Tags],
      Address: registration.Address,
      Port: registration.Port ?? 0,
      // kept only when given, so that a service registered without Meta reads back as before (listed as {})
      ...(registration.Meta === undefined ? {} : { Meta: { ...registration.Meta } })
    })
    const checkId = ttlCheckId(registration.ID)
    const check = registration.Check
    if (check === undefined) {
      if (options?.replaceExistingChecks === true) agent.checks.delete(checkId)
      return
    }
    const previous = this.evaluated(agent.checks.get(checkId))
    const status = previous?.Status ?? "critical"
    agent.checks.set(checkId, {
      CheckID: checkId,
      ServiceID: registration.ID,
      ServiceName: registration.Name,
      Notes: check.Notes,
      TTL: check.TTL,
      DeregisterCriticalServiceAfter: check.DeregisterCriticalServiceAfter,
      Status: status,
      Output: previous?.Output ?? "",
      expiresAt: this.now() + (parseGoDuration(check.TTL) ?? 0),
      criticalSince: status === "critical" ? previous?.criticalSince ?? this.now() : undefined
    })
  }

  /** false when the agent has no such service (Consul answers 404) */
  deregister(address: string, serviceId: string): boolean {
    const agent = this.agents.get(address)
    agent?.checks.delete(ttlCheckId(serviceId))
    return agent?.services.delete(serviceId) ?? false
  }

  /** A check with its TTL applied: no update within the TTL turns it critical, with Consul's output. */
  private evaluated(check: StoredCheck | undefined): StoredCheck | undefined {
    if (check === undefined || check.Status === "critical" || this.now() <= check.expiresAt) return check
    check.Status = "critical"
    // agent/checks CheckTTL.getExpiredOutput
    check.Output = check.Output === "" ? "TTL expired" : `TTL expired (last output before timeout follows): ${check.Output}`
    check.criticalSince = check.expiresAt
    return check
  }

  /** `GET /v1/agent/checks` of an agent, statuses as of now. */
  checks(address: string): ReadonlyMap<string, StoredCheck> {
    this.reapCritical()
    const agent = this.agents.get(address)
    if (agent === undefined) return new Map()
    for (const check of agent.checks.values()) this.evaluated(check)
    return agent.checks
  }

  /** `PUT /v1/agent/check/update/<id>`: false when the agent has no such TTL check. */
  updateCheck(address: string, checkId: string, status: CheckStatus, output: string): boolean {
    const check = this.evaluated(this.agents.get(address)?.checks.get(checkId))
    if (check === undefined) return false
    const now = this.now()
    if (status === "critical") check.criticalSince ??= now
    else check.criticalSince = undefined
    check.Status = status
    check.Output = output
    check.expiresAt = now + (parseGoDuration(check.TTL) ?? 0)
    return true
  }

  /** Services whose check has been critical for longer than its DeregisterCriticalServiceAfter are removed. */
  private reapCritical(): void {
    const now = this.now()
    for (const agent of this.agents.values()) {
      for (const check of agent.checks.values()) {
        if (check.DeregisterCriticalServiceAfter === undefined) continue
        this.evaluated(check)
        const after = Math.max(minimumReapMillis, parseGoDuration(check.DeregisterCriticalServiceAfter) ?? 0)
        if (check.criticalSince !== undefined && now - check.criticalSince > after) {
          agent.checks.delete(check.CheckID)
          agent.services.delete(check.ServiceID)
        }
      }
    }
  }

  /**
   * `GET /v1/health/service/<name>[?passing]`: each instance on every agent with its node's and its own checks;
   * with `passing`, only instances whose checks all pass (Consul drops warning too).
   */
  healthService(name: string, passingOnly: boolean): ReadonlyArray<{
    readonly agent: StoredAgent
    readonly service: AgentService
    readonly checks: ReadonlyArray<StoredCheck>
  }> {
    this.reapCritical()
    const found: Array<{ agent: StoredAgent; service: AgentService; checks: ReadonlyArray<StoredCheck> }> = []
    for (const agent of [...this.agents.values()].sort((a, b) => a.node.localeCompare(b.node))) {
      for (const service of agent.services.values()) {
        if (service.Service !== name) continue
        const checks = [...agent.checks.values()].filter((check) => check.ServiceID === service.ID).map((check) => this.evaluated(check)!)
        if (passingOnly && checks.some((check) => check.Status !== "passing")) continue
        found.push({ agent, service, checks })
      }
    }
    return found
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
    const unchanged = this.kv.get(key) === value
    this.kv.set(key, value)
    // Consul leaves an entry's ModifyIndex alone when a write changes nothing
    if (!unchanged || !this.keyMeta.has(key)) this.touch(key)
  }

  delete(key: string, recurse: boolean): void {
    const doomed = recurse ? this.sortedKeys(key) : this.kv.has(key) ? [key] : []
    for (const k of doomed) {
      this.kv.delete(k)
      this.keyMeta.delete(k)
    }
    if (doomed.length > 0) {
      this.index++
      this.notify()
    }
  }

  /** Applies every operation, without checks (`applyTxn` checks first). Values of `set` are base64. */
  txn(operations: ReadonlyArray<TxnOperation>): void {
    for (const { KV } of operations) {
      if (KV.Verb === "set") this.put(KV.Key, Buffer.from(KV.Value ?? "", "base64").toString("utf8"))
      else this.delete(KV.Key, KV.Verb === "delete-tree")
    }
  }

  // --- sessions, locks and indexes (Consul's session API) ----------------------------------------------

  /** sessions by ID */
  readonly sessions = new Map<string, StoredSession>()
  /** indexes and lock holder of each key written through `put` (a key seeded straight into `kv` has none yet) */
  readonly keyMeta = new Map<string, KeyMeta>()
  /** every session that ended, with when and why (tests read it) */
  readonly endedSessions: Array<{ readonly id: string; readonly at: number; readonly why: "expired" | "destroyed" }> = []
  /** Consul's index: grows with every change of a key or a session (never reset, unlike the counters) */
  index = 1
  private readonly lockDelays = new Map<string, number>()
  private readonly listeners = new Set<() => void>()

  /** called on every change of a key or a session (blocking queries wait on it); returns the unsubscribe */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  /** Listeners run once the change is complete, so that they see the new indexes. */
  private notify(): void {
    for (const listener of [...this.listeners]) listener()
  }

  private touch(key: string, lock?: { readonly session: string | undefined; readonly acquired: boolean }): void {
    this.index++
    const meta = this.keyMeta.get(key)
    if (meta === undefined) {
      this.keyMeta.set(key, { CreateIndex: this.index, ModifyIndex: this.index, LockIndex: lock?.acquired === true ? 1 : 0, Session: lock?.session })
    } else {
      meta.ModifyIndex = this.index
      if (lock !== undefined) {
        if (lock.acquired) meta.LockIndex++
        meta.Session = lock.session
      }
    }
    this.notify()
  }

  /** X-Consul-Index of a single-key read: the key's ModifyIndex, else the index of the whole store */
  keyIndex(key: string): number {
    return this.keyMeta.get(key)?.ModifyIndex ?? this.index
  }

  /** Consul's `Session.Apply` (create) with its checks and its own error texts (a 500: they come back over RPC). */
  createSession(request: SessionRequest, now: number): { readonly id: string } | SessionRefusal {
    this.expireSessions(now)
    const behavior = request.Behavior ?? ""
    if (behavior !== "" && behavior !== "release" && behavior !== "delete") {
      return { status: 500, body: `Invalid Behavior setting '${behavior}'` }
    }
    const ttl = request.TTL ?? ""
    let ttlMillis = 0
    if (ttl !== "") {
      const parsed = parseGoDuration(ttl)
      if (parsed === undefined) return { status: 500, body: `Session TTL '${ttl}' invalid: time: invalid duration ${JSON.stringify(ttl)}` }
      if (parsed !== 0 && (parsed < sessionTtlMinMillis || parsed > sessionTtlMaxMillis)) {
        return {
          status: 500,
          body: `Invalid Session TTL '${Math.round(parsed * 1e6)}', must be between [${goDurationText(sessionTtlMinMillis)}=${goDurationText(sessionTtlMaxMillis)}]`
        }
      }
      ttlMillis = parsed
    }
    const lockDelayMillis = lockDelayOf(request.LockDelay)
    if (lockDelayMillis === undefined) return { status: 400, body: `Request decode failed: invalid LockDelay ${JSON.stringify(request.LockDelay)}` }
    this.index++
    const id = newSessionId()
    this.sessions.set(id, {
      ID: id,
      Name: request.Name ?? "",
      Node: request.Node ?? this.agents.get(this.main)?.node ?? "main",
      Behavior: behavior === "delete" ? "delete" : "release",
      TTL: ttl,
      ttlMillis,
      lockDelayMillis: Math.min(lockDelayMillis, maxLockDelayMillis),
      CreateIndex: this.index,
      expiresAt: ttlMillis > 0 ? now + ttlMillis : undefined
    })
    return { id }
  }

  /** undefined: no such session (expired or destroyed); Consul answers 404 */
  renewSession(id: string, now: number): StoredSession | undefined {
    this.expireSessions(now)
    const session = this.sessions.get(id)
    if (session !== undefined && session.ttlMillis > 0) session.expiresAt = now + session.ttlMillis
    return session
  }

  sessionInfo(id: string, now: number): StoredSession | undefined {
    this.expireSessions(now)
    return this.sessions.get(id)
  }

  /** Destroying an unknown session is not an error in Consul (`true`) */
  destroySession(id: string, now: number): void {
    this.expireSessions(now)
    if (this.sessions.has(id)) this.invalidate(id, now, "destroyed")
  }

  /** Ends the sessions whose TTL ran out by `now`. The embedded server calls it on a timer; every session call does too. */
  expireSessions(now: number): void {
    for (const session of [...this.sessions.values()]) {
      if (session.expiresAt !== undefined && session.expiresAt <= now) this.invalidate(session.ID, now, "expired")
    }
  }

  /** Consul's deleteSessionTxn: the keys it holds are released (or deleted) and locked out for its LockDelay. */
  private invalidate(id: string, now: number, why: "expired" | "destroyed"): void {
    const session = this.sessions.get(id)
    if (session === undefined) return
    this.sessions.delete(id)
    this.endedSessions.push({ id, at: now, why })
    this.index++
    for (const [key, meta] of [...this.keyMeta]) {
      if (meta.Session !== id) continue
      if (session.Behavior === "delete") {
        this.kv.delete(key)
        this.keyMeta.delete(key)
      } else {
        meta.Session = undefined
        meta.ModifyIndex = this.index
      }
      if (session.lockDelayMillis > 0) this.lockDelays.set(key, now + session.lockDelayMillis)
    }
    this.notify()
  }

  /**
   * `PUT /v1/kv/<key>?acquire=<session>`: false while the key is in its lock delay or held by another session;
   * true when it is now (or was already) held by this one, the value written either way. An unknown session is
   * Consul's 500 `invalid session "<id>"`.
   */
  acquire(key: string, session: string, value: string, now: number): boolean | SessionRefusal {
    this.expireSessions(now)
    if ((this.lockDelays.get(key) ?? 0) > now) return false
    if (!this.sessions.has(session)) return { status: 500, body: `invalid session ${JSON.stringify(session)}` }
    const holder = this.keyMeta.get(key)?.Session
    if (holder !== undefined && holder !== session) return false
    this.kv.set(key, value)
    this.touch(key, { session, acquired: holder === undefined })
    return true
  }

  /** `PUT /v1/kv/<key>?release=<session>`: true when the session held the key; the value is written too. */
  release(key: string, session: string, value: string, now: number): boolean {
    this.expireSessions(now)
    const meta = this.keyMeta.get(key)
    if (meta === undefined || meta.Session !== session) return false
    this.kv.set(key, value)
    this.touch(key, { session: undefined, acquired: false })
    return true
  }

}

// --- sessions, locks and indexes (Consul's session API) ------------------------------------------------

/** A session as Consul keeps it. Times are milliseconds of whatever clock the caller passes as `now`. */
export interface StoredSession {
  readonly ID: string
  readonly Name: string
  readonly Node: string
  readonly Behavior: "release" | "delete"
  /** as given ("15s"); "" for none */
  readonly TTL: string
  readonly ttlMillis: number
  readonly lockDelayMillis: number
  readonly CreateIndex: number
  /** when the TTL runs out; undefined without a TTL */
  expiresAt: number | undefined
}

/** What Consul keeps beside a key's value: its indexes and the session holding it. */
export interface KeyMeta {
  readonly CreateIndex: number
  ModifyIndex: number
  LockIndex: number
  Session: string | undefined
}

/** A refusal with Consul's status and text body. */
export interface SessionRefusal {
  readonly status: number
  readonly body: string
}

export interface SessionRequest {
  readonly Name?: string | undefined
  readonly Node?: string | undefined
  /** a Go duration ("15s"); "" or absent: no TTL */
  readonly TTL?: string | undefined
  /** a Go duration or a number of nanoseconds; below 1000 counts as seconds (Consul's FixupLockDelay) */
  readonly LockDelay?: string | number | undefined
  readonly Behavior?: string | undefined
}

const maxLockDelayMillis = 60_000
const defaultLockDelayMillis = 15_000

/** Consul's FixupLockDelay: a duration string, or nanoseconds; a value under 1000 means seconds. */
const lockDelayOf = (raw: string | number | undefined): number | undefined => {
  if (raw === undefined) return defaultLockDelayMillis
  const millis = typeof raw === "number" ? raw / 1e6 : parseGoDuration(raw)
  if (millis === undefined || !Number.isFinite(millis)) return undefined
  return millis * 1e6 < 1000 ? millis * 1e6 * 1000 : millis
}

let sessionCounter = 0
const newSessionId = (): string => {
  const hex = (Date.now().toString(16) + (++sessionCounter).toString(16).padStart(8, "0") + Math.random().toString(16).slice(2))
    .padEnd(32, "0").slice(0, 32)
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`
}
