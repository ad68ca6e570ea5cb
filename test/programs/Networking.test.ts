import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import type { AppNetworking } from "../../src/domain/Networking.js"
import { planLines } from "../../src/programs/Sync.js"
import type { ConsulStore } from "../../src/services/ConsulStore.js"
import type { MarathonStore, StoredTask } from "../../src/services/MarathonStore.js"
import { makeDatacenter, syncPass } from "../support/Datacenter.js"
import type { Datacenter } from "../support/Datacenter.js"
import { serveDaemon } from "../support/Daemon.js"

/**
 * Address and port by the app's networking, against the embedded Marathon and Consul: each mode via a sync pass
 * and via events, pods, and --service-per-port. Apps and pods are written in the fields Marathon itself serves
 * (1.5+ `networks` and `container.portMappings`, 1.4 `ipAddress`, pods' `/v2/pods/::status`).
 */

const services = (store: ConsulStore, agent: string) => Object.fromEntries(store.services(agent))
const ours = (app: string) => [`consular-reg-id=consular`, `consular-app-id=${app}`]
const v4 = (ipAddress: string) => ({ ipAddress, protocol: "IPv4" as const })
const v6 = (ipAddress: string) => ({ ipAddress, protocol: "IPv6" as const })

/** One app per mode, each with one running task on 127.0.0.2, as Marathon 1.4 to 1.10 define them. */
interface ModeCase {
  readonly mode: string
  readonly networking: AppNetworking
  readonly task: Omit<StoredTask, "state" | "startedAt">
  readonly address: string
  readonly port: number | undefined
}

const modes: ReadonlyArray<ModeCase> = [
  {
    mode: "host (1.5+ networks: host, portDefinitions)",
    networking: { networks: [{ mode: "host" }], portDefinitions: [{ name: "http" }, { name: "admin" }] },
    task: { id: "host.1", host: "127.0.0.2", ports: [31002, 31001], ipAddresses: [v4("127.0.0.2")] },
    address: "127.0.0.2",
    port: 31001
  },
  {
    mode: "container/bridge (1.5+, marathon-lb's capture)",
    networking: { networks: [{ mode: "container/bridge" }], container: { portMappings: [{ containerPort: 80, name: "web" }] } },
    task: { id: "bridge.1", host: "127.0.0.2", ports: [31565], ipAddresses: [v4("172.17.0.2")] },
    address: "127.0.0.2",
    port: 31565
  },
  {
    mode: "container (1.5+ networks: container, IP per task)",
    networking: {
      networks: [{ mode: "container", name: "calico" }],
      container: { portMappings: [{ containerPort: 9090, name: "admin" }, { containerPort: 8080, name: "http" }] }
    },
    task: { id: "calico.1", host: "127.0.0.2", ports: [], ipAddresses: [v6("fd00::7"), v4("10.32.0.7")] },
    address: "10.32.0.7",
    port: 8080
  },
  {
    mode: "1.4 ipAddress with discovery ports",
    networking: {
      ipAddress: { discovery: { ports: [{ number: 8443, name: "https" }, { number: 8080, name: "http" }] } },
      container: { docker: { network: "USER", portMappings: [{ containerPort: 1 }] } }
    },
    task: { id: "weave.1", host: "127.0.0.2", ports: [], ipAddresses: [v4("10.40.0.3")] },
    address: "10.40.0.3",
    port: 8080
  },
  {
    mode: "1.4 ipAddress without discovery ports (Docker on a user network)",
    networking: {
      ipAddress: { discovery: { ports: [] } },
      container: { docker: { network: "USER", portMappings: [{ containerPort: 7000 }, { containerPort: 6000 }] } }
    },
    task: { id: "user.1", host: "127.0.0.2", ports: [], ipAddresses: [v4("10.40.0.4")] },
    address: "10.40.0.4",
    port: 6000
  },
  {
    mode: "container, IPv6-only task",
    networking: { networks: [{ mode: "container", name: "v6net" }], container: { portMappings: [{ containerPort: 8080 }] } },
    task: { id: "v6.1", host: "127.0.0.2", ports: [], ipAddresses: [v6("fd00::9")] },
    address: "fd00::9",
    port: 8080
  },
  {
    mode: "container without port mappings",
    networking: { networks: [{ mode: "container", name: "calico" }] },
    task: { id: "bare.1", host: "127.0.0.2", ports: [], ipAddresses: [v4("10.32.0.8")] },
    address: "10.32.0.8",
    port: undefined
  }
]

const seedApp = (marathon: MarathonStore, appId: string, c: ModeCase) => {
  marathon.setNetworking(appId, c.networking)
  return marathon.setTask(appId, c.task, false)
}

