import { describe, expect, it, layer } from "@effect/vitest"
import { Effect, Either, FastCheck as fc, Layer, Logger, LogLevel, Schema } from "effect"
import { Host, isTerminal, KnownEventType, StatusUpdateEvent, TaskState } from "../../src/domain/MarathonApi.js"
import { makeDatacenter } from "../support/Datacenter.js"
import { sendEvent, serveDaemon, statusUpdate, streamEvent, TestDaemon, TestDaemonLive } from "../support/Daemon.js"
import type { Answer } from "../support/Daemon.js"

/**
 * POST /events with input consular cannot act on, through the daemon's real HTTP server: each gets a 4xx with a
 * JSON object body naming the problem, reaches neither Consul nor Marathon, and the daemon keeps serving.
 */

const MiB = 1024 * 1024

const ours = (app: string) => ["consular-reg-id=consular", `consular-app-id=${app}`]

/** A complete, valid RUNNING event: the one input below that must write. */
const running = (taskId: string, host = "127.0.0.2") =>
  statusUpdate({ taskId, taskStatus: "TASK_RUNNING", appId: "/web", host, ports: [31000] })

/** The same event without one field, or with that field replaced. */
const without = (field: string): Record<string, unknown> =>
  Object.fromEntries(Object.entries(running("bad.1")).filter(([key]) => key !== field))
const withField = (field: string, value: unknown): Record<string, unknown> => ({ ...running("bad.1"), [field]: value })

interface BadCase {
  readonly name: string
  readonly body: string
  /** what the `error` or `detail` must mention */
  readonly names: RegExp
}

const json = (value: unknown) => JSON.stringify(value)
const wrongTypes: ReadonlyArray<readonly [string, unknown]> = [
  ["a number", 42],
  ["null", null],
  ["a boolean", true],
  ["an array", []],
  ["an object", {}]
]

const badCases: ReadonlyArray<BadCase> = [
  { name: "invalid JSON: truncated object", body: "{\"eventType\": \"status_update_event\",", names: /JSON/ },
  { name: "invalid JSON: plain text", body: "not json", names: /JSON/ },
  { name: "invalid JSON: single quotes", body: "{'eventType': 'status_update_event'}", names: /JSON/ },
  { name: "invalid JSON: trailing comma", body: json(running("bad.1")).replace(/}$/, ",}"), names: /JSON/ },
  { name: "invalid JSON: trailing garbage", body: `${json(running("bad.1"))} x`, names: /JSON/ },
  { name: "invalid JSON: NaN", body: json(running("bad.1")).replace("[31000]", "[NaN]"), names: /JSON/ },
  { name: "empty body", body: "", names: /empty/ },
  { name: "whitespace only", body: " \n\t ", names: /empty/ },
  { name: "a JSON array", body: "[]", names: /array/ },
  { name: "a JSON array holding a valid event", body: json([running("bad.1")]), names: /array/ },
  { name: "a JSON string", body: json("status_update_event"), names: /string/ },
  { name: "a JSON number", body: "42", names: /number/ },
  { name: "a negative fractional number", body: "-1.5e3", names: /number/ },
  { name: "JSON null", body: "null", names: /null/ },
  { name: "a JSON boolean", body: "true", names: /boolean/ },
  { name: "an empty object", body: "{}", names: /eventType/ },
  { name: "eventType missing", body: json(without("eventType")), names: /eventType/ },
  ...wrongTypes.map(([kind, value]) => ({ name: `eventType is ${kind}`, body: json(withField("eventType", value)), names: /eventType/ })),
  { name: "an unknown eventType", body: json(withField("eventType", "no_such_event")), names: /no_such_event/ },
  ...["taskStatus", "taskId", "appId", "host"].flatMap((field) => [
    { name: `status_update_event without ${field}`, body: json(without(field)), names: new RegExp(field) },
    ...wrongTypes.map(([kind, value]) => ({ name: `${field} is ${kind}`, body: json(withField(field, value)), names: new RegExp(field) }))
  ]),
  ...["TASK_BOGUS", "task_running", "RUNNING", "", "TASK_RUNNING "].map((status) => ({
    name: `unknown taskStatus ${JSON.stringify(status)}`,
    body: json(withField("taskStatus", status)),
    names: /taskStatus/
  })),
  ...[["a string", "31000"], ["an array of strings", ["31000"]], ["a negative port", [-1]], ["a port over 65535", [65536]],
    ["a fractional port", [1.5]], ["an array with null", [null]], ["an object", { 0: 31000 }], ["null", null], ["nested arrays", [[31000]]]]
    .map(([kind, value]) => ({ name: `ports is ${String(kind)}`, body: json(withField("ports", value)), names: /ports/ })),
  { name: "a port of 1e999 (Infinity)", body: json(running("bad.1")).replace("[31000]", "[1e999]"), names: /ports/ },
  ...["web", "", "grp/web", "/", "//web", "/grp//web", "/we b"].map((appId) => ({
    name: `appId ${JSON.stringify(appId)}`,
    body: json(withField("appId", appId)),
    names: /appId/
  })),
  ...["", "not a host", "-bad", "a..b", "http://127.0.0.2", "127.0.0.2:8500", "node.1", "0x7f.1", "127.0.0.256", " 127.0.0.2", "127.0.0.2/x"]
    .map((host) => ({ name: `host ${JSON.stringify(host)}`, body: json(withField("host", host)), names: /host/ })),
  ...["", "a b", "a/b"].map((taskId) => ({ name: `taskId ${JSON.stringify(taskId)}`, body: json(withField("taskId", taskId)), names: /taskId/ }))
]

