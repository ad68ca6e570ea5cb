import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc, Schema } from "effect"
import { agentDirectory } from "../../src/domain/Agents.js"
import type { AgentService, Registration } from "../../src/domain/ConsulApi.js"
import type { Actual, AgentState, AppWithTasks, Desired, PlanOptions } from "../../src/domain/Diff.js"
import { applyPlan, desiredState, emptyPlan, matches, plan, planSize } from "../../src/domain/Diff.js"
import { AppId, isRunning, Task, TaskState } from "../../src/domain/MarathonApi.js"
import { appName, encodeLabelValue, labelKey, registration } from "../../src/domain/Naming.js"

/**
 * The reconciliation core, checked against generated worlds: Marathon apps (clashing names included) with tasks
 * in every state on four agents, and a Consul holding our services, foreign ones, other consulars' ones, ours
 * without an app tag, and KV inside and outside `consular/`. The expectations are written from ORIGINAL.md, not
 * from Diff.ts: which service is ours to judge, where a task belongs, what KV must hold.
 */

const REG = "consular"
const hosts = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"]
const nodes = hosts.map((Address, i) => ({ Node: `node${i + 1}`, Address }))
const directory = agentDirectory(nodes, "127.0.0.1")
const main = "127.0.0.1"
/** tasks may name their host by node name, in any case: the agent is the node's address */
const agentOfHost = new Map([["node2", "127.0.0.2"], ["NODE3", "127.0.0.3"]])
const agentOf = (host: string): string => agentOfHost.get(host) ?? host

const options = (purge: boolean, fallback = false): PlanOptions => ({ registrationId: REG, purge, fallback, directory })
const appId = Schema.decodeSync(AppId)
const decodeTask = Schema.decodeUnknownSync(Task)
const many = { fastCheck: { numRuns: 400 } }

// ---------------------------------------------------------------------------------------------------------------
// Generated worlds

/** Mostly ids whose names clash (/a/b, /a-b) or prefix each other (web, web2), plus a few others. */
const AppIdArb = fc.oneof(
  fc.constantFrom("/a/b", "/a-b", "/web", "/web2"),
  fc.array(fc.constantFrom("a", "b", "a-b", "web", "web2", "api"), { minLength: 1, maxLength: 3 })
    .map((segments) => `/${segments.join("/")}`)
).map(appId)

const LabelValueArb = fc.oneof(fc.constant(""), fc.constantFrom("bar", "café", "say \"hi\""), fc.string(),
  fc.string({ unit: "grapheme" }))
const LabelsArb = fc.dictionary(fc.constantFrom("domain", "port", "x/y", "é", "HAPROXY_0_VHOST", ""), LabelValueArb,
  { maxKeys: 4 })

const StateArb = fc.oneof(
  { weight: 4, arbitrary: fc.constant<string | undefined>("TASK_RUNNING") },
  { weight: 3, arbitrary: fc.constantFrom<Array<string | undefined>>(...TaskState.literals) },
  { weight: 1, arbitrary: fc.constant<string | undefined>(undefined) } // older Marathon: startedAt decides
)
const TaskBodyArb = fc.record({
  host: fc.constantFrom(...hosts, "node2", "NODE3"),
  // absent in some: Marathon leaves `ports` out of a task that has none
  ports: fc.option(fc.array(fc.integer({ min: 0, max: 65535 }), { maxLength: 3 }), { nil: undefined }),
  state: StateArb,
  started: fc.boolean()
})

const MarathonArb: fc.Arbitrary<ReadonlyArray<AppWithTasks>> = fc.uniqueArray(AppIdArb, { maxLength: 6 }).chain((ids) =>
  // labels absent in some: Marathon leaves `labels` out of an app that has none
  fc.array(fc.tuple(fc.option(LabelsArb, { nil: undefined }), fc.array(TaskBodyArb, { maxLength: 4 })), { minLength: ids.length, maxLength: ids.length })
    .map((bodies) =>
      bodies.map(([labels, tasks], i) => ({
        id: ids[i]!,
        ...(labels === undefined ? {} : { labels }),
        tasks: tasks.map((t, j) =>
          decodeTask({
            id: `t${i}_${j}`,
            host: t.host,
            ...(t.ports === undefined ? {} : { ports: t.ports }),
            ...(t.state === undefined ? {} : { state: t.state }),
            startedAt: t.started ? "2017-03-01T23:29:30.158Z" : null
          })
        )
      }))
    )
)

