import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { makeDatacenter } from "../support/Datacenter.js"
import type { Datacenter } from "../support/Datacenter.js"
import { serveDaemon, statusUpdate } from "../support/Daemon.js"
import { parsePrometheus } from "../support/Prometheus.js"
import { eventually } from "../support/Process.js"

/**
 * `POST /sync` and `GET /diff` (issue 14) on the daemon's app, against the embedded Marathon (which counts its
 * `/v2/apps` reads: one per pass) and the embedded Consul (which counts writes).
 */

interface Reply {
  readonly status: number
  readonly json: any
}

/** One request, bounded by `timeoutMs`; the body parsed as JSON. */
const request = (base: string, method: "GET" | "POST", path: string, headers: Record<string, string> = {}, body?: string, timeoutMs = 15_000) =>
  Effect.promise(async (): Promise<Reply> => {
    const response = await fetch(`${base}${path}`, { method, headers, ...(body === undefined ? {} : { body }), signal: AbortSignal.timeout(timeoutMs) })
    return { status: response.status, json: await response.json() }
  })

const appsReads = (dc: Datacenter) => dc.marathon.requestLog.filter((operation) => operation === "apps").length

/** The daemon's app, and Marathon's `/v2/apps` reads from then on (the event handler reads it once at start-up). */
const serve = (dc: Datacenter, overrides: Parameters<typeof serveDaemon>[1] = {}) =>
  Effect.map(serveDaemon(dc, overrides), (daemon) => {
    const baseline = appsReads(dc)
    return { ...daemon, passes: () => appsReads(dc) - baseline }
  })

const seed = (dc: Datacenter) => {
  dc.marathon.putApp("/web", { domain: "example.org" })
  dc.marathon.setTask("/web", { id: "web.1", host: "127.0.0.2", ports: [31001] }, false)
}

describe("POST /sync", () => {
  it.scopedLive("runs a pass now and answers its report", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      seed(dc)
      const daemon = yield* serve(dc)
      const answer = yield* request(daemon.base, "POST", "/sync")
      expect(answer.status).toBe(200)
      expect(answer.json).toMatchObject({
        outcome: "complete", registered: 1, deregistered: 0, keysSet: 1, keysDeleted: 0, failures: [], skipped: [], purgeRefused: null, problems: []
      })
      expect(daemon.passes()).toBe(1)
      expect(dc.consul.services("127.0.0.2").has("web.1")).toBe(true)
      expect(dc.consul.kv.get("consular/web/domain")).toBe("\"example.org\"")
      // a second one finds nothing to do
      expect((yield* request(daemon.base, "POST", "/sync")).json).toMatchObject({ outcome: "complete", registered: 0, keysSet: 0 })
    }))

  it.scopedLive("Marathon unreadable: 502 naming the upstream, nothing written", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      seed(dc)
      const daemon = yield* serve(dc)
      dc.marathon.fault = { _tag: "Status", status: 500 }
      dc.consul.resetCounters()
      for (const [method, path] of [["POST", "/sync"], ["GET", "/diff"]] as const) {
        const answer = yield* request(daemon.base, method, path)
        expect(answer.status).toBe(502)
        expect(answer.json).toMatchObject({ error: "marathon failed", upstream: "marathon" })
        expect(answer.json.detail).toContain("nothing was changed")
      }
      expect(dc.consul.writes).toBe(0)
    }))

  it.scopedLive("during a pass that already read Marathon, requests wait for one next pass together (passes counted by Marathon's /v2/apps reads)", () =>
    Effect.gen(function*() {
      // each pass reads the agent of 127.0.0.3, which does not answer: the pass holds for the 3 s timeout
      const dc = yield* makeDatacenter({ timeout: 3_000 })
      seed(dc)
      dc.marathon.setTask("/web", { id: "web.2", host: "127.0.0.3", ports: [31002] }, false)
      dc.consul.setFault("127.0.0.3", { _tag: "Hang" })
      const daemon = yield* serve(dc)
      const first = yield* Effect.fork(request(daemon.base, "POST", "/sync"))
      yield* eventually("the first pass read Marathon", () => daemon.passes() === 1, 5_000)
      const joined = yield* Effect.fork(Effect.all([1, 2, 3].map(() => request(daemon.base, "POST", "/sync")), { concurrency: "unbounded" }))
      const firstAnswer = yield* Fiber.join(first)
      const answers = yield* Fiber.join(joined)
      expect(firstAnswer.status).toBe(200)
      expect(answers.map((answer) => answer.status)).toEqual([200, 200, 200])
      // two passes in all: the three requests shared the second, and got its report
      expect(daemon.passes()).toBe(2)
      expect(new Set(answers.map((answer) => answer.json.startedAt)).size).toBe(1)
      expect(answers[0]!.json.startedAt).not.toBe(firstAnswer.json.startedAt)
      expect(firstAnswer.json).toMatchObject({ outcome: "incomplete", registered: 1 })
      expect(firstAnswer.json.failures[0]).toMatchObject({ scope: "agent 127.0.0.3" })
    }), 30_000)
})

