import { HttpClientRequest } from "@effect/platform"
import { Context, Duration, Effect, Layer, Schema, Stream } from "effect"
import { createParser } from "eventsource-parser"
import { MarathonError, NotFound } from "../domain/Errors.js"
import {
  AppResponse, AppsResponse, EventSubscriptions, Leader, PodSpec, PodStatusesResponse, splitApps, splitPods, TasksResponse
} from "../domain/MarathonApi.js"
import type { App, AppId, AppListing, PodListing, Task } from "../domain/MarathonApi.js"
import type { HttpSettings, UpstreamFailure } from "./Http.js"
import * as Http from "./Http.js"
import { MarathonStore } from "./MarathonStore.js"
import type { MarathonOperation, StoredApp, StoredPod, StoredPodInstance } from "./MarathonStore.js"

/** One Server-Sent Event from Marathon's `/v2/events`: its `event:` name and its `data:` text. */
export interface MarathonStreamEvent {
  readonly type: string
  readonly data: string
}

/** Emitted first by `eventStream` once Marathon has answered: the stream is connected. */
export const streamOpened: MarathonStreamEvent = { type: "consular_stream_opened", data: "" }

/** Marathon as consular reads it. Marathon is the source of truth: a read that fails is never "no apps". */
export class Marathon extends Context.Tag("consular/Marathon")<Marathon, {
  /** every app with its tasks embedded when Marathon honours `embed=apps.tasks`; apps it cannot read apart */
  readonly apps: Effect.Effect<AppListing, MarathonError>
  readonly app: (id: AppId) => Effect.Effect<App, NotFound | MarathonError>
  /** NotFound: some Marathon releases answer 404 for an app without tasks (Marathon #3881) */
  readonly appTasks: (id: AppId) => Effect.Effect<ReadonlyArray<Task>, NotFound | MarathonError>
  /** `GET /v2/pods/::status`, each pod decoded on its own. NotFound: this Marathon has no pods (< 1.4) */
  readonly pods: Effect.Effect<PodListing, NotFound | MarathonError>
  /** `GET /v2/pods/<id>`: the pod's definition */
  readonly pod: (id: AppId) => Effect.Effect<PodSpec, NotFound | MarathonError>
  /** NotFound: this Marathon has no callback subscriptions (>= 1.5) */
  readonly eventSubscriptions: Effect.Effect<ReadonlyArray<string>, NotFound | MarathonError>
  readonly subscribe: (callbackUrl: string) => Effect.Effect<void, NotFound | MarathonError>
  /** `DELETE /v2/eventSubscriptions?callbackUrl=`: a leader that steps down stops Marathon calling it */
  readonly unsubscribe: (callbackUrl: string) => Effect.Effect<void, NotFound | MarathonError>
  /**
   * `GET /v2/events` (Server-Sent Events), light plan format, filtered to the given event types. The stream
   * ends when Marathon closes it; connecting fails with a MarathonError.
   */
  readonly eventStream: (eventTypes: ReadonlyArray<string>) => Stream.Stream<MarathonStreamEvent, MarathonError>
  /** Asks Marathon for its leader and talks to the leader from now on (when it is not the one in use). */
  readonly followLeader: Effect.Effect<void, MarathonError | NotFound>
  /** the Marathon in use, without credentials: for logs */
  readonly current: Effect.Effect<string>
}>() {}

export interface MarathonSettings extends HttpSettings {
  /** one Marathon, or several (one is the leader): requests go to the one that answers */
  readonly url: URL | ReadonlyArray<URL>
}

const marathonError = (operation: string) => (failure: UpstreamFailure): MarathonError =>
  new MarathonError({
    operation,
    reason: failure.reason,
    detail: failure.detail,
    ...(failure.status === undefined ? {} : { status: failure.status })
  })

/** "/grp/web" -> "/v2/apps/grp/web": each segment encoded */
const appPath = (id: AppId, suffix = ""): string =>
  `/v2/apps${id.split("/").map(encodeURIComponent).join("/")}${suffix}`

/** "/shop/cart" -> "/v2/pods/shop/cart": each segment encoded */
const podPath = (id: AppId): string => `/v2/pods${id.split("/").map(encodeURIComponent).join("/")}`