const expected = (c: ModeCase, appId: string, name: string) => ({
  ID: c.task.id,
  Service: name,
  Address: c.address,
  Port: c.port ?? 0,
  Tags: ours(appId)
})

describe("address and port by the app's networking", () => {
  for (const c of modes) {
    it.scopedLive(`sync: ${c.mode}`, () =>
      Effect.gen(function*() {
        const dc = yield* makeDatacenter()
        seedApp(dc.marathon, "/grp/web", c)
        const report = yield* syncPass(dc)
        expect(report.failures).toEqual([])
        expect(services(dc.consul, "127.0.0.2")).toEqual({ [c.task.id]: expected(c, "/grp/web", "grp-web") })
      }))

    it.scopedLive(`event: ${c.mode}`, () =>
      Effect.gen(function*() {
        const dc = yield* makeDatacenter()
        const task = seedApp(dc.marathon, "/grp/web", c)
        const daemon = yield* serveDaemon(dc)
        const answer = yield* daemon.post(dc.marathon.statusUpdate(dc.marathon.apps.get("/grp/web")!, task))
        expect(answer.status).toBe(200)
        expect(services(dc.consul, "127.0.0.2")).toEqual({ [c.task.id]: expected(c, "/grp/web", "grp-web") })
      }))
  }

  it.scopedLive("the definition is read once per app version: later events of that version read nothing", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      const c = modes[2]!
      seedApp(dc.marathon, "/web", c)
      const second = dc.marathon.setTask("/web", { id: "calico.2", host: "127.0.0.3", ports: [], ipAddresses: [v4("10.32.0.9")] }, false)
      const app = dc.marathon.apps.get("/web")!
      const daemon = yield* serveDaemon(dc)
      yield* daemon.post(dc.marathon.statusUpdate(app, app.tasks[0]!))
      const reads = dc.marathon.requests
      yield* daemon.post(dc.marathon.statusUpdate(app, second))
      expect(dc.marathon.requests).toBe(reads)
      expect(services(dc.consul, "127.0.0.3")["calico.2"]).toMatchObject({ Address: "10.32.0.9", Port: 8080 })
    }))

  it.scopedLive("a sync pass tells events how each version is reached: no read for a version the pass saw", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      const task = seedApp(dc.marathon, "/web", modes[2]!)
      const daemon = yield* serveDaemon(dc)
      yield* syncPass(dc)
      yield* Effect.sync(() => dc.consul.deregister("127.0.0.2", task.id))
      const reads = dc.marathon.requests
      const answer = yield* daemon.post(dc.marathon.statusUpdate(dc.marathon.apps.get("/web")!, task))
      expect(answer.status).toBe(200)
      expect(dc.marathon.requests).toBe(reads)
      expect(services(dc.consul, "127.0.0.2")[task.id]).toMatchObject({ Address: "10.32.0.7", Port: 8080 })
    }))

  it.scopedLive("when the app's definition cannot be read the event gets a 502 and nothing is written", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.marathon.putApp("/web", { a: "1" })
      const task = seedApp(dc.marathon, "/web", modes[2]!)
      const daemon = yield* serveDaemon(dc)
      dc.marathon.fault = { _tag: "Status", status: 503 }
      const answer = yield* daemon.post(dc.marathon.statusUpdate(dc.marathon.apps.get("/web")!, task))
      expect(answer.status).toBe(502)
      expect(answer.json).toMatchObject({ upstream: "marathon" })
      expect(dc.consul.services("127.0.0.2").size).toBe(0)
      expect(dc.consul.kv.size).toBe(0)
    }))

  it.scopedLive("--dry-run prints the address and port of each registration", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      seedApp(dc.marathon, "/calico", modes[2]!)
      seedApp(dc.marathon, "/v6", modes[5]!)
      seedApp(dc.marathon, "/bare", modes[6]!)
      const report = yield* syncPass(dc, { dryRun: true })
      expect([...planLines(report.plan)].sort()).toEqual([
        "register bare.1 (bare) at 10.32.0.8 (no port) on agent 127.0.0.2",
        "register calico.1 (calico) at 10.32.0.7:8080 on agent 127.0.0.2",
        "register v6.1 (v6) at [fd00::9]:8080 on agent 127.0.0.2"
      ])
      expect(dc.consul.writes).toBe(0)
    }))
})

