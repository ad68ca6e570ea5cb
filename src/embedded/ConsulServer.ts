import { HttpRouter, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import type { HttpServerError } from "@effect/platform"
import { Clock, Context, Effect, ExecutionStrategy, Exit, Layer, ParseResult, Schedule, Schema, Scope } from "effect"
import { CheckStatus, Registration, TxnOperations } from "../domain/ConsulApi.js"
import type { Meta } from "../domain/ConsulApi.js"
import { formatGoDuration, parseGoDuration } from "../domain/GoDuration.js"
import { allRights, faultBody } from "../services/ConsulStore.js"
import type { AclSettings, ConsulOperation, ConsulStore, ConsulVersion, Refusal, SessionRequest, StoredCheck, StoredSession } from "../services/ConsulStore.js"
import type { ServerTls } from "./Listen.js"
import { decodePath, dropConnection, listen, requestTarget } from "./Listen.js"

/**
 * A Consul datacenter over HTTP, served from a `ConsulStore`: the subset of Consul's API that consular uses,
 * with Consul's status codes and bodies. Each agent is the same port on its own loopback address (Linux routes
 * all of 127/8 to lo), so "the agent of the task's host" works as with a real datacenter.
 */

export interface ConsulServerOptions {
  /** one agent per address; default: the store's main agent */
  readonly addresses?: ReadonlyArray<string> | undefined
  /** 0 or absent: a free port, the same on every address */
  readonly port?: number | undefined
  /**
   * Shorthand for ACLs with one token of every right and a deny-all anonymous token (see `ConsulStore.acl`,
   * which this sets; set that for finer rules). The token travels as `X-Consul-Token`, `Authorization: Bearer`
   * or `?token=`, as Consul accepts it.
   */
  readonly requiredToken?: string | undefined
  /** ACLs with these tokens and rules (sets `ConsulStore.acl`; default: no ACLs, as Consul ships) */
  readonly acl?: AclSettings | undefined
  /** the Consul release whose answers to give (sets `ConsulStore.version`; default "1.15") */
  readonly version?: ConsulVersion | undefined
  readonly tls?: ServerTls | undefined
}

export interface ConsulServer {
  readonly port: number
  readonly addresses: ReadonlyArray<string>
  readonly scheme: "http" | "https"
  /** base URL of an agent, e.g. "http://127.0.0.2:8500"; default: the main agent (or the first address) */
  readonly url: (address?: string) => string
}

/** Consul writes its error bodies as plain text, which Go's server labels `text/plain; charset=utf-8` */
const text = (body: string, status: number) =>
  HttpServerResponse.text(body, { status, contentType: "text/plain; charset=utf-8" })

const refusal = (answer: Refusal) => text(answer.body, answer.status)


const tokenOf = (request: HttpServerRequest.HttpServerRequest): string | undefined => {
  const query = requestTarget(request).query.get("token")
  if (query !== null && query !== "") return query
  const header = request.headers["x-consul-token"]
  if (header !== undefined && header !== "") return header
  const authorization = request.headers["authorization"]
  return authorization?.startsWith("Bearer ") === true ? authorization.slice("Bearer ".length) : undefined
}

const QuotedString = Schema.parseJson(Schema.String)

/**
 * The one filter form consular sends (`ID == "x"`, a JSON-quoted string), on ID or Service. Any other filter
 * is ignored: the listing is unfiltered, which consular's client tolerates (it picks the service itself).
 */
const parseFilter = (filter: string | null): { readonly field: "ID" | "Service"; readonly value: string } | undefined => {
  if (filter === null) return undefined
  const match = /^\s*(ID|Service)\s*==\s*("(?:[^"\\]|\\.)*")\s*$/.exec(filter)
  if (match === null) return undefined
  const value = Schema.decodeUnknownOption(QuotedString)(match[2])
  return value._tag === "Some" && (match[1] === "ID" || match[1] === "Service") ? { field: match[1], value: value.value } : undefined
}

const base64 = (value: string): string | null => value === "" ? null : Buffer.from(value, "utf8").toString("base64")

