import { HttpRouter, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import type { HttpServerError } from "@effect/platform"
import { Context, Effect, ExecutionStrategy, Exit, Layer, ParseResult, Schema, Scope } from "effect"
import { STATUS_CODES } from "node:http"
import { CheckStatus, Registration, TxnOperations } from "../domain/ConsulApi.js"
import type { Meta } from "../domain/ConsulApi.js"
import { formatGoDuration, parseGoDuration } from "../domain/GoDuration.js"
import type { ConsulOperation, ConsulStore, StoredCheck } from "../services/ConsulStore.js"
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
  /** ACL mode: a request without `X-Consul-Token: <token>` (or `Authorization: Bearer <token>`) gets a 403 */
  readonly requiredToken?: string | undefined
  readonly tls?: ServerTls | undefined
}

export interface ConsulServer {
  readonly port: number
  readonly addresses: ReadonlyArray<string>
  readonly scheme: "http" | "https"
  /** base URL of an agent, e.g. "http://127.0.0.2:8500"; default: the main agent (or the first address) */
  readonly url: (address?: string) => string
}

const text = (body: string, status: number) => HttpServerResponse.text(body, { status })

/** What Consul answers on a failure status: its own short text bodies */
const statusBody = (status: number): string => STATUS_CODES[status] ?? `status ${status}`

