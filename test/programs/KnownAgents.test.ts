import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Layer, TestClock } from "effect"
import * as Http from "node:http"
import { decodeEvent, makeEventHandler } from "../../src/programs/Events.js"
import { LedgerLive } from "../../src/programs/Ledger.js"
import { makeTopology, TopologyLive } from "../../src/programs/Topology.js"
import { Consul, makeConsulMemory } from "../../src/services/Consul.js"
import { ConsulStore } from "../../src/services/ConsulStore.js"
import { HostResolverMemory, HostTable } from "../../src/services/HostResolver.js"
import { Marathon, makeMarathonMemory } from "../../src/services/Marathon.js"
import { MarathonStore } from "../../src/services/MarathonStore.js"
import { problemLines } from "../../src/programs/Sync.js"
import { makeDatacenter, syncPass } from "../support/Datacenter.js"
import type { Datacenter } from "../support/Datacenter.js"
import { serveDaemon, statusUpdate } from "../support/Daemon.js"
import { parsePrometheus } from "../support/Prometheus.js"

/**
 * consular talks, and sends its ACL token, only to the `--consul` host and the catalog's agents: a task host is
 * an agent when it is a node's address, name (or first label of the name) or resolves to a node's address.
 * Events and passes for any other host are skipped, said, counted, and leave nothing behind per host.
 */

const ours = (app: string) => ["consular-reg-id=consular", `consular-app-id=${app}`]
const token = "s3cr3t-acl-token"

interface Trapped {
  readonly method: string
  readonly url: string
  readonly token: string | undefined
}

/** A real listener where a careless consular would send its token: 127.0.0.5, on the datacenter's Consul port. */
const trap = (dc: Datacenter) =>
  Effect.acquireRelease(
    Effect.async<{ readonly seen: Array<Trapped>; readonly server: Http.Server }>((resume) => {
      const seen: Array<Trapped> = []
      const server = Http.createServer((request, response) => {
        const header = request.headers["x-consul-token"]
        seen.push({ method: request.method ?? "", url: request.url ?? "", token: Array.isArray(header) ? header[0] : header })
        response.writeHead(200, { "content-type": "application/json" }).end("{}")
      })
      server.listen(Number(dc.consulUrl.port), "127.0.0.5", () => resume(Effect.succeed({ seen, server })))
    }),
    ({ server }) =>
      Effect.async<void>((resume) => {
        server.closeAllConnections()
        server.close(() => resume(Effect.void))
      })
  )

const catalogReads = (store: ConsulStore) => store.log.filter((entry) => entry.operation === "catalog.nodes").length

const metric = (daemon: { readonly get: (path: string) => Effect.Effect<{ readonly text: string }> }, name: string, labels: Record<string, string>) =>
  Effect.map(daemon.get("/metrics"), (answer) => parsePrometheus(answer.text).value(name, labels))

