import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import { registration } from "../../src/domain/Naming.js"
import { containerAddress, networkMode, taskEndpoints } from "../../src/domain/Networking.js"
import type { AppNetworking, TaskAddressing } from "../../src/domain/Networking.js"
import { AppIdArb, HostArb, PortArb, TaskIdArb } from "./Arbitraries.js"

const many = { fastCheck: { numRuns: 500 } }

const portName = fc.option(fc.stringMatching(/^[a-z][a-z0-9-]{0,8}$/), { nil: undefined })
const mapping = fc.record({ containerPort: PortArb, hostPort: PortArb, name: portName })
const ipEntry = fc.oneof(
  fc.ipV4().map((ipAddress) => ({ ipAddress, protocol: "IPv4" })),
  fc.ipV6().map((ipAddress) => ({ ipAddress, protocol: "IPv6" }))
)

/** Apps the original handled: no container network, in each way Marathon 0.15 to 1.10 writes that. */
const HostOrBridgeAppArb: fc.Arbitrary<AppNetworking> = fc.oneof(
  fc.constant({}),
  fc.record({ networks: fc.constant([{ mode: "host" }]), portDefinitions: fc.array(fc.record({ name: portName })) }),
  fc.record({ networks: fc.constant([{ mode: "container/bridge" }]), container: fc.record({ portMappings: fc.array(mapping) }) }),
  fc.record({
    ipAddress: fc.constant(null),
    container: fc.record({ docker: fc.record({ network: fc.constantFrom("BRIDGE", "HOST"), portMappings: fc.array(mapping) }) })
  })
)

const TaskArb: fc.Arbitrary<TaskAddressing> = fc.record({
  host: HostArb,
  ports: fc.option(fc.array(PortArb, { maxLength: 6 }), { nil: undefined }),
  ipAddresses: fc.array(ipEntry, { maxLength: 3 })
})

describe("networking modes", () => {
  it.prop("host and bridge: address and port are exactly the original's registration", [HostOrBridgeAppArb, TaskArb, AppIdArb, TaskIdArb], ([app, task, appId, taskId]) => {
    const endpoints = taskEndpoints(app, task)
    const original = registration("consular", appId, { id: taskId, host: task.host as never, ports: task.ports })
    expect(endpoints.mode).not.toBe("container")
    expect(endpoints.address).toBe(original.Address)
    expect(endpoints.lowest?.port).toBe(original.Port)
  }, many)

  it.prop("host and bridge: every task port, in the task's order, indexed as PORT<n>", [HostOrBridgeAppArb, TaskArb], ([app, task]) => {
    const endpoints = taskEndpoints(app, task)
    expect(endpoints.ports.map((p) => p.port)).toEqual(task.ports ?? [])
    endpoints.ports.forEach((p, i) => expect(p.index).toBe(i))
  }, many)

  it.prop("container: the task's first IPv4, an IPv6 only without one, and the lowest declared container port", [
    fc.array(mapping, { maxLength: 5 }), TaskArb
  ], ([mappings, task]) => {
    const app: AppNetworking = { networks: [{ mode: "container" }], container: { portMappings: mappings } }
    const endpoints = taskEndpoints(app, task)
    const v4 = (task.ipAddresses ?? []).find((entry) => entry.protocol === "IPv4")
    expect(endpoints.mode).toBe("container")
    expect(endpoints.address).toBe(v4?.ipAddress ?? task.ipAddresses?.[0]?.ipAddress ?? task.host)
    expect(endpoints.ports.map((p) => p.port)).toEqual(mappings.map((m) => m.containerPort))
    expect(endpoints.lowest?.port).toBe(mappings.length === 0 ? undefined : Math.min(...mappings.map((m) => m.containerPort)))
  }, many)
})

