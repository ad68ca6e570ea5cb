import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Http from "node:http"
import { LoggedLines, LoggerMemory } from "../../src/services/Logger.js"
import { makeDatacenter } from "../support/Datacenter.js"
import { serveDaemon, statusUpdate } from "../support/Daemon.js"
import { parsePrometheus } from "../support/Prometheus.js"

/**
 * The daemon's listener answers `POST /events` spelled exactly itself, past the platform's router; any other
 * spelling the router serves (here a trailing slash) goes through the platform. Both must answer byte for byte
 * alike: status, headers (the connection closed after a 413), body, logs and metrics.
 */

interface RawAnswer {
  readonly status: number
  readonly headers: Readonly<Record<string, string | Array<string> | undefined>>
  readonly body: string
}

/** One request on its own connection, every header of the answer kept (fetch hides `connection`). */
const rawPost = (base: string, path: string, body: string, headers: Record<string, string> = {}): Effect.Effect<RawAnswer> =>
  Effect.async<RawAnswer>((resume) => {
    const request = Http.request(`${base}${path}`, { method: "POST", agent: false, headers: { "content-type": "application/json", ...headers } }, (response) => {
      const chunks: Array<Buffer> = []
      response.on("data", (chunk: Buffer) => chunks.push(chunk))
      response.on("end", () => {
        const { date: _date, ...rest } = response.headers
        resume(Effect.succeed({ status: response.statusCode ?? 0, headers: rest, body: Buffer.concat(chunks).toString("utf8") }))
      })
    })
    // a 413 may close the connection before the whole body is written
    request.on("error", (error) => resume(Effect.die(error)))
    request.end(body)
    return Effect.sync(() => request.destroy())
  }).pipe(Effect.timeout("10 seconds"), Effect.orDie)

/** The same request to the direct path and to the router: the answers must be equal. */
const bothPaths = (base: string, query: string, body: string, headers: Record<string, string> = {}) =>
  Effect.gen(function*() {
    const direct = yield* rawPost(base, `/events${query}`, body, headers)
    const routed = yield* rawPost(base, `/events/${query}`, body, headers)
    expect(direct).toEqual(routed)
    return direct
  })

const running = (taskId: string) => JSON.stringify(statusUpdate({ taskId, taskStatus: "TASK_RUNNING", appId: "/web", host: "127.0.0.2", ports: [31001] }))

describe("POST /events straight from the daemon's listener answers as the router does", () => {
  it.scopedLive("200, 400, 413 (connection closed), 502: same status, headers, body; logged and counted alike", () =>
    Effect.gen(function*() {
      const lines = yield* LoggedLines
      const dc = yield* makeDatacenter({ timeout: 200 })
      dc.marathon.putApp("/web", { a: "1" })
      const daemon = yield* serveDaemon(dc, { maxEventBytes: 512 })

      const ok = yield* bothPaths(daemon.base, "", JSON.stringify({ eventType: "deployment_success" }))
      expect([ok.status, ok.headers["content-type"], JSON.parse(ok.body)]).toEqual([200, "application/json", { status: "ok", outcome: "ignored" }])

      const refusedBefore = lines.filter((line) => line.includes("event refused")).length
      const invalid = yield* bothPaths(daemon.base, "", "{\"eventType\":")
      expect(invalid.status).toBe(400)
      expect(JSON.parse(invalid.body)).toMatchObject({ error: "invalid JSON" })
      const badField = yield* bothPaths(daemon.base, "?registration=consular", JSON.stringify({ ...JSON.parse(running("web.1")), taskStatus: 7 }))
      expect([badField.status, JSON.parse(badField.body).error]).toEqual([400, "invalid status_update_event"])
      expect(JSON.parse(badField.body).detail).toContain("taskStatus")
      expect(lines.filter((line) => line.includes("event refused")).length - refusedBefore).toBe(4)

      const tooLarge = yield* bothPaths(daemon.base, "", JSON.stringify({ eventType: "deployment_success", padding: "x".repeat(600) }))
      expect([tooLarge.status, tooLarge.headers["connection"]]).toEqual([413, "close"])
      expect(JSON.parse(tooLarge.body)).toMatchObject({ error: "payload too large" })

      dc.marathon.fault = { _tag: "Status", status: 500 }
      const upstream = yield* bothPaths(daemon.base, "", running("web.2"))
      dc.marathon.fault = undefined
      expect([upstream.status, JSON.parse(upstream.body).upstream]).toEqual([502, "marathon"])
      expect(lines.filter((line) => line.includes("event not applied: upstream failed")).length).toBe(2)
      expect(dc.consul.services("127.0.0.2").has("web.2")).toBe(false)

      const applied = yield* rawPost(daemon.base, "/events", running("web.3"))
      expect([applied.status, JSON.parse(applied.body)]).toEqual([200, { status: "ok", outcome: "registered" }])
      expect(dc.consul.services("127.0.0.2").has("web.3")).toBe(true)

      const metrics = parsePrometheus((yield* daemon.get("/metrics")).text)
      expect(metrics.value("consular_events_total", { event_type: "deployment_success", task_state: "" })).toBe(2)
      // the two 502s and the one applied
      expect(metrics.value("consular_events_total", { event_type: "status_update_event", task_state: "TASK_RUNNING" })).toBe(3)
    }).pipe(Effect.provide(LoggerMemory("json"))))

  it.scopedLive("the secret: 401 on both paths without it, the same answer; the direct path applies the event with it", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.marathon.putApp("/web", { a: "1" })
      const daemon = yield* serveDaemon(dc, { eventsSecret: "s3cret" })
      for (const [query, headers] of [["", {}], ["?secret=wrong", {}], ["", { authorization: "Bearer wrong" }]] as const) {
        const refused = yield* bothPaths(daemon.base, query, running("web.1"), headers)
        expect([refused.status, JSON.parse(refused.body)]).toEqual([401, { error: "unauthorized", detail: "missing or wrong secret" }])
      }
      expect(dc.consul.writes).toBe(0)
      const applied = yield* rawPost(daemon.base, "/events?secret=s3cret", running("web.1"))
      expect(applied.status).toBe(200)
      expect(dc.consul.services("127.0.0.2").has("web.1")).toBe(true)
    }))
})