/** A refusal: a 4xx whose body is a JSON object with a string `error` and a string `detail`. */
const expectRefusal = (answer: Answer, status = 400) => {
  expect(answer.status).toBe(status)
  expect(answer.contentType).toContain("application/json")
  expect(answer.json).toBeTypeOf("object")
  expect(answer.json).not.toBeNull()
  expect(answer.json).toMatchObject({ error: expect.any(String), detail: expect.any(String) })
}

const problemOf = (answer: Answer): string =>
  typeof answer.json === "object" && answer.json !== null && "error" in answer.json && "detail" in answer.json
    ? `${String(answer.json.error)}: ${String(answer.json.detail)}`
    : answer.text

/** After any refusal the daemon still applies a valid event. */
const expectStillServing = (taskId: string) =>
  Effect.gen(function*() {
    const { dc, daemon } = yield* TestDaemon
    const answer = yield* daemon.post(running(taskId))
    expect(answer.status, answer.text).toBe(200)
    expect(dc.consul.services("127.0.0.2").get(taskId)).toEqual({
      ID: taskId, Service: "web", Address: "127.0.0.2", Port: 31000, Tags: ours("/web")
    })
  })

layer(TestDaemonLive(), { excludeTestServices: true })("malformed or unusual events: a JSON 4xx for what cannot be applied, nothing touched, the daemon serves on", (it) => {
  badCases.forEach((bad, i) => {
    it.effect(bad.name, () =>
      Effect.gen(function*() {
        const { dc, daemon } = yield* TestDaemon
        dc.consul.resetCounters()
        const marathonRequests = dc.marathon.requests
        const answer = yield* sendEvent(daemon.base, bad.body, { "content-type": "application/json" })
        expectRefusal(answer)
        expect(problemOf(answer)).toMatch(bad.names)
        expect(dc.consul.writes).toBe(0)
        expect(dc.consul.requests).toBe(0)
        expect(dc.marathon.requests).toBe(marathonRequests)
        yield* expectStillServing(`after-bad.${i}`)
      }))
  })

  it.effect("a value nested thousands deep in a field is refused with a 400, not a crash", () =>
    Effect.gen(function*() {
      const { dc, daemon } = yield* TestDaemon
      const depth = 50_000
      const deepArray = "[".repeat(depth) + "]".repeat(depth)
      const deepObject = "{\"a\":".repeat(depth) + "1" + "}".repeat(depth)
      for (const [field, nested] of [["ports", deepArray], ["taskId", deepObject], ["host", deepArray], ["version", deepObject]] as const) {
        dc.consul.resetCounters()
        const body = json(withField(field, 0)).replace(`"${field}":0`, `"${field}":${nested}`)
        const answer = yield* sendEvent(daemon.base, body, { "content-type": "application/json" })
        expectRefusal(answer)
        expect(problemOf(answer)).toMatch(new RegExp(field))
        expect(dc.consul.writes).toBe(0)
      }
      yield* expectStillServing("after-deep")
    }))

  it.effect("a huge wrongly typed value is named, not echoed back whole", () =>
    Effect.gen(function*() {
      const { dc, daemon } = yield* TestDaemon
      dc.consul.resetCounters()
      const huge = Array.from({ length: 100_000 }, (_, i) => i)
      const answer = yield* sendEvent(daemon.base, json(withField("taskId", huge)), { "content-type": "application/json" })
      expectRefusal(answer)
      expect(problemOf(answer)).toMatch(/taskId/)
      expect(answer.text.length).toBeLessThan(2_000)
      expect(dc.consul.writes).toBe(0)
    }))

  it.effect("a valid event with a huge ports list (150,000 ports, under 1 MiB) is applied, not a crash", () =>
    Effect.gen(function*() {
      const { dc, daemon } = yield* TestDaemon
      const ports = Array.from({ length: 150_000 }, (_, i) => 40_000 + (i % 20_000))
      const body = json({ ...running("many-ports.1"), ports })
      expect(body.length).toBeLessThan(MiB)
      const answer = yield* sendEvent(daemon.base, body, { "content-type": "application/json" })
      expect(answer.status, answer.text).toBe(200)
      expect(dc.consul.services("127.0.0.2").get("many-ports.1")?.Port).toBe(40_000)
    }))

  for (const [name, headers] of [
    ["text/plain", { "content-type": "text/plain" }],
    ["no Content-Type at all", {}],
    ["application/x-www-form-urlencoded", { "content-type": "application/x-www-form-urlencoded" }],
    ["multipart/form-data", { "content-type": "multipart/form-data; boundary=xyz" }],
    ["application/octet-stream", { "content-type": "application/octet-stream" }],
    ["application/json with a charset", { "content-type": "application/json; charset=utf-8" }]
  ] as const) {
    it.effect(`a valid event sent as ${name} is applied`, () =>
      Effect.gen(function*() {
        const { dc, daemon } = yield* TestDaemon
        const taskId = `ctype.${name.replace(/\W+/g, "-")}`
        const answer = yield* sendEvent(daemon.base, json(running(taskId, "127.0.0.3")), headers)
        expect(answer.status, answer.text).toBe(200)
        expect(answer.json).toMatchObject({ status: "ok", outcome: "registered" })
        expect([...dc.consul.services("127.0.0.3").keys()]).toContain(taskId)
      }))
  }

  it.effect("a wrong Content-Type does not make invalid JSON acceptable", () =>
    Effect.gen(function*() {
      const { dc, daemon } = yield* TestDaemon
      dc.consul.resetCounters()
      const answer = yield* sendEvent(daemon.base, "taskId=web.1&taskStatus=TASK_RUNNING", { "content-type": "application/x-www-form-urlencoded" })
      expectRefusal(answer)
      expect(dc.consul.requests).toBe(0)
    }))
})

