import { HttpClientRequest, HttpClientResponse } from "@effect/platform"
import { Context, Duration, Effect, Layer, Schedule, Schema } from "effect"
import { MarathonError, NotFound } from "../domain/Errors.js"
import { AppResponse, AppsResponse, EventSubscriptions, TasksResponse } from "../domain/MarathonApi.js"
import type { App, AppId, Task } from "../domain/MarathonApi.js"
import type { HttpSettings, UpstreamFailure } from "./Http.js"
import * as Http from "./Http.js"
import { MarathonStore } from "./MarathonStore.js"
import type { MarathonOperation, StoredApp } from "./MarathonStore.js"

/** Marathon as consular reads it. Marathon is the source of truth: a read that fails is never "no apps". */
export class Marathon extends Context.Tag("consular/Marathon")<Marathon, {
  /** every app with its tasks embedded when Marathon honours `embed=apps.tasks` */
  readonly apps: Effect.Effect<ReadonlyArray<App>, MarathonError>
  readonly app: (id: AppId) => Effect.Effect<App, NotFound | MarathonError>
  /** NotFound: some Marathon releases answer 404 for an app without tasks (Marathon #3881) */
  readonly appTasks: (id: AppId) => Effect.Effect<ReadonlyArray<Task>, NotFound | MarathonError>
  /** NotFound: this Marathon has no callback subscriptions (>= 1.5) */
  readonly eventSubscriptions: Effect.Effect<ReadonlyArray<string>, NotFound | MarathonError>
  readonly subscribe: (callbackUrl: string) => Effect.Effect<void, NotFound | MarathonError>
}>() {}