/** A URL's userinfo becomes a Basic Authorization header, and leaves the URL: it must never reach a log. */
export const withoutCredentials = (url: URL): { readonly url: URL; readonly authorization: string | undefined } => {
  if (url.username === "" && url.password === "") return { url, authorization: undefined }
  const user = decodeURIComponent(url.username)
  const password = decodeURIComponent(url.password)
  const bare = new URL(url.href)
  bare.username = ""
  bare.password = ""
  return { url: bare, authorization: `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}` }
}

// each answer's Schema compiled once (Http.schemaBody)
const readApps = Http.schemaBody(AppsResponse)
const readApp = Http.schemaBody(AppResponse)
const readTasks = Http.schemaBody(TasksResponse)
const readPodStatuses = Http.schemaBody(PodStatusesResponse)
const readPodSpec = Http.schemaBody(PodSpec)
const readEventSubscriptions = Http.schemaBody(EventSubscriptions)
const readLeader = Http.schemaBody(Leader)

const unreachable = (error: MarathonError | NotFound): boolean =>
  error._tag === "MarathonError" && (error.reason === "Transport" || error.reason === "Timeout")

export const MarathonLive = (settings: MarathonSettings): Layer.Layer<Marathon> =>
  Layer.scoped(Marathon, Effect.gen(function*() {
    const given = (Array.isArray(settings.url) ? settings.url : [settings.url]).map(withoutCredentials)
    const authorization = given.find((entry) => entry.authorization !== undefined)?.authorization
    const headers = {
      ...(authorization === undefined ? {} : { authorization }),
      ...settings.headers // explicit credentials win over the URL's
    }
    const http = yield* Http.makeHttp({ ...settings, headers })
    const bases: Array<URL> = given.map((entry) => entry.url)
    let current = 0

    /** Tries the Marathon in use, then the others in turn while they are unreachable. */
    const failover = <A, E extends MarathonError | NotFound>(request: (base: URL) => Effect.Effect<A, E>): Effect.Effect<A, E> => {
      const attempt = (tried: number): Effect.Effect<A, E> => {
        const index = (current + tried) % bases.length
        return request(bases[index]!).pipe(
          Effect.tap(() => Effect.sync(() => {
            current = index
          })),
          Effect.catchIf(
            (error) => unreachable(error) && tried + 1 < bases.length,
            () => attempt(tried + 1)
          )
        )
      }
      return Effect.suspend(() => attempt(0))
    }
    const at = (base: URL, path: string): string => new URL(path, base).href

    const apps = failover((base) =>
      http.send(
        HttpClientRequest.get(at(base, "/v2/apps")).pipe(HttpClientRequest.setUrlParam("embed", "apps.tasks")),
        readApps
      ).pipe(
        Effect.map((response) => splitApps(response.apps)),
        Effect.mapError(Http.mapFailure("apps", marathonError("list apps"))),
        Effect.catchTag("NotFound", (e) => Effect.fail(new MarathonError({ operation: "list apps", reason: "Status", status: 404, detail: e.message })))
      )
    )

    const app = (id: AppId) =>
      failover((base) =>
        http.send(HttpClientRequest.get(at(base, appPath(id))), readApp).pipe(
          Effect.map((response) => response.app),
          Effect.mapError(Http.mapFailure(`app ${id}`, marathonError("read app")))
        )
      )

    const appTasks = (id: AppId) =>
      failover((base) =>
        http.send(HttpClientRequest.get(at(base, appPath(id, "/tasks"))), readTasks).pipe(
          Effect.map((response) => response.tasks),
          Effect.mapError(Http.mapFailure(`tasks of app ${id}`, marathonError("list tasks")))
        )
      )

    const pods = failover((base) =>
      http.send(HttpClientRequest.get(at(base, "/v2/pods/::status")), readPodStatuses).pipe(
        Effect.map(splitPods),
        Effect.mapError(Http.mapFailure("pods", marathonError("list pods")))
      )
    )

    const pod = (id: AppId) =>
      failover((base) =>
        http.send(HttpClientRequest.get(at(base, podPath(id))), readPodSpec).pipe(
          Effect.mapError(Http.mapFailure(`pod ${id}`, marathonError("read pod")))
        )
      )

    const eventSubscriptions = failover((base) =>
      http.send(
        HttpClientRequest.get(at(base, "/v2/eventSubscriptions")),
        readEventSubscriptions
      ).pipe(
        Effect.map((response) => response.callbackUrls),
        Effect.mapError(Http.mapFailure("event subscriptions", marathonError("list event subscriptions")))
      )
    )

    const subscribe = (callbackUrl: string) =>
      failover((base) =>
        http.send(
          HttpClientRequest.post(at(base, "/v2/eventSubscriptions")).pipe(HttpClientRequest.setUrlParam("callbackUrl", callbackUrl)),
          Http.ignoreBody
        ).pipe(Effect.mapError(Http.mapFailure("event subscriptions", marathonError("subscribe"))))
      )

    const unsubscribe = (callbackUrl: string) =>
      failover((base) =>
        http.send(
          HttpClientRequest.del(at(base, "/v2/eventSubscriptions")).pipe(HttpClientRequest.setUrlParam("callbackUrl", callbackUrl)),
          Http.ignoreBody
        ).pipe(Effect.mapError(Http.mapFailure("event subscriptions", marathonError("unsubscribe"))))
      )

    const eventStream = (eventTypes: ReadonlyArray<string>): Stream.Stream<MarathonStreamEvent, MarathonError> =>
      Stream.unwrap(
        failover((base) => {
          const url = new URL("/v2/events", base)
          for (const type of eventTypes) url.searchParams.append("event_type", type)
          url.searchParams.set("plan-format", "light")
          return http.openStream(
            HttpClientRequest.get(url.href).pipe(HttpClientRequest.setHeader("accept", "text/event-stream"))
          ).pipe(Effect.mapError(Http.mapFailure("events", marathonError("open event stream"))))
        }).pipe(
          Effect.catchTag("NotFound", (e) => Effect.fail(new MarathonError({ operation: "open event stream", reason: "Status", status: 404, detail: e.message }))),
          Effect.map((bytes) =>
            bytes.pipe(
              Stream.mapError((failure) => marathonError("read event stream")({
                reason: Http.reasonOf(failure),
                status: undefined,
                detail: Http.describeFailure(failure),
                unreachable: true
              })),
              Stream.decodeText(),
              parseServerSentEvents,
              // the headers are in: the stream is live (Marathon filters out event_stream_attached by event_type)
              (events) => Stream.concat(Stream.make(streamOpened), events)
            )
          )
        )
      )

    const followLeader = Effect.gen(function*() {
      const leader = yield* failover((base) =>
        http.send(HttpClientRequest.get(at(base, "/v2/leader")), readLeader).pipe(
          Effect.mapError(Http.mapFailure("leader", marathonError("find leader")))
        )
      )
      const inUse = bases[current]!
      if (leader.leader === inUse.host) return
      const next = new URL(inUse.href)
      next.host = leader.leader
      const known = bases.findIndex((base) => base.host === next.host)
      if (known === -1) bases.push(next)
      current = known === -1 ? bases.length - 1 : known
      yield* Effect.logInfo("following the Marathon leader").pipe(Effect.annotateLogs({ leader: next.origin }))
    })

    return Marathon.of({
      apps,
      app,
      appTasks,
      pods,
      pod,
      eventSubscriptions,
      subscribe,
      unsubscribe,
      eventStream,
      followLeader,
      current: Effect.sync(() => bases[current]!.origin)
    })
  }))

