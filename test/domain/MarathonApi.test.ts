import { describe, expect, it } from "@effect/vitest"
import { Either, FastCheck as fc, Schema } from "effect"
import {
  App, AppId, AppsResponse, Host, isRunning, isTerminal, Port, splitApps, splitPods, StatusUpdateEvent, Task, TaskId, TasksResponse, TaskState
} from "../../src/domain/MarathonApi.js"
import { appLists } from "../fixtures/marathon/AppLists.js"
import { AppIdArb, HostArb } from "./Arbitraries.js"

const many = { fastCheck: { numRuns: 500 } }
const accepts = <A, I>(schema: Schema.Schema<A, I>) => (input: unknown): boolean =>
  Either.isRight(Schema.decodeUnknownEither(schema)(input))

describe("AppId", () => {
  it("accepts absolute ids", () => {
    for (const id of ["/web", "/grp/web", "/a-b", "/a/b/c", "/my.app_1"]) expect(accepts(AppId)(id), id).toBe(true)
  })

  it("rejects ids without a leading slash, with an empty segment, or with whitespace", () => {
    for (const id of ["web", "grp/web", "", "/", "//web", "/grp//web", "/web/", "/my app", "/web\t", "/a\nb", 42, null]) {
      expect(accepts(AppId)(id), JSON.stringify(id)).toBe(false)
    }
  })

  it.prop("every generated id starts with / and has no empty segment", [AppIdArb], ([id]) => {
    expect(id.startsWith("/")).toBe(true)
    expect(id.slice(1).split("/")).not.toContain("")
    expect(id).not.toMatch(/\s/)
  }, many)
})

describe("TaskId", () => {
  it("accepts Marathon's task ids and rejects empty ones, slashes and whitespace", () => {
    expect(accepts(TaskId)("grp_web.9f1c0c3e-2b6a-11e7-93ae-92361f002671")).toBe(true)
    for (const id of ["", "a/b", "a b", "a\n"]) expect(accepts(TaskId)(id), id).toBe(false)
  })
})

describe("Host", () => {
  it("accepts host names, IPv4 and IPv6 addresses", () => {
    for (const h of ["localhost", "agent-3", "slave-1234.acme.org", "a_b.example", "10.0.0.7", "255.255.255.255",
      "0.0.0.0", "::1", "fe80::1", "2001:db8::7", "::ffff:10.0.0.1", "FE80::A"]) {
      expect(accepts(Host)(h), h).toBe(true)
    }
  })

  it("rejects what is neither", () => {
    for (const h of ["not a host!", "999.1.1.1", "10.0.0", "01.2.3.4", "", "-web", "web-", "a..b", "http://x",
      "a:b", ":::", "1:2", "1::2::3", "[::1]", "node.1", "0x7f.1", "web.0x10"]) {
      expect(accepts(Host)(h), h).toBe(false)
    }
  })

  it.prop("whatever it accepts, the URL parser reads as that same host", [HostArb], ([h]) => {
    const url = new URL(h.includes(":") ? `http://[${h}]/` : `http://${h}/`)
    if (!h.includes(":")) expect(url.hostname).toBe(h.toLowerCase())
  }, many)
})

describe("Port", () => {
  it("is an integer from 0 to 65535", () => {
    for (const p of [0, 1, 8080, 65535]) expect(accepts(Port)(p), String(p)).toBe(true)
    for (const p of [-1, 65536, 1.5, Number.NaN, Number.POSITIVE_INFINITY, "80", null]) {
      expect(accepts(Port)(p), String(p)).toBe(false)
    }
  })

  it.prop("accepts exactly the integers in range", [fc.integer({ min: -100_000, max: 100_000 })], ([p]) => {
    expect(accepts(Port)(p)).toBe(p >= 0 && p <= 65535)
  }, many)
})