/** A body Consul cannot decode: 400 with its words (the agent endpoints say `Request decode failed`, /v1/txn `Failed to parse body`) */
const decodeFailed = (prefix = "Request decode failed") => (error: ParseResult.ParseError | { readonly message: string }) =>
  text(`${prefix}: ${ParseResult.isParseError(error) ? ParseResult.TreeFormatter.formatErrorSync(error) : error.message}`, 400)

/**
 * Consul's own check of service Meta (agent/structs `ValidateServiceMetadata`, `validateMetaPair`), written out
 * here from Consul, not shared with consular's ServiceMeta.ts: the double must not agree with the code by construction.
 */
const metaProblem = (meta: Meta | undefined): string | undefined => {
  if (meta === undefined) return undefined
  const entries = Object.entries(meta)
  if (entries.length > 64) return "Service metadata cannot contain more than 64 key/value pairs"
  for (const [key, value] of entries) {
    if (key === "") return "Key cannot be blank"
    if (!/^[A-Za-z0-9_-]+$/.test(key)) return `Key contains invalid characters`
    if (key.length > 128) return "Key is too long (limit: 128 characters)"
    if (key.startsWith("consul-")) return "Key prefix 'consul-' is reserved for internal use"
    if (Buffer.byteLength(value, "utf8") > 512) return "Value is too long (limit: 512 characters)"
  }
  return undefined
}

/** What Consul reads from a check update: Output may be left out (empty). */
const CheckUpdateBody = Schema.Struct({ Status: CheckStatus, Output: Schema.optionalWith(Schema.String, { default: () => "" }) })

/** What Consul answers a registration it refuses (agent_endpoint.go AgentRegisterService), or undefined. */
const registrationProblem = (registration: Registration): string | undefined => {
  const meta = metaProblem(registration.Meta)
  if (meta !== undefined) return `Invalid Service Meta: ${meta}`
  const check = registration.Check
  if (check === undefined) return undefined
  const ttl = parseGoDuration(check.TTL)
  if (ttl === undefined) return `Request decode failed: time: invalid duration ${JSON.stringify(check.TTL)}`
  if (ttl <= 0) return "Invalid check: TTL must be > 0 for TTL checks"
  const reap = check.DeregisterCriticalServiceAfter
  if (reap !== undefined && parseGoDuration(reap) === undefined) return `Request decode failed: time: invalid duration ${JSON.stringify(reap)}`
  return undefined
}

/** The HTTP API of one agent. Agent-scoped routes act on `agent`; KV and catalog on the store's, as every
 *  real agent forwards those to the servers. */
