import { HttpBody, HttpClientRequest, HttpClientResponse } from "@effect/platform"
import { Context, Duration, Effect, Either, Layer, Schema } from "effect"
import { AgentChecks, AgentServices, CatalogNodes, CheckUpdate, KvEntries, KvKeys, Registration, TxnOperations } from "../domain/ConsulApi.js"
import type { AgentCheck, AgentService, CatalogNode, TxnOperation } from "../domain/ConsulApi.js"
import { ConsulError, NotFound } from "../domain/Errors.js"
import { agentUrl } from "../domain/Naming.js"
import type { HttpSettings, UpstreamFailure } from "./Http.js"
import * as Http from "./Http.js"
import { ConsulStore } from "./ConsulStore.js"
import type { Admission, ConsulOperation, StoredCheck } from "./ConsulStore.js"

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

/** A key in a URL path: each segment encoded, the slashes kept (Consul decodes the path). */
const kvPath = (key: string): string => `/v1/kv/${key.split("/").map(encodeURIComponent).join("/")}`

const consulError = (operation: string, agent?: string) => (failure: UpstreamFailure): ConsulError =>
  new ConsulError({
    operation,
    reason: failure.reason,
    detail: failure.detail,
    ...(failure.status === undefined ? {} : { status: failure.status }),
    ...(agent === undefined ? {} : { agent })
  })

const notFoundIsError = (operation: string, agent?: string) => (error: NotFound | ConsulError): ConsulError =>
  error._tag === "NotFound"
    ? new ConsulError({ operation, reason: "Status", status: 404, detail: error.message, ...(agent === undefined ? {} : { agent }) })
    : error

const encodeRegistration = Schema.encodeEither(Registration)
const encodeCheckUpdate = Schema.encodeSync(CheckUpdate)

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

    const agentServices = (agent: string, options?: { readonly retryUnreachable?: boolean }) =>
      http.send(HttpClientRequest.get(at(agent, "/v1/agent/services")), HttpClientResponse.schemaBodyJson(AgentServices), {
        retryUnreachable: options?.retryUnreachable
      }).pipe(
        Effect.map((services) => new Map(Object.entries(services))),
        Effect.mapError(Http.mapFailure(`services of agent ${agent}`, consulError("list services", agent))),
        Effect.mapError(notFoundIsError("list services", agent))
      )

    const agentService = (agent: string, serviceId: string) =>
      http.send(
        HttpClientRequest.get(at(agent, "/v1/agent/services")).pipe(
          HttpClientRequest.setUrlParam("filter", `ID == ${JSON.stringify(serviceId)}`)
        ),
        HttpClientResponse.schemaBodyJson(AgentServices)
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
        HttpClientRequest.put(at(agent, path)).pipe(HttpClientRequest.bodyUnsafeJson(encoded.right)),
        Http.ignoreBody,
        { retryUnreachable: options?.fallbackMode !== true, timeout: options?.timeout }
      ).pipe(Effect.mapError((failure) => notFoundIsError("register", agent)(Http.mapFailure(`agent ${agent}`, consulError("register", agent))(failure))))
    }

    const agentChecks = (agent: string, options?: { readonly retryUnreachable?: boolean }) =>
      http.send(HttpClientRequest.get(at(agent, "/v1/agent/checks")), HttpClientResponse.schemaBodyJson(AgentChecks), {
        retryUnreachable: options?.retryUnreachable
      }).pipe(
        Effect.map((checks) => new Map(Object.entries(checks))),
        Effect.mapError(Http.mapFailure(`checks of agent ${agent}`, consulError("list checks", agent))),
        Effect.mapError(notFoundIsError("list checks", agent))
      )

    const updateCheck = (agent: string, checkId: string, update: CheckUpdate) =>
      http.send(
        HttpClientRequest.put(at(agent, `/v1/agent/check/update/${encodeURIComponent(checkId)}`)).pipe(
          HttpClientRequest.bodyUnsafeJson(encodeCheckUpdate(update))
        ),
        Http.ignoreBody
      ).pipe(Effect.mapError(Http.mapFailure(`check ${checkId} on agent ${agent}`, consulError("update check", agent))))

    const deregister = (agent: string, serviceId: string) =>
      http.send(
        HttpClientRequest.put(at(agent, `/v1/agent/service/deregister/${encodeURIComponent(serviceId)}`)),
        Http.ignoreBody
      ).pipe(Effect.mapError(Http.mapFailure(`service ${serviceId} on agent ${agent}`, consulError("deregister", agent))))

    const catalogNodes = http.send(HttpClientRequest.get(onMain("/v1/catalog/nodes")), HttpClientResponse.schemaBodyJson(CatalogNodes)).pipe(
      Effect.mapError(Http.mapFailure("catalog nodes", consulError("list catalog nodes"))),
      Effect.mapError(notFoundIsError("list catalog nodes"))
    )

    const kvTree = (prefix: string) =>
      http.send(
        HttpClientRequest.get(onMain(kvPath(prefix))).pipe(HttpClientRequest.setUrlParam("recurse", "true")),
        HttpClientResponse.schemaBodyJson(KvEntries)
      ).pipe(
        Effect.map((entries) => new Map(entries.map((entry) => [entry.Key, decodeBase64(entry.Value)] as const))),
        Effect.mapError(Http.mapFailure(`kv ${prefix}`, consulError("read kv tree")))
      )

    const kvKeys = (prefix: string, separator?: string) =>
      http.send(
        HttpClientRequest.get(onMain(kvPath(prefix))).pipe(
          HttpClientRequest.setUrlParam("keys", "true"),
          separator === undefined ? (r) => r : HttpClientRequest.setUrlParam("separator", separator)
        ),
        HttpClientResponse.schemaBodyJson(KvKeys)
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
            Effect.mapError(Http.mapFailure("txn", consulError("txn"))),
            Effect.mapError(notFoundIsError("txn"))
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
}