describe("an event for a host that is no known agent", () => {
  it.scopedLive("gets no request and no token: a listener on 127.0.0.5 sees nothing; 2xx skipped, and counted", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter({ consulToken: token })
      dc.marathon.putApp("/web", { a: "1" })
      const listener = yield* trap(dc)
      const daemon = yield* serveDaemon(dc)
      const before = yield* metric(daemon, "consular_events_skipped_total", { reason: "unknown_host" })
      for (const state of ["TASK_RUNNING", "TASK_KILLED", "TASK_FAILED"]) {
        const answer = yield* daemon.post(statusUpdate({ taskId: `web.${state}`, taskStatus: state, appId: "/web", host: "127.0.0.5", ports: [1] }))
        expect(answer.status, answer.text).toBe(200)
        expect(answer.json).toMatchObject({ status: "ok", outcome: "skipped" })
      }
      expect(listener.seen).toEqual([])
      expect(before).toBe(0)
      expect(yield* metric(daemon, "consular_events_skipped_total", { reason: "unknown_host" })).toBe(3)
      // a known agent still works, with the token
      const known = yield* daemon.post(statusUpdate({ taskId: "web.2", taskStatus: "TASK_RUNNING", appId: "/web", host: "127.0.0.2", ports: [2] }))
      expect(known.json).toMatchObject({ outcome: "registered" })
      expect([...dc.consul.services("127.0.0.2").keys()]).toEqual(["web.2"])
    }))

  it.scopedLive("host \"unknown\" (Marathon without agent information) is skipped with a 2xx, not a 502", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      const daemon = yield* serveDaemon(dc)
      for (const state of ["TASK_RUNNING", "TASK_LOST"]) {
        const answer = yield* daemon.post(statusUpdate({ taskId: "web.1", taskStatus: state, appId: "/web", host: "unknown" }))
        expect(answer.status, answer.text).toBe(200)
        expect(answer.json).toMatchObject({ outcome: "skipped" })
      }
      expect(dc.hosts.lookups).toBeGreaterThan(0) // asked the resolver, which knows no such name
      expect(dc.consul.writes).toBe(0)
    }))

  it.scopedLive("with --fallback the service goes to the main agent, and leaves it with its task", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter({ consulToken: token })
      dc.marathon.putApp("/web")
      const listener = yield* trap(dc)
      const daemon = yield* serveDaemon(dc, { fallback: true })
      const up = yield* daemon.post(statusUpdate({ taskId: "web.1", taskStatus: "TASK_RUNNING", appId: "/web", host: "127.0.0.5", ports: [7] }))
      expect(up.json).toMatchObject({ outcome: "registered" })
      expect(Object.fromEntries(dc.consul.services("127.0.0.1"))).toEqual({
        "web.1": { ID: "web.1", Service: "web", Address: "127.0.0.5", Port: 7, Tags: ours("/web") }
      })
      const down = yield* daemon.post(statusUpdate({ taskId: "web.1", taskStatus: "TASK_KILLED", appId: "/web", host: "127.0.0.5" }))
      expect(down.json).toMatchObject({ outcome: "deregistered" })
      expect(dc.consul.services("127.0.0.1").size).toBe(0)
      expect(listener.seen).toEqual([])
    }))

  it.scopedLive("many distinct unknown hosts add no metrics series", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      const daemon = yield* serveDaemon(dc)
      const series = () => Effect.map(daemon.get("/metrics"), (answer) => parsePrometheus(answer.text).samples.filter((s) => s.name.startsWith("consular_")).length)
      // the bounded series every event has (by type and state) exist once a first event of each kind was seen
      for (const taskStatus of ["TASK_RUNNING", "TASK_KILLED"]) {
        yield* daemon.post(statusUpdate({ taskId: "warm.1", taskStatus, appId: "/web", host: "10.8.0.1" }))
      }
      const before = yield* series()
      yield* Effect.forEach(Array.from({ length: 300 }, (_, i) => i), (i) =>
        daemon.post(statusUpdate({ taskId: `t.${i}`, taskStatus: i % 2 === 0 ? "TASK_RUNNING" : "TASK_KILLED", appId: "/web", host: `10.9.${i >> 8}.${i & 255}` })), { concurrency: 8, discard: true })
      yield* Effect.forEach(Array.from({ length: 50 }, (_, i) => i), (i) =>
        daemon.post(statusUpdate({ taskId: `n.${i}`, taskStatus: "TASK_RUNNING", appId: "/web", host: `nowhere-${i}.example` })), { concurrency: 8, discard: true })
      expect(yield* series()).toBe(before)
      expect(yield* metric(daemon, "consular_events_skipped_total", { reason: "unknown_host" })).toBe(352)
    }))
})

describe("a task host that is an agent by another name", () => {
  it.scopedLive("its node's name, the first label of a fully qualified name, or a name resolving to a node's address", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.consul.agents.delete("127.0.0.2")
      dc.consul.addAgent("127.0.0.2", "slave-2")
      dc.hosts.set("web-host.example", ["192.0.2.7", "127.0.0.3"])
      dc.marathon.putApp("/web")
      const daemon = yield* serveDaemon(dc)
      const post = (taskId: string, host: string) =>
        daemon.post(statusUpdate({ taskId, taskStatus: "TASK_RUNNING", appId: "/web", host, ports: [1] }))
      expect((yield* post("web.name", "slave-2")).json).toMatchObject({ outcome: "registered" })
      expect((yield* post("web.fqdn", "slave-2.acme.org")).json).toMatchObject({ outcome: "registered" })
      expect((yield* post("web.dns", "web-host.example")).json).toMatchObject({ outcome: "registered" })
      expect([...dc.consul.services("127.0.0.2").keys()].sort()).toEqual(["web.fqdn", "web.name"])
      // the agent is reached at the node's address; the service keeps the host Marathon gave
      expect(dc.consul.services("127.0.0.2").get("web.fqdn")?.Address).toBe("slave-2.acme.org")
      expect(Object.fromEntries(dc.consul.services("127.0.0.3"))).toEqual({
        "web.dns": { ID: "web.dns", Service: "web", Address: "web-host.example", Port: 1, Tags: ours("/web") }
      })
      // the kills find them the same way
      for (const [id, host] of [["web.name", "slave-2"], ["web.fqdn", "slave-2.acme.org"], ["web.dns", "web-host.example"]] as const) {
        expect((yield* daemon.post(statusUpdate({ taskId: id, taskStatus: "TASK_KILLED", appId: "/web", host }))).json).toMatchObject({ outcome: "deregistered" })
      }
      expect(dc.consul.services("127.0.0.2").size + dc.consul.services("127.0.0.3").size).toBe(0)
    }))
})