export interface MarathonSettings extends HttpSettings {
  readonly url: URL
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

export const MarathonLive = (settings: MarathonSettings): Layer.Layer<Marathon> =>
  Layer.scoped(Marathon, Effect.gen(function*() {
    const http = yield* Http.makeHttp(settings)
    const url = (path: string): string => new URL(path, settings.url).href

    const apps = http.send(
      HttpClientRequest.get(url("/v2/apps")).pipe(HttpClientRequest.setUrlParam("embed", "apps.tasks")),
      HttpClientResponse.schemaBodyJson(AppsResponse)
    ).pipe(
      Effect.map((response) => response.apps),
      Effect.mapError(Http.mapFailure("apps", marathonError("list apps"))),
      Effect.catchTag("NotFound", (e) => Effect.fail(new MarathonError({ operation: "list apps", reason: "Status", status: 404, detail: e.message })))
    )

    const app = (id: AppId) =>
      http.send(HttpClientRequest.get(url(appPath(id))), HttpClientResponse.schemaBodyJson(AppResponse)).pipe(
        Effect.map((response) => response.app),
        Effect.mapError(Http.mapFailure(`app ${id}`, marathonError("read app")))
      )

    const appTasks = (id: AppId) =>
      http.send(HttpClientRequest.get(url(appPath(id, "/tasks"))), HttpClientResponse.schemaBodyJson(TasksResponse)).pipe(
        Effect.map((response) => response.tasks),
        Effect.mapError(Http.mapFailure(`tasks of app ${id}`, marathonError("list tasks")))
      )

    const eventSubscriptions = http.send(
      HttpClientRequest.get(url("/v2/eventSubscriptions")),
      HttpClientResponse.schemaBodyJson(EventSubscriptions)
    ).pipe(
      Effect.map((response) => response.callbackUrls),
      Effect.mapError(Http.mapFailure("event subscriptions", marathonError("list event subscriptions")))
    )

    const subscribe = (callbackUrl: string) =>
      http.send(
        HttpClientRequest.post(url("/v2/eventSubscriptions")).pipe(HttpClientRequest.setUrlParam("callbackUrl", callbackUrl)),
        Http.ignoreBody
      ).pipe(Effect.mapError(Http.mapFailure("event subscriptions", marathonError("subscribe"))))

    return Marathon.of({ apps, app, appTasks, eventSubscriptions, subscribe })
  }))

// --- in memory -----------------------------------------------------------------------------------------

export class MarathonState extends Context.Tag("consular/MarathonState")<MarathonState, MarathonStore>() {}

export interface MarathonMemorySettings {
  readonly timeout?: Duration.DurationInput | undefined
  readonly retries?: number | undefined
  readonly retryBase?: Duration.DurationInput | undefined
}

/** What `GET /v2/apps?embed=apps.tasks` would decode to; tasks of every state are listed, as in Marathon. */
export const appView = (store: MarathonStore, app: StoredApp, embed: boolean): unknown => ({
  id: app.id,
  labels: app.labels,
  version: app.version,
  ...(embed ? { tasks: app.tasks.map((task) => taskView(app, task)) } : {})
})

export const taskView = (app: StoredApp, task: StoredApp["tasks"][number]): unknown => ({
  id: task.id,
  appId: app.id,
  host: task.host,
  ports: task.ports,
  state: task.state,
  startedAt: task.startedAt,
  version: app.version
})

const retryableStatus = new Set([408, 429, 500, 502, 503, 504])

/** Marathon in memory, failing as `MarathonLive` does against a real Marathon (same errors, retries, 404s). */
export const makeMarathonMemory = (store: MarathonStore, settings: MarathonMemorySettings = {}) => {
  const backoff = Schedule.exponential(settings.retryBase ?? "100 millis", 2).pipe(Schedule.jittered)
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
        while: (error) =>
          error.reason === "Transport" || error.reason === "Timeout" ||
          (error.reason === "Status" && error.status !== undefined && retryableStatus.has(error.status))
      })
    )
  const notFound = (resource: string) => new NotFound({ resource })
  const missing = Symbol("missing")
  const orNotFound = <A>(resource: string) => (value: A | typeof missing): Effect.Effect<A, NotFound> =>
    value === missing ? Effect.fail(notFound(resource)) : Effect.succeed(value)

  return Marathon.of({
    apps: request("apps", "list apps", AppsResponse, () => ({
      apps: [...store.apps.values()].map((app) => appView(store, app, store.embedTasks))
    })).pipe(Effect.map((response) => response.apps)),
    app: (id) =>
      request("app", "read app", Schema.Union(AppResponse, Schema.Undefined), () => {
        const app = store.apps.get(id)
        return app === undefined ? undefined : { app: appView(store, app, true) }
      }).pipe(Effect.flatMap((response) => response === undefined ? Effect.fail(notFound(`app ${id}`)) : Effect.succeed(response.app))),
    appTasks: (id) =>
      request("tasks", "list tasks", Schema.Union(TasksResponse, Schema.Undefined), () => {
        const app = store.apps.get(id)
        if (app === undefined || (app.tasks.length === 0 && store.tasksNotFoundWhenEmpty)) return undefined
        return { tasks: app.tasks.map((task) => taskView(app, task)) }
      }).pipe(Effect.flatMap((response) => response === undefined ? Effect.fail(notFound(`tasks of app ${id}`)) : Effect.succeed(response.tasks))),
    eventSubscriptions: request("subscriptions", "list event subscriptions", Schema.Unknown, () =>
      store.callbacks === "removed" ? missing : store.callbacks === "disabled" ? "disabled" : { callbackUrls: [...store.subscriptions] }
    ).pipe(
      Effect.flatMap(orNotFound("event subscriptions")),
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
        Effect.flatMap(orNotFound("event subscriptions")),
        Effect.flatMap((outcome) =>
          outcome === "disabled"
            ? Effect.fail(new MarathonError({ operation: "subscribe", reason: "Status", status: 400, detail: "http_callback is not an event subscriber" }))
            : Effect.void
        )
      )
  })
}

export const MarathonMemory = (settings: MarathonMemorySettings = {}): Layer.Layer<Marathon | MarathonState> =>
  Layer.effectContext(Effect.sync(() => {
    const store = new MarathonStore()
    return Context.make(Marathon, makeMarathonMemory(store, settings)).pipe(Context.add(MarathonState, store))
  }))