export const consulRouter = (store: ConsulStore, agent: string) => {
  /** The store decides first whether the request gets through (faults, failure rate), then, per request, the ACL. */
  const admitted = (
    operation: ConsulOperation,
    handle: (request: HttpServerRequest.HttpServerRequest, token: string | undefined) => Effect.Effect<HttpServerResponse.HttpServerResponse>
  ) =>
    Effect.gen(function*() {
      const request = yield* HttpServerRequest.HttpServerRequest
      const admission = store.admit(agent, operation, tokenOf(request))
      switch (admission._tag) {
        case "Refuse":
          return yield* dropConnection(request)
        case "Hang":
          return yield* Effect.never
        case "Status":
          return text(faultBody(admission.status), admission.status)
        case "Ok":
          break
      }
      return yield* handle(request, tokenOf(request))
    })

  /** Consul's consistency headers on reads; the index is the store's write count (it only ever grows). */
  const index = () => String(Math.max(1, store.writes))
  const withIndex = (response: HttpServerResponse.HttpServerResponse) =>
    HttpServerResponse.setHeaders(response, {
      "X-Consul-Index": index(),
      "X-Consul-KnownLeader": "true",
      "X-Consul-LastContact": "0"
    })

  /** Consul's 404 for a missing key or prefix: no body at all */
  const notFound = () => withIndex(HttpServerResponse.empty({ status: 404, headers: { "content-length": "0" } }))

  const kvEntry = (key: string, value: string) => {
    const meta = store.keyMeta.get(key)
    if (meta !== undefined) {
      // Consul leaves Session out of an entry no session holds
      const held = meta.Session === undefined ? {} : { Session: meta.Session }
      return { LockIndex: meta.LockIndex, Key: key, Flags: 0, Value: base64(value), ...held, CreateIndex: meta.CreateIndex, ModifyIndex: meta.ModifyIndex }
    }
    const at = Number(index())
    return { LockIndex: 0, Key: key, Flags: 0, Value: base64(value), CreateIndex: at, ModifyIndex: at }
  }

  /** The key in `/v1/kv/<key>`, URL-decoded as Consul's HTTP server does; undefined for a malformed escape. */
  const kvKey = (request: HttpServerRequest.HttpServerRequest): string | undefined =>
    decodePath(requestTarget(request).path.slice("/v1/kv/".length))

  const badKey = text("Invalid URL escape in key", 400)

  const kvRead = Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const { query } = requestTarget(request)
    const operation: ConsulOperation = query.has("keys") ? "kv.keys" : query.has("recurse") ? "kv.recurse" : "kv.get"
    return yield* admitted(operation, (request, token) => {
      const key = kvKey(request)
      if (key === undefined) return Effect.succeed(badKey)
      switch (operation) {
        case "kv.keys": {
          const separator = query.get("separator") ?? undefined
          const keys = store.kvListKeys(token, key, separator)
          if (keys._tag === "Refused") return Effect.succeed(refusal(keys))
          return Effect.succeed(keys.value === undefined ? notFound() : withIndex(HttpServerResponse.unsafeJson(keys.value)))
        }
        case "kv.recurse": {
          const entries = store.kvReadTree(token, key)
          if (entries._tag === "Refused") return Effect.succeed(refusal(entries))
          return Effect.succeed(
            entries.value === undefined
              ? notFound()
              : withIndex(HttpServerResponse.unsafeJson(entries.value.map((entry) => kvEntry(entry.key, entry.value))))
          )
        }
        default: {
          const read = store.kvRead(token, key)
          if (read._tag === "Refused") return Effect.succeed(refusal(read))
          const blocking = blockingOptions(query)
          if (typeof blocking === "string") return Effect.succeed(text(blocking, 400))
          return Effect.map(waitForKey(key, blocking), () => {
            const value = store.kv.get(key)
            // a single key's X-Consul-Index is its ModifyIndex (the store's index when it does not exist)
            const keyIndex = { "X-Consul-Index": String(store.keyIndex(key)) }
            if (value === undefined) return HttpServerResponse.setHeaders(notFound(), keyIndex)
            return HttpServerResponse.setHeaders(withIndex(
              query.has("raw")
                ? HttpServerResponse.text(value, { contentType: "application/octet-stream" })
                : HttpServerResponse.unsafeJson([kvEntry(key, value)])
            ), keyIndex)
          })
        }
      }
    })
  })

  const kvPut = admitted("kv.put", (request, token) => {
    const key = kvKey(request)
    if (key === undefined) return Effect.succeed(badKey)
    if (key === "") return Effect.succeed(text("Missing key name", 400))
    return request.text.pipe(
      Effect.map((value) => {
        const written = store.kvWrite(token, key, value)
        return written._tag === "Refused" ? refusal(written) : HttpServerResponse.unsafeJson(true)
      }),
      Effect.catchAll(decodeFailed())
    )
  })

  const kvDelete = admitted("kv.delete", (request, token) => {
    const key = kvKey(request)
    if (key === undefined) return Effect.succeed(badKey)
    const removed = store.kvRemove(token, key, requestTarget(request).query.has("recurse"))
    return Effect.succeed(removed._tag === "Refused" ? refusal(removed) : HttpServerResponse.unsafeJson(true))
  })

  const txn = admitted("txn", (request, token) =>
    request.json.pipe(
      Effect.flatMap(Schema.decodeUnknown(TxnOperations)),
      Effect.map((operations) => {
        const outcome = store.applyTxn(token, operations)
        switch (outcome._tag) {
          case "Ok": {
            // Consul returns a result for each operation that reads or writes a value; deletes have none
            const results = operations.filter((op) => op.KV.Verb === "set").map((op) => ({
              KV: { ...kvEntry(op.KV.Key, ""), Value: null }
            }))
            return HttpServerResponse.unsafeJson({ Results: results, Errors: null })
          }
          case "RolledBack":
            return HttpServerResponse.unsafeJson({ Results: null, Errors: outcome.errors }, { status: 409 })
          case "Refused":
            return refusal(outcome)
        }
      }),
      Effect.catchAll(decodeFailed("Failed to parse body"))
    ))

  const agentServices = admitted("agent.services", (request, token) => {
    const filter = parseFilter(requestTarget(request).query.get("filter"))
    const listed = store.listServices(agent, token)
    if (listed._tag === "Refused") return Effect.succeed(refusal(listed))
    const body: Record<string, unknown> = {}
    for (const service of listed.value.values()) {
      if (filter !== undefined && service[filter.field] !== filter.value) continue
      body[service.ID] = {
        ID: service.ID,
        Service: service.Service,
        Tags: service.Tags ?? [],
        Meta: service.Meta ?? {},
        Port: service.Port,
        Address: service.Address,
        Weights: { Passing: 1, Warning: 1 },
        EnableTagOverride: false,
        Datacenter: "dc1"
      }
    }
    return Effect.succeed(HttpServerResponse.unsafeJson(body))
  })

  const register = admitted("agent.register", (request, token) =>
    request.json.pipe(
      Effect.flatMap(Schema.decodeUnknown(Registration)),
      Effect.map((registration) => {
        const problem = registrationProblem(registration)
        if (problem !== undefined) return text(problem, 400)
        const replace = requestTarget(request).query.get("replace-existing-checks")
        const registered = store.registerService(agent, token, registration, { replaceExistingChecks: replace === "" || replace === "true" })
        return registered._tag === "Refused" ? refusal(registered) : HttpServerResponse.empty({ status: 200 })
      }),
      Effect.catchAll(decodeFailed())
    ))

  const deregister = admitted("agent.deregister", (request, token) => {
    const id = decodePath(requestTarget(request).path.slice("/v1/agent/service/deregister/".length))
    if (id === undefined) return Effect.succeed(text("Invalid URL escape in service ID", 400))
    const deregistered = store.deregisterService(agent, token, id)
    return Effect.succeed(deregistered._tag === "Refused" ? refusal(deregistered) : HttpServerResponse.empty({ status: 200 }))
  })

  const checkView = (check: StoredCheck, node: string) => ({
    Node: node,
    CheckID: check.CheckID,
    Name: `Service '${check.ServiceName}' check`,
    Status: check.Status,
    Notes: check.Notes,
    Output: check.Output,
    ServiceID: check.ServiceID,
    ServiceName: check.ServiceName,
    ServiceTags: store.services(agent).get(check.ServiceID)?.Tags ?? [],
    Type: "ttl",
    Definition: {
      TTL: formatGoDuration(parseGoDuration(check.TTL) ?? 0),
      DeregisterCriticalServiceAfter: formatGoDuration(parseGoDuration(check.DeregisterCriticalServiceAfter ?? "0") ?? 0)
    },
    CreateIndex: 0,
    ModifyIndex: 0
  })

  const agentChecks = admitted("agent.checks", (_request, token) => {
    const listed = store.listChecks(agent, token)
    if (listed._tag === "Refused") return Effect.succeed(refusal(listed))
    const node = store.agents.get(agent)?.node ?? agent
    const body: Record<string, unknown> = {}
    for (const check of listed.value.values()) body[check.CheckID] = checkView(check, node)
    return Effect.succeed(HttpServerResponse.unsafeJson(body))
  })

  /** agent_endpoint.go AgentCheckUpdate: the status is checked first, then the check must be a TTL check here. */
  const checkUpdate = admitted("agent.checkUpdate", (request, token) =>
    request.json.pipe(
      Effect.flatMap((body) => {
        const status = typeof body === "object" && body !== null && "Status" in body ? body.Status : undefined
        if (typeof status !== "string" || !["passing", "warning", "critical"].includes(status)) {
          return Effect.succeed(text(`Invalid check status: '${typeof status === "string" ? status : ""}'`, 400))
        }
        return Schema.decodeUnknown(CheckUpdateBody)(body).pipe(Effect.map((update) => {
          const id = decodePath(requestTarget(request).path.slice("/v1/agent/check/update/".length)) ?? ""
          // agent.go updateTTLCheck: an unknown check is an error of the agent, a 500 with this text
          const updated = store.updateServiceCheck(agent, token, id, update.Status, update.Output)
          if (updated._tag === "Refused") return refusal(updated)
          return updated.value
            ? HttpServerResponse.empty({ status: 200 })
            : text(`CheckID ${JSON.stringify(id)} does not have associated TTL`, 500)
        }))
      }),
      Effect.catchAll(decodeFailed())
    ))

  /** `/v1/health/service/<name>`: every instance with its node's serfHealth check and its own; `?passing` filters. */
  const healthService = admitted("health.service", (request) => {
    const { path, query } = requestTarget(request)
    const name = decodePath(path.slice("/v1/health/service/".length))
    if (name === undefined) return Effect.succeed(text("Invalid URL escape in service name", 400))
    const passing = query.has("passing") && query.get("passing") !== "false"
    const entries = store.healthService(name, passing).map(({ agent: holder, service, checks }) => ({
      Node: { ID: "", Node: holder.node, Address: holder.address, Datacenter: "dc1", TaggedAddresses: { lan: holder.address, wan: holder.address }, Meta: {} },
      Service: {
        ID: service.ID,
        Service: service.Service,
        Tags: service.Tags ?? [],
        Address: service.Address,
        Meta: service.Meta ?? {},
        Port: service.Port,
        Weights: { Passing: 1, Warning: 1 },
        EnableTagOverride: false
      },
      Checks: [
        { Node: holder.node, CheckID: "serfHealth", Name: "Serf Health Status", Status: "passing", Notes: "", Output: "Agent alive and reachable", ServiceID: "", ServiceName: "", ServiceTags: [], Type: "" },
        ...checks.map((check) => checkView(check, holder.node))
      ]
    }))
    return Effect.succeed(withIndex(HttpServerResponse.unsafeJson(entries)))
  })

  const catalogNodes = admitted("catalog.nodes", (_request, token) => {
    const listed = store.listNodes(token)
    if (listed._tag === "Refused") return Effect.succeed(refusal(listed))
    return Effect.succeed(withIndex(HttpServerResponse.unsafeJson(listed.value.map((node) => ({
      ID: "",
      Node: node.Node,
      Address: node.Address,
      Datacenter: "dc1",
      TaggedAddresses: { lan: node.Address, wan: node.Address },
      Meta: {},
      CreateIndex: 1,
      ModifyIndex: 1
    })))))
  })

  // --- sessions, locks and blocking queries --------------------------------------------------------------

  /**
   * `?index=&wait=` of a blocking query, as Consul parses them: a bad value is a 400 with Consul's text; wait
   * defaults to 5 minutes and is capped at 10 (Consul also adds up to wait/16 of jitter; the embedded one does not).
   */
  const blockingOptions = (query: URLSearchParams): { readonly index: number; readonly waitMillis: number } | undefined | string => {
    const rawIndex = query.get("index")
    const rawWait = query.get("wait")
    let waitMillis = 300_000
    if (rawWait !== null && rawWait !== "") {
      const parsed = parseGoDuration(rawWait)
      if (parsed === undefined) return "Invalid wait time"
      waitMillis = Math.min(Math.max(parsed, 0), 600_000)
    }
    if (rawIndex === null || rawIndex === "") return undefined
    if (!/^\d+$/.test(rawIndex)) return "Invalid index"
    return { index: Number(rawIndex), waitMillis }
  }

  /** Returns once the key's index has moved past `index` (Consul's blocking query), or after the wait. */
  const waitForKey = (key: string, blocking: { readonly index: number; readonly waitMillis: number } | undefined): Effect.Effect<void> =>
    blocking === undefined || store.keyIndex(key) > blocking.index
      ? Effect.void
      : Effect.async<void>((resume) => {
        let done = false
        const finish = () => {
          if (done) return
          done = true
          unsubscribe()
          clearTimeout(timer)
          resume(Effect.void)
        }
        const unsubscribe = store.onChange(() => {
          if (store.keyIndex(key) > blocking.index) finish()
        })
        const timer = setTimeout(finish, blocking.waitMillis)
        return Effect.sync(() => {
          done = true
          unsubscribe()
          clearTimeout(timer)
        })
      })

  /** `PUT /v1/kv/<key>?acquire=<session>` and `?release=<session>`: `true` or `false` as Consul answers. */
  const kvLock = Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const { query } = requestTarget(request)
    const acquiring = query.has("acquire")
    return yield* admitted(acquiring ? "kv.acquire" : "kv.release", (request) => {
      const key = kvKey(request)
      if (key === undefined) return Effect.succeed(badKey)
      if (key === "") return Effect.succeed(text("Missing key name", 400))
      const session = (acquiring ? query.get("acquire") : query.get("release")) ?? ""
      return Effect.all([request.text, Clock.currentTimeMillis]).pipe(
        Effect.map(([value, now]) => {
          // Consul's kvsLockTxn / kvsUnlockTxn: no session is an error of the store, hence a 500
          if (session === "") return text("missing session", 500)
          const outcome = acquiring ? store.acquire(key, session, value, now) : store.release(key, session, value, now)
          return typeof outcome === "boolean" ? HttpServerResponse.unsafeJson(outcome) : text(outcome.body, outcome.status)
        }),
        Effect.catchAll(decodeFailed())
      )
    })
  })

  /** A plain PUT writes the value; with `?acquire` or `?release` it is a lock operation (acquire wins, as in Consul). */
  const kvWrite = Effect.gen(function*() {
    const { query } = requestTarget(yield* HttpServerRequest.HttpServerRequest)
    return yield* (query.has("acquire") || query.has("release") ? kvLock : kvPut)
  })

  const sessionJson = (session: StoredSession) => ({
    ID: session.ID,
    Name: session.Name,
    Node: session.Node,
    LockDelay: Math.round(session.lockDelayMillis * 1e6), // nanoseconds, as Go encodes a Duration
    Behavior: session.Behavior,
    TTL: session.TTL,
    NodeChecks: ["serfHealth"],
    ServiceChecks: null,
    CreateIndex: session.CreateIndex,
    ModifyIndex: session.CreateIndex
  })

  /** The body of `PUT /v1/session/create`: field names match case-insensitively, as Go's JSON decoder does. */
  const decodeSessionRequest = (raw: unknown): SessionRequest | string => {
    if (raw === null || typeof raw !== "object" || Array.isArray(raw)) return "Request decode failed: json: cannot unmarshal into Go value of type structs.Session"
    const fields = new Map(Object.entries(raw).map(([name, value]) => [name.toLowerCase(), value] as const))
    const stringField = (name: string): string | undefined | null => {
      const value = fields.get(name)
      return value === undefined || value === null ? undefined : typeof value === "string" ? value : null
    }
    const name = stringField("name")
    const node = stringField("node")
    const ttl = stringField("ttl")
    const behavior = stringField("behavior")
    const lockDelay = fields.get("lockdelay")
    if (name === null || node === null || ttl === null || behavior === null) {
      return "Request decode failed: json: cannot unmarshal number into a string field of structs.Session"
    }
    if (lockDelay !== undefined && typeof lockDelay !== "string" && typeof lockDelay !== "number") {
      return "Request decode failed: invalid LockDelay"
    }
    return { Name: name, Node: node, TTL: ttl, Behavior: behavior, LockDelay: lockDelay }
  }

  const sessionCreate = admitted("session.create", (request) =>
    Effect.all([request.text, Clock.currentTimeMillis]).pipe(
      Effect.map(([body, now]) => {
        let raw: unknown = {}
        if (body.trim() !== "") {
          try {
            raw = JSON.parse(body)
          } catch (error) {
            return text(`Request decode failed: ${error instanceof Error ? error.message : "invalid JSON"}`, 400)
          }
        }
        const decoded = decodeSessionRequest(raw)
        if (typeof decoded === "string") return text(decoded, 400)
        const outcome = store.createSession(decoded, now)
        return "id" in outcome ? HttpServerResponse.unsafeJson({ ID: outcome.id }) : text(outcome.body, outcome.status)
      }),
      Effect.catchAll(decodeFailed())
    ))

  /** The session id at the end of the path; Consul answers "Missing session" (400) when there is none. */
  const sessionRoute = (
    operation: ConsulOperation,
    prefix: string,
    answer: (id: string, now: number) => HttpServerResponse.HttpServerResponse
  ) =>
    admitted(operation, (request) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        const id = decodePath(requestTarget(request).path.slice(prefix.length))
        if (id === undefined || id === "") return text("Missing session", 400)
        return answer(id, now)
      }))

  const sessionRenew = sessionRoute("session.renew", "/v1/session/renew/", (id, now) => {
    const session = store.renewSession(id, now)
    return session === undefined
      ? text(`Session id '${id}' not found`, 404)
      : withIndex(HttpServerResponse.unsafeJson([sessionJson(session)]))
  })

  const sessionInfo = sessionRoute("session.info", "/v1/session/info/", (id, now) => {
    const session = store.sessionInfo(id, now)
    // an unknown session is an empty list, not a 404
    return withIndex(HttpServerResponse.unsafeJson(session === undefined ? [] : [sessionJson(session)]))
  })

  const sessionDestroy = sessionRoute("session.destroy", "/v1/session/destroy/", (id, now) => {
    store.destroySession(id, now)
    return HttpServerResponse.unsafeJson(true)
  })

  return HttpRouter.empty.pipe(
    HttpRouter.get("/v1/agent/services", agentServices),
    HttpRouter.put("/v1/agent/service/register", register),
    HttpRouter.put("/v1/agent/service/deregister/*", deregister),
    HttpRouter.get("/v1/agent/checks", agentChecks),
    HttpRouter.put("/v1/agent/check/update/*", checkUpdate),
    HttpRouter.get("/v1/health/service/*", healthService)
  ).pipe(
    HttpRouter.get("/v1/catalog/nodes", catalogNodes),
    // "/v1/kv/*" does not match "/v1/kv/" itself, the empty prefix (`/v1/kv/?keys` lists every key)
    HttpRouter.get("/v1/kv/", kvRead),
    HttpRouter.get("/v1/kv/*", kvRead),
    HttpRouter.put("/v1/kv/*", kvWrite),
    HttpRouter.del("/v1/kv/", kvDelete),
    HttpRouter.del("/v1/kv/*", kvDelete),
    HttpRouter.put("/v1/txn", txn),
    HttpRouter.put("/v1/session/create", sessionCreate),
    // the bare prefixes too: Consul answers them "Missing session" (400), not 404
    HttpRouter.put("/v1/session/renew/", sessionRenew),
    HttpRouter.put("/v1/session/renew/*", sessionRenew),
    HttpRouter.put("/v1/session/destroy/", sessionDestroy),
    HttpRouter.put("/v1/session/destroy/*", sessionDestroy),
    HttpRouter.get("/v1/session/info/", sessionInfo),
    HttpRouter.get("/v1/session/info/*", sessionInfo),
    methodNotAllowed
  )
}

