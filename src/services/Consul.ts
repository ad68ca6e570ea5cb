import { HttpBody, HttpClientRequest } from "@effect/platform"
import type { HttpClientError, HttpClientResponse } from "@effect/platform"
import { Context, Duration, Effect, Either, Layer, Option, Schema } from "effect"
import type { ParseResult } from "effect"
import { AgentChecks, AgentServices, CatalogNodes, CheckUpdate, KvEntries, KvKeys, Registration, TxnConflict, TxnOperations } from "../domain/ConsulApi.js"
import type { AgentCheck, AgentService, CatalogNode, TxnOpError, TxnOperation } from "../domain/ConsulApi.js"
import { compiledEncoder } from "../domain/CompiledDecoder.js"
import { ConsulError, isUnreachable, NotFound } from "../domain/Errors.js"
import { agentUrl, kvPath } from "../domain/Naming.js"
import type { HttpSettings, UpstreamFailure } from "./Http.js"
import * as Http from "./Http.js"
import { ConsulStore, faultBody, refused } from "./ConsulStore.js"
import type { Admission, Answer, ConsulOperation, Refusal, StoredCheck, TxnRolledBack } from "./ConsulStore.js"
import { BufferedResponse } from "./HttpTransport.js"

/**
 * Consul as consular uses it. Agent-scoped calls take the agent (a host: the task's, or a catalog node's
 * address) and reach it on the main URL's scheme and port; KV and catalog calls go to the main Consul.
 */
export interface RegisterOptions {
  /** the agent's reachability decides the fallback: no retry when it is unreachable, and this timeout */
  readonly fallbackMode?: boolean | undefined
  readonly timeout?: Duration.DurationInput | undefined
  /** `?replace-existing-checks`: checks of the service not in the body are removed (a check dropped by `--health-checks none`) */
  readonly replaceExistingChecks?: boolean | undefined
}

export class Consul extends Context.Tag("consular/Consul")<Consul, {
  /** `retryUnreachable: false`: an agent that refuses or does not answer in time is asked once (a sync pass moves on) */
  readonly agentServices: (
    agent: string,
    options?: { readonly retryUnreachable?: boolean }
  ) => Effect.Effect<ReadonlyMap<string, AgentService>, ConsulError>
  /** one service of an agent (a filtered listing, so it works on every Consul that lists services) */
  readonly agentService: (agent: string, serviceId: string) => Effect.Effect<AgentService, NotFound | ConsulError>
  readonly register: (
    agent: string,
    registration: Registration,
    options?: RegisterOptions
  ) => Effect.Effect<void, ConsulError>
  /** an agent's checks by CheckID (`GET /v1/agent/checks`) */
  readonly agentChecks: (
    agent: string,
    options?: { readonly retryUnreachable?: boolean }
  ) => Effect.Effect<ReadonlyMap<string, AgentCheck>, ConsulError>
  /** `PUT /v1/agent/check/update/<id>`: the status and output of a TTL check, which also restarts its TTL */
  readonly updateCheck: (agent: string, checkId: string, update: CheckUpdate) => Effect.Effect<void, NotFound | ConsulError>
  /** NotFound: the agent has no such service (already gone) */
  readonly deregister: (agent: string, serviceId: string) => Effect.Effect<void, NotFound | ConsulError>
  readonly catalogNodes: Effect.Effect<ReadonlyArray<CatalogNode>, ConsulError>
  /** every key under the prefix with its value as text (`?recurse`); NotFound when there is none */
  readonly kvTree: (prefix: string) => Effect.Effect<ReadonlyMap<string, string>, NotFound | ConsulError>
  readonly kvKeys: (prefix: string, separator?: string) => Effect.Effect<ReadonlyArray<string>, NotFound | ConsulError>
  readonly kvGet: (key: string) => Effect.Effect<string, NotFound | ConsulError>
  readonly kvPut: (key: string, value: string) => Effect.Effect<void, ConsulError>
  readonly kvDelete: (key: string, options?: { readonly recurse?: boolean }) => Effect.Effect<void, ConsulError>
  /** at most 64 operations, applied all or none; a rolled-back or refused transaction is a ConsulError */
  readonly txn: (operations: ReadonlyArray<TxnOperation>) => Effect.Effect<void, ConsulError>
}>() {}

