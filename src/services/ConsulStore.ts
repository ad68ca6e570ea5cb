import type { AgentService, CatalogNode, Registration, TxnOperation } from "../domain/ConsulApi.js"
import { maxTxnOperations } from "../domain/ConsulApi.js"
import { parseGoDuration } from "../domain/GoDuration.js"
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
  | "agent.checks"
  | "agent.checkUpdate"
  | "health.service"

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
  keys(prefix: string, separator?: string): ReadonlyArray<string> | undefined {
    const found = this.sortedKeys(prefix)
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

  /** Applies all operations or none, as Consul does. Values of `set` are base64. */
  txn(operations: ReadonlyArray<TxnOperation>): { readonly ok: true } | { readonly ok: false; readonly status: number; readonly error: string } {
    if (operations.length > maxTxnOperations) {
      return { ok: false, status: 413, error: `Transaction contains too many operations (${operations.length} > ${maxTxnOperations})` }
    }
    for (const { KV } of operations) {
      if (KV.Key === "" && KV.Verb !== "delete-tree") return { ok: false, status: 409, error: "key must not be empty" }
    }
    for (const { KV } of operations) {
      if (KV.Verb === "set") this.put(KV.Key, Buffer.from(KV.Value ?? "", "base64").toString("utf8"))
      else this.delete(KV.Key, KV.Verb === "delete-tree")
    }
    return { ok: true }
  }
}