describe("the catalog", () => {
  /** The handler over in-memory Consul and Marathon, so that time is the TestClock's. */
  const memory = () => {
    const consul = new ConsulStore("127.0.0.1")
    consul.addAgent("127.0.0.1", "main")
    consul.addAgent("127.0.0.2")
    const marathon = new MarathonStore()
    marathon.putApp("/web")
    const layer = Layer.mergeAll(
      Layer.succeed(Consul, makeConsulMemory(consul, { retries: 0 })),
      Layer.succeed(Marathon, makeMarathonMemory(marathon, { retries: 0 })),
      LedgerLive,
      TopologyLive(new URL("http://127.0.0.1:8500")),
      HostResolverMemory()
    )
    return { consul, marathon, layer }
  }
  const settings = { registrationId: "consular", consulUrl: new URL("http://127.0.0.1:8500"), fallback: false, fallbackTimeout: "1 second", maxEventBytes: 1 << 20 } as const
  const running = (taskId: string, host: string) =>
    Either.getOrThrow(decodeEvent(JSON.stringify(statusUpdate({ taskId, taskStatus: "TASK_RUNNING", appId: "/web", host, ports: [1] }))))

  it.effect("is read at start-up, and again for unknown hosts at most once a second; a node added meanwhile is found", () =>
    Effect.gen(function*() {
      const { consul, layer } = memory()
      yield* Effect.gen(function*() {
        const handler = yield* makeEventHandler(settings)
        expect(catalogReads(consul)).toBe(1) // at start-up
        for (let i = 0; i < 30; i++) expect(yield* handler.handle(running(`a.${i}`, `10.0.0.${i}`))).toBe("skipped")
        expect(catalogReads(consul)).toBe(1) // the start-up read is less than a second old
        consul.addAgent("127.0.0.4")
        expect(yield* handler.handle(running("b.1", "127.0.0.4"))).toBe("skipped")
        yield* TestClock.adjust("1 second")
        expect(yield* handler.handle(running("b.2", "127.0.0.4"))).toBe("registered") // re-read: the new node is known
        expect(catalogReads(consul)).toBe(2)
        for (let i = 0; i < 30; i++) yield* handler.handle(running(`c.${i}`, `10.0.1.${i}`))
        yield* TestClock.adjust("999 millis")
        for (let i = 0; i < 30; i++) yield* handler.handle(running(`d.${i}`, `10.0.2.${i}`))
        expect(catalogReads(consul)).toBe(2)
        yield* TestClock.adjust("1 millis")
        for (let i = 0; i < 30; i++) yield* handler.handle(running(`e.${i}`, `10.0.3.${i}`))
        expect(catalogReads(consul)).toBe(3)
        // known hosts never cost a catalog read
        yield* TestClock.adjust("10 seconds")
        for (let i = 0; i < 10; i++) yield* handler.handle(running(`f.${i}`, "127.0.0.2"))
        expect(catalogReads(consul)).toBe(3)
      }).pipe(Effect.provide(layer))
    }))

  it.effect("an empty catalog while Consul answers (a token without node:read) is an error, not a datacenter of no agents", () =>
    Effect.gen(function*() {
      const { consul, layer } = memory()
      // Consul's ACLs filter the catalog for such a token instead of refusing the request
      consul.catalogNodes = () => []
      yield* Effect.gen(function*() {
        const handler = yield* makeEventHandler(settings)
        yield* TestClock.adjust("1 second")
        const error = yield* Effect.flip(handler.handle(running("web.1", "127.0.0.2")))
        expect(error.message).toContain("node:read")
        expect(consul.services("127.0.0.2").size).toBe(0)
      }).pipe(Effect.provide(layer))
    }))

  it.scopedLive("an empty catalog fails the sync pass loudly: reported, tasks skipped as such, nothing purged", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.consul.catalogNodes = () => []
      dc.marathon.setTask("/web", { id: "web.2", host: "127.0.0.2", ports: [1] }, false)
      dc.consul.register("127.0.0.3", { ID: "gone.1", Name: "gone", Address: "127.0.0.3", Tags: ours("/gone") })
      const report = yield* syncPass(dc, { purge: true })
      const catalog = report.failures.find((failure) => failure.scope === "catalog")
      expect(catalog?.message).toContain("node:read")
      expect(report.skipped).toEqual([{ taskId: "web.2", appId: "/web", host: "127.0.0.2" }])
      expect(dc.consul.services("127.0.0.2").size).toBe(0)
      expect(dc.consul.services("127.0.0.3").has("gone.1")).toBe(true)
    }))
})