describe("StatusUpdateEvent", () => {
  // as Marathon 1.x posts it to the callback
  const real = {
    eventType: "status_update_event",
    timestamp: "2017-03-01T23:29:30.158Z",
    slaveId: "20170301-054127-177048842-5050-1494-S0",
    taskId: "grp_web.9f1c0c3e-2b6a-11e7-93ae-92361f002671",
    taskStatus: "TASK_RUNNING",
    message: "",
    appId: "/grp/web",
    host: "slave-1234.acme.org",
    ipAddresses: [{ ipAddress: "172.17.0.2", protocol: "IPv4" }],
    ports: [31372, 31373],
    version: "2017-03-01T23:28:21.737Z"
  }
  const decode = Schema.decodeUnknownEither(StatusUpdateEvent)

  it("decodes a real Marathon event, dropping the fields it does not use", () => {
    expect(Schema.decodeUnknownSync(StatusUpdateEvent)(real)).toStrictEqual({
      eventType: "status_update_event",
      taskId: "grp_web.9f1c0c3e-2b6a-11e7-93ae-92361f002671",
      taskStatus: "TASK_RUNNING",
      appId: "/grp/web",
      host: "slave-1234.acme.org",
      ports: [31372, 31373],
      ipAddresses: [{ ipAddress: "172.17.0.2", protocol: "IPv4" }],
      version: "2017-03-01T23:28:21.737Z",
      timestamp: "2017-03-01T23:29:30.158Z"
    })
  })

  it("decodes an event without ports as one with no ports", () => {
    const { ports: _, ...portless } = real
    expect(Schema.decodeUnknownSync(StatusUpdateEvent)(portless).ports).toStrictEqual([])
  })

  it("rejects a missing or wrongly typed taskId, appId, host or taskStatus", () => {
    for (const field of ["taskId", "appId", "host", "taskStatus"] as const) {
      const { [field]: _, ...missing } = real
      expect(Either.isLeft(decode(missing)), `missing ${field}`).toBe(true)
      for (const wrong of [42, null, ["x"], { x: 1 }]) {
        expect(Either.isLeft(decode({ ...real, [field]: wrong })), `${field}: ${JSON.stringify(wrong)}`).toBe(true)
      }
    }
  })

  it("rejects an unknown taskStatus, a bad appId, a bad host and another eventType", () => {
    expect(Either.isLeft(decode({ ...real, taskStatus: "TASK_EXPLODED" }))).toBe(true)
    expect(Either.isLeft(decode({ ...real, taskStatus: "task_running" }))).toBe(true)
    expect(Either.isLeft(decode({ ...real, appId: "grp/web" }))).toBe(true)
    expect(Either.isLeft(decode({ ...real, host: "not a host!" }))).toBe(true)
    expect(Either.isLeft(decode({ ...real, ports: [70000] }))).toBe(true)
    expect(Either.isLeft(decode({ ...real, eventType: "api_post_event" }))).toBe(true)
    for (const body of [null, [], "status_update_event", 1]) expect(Either.isLeft(decode(body))).toBe(true)
  })

  it("accepts every Mesos task state", () => {
    for (const state of TaskState.literals) {
      expect(Either.isRight(decode({ ...real, taskStatus: state })), state).toBe(true)
    }
  })
})

describe("isTerminal", () => {
  it("STAGING, STARTING and RUNNING are not terminal", () => {
    for (const state of ["TASK_STAGING", "TASK_STARTING", "TASK_RUNNING"] as const) expect(isTerminal(state), state).toBe(false)
  })

  it("every other state is terminal, the ones the original crashed on included", () => {
    const terminal = ["TASK_KILLING", "TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_ERROR", "TASK_LOST",
      "TASK_DROPPED", "TASK_UNREACHABLE", "TASK_GONE", "TASK_GONE_BY_OPERATOR", "TASK_UNKNOWN"] as const
    for (const state of terminal) expect(isTerminal(state), state).toBe(true)
    // the two lists cover every state
    expect(new Set([...terminal, "TASK_STAGING", "TASK_STARTING", "TASK_RUNNING"])).toStrictEqual(new Set(TaskState.literals))
  })
})

