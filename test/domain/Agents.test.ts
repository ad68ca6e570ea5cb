import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import { agentDirectory } from "../../src/domain/Agents.js"

const nodes = [
  { Node: "agent-1", Address: "10.0.0.1" },
  { Node: "Agent-2", Address: "10.0.0.2" },
  { Node: "local", Address: "127.0.0.1" }
]

describe("agentDirectory", () => {
  it("resolves a catalog address to itself", () => {
    const directory = agentDirectory(nodes, "10.0.0.1")
    expect(directory.agentOf("10.0.0.2")).toBe("10.0.0.2")
    expect(directory.agentOf("127.0.0.1")).toBe("127.0.0.1")
  })

  it("resolves a node name, whatever its case, to the node's address", () => {
    const directory = agentDirectory(nodes, "10.0.0.1")
    expect(directory.agentOf("agent-1")).toBe("10.0.0.1")
    expect(directory.agentOf("AGENT-1")).toBe("10.0.0.1")
    expect(directory.agentOf("agent-2")).toBe("10.0.0.2")
  })

  it("resolves localhost to 127.0.0.1 when the catalog has it", () => {
    expect(agentDirectory(nodes, "10.0.0.1").agentOf("localhost")).toBe("127.0.0.1")
    expect(agentDirectory(nodes, "localhost").main).toBe("127.0.0.1")
    expect(agentDirectory([{ Node: "v6", Address: "::1" }], "localhost").main).toBe("::1")
  })

  it("leaves localhost alone when the catalog has no loopback agent: it is the main agent only as the --consul host", () => {
    const directory = agentDirectory(nodes.slice(0, 2), "localhost")
    expect(directory.agentOf("localhost")).toBe("localhost")
    expect(directory.main).toBe("localhost")
    expect(agentDirectory(nodes.slice(0, 2), "10.0.0.1").agentOf("localhost")).toBeUndefined()
  })

  it("a host that is neither a node's address nor its name is no known agent; a bracketed IPv6 address is matched without its brackets", () => {
    const directory = agentDirectory([...nodes, { Node: "v6", Address: "2001:db8::7" }], "10.0.0.1")
    expect(directory.agentOf("10.9.9.9")).toBeUndefined()
    expect(directory.agentOf("elsewhere.example")).toBeUndefined()
    expect(directory.agentOf("unknown")).toBeUndefined() // what Marathon writes when it lacks agent information
    expect(directory.agentOf("[2001:db8::7]")).toBe("2001:db8::7")
  })

  it("a fully qualified host matches the node named by its first label (Marathon's slave-1.acme.org, node slave-1)", () => {
    const directory = agentDirectory([...nodes, { Node: "slave-1", Address: "10.0.0.5" }], "10.0.0.1")
    expect(directory.agentOf("slave-1.acme.org")).toBe("10.0.0.5")
    expect(directory.agentOf("SLAVE-1.acme.org")).toBe("10.0.0.5")
    expect(directory.agentOf("slave-10.acme.org")).toBeUndefined()
    expect(directory.agentOf("acme.slave-1.org")).toBeUndefined()
    // an address has no labels: 10.0.0.9 is not node "10"
    expect(agentDirectory([{ Node: "10", Address: "10.0.0.5" }], "x").agentOf("10.0.0.9")).toBeUndefined()
  })

  it("a host's DNS answer finds the node whose address it holds, and nothing else", () => {
    const directory = agentDirectory(nodes, "consul.example")
    expect(directory.agentAt(["192.0.2.1", "10.0.0.2"])).toBe("10.0.0.2")
    expect(directory.agentAt(["192.0.2.1"])).toBeUndefined()
    expect(directory.agentAt([])).toBeUndefined()
  })

  it("the --consul host is an agent whatever the catalog says", () => {
    const directory = agentDirectory(nodes, "consul.example")
    expect(directory.agentOf("consul.example")).toBe("consul.example")
    expect(directory.agentOf("CONSUL.example")).toBe("consul.example")
  })

  it("a host named like an Object member resolves like any other name", () => {
    // these are valid host names; an object-literal lookup found Object.prototype's members and threw
    const directory = agentDirectory([...nodes, { Node: "toString", Address: "10.0.0.9" }], "constructor")
    expect(directory.main).toBe("constructor")
    expect(directory.agentOf("constructor")).toBe("constructor") // the --consul host
    for (const h of ["hasOwnProperty", "valueOf", "__proto__"]) expect(directory.agentOf(h)).toBeUndefined()
    expect(directory.agentOf("TOSTRING")).toBe("10.0.0.9")
  })

  it("the main agent is in all, once, whether or not it is a catalog node", () => {
    const inCatalog = agentDirectory(nodes, "agent-2")
    expect(inCatalog.main).toBe("10.0.0.2")
    expect([...inCatalog.all].sort()).toStrictEqual(["10.0.0.1", "10.0.0.2", "127.0.0.1"])

    const outside = agentDirectory(nodes, "consul.example")
    expect(outside.main).toBe("consul.example")
    expect([...outside.all].sort()).toStrictEqual(["10.0.0.1", "10.0.0.2", "127.0.0.1", "consul.example"])
  })

  it("an empty catalog still knows the main agent", () => {
    const directory = agentDirectory([], "localhost")
    expect(directory.all).toStrictEqual(["localhost"])
    expect(directory.inCatalog("localhost")).toBe(false)
  })

  it("inCatalog is true for catalog addresses only", () => {
    const directory = agentDirectory(nodes, "consul.example")
    expect(directory.inCatalog("10.0.0.1")).toBe(true)
    expect(directory.inCatalog("agent-1")).toBe(false) // a name is not an agent: resolve it first
    expect(directory.inCatalog("consul.example")).toBe(false)
    expect(directory.inCatalog(directory.agentOf("agent-1") ?? "")).toBe(true)
  })

  it("ignores catalog nodes without an address", () => {
    const directory = agentDirectory([{ Node: "ghost", Address: "" }, ...nodes], "10.0.0.1")
    expect(directory.all).not.toContain("")
    expect(directory.agentOf("ghost")).toBeUndefined()
    expect(directory.inCatalog("")).toBe(false)
  })

  const NodesArb = fc.uniqueArray(
    fc.record({ Node: fc.stringMatching(/^[a-zA-Z][a-zA-Z0-9-]{0,8}$/), Address: fc.ipV4() }),
    { selector: (node) => node.Address, maxLength: 6 }
  )

  it.prop("every host is matched to an agent of all, or to none", [NodesArb, fc.ipV4(), fc.string()], ([ns, main, host]) => {
    const directory = agentDirectory(ns, main)
    expect(directory.all).toContain(directory.main)
    expect(new Set(directory.all).size).toBe(directory.all.length)
    const resolved = directory.agentOf(host)
    expect(resolved === undefined || directory.all.includes(resolved)).toBe(true)
    for (const node of ns) {
      expect(directory.agentOf(node.Address)).toBe(node.Address)
      expect(directory.inCatalog(node.Address)).toBe(true)
      expect(directory.all).toContain(node.Address)
    }
  }, { fastCheck: { numRuns: 300 } })
})