describe("examples in Marathon's own shapes", () => {
  it("1.5 container/bridge (marathon-lb's capture): host and host port, the mapping's name", () => {
    const app: AppNetworking = {
      networks: [{ mode: "container/bridge" }],
      container: { portMappings: [{ containerPort: 80, name: "test" }] }
    }
    const task = { host: "10.0.2.148", ports: [1565], ipAddresses: [{ ipAddress: "172.17.0.2", protocol: "IPv4" }] }
    expect(taskEndpoints(app, task)).toEqual({
      mode: "bridge",
      address: "10.0.2.148",
      ports: [{ port: 1565, index: 0, name: "test" }],
      lowest: { port: 1565, index: 0, name: "test" }
    })
  })

  it("1.10 container network: the task's IPv4 and the lowest containerPort, whatever the task's ports", () => {
    const app: AppNetworking = {
      networks: [{ mode: "container", name: "calico" }],
      container: { portMappings: [{ containerPort: 9090, name: "admin" }, { containerPort: 8080, name: "http" }] }
    }
    const task = {
      host: "agent-3.acme.org",
      ports: [],
      ipAddresses: [{ ipAddress: "fd00::5", protocol: "IPv6" }, { ipAddress: "10.32.0.7", protocol: "IPv4" }]
    }
    const endpoints = taskEndpoints(app, task)
    expect(endpoints.address).toBe("10.32.0.7")
    expect(endpoints.lowest).toEqual({ port: 8080, index: 1, name: "http" })
    expect(endpoints.ports.map((p) => p.name)).toEqual(["admin", "http"])
  })

  it("an IPv6-only task on a container network is registered at its IPv6 address", () => {
    expect(containerAddress({ host: "a1", ipAddresses: [{ ipAddress: "fd00::9", protocol: "IPv6" }] })).toBe("fd00::9")
  })

  it("a container-network task that has no address yet falls back to its host", () => {
    expect(containerAddress({ host: "a1", ipAddresses: [] })).toBe("a1")
    expect(containerAddress({ host: "a1" })).toBe("a1")
  })

  it("1.4 ipAddress: the discovery ports' numbers and names", () => {
    const app: AppNetworking = {
      ipAddress: { discovery: { ports: [{ number: 8443, name: "https" }, { number: 8080, name: "http" }] } },
      container: { docker: { network: "USER", portMappings: [{ containerPort: 1 }] } }
    }
    const endpoints = taskEndpoints(app, { host: "h", ports: [31000], ipAddresses: [{ ipAddress: "10.0.0.4", protocol: "IPv4" }] })
    expect(endpoints.mode).toBe("container")
    expect(endpoints.address).toBe("10.0.0.4")
    expect(endpoints.lowest).toEqual({ port: 8080, index: 1, name: "http" })
  })

  it("1.4 ipAddress with no discovery ports: the Docker port mappings' container ports", () => {
    const app: AppNetworking = {
      ipAddress: { discovery: { ports: [] } },
      container: { docker: { network: "USER", portMappings: [{ containerPort: 7000 }, { containerPort: 6000 }] } }
    }
    expect(taskEndpoints(app, { host: "h", ipAddresses: [{ ipAddress: "10.0.0.4", protocol: "IPv4" }] }).lowest?.port).toBe(6000)
  })

  it("a container network without port mappings: the address and no port", () => {
    const endpoints = taskEndpoints({ networks: [{ mode: "container" }] }, { host: "h", ports: [], ipAddresses: [{ ipAddress: "10.0.0.4" }] })
    expect(endpoints).toEqual({ mode: "container", address: "10.0.0.4", ports: [], lowest: undefined })
  })

  it("modes as each Marathon release writes them", () => {
    expect(networkMode({})).toBe("host")
    expect(networkMode({ networks: [{ mode: "host" }] })).toBe("host")
    expect(networkMode({ ipAddress: null, container: { docker: { network: "BRIDGE" } } })).toBe("bridge")
    expect(networkMode({ ipAddress: null, container: { docker: { network: "HOST" } } })).toBe("host")
    expect(networkMode({ networks: [{ mode: "container/bridge" }] })).toBe("bridge")
    expect(networkMode({ networks: [{ mode: "container" }] })).toBe("container")
    expect(networkMode({ ipAddress: { discovery: { ports: [] } } })).toBe("container")
  })
})