const methods = ["GET", "PUT", "POST", "DELETE", "PATCH"] as const

/** Consul's endpoints with the methods each one takes (Consul's `allowedMethods`). */
const allowedMethods: ReadonlyArray<readonly [path: HttpRouter.PathInput, allowed: ReadonlyArray<(typeof methods)[number]>]> = [
  ["/v1/agent/services", ["GET"]],
  ["/v1/agent/service/register", ["PUT"]],
  ["/v1/agent/service/deregister/*", ["PUT"]],
  ["/v1/agent/checks", ["GET"]],
  ["/v1/agent/check/update/*", ["PUT"]],
  ["/v1/catalog/nodes", ["GET"]],
  ["/v1/kv/", ["GET", "PUT", "DELETE"]],
  ["/v1/kv/*", ["GET", "PUT", "DELETE"]],
  ["/v1/txn", ["PUT"]]
]

/**
 * Any other method on those paths: 405 `method POST not allowed` with an `Allow` header listing OPTIONS and the
 * endpoint's methods, as Consul's HTTP wrapper answers (consular must never send, say, a POST to register).
 */
const methodNotAllowed = <E, R>(router: HttpRouter.HttpRouter<E, R>): HttpRouter.HttpRouter<E, R> => {
  let out = router
  for (const [path, allowed] of allowedMethods) {
    for (const method of methods) {
      if (allowed.includes(method)) continue
      out = HttpRouter.route(method)(path, Effect.succeed(
        HttpServerResponse.text(`method ${method} not allowed`, {
          status: 405,
          contentType: "text/plain; charset=utf-8",
          headers: { allow: ["OPTIONS", ...allowed].join(",") }
        })
      ))(out)
    }
  }
  return out
}