type Kind = "task" | "gone" | "foreign" | "other-reg" | "no-app-tag" | "two-app-tags"
interface Placed {
  readonly agent: string
  readonly kind: Kind
  readonly service: AgentService
}

const serviceArb = (apps: ReadonlyArray<AppWithTasks>): fc.Arbitrary<(index: number) => Placed> => {
  const ids = apps.map((app) => app.id)
  const pool = ids.length === 0 ? AppIdArb : fc.oneof(fc.constantFrom(...ids), AppIdArb)
  const agent = fc.constantFrom(...hosts)
  const refs = apps.flatMap((app) => app.tasks.map((task) => ({ app, task })))
  const ours = (app: string) => [`consular-reg-id=${REG}`, `consular-app-id=${app}`]
  const kinds: Array<fc.Arbitrary<(index: number) => Placed>> = [
    // ours, for a task that is gone from Marathon
    fc.record({ agent, app: pool }).map(({ agent, app }) => (i: number) => ({
      agent, kind: "gone", service: { ID: `gone-${i}`, Service: appName(app), Tags: ours(app), Address: agent, Port: 80 }
    })),
    fc.record({ agent, tags: fc.constantFrom(null, [], ["web"], ["consular-app-id=/web"]) })
      .map(({ agent, tags }) => (i: number) => ({
        agent, kind: "foreign", service: { ID: `foreign-${i}`, Service: "redis", Tags: tags, Address: "", Port: 6379 }
      })),
    fc.record({ agent, app: pool, reg: fc.constantFrom("other", "consular2", "") }).map(({ agent, app, reg }) =>
      (i: number) => ({
        agent, kind: "other-reg", service: {
          ID: `other-${i}`, Service: appName(app), Tags: [`consular-reg-id=${reg}`, `consular-app-id=${app}`],
          Address: agent, Port: 1
        }
      })
    ),
    fc.record({ agent, app: pool }).map(({ agent, app }) => (i: number) => ({
      agent, kind: "no-app-tag", service: { ID: `noapp-${i}`, Service: appName(app), Tags: [`consular-reg-id=${REG}`], Address: agent, Port: 2 }
    })),
    fc.record({ agent, a: pool, b: pool }).map(({ agent, a, b }) => (i: number) => ({
      agent, kind: "two-app-tags", service: {
        ID: `twoapp-${i}`, Service: appName(a), Tags: [...ours(a), `consular-app-id=${b}`], Address: agent, Port: 3
      }
    }))
  ]
  if (refs.length > 0) {
    // ours, for a task Marathon knows (in any state), on any agent, current or stale in one field
    kinds.push(
      fc.record({ agent, ref: fc.constantFrom(...refs), stale: fc.constantFrom("none", "none", "port", "address", "name", "reordered") })
        .map(({ agent, ref: { app, task }, stale }) => () => {
          const ports = task.ports ?? []
          const port = ports.length === 0 ? 0 : Math.min(...ports)
          const tags = ours(app.id)
          return {
            agent, kind: "task", service: {
              ID: task.id,
              Service: stale === "name" ? "stale-name" : appName(app.id),
              Tags: stale === "reordered" ? [...tags].reverse() : tags,
              Address: stale === "address" ? "10.9.9.9" : task.host,
              Port: stale === "port" ? port + 1 : port
            }
          }
        })
    )
  }
  return fc.oneof(...kinds)
}

const kvArb = (apps: ReadonlyArray<AppWithTasks>): fc.Arbitrary<Map<string, string>> => {
  const ids = apps.map((app) => app.id)
  const pool = ids.length === 0 ? AppIdArb : fc.oneof(fc.constantFrom(...ids), AppIdArb)
  const current = apps.flatMap((app) =>
    Object.entries(app.labels ?? {}).map(([label, value]): [string, string] => [labelKey(appName(app.id), label), encodeLabelValue(value)])
  )
  const entries: Array<fc.Arbitrary<[string, string]>> = [
    fc.tuple(pool, fc.constantFrom("domain", "port", "x/y", "stale", "a/b/c", ""), fc.oneof(LabelValueArb.map(encodeLabelValue), fc.string()))
      .map(([app, label, value]): [string, string] => [labelKey(appName(app), label), value]),
    // keys consular never writes, inside and outside its root
    fc.tuple(
      fc.constantFrom("consular/web", "consular//domain", "consular", "other/web/domain", "consularx/web/domain",
        "web/domain", "consul/a-b/domain", "vault/consular/web/domain"),
      fc.string()
    )
  ]
  if (current.length > 0) entries.push(fc.constantFrom(...current))
  return fc.array(fc.oneof(...entries), { maxLength: 12 }).map((list) => new Map(list))
}