export interface ConsulSettings extends HttpSettings {
  /** the main Consul: KV, catalog, and the fallback agent */
  readonly url: URL
  /** timeout of a fallback registration on the main agent */
  readonly fallbackTimeout?: Duration.DurationInput | undefined
}


/** The ACL permission each operation needs, named when Consul denies it. */
const permissions: Readonly<Record<string, string>> = {
  "list services": "service:read",
  register: "service:write",
  deregister: "service:write",
  "list catalog nodes": "node:read",
  "read kv tree": "key:read",
  "list kv keys": "key:read",
  "read kv": "key:read",
  "write kv": "key:write",
  "delete kv": "key:write",
  txn: "key:write"
}

/**
 * Consul's 403 means one of two things, told apart by its words (Consul's own `IsErrNotFound` matches them the
 * same way, and a client agent prefixes what the servers said with `rpc error making call: `): the token is
 * unknown (`ACL not found`), or it lacks a permission (`Permission denied…`).
 */
const isUnknownToken = (failure: UpstreamFailure): boolean =>
  failure.status === 403 && failure.words?.includes("ACL not found") === true

const consulError = (operation: string, agent?: string) => (failure: UpstreamFailure): ConsulError => {
  const permission = permissions[operation]
  return new ConsulError({
    operation,
    reason: isUnknownToken(failure) ? "UnknownToken" : failure.reason,
    detail: failure.detail,
    ...(failure.status === undefined ? {} : { status: failure.status }),
    ...(agent === undefined ? {} : { agent }),
    ...(failure.reason === "Forbidden" && permission !== undefined ? { permission } : {})
  })
}

/**
 * A deregistration of a service the agent does not have: Consul <= 1.11 with ACLs answers 500 `Unknown service
 * "<id>"`, >= 1.12 answers 404 (`Unknown service ID …`). Either way the service is gone, which is what was asked.
 */
const saysUnknownService = (status: number | undefined, words: string | undefined): boolean =>
  status === 500 && words?.includes("Unknown service") === true

/** What an in-memory refusal looks like once through the HTTP helper: the same reasons, detail and words. */
const refusalFailure = (refusal: Refusal): UpstreamFailure => ({
  reason: Http.reasonOfStatus(refusal.status),
  status: refusal.status,
  detail: `answered ${refusal.status}${refusal.body === "" ? "" : `: ${JSON.stringify(refusal.body.slice(0, Http.upstreamWordsLimit))}`}`,
  words: refusal.body === "" ? undefined : refusal.body.slice(0, Http.upstreamWordsLimit),
  unreachable: false
})

/** A 409 to a transaction, read per operation: the key of each refused one and Consul's words. */
const rolledBack = (operations: ReadonlyArray<TxnOperation>, errors: ReadonlyArray<TxnOpError>, detail: string): ConsulError =>
  new ConsulError({
    operation: "txn",
    reason: "Status",
    status: 409,
    detail,
    refused: errors.map((error) => ({ index: error.OpIndex, key: operations[error.OpIndex]?.KV.Key ?? "?", what: error.What }))
  })

const decodeTxnConflict = Schema.decodeUnknownOption(Schema.parseJson(TxnConflict))

const notFoundIsError = (operation: string, agent?: string) => (error: NotFound | ConsulError): ConsulError =>
  error._tag === "NotFound"
    ? new ConsulError({ operation, reason: "Status", status: 404, detail: error.message, ...(agent === undefined ? {} : { agent }) })
    : error

const encodeRegistration = compiledEncoder(Registration)
const encodeCheckUpdate = Schema.encodeSync(CheckUpdate)

// each answer's Schema compiled once (Http.schemaBody)
const readAgentServices = Http.schemaBody(AgentServices)
const readAgentChecks = Http.schemaBody(AgentChecks)
const readCatalogNodes = Http.schemaBody(CatalogNodes)
const readKvEntries = Http.schemaBody(KvEntries)
const readKvKeys = Http.schemaBody(KvKeys)

/** A decoded record as a Map (an agent's services: thousands every pass, without an entry array each). */
const mapOf = <A>(record: Readonly<Record<string, A>>): Map<string, A> => {
  const map = new Map<string, A>()
  for (const key of Object.keys(record)) map.set(key, record[key]!)
  return map
}

const decodeBase64 = (value: string | null): string => value === null ? "" : Buffer.from(value, "base64").toString("utf8")

