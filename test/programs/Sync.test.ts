import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import type { ConsulStore } from "../../src/services/ConsulStore.js"
import { makeDatacenter, syncPass } from "../support/Datacenter.js"

const sync = syncPass

const services = (store: ConsulStore, agent: string) => Object.fromEntries(store.services(agent))

const ours = (app: string, regId = "consular") => [`consular-reg-id=${regId}`, `consular-app-id=${app}`]

describe("consular sync against the embedded Marathon and Consul", () => {
  it.scopedLive("registers each running task on its host's agent with the original's exact layout", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.marathon.putApp("/web", { domain: "example.org", empty: "" })
      dc.marathon.setTask("/web", { id: "web.1", host: "127.0.0.2", ports: [31002, 31001] }, false)
      dc.marathon.setTask("/web", { id: "web.2", host: "127.0.0.3", ports: [31003] }, false)
      dc.marathon.putApp("/grp/sub/worker")
      dc.marathon.setTask("/grp/sub/worker", { id: "worker.1", host: "127.0.0.2", ports: [] }, false)
      dc.marathon.setTask("/grp/sub/worker", { id: "worker.2", host: "127.0.0.3", ports: [], state: "TASK_STAGING" }, false)

      const report = yield* sync(dc)

      expect(services(dc.consul, "127.0.0.2")).toEqual({
        "web.1": { ID: "web.1", Service: "web", Address: "127.0.0.2", Port: 31001, Tags: ours("/web") },
        "worker.1": { ID: "worker.1", Service: "grp-sub-worker", Address: "127.0.0.2", Port: 0, Tags: ours("/grp/sub/worker") }
      })
      expect(services(dc.consul, "127.0.0.3")).toEqual({
        "web.2": { ID: "web.2", Service: "web", Address: "127.0.0.3", Port: 31003, Tags: ours("/web") }
      })
      expect(services(dc.consul, "127.0.0.1")).toEqual({})
      expect(Object.fromEntries(dc.consul.kv)).toEqual({
        "consular/web/domain": "\"example.org\"",
        "consular/web/empty": ""
      })
      expect(report.registered).toBe(3)
      expect(report.keysSet).toBe(2)
      expect(report.failures).toEqual([])
    }))

  it.scopedLive("sends no Port for a portless task (Consul shows 0)", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.marathon.setTask("/portless", { id: "p.1", host: "127.0.0.2", ports: [] }, false)
      const registrations: Array<unknown> = []
      const original = dc.consul.register.bind(dc.consul)
      dc.consul.register = (agent, registration) => {
        registrations.push(registration)
        original(agent, registration)
      }
      yield* sync(dc)
      expect(registrations).toEqual([{ ID: "p.1", Name: "portless", Address: "127.0.0.2", Tags: ours("/portless") }])
    }))

  it.scopedLive("a second sync writes nothing, and an idle pass reads once per agent plus catalog and KV", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.marathon.putApp("/web", { a: "1", b: "2" })
      for (let i = 0; i < 10; i++) dc.marathon.setTask("/web", { id: `web.${i}`, host: `127.0.0.${1 + (i % 3)}`, ports: [1000 + i] }, false)
      yield* sync(dc, { purge: true })
      dc.consul.resetCounters()
      dc.marathon.requests = 0
      const report = yield* sync(dc, { purge: true })
      expect(dc.consul.writes).toBe(0)
      expect(report.registered + report.deregistered + report.keysSet + report.keysDeleted).toBe(0)
      expect(dc.consul.requests).toBe(3 + 2) // three agents, the catalog, one KV listing
      expect(dc.marathon.requestLog.slice(-2).sort()).toEqual(["apps", "pods"]) // apps with tasks embedded, and the pods
      expect(dc.marathon.requests).toBe(2)
    }))

  it.scopedLive("labels follow Marathon: added, changed, removed; web never touches web2", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.marathon.putApp("/web", { keep: "k", change: "old", remove: "x" })
      dc.marathon.putApp("/web2", { other: "o" })
      yield* sync(dc)
      dc.marathon.setLabels("/web", { keep: "k", change: "new", added: "a" })
      const report = yield* sync(dc)
      expect(Object.fromEntries(dc.consul.kv)).toEqual({
        "consular/web/keep": "\"k\"",
        "consular/web/change": "\"new\"",
        "consular/web/added": "\"a\"",
        "consular/web2/other": "\"o\""
      })
      expect(report.keysSet).toBe(2)
      expect(report.keysDeleted).toBe(1)
    }))

  it.scopedLive("purges each kind of dead service and dead KV tree, and nothing else", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.marathon.setTask("/live", { id: "live.1", host: "127.0.0.2", ports: [1] }, false)
      dc.marathon.setTask("/live", { id: "live.2", host: "127.0.0.2", ports: [2], state: "TASK_STAGING" }, false)
      const seed = (agent: string, id: string, name: string, tags: ReadonlyArray<string>) =>
        dc.consul.register(agent, { ID: id, Name: name, Address: agent, Port: 1, Tags: tags })
      seed("127.0.0.2", "live.0", "live", ours("/live")) // ours, task gone
      seed("127.0.0.2", "live.2", "live", ours("/live")) // ours, task staging: not running
      seed("127.0.0.3", "gone.1", "gone", ours("/gone")) // ours, app gone
      seed("127.0.0.1", "main.1", "gone", ours("/gone")) // ours, on the main agent
      seed("127.0.0.3", "other.1", "gone", ours("/gone", "other")) // another consular's
      seed("127.0.0.3", "plain", "plain", []) // untagged
      seed("127.0.0.3", "noapp", "noapp", ["consular-reg-id=consular"]) // ours without an app id
      dc.consul.put("consular/gone/a", "\"1\"")
      dc.consul.put("consular/gone/b/c", "\"2\"")
      dc.consul.put("consular/live2/x", "\"3\"") // an app gone whose name extends a live one
      dc.consul.put("other/key", "v")
      dc.consul.put("consularx/key", "v")

      const report = yield* sync(dc, { purge: true })

      expect(Object.keys(services(dc.consul, "127.0.0.2")).sort()).toEqual(["live.1"])
      expect(Object.keys(services(dc.consul, "127.0.0.3")).sort()).toEqual(["noapp", "other.1", "plain"])
      expect(Object.keys(services(dc.consul, "127.0.0.1"))).toEqual([])
      expect(Object.fromEntries(dc.consul.kv)).toEqual({ "other/key": "v", "consularx/key": "v" })
      expect(report.deregistered).toBe(4)
    }))

  it.scopedLive("without --purge nothing is deregistered or deleted for dead apps", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.consul.register("127.0.0.2", { ID: "gone.1", Name: "gone", Address: "127.0.0.2", Tags: ours("/gone") })
      dc.consul.put("consular/gone/a", "\"1\"")
      yield* sync(dc, { purge: false })
      expect(Object.keys(services(dc.consul, "127.0.0.2"))).toEqual(["gone.1"])
      expect(dc.consul.kv.get("consular/gone/a")).toBe("\"1\"")
    }))

  it.scopedLive("a Marathon that fails means a failed pass: no purge, no write", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.consul.register("127.0.0.2", { ID: "t.1", Name: "web", Address: "127.0.0.2", Tags: ours("/web") })
      dc.consul.put("consular/web/a", "\"1\"")
      for (const fault of [{ _tag: "Status", status: 500 }, { _tag: "InvalidJson" }, { _tag: "Truncated" }, { _tag: "Hang" }] as const) {
        dc.marathon.fault = fault
        dc.consul.resetCounters()
        const error = yield* Effect.flip(sync(dc, { purge: true }))
        expect(error._tag).toBe("MarathonError")
        expect(dc.consul.writes).toBe(0)
      }
      expect(Object.keys(services(dc.consul, "127.0.0.2"))).toEqual(["t.1"])
      expect(dc.consul.kv.get("consular/web/a")).toBe("\"1\"")
    }))

  it.scopedLive("reads tasks per app when Marathon does not embed them, a 404 meaning no tasks (Marathon #3881)", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.marathon.embedTasks = false
      dc.marathon.tasksNotFoundWhenEmpty = true
      dc.marathon.putApp("/empty", { l: "v" })
      dc.marathon.setTask("/busy", { id: "busy.1", host: "127.0.0.3", ports: [9] }, false)
      dc.consul.register("127.0.0.3", { ID: "empty.1", Name: "empty", Address: "127.0.0.3", Tags: ours("/empty") })
      const report = yield* sync(dc, { purge: true })
      expect(report.failures).toEqual([])
      expect(Object.keys(services(dc.consul, "127.0.0.3"))).toEqual(["busy.1"])
      expect(dc.consul.kv.get("consular/empty/l")).toBe("\"v\"")
      expect(dc.marathon.requestLog.filter((op) => op === "tasks")).toHaveLength(2)
    }))

  it.scopedLive("app ids that share a Consul name are skipped, every other app still synced", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.marathon.setTask("/a/b", { id: "ab.1", host: "127.0.0.2", ports: [1] }, false)
      dc.marathon.setTask("/a-b", { id: "a-b.1", host: "127.0.0.2", ports: [2] }, false)
      dc.marathon.setLabels("/a/b", { l: "1" })
      dc.marathon.setTask("/ok", { id: "ok.1", host: "127.0.0.2", ports: [3] }, false)
      dc.consul.register("127.0.0.2", { ID: "ab.0", Name: "a-b", Address: "127.0.0.2", Tags: ours("/a/b") })
      dc.consul.put("consular/a-b/old", "\"x\"")
      const report = yield* sync(dc, { purge: true })
      expect(report.clashes).toEqual([{ name: "a-b", ids: ["/a-b", "/a/b"] }])
      expect(Object.keys(services(dc.consul, "127.0.0.2")).sort()).toEqual(["ab.0", "ok.1"])
      expect(dc.consul.kv.get("consular/a-b/old")).toBe("\"x\"")
      expect(dc.consul.kv.has("consular/a-b/l")).toBe(false)
    }))

  it.scopedLive("an app Marathon lists that cannot be read is skipped, its entries kept; every other app is synced", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.marathon.setTask("/ok", { id: "ok.1", host: "127.0.0.2", ports: [1] }, false)
      dc.marathon.setTask("/odd", { id: "odd.1", host: "node.1", ports: [2], state: "TASK_STAGING" }, false)
      dc.consul.register("127.0.0.3", { ID: "odd.0", Name: "odd", Address: "127.0.0.3", Tags: ours("/odd") })
      dc.consul.register("127.0.0.3", { ID: "gone.1", Name: "gone", Address: "127.0.0.3", Tags: ours("/gone") })
      dc.consul.put("consular/odd/l", "\"1\"")
      const report = yield* sync(dc, { purge: true })
      expect(dc.consul.services("127.0.0.2").has("ok.1")).toBe(true)
      expect([...dc.consul.services("127.0.0.3").keys()]).toEqual(["odd.0"]) // the gone app's is purged, the odd one's kept
      expect(dc.consul.kv.get("consular/odd/l")).toBe("\"1\"")
      expect(report.failures.map((f) => f.message).join("\n")).toContain("app /odd skipped")
    }))

  it.scopedLive("an app without a usable id means no purge in that pass (it cannot be told from a gone app)", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.marathon.setTask("/ok", { id: "ok.1", host: "127.0.0.2", ports: [1] }, false)
      dc.marathon.putApp("no-leading-slash")
      dc.consul.register("127.0.0.3", { ID: "gone.1", Name: "gone", Address: "127.0.0.3", Tags: ours("/gone") })
      yield* sync(dc, { purge: true })
      expect(dc.consul.services("127.0.0.2").has("ok.1")).toBe(true)
      expect(dc.consul.services("127.0.0.3").has("gone.1")).toBe(true)
    }))

  it.scopedLive("--dry-run computes the plan and writes nothing", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.marathon.putApp("/web", { a: "1" })
      dc.marathon.setTask("/web", { id: "web.1", host: "127.0.0.2", ports: [1] }, false)
      dc.consul.register("127.0.0.3", { ID: "dead", Name: "web", Address: "127.0.0.3", Tags: ours("/web") })
      const report = yield* sync(dc, { purge: true, dryRun: true })
      expect(dc.consul.writes).toBe(0)
      expect(report.plan.register.map((s) => s.registration.ID)).toEqual(["web.1"])
      expect(report.plan.deregister).toEqual([{ agent: "127.0.0.3", serviceId: "dead", why: "dead" }])
      expect(report.plan.kvSet).toEqual([{ key: "consular/web/a", value: "\"1\"" }])
    }))

  describe("one agent failing does not stop the others", () => {
    for (const fault of [{ _tag: "Refuse" }, { _tag: "Hang" }, { _tag: "Status", status: 500 }] as const) {
      it.scopedLive(`agent ${fault._tag}`, () =>
        Effect.gen(function*() {
          const dc = yield* makeDatacenter({ timeout: 200 })
          dc.marathon.putApp("/web", { a: "1" })
          dc.marathon.setTask("/web", { id: "web.2", host: "127.0.0.2", ports: [1] }, false)
          dc.marathon.setTask("/web", { id: "web.3", host: "127.0.0.3", ports: [2] }, false)
          dc.consul.register("127.0.0.1", { ID: "dead", Name: "web", Address: "127.0.0.1", Tags: ours("/web") })
          dc.consul.setFault("127.0.0.3", fault)
          const report = yield* sync(dc, { purge: true })
          expect(Object.keys(services(dc.consul, "127.0.0.2"))).toEqual(["web.2"])
          expect(Object.keys(services(dc.consul, "127.0.0.1"))).toEqual([])
          expect(dc.consul.kv.get("consular/web/a")).toBe("\"1\"")
          expect(report.failures.map((f) => f.scope)).toContain("agent 127.0.0.3")
          dc.consul.setFault("127.0.0.3", undefined)
          yield* sync(dc, { purge: true })
          expect(Object.keys(services(dc.consul, "127.0.0.3"))).toEqual(["web.3"])
        }))
    }
  })

  it.scopedLive("an agent that does not answer is asked once per pass: the pass does not wait out retries", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter({ timeout: 200 })
      dc.marathon.setTask("/web", { id: "web.3", host: "127.0.0.3", ports: [2] }, false)
      dc.marathon.setTask("/web", { id: "web.2", host: "127.0.0.2", ports: [1] }, false)
      dc.consul.setFault("127.0.0.3", { _tag: "Hang" })
      let asked = 0
      const admit = dc.consul.admit.bind(dc.consul)
      dc.consul.admit = (address, operation) => {
        if (address === "127.0.0.3" && operation === "agent.services") asked++
        return admit(address, operation)
      }
      const report = yield* sync(dc, { purge: true })
      expect(asked).toBe(1)
      expect(report.failures.map((f) => f.scope)).toContain("agent 127.0.0.3")
      expect(dc.consul.services("127.0.0.2").has("web.2")).toBe(true)
    }))

  it.scopedLive("with --fallback a task on an unreachable agent is registered on the main agent, once", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter({ timeout: 200 })
      dc.marathon.setTask("/web", { id: "web.3", host: "127.0.0.3", ports: [2] }, false)
      dc.consul.setFault("127.0.0.3", { _tag: "Refuse" })
      const first = yield* sync(dc, { fallback: true })
      expect(first.fallbackRegistered).toBe(1)
      expect(services(dc.consul, "127.0.0.1")["web.3"]).toEqual({ ID: "web.3", Service: "web", Address: "127.0.0.3", Port: 2, Tags: ours("/web") })
      dc.consul.resetCounters()
      const second = yield* sync(dc, { fallback: true })
      expect(second.fallbackRegistered).toBe(0)
      expect(dc.consul.writes).toBe(0)
      // the agent is back: the service moves to it, then leaves the main agent
      dc.consul.setFault("127.0.0.3", undefined)
      yield* sync(dc, { fallback: true })
      yield* sync(dc, { fallback: true })
      expect(Object.keys(services(dc.consul, "127.0.0.3"))).toEqual(["web.3"])
      expect(Object.keys(services(dc.consul, "127.0.0.1"))).toEqual([])
    }))

  it.scopedLive("converges against a Consul failing 30% of requests, then stays stable", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      for (let a = 0; a < 20; a++) {
        dc.marathon.putApp(`/app${a}`, { x: `${a}`, y: "y" })
        for (let t = 0; t < 3; t++) dc.marathon.setTask(`/app${a}`, { id: `app${a}.${t}`, host: `127.0.0.${1 + ((a + t) % 3)}`, ports: [a * 10 + t] }, false)
      }
      dc.consul.setFailureRate(0.3, 42)
      let passes = 0
      for (; passes < 10; passes++) {
        const report = yield* Effect.either(sync(dc, { purge: true }))
        if (report._tag === "Right" && report.right.failures.length === 0 &&
          report.right.registered + report.right.keysSet + report.right.deregistered + report.right.keysDeleted === 0) break
      }
      expect(passes).toBeLessThan(10)
      dc.consul.setFailureRate(0)
      dc.consul.resetCounters()
      yield* sync(dc, { purge: true })
      expect(dc.consul.writes).toBe(0)
      const registered = [...dc.consul.agents.values()].reduce((n, agent) => n + agent.services.size, 0)
      expect(registered).toBe(60)
      expect(dc.consul.kv.size).toBe(40)
    }))
})
