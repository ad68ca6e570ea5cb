import { describe, expect, it } from "@effect/vitest"
import { Either, FastCheck as fc, Option, ParseResult, Schema } from "effect"
import { compiledDecoder, compiledEncoder } from "../../src/domain/CompiledDecoder.js"
import { AgentChecks, AgentServices, CatalogNodes, KvEntries, Registration, TxnConflict, TxnOperations } from "../../src/domain/ConsulApi.js"
import { App, AppsResponse, PodStatus, StatusUpdateEvent, Task, TasksResponse } from "../../src/domain/MarathonApi.js"
import { appLists } from "../fixtures/marathon/AppLists.js"

/**
 * The compiled decoders must give exactly what the Schema gives: the same value for what it accepts, its own
 * ParseError (path and words) for what it refuses. Checked on the payloads real Marathons and Consuls send and
 * on thousands of mutations of them (a field gone, null, of another type, out of range, an extra key).
 */

const agentServices = {
  "web.1": {
    ID: "web.1",
    Service: "web",
    Tags: ["consular-reg-id=consular", "consular-app-id=/web"],
    Meta: {},
    Port: 31001,
    Address: "10.0.0.7",
    Weights: { Passing: 1, Warning: 1 },
    EnableTagOverride: false,
    Datacenter: "dc1"
  },
  // Consul 0.x: no Meta, Tags null
  "old.1": { ID: "old.1", Service: "old", Tags: null, Port: 0, Address: "" },
  // an agent that leaves out what it has no value for
  "bare.1": { ID: "bare.1", Service: "bare" },
  "meta.1": { ID: "meta.1", Service: "meta", Tags: [], Meta: { "external-source": "marathon", "consular-reg-id": "consular" }, Port: 80, Address: "::1" }
}

const kvEntries = [
  { LockIndex: 0, Key: "consular/web/owner", Flags: 0, Value: "InRlYW0tYSI=", CreateIndex: 12, ModifyIndex: 12 },
  { LockIndex: 0, Key: "consular/web/", Flags: 0, Value: null, CreateIndex: 13, ModifyIndex: 13 }
]

const catalogNodes = [
  { ID: "40e4a748", Node: "main", Address: "10.0.0.1", Datacenter: "dc1", TaggedAddresses: { lan: "10.0.0.1" }, Meta: {} },
  { ID: "40e4a749", Node: "node-2", Address: "10.0.0.2", Datacenter: "dc1", TaggedAddresses: null, Meta: null }
]

const agentChecks = {
  "service:web.1": {
    Node: "main",
    CheckID: "service:web.1",
    Name: "Marathon health",
    Status: "passing",
    Notes: "Marathon's health checks of the task",
    Output: "",
    ServiceID: "web.1",
    ServiceName: "web",
    Definition: { TTL: "1h0m0s", DeregisterCriticalServiceAfter: "0s", Interval: "0s" }
  },
  // Consul < 1.7: no Definition
  "service:old.1": { CheckID: "service:old.1", Status: "critical" }
}

const podStatus = {
  id: "/shop/cart",
  status: "STABLE",
  spec: {
    id: "/shop/cart",
    version: "2026-12-01T10:00:00.000Z",
    labels: { HAPROXY_GROUP: "external" },
    networks: [{ mode: "container", name: "dcos" }],
    containers: [
      { name: "web", resources: { cpus: 0.1, mem: 32 }, endpoints: [{ name: "http", containerPort: 8080, hostPort: 0, protocol: ["tcp"] }] },
      { name: "sidecar", resources: { cpus: 0.1, mem: 32 } }
    ]
  },
  instances: [{
    id: "shop_cart.instance-5e0b8d5a-1",
    status: "STABLE",
    agentHostname: "agent-2.acme.org",
    agentId: "a1",
    networks: [{ name: "dcos", addresses: ["10.32.0.9"] }],
    containers: [
      { name: "web", status: "TASK_RUNNING", containerId: "shop_cart.instance-5e0b8d5a-1.web", endpoints: [{ name: "http", allocatedHostPort: 31001 }] },
      { name: "sidecar", status: "TASK_RUNNING", containerId: "shop_cart.instance-5e0b8d5a-1.sidecar", endpoints: [] }
    ]
  }]
}

const apps = appLists.flatMap((list) => (list.body as { readonly apps: ReadonlyArray<Record<string, unknown>> }).apps)
const tasks = apps.flatMap((app) => Array.isArray(app["tasks"]) ? app["tasks"] as ReadonlyArray<unknown> : [])

interface Case {
  readonly name: string
  readonly schema: Schema.Schema<any, any, never>
  readonly payloads: ReadonlyArray<unknown>
}