export const ConsulLive = (settings: ConsulSettings): Layer.Layer<Consul> =>
  Layer.scoped(Consul, Effect.gen(function*() {
    const http = yield* Http.makeHttp(settings)
    const main = settings.url
    // an agent's origin is worked out once: a cold sync sends thousands of requests to a handful of agents
    const origins = new Map<string, string>()
    const at = (agent: string, path: string): string => {
      let origin = origins.get(agent)
      if (origin === undefined) {
        origin = agentUrl(main, agent).origin
        origins.set(agent, origin)
      }
      return origin + path
    }
    const onMain = (path: string): string => new URL(path, main).href

    /** One of an agent's own records (its services, its checks), by id. */
    const agentRecord = <A>(
      what: "services" | "checks",
      read: (response: HttpClientResponse.HttpClientResponse) => Effect.Effect<Readonly<Record<string, A>>, HttpClientError.ResponseError | ParseResult.ParseError>
    ) =>
    (agent: string, options?: { readonly retryUnreachable?: boolean }) =>
      http.send(HttpClientRequest.get(at(agent, `/v1/agent/${what}`)), read, {
        retryUnreachable: options?.retryUnreachable
      }).pipe(
        Effect.map(mapOf),
        Effect.mapError(Http.mapFailure(`${what} of agent ${agent}`, consulError(`list ${what}`, agent))),
        Effect.mapError(notFoundIsError(`list ${what}`, agent))
      )

    const agentServices = agentRecord("services", readAgentServices)

    const agentService = (agent: string, serviceId: string) =>
      http.send(
        HttpClientRequest.get(at(agent, "/v1/agent/services")).pipe(
          HttpClientRequest.setUrlParam("filter", `ID == ${JSON.stringify(serviceId)}`)
        ),
        readAgentServices
      ).pipe(
        Effect.mapError(Http.mapFailure(`services of agent ${agent}`, consulError("list services", agent))),
        Effect.mapError(notFoundIsError("list services", agent)),
        // an agent that ignores `filter` lists everything: pick the one asked for
        Effect.flatMap((services) => {
          const found = Object.values(services).find((service) => service.ID === serviceId)
          return found === undefined ? Effect.fail(new NotFound({ resource: `service ${serviceId} on agent ${agent}` })) : Effect.succeed(found)
        })
      )

    const register = (agent: string, registration: Registration, options?: RegisterOptions) => {
      // encoded at once, not as an effect of its own: a cold sync registers thousands
      const encoded = encodeRegistration(registration)
      if (Either.isLeft(encoded)) {
        return Effect.fail(new ConsulError({ operation: "register", reason: "Status", agent, detail: `unencodable registration: ${encoded.left.message}` }))
      }
      const path = options?.replaceExistingChecks === true ? "/v1/agent/service/register?replace-existing-checks=true" : "/v1/agent/service/register"
      return http.send(
        HttpClientRequest.put(at(agent, path)).pipe(HttpClientRequest.setBody(Http.jsonBody(encoded.right))),
        Http.ignoreBody,
        { retryUnreachable: options?.fallbackMode !== true, timeout: options?.timeout }
      ).pipe(Effect.mapError((failure) => notFoundIsError("register", agent)(Http.mapFailure(`agent ${agent}`, consulError("register", agent))(failure))))
    }

    const agentChecks = agentRecord("checks", readAgentChecks)

    const updateCheck = (agent: string, checkId: string, update: CheckUpdate) =>
      http.send(
        HttpClientRequest.put(at(agent, `/v1/agent/check/update/${encodeURIComponent(checkId)}`)).pipe(
          HttpClientRequest.bodyUnsafeJson(encodeCheckUpdate(update))
        ),
        Http.ignoreBody
      ).pipe(Effect.mapError(Http.mapFailure(`check ${checkId} on agent ${agent}`, consulError("update check", agent))))

    const unknownService = (failure: Http.HttpFailure) =>
      failure._tag === "ResponseError" && saysUnknownService(failure.response.status, Http.upstreamWords(failure))

    const deregister = (agent: string, serviceId: string) => {
      const resource = `service ${serviceId} on agent ${agent}`
      return http.send(
        HttpClientRequest.put(at(agent, `/v1/agent/service/deregister/${encodeURIComponent(serviceId)}`)),
        Http.ignoreBody,
        { final: unknownService }
      ).pipe(
        Effect.mapError((failure) => unknownService(failure) ? new NotFound({ resource }) : Http.mapFailure(resource, consulError("deregister", agent))(failure))
      )
    }

    const catalogNodes = http.send(HttpClientRequest.get(onMain("/v1/catalog/nodes")), readCatalogNodes).pipe(
      Effect.mapError(Http.mapFailure("catalog nodes", consulError("list catalog nodes"))),
      Effect.mapError(notFoundIsError("list catalog nodes"))
    )

    const kvTree = (prefix: string) =>
      http.send(
        HttpClientRequest.get(onMain(kvPath(prefix))).pipe(HttpClientRequest.setUrlParam("recurse", "true")),
        readKvEntries
      ).pipe(
        Effect.map((entries) => {
          const tree = new Map<string, string>()
          for (const entry of entries) tree.set(entry.Key, decodeBase64(entry.Value))
          return tree
        }),
        Effect.mapError(Http.mapFailure(`kv ${prefix}`, consulError("read kv tree")))
      )

    const kvKeys = (prefix: string, separator?: string) =>
      http.send(
        HttpClientRequest.get(onMain(kvPath(prefix))).pipe(
          HttpClientRequest.setUrlParam("keys", "true"),
          separator === undefined ? (r) => r : HttpClientRequest.setUrlParam("separator", separator)
        ),
        readKvKeys
      ).pipe(Effect.mapError(Http.mapFailure(`kv ${prefix}`, consulError("list kv keys"))))

    const kvGet = (key: string) =>
      http.send(
        HttpClientRequest.get(onMain(kvPath(key))).pipe(HttpClientRequest.setUrlParam("raw", "true")),
        (response) => response.text
      ).pipe(Effect.mapError(Http.mapFailure(`kv ${key}`, consulError("read kv"))))

    const kvPut = (key: string, value: string) =>
      http.send(
        HttpClientRequest.put(onMain(kvPath(key))).pipe(HttpClientRequest.setBody(HttpBody.text(value, "application/octet-stream"))),
        Http.ignoreBody
      ).pipe(
        Effect.mapError(Http.mapFailure(`kv ${key}`, consulError("write kv"))),
        Effect.mapError(notFoundIsError("write kv"))
      )

    const kvDelete = (key: string, options?: { readonly recurse?: boolean }) =>
      http.send(
        HttpClientRequest.del(onMain(kvPath(key))).pipe(
          options?.recurse === true ? HttpClientRequest.setUrlParam("recurse", "true") : (r) => r
        ),
        Http.ignoreBody
      ).pipe(
        Effect.mapError(Http.mapFailure(`kv ${key}`, consulError("delete kv"))),
        Effect.mapError(notFoundIsError("delete kv"))
      )

    const txn = (operations: ReadonlyArray<TxnOperation>) =>
      HttpClientRequest.put(onMain("/v1/txn")).pipe(
        HttpClientRequest.schemaBodyJson(TxnOperations)(operations),
        Effect.mapError((error) => new ConsulError({ operation: "txn", reason: "Status", detail: `unencodable transaction: ${error.reason}` })),
        Effect.flatMap((request) =>
          http.send(request, Http.ignoreBody).pipe(
            Effect.mapError((failure) => {
              const conflict = failure._tag === "ResponseError" && failure.response.status === 409 && failure.response instanceof BufferedResponse
                ? decodeTxnConflict(failure.response.body.toString("utf8"))
                : Option.none()
              return Option.isSome(conflict)
                ? rolledBack(operations, conflict.value.Errors, Http.describeFailure(failure))
                : notFoundIsError("txn")(Http.mapFailure("txn", consulError("txn"))(failure))
            })
          )
        )
      )

    return Consul.of({
      agentServices,
      agentService,
      agentChecks,
      updateCheck,
      register,
      deregister,
      catalogNodes,
      kvTree,
      kvKeys,
      kvGet,
      kvPut,
      kvDelete,
      txn
    })
  }))