describe("the sync pass", () => {
  it.scopedLive("skips tasks on hosts that are no known agent, contacts none of them, and reports each with its host", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter({ consulToken: token })
      const listener = yield* trap(dc)
      dc.marathon.setTask("/web", { id: "web.5", host: "127.0.0.5", ports: [1] }, false)
      dc.marathon.setTask("/web", { id: "web.u", host: "unknown", ports: [1] }, false)
      dc.marathon.setTask("/web", { id: "web.2", host: "127.0.0.2", ports: [2] }, false)
      const report = yield* syncPass(dc, { purge: true })
      expect(listener.seen).toEqual([])
      expect([...report.skipped].sort((a, b) => a.taskId.localeCompare(b.taskId))).toEqual([
        { taskId: "web.5", appId: "/web", host: "127.0.0.5" },
        { taskId: "web.u", appId: "/web", host: "unknown" }
      ])
      expect(report.registered).toBe(1)
      expect(problemLines(report).join("\n")).toContain("skipped: task web.5 of /web: host 127.0.0.5 is no known Consul agent")
    }))

  it.scopedLive("with --fallback puts them on the main agent once, and a purging pass keeps them there", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      const listener = yield* trap(dc)
      dc.marathon.setTask("/web", { id: "web.5", host: "127.0.0.5", ports: [1] }, false)
      const first = yield* syncPass(dc, { fallback: true, purge: true })
      expect(first.skipped).toEqual([])
      expect(first.fallbackRegistered).toBe(1)
      expect([...dc.consul.services("127.0.0.1").keys()]).toEqual(["web.5"])
      dc.consul.resetCounters()
      const second = yield* syncPass(dc, { fallback: true, purge: true })
      expect(dc.consul.writes).toBe(0)
      expect(second.fallbackRegistered + second.registered + second.deregistered).toBe(0)
      expect(listener.seen).toEqual([])
    }))
})