// --- bodies over the limit ------------------------------------------------------------------------------

/** A valid RUNNING event padded with an ignored field to exactly `size` bytes. */
const paddedEvent = (taskId: string, size: number): string => {
  const base = json({ ...running(taskId), padding: "" })
  expect(base.length).toBeLessThan(size)
  return base.replace("\"padding\":\"\"", `"padding":"${"x".repeat(size - base.length)}"`)
}

const pieces = function*(count: number, size: number): Generator<Uint8Array> {
  for (let i = 0; i < count; i++) yield new Uint8Array(size).fill(0x20) // spaces: valid JSON whitespace
}

const expectTooLarge = (answer: Answer & { readonly closedByServer?: boolean }) => {
  expectRefusal(answer, 413)
  expect(problemOf(answer)).toMatch(/too large|larger/)
}

describe("bodies over --max-event-bytes are refused with 413 without being buffered whole", () => {
  it.scopedLive("the default limit is 1 MiB: exactly 1 MiB is applied, one byte more is refused", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      const daemon = yield* serveDaemon(dc)
      const atLimit = yield* sendEvent(daemon.base, paddedEvent("big.1", MiB), { "content-type": "application/json" })
      expect(atLimit.status, atLimit.text).toBe(200)
      expect(dc.consul.services("127.0.0.2").has("big.1")).toBe(true)
      dc.consul.resetCounters()
      const over = yield* sendEvent(daemon.base, paddedEvent("big.2", MiB + 1), { "content-type": "application/json" })
      expectTooLarge(over)
      expect(dc.consul.requests).toBe(0)
      expect(dc.consul.services("127.0.0.2").has("big.2")).toBe(false)
      const after = yield* daemon.post(running("big.3"))
      expect(after.status).toBe(200)
    }))

  it.scopedLive("a Content-Length over the limit is answered at once, before the body is sent", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      const daemon = yield* serveDaemon(dc)
      dc.consul.resetCounters()
      // 2 MiB announced, 16 KiB sent, the rest never: only an early answer can arrive
      const answer = yield* streamEvent(daemon.base, {
        headers: { "content-type": "application/json", "content-length": String(2 * MiB) },
        pieces: pieces(1, 16 * 1024)
      }).pipe(Effect.timeout("10 seconds"))
      expectTooLarge(answer)
      expect(answer.closedByServer).toBe(true)
      expect(dc.consul.requests).toBe(0)
      const after = yield* daemon.post(running("cl.1"))
      expect(after.status).toBe(200)
      expect(dc.consul.services("127.0.0.2").has("cl.1")).toBe(true)
    }))

  it.scopedLive("a chunked body (no Content-Length) is refused once it passes the limit, though it never ends", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      const daemon = yield* serveDaemon(dc)
      dc.consul.resetCounters()
      // up to 4 MiB in 64 KiB pieces, never finished
      const answer = yield* streamEvent(daemon.base, {
        headers: { "content-type": "application/json" },
        pieces: pieces(64, 64 * 1024)
      }).pipe(Effect.timeout("10 seconds"))
      expectTooLarge(answer)
      expect(answer.closedByServer).toBe(true)
      // the server read up to the limit first (one piece may still be in flight on the client's count)
      expect(answer.sentBeforeAnswer).toBeGreaterThan(MiB - 64 * 1024)
      expect(dc.consul.requests).toBe(0)
      const after = yield* daemon.post(running("chunked.1"))
      expect(after.status).toBe(200)
      expect(dc.consul.services("127.0.0.2").has("chunked.1")).toBe(true)
    }))

  it.scopedLive("--max-event-bytes is honoured, for a body streamed slowly in small pieces", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      const daemon = yield* serveDaemon(dc, { maxEventBytes: 2048 })
      dc.consul.resetCounters()
      const answer = yield* streamEvent(daemon.base, { pieces: pieces(200, 100) }).pipe(Effect.timeout("10 seconds"))
      expectTooLarge(answer)
      expect(answer.closedByServer).toBe(true)
      expect(answer.sentBeforeAnswer).toBeGreaterThan(2048 - 100)
      expect(dc.consul.requests).toBe(0)
      // a chunked event under the limit is read whole and applied
      const small = new TextEncoder().encode(json(running("slow.1")))
      const applied = yield* streamEvent(daemon.base, {
        headers: { "content-type": "application/json" },
        pieces: [small.subarray(0, 10), small.subarray(10, 100), small.subarray(100)],
        finish: true
      }).pipe(Effect.timeout("10 seconds"))
      expect(applied.status, applied.text).toBe(200)
      expect(dc.consul.services("127.0.0.2").has("slow.1")).toBe(true)
      const over = yield* sendEvent(daemon.base, paddedEvent("slow.2", 2049), { "content-type": "application/json" })
      expectTooLarge(over)
      const after = yield* daemon.post(running("slow.3"))
      expect(after.status).toBe(200)
    }))
})