describe("isRunning", () => {
  const task = (extra: object) => Schema.decodeUnknownSync(Task)({ id: "web.1", host: "10.0.0.1", ...extra })

  it("is true for TASK_RUNNING only", () => {
    for (const state of TaskState.literals) {
      expect(isRunning(task({ state, startedAt: "2017-03-01T23:29:30.158Z" })), state).toBe(state === "TASK_RUNNING")
    }
  })

  it("without a state (older Marathon), a started task is running", () => {
    expect(isRunning(task({ startedAt: "2017-03-01T23:29:30.158Z" }))).toBe(true)
    expect(isRunning(task({ startedAt: null }))).toBe(false)
    expect(isRunning(task({}))).toBe(false)
  })
})

describe("App", () => {
  it("leaves absent labels absent (the plan reads them as none), and tasks absent when not embedded", () => {
    expect(Schema.decodeUnknownSync(App)({ id: "/web", instances: 3 })).toStrictEqual({ id: "/web" })
  })

  it("rejects a label whose value is not a string", () => {
    expect(accepts(App)({ id: "/web", labels: { port: 80 } })).toBe(false)
  })
})

describe("every app-list shape real Marathons send (0.15 to 1.10) decodes", () => {
  for (const listing of appLists) {
    it(listing.release, () => {
      const response = Schema.decodeUnknownSync(AppsResponse)(listing.body)
      const { apps, rejected } = splitApps(response.apps)
      expect(rejected).toEqual([])
      expect(apps.map((app) => ({
        id: app.id,
        ...(app.labels === undefined ? {} : { labels: app.labels }),
        ...(app.tasks === undefined ? {} : { tasks: app.tasks.map((task) => ({ id: task.id, host: task.host, running: isRunning(task) })) })
      }))).toEqual(listing.apps)
    })
  }

  it("an app's tasks alone (/v2/apps/<id>/tasks) decode too", () => {
    for (const listing of appLists) {
      for (const app of (listing.body as { apps: ReadonlyArray<{ tasks?: ReadonlyArray<unknown> }> }).apps) {
        if (app.tasks !== undefined) expect(Either.isRight(Schema.decodeUnknownEither(TasksResponse)({ tasks: app.tasks })), listing.release).toBe(true)
      }
    }
  })
})

describe("networking fields, task addresses and pods", () => {
  it("an app decodes with each release's networking fields, nulls included", () => {
    const app = Schema.decodeUnknownSync(App)({
      id: "/web",
      networks: [{ mode: "container", name: "calico" }],
      container: { type: "DOCKER", portMappings: [{ containerPort: 8080, hostPort: 0, name: "http", protocol: "tcp" }], docker: null },
      portDefinitions: [],
      ipAddress: null
    })
    expect(app.networks).toEqual([{ mode: "container", name: "calico" }])
    expect(app.container?.portMappings).toEqual([{ containerPort: 8080, name: "http" }])
  })

  it("a task's ipAddresses must be IP addresses: Consul gets them as the service's Address", () => {
    const task = { id: "t.1", host: "agent-1", ipAddresses: [{ ipAddress: "10.0.0.7", protocol: "IPv4" }, { ipAddress: "fd00::7", protocol: "IPv6" }] }
    expect(accepts(Task)(task)).toBe(true)
    expect(accepts(Task)({ ...task, ipAddresses: null })).toBe(true)
    for (const bad of ["agent-1", "10.0.0", "http://x", ""]) {
      expect(accepts(Task)({ ...task, ipAddresses: [{ ipAddress: bad }] }), bad).toBe(false)
    }
  })

  it("pods are decoded one by one: an unreadable pod is set apart with its id", () => {
    const good = {
      id: "/shop/cart",
      spec: { id: "/shop/cart", containers: [{ name: "web", endpoints: [{ name: "http", containerPort: 80 }] }] },
      status: "STABLE",
      instances: [{ id: "i", agentHostname: "agent-1", containers: [{ name: "web", status: "TASK_RUNNING", containerId: "i.web" }] }]
    }
    const listing = splitPods([good, { ...good, id: "/bad", spec: { id: "/bad", containers: [{ endpoints: [] }] } }])
    expect(listing.pods.map((pod) => pod.id)).toEqual(["/shop/cart"])
    expect(listing.rejected).toEqual([{ id: "/bad", problem: expect.stringContaining("name") }])
  })
})
