import { assert, describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import type { Duration, Scope } from "effect"
import { MarathonError, NotFound } from "../../src/domain/Errors.js"
import { AppId } from "../../src/domain/MarathonApi.js"
import { Marathon } from "../../src/services/Marathon.js"
import { MarathonStore } from "../../src/services/MarathonStore.js"

/**
 * What every `Marathon` layer must do, run against `makeMarathonMemory` and against `MarathonLive` talking HTTP
 * to the embedded Marathon. Each test gets a fresh store.
 */

export interface MarathonFixtureOptions {
  readonly timeout: Duration.DurationInput
  readonly retries: number
}

export type MakeMarathon = (
  store: MarathonStore,
  options: MarathonFixtureOptions
) => Effect.Effect<Layer.Layer<Marathon>, unknown, Scope.Scope>

/** Narrows a failure to MarathonError, failing the test when it is anything else (a NotFound, say). */
export const asMarathonError = (error: unknown): MarathonError => {
  assert.instanceOf(error, MarathonError)
  return error
}

const seedApps = (store: MarathonStore) => {
  store.putApp("/web", { domain: "example.org" })
  store.setTask("/web", { id: "web.1", host: "127.0.0.2", ports: [31001, 31000] }, false)
  store.setTask("/web", { id: "web.2", host: "127.0.0.3", ports: [], state: "TASK_STAGING" }, false)
  store.putApp("/grp/sub/worker")
}

export const marathonContract = (name: string, make: MakeMarathon) =>
  describe(name, () => {
    const withMarathon = <A, E>(
      body: (marathon: Context.Tag.Service<Marathon>, store: MarathonStore) => Effect.Effect<A, E>,
      options: Partial<MarathonFixtureOptions> = {}
    ): Effect.Effect<A, unknown, Scope.Scope> =>
      Effect.gen(function*() {
        const store = new MarathonStore()
        seedApps(store)
        const layer = yield* make(store, { timeout: "500 millis", retries: 2, ...options })
        const marathon = Context.get(yield* Layer.build(layer), Marathon)
        return yield* body(marathon, store)
      })

    describe("apps and tasks", () => {
      it.scopedLive("lists apps with labels and their tasks embedded, every state", () =>
        withMarathon((marathon) =>
          Effect.gen(function*() {
            const apps = (yield* marathon.apps).apps
            expect(apps.map((app) => app.id)).toEqual(["/web", "/grp/sub/worker"])
            const web = apps[0]!
            expect(web.labels).toEqual({ domain: "example.org" })
            expect(web.tasks?.map((task) => ({ id: task.id, host: task.host, ports: task.ports, state: task.state }))).toEqual([
              { id: "web.1", host: "127.0.0.2", ports: [31001, 31000], state: "TASK_RUNNING" },
              { id: "web.2", host: "127.0.0.3", ports: [], state: "TASK_STAGING" }
            ])
            expect(apps[1]!.tasks).toEqual([])
            expect(apps[1]!.labels).toEqual({})
          })
        ))

      it.scopedLive("a Marathon that ignores embed lists apps without tasks (absent, not empty)", () =>
        withMarathon((marathon, store) =>
          Effect.gen(function*() {
            store.embedTasks = false
            const apps = (yield* marathon.apps).apps
            expect(apps.map((app) => app.tasks)).toEqual([undefined, undefined])
          })
        ))

      it.scopedLive("reads one app by an id with slashes", () =>
        withMarathon((marathon) =>
          Effect.gen(function*() {
            const app = yield* marathon.app(AppId.make("/grp/sub/worker"))
            expect(app.id).toBe("/grp/sub/worker")
            expect((yield* marathon.app(AppId.make("/web"))).tasks?.map((task) => task.id)).toEqual(["web.1", "web.2"])
          })
        ))

      it.scopedLive("an app that does not exist is NotFound", () =>
        withMarathon((marathon) =>
          Effect.gen(function*() {
            assert.instanceOf(yield* Effect.flip(marathon.app(AppId.make("/grp/nope"))), NotFound)
            assert.instanceOf(yield* Effect.flip(marathon.app(AppId.make("/grp"))), NotFound)
          })
        ))

      it.scopedLive("lists an app's tasks; an app without tasks has none", () =>
        withMarathon((marathon) =>
          Effect.gen(function*() {
            expect((yield* marathon.appTasks(AppId.make("/web"))).map((task) => task.id)).toEqual(["web.1", "web.2"])
            expect(yield* marathon.appTasks(AppId.make("/grp/sub/worker"))).toEqual([])
          })
        ))

      it.scopedLive("tasks of a missing app are NotFound, and of an empty one where Marathon #3881 says so", () =>
        withMarathon((marathon, store) =>
          Effect.gen(function*() {
            assert.instanceOf(yield* Effect.flip(marathon.appTasks(AppId.make("/nope"))), NotFound)
            store.tasksNotFoundWhenEmpty = true
            assert.instanceOf(yield* Effect.flip(marathon.appTasks(AppId.make("/grp/sub/worker"))), NotFound)
            expect((yield* marathon.appTasks(AppId.make("/web"))).length).toBe(2)
          })
        ))
    })

    describe("networking and pods", () => {
      it.scopedLive("an app's networking and its tasks' addresses come through", () =>
        withMarathon((marathon, store) =>
          Effect.gen(function*() {
            store.setNetworking("/web", { networks: [{ mode: "container", name: "calico" }], container: { portMappings: [{ containerPort: 80, name: "http" }] } })
            store.setTask("/web", { id: "web.3", host: "127.0.0.2", ports: [], ipAddresses: [{ ipAddress: "10.0.0.3", protocol: "IPv4" }] }, false)
            const web = yield* marathon.app(AppId.make("/web"))
            expect(web.networks).toEqual([{ mode: "container", name: "calico" }])
            expect(web.container?.portMappings).toEqual([{ containerPort: 80, name: "http" }])
            expect(web.tasks?.find((task) => task.id === "web.3")?.ipAddresses).toEqual([{ ipAddress: "10.0.0.3", protocol: "IPv4" }])
          })
        ))

      it.scopedLive("lists pod statuses and reads a pod's definition; an unknown pod is NotFound", () =>
        withMarathon((marathon, store) =>
          Effect.gen(function*() {
            expect((yield* marathon.pods).pods).toEqual([])
            store.putPod("/shop/cart", { labels: { a: "1" }, containers: [{ name: "web", endpoints: [{ name: "http", containerPort: 80, hostPort: 0 }] }] })
            store.setPodInstance("/shop/cart", { id: "shop_cart.i1", agentHostname: "127.0.0.2", hostPorts: { web: [31000] } }, false)
            const [pod] = (yield* marathon.pods).pods
            expect(pod?.id).toBe("/shop/cart")
            expect(pod?.instances?.[0]?.agentHostname).toBe("127.0.0.2")
            expect(pod?.instances?.[0]?.containers?.[0]).toMatchObject({ containerId: "shop_cart.i1.web", endpoints: [{ name: "http", allocatedHostPort: 31000 }] })
            expect((yield* marathon.pod(AppId.make("/shop/cart"))).labels).toEqual({ a: "1" })
            assert.instanceOf(yield* Effect.flip(marathon.pod(AppId.make("/nope"))), NotFound)
          })
        ))

      it.scopedLive("a Marathon older than 1.4 has no /v2/pods: NotFound", () =>
        withMarathon((marathon, store) =>
          Effect.gen(function*() {
            store.podsSupported = false
            assert.instanceOf(yield* Effect.flip(marathon.pods), NotFound)
            assert.instanceOf(yield* Effect.flip(marathon.pod(AppId.make("/shop/cart"))), NotFound)
          })
        ))
    })

    describe("event subscriptions", () => {
      const callback = "http://127.0.0.1:7000/events?registration=consular"

      it.scopedLive("lists none, then the subscribed URL, once however often it is subscribed", () =>
        withMarathon((marathon, store) =>
          Effect.gen(function*() {
            expect(yield* marathon.eventSubscriptions).toEqual([])
            yield* marathon.subscribe(callback)
            yield* marathon.subscribe(callback)
            expect(yield* marathon.eventSubscriptions).toEqual([callback])
            expect(store.subscriptions).toEqual([callback])
          })
        ))

      it.scopedLive("a Marathon without callbacks (>= 1.5) answers NotFound", () =>
        withMarathon((marathon, store) =>
          Effect.gen(function*() {
            store.callbacks = "removed"
            assert.instanceOf(yield* Effect.flip(marathon.eventSubscriptions), NotFound)
            assert.instanceOf(yield* Effect.flip(marathon.subscribe(callback)), NotFound)
            expect(store.subscriptions).toEqual([])
          })
        ))

      it.scopedLive("a Marathon 1.7-1.10 without callbacks answers its unknown route with a 500, after the retries", () =>
        withMarathon((marathon, store) =>
          Effect.gen(function*() {
            store.callbacks = "removed"
            store.unknownRouteStatus = 500
            expect(asMarathonError(yield* Effect.flip(marathon.eventSubscriptions)).status).toBe(500)
            expect(asMarathonError(yield* Effect.flip(marathon.subscribe(callback))).status).toBe(500)
            expect(store.subscriptions).toEqual([])
          })
        ))

      it.scopedLive("a Marathon without the http_callback subscriber refuses with a 400", () =>
        withMarathon((marathon, store) =>
          Effect.gen(function*() {
            store.callbacks = "disabled"
            const error = asMarathonError(yield* Effect.flip(marathon.subscribe(callback)))
            expect(error.reason).toBe("Status")
            expect(error.status).toBe(400)
            const listing = asMarathonError(yield* Effect.flip(marathon.eventSubscriptions))
            expect(listing.status).toBe(400)
            expect(store.subscriptions).toEqual([])
          })
        ))
    })

    describe("faults", () => {
      it.scopedLive("a 500 is retried, then a Status error with the status", () =>
        withMarathon((marathon, store) =>
          Effect.gen(function*() {
            store.fault = { _tag: "Status", status: 500 }
            const error = asMarathonError(yield* Effect.flip(marathon.apps))
            expect(error.reason).toBe("Status")
            expect(error.status).toBe(500)
            expect(store.requests).toBe(3) // the first try and two retries
          })
        ))

      it.scopedLive("a transient failure then an answer: the answer", () =>
        withMarathon((marathon, store) =>
          Effect.gen(function*() {
            store.faultQueue.push({ _tag: "Status", status: 503 }, { _tag: "Refuse" })
            expect((yield* marathon.apps).apps.length).toBe(2)
          })
        ))

      it.scopedLive("invalid JSON is a Decode error, not retried", () =>
        withMarathon((marathon, store) =>
          Effect.gen(function*() {
            store.fault = { _tag: "InvalidJson" }
            expect(asMarathonError(yield* Effect.flip(marathon.apps)).reason).toBe("Decode")
            expect(store.requests).toBe(1)
          })
        ))

      it.scopedLive("a truncated body is a Decode error", () =>
        withMarathon((marathon, store) =>
          Effect.gen(function*() {
            store.fault = { _tag: "Truncated" }
            expect(asMarathonError(yield* Effect.flip(marathon.apps)).reason).toBe("Decode")
            expect(asMarathonError(yield* Effect.flip(marathon.app(AppId.make("/web")))).reason).toBe("Decode")
          })
        ))

      it.scopedLive("a Marathon that never answers is a Timeout", () =>
        withMarathon((marathon, store) =>
          Effect.gen(function*() {
            store.fault = { _tag: "Hang" }
            expect(asMarathonError(yield* Effect.flip(marathon.apps)).reason).toBe("Timeout")
          }), { timeout: "200 millis", retries: 1 }))

      it.scopedLive("a Marathon that drops the connection is a Transport error", () =>
        withMarathon((marathon, store) =>
          Effect.gen(function*() {
            store.fault = { _tag: "Refuse" }
            expect(asMarathonError(yield* Effect.flip(marathon.eventSubscriptions)).reason).toBe("Transport")
          })
        ))

      it.scopedLive("a 401 is Unauthorized and not retried", () =>
        withMarathon((marathon, store) =>
          Effect.gen(function*() {
            store.fault = { _tag: "Status", status: 401 }
            const error = asMarathonError(yield* Effect.flip(marathon.apps))
            expect(error.reason).toBe("Unauthorized")
            expect(store.requests).toBe(1)
          })
        ))
    })
  })