// --- property: any JSON, any bytes ----------------------------------------------------------------------

const agentHosts = ["127.0.0.2", "127.0.0.3"] as const
const isHost = Schema.is(Host)
const otherEventTypes: ReadonlySet<string> = new Set(KnownEventType.literals.filter((type) => type !== "status_update_event"))

interface Expectation {
  readonly status: 200 | 400
  /** only a valid status_update_event that registers or deregisters may write to Consul */
  readonly mayWrite: boolean
  readonly host?: string
}

/** What the daemon must answer, worked out from the domain schemas alone. */
const expectationFor = (text: string): Expectation => {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return { status: 400, mayWrite: false }
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return { status: 400, mayWrite: false }
  const eventType: unknown = "eventType" in value ? value.eventType : undefined
  if (typeof eventType !== "string") return { status: 400, mayWrite: false }
  if (eventType !== "status_update_event") return { status: otherEventTypes.has(eventType) ? 200 : 400, mayWrite: false }
  const decoded = Schema.decodeUnknownEither(StatusUpdateEvent)(value)
  if (Either.isLeft(decoded)) return { status: 400, mayWrite: false }
  const { taskStatus, host } = decoded.right
  return { status: 200, mayWrite: taskStatus === "TASK_RUNNING" || isTerminal(taskStatus), host }
}