interface World {
  readonly apps: ReadonlyArray<AppWithTasks>
  readonly placed: ReadonlyArray<Placed>
  /** every agent readable */
  readonly actual: Actual
  readonly unreadable: ReadonlyMap<string, boolean>
}

const agentsOf = (placed: ReadonlyArray<Placed>): Map<string, AgentState> =>
  new Map(hosts.map((host) => [
    host,
    { _tag: "Read", services: new Map(placed.filter((p) => p.agent === host).map((p) => [p.service.ID, p.service])) }
  ]))

const WorldArb: fc.Arbitrary<World> = MarathonArb.chain((apps) =>
  fc.record({
    services: fc.array(serviceArb(apps), { maxLength: 14 }),
    kv: kvArb(apps),
    unreadable: fc.uniqueArray(fc.tuple(fc.constantFrom(...hosts), fc.boolean()), { selector: ([host]) => host, maxLength: 3 })
  }).map(({ services, kv, unreadable }) => {
    // a task's service is on an agent at most once (an agent keys services by ID)
    const placed = [...new Map(services.map((make, i) => make(i)).map((p) => [`${p.agent} ${p.service.ID}`, p])).values()]
    return { apps, placed, actual: { agents: agentsOf(placed), kv }, unreadable: new Map(unreadable) }
  })
)

// ---------------------------------------------------------------------------------------------------------------
// The expectations, from ORIGINAL.md

interface Expected {
  readonly clashIds: ReadonlySet<string>
  readonly clashNames: ReadonlySet<string>
  /** non-clashing apps by name */
  readonly apps: ReadonlyMap<string, AppWithTasks>
  /** running tasks of non-clashing apps: where they must be registered, and how */
  readonly running: ReadonlyMap<string, { readonly agent: string; readonly service: AgentService }>
}

const expected = (apps: ReadonlyArray<AppWithTasks>): Expected => {
  const byName = new Map<string, Array<AppWithTasks>>()
  for (const app of apps) byName.set(appName(app.id), [...(byName.get(appName(app.id)) ?? []), app])
  const clashIds = new Set<string>()
  const clashNames = new Set<string>()
  const single = new Map<string, AppWithTasks>()
  for (const [name, group] of byName) {
    if (group.length > 1) {
      clashNames.add(name)
      for (const app of group) clashIds.add(app.id)
    } else single.set(name, group[0]!)
  }
  const running = new Map<string, { agent: string; service: AgentService }>()
  for (const [name, app] of single) {
    for (const task of app.tasks) {
      if (!isRunning(task)) continue
      running.set(task.id, {
        agent: agentOf(task.host),
        service: {
          ID: task.id, Service: name, Address: task.host, Port: (task.ports ?? []).length === 0 ? 0 : Math.min(...(task.ports ?? [])),
          Tags: [`consular-app-id=${app.id}`, `consular-reg-id=${REG}`]
        }
      })
    }
  }
  return { clashIds, clashNames, apps: single, running }
}

/** Ours to judge: our reg-id tag and exactly one app-id tag, naming an app that does not clash. */
const oursToJudge = (service: AgentService, e: Expected): boolean => {
  const tags = service.Tags ?? []
  const appTags = tags.filter((tag) => tag.startsWith("consular-app-id="))
  return tags.includes(`consular-reg-id=${REG}`) && appTags.length === 1 &&
    !e.clashIds.has(appTags[0]!.slice("consular-app-id=".length))
}

/** The fields Consul keeps, tags sorted; in the order `expected` writes them. */
const sortedTags = (s: AgentService): AgentService =>
  ({ ID: s.ID, Service: s.Service, Address: s.Address, Port: s.Port, Tags: [...(s.Tags ?? [])].sort() })

