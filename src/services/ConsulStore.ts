import type { AgentService, CatalogNode, Registration, TxnOperation } from "../domain/ConsulApi.js"
import { goDurationText, maxTxnOperations, parseGoDuration, sessionTtlMaxMillis, sessionTtlMinMillis } from "../domain/ConsulApi.js"

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
  fault: AgentFault | undefined
}

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

/** Sessions and locks: Consul writes, but not consular's data (`writes` does not count them). */
export type SessionOperation =
  | "session.create"
  | "session.renew"
  | "session.destroy"
  | "session.info"
  | "kv.acquire"
  | "kv.release"

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