/** SSE frames out of text chunks (eventsource-parser does the framing: CRLF, comments, multi-line data). */
export const parseServerSentEvents = <E, R>(text: Stream.Stream<string, E, R>): Stream.Stream<MarathonStreamEvent, E, R> =>
  Stream.suspend(() => {
    let pending: Array<MarathonStreamEvent> = []
    const parser = createParser({
      onEvent: (event) => {
        pending.push({ type: event.event ?? "message", data: event.data })
      }
    })
    return text.pipe(
      Stream.mapConcat((chunk) => {
        parser.feed(chunk)
        const out = pending
        pending = []
        return out
      })
    )
  })

// --- in memory -----------------------------------------------------------------------------------------

export class MarathonState extends Context.Tag("consular/MarathonState")<MarathonState, MarathonStore>() {}

export interface MarathonMemorySettings {
  readonly timeout?: Duration.DurationInput | undefined
  readonly retries?: number | undefined
  readonly retryBase?: Duration.DurationInput | undefined
}

/** What `GET /v2/apps?embed=apps.tasks` would decode to; tasks of every state are listed, as in Marathon. */
export const appView = (app: StoredApp, embed: boolean): unknown => ({
  id: app.id,
  labels: app.labels,
  version: app.version,
  ...app.networking,
  healthChecks: app.healthChecks ?? [],
  ...(embed ? { tasks: app.tasks.map((task) => taskView(app, task)) } : {})
})