describe("clash isolation on the event path (no pass has run)", () => {
  it.scopedLive("RUNNING events of two apps sharing a Consul name are skipped: neither registers, neither's labels touch the other's", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.marathon.putApp("/a/b", { owner: "ab" })
      dc.marathon.putApp("/a-b", { owner: "a-b" })
      dc.marathon.putApp("/ok", { x: "1" })
      dc.consul.put("consular/a-b/owner", "\"before\"")
      const daemon = yield* serveDaemon(dc, { syncInterval: 0 })
      for (const appId of ["/a/b", "/a-b"]) {
        const answer = yield* daemon.post(statusUpdate({ taskId: `${appId.slice(1).replace("/", "_")}.1`, taskStatus: "TASK_RUNNING", appId, host: "127.0.0.2", ports: [1] }))
        expect(answer.status, answer.text).toBe(200)
        expect(answer.json).toMatchObject({ outcome: "skipped" })
      }
      expect(dc.consul.services("127.0.0.2").size).toBe(0)
      expect(Object.fromEntries(dc.consul.kv)).toEqual({ "consular/a-b/owner": "\"before\"" })
      expect(yield* metric(daemon, "consular_events_skipped_total", { reason: "name_clash" })).toBe(2)
      const ok = yield* daemon.post(statusUpdate({ taskId: "ok.1", taskStatus: "TASK_RUNNING", appId: "/ok", host: "127.0.0.2", ports: [1] }))
      expect(ok.json).toMatchObject({ outcome: "registered" })
    }))

  it.scopedLive("an app new since the start-up read whose name is a known app's is a clash; two new ones: the second is", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.marathon.putApp("/x/y", { owner: "x/y" })
      const daemon = yield* serveDaemon(dc, { syncInterval: 0 })
      dc.marathon.putApp("/x-y", { owner: "x-y" })
      const clash = yield* daemon.post(statusUpdate({ taskId: "xy.1", taskStatus: "TASK_RUNNING", appId: "/x-y", host: "127.0.0.2", ports: [1] }))
      expect(clash.json).toMatchObject({ outcome: "skipped" })
      const known = yield* daemon.post(statusUpdate({ taskId: "x.y.1", taskStatus: "TASK_RUNNING", appId: "/x/y", host: "127.0.0.2", ports: [1] }))
      expect(known.json).toMatchObject({ outcome: "registered" })
      expect(Object.fromEntries(dc.consul.kv)).toEqual({ "consular/x-y/owner": "\"x/y\"" })

      dc.marathon.putApp("/p/q", { owner: "p/q" })
      dc.marathon.putApp("/p-q", { owner: "p-q" })
      const first = yield* daemon.post(statusUpdate({ taskId: "pq.1", taskStatus: "TASK_RUNNING", appId: "/p/q", host: "127.0.0.2", ports: [1] }))
      expect(first.json).toMatchObject({ outcome: "registered" })
      const second = yield* daemon.post(statusUpdate({ taskId: "p-q.1", taskStatus: "TASK_RUNNING", appId: "/p-q", host: "127.0.0.2", ports: [1] }))
      expect(second.json).toMatchObject({ outcome: "skipped" })
      expect(dc.consul.kv.get("consular/p-q/owner")).toBe("\"p/q\"")
      expect(dc.consul.services("127.0.0.2").has("p-q.1")).toBe(false)
    }))

  it.scopedLive("an app Marathon does not have claims no name: a later app of that name is not a clash", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      const daemon = yield* serveDaemon(dc, { syncInterval: 0 })
      const ghost = yield* daemon.post(statusUpdate({ taskId: "g.1", taskStatus: "TASK_RUNNING", appId: "/g/h", host: "127.0.0.2", ports: [1] }))
      expect(ghost.json).toMatchObject({ outcome: "registered" })
      dc.marathon.putApp("/g-h", { owner: "g-h" })
      const real = yield* daemon.post(statusUpdate({ taskId: "gh.1", taskStatus: "TASK_RUNNING", appId: "/g-h", host: "127.0.0.2", ports: [1] }))
      expect(real.json).toMatchObject({ outcome: "registered" })
      expect(dc.consul.kv.get("consular/g-h/owner")).toBe("\"g-h\"")
    }))
})

describe("per-host bookkeeping is bounded", () => {
  it.effect("DNS answers are remembered for at most 256 hosts, oldest forgotten first", () =>
    Effect.gen(function*() {
      const topology = makeTopology(new URL("http://127.0.0.1:8500"))
      for (let i = 0; i < 10_000; i++) yield* topology.rememberAddresses(`host-${i}.example`, [], 0)
      expect(yield* topology.cachedAddresses("host-0.example", 1, 60_000)).toBeUndefined()
      expect(yield* topology.cachedAddresses("host-9743.example", 1, 60_000)).toBeUndefined()
      expect(yield* topology.cachedAddresses("host-9744.example", 1, 60_000)).toEqual([])
      expect(yield* topology.cachedAddresses("host-9999.example", 1, 60_000)).toEqual([])
    }))

  it.effect("a name is looked up again once its answer is a minute old", () =>
    Effect.gen(function*() {
      const hosts = new HostTable().set("late.example", [])
      const consul = new ConsulStore("127.0.0.1")
      consul.addAgent("127.0.0.1", "main")
      const layer = Layer.mergeAll(
        Layer.succeed(Consul, makeConsulMemory(consul, { retries: 0 })),
        Layer.succeed(Marathon, makeMarathonMemory(new MarathonStore(), { retries: 0 })),
        LedgerLive,
        TopologyLive(new URL("http://127.0.0.1:8500")),
        HostResolverMemory(hosts)
      )
      const event = Either.getOrThrow(decodeEvent(JSON.stringify(statusUpdate({ taskId: "l.1", taskStatus: "TASK_RUNNING", appId: "/l", host: "late.example" }))))
      yield* Effect.gen(function*() {
        const handler = yield* makeEventHandler({ registrationId: "consular", consulUrl: new URL("http://127.0.0.1:8500"), fallback: false, fallbackTimeout: "1 second", maxEventBytes: 1000 })
        expect(yield* handler.handle(event)).toBe("skipped")
        expect(yield* handler.handle(event)).toBe("skipped")
        expect(hosts.lookups).toBe(1)
        // the name now points at the main agent's address
        hosts.set("late.example", ["127.0.0.1"])
        yield* TestClock.adjust("61 seconds")
        expect(yield* handler.handle(event)).toBe("registered")
        expect(hosts.lookups).toBe(2)
      }).pipe(Effect.provide(layer))
    }))
})