/**
 * Consul in memory, behaving as `ConsulLive` does against a real Consul: same errors and reasons, a hanging
 * agent times out, transient failures are retried with the same backoff, 404s are `NotFound`.
 */
export const makeConsulMemory = (store: ConsulStore, settings: ConsulMemorySettings = {}) => {
  const timeout = settings.timeout ?? "5 seconds"
  const backoff = Http.retrySchedule(settings)
  const request = <A>(
    agent: string,
    operation: ConsulOperation,
    label: string,
    run: () => A,
    options?: RegisterOptions
  ): Effect.Effect<A, ConsulError> => {
    const attempt = Effect.suspend((): Effect.Effect<A, ConsulError> => {
      const admission: Admission = store.admit(agent, operation)
      const fail = (reason: ConsulError["reason"], detail: string, status?: number) =>
        Effect.fail(new ConsulError({ operation: label, reason, detail, agent, ...(status === undefined ? {} : { status }) }))
      switch (admission._tag) {
        case "Ok":
          return Effect.sync(run)
        case "Refuse":
          return fail("Transport", `connect ECONNREFUSED ${agent}`)
        case "Hang":
          return Effect.never
        case "Status":
          return fail(admission.status === 403 ? "Forbidden" : "Status", `answered ${admission.status}`, admission.status)
      }
    }).pipe(
      Effect.timeoutFail({
        duration: options?.timeout ?? timeout,
        onTimeout: () => new ConsulError({ operation: label, reason: "Timeout", detail: "no answer in time", agent })
      })
    )
    return attempt.pipe(Effect.retry({
      schedule: backoff,
      times: settings.retries ?? 3,
      while: (error) =>
        error.reason === "Transport" || error.reason === "Timeout"
          ? options?.fallbackMode !== true
          : error.reason === "Status" && error.status !== undefined && Http.isTransientStatus(error.status)
    }))
  }
  const main = () => settings.main ?? store.main
  const orNotFound = <A>(value: A | undefined, resource: string): Effect.Effect<A, NotFound> =>
    value === undefined ? Effect.fail(new NotFound({ resource })) : Effect.succeed(value)

  return Consul.of({
    agentServices: (agent, options) =>
      // as Consul lists them: a service without Meta has an empty one
      request(agent, "agent.services", "list services", () => new Map([...store.services(agent)].map(([id, service]) => [id, service.Meta === undefined ? { ...service, Meta: {} } : service] as const)), {
        fallbackMode: options?.retryUnreachable === false
      }),
    agentService: (agent, serviceId) =>
      request(agent, "agent.services", "list services", () => store.services(agent).get(serviceId)).pipe(
        Effect.flatMap((service) => orNotFound(service, `service ${serviceId} on agent ${agent}`))
      ),
    register: (agent, registration, options) =>
      request(agent, "agent.register", "register", () => store.register(agent, registration, options), options),
    agentChecks: (agent, options) =>
      request(agent, "agent.checks", "list checks", () => new Map([...store.checks(agent)].map(([id, check]) => [id, agentCheckOf(check)] as const)), {
        fallbackMode: options?.retryUnreachable === false
      }),
    updateCheck: (agent, checkId, update) =>
      request(agent, "agent.checkUpdate", "update check", () => store.updateCheck(agent, checkId, update.Status, update.Output)).pipe(
        Effect.flatMap((found) => found ? Effect.void : Effect.fail(new NotFound({ resource: `check ${checkId} on agent ${agent}` })))
      ),
    deregister: (agent, serviceId) =>
      request(agent, "agent.deregister", "deregister", () => store.deregister(agent, serviceId)).pipe(
        Effect.flatMap((found) => found ? Effect.void : Effect.fail(new NotFound({ resource: `service ${serviceId} on agent ${agent}` })))
      ),
    catalogNodes: Effect.suspend(() => request(main(), "catalog.nodes", "list catalog nodes", () => store.catalogNodes())),
    kvTree: (prefix) =>
      Effect.suspend(() => request(main(), "kv.recurse", "read kv tree", () => store.recurse(prefix))).pipe(
        Effect.flatMap((entries) => orNotFound(entries, `kv ${prefix}`)),
        Effect.map((entries) => new Map(entries.map((entry) => [entry.key, entry.value] as const)))
      ),
    kvKeys: (prefix, separator) =>
      Effect.suspend(() => request(main(), "kv.keys", "list kv keys", () => store.keys(prefix, separator))).pipe(
        Effect.flatMap((keys) => orNotFound(keys, `kv ${prefix}`))
      ),
    kvGet: (key) =>
      Effect.suspend(() => request(main(), "kv.get", "read kv", () => store.kv.get(key))).pipe(
        Effect.flatMap((value) => orNotFound(value, `kv ${key}`))
      ),
    kvPut: (key, value) => Effect.suspend(() => request(main(), "kv.put", "write kv", () => store.put(key, value))),
    kvDelete: (key, options) =>
      Effect.suspend(() => request(main(), "kv.delete", "delete kv", () => store.delete(key, options?.recurse === true))),
    txn: (operations) =>
      Effect.suspend(() => request(main(), "txn", "txn", () => store.txn(operations))).pipe(
        Effect.flatMap((result) =>
          result.ok
            ? Effect.void
            : Effect.fail(new ConsulError({ operation: "txn", reason: "Status", status: result.status, detail: result.error }))
        )
      )
  })
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