/** Each field valid most of the time, so that whole valid events are common; anything else otherwise. */
const field = <A>(valid: fc.Arbitrary<A>, invalid: fc.Arbitrary<unknown>) =>
  fc.oneof({ weight: 9, arbitrary: valid }, { weight: 1, arbitrary: invalid })

const statusFields = ["eventType", "taskId", "taskStatus", "appId", "host", "ports", "version", "timestamp"] as const

const StatusShaped: fc.Arbitrary<Record<string, unknown>> = fc.tuple(
  fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 3 }),
  fc.record({
    eventType: fc.oneof(
      { weight: 8, arbitrary: fc.constant("status_update_event") },
      { weight: 1, arbitrary: fc.constantFrom("api_post_event", "deployment_info", "no_such_event", "STATUS_UPDATE_EVENT") },
      { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 1 }) }
    ),
    taskId: field(fc.constantFrom("prop.1", "prop.2", "prop.3"), fc.oneof(fc.constantFrom("", "a b", "a/b"), fc.jsonValue({ maxDepth: 1 }))),
    taskStatus: field(fc.constantFrom(...TaskState.literals), fc.oneof(fc.constantFrom("TASK_BOGUS", "task_running", ""), fc.jsonValue({ maxDepth: 1 }))),
    appId: field(fc.constantFrom("/web", "/grp/api"), fc.oneof(fc.constantFrom("web", "", "/", "//x", "/a b"), fc.jsonValue({ maxDepth: 1 }))),
    // a host the schema accepts is always one of the datacenter's agents: nothing leaves loopback
    host: field(
      fc.constantFrom(...agentHosts),
      fc.oneof(fc.constantFrom("", "not a host", "-x", "a..b", "node.1", "127.0.0.2:80", "http://127.0.0.2"), fc.jsonValue({ maxDepth: 1 }))
        .filter((value) => !isHost(value))
    ),
    ports: field(
      fc.array(fc.integer({ min: 0, max: 65535 }), { maxLength: 3 }),
      fc.oneof(fc.constantFrom([-1], [65536], [1.5], ["80"], [null], "80"), fc.jsonValue({ maxDepth: 1 }))
    ),
    version: field(fc.constantFrom("2026-01-01T00:00:01.000Z", "v2"), fc.jsonValue({ maxDepth: 1 })),
    timestamp: field(fc.constant("2026-11-25T10:00:00.000Z"), fc.jsonValue({ maxDepth: 1 }))
  }),
  // now and then a field or two left out
  fc.oneof({ weight: 6, arbitrary: fc.constant([]) }, { weight: 1, arbitrary: fc.subarray([...statusFields], { minLength: 1, maxLength: 2 }) })
).map(([extra, fields, left]) => {
  const event: Record<string, unknown> = { ...extra, ...fields }
  for (const key of left) delete event[key]
  return event
})