const tokenOf = (request: HttpServerRequest.HttpServerRequest): string | undefined => {
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

const decodeFailed = (error: ParseResult.ParseError | { readonly message: string }) =>
  text(
    `Request decode failed: ${ParseResult.isParseError(error) ? ParseResult.TreeFormatter.formatErrorSync(error) : error.message}`,
    400
  )

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
export const consulRouter = (store: ConsulStore, agent: string, options: Pick<ConsulServerOptions, "requiredToken"> = {}) => {
  /** The store decides first whether the request gets through (faults, failure rate), then the ACL. */
  const admitted = (
    operation: ConsulOperation,
    handle: (request: HttpServerRequest.HttpServerRequest) => Effect.Effect<HttpServerResponse.HttpServerResponse>
  ) =>
    Effect.gen(function*() {
      const request = yield* HttpServerRequest.HttpServerRequest
      const admission = store.admit(agent, operation)
      switch (admission._tag) {
        case "Refuse":
          return yield* dropConnection(request)
        case "Hang":
          return yield* Effect.never
        case "Status":
          return text(statusBody(admission.status), admission.status)
        case "Ok":
          break
      }
      if (options.requiredToken !== undefined && tokenOf(request) !== options.requiredToken) {
        return text("Permission denied", 403)
      }
      return yield* handle(request)
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
    return yield* admitted(operation, (request) => {
      const key = kvKey(request)
      if (key === undefined) return Effect.succeed(badKey)
      switch (operation) {
        case "kv.keys": {
          const separator = query.get("separator") ?? undefined
          const keys = store.keys(key, separator)
          return Effect.succeed(keys === undefined ? notFound() : withIndex(HttpServerResponse.unsafeJson(keys)))
        }
        case "kv.recurse": {
          const entries = store.recurse(key)
          return Effect.succeed(
            entries === undefined
              ? notFound()
              : withIndex(HttpServerResponse.unsafeJson(entries.map((entry) => kvEntry(entry.key, entry.value))))
          )
        }
        default: {
          const value = store.kv.get(key)
          if (value === undefined) return Effect.succeed(notFound())
          return Effect.succeed(withIndex(
            query.has("raw")
              ? HttpServerResponse.text(value, { contentType: "application/octet-stream" })
              : HttpServerResponse.unsafeJson([kvEntry(key, value)])
          ))
        }
      }
    })
  })

  const kvPut = admitted("kv.put", (request) => {
    const key = kvKey(request)
    if (key === undefined) return Effect.succeed(badKey)
    if (key === "") return Effect.succeed(text("Missing key name", 400))
    return request.text.pipe(
      Effect.map((value) => {
        store.put(key, value)
        return HttpServerResponse.unsafeJson(true)
      }),
      Effect.catchAll(decodeFailed)
    )
  })

  const kvDelete = admitted("kv.delete", (request) => {
    const key = kvKey(request)
    if (key === undefined) return Effect.succeed(badKey)
    store.delete(key, requestTarget(request).query.has("recurse"))
    return Effect.succeed(HttpServerResponse.unsafeJson(true))
  })

  const txn = admitted("txn", (request) =>
    request.json.pipe(
      Effect.flatMap(Schema.decodeUnknown(TxnOperations)),
      Effect.map((operations) => {
        const outcome = store.txn(operations)
        if (outcome.ok) {
          // Consul returns a result for each operation that reads or writes a value; deletes have none
          const results = operations.filter((op) => op.KV.Verb === "set").map((op) => ({
            KV: { ...kvEntry(op.KV.Key, ""), Value: null }
          }))
          return HttpServerResponse.unsafeJson({ Results: results, Errors: null })
        }
        return outcome.status === 409
          ? HttpServerResponse.unsafeJson({ Results: null, Errors: [{ OpIndex: 0, What: outcome.error }] }, { status: 409 })
          : text(outcome.error, outcome.status)
      }),
      Effect.catchAll(decodeFailed)
    ))

  const agentServices = admitted("agent.services", (request) => {
    const filter = parseFilter(requestTarget(request).query.get("filter"))
    const body: Record<string, unknown> = {}
    for (const service of store.services(agent).values()) {
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

  const register = admitted("agent.register", (request) =>
    request.json.pipe(
      Effect.flatMap(Schema.decodeUnknown(Registration)),
      Effect.map((registration) => {
        const problem = registrationProblem(registration)
        if (problem !== undefined) return text(problem, 400)
        const replace = requestTarget(request).query.get("replace-existing-checks")
        store.register(agent, registration, { replaceExistingChecks: replace === "" || replace === "true" })
        return HttpServerResponse.empty({ status: 200 })
      }),
      Effect.catchAll(decodeFailed)
    ))

  const deregister = admitted("agent.deregister", (request) => {
    const id = decodePath(requestTarget(request).path.slice("/v1/agent/service/deregister/".length))
    if (id === undefined) return Effect.succeed(text("Invalid URL escape in service ID", 400))
    return Effect.succeed(
      store.deregister(agent, id) ? HttpServerResponse.empty({ status: 200 }) : text(`Unknown service ID "${id}"`, 404)
    )
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

  const agentChecks = admitted("agent.checks", () => {
    const node = store.agents.get(agent)?.node ?? agent
    const body: Record<string, unknown> = {}
    for (const check of store.checks(agent).values()) body[check.CheckID] = checkView(check, node)
    return Effect.succeed(HttpServerResponse.unsafeJson(body))
  })

  /** agent_endpoint.go AgentCheckUpdate: the status is checked first, then the check must be a TTL check here. */
  const checkUpdate = admitted("agent.checkUpdate", (request) =>
    request.json.pipe(
      Effect.flatMap((body) => {
        const status = typeof body === "object" && body !== null && "Status" in body ? body.Status : undefined
        if (typeof status !== "string" || !["passing", "warning", "critical"].includes(status)) {
          return Effect.succeed(text(`Invalid check status: '${typeof status === "string" ? status : ""}'`, 400))
        }
        return Schema.decodeUnknown(CheckUpdateBody)(body).pipe(Effect.map((update) => {
          const id = decodePath(requestTarget(request).path.slice("/v1/agent/check/update/".length)) ?? ""
          // agent.go updateTTLCheck: an unknown check is an error of the agent, a 500 with this text
          return store.updateCheck(agent, id, update.Status, update.Output)
            ? HttpServerResponse.empty({ status: 200 })
            : text(`CheckID ${JSON.stringify(id)} does not have associated TTL`, 500)
        }))
      }),
      Effect.catchAll(decodeFailed)
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

  const catalogNodes = admitted("catalog.nodes", () =>
    Effect.succeed(withIndex(HttpServerResponse.unsafeJson(store.catalogNodes().map((node) => ({
      ID: "",
      Node: node.Node,
      Address: node.Address,
      Datacenter: "dc1",
      TaggedAddresses: { lan: node.Address, wan: node.Address },
      Meta: {},
      CreateIndex: 1,
      ModifyIndex: 1
    }))))))

  return HttpRouter.empty.pipe(
    HttpRouter.get("/v1/agent/services", agentServices),
    HttpRouter.put("/v1/agent/service/register", register),
    HttpRouter.put("/v1/agent/service/deregister/*", deregister),
    HttpRouter.get("/v1/agent/checks", agentChecks),
    HttpRouter.put("/v1/agent/check/update/*", checkUpdate),
    HttpRouter.get("/v1/health/service/*", healthService),
    HttpRouter.get("/v1/catalog/nodes", catalogNodes),
    // "/v1/kv/*" does not match "/v1/kv/" itself, the empty prefix (`/v1/kv/?keys` lists every key)
    HttpRouter.get("/v1/kv/", kvRead),
    HttpRouter.get("/v1/kv/*", kvRead),
    HttpRouter.put("/v1/kv/*", kvPut),
    HttpRouter.del("/v1/kv/", kvDelete),
    HttpRouter.del("/v1/kv/*", kvDelete),
    HttpRouter.put("/v1/txn", txn)
  )
}

const bindAll = (store: ConsulStore, addresses: ReadonlyArray<string>, port: number, options: ConsulServerOptions) =>
  Effect.gen(function*() {
    let bound = port
    for (const address of addresses) {
      bound = yield* listen(consulRouter(store, address, options), { address, port: bound, tls: options.tls })
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
    const requested = options.port ?? 0
    const attempt = Effect.gen(function*() {
      const scope = yield* Scope.fork(yield* Effect.scope, ExecutionStrategy.sequential)
      return yield* bindAll(store, addresses, requested, options).pipe(
        Scope.extend(scope),
        Effect.onError((cause) => Scope.close(scope, Exit.failCause(cause)))
      )
    })
    const port = yield* attempt.pipe(Effect.retry({ times: requested === 0 ? 5 : 0 }))
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
