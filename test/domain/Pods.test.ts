import { describe, expect, it } from "@effect/vitest"
import { podServices } from "../../src/domain/Pods.js"
import type { PodStatusView } from "../../src/domain/Pods.js"

/** A pod status with the fields of Marathon 1.10's `GET /v2/pods/::status` (RAML PodStatus). */
const cart = (networks: NonNullable<PodStatusView["spec"]>["networks"], status = "TASK_RUNNING"): PodStatusView => ({
  id: "/shop/cart",
  spec: {
    version: "2026-12-01T10:00:00.000Z",
    labels: { HAPROXY_GROUP: "external" },
    networks,
    containers: [
      { name: "web", endpoints: [{ name: "admin", containerPort: 9090 }, { name: "http", containerPort: 8080 }] },
      { name: "sidecar" }
    ]
  },
  instances: [{
    id: "shop_cart.instance-5e0b8d5a-1",
    agentHostname: "agent-2.acme.org",
    networks: [{ addresses: ["10.32.0.9"] }],
    containers: [
      {
        name: "web",
        status,
        containerId: "shop_cart.instance-5e0b8d5a-1.web",
        endpoints: [{ name: "admin", allocatedHostPort: 31002 }, { name: "http", allocatedHostPort: 31001 }]
      },
      { name: "sidecar", status: "TASK_RUNNING", containerId: "shop_cart.instance-5e0b8d5a-1.sidecar", endpoints: [] }
    ]
  }]
})

describe("podServices", () => {
  it("host networking: the agent and the lowest allocated host port; a container without endpoints is no service", () => {
    const pod = podServices(cart([{ mode: "host" }]))
    expect(pod.id).toBe("/shop/cart")
    expect(pod.labels).toEqual({ HAPROXY_GROUP: "external" })
    expect(pod.tasks).toHaveLength(1)
    expect(pod.tasks[0]!.id).toBe("shop_cart.instance-5e0b8d5a-1.web")
    expect(pod.tasks[0]!.host).toBe("agent-2.acme.org")
    expect(pod.tasks[0]!.endpoints.address).toBe("agent-2.acme.org")
    expect(pod.tasks[0]!.endpoints.lowest).toEqual({ port: 31001, index: 1, name: "http" })
  })

  it("a container network: the instance's address and the lowest containerPort of the spec", () => {
    const pod = podServices(cart([{ mode: "container", name: "dcos" }]))
    expect(pod.tasks[0]!.host).toBe("agent-2.acme.org")
    expect(pod.tasks[0]!.endpoints.address).toBe("10.32.0.9")
    expect(pod.tasks[0]!.endpoints.lowest).toEqual({ port: 8080, index: 1, name: "http" })
  })

  it("a container that is not running is no service", () => {
    expect(podServices(cart([{ mode: "host" }], "TASK_STAGING")).tasks).toEqual([])
    expect(podServices(cart([{ mode: "host" }], "TASK_KILLED")).tasks).toEqual([])
  })

  it("an instance not yet placed (no agent) or a pod without instances has no services", () => {
    expect(podServices({ id: "/p", instances: [{ id: "i", containers: [] }] }).tasks).toEqual([])
    expect(podServices({ id: "/p" })).toEqual({ id: "/p", labels: {}, version: undefined, tasks: [] })
  })

  it("the RAML's `agent` field serves when `agentHostname` is absent", () => {
    const pod = cart([{ mode: "host" }])
    const instance = pod.instances![0]!
    const { agentHostname: _, ...rest } = instance
    expect(podServices({ ...pod, instances: [{ ...rest, agent: "agent-7" }] }).tasks[0]!.host).toBe("agent-7")
  })
})