describe("GET /diff", () => {
  it.scopedLive("the plan a pass would apply now, with agents, addresses and ports, the keys of deleted trees listed; nothing written", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      seed(dc)
      dc.marathon.putApp("/old", { a: "1", b: "2" })
      dc.marathon.setTask("/old", { id: "old.1", host: "127.0.0.2", ports: [31009] }, false)
      const daemon = yield* serve(dc, { purge: true })
      expect((yield* request(daemon.base, "POST", "/sync")).json.outcome).toBe("complete")
      dc.marathon.removeApp("/old")
      dc.marathon.setTask("/web", { id: "web.2", host: "127.0.0.3", ports: [31002] }, false)
      dc.marathon.setLabels("/web", { domain: "example.com" })
      dc.consul.resetCounters()

      const answer = yield* request(daemon.base, "GET", "/diff")
      expect(answer.status).toBe(200)
      expect(answer.json).toMatchObject({
        register: [{ agent: "127.0.0.3", id: "web.2", name: "web", address: "127.0.0.3", port: 31002, fallback: false }],
        deregister: [{ agent: "127.0.0.2", id: "old.1", why: "dead" }],
        kvSet: [{ key: "consular/web/domain", value: "\"example.com\"" }],
        kvDelete: ["consular/old/a", "consular/old/b"],
        purgeRefused: null
      })
      expect(daemon.passes()).toBe(2)
      // read everything, wrote nothing
      expect(dc.consul.requests).toBeGreaterThan(0)
      expect(dc.consul.writes).toBe(0)
      expect(dc.consul.services("127.0.0.2").has("old.1")).toBe(true)
      expect(dc.consul.services("127.0.0.3").has("web.2")).toBe(false)
    }))
})