/** status_update_event as Marathon 1.x posts it, and as 0.15 did (no ipAddresses, no version) */
const statusUpdates = [
  {
    eventType: "status_update_event", timestamp: "2026-11-25T10:00:00.000Z", slaveId: "s-1", taskId: "web.4f1c2e0a-1111-11ef-8000-000000000001",
    taskStatus: "TASK_KILLED", message: "", appId: "/web", host: "10.0.0.7", ipAddresses: [{ ipAddress: "10.0.0.7", protocol: "IPv4" }],
    ports: [31001, 31002], version: "2026-01-01T00:00:01.000Z"
  },
  { eventType: "status_update_event", timestamp: "2015-11-25T10:00:00.000Z", slaveId: "s-1", taskId: "web.1", taskStatus: "TASK_RUNNING", appId: "/web", host: "agent-1.example.org", ports: [] }
]

const cases: ReadonlyArray<Case> = [
  { name: "App", schema: App, payloads: apps },
  { name: "Task", schema: Task, payloads: tasks },
  { name: "AppsResponse", schema: AppsResponse, payloads: appLists.map((list) => list.body) },
  { name: "TasksResponse", schema: TasksResponse, payloads: [{ tasks }] },
  { name: "PodStatus", schema: PodStatus, payloads: [podStatus] },
  { name: "AgentServices", schema: AgentServices, payloads: [agentServices] },
  { name: "AgentChecks", schema: AgentChecks, payloads: [agentChecks] },
  { name: "KvEntries", schema: KvEntries, payloads: [kvEntries] },
  { name: "CatalogNodes", schema: CatalogNodes, payloads: [catalogNodes] },
  { name: "StatusUpdateEvent", schema: StatusUpdateEvent, payloads: statusUpdates },
  { name: "TxnConflict", schema: TxnConflict, payloads: [{ Results: null, Errors: [{ OpIndex: 0, What: "Permission denied" }] }] }
]

/** Values a mutation puts in place of a field: every JSON type, the edges of ports, ids and hosts, an own __proto__. */
const replacements: ReadonlyArray<unknown> = [
  null, undefined, true, false, 0, -1, 1.5, 65535, 65536, Number.MAX_SAFE_INTEGER + 2, "", " ", "/", "//a", "/a b",
  "a/b", "web", "/web", "10.0.0.1", "999.1.1.1", "::1", "node.1", "TASK_RUNNING", "passing", "bogus", [], [1], ["a"],
  [null], {}, { name: "x" }, JSON.parse("{\"__proto__\": \"x\"}"), JSON.parse("{\"__proto__\": {\"a\": \"b\"}}")
]

type Path = ReadonlyArray<string | number>

const pathsOf = (value: unknown, at: Path = []): Array<Path> => {
  const here = [at]
  if (Array.isArray(value)) return [...here, ...value.flatMap((item, i) => pathsOf(item, [...at, i]))]
  if (typeof value === "object" && value !== null) {
    return [...here, ...Object.keys(value).flatMap((key) => pathsOf((value as Record<string, unknown>)[key], [...at, key]))]
  }
  return here
}

type Mutation =
  | { readonly kind: "set"; readonly path: number; readonly to: number }
  | { readonly kind: "delete"; readonly path: number }
  | { readonly kind: "extra"; readonly path: number; readonly to: number }

/** A deep copy of `value` with one change at the path numbered `mutation.path` (modulo the paths it has). */
const mutate = (value: unknown, mutation: Mutation): unknown => {
  const copy: unknown = structuredClone(value)
  const paths = pathsOf(copy)
  const path = paths[mutation.path % paths.length]!
  const to = mutation.kind === "delete" ? 0 : mutation.to
  const replacement = structuredClone(replacements[to % replacements.length] ?? null)
  if (path.length === 0) return mutation.kind === "set" ? replacement : copy
  let parent = copy as Record<string | number, unknown>
  for (const step of path.slice(0, -1)) parent = parent[step] as Record<string | number, unknown>
  const last = path[path.length - 1]!
  switch (mutation.kind) {
    case "set":
      parent[last] = to % replacements.length === 1 ? undefined : replacement
      break
    case "delete":
      if (Array.isArray(parent)) parent.splice(Number(last), 1)
      else delete parent[last]
      break
    case "extra": {
      const target = parent[last]
      if (typeof target === "object" && target !== null && !Array.isArray(target)) (target as Record<string, unknown>)["extra"] = replacement
      break
    }
  }
  return copy
}

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant("set" as const), path: fc.nat(), to: fc.nat() }),
  fc.record({ kind: fc.constant("delete" as const), path: fc.nat() }),
  fc.record({ kind: fc.constant("extra" as const), path: fc.nat(), to: fc.nat() })
)