// --- in memory -----------------------------------------------------------------------------------------

/** The store behind `ConsulMemory`: tests seed it, inspect it and inject faults through it. */
export class ConsulState extends Context.Tag("consular/ConsulState")<ConsulState, ConsulStore>() {}

export interface ConsulMemorySettings {
  /** the main agent's address (KV and catalog live there) */
  readonly main?: string | undefined
  readonly timeout?: Duration.DurationInput | undefined
  readonly retries?: number | undefined
  readonly retryBase?: Duration.DurationInput | undefined
  /** the ACL token every request carries (what `X-Consul-Token` is to `ConsulLive`) */
  readonly token?: string | undefined
}

/**
 * Consul in memory, behaving as `ConsulLive` does against a real Consul: same errors and reasons, a hanging
 * agent times out, transient failures are retried with the same backoff, 404s are `NotFound`, and the store
 * answers ACLs and releases as the embedded server does (it answers through the same store methods).
 */
export const makeConsulMemory = (store: ConsulStore, settings: ConsulMemorySettings = {}) => {
  const timeout = settings.timeout ?? "5 seconds"
  const backoff = Http.retrySchedule(settings)
  const token = settings.token
  const request = <A>(
    agent: string,
    operation: ConsulOperation,
    label: string,
    run: () => Answer<A>,
    options?: RegisterOptions & { readonly final?: (refusal: Refusal) => boolean }
  ): Effect.Effect<A, ConsulError | NotFound> => {
    const attempt = Effect.suspend((): Effect.Effect<A, ConsulError | Refusal> => {
      const admission: Admission = store.admit(agent, operation)
      switch (admission._tag) {
        case "Ok": {
          const answer = run()
          return answer._tag === "Ok" ? Effect.succeed(answer.value) : Effect.fail(answer)
        }
        case "Refuse":
          return Effect.fail(new ConsulError({ operation: label, reason: "Transport", detail: `connect ECONNREFUSED ${agent}`, agent }))
        case "Hang":
          return Effect.never
        case "Status":
          return Effect.fail(refused(admission.status, faultBody(admission.status)))
      }
    }).pipe(
      Effect.timeoutFail({
        duration: options?.timeout ?? timeout,
        onTimeout: () => new ConsulError({ operation: label, reason: "Timeout", detail: "no answer in time", agent })
      })
    )
    return attempt.pipe(
      Effect.retry({
        schedule: backoff,
        times: settings.retries ?? 3,
        while: (error) =>
          error._tag === "Refused"
            ? Http.isTransientStatus(error.status) && options?.final?.(error) !== true
            // a store's own status answers are Refused (above); a ConsulError here is a connection fault
            : isUnreachable(error) && options?.fallbackMode !== true
      }),
      Effect.mapError((error) =>
        error._tag !== "Refused"
          ? error
          : error.status === 404
          ? new NotFound({ resource: `${label} ${agent}` })
          : consulError(label, agent)(refusalFailure(error))
      )
    )
  }
  const main = () => settings.main ?? store.main
  const orNotFound = <A>(value: A | undefined, resource: string): Effect.Effect<A, NotFound> =>
    value === undefined ? Effect.fail(new NotFound({ resource })) : Effect.succeed(value)
  const onMain = <A>(operation: ConsulOperation, label: string, run: () => Answer<A>) =>
    Effect.suspend(() => request(main(), operation, label, run))
  const unknownService = (refusal: Refusal) => saysUnknownService(refusal.status, refusal.body)

  return Consul.of({
    agentServices: (agent, options) =>
      // as Consul lists them: a service without Meta has an empty one
      request(agent, "agent.services", "list services", () => withEmptyMeta(store.listServices(agent, token)), {
        fallbackMode: options?.retryUnreachable === false
      }).pipe(Effect.map((services) => new Map(services)), Effect.mapError(notFoundIsError("list services", agent))),
    agentService: (agent, serviceId) =>
      request(agent, "agent.services", "list services", () => store.listServices(agent, token)).pipe(
        Effect.mapError(notFoundIsError("list services", agent)),
        Effect.flatMap((services) => orNotFound(services.get(serviceId), `service ${serviceId} on agent ${agent}`))
      ),
    register: (agent, registration, options) =>
      request(agent, "agent.register", "register", () => store.registerService(agent, token, registration, options), options).pipe(
        Effect.mapError(notFoundIsError("register", agent))
      ),
    agentChecks: (agent, options) =>
      request(agent, "agent.checks", "list checks", () => store.listChecks(agent, token), {
        fallbackMode: options?.retryUnreachable === false
      }).pipe(
        Effect.map((checks) => new Map([...checks].map(([id, check]) => [id, agentCheckOf(check)] as const))),
        Effect.mapError(notFoundIsError("list checks", agent))
      ),
    updateCheck: (agent, checkId, update) =>
      request(agent, "agent.checkUpdate", "update check", () => store.updateServiceCheck(agent, token, checkId, update.Status, update.Output)).pipe(
        Effect.flatMap((found) => found ? Effect.void : Effect.fail(new NotFound({ resource: `check ${checkId} on agent ${agent}` })))
      ),
    deregister: (agent, serviceId) =>
      request(agent, "agent.deregister", "deregister", () => store.deregisterService(agent, token, serviceId), { final: unknownService }).pipe(
        Effect.catchIf(
          (error): error is ConsulError => error._tag === "ConsulError" && error.status === 500 && error.detail.includes("Unknown service"),
          () => Effect.fail(new NotFound({ resource: `service ${serviceId} on agent ${agent}` }))
        )
      ),
    catalogNodes: onMain("catalog.nodes", "list catalog nodes", () => store.listNodes(token)).pipe(
      Effect.mapError(notFoundIsError("list catalog nodes"))
    ),
    kvTree: (prefix) =>
      onMain("kv.recurse", "read kv tree", () => store.kvReadTree(token, prefix)).pipe(
        Effect.flatMap((entries) => orNotFound(entries, `kv ${prefix}`)),
        Effect.map((entries) => new Map(entries.map((entry) => [entry.key, entry.value] as const)))
      ),
    kvKeys: (prefix, separator) =>
      onMain("kv.keys", "list kv keys", () => store.kvListKeys(token, prefix, separator)).pipe(
        Effect.flatMap((keys) => orNotFound(keys, `kv ${prefix}`))
      ),
    kvGet: (key) =>
      onMain("kv.get", "read kv", () => store.kvRead(token, key)).pipe(
        Effect.flatMap((value) => orNotFound(value, `kv ${key}`))
      ),
    kvPut: (key, value) =>
      onMain("kv.put", "write kv", () => store.kvWrite(token, key, value)).pipe(Effect.mapError(notFoundIsError("write kv"))),
    kvDelete: (key, options) =>
      onMain("kv.delete", "delete kv", () => store.kvRemove(token, key, options?.recurse === true)).pipe(
        Effect.mapError(notFoundIsError("delete kv"))
      ),
    txn: (operations) =>
      onMain("txn", "txn", (): Answer<Answer<void> | TxnRolledBack> => ({ _tag: "Ok", value: store.applyTxn(token, operations) })).pipe(
        Effect.flatMap((outcome) => {
          switch (outcome._tag) {
            case "Ok":
              return Effect.void
            case "RolledBack":
              return Effect.fail(rolledBack(operations, outcome.errors, "answered 409"))
            case "Refused":
              return Effect.fail(consulError("txn")(refusalFailure(outcome)))
          }
        }),
        Effect.mapError(notFoundIsError("txn"))
      )
  })
}