describe("--service-per-port", () => {
  const seed = (dc: Datacenter) => {
    dc.marathon.setNetworking("/web", { networks: [{ mode: "host" }], portDefinitions: [{ name: "http" }, {}, { name: "admin" }] })
    return dc.marathon.setTask("/web", { id: "web.1", host: "127.0.0.2", ports: [31001, 31000, 31002] }, false)
  }

  it.scopedLive("one service per port; on, then off again with --purge: only the extra services go", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      seed(dc)
      dc.consul.register("127.0.0.2", { ID: "other", Name: "web-http", Address: "127.0.0.2", Port: 1, Tags: [] })
      const on = yield* syncPass(dc, { servicePerPort: true })
      expect(on.tasks).toBe(1) // one running task, three services
      expect(on.registered).toBe(3)
      expect(services(dc.consul, "127.0.0.2")).toEqual({
        // the lowest port keeps the original ID and Name; the others are named by port name, or by index
        "web.1": { ID: "web.1", Service: "web", Address: "127.0.0.2", Port: 31000, Tags: ours("/web") },
        "web.1:http": { ID: "web.1:http", Service: "web-http", Address: "127.0.0.2", Port: 31001, Tags: ours("/web") },
        "web.1:admin": { ID: "web.1:admin", Service: "web-admin", Address: "127.0.0.2", Port: 31002, Tags: ours("/web") },
        other: { ID: "other", Service: "web-http", Address: "127.0.0.2", Port: 1, Tags: [] }
      })
      dc.consul.resetCounters()
      yield* syncPass(dc, { servicePerPort: true, purge: true })
      expect(dc.consul.writes).toBe(0)
      // off, without purge: nothing removed; with purge: the extra services, and nothing else
      yield* syncPass(dc)
      expect(Object.keys(services(dc.consul, "127.0.0.2")).sort()).toEqual(["other", "web.1", "web.1:admin", "web.1:http"])
      const report = yield* syncPass(dc, { purge: true })
      expect(report.deregistered).toBe(2)
      expect(Object.keys(services(dc.consul, "127.0.0.2")).sort()).toEqual(["other", "web.1"])
      expect(services(dc.consul, "127.0.0.2")["web.1"]).toMatchObject({ Service: "web", Port: 31000 })
    }))

  it.scopedLive("container mode: the container ports in the definition's order, unnamed ones by index", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.marathon.setNetworking("/api", {
        networks: [{ mode: "container", name: "calico" }],
        container: { portMappings: [{ containerPort: 9000 }, { containerPort: 8080, name: "http" }] }
      })
      dc.marathon.setTask("/api", { id: "api.1", host: "127.0.0.2", ports: [], ipAddresses: [v4("10.1.0.5")] }, false)
      yield* syncPass(dc, { servicePerPort: true })
      expect(services(dc.consul, "127.0.0.2")).toEqual({
        "api.1": { ID: "api.1", Service: "api", Address: "10.1.0.5", Port: 8080, Tags: ours("/api") },
        "api.1:0": { ID: "api.1:0", Service: "api-port0", Address: "10.1.0.5", Port: 9000, Tags: ours("/api") }
      })
    }))

  it.scopedLive("by events: RUNNING registers every port's service, KILLED deregisters them all", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      const task = seed(dc)
      const daemon = yield* serveDaemon(dc, { servicePerPort: true })
      const app = dc.marathon.apps.get("/web")!
      yield* daemon.post(dc.marathon.statusUpdate(app, task))
      expect(Object.keys(services(dc.consul, "127.0.0.2")).sort()).toEqual(["web.1", "web.1:admin", "web.1:http"])
      dc.consul.register("127.0.0.2", { ID: "web.1:x", Name: "web-x", Address: "127.0.0.2", Tags: ["consular-reg-id=other", "consular-app-id=/web"] })
      dc.marathon.endTask("/web", "web.1", "TASK_KILLED", false)
      const answer = yield* daemon.post(dc.marathon.statusUpdate(app, { ...task, state: "TASK_KILLED" }))
      expect(answer.status).toBe(200)
      expect(Object.keys(services(dc.consul, "127.0.0.2"))).toEqual(["web.1:x"]) // another registration id's is left alone
    }))

  it.scopedLive("an extra service's Name that is another app's name is a clash: both apps skipped", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      seed(dc)
      dc.marathon.setTask("/web/admin", { id: "wa.1", host: "127.0.0.3", ports: [1] }, false)
      dc.marathon.setTask("/ok", { id: "ok.1", host: "127.0.0.3", ports: [2] }, false)
      dc.consul.register("127.0.0.2", { ID: "web.0", Name: "web", Address: "127.0.0.2", Port: 1, Tags: ours("/web") })
      dc.consul.put("consular/web/old", "\"x\"")
      const report = yield* syncPass(dc, { servicePerPort: true, purge: true })
      expect(report.clashes).toEqual([{ name: "web-admin", ids: ["/web", "/web/admin"] }])
      // both apps' entries are left alone, /web's own name included
      expect([...dc.consul.services("127.0.0.2").keys()]).toEqual(["web.0"])
      expect(dc.consul.kv.get("consular/web/old")).toBe("\"x\"")
      expect([...dc.consul.services("127.0.0.3").keys()]).toEqual(["ok.1"])
      // without the flag there is no clash
      const plain = yield* syncPass(dc)
      expect(plain.clashes).toEqual([])
      expect(dc.consul.services("127.0.0.2").has("web.1")).toBe(true)
      expect([...dc.consul.services("127.0.0.3").keys()].sort()).toEqual(["ok.1", "wa.1"])
    }))
})