export const taskView = (app: StoredApp, task: StoredApp["tasks"][number]): unknown => ({
  id: task.id,
  appId: app.id,
  host: task.host,
  ports: task.ports,
  ...(task.ipAddresses === undefined ? {} : { ipAddresses: task.ipAddresses }),
  state: task.state,
  startedAt: task.startedAt,
  version: app.version,
  // Marathon lists results only for an app with health checks: none until the first check ran
  ...(app.healthChecks === undefined || app.healthChecks.length === 0 ? {} : { healthCheckResults: task.healthCheckResults ?? [] })
})

/** A pod definition as `GET /v2/pods/<id>` writes it (RAML `Pod`; resources are required there). */
export const podView = (pod: StoredPod): unknown => ({
  id: pod.id,
  version: pod.version,
  labels: pod.labels,
  networks: pod.networks,
  scaling: { kind: "fixed", instances: pod.instances.length },
  containers: pod.containers.map((container) => ({
    name: container.name,
    resources: { cpus: 0.1, mem: 32 },
    endpoints: (container.endpoints ?? []).map((endpoint) => ({ ...endpoint, protocol: ["tcp"] }))
  }))
})

const podInstanceState = (instance: StoredPodInstance): string =>
  instance.containers.every((container) => container.status === "TASK_RUNNING")
    ? "STABLE"
    : instance.containers.some((container) => container.status === "TASK_RUNNING")
    ? "DEGRADED"
    : instance.containers.some((container) => container.status === "TASK_STAGING" || container.status === "TASK_STARTING")
    ? "STAGING"
    : "TERMINAL"

/**
 * A pod's status as `GET /v2/pods/::status` writes it (RAML `PodStatus`): `agentHostname` (1.4+), the instance's
 * network addresses, and per container its Mesos task id and endpoints (allocated host ports as Marathon pairs
 * them: the container's endpoints that ask for a host port, in order).
 */
export const podStatusView = (pod: StoredPod): unknown => {
  const since = new Date(0).toISOString()
  const containerNetwork = pod.networks.some((network) => network.mode === "container")
  return {
    id: pod.id,
    spec: podView(pod),
    status: pod.instances.length > 0 && pod.instances.every((i) => podInstanceState(i) === "STABLE") ? "STABLE" : "DEGRADED",
    statusSince: since,
    instances: pod.instances.map((instance) => ({
      id: instance.id,
      status: podInstanceState(instance),
      statusSince: since,
      agentHostname: instance.agentHostname,
      networks: containerNetwork
        ? pod.networks.map((network) => ({ ...(network.name === undefined ? {} : { name: network.name }), addresses: instance.addresses }))
        : [],
      containers: instance.containers.map((container) => {
        const declared = pod.containers.find((c) => c.name === container.name)?.endpoints ?? []
        const withHostPort = declared.filter((endpoint) => endpoint.hostPort !== undefined)
        const withoutHostPort = declared.filter((endpoint) => endpoint.hostPort === undefined)
        return {
          name: container.name,
          status: container.status,
          statusSince: since,
          containerId: container.containerId,
          endpoints: [
            ...withHostPort.flatMap((endpoint, i) =>
              container.allocatedHostPorts[i] === undefined ? [] : [{ name: endpoint.name, allocatedHostPort: container.allocatedHostPorts[i] }]
            ),
            ...withoutHostPort.map((endpoint) => ({ name: endpoint.name }))
          ],
          lastUpdated: since,
          lastChanged: since
        }
      }),
      lastUpdated: since,
      lastChanged: since
    })),
    lastUpdated: since,
    lastChanged: since
  }
}