const sameService = (a: AgentService, b: AgentService): boolean =>
  JSON.stringify(sortedTags(a)) === JSON.stringify(sortedTags(b))

const servicesOn = (actual: Actual, agent: string): ReadonlyMap<string, AgentService> => {
  const state = actual.agents.get(agent)
  return state?._tag === "Read" ? state.services : new Map()
}

const under = (kv: ReadonlyMap<string, string>, prefix: string): Map<string, string> =>
  new Map([...kv].filter(([key]) => key.startsWith(prefix)))

const misplaced = (world: World, e: Expected): boolean =>
  world.placed.some((p) => oursToJudge(p.service, e) && e.running.has(p.service.ID) && e.running.get(p.service.ID)!.agent !== p.agent)

const asService = (r: Registration): AgentService =>
  ({ ID: r.ID, Service: r.Name, Tags: [...r.Tags], Address: r.Address, Port: r.Port ?? 0 })

/** Two passes: a moved service is deregistered only once the right agent holds it, i.e. in the second. */
const converge = (desired: Desired, actual: Actual, opts: PlanOptions) => {
  const p1 = plan(desired, actual, opts)
  const a1 = applyPlan(actual, p1)
  const p2 = plan(desired, a1, opts)
  const a2 = applyPlan(a1, p2)
  const p3 = plan(desired, a2, opts)
  return { p1, a1, p2, a2, p3 }
}

const withAgents = (actual: Actual, agents: Map<string, AgentState>): Actual => ({ agents, kv: actual.kv })

// ---------------------------------------------------------------------------------------------------------------