/** As Consul lists services: one registered without Meta has an empty one. */
const withEmptyMeta = (answer: Answer<ReadonlyMap<string, AgentService>>): Answer<ReadonlyMap<string, AgentService>> =>
  answer._tag !== "Ok" ? answer : {
    _tag: "Ok",
    value: new Map([...answer.value].map(([id, service]) => [id, service.Meta === undefined ? { ...service, Meta: {} } : service] as const))
  }

/** A stored check as `GET /v1/agent/checks` shows it, decoded. */
const agentCheckOf = (check: StoredCheck): AgentCheck => ({
  CheckID: check.CheckID,
  Status: check.Status,
  Output: check.Output,
  Notes: check.Notes,
  ServiceID: check.ServiceID,
  Definition: {
    TTL: check.TTL,
    ...(check.DeregisterCriticalServiceAfter === undefined ? {} : { DeregisterCriticalServiceAfter: check.DeregisterCriticalServiceAfter })
  }
})

/** A fresh in-memory datacenter: the main agent at 127.0.0.1; tests add agents through `ConsulState`. */
export const ConsulMemory = (settings: ConsulMemorySettings = {}): Layer.Layer<Consul | ConsulState> =>
  Layer.effectContext(Effect.sync(() => {
    const store = new ConsulStore(settings.main ?? "127.0.0.1")
    store.addAgent(store.main, "main")
    return Context.make(Consul, makeConsulMemory(store, settings)).pipe(Context.add(ConsulState, store))
  }))