const bindAll = (store: ConsulStore, addresses: ReadonlyArray<string>, port: number, options: ConsulServerOptions) =>
  Effect.gen(function*() {
    let bound = port
    for (const address of addresses) {
      bound = yield* listen(consulRouter(store, address), { address, port: bound, tls: options.tls })
    }
    return bound
  })

/**
 * Serves the store on every address, one port, until the scope closes. Each address becomes an agent of the
 * store if it is not one yet. With port 0 the first listener picks the port; should another address already
 * have that port taken, all listeners are closed and another port is tried.
 */
export const serveConsul = (
  store: ConsulStore,
  options: ConsulServerOptions = {}
): Effect.Effect<ConsulServer, HttpServerError.ServeError, Scope.Scope> =>
  Effect.gen(function*() {
    const addresses = options.addresses ?? [store.main]
    for (const address of addresses) store.addAgent(address)
    if (options.requiredToken !== undefined) store.acl = { tokens: { [options.requiredToken]: allRights } }
    if (options.acl !== undefined) store.acl = options.acl
    if (options.version !== undefined) store.version = options.version
    const requested = options.port ?? 0
    const attempt = Effect.gen(function*() {
      const scope = yield* Scope.fork(yield* Effect.scope, ExecutionStrategy.sequential)
      return yield* bindAll(store, addresses, requested, options).pipe(
        Scope.extend(scope),
        Effect.onError((cause) => Scope.close(scope, Exit.failCause(cause)))
      )
    })
    const port = yield* attempt.pipe(Effect.retry({ times: requested === 0 ? 5 : 0 }))
    // sessions whose TTL ran out end on their own, as Consul's session timers end them (Consul may take up to
    // twice the TTL; this one ends them within 100 ms of it)
    yield* Effect.forkScoped(
      Clock.currentTimeMillis.pipe(Effect.map((now) => store.expireSessions(now)), Effect.repeat(Schedule.spaced("100 millis")))
    )
    const scheme = options.tls === undefined ? "http" : "https"
    const main = addresses.includes(store.main) ? store.main : addresses[0] ?? store.main
    return {
      port,
      addresses,
      scheme,
      url: (address = main) => `${scheme}://${address}:${port}`
    } satisfies ConsulServer
  })

/** The running embedded Consul, for programs that take it from a layer (demo, bench). */
export class EmbeddedConsul extends Context.Tag("consular/EmbeddedConsul")<EmbeddedConsul, ConsulServer>() {}

export const EmbeddedConsulLive = (
  store: ConsulStore,
  options: ConsulServerOptions = {}
): Layer.Layer<EmbeddedConsul, HttpServerError.ServeError> => Layer.scoped(EmbeddedConsul, serveConsul(store, options))