describe("Diff, on generated worlds", () => {
  it.prop("(a) a second pass writes nothing but moves, a third nothing at all", [WorldArb, fc.boolean()], ([world, purge]) => {
    const desired = desiredState(world.apps, REG, directory)
    const { p2, p3 } = converge(desired, world.actual, options(purge))
    expect({ ...p2, deregister: [] }).toStrictEqual(emptyPlan)
    for (const d of p2.deregister) expect(d.why).toBe("moved")
    if (!misplaced(world, expected(world.apps))) expect(p2).toStrictEqual(emptyPlan)
    expect(p3).toStrictEqual(emptyPlan)
  }, many)

  it.prop("(b) with purge, Consul ends up exactly as Marathon says", [WorldArb], ([world]) => {
    const e = expected(world.apps)
    const desired = desiredState(world.apps, REG, directory)
    const { a1, a2: after } = converge(desired, world.actual, options(true))

    // every running task of a non-clashing app is registered on its host's agent after one pass, and only there after two
    for (const [id, { agent, service }] of e.running) {
      const first = servicesOn(a1, agent).get(id)
      expect(first && sortedTags(first), id).toStrictEqual(service)
      for (const host of hosts) {
        const found = servicesOn(after, host).get(id)
        if (host === agent) expect(found && sortedTags(found), id).toStrictEqual(service)
        else expect(found, `${id} on ${host}`).toBeUndefined()
      }
    }
    for (const host of hosts) {
      for (const service of servicesOn(after, host).values()) {
        // nothing of ours remains that Marathon does not run
        if (oursToJudge(service, e)) expect(e.running.has(service.ID), service.ID).toBe(true)
      }
    }
    // foreign, untagged, other reg-ids, ours without (or with two) app tags, clashing apps: untouched
    for (const p of world.placed) {
      if (!oursToJudge(p.service, e)) expect(servicesOn(after, p.agent).get(p.service.ID)).toBe(p.service)
    }

    const before = world.actual.kv!
    const kv = after.kv!
    for (const [name, app] of e.apps) {
      expect(under(kv, `consular/${name}/`), name).toStrictEqual(
        new Map(Object.entries(app.labels ?? {}).map(([label, value]) => [`consular/${name}/${label}`, encodeLabelValue(value)]))
      )
    }
    for (const key of before.keys()) {
      const tree = /^consular\/([^/]+)\//.exec(key)
      if (tree === null) expect(kv.get(key), key).toBe(before.get(key)) // outside consular/, or not a label key
      else if (e.clashNames.has(tree[1]!)) expect(kv.get(key), key).toBe(before.get(key))
      else if (!e.apps.has(tree[1]!)) expect(kv.has(key), key).toBe(false) // the app is gone: so is its tree
    }
    for (const key of kv.keys()) expect(before.has(key) || desired.labels.has(key), key).toBe(true)
  }, many)

  it.prop("(c) without purge nothing dead is deregistered and no tree deleted", [WorldArb], ([world]) => {
    const e = expected(world.apps)
    const desired = desiredState(world.apps, REG, directory)
    const { p1, p2, a2: after } = converge(desired, world.actual, options(false))
    for (const p of [p1, p2]) {
      expect(p.deregister.filter((d) => d.why !== "moved")).toStrictEqual([])
      expect(p.kvDeleteTree).toStrictEqual([])
    }
    for (const p of world.placed) {
      if (!e.running.has(p.service.ID)) expect(servicesOn(after, p.agent).get(p.service.ID), p.service.ID).toBe(p.service)
    }
    for (const [key, value] of world.actual.kv!) {
      const tree = /^consular\/([^/]+)\//.exec(key)
      if (tree === null || !e.apps.has(tree[1]!)) expect(after.kv!.get(key), key).toBe(value)
    }
  }, many)

  it.prop("(d) nothing to do when Consul already matches", [WorldArb, fc.boolean()], ([world, purge]) => {
    const e = expected(world.apps)
    const desired = desiredState(world.apps, REG, directory)
    const agents = agentsOf([
      ...world.placed.filter((p) => !oursToJudge(p.service, e)), // foreign, other reg-id, clashing...
      ...[...desired.services.values()].map(({ agent, registration: r }): Placed => ({ agent, kind: "task", service: asService(r) }))
    ])
    const kv = new Map([...desired.labels, ...[...world.actual.kv!].filter(([key]) => {
      const tree = /^consular\/([^/]+)\//.exec(key)
      return tree === null || e.clashNames.has(tree[1]!)
    })])
    expect(plan(desired, { agents, kv }, options(purge))).toStrictEqual(emptyPlan)
    expect(plan(desired, { agents, kv }, options(purge, true))).toStrictEqual(emptyPlan)
  }, many)

  it.prop("(e) apps whose names clash are skipped, and their Consul entries left alone", [WorldArb], ([world]) => {
    const e = expected(world.apps)
    const desired = desiredState(world.apps, REG, directory)
    const p = plan(desired, world.actual, options(true))
    const clashTasks = new Set<string>(world.apps.filter((app) => e.clashIds.has(app.id)).flatMap((app) => app.tasks.map((t) => t.id)))
    expect(p.register.filter((r) => clashTasks.has(r.registration.ID))).toStrictEqual([])
    const clashing = (key: string) => [...e.clashNames].some((name) => key.startsWith(`consular/${name}/`))
    expect([...p.kvSet.map((s) => s.key), ...p.kvDelete, ...p.kvDeleteTree].filter(clashing)).toStrictEqual([])
    for (const d of p.deregister) {
      const service = servicesOn(world.actual, d.agent).get(d.serviceId)!
      expect(oursToJudge(service, e), d.serviceId).toBe(true)
    }
    expect(new Set(desired.clashes.map((c) => c.name))).toStrictEqual(e.clashNames)
  }, many)

  it.prop("(g) unreadable agents: nothing deregistered there, registrations still planned", [WorldArb, fc.boolean(), fc.boolean()], ([world, purge, fallback]) => {
    const e = expected(world.apps)
    const desired = desiredState(world.apps, REG, directory)
    const agents = new Map(world.actual.agents)
    for (const [host, unreachable] of world.unreadable) agents.set(host, { _tag: "Unreadable", unreachable })
    const actual = withAgents(world.actual, agents)
    const p = plan(desired, actual, options(purge, fallback))
    for (const d of p.deregister) expect(world.unreadable.has(d.agent), d.agent).toBe(false)
    for (const d of p.deregister.filter((d) => d.why === "moved")) {
      const wanted = e.running.get(d.serviceId)!
      expect(world.unreadable.has(wanted.agent)).toBe(false)
      expect(sortedTags(servicesOn(actual, wanted.agent).get(d.serviceId)!)).toStrictEqual(wanted.service)
    }
    const registered = new Set(p.register.map((r) => `${r.agent} ${r.registration.ID}`))
    for (const [id, { agent, service }] of e.running) {
      if (!world.unreadable.has(agent)) continue
      const onMain = servicesOn(actual, main).get(id)
      const keptOnMain = fallback && world.unreadable.get(agent) === true && onMain !== undefined &&
        sameService(onMain, service)
      expect(registered.has(`${agent} ${id}`), id).toBe(!keptOnMain)
    }
  }, many)

  it.prop("(i) KV unreadable: no KV operation at all", [WorldArb, fc.boolean()], ([world, purge]) => {
    const desired = desiredState(world.apps, REG, directory)
    const p = plan(desired, { agents: world.actual.agents, kv: undefined }, options(purge))
    expect([p.kvSet, p.kvDelete, p.kvDeleteTree]).toStrictEqual([[], [], []])
    expect(applyPlan({ agents: world.actual.agents, kv: undefined }, p).kv).toBeUndefined()
    // and the services are planned as if KV were readable
    const readable = plan(desired, world.actual, options(purge))
    expect([p.register, p.deregister]).toStrictEqual([readable.register, readable.deregister])
  }, many)

  it.prop("applyPlan leaves its input alone", [WorldArb], ([world]) => {
    const snapshot = structuredClone({ agents: world.actual.agents, kv: world.actual.kv })
    applyPlan(world.actual, plan(desiredState(world.apps, REG, directory), world.actual, options(true)))
    expect({ agents: world.actual.agents, kv: world.actual.kv }).toStrictEqual(snapshot)
  })
})