describe("the secret (--events-secret-file) on /sync, /diff and /events", () => {
  it.scopedLive("401 without it or with a wrong one, before anything is read; ?secret= and Authorization: Bearer both accepted", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      seed(dc)
      const daemon = yield* serve(dc, { eventsSecret: "s3cret" })
      const routes = [["POST", "/sync"], ["GET", "/diff"]] as const
      for (const [method, path] of routes) {
        for (const [query, headers] of [["", {}], ["?secret=wrong", {}], ["", { authorization: "Bearer wrong" }], ["", { authorization: "Basic s3cret" }]] as const) {
          const refused = yield* request(daemon.base, method, `${path}${query}`, headers)
          expect(refused.status, `${method} ${path}${query} ${JSON.stringify(headers)}`).toBe(401)
          expect(refused.json).toEqual({ error: "unauthorized", detail: "missing or wrong secret" })
        }
      }
      expect(daemon.passes()).toBe(0)
      expect(dc.consul.writes).toBe(0)
      for (const [method, path] of routes) {
        expect((yield* request(daemon.base, method, `${path}?secret=s3cret`)).status).toBe(200)
        expect((yield* request(daemon.base, method, path, { authorization: "Bearer s3cret" })).status).toBe(200)
      }
      // /events takes the Bearer form too
      const event = JSON.stringify(statusUpdate({ taskId: "web.3", taskStatus: "TASK_RUNNING", appId: "/web", host: "127.0.0.2", ports: [31003] }))
      expect((yield* request(daemon.base, "POST", "/events", { "content-type": "application/json" }, event)).status).toBe(401)
      expect((yield* request(daemon.base, "POST", "/events", { "content-type": "application/json", authorization: "Bearer s3cret" }, event)).status).toBe(200)
      expect(dc.consul.services("127.0.0.2").has("web.3")).toBe(true)
    }))
  it.scopedLive("every spelling the router serves a secured route by (trailing slash, doubled slash, another case) needs the secret too", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      seed(dc)
      const daemon = yield* serve(dc, { eventsSecret: "s3cret" })
      const event = JSON.stringify(statusUpdate({ taskId: "web.3", taskStatus: "TASK_RUNNING", appId: "/web", host: "127.0.0.2", ports: [31003] }))
      for (const path of ["/events/", "//events", "/EVENTS", "/Events?registration=consular"]) {
        const refused = yield* request(daemon.base, "POST", path, { "content-type": "application/json" }, event)
        expect(refused.status, path).toBe(401)
      }
      for (const [method, path] of [["POST", "/sync/"], ["GET", "/DIFF"], ["GET", "//diff"]] as const) {
        expect((yield* request(daemon.base, method, path)).status, `${method} ${path}`).toBe(401)
      }
      expect(daemon.passes()).toBe(0)
      expect(dc.consul.writes).toBe(0)
      // the router does serve them: with the secret, the event is applied
      expect((yield* request(daemon.base, "POST", "/Events/", { "content-type": "application/json", authorization: "Bearer s3cret" }, event)).status).toBe(200)
      expect(dc.consul.services("127.0.0.2").has("web.3")).toBe(true)
    }))
})

describe("--max-purge in the daemon", () => {
  it.scopedLive("a purge over the limit is skipped whole and counted in consular_purge_refused_total; a higher limit lets it through", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      seed(dc)
      dc.marathon.putApp("/old", { a: "1", b: "2" })
      dc.marathon.setTask("/old", { id: "old.1", host: "127.0.0.2", ports: [31009] }, false)
      const guarded = yield* serve(dc, { purge: true, maxPurge: 1 })
      expect((yield* request(guarded.base, "POST", "/sync")).json.outcome).toBe("complete")
      dc.marathon.removeApp("/old")
      dc.marathon.setTask("/web", { id: "web.2", host: "127.0.0.2", ports: [31002] }, false)

      const diff = yield* request(guarded.base, "GET", "/diff")
      expect(diff.json).toMatchObject({ deregister: [], kvDelete: [], purgeRefused: { services: 1, keys: 2, limit: 1, apps: ["old"] } })
      const refused = yield* request(guarded.base, "POST", "/sync")
      expect(refused.json).toMatchObject({ outcome: "incomplete", registered: 1, deregistered: 0, keysDeleted: 0, purgeRefused: { services: 1, keys: 2, limit: 1, apps: ["old"] } })
      expect(refused.json.problems).toEqual(["purge refused: it would deregister 1 services and delete 2 keys (apps: old), over --max-purge 1; nothing was purged"])
      expect(dc.consul.services("127.0.0.2").has("web.2")).toBe(true)
      expect(dc.consul.services("127.0.0.2").has("old.1")).toBe(true)
      expect(dc.consul.kv.get("consular/old/a")).toBe("\"1\"")
      const metrics = parsePrometheus((yield* Effect.promise(() => fetch(`${guarded.base}/metrics`).then((response) => response.text()))))
      expect(metrics.value("consular_purge_refused_total")).toBe(1)

      const allowed = yield* serve(dc, { purge: true, maxPurge: 2 })
      expect((yield* request(allowed.base, "POST", "/sync")).json).toMatchObject({ outcome: "complete", deregistered: 1, keysDeleted: 1, purgeRefused: null })
      expect(dc.consul.services("127.0.0.2").has("old.1")).toBe(false)
      expect([...dc.consul.kv.keys()].filter((key) => key.startsWith("consular/old/"))).toEqual([])
      const after = parsePrometheus((yield* Effect.promise(() => fetch(`${allowed.base}/metrics`).then((response) => response.text()))))
      expect(after.value("consular_purge_refused_total")).toBe(0)
    }))
})