describe("pods (Marathon 1.4+)", () => {
  /** /shop/cart: a web container with two endpoints (one on a host port) and a sidecar without endpoints. */
  const seedPod = (marathon: MarathonStore, networks: Parameters<MarathonStore["putPod"]>[1]["networks"] = [{ mode: "host" }]) =>
    marathon.putPod("/shop/cart", {
      labels: { HAPROXY_GROUP: "external" },
      networks,
      containers: [
        { name: "web", endpoints: [{ name: "http", containerPort: 8080, hostPort: 0 }, { name: "admin", containerPort: 9090, hostPort: 0 }] },
        { name: "sidecar" }
      ]
    })
  const startInstance = (marathon: MarathonStore, id: string, agent: string, emit = false) =>
    marathon.setPodInstance("/shop/cart", { id, agentHostname: agent, addresses: ["10.32.0.9"], hostPorts: { web: [31005, 31004] } }, emit)

  it.scopedLive("sync registers each running container with endpoints; the pod's labels go to KV", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      seedPod(dc.marathon)
      startInstance(dc.marathon, "shop_cart.instance-1", "127.0.0.2")
      const report = yield* syncPass(dc)
      expect(report.failures).toEqual([])
      expect(services(dc.consul, "127.0.0.2")).toEqual({
        "shop_cart.instance-1.web": {
          ID: "shop_cart.instance-1.web",
          Service: "shop-cart",
          Address: "127.0.0.2",
          Port: 31004,
          Tags: ours("/shop/cart")
        }
      })
      expect(Object.fromEntries(dc.consul.kv)).toEqual({ "consular/shop-cart/HAPROXY_GROUP": "\"external\"" })
    }))

  it.scopedLive("a pod on a container network: the instance's address and the lowest containerPort", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      seedPod(dc.marathon, [{ mode: "container", name: "dcos" }])
      startInstance(dc.marathon, "shop_cart.instance-1", "127.0.0.3")
      yield* syncPass(dc)
      expect(services(dc.consul, "127.0.0.3")["shop_cart.instance-1.web"]).toMatchObject({ Address: "10.32.0.9", Port: 8080 })
    }))

  it.scopedLive("registered by its event, it survives the next sync --purge; once ended, it is deregistered", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      const pod = seedPod(dc.marathon)
      const daemon = yield* serveDaemon(dc)
      const instance = startInstance(dc.marathon, "shop_cart.instance-2", "127.0.0.2")
      const web = instance.containers[0]!
      const running = yield* daemon.post(dc.marathon.podStatusUpdate(pod, instance, web))
      expect(running.status).toBe(200)
      expect(services(dc.consul, "127.0.0.2")[web.containerId]).toEqual({
        ID: web.containerId,
        Service: "shop-cart",
        Address: "127.0.0.2",
        Port: 31004,
        Tags: ours("/shop/cart")
      })
      expect(dc.consul.kv.get("consular/shop-cart/HAPROXY_GROUP")).toBe("\"external\"")
      // the sidecar has no endpoints: no service, by events as by sync
      const sidecar = yield* daemon.post(dc.marathon.podStatusUpdate(pod, instance, instance.containers[1]!))
      expect(sidecar.json).toMatchObject({ status: "ok", outcome: "ignored" })
      expect([...dc.consul.services("127.0.0.2").keys()]).toEqual([web.containerId])
      const report = yield* syncPass(dc, { purge: true })
      expect(report.deregistered).toBe(0)
      expect(dc.consul.services("127.0.0.2").has(web.containerId)).toBe(true)
      expect(dc.consul.kv.get("consular/shop-cart/HAPROXY_GROUP")).toBe("\"external\"")
      dc.marathon.endPodInstance("/shop/cart", instance.id, "TASK_KILLED", false)
      const killed = yield* daemon.post(dc.marathon.podStatusUpdate(pod, instance, web))
      expect(killed.status).toBe(200)
      expect(dc.consul.services("127.0.0.2").has(web.containerId)).toBe(false)
    }))

  it.scopedLive("a pod task's event on a container network: registered at the instance's address and the spec's container port", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      const pod = seedPod(dc.marathon, [{ mode: "container", name: "dcos" }])
      const daemon = yield* serveDaemon(dc)
      const instance = startInstance(dc.marathon, "shop_cart.instance-3", "127.0.0.3")
      const answer = yield* daemon.post(dc.marathon.podStatusUpdate(pod, instance, instance.containers[0]!))
      expect(answer.status).toBe(200)
      expect(services(dc.consul, "127.0.0.3")["shop_cart.instance-3.web"]).toMatchObject({ Address: "10.32.0.9", Port: 8080 })
    }))

  it.scopedLive("a pod gone from Marathon is purged: its services and its KV tree", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      seedPod(dc.marathon)
      startInstance(dc.marathon, "shop_cart.instance-1", "127.0.0.2")
      yield* syncPass(dc)
      dc.marathon.removePod("/shop/cart")
      yield* syncPass(dc, { purge: true })
      expect(dc.consul.services("127.0.0.2").size).toBe(0)
      expect(dc.consul.kv.size).toBe(0)
    }))

  it.scopedLive("a Marathon without /v2/pods (< 1.4, 404) has no pods: no failure, and purge goes on", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.marathon.podsSupported = false
      dc.marathon.setTask("/web", { id: "web.1", host: "127.0.0.2", ports: [1] }, false)
      dc.consul.register("127.0.0.2", { ID: "gone.1", Name: "gone", Address: "127.0.0.2", Tags: ours("/gone") })
      const report = yield* syncPass(dc, { purge: true })
      expect(report.failures).toEqual([])
      expect([...dc.consul.services("127.0.0.2").keys()]).toEqual(["web.1"])
      expect(dc.marathon.requestLog).toContain("pods")
    }))

  it.scopedLive("pods that cannot be read (500) mean no purge in that pass; apps are still registered", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      seedPod(dc.marathon)
      startInstance(dc.marathon, "shop_cart.instance-1", "127.0.0.2")
      yield* syncPass(dc)
      dc.marathon.setTask("/web", { id: "web.1", host: "127.0.0.3", ports: [1] }, false)
      const admit = dc.marathon.admit.bind(dc.marathon)
      dc.marathon.admit = (operation) => operation === "pods" ? { _tag: "Status", status: 500 } : admit(operation)
      const report = yield* syncPass(dc, { purge: true })
      expect(report.failures.map((f) => f.scope)).toContain("marathon")
      expect(dc.consul.services("127.0.0.2").has("shop_cart.instance-1.web")).toBe(true)
      expect(dc.consul.kv.get("consular/shop-cart/HAPROXY_GROUP")).toBe("\"external\"")
      expect(dc.consul.services("127.0.0.3").has("web.1")).toBe(true)
    }))

  it.scopedLive("a pod and an app with one Consul name clash: both skipped, their entries left alone, by sync and by events", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      const pod = seedPod(dc.marathon)
      startInstance(dc.marathon, "shop_cart.instance-1", "127.0.0.2")
      dc.marathon.setTask("/shop-cart", { id: "sc.1", host: "127.0.0.3", ports: [5] }, false)
      dc.marathon.setTask("/ok", { id: "ok.1", host: "127.0.0.3", ports: [6] }, false)
      dc.consul.register("127.0.0.3", { ID: "sc.0", Name: "shop-cart", Address: "127.0.0.3", Tags: ours("/shop-cart") })
      dc.consul.put("consular/shop-cart/old", "\"x\"")
      const daemon = yield* serveDaemon(dc)
      const report = yield* syncPass(dc, { purge: true })
      expect(report.clashes).toEqual([{ name: "shop-cart", ids: ["/shop-cart", "/shop/cart"] }])
      expect(dc.consul.services("127.0.0.2").size).toBe(0)
      expect([...dc.consul.services("127.0.0.3").keys()].sort()).toEqual(["ok.1", "sc.0"])
      expect(Object.fromEntries(dc.consul.kv)).toEqual({ "consular/shop-cart/old": "\"x\"" })
      const instance = startInstance(dc.marathon, "shop_cart.instance-2", "127.0.0.2")
      const answer = yield* daemon.post(dc.marathon.podStatusUpdate(pod, instance, instance.containers[0]!))
      expect(answer.json).toMatchObject({ outcome: "skipped" })
      expect(dc.consul.services("127.0.0.2").size).toBe(0)
    }))
})