const sameAnswer = (schema: Schema.Schema<any, any, never>, input: unknown) => {
  const bySchema = Schema.decodeUnknownEither(schema)(input)
  const compiled = compiledDecoder(schema)(input)
  if (Either.isRight(bySchema)) {
    expect(Either.isRight(compiled)).toBe(true)
    expect(Either.getOrThrow(compiled)).toStrictEqual(bySchema.right)
  } else {
    expect(Either.isLeft(compiled)).toBe(true)
    expect(ParseResult.TreeFormatter.formatErrorSync(Either.flip(compiled).pipe(Either.getOrThrow)))
      .toBe(ParseResult.TreeFormatter.formatErrorSync(bySchema.left))
  }
}

describe("compiledDecoder", () => {
  for (const { name, payloads, schema } of cases) {
    it(`${name}: reads what Marathon or Consul sends without the Schema, and gives the Schema's value`, () => {
      const decode = compiledDecoder(schema)
      for (const payload of payloads) {
        const fast = decode.withoutSchema(payload)
        expect(Option.isSome(fast), JSON.stringify(payload).slice(0, 200)).toBe(true)
        expect(Option.getOrThrow(fast)).toStrictEqual(Schema.decodeUnknownSync(schema)(payload))
      }
    })

    it.prop(`${name}: the Schema's answer to every mutation`, [fc.nat(), fc.array(mutationArb, { minLength: 1, maxLength: 3 })], ([which, mutations]) => {
      const input = mutations.reduce(mutate, payloads[which % payloads.length])
      sameAnswer(schema, input)
    }, { fastCheck: { numRuns: 400 } })
  }

  it("leaves an own __proto__ key to the Schema", () => {
    const input = JSON.parse("{\"id\": \"/web\", \"labels\": {\"__proto__\": \"x\", \"a\": \"b\"}}") as unknown
    expect(Option.isNone(compiledDecoder(App).withoutSchema(input))).toBe(true)
    sameAnswer(App, input)
  })

  it("a refusal is the Schema's: it names the app's field", () => {
    const app = { id: "/web", tasks: [{ id: "web.1", host: "not a host!", ports: [80] }] }
    const decoded = compiledDecoder(App)(app)
    expect(Either.isLeft(decoded)).toBe(true)
    const [first] = ParseResult.ArrayFormatter.formatErrorSync(Either.flip(decoded).pipe(Either.getOrThrow))
    expect(first?.path).toEqual(["tasks", 0, "host"])
    expect(first?.message).toContain("must be a host name or an IP address")
  })

  it("fills in the defaults of AgentService as the Schema does (a Struct with defaults is a transformation)", () => {
    const decoded = Either.getOrThrow(compiledDecoder(AgentServices)({ "bare.1": { ID: "bare.1", Service: "bare" } }))
    expect(decoded).toStrictEqual({ "bare.1": { ID: "bare.1", Service: "bare", Tags: null, Address: "", Port: 0 } })
  })
})

describe("compiledEncoder", () => {
  const registrations: ReadonlyArray<unknown> = [
    { ID: "web.1", Name: "web", Address: "10.0.0.7", Tags: ["consular-reg-id=consular", "consular-app-id=/web"], Port: 31001 },
    { ID: "web.2", Name: "web", Address: "::1", Tags: [] },
    {
      ID: "web.3",
      Name: "web",
      Address: "10.0.0.8",
      Tags: ["a"],
      Port: 0,
      Meta: { "external-source": "marathon" },
      Check: { TTL: "1h", Notes: "Marathon's health checks", DeregisterCriticalServiceAfter: "72h" }
    }
  ]
  const sameEncoding = (schema: Schema.Schema<any, any, never>, value: unknown) => {
    const bySchema = Schema.encodeEither(schema)(value)
    const compiled = compiledEncoder(schema)(value)
    if (Either.isRight(bySchema)) expect(Either.getOrThrow(compiled)).toStrictEqual(bySchema.right)
    else {
      expect(ParseResult.TreeFormatter.formatErrorSync(Either.flip(compiled).pipe(Either.getOrThrow)))
        .toBe(ParseResult.TreeFormatter.formatErrorSync(bySchema.left))
    }
  }

  it.prop("a registration: the Schema's encoding of every mutation", [fc.nat(), fc.array(mutationArb, { minLength: 0, maxLength: 3 })], ([which, mutations]) => {
    sameEncoding(Registration, mutations.reduce(mutate, registrations[which % registrations.length]))
  }, { fastCheck: { numRuns: 400 } })

  it("a transaction, and a schema with a transformation (left to the Schema)", () => {
    sameEncoding(TxnOperations, [{ KV: { Verb: "set", Key: "consular/web/a", Value: "ImIi" } }, { KV: { Verb: "delete-tree", Key: "consular/old/" } }])
    sameEncoding(TxnOperations, [{ KV: { Verb: "drop", Key: "consular/web/a" } }])
    sameEncoding(AgentServices, agentServices)
  })
})