/** One request of the property: the invariants that hold for every input. */
const checkOne = (text: string, send: Effect.Effect<Answer>) =>
  Effect.gen(function*() {
    const { dc } = yield* TestDaemon
    const expected = expectationFor(text)
    if (expected.host !== undefined) expect(agentHosts).toContain(expected.host) // the generator stays on loopback
    const writes = dc.consul.writes
    const requests = dc.consul.requests
    const answer = yield* send
    expect(answer.status, answer.text).toBeLessThan(500)
    expect(answer.status, `${text.slice(0, 200)} -> ${answer.text}`).toBe(expected.status)
    expect(answer.contentType).toContain("application/json")
    expect(answer.json, answer.text).toBeTypeOf("object")
    expect(answer.json).not.toBeNull()
    if (answer.status >= 400) expect(answer.json).toMatchObject({ error: expect.any(String), detail: expect.any(String) })
    else expect(answer.json).toMatchObject({ status: "ok" })
    if (!expected.mayWrite) expect(dc.consul.writes, text.slice(0, 200)).toBe(writes)
    if (expected.status === 400) expect(dc.consul.requests).toBe(requests)
  })

// thousands of refusals, each logged as a warning: only errors are worth logging here
const QuietDaemon = TestDaemonLive().pipe(Layer.provide(Logger.minimumLogLevel(LogLevel.Error)))

layer(QuietDaemon, { excludeTestServices: true })("property: POST /events with arbitrary input", (it) => {
  const runs = { fastCheck: { numRuns: 1000 } }

  it.effect("seeds an app, so that valid RUNNING events also write labels", () =>
    Effect.gen(function*() {
      const { dc } = yield* TestDaemon
      dc.marathon.putApp("/web", { domain: "example.org" })
    }))

  it.effect.prop("any JSON value: never 5xx, always a JSON object, no write unless a valid event", [fc.jsonValue()], ([value]) =>
    Effect.gen(function*() {
      const { daemon } = yield* TestDaemon
      const text = JSON.stringify(value)
      yield* checkOne(text, sendEvent(daemon.base, text, { "content-type": "application/json" }))
    }), runs)

  it.effect.prop("objects shaped like status events with random fields: the same", [StatusShaped], ([value]) =>
    Effect.gen(function*() {
      const { daemon } = yield* TestDaemon
      const text = JSON.stringify(value)
      yield* checkOne(text, sendEvent(daemon.base, text, { "content-type": "application/json" }))
    }), runs)

  it.effect.prop("any bytes: the same", [fc.uint8Array({ maxLength: 512 })], ([bytes]) =>
    Effect.gen(function*() {
      const { daemon } = yield* TestDaemon
      const text = Buffer.from(bytes).toString("utf8")
      yield* checkOne(text, sendEvent(daemon.base, bytes))
    }), runs)

  it.effect("the status-shaped generator makes valid events that write, and others", () =>
    Effect.gen(function*() {
      // guards the property above against a generator that never reaches the writing path
      const samples = fc.sample(StatusShaped, { numRuns: 1000, seed: 42 }).map((value) => expectationFor(JSON.stringify(value)))
      expect(samples.filter((e) => e.mayWrite).length).toBeGreaterThan(100)
      expect(samples.filter((e) => e.status === 400).length).toBeGreaterThan(100)
    }))

  it.effect("after all of it the daemon still applies a valid event", () => expectStillServing("after-property"))
})