// ---------------------------------------------------------------------------------------------------------------
// Examples

const task = (id: string, host: string, state = "TASK_RUNNING", ports: ReadonlyArray<number> = [31000]) =>
  decodeTask({ id, host, state, ports })

const app = (id: string, labels: Record<string, string>, ...tasks: ReadonlyArray<Task>): AppWithTasks =>
  ({ id: appId(id), labels, tasks })

const actualOf = (services: Record<string, ReadonlyArray<AgentService>>, kv: Record<string, string>): Actual => ({
  agents: new Map(hosts.map((host): [string, AgentState] =>
    [host, { _tag: "Read", services: new Map((services[host] ?? []).map((s) => [s.ID, s])) }])),
  kv: new Map(Object.entries(kv))
})

const regOf = (appIdString: string, t: Task): AgentService => asService(registration(REG, appId(appIdString), t))

describe("Diff, examples", () => {
  it("an empty Consul gets every running task and every label", () => {
    const web = app("/grp/web", { domain: "example.org", empty: "" }, task("w1", "127.0.0.2"), task("w2", "127.0.0.3", "TASK_STAGING"))
    const desired = desiredState([web], REG, directory)
    const p = plan(desired, actualOf({}, {}), options(true))
    expect(p).toStrictEqual({
      register: [{ agent: "127.0.0.2", registration: registration(REG, web.id, web.tasks[0]!) }],
      deregister: [],
      kvSet: [
        { key: "consular/grp-web/domain", value: "\"example.org\"" },
        { key: "consular/grp-web/empty", value: "" }
      ],
      kvDelete: [],
      kvDeleteTree: []
    })
    expect(planSize(p)).toBe(3)
  })

  it("(e) /a/b and /a-b are both skipped; /web is still synced", () => {
    const ab = app("/a/b", { x: "1" }, task("ab1", "127.0.0.2"))
    const aDashB = app("/a-b", { x: "2" }, task("adb1", "127.0.0.3"))
    const web = app("/web", { domain: "w" }, task("web1", "127.0.0.4"))
    const desired = desiredState([ab, aDashB, web], REG, directory)
    expect(desired.clashes).toStrictEqual([{ name: "a-b", ids: ["/a-b", "/a/b"] }])
    const stale = { ...regOf("/a/b", task("ab0", "127.0.0.2")) }
    const actual = actualOf({ "127.0.0.2": [stale] }, { "consular/a-b/x": "\"0\"", "consular/a-b/old": "\"1\"" })
    expect(plan(desired, actual, options(true))).toStrictEqual({
      register: [{ agent: "127.0.0.4", registration: registration(REG, web.id, web.tasks[0]!) }],
      deregister: [],
      kvSet: [{ key: "consular/web/domain", value: "\"w\"" }],
      kvDelete: [],
      kvDeleteTree: []
    })
  })

  it("(f) syncing web never deletes web2's labels", () => {
    const web = app("/web", { domain: "web.example" })
    const web2 = app("/web2", { domain: "web2.example" })
    const kv = { "consular/web/domain": "\"web.example\"", "consular/web/old": "\"x\"", "consular/web2/domain": "\"web2.example\"" }
    const both = plan(desiredState([web, web2], REG, directory), actualOf({}, kv), options(true))
    expect(both).toStrictEqual({ ...emptyPlan, kvDelete: ["consular/web/old"] })
    // web2 gone from Marathon: without purge its labels stay; with purge its tree (and only its) goes
    const webOnly = desiredState([web], REG, directory)
    expect(plan(webOnly, actualOf({}, kv), options(false))).toStrictEqual({ ...emptyPlan, kvDelete: ["consular/web/old"] })
    expect(plan(webOnly, actualOf({}, kv), options(true)))
      .toStrictEqual({ ...emptyPlan, kvDelete: ["consular/web/old"], kvDeleteTree: ["consular/web2/"] })
  })

  it("purge: only ours (reg-id and one app tag) whose task is not running", () => {
    const web = app("/web", {}, task("w1", "127.0.0.2"), task("w2", "127.0.0.2", "TASK_KILLING"))
    const ours = (id: string) => regOf("/web", task(id, "127.0.0.2"))
    const services = [
      ours("w1"), ours("w2"), ours("w-old"),
      { ...ours("other"), Tags: ["consular-reg-id=blue", "consular-app-id=/web"] },
      { ...ours("noapp"), Tags: ["consular-reg-id=consular"] },
      { ...ours("untagged"), Tags: null },
      { ...ours("empty"), Tags: [] }
    ]
    const desired = desiredState([web], REG, directory)
    const p = plan(desired, actualOf({ "127.0.0.2": services }, {}), options(true))
    expect(p.deregister).toStrictEqual([
      { agent: "127.0.0.2", serviceId: "w2", why: "dead" },
      { agent: "127.0.0.2", serviceId: "w-old", why: "dead" }
    ])
    expect(p.register).toStrictEqual([])
    expect(plan(desired, actualOf({ "127.0.0.2": services }, {}), options(false)).deregister).toStrictEqual([])
  })

  it("a registration that differs in port, address or name is rewritten; a tag order is not a difference", () => {
    const t = task("w1", "127.0.0.2", "TASK_RUNNING", [31001, 31000])
    const desired = desiredState([app("/web", {}, t)], REG, directory)
    const right = regOf("/web", t)
    for (const wrong of [{ ...right, Port: 31001 }, { ...right, Address: "127.0.0.9" }, { ...right, Service: "web2" },
      { ...right, Tags: ["consular-reg-id=consular"] }, { ...right, Tags: ["consular-app-id=/web"] },
      { ...right, Tags: [...(right.Tags ?? []), "extra"] }]) {
      expect(plan(desired, actualOf({ "127.0.0.2": [wrong] }, {}), options(true)).register).toHaveLength(1)
    }
    const reordered = { ...right, Tags: [...(right.Tags ?? [])].reverse() }
    expect(plan(desired, actualOf({ "127.0.0.2": [reordered] }, {}), options(true))).toStrictEqual(emptyPlan)
  })

  describe("(g) an unreadable agent", () => {
    const t = task("w1", "127.0.0.3")
    const desired = desiredState([app("/web", {}, t)], REG, directory)
    const withUnreadable = (unreachable: boolean, onMain: ReadonlyArray<AgentService>): Actual => {
      const actual = actualOf({ [main]: onMain }, {})
      const agents = new Map(actual.agents)
      agents.set("127.0.0.3", { _tag: "Unreadable", unreachable })
      return withAgents(actual, agents)
    }

    it("still gets its registrations planned, and nothing deregistered there", () => {
      const p = plan(desired, withUnreadable(true, []), options(true, false))
      expect(p.register).toStrictEqual([{ agent: "127.0.0.3", registration: registration(REG, appId("/web"), t) }])
      expect(p.deregister).toStrictEqual([])
    })

    it("with fallback and the same registration already on the main agent: none planned", () => {
      expect(plan(desired, withUnreadable(true, [regOf("/web", t)]), options(true, true))).toStrictEqual(emptyPlan)
      // the fallback copy is not deregistered from the main agent as "moved" either
    })

    it("the main agent's copy must be identical, the agent unreachable, and fallback on", () => {
      const copy = regOf("/web", t)
      expect(plan(desired, withUnreadable(true, [{ ...copy, Port: 1 }]), options(true, true)).register).toHaveLength(1)
      expect(plan(desired, withUnreadable(false, [copy]), options(true, true)).register).toHaveLength(1)
      expect(plan(desired, withUnreadable(true, [copy]), options(true, false)).register).toHaveLength(1)
    })
  })

  describe("(h) a task's service on another agent", () => {
    const t = task("w1", "127.0.0.2")
    const desired = desiredState([app("/web", {}, t)], REG, directory)
    const service = regOf("/web", t)

    it("is deregistered there only once the right agent holds it", () => {
      const actual = actualOf({ "127.0.0.3": [service] }, {})
      const p1 = plan(desired, actual, options(true))
      expect(p1.register.map((r) => r.agent)).toStrictEqual(["127.0.0.2"])
      expect(p1.deregister).toStrictEqual([])
      const p2 = plan(desired, applyPlan(actual, p1), options(true))
      expect(p2).toStrictEqual({ ...emptyPlan, deregister: [{ agent: "127.0.0.3", serviceId: "w1", why: "moved" }] })
      expect(plan(desired, actualOf({ "127.0.0.2": [service], "127.0.0.3": [service] }, {}), options(false)).deregister)
        .toStrictEqual([{ agent: "127.0.0.3", serviceId: "w1", why: "moved" }])
    })

    it("is kept while the right agent cannot be read", () => {
      const actual = actualOf({ "127.0.0.3": [service] }, {})
      const agents = new Map(actual.agents)
      agents.set("127.0.0.2", { _tag: "Unreadable", unreachable: true })
      expect(plan(desired, withAgents(actual, agents), options(true)).deregister).toStrictEqual([])
    })

    it("is kept on an agent outside the catalog: it may be the right agent by another name", () => {
      const outside = agentDirectory(nodes, "consul.example")
      const actual: Actual = {
        agents: new Map<string, AgentState>([
          ["127.0.0.2", { _tag: "Read", services: new Map([["w1", service]]) }],
          ["consul.example", { _tag: "Read", services: new Map([["w1", service]]) }]
        ]),
        kv: new Map()
      }
      expect(plan(desired, actual, { ...options(true), directory: outside })).toStrictEqual(emptyPlan)
    })
  })

  it("a task on a node named by its name is registered on that node's agent", () => {
    const t = task("w1", "NODE3")
    const desired = desiredState([app("/web", {}, t)], REG, directory)
    expect([...desired.services.values()].map((s) => s.agent)).toStrictEqual(["127.0.0.3"])
    expect(desired.services.get("w1")?.registration.Address).toBe("NODE3")
  })

  it("(i) KV unreadable: services are still planned", () => {
    const desired = desiredState([app("/web", { domain: "x" }, task("w1", "127.0.0.2"))], REG, directory)
    const p = plan(desired, { agents: actualOf({}, {}).agents, kv: undefined }, options(true))
    expect(p).toStrictEqual({ ...emptyPlan, register: [...desired.services.values()] })
  })

  it("matches compares name, address, port (0 when none) and tags in any order", () => {
    const r: Registration = { ID: "w1", Name: "web", Address: "h", Tags: ["a", "b"] }
    const s: AgentService = { ID: "w1", Service: "web", Address: "h", Port: 0, Tags: ["b", "a"] }
    expect(matches(s, r)).toBe(true)
    expect(matches({ ...s, Port: 80 }, r)).toBe(false)
    expect(matches({ ...s, Port: 80 }, { ...r, Port: 80 })).toBe(true)
    expect(matches({ ...s, Tags: null }, { ...r, Tags: [] })).toBe(true)
    expect(matches({ ...s, Tags: ["a", "a"] }, r)).toBe(false)
    expect(matches({ ...s, Tags: ["a"] }, r)).toBe(false)
    expect(matches({ ...s, Tags: ["a", "b", "c"] }, r)).toBe(false)
  })
})