/** Marathon in memory, failing as `MarathonLive` does against a real Marathon (same errors, retries, 404s). */
export const makeMarathonMemory = (store: MarathonStore, settings: MarathonMemorySettings = {}) => {
  const backoff = Http.retrySchedule(settings)
  const request = <A, I>(
    operation: MarathonOperation,
    label: string,
    schema: Schema.Schema<A, I>,
    run: () => unknown
  ): Effect.Effect<A, MarathonError> =>
    Effect.suspend((): Effect.Effect<A, MarathonError> => {
      const fault = store.admit(operation)
      const fail = (reason: MarathonError["reason"], detail: string, status?: number) =>
        Effect.fail(new MarathonError({ operation: label, reason, detail, ...(status === undefined ? {} : { status }) }))
      switch (fault?._tag) {
        case undefined:
          return Schema.decodeUnknown(schema)(run()).pipe(
            Effect.mapError((error) => new MarathonError({ operation: label, reason: "Decode", detail: error.message }))
          )
        case "Refuse":
          return fail("Transport", "connect ECONNREFUSED")
        case "Hang":
          return Effect.never
        case "Status":
          return fail(fault.status === 401 ? "Unauthorized" : fault.status === 403 ? "Forbidden" : "Status", `answered ${fault.status}`, fault.status)
        case "InvalidJson":
        case "Truncated":
          return fail("Decode", "unreadable body")
      }
    }).pipe(
      Effect.timeoutFail({
        duration: settings.timeout ?? "5 seconds",
        onTimeout: () => new MarathonError({ operation: label, reason: "Timeout", detail: "no answer in time" })
      }),
      Effect.retry({
        schedule: backoff,
        times: settings.retries ?? 3,
        while: Http.isTransientError
      })
    )
  const notFound = (resource: string) => new NotFound({ resource })
  const missing = Symbol("missing")
  /** a route this Marathon does not have: 404 up to 1.6, a 500 after (see MarathonStore.unknownRouteStatus) */
  const orNotFound = <A>(resource: string, operation: string) => (value: A | typeof missing): Effect.Effect<A, NotFound | MarathonError> =>
    value !== missing
      ? Effect.succeed(value)
      : store.unknownRouteStatus === 404
      ? Effect.fail(notFound(resource))
      : Effect.fail(new MarathonError({ operation, reason: "Status", status: 500, detail: "answered 500" }))

  return Marathon.of({
    apps: request("apps", "list apps", AppsResponse, () => ({
      apps: [...store.apps.values()].map((app) => appView(app, store.embedTasks))
    })).pipe(Effect.map((response) => splitApps(response.apps))),
    app: (id) =>
      request("app", "read app", Schema.Union(AppResponse, Schema.Undefined), () => {
        const app = store.apps.get(id)
        return app === undefined ? undefined : { app: appView(app, true) }
      }).pipe(Effect.flatMap((response) => response === undefined ? Effect.fail(notFound(`app ${id}`)) : Effect.succeed(response.app))),
    appTasks: (id) =>
      request("tasks", "list tasks", Schema.Union(TasksResponse, Schema.Undefined), () => {
        const app = store.apps.get(id)
        if (app === undefined || (app.tasks.length === 0 && store.tasksNotFoundWhenEmpty)) return undefined
        return { tasks: app.tasks.map((task) => taskView(app, task)) }
      }).pipe(Effect.flatMap((response) => response === undefined ? Effect.fail(notFound(`tasks of app ${id}`)) : Effect.succeed(response.tasks))),
    pods: request("pods", "list pods", Schema.Unknown, () =>
      store.podsSupported ? [...store.pods.values()].map(podStatusView) : missing
    ).pipe(
      Effect.flatMap(orNotFound("pods", "list pods")),
      Effect.flatMap((body) => Schema.decodeUnknown(PodStatusesResponse)(body).pipe(
        Effect.mapError((error) => new MarathonError({ operation: "list pods", reason: "Decode", detail: error.message }))
      )),
      Effect.map(splitPods)
    ),
    pod: (id) =>
      request("pod", "read pod", Schema.Union(PodSpec, Schema.Undefined), () => {
        const pod = store.podsSupported ? store.pods.get(id) : undefined
        return pod === undefined ? undefined : podView(pod)
      }).pipe(Effect.flatMap((spec) => spec === undefined ? Effect.fail(notFound(`pod ${id}`)) : Effect.succeed(spec))),
    eventSubscriptions: request("subscriptions", "list event subscriptions", Schema.Unknown, () =>
      store.callbacks === "removed" ? missing : store.callbacks === "disabled" ? "disabled" : { callbackUrls: [...store.subscriptions] }
    ).pipe(
      Effect.flatMap(orNotFound("event subscriptions", "list event subscriptions")),
      // Marathon checks for the http_callback subscriber on every subscription route, listing included
      Effect.flatMap((body) => body === "disabled"
        ? Effect.fail(new MarathonError({ operation: "list event subscriptions", reason: "Status", status: 400, detail: "http_callback is not an event subscriber" }))
        : Effect.succeed(body)),
      Effect.flatMap((body) => Schema.decodeUnknown(EventSubscriptions)(body).pipe(
        Effect.mapError((error) => new MarathonError({ operation: "list event subscriptions", reason: "Decode", detail: error.message }))
      )),
      Effect.map((response) => response.callbackUrls)
    ),
    subscribe: (callbackUrl) =>
      request("subscribe", "subscribe", Schema.Unknown, () => {
        if (store.callbacks === "removed") return missing
        if (store.callbacks === "disabled") return "disabled"
        if (!store.subscriptions.includes(callbackUrl)) store.subscriptions.push(callbackUrl)
        return "ok"
      }).pipe(
        Effect.flatMap(orNotFound("event subscriptions", "subscribe")),
        Effect.flatMap((outcome) =>
          outcome === "disabled"
            ? Effect.fail(new MarathonError({ operation: "subscribe", reason: "Status", status: 400, detail: "http_callback is not an event subscriber" }))
            : Effect.void
        )
      ),
    unsubscribe: (callbackUrl) =>
      request("unsubscribe", "unsubscribe", Schema.Unknown, () => {
        if (store.callbacks === "removed") return missing
        if (store.callbacks === "disabled") return "disabled"
        const at = store.subscriptions.indexOf(callbackUrl)
        if (at !== -1) store.subscriptions.splice(at, 1)
        return "ok"
      }).pipe(
        Effect.flatMap(orNotFound("event subscriptions", "unsubscribe")),
        Effect.flatMap((outcome) =>
          outcome === "disabled"
            ? Effect.fail(new MarathonError({ operation: "unsubscribe", reason: "Status", status: 400, detail: "http_callback is not an event subscriber" }))
            : Effect.void
        )
      ),
    eventStream: (eventTypes) =>
      Stream.unwrap(
        request("events", "open event stream", Schema.Unknown, () => "open").pipe(
          Effect.map(() =>
            Stream.asyncScoped<MarathonStreamEvent>((emit) =>
              Effect.acquireRelease(
                Effect.sync(() => {
                  void emit.single(streamOpened)
                  return store.listen((event) => {
                    if (eventTypes.length === 0 || eventTypes.includes(event.eventType)) {
                      void emit.single({ type: event.eventType, data: JSON.stringify(event) })
                    }
                  })
                }),
                (unlisten) => Effect.sync(unlisten)
              )
            )
          )
        )
      ),
    followLeader: request("leader", "find leader", Schema.Unknown, () => store.leader === null ? missing : "leader").pipe(
      Effect.flatMap((answer) => answer === missing ? Effect.fail(notFound("leader")) : Effect.void)
    ),
    current: Effect.succeed("memory://marathon")
  })
}

export const MarathonMemory = (settings: MarathonMemorySettings = {}): Layer.Layer<Marathon | MarathonState> =>
  Layer.effectContext(Effect.sync(() => {
    const store = new MarathonStore()
    return Context.make(Marathon, makeMarathonMemory(store, settings)).pipe(Context.add(MarathonState, store))
  }))
