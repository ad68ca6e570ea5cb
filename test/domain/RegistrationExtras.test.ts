import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import { formatGoDuration, parseGoDuration } from "../../src/domain/GoDuration.js"
import { checkHolds, decorate, sameMeta, ttlCheck } from "../../src/domain/RegistrationExtras.js"

const many = { fastCheck: { numRuns: 500 } }

const plain = { ID: "web.1", Name: "web", Address: "10.0.0.1", Port: 31000, Tags: ["consular-reg-id=consular", "consular-app-id=/web"] }
const LabelsArb = fc.dictionary(fc.string({ maxLength: 10 }), fc.string({ maxLength: 10 }), { maxKeys: 8 })

describe("Go durations, as Consul reads and shows them", () => {
  it.prop("what Go's Duration.String() shows parses back to the same milliseconds", [fc.integer({ min: 0, max: 400 * 3_600_000 })], ([ms]) => {
    expect(parseGoDuration(formatGoDuration(ms))).toBe(ms)
  }, many)

  it("the forms operators write and Consul shows", () => {
    expect(parseGoDuration("1h")).toBe(3_600_000)
    expect(parseGoDuration("1h30m")).toBe(5_400_000)
    expect(parseGoDuration("1.5s")).toBe(1500)
    expect(parseGoDuration("90m")).toBe(5_400_000)
    expect(parseGoDuration("0")).toBe(0)
    expect(formatGoDuration(3_600_000)).toBe("1h0m0s")
    expect(formatGoDuration(90_000)).toBe("1m30s")
    expect(formatGoDuration(1500)).toBe("1.5s")
    for (const bad of ["", "1", "1d", "h", "1 h", "abc", "1h-5m"]) expect(parseGoDuration(bad), bad).toBeUndefined()
  })
})

describe("decorate", () => {
  it.prop("without --service-meta and --health-checks ttl, the registration itself", [LabelsArb], ([labels]) => {
    const { registration, skipped } = decorate({ registrationId: "consular", serviceMeta: false, check: undefined }, plain, { id: "/web", labels })
    expect(registration).toBe(plain)
    expect(JSON.stringify(registration)).toBe(JSON.stringify(plain))
    expect(skipped).toEqual([])
  }, many)

  it.prop("with both, the registration plus exactly Meta and Check; the rest untouched", [LabelsArb], ([labels]) => {
    const check = ttlCheck("consular", { ttl: "1h" })
    const { registration } = decorate({ registrationId: "consular", serviceMeta: true, check }, plain, { id: "/web", labels })
    const { Meta, Check, ...rest } = registration
    expect(rest).toEqual(plain)
    expect(Check).toEqual({ TTL: "1h", Notes: check.Notes })
    expect(Meta?.["marathon-task-id"]).toBe("web.1")
  }, many)
})

describe("what the diff compares", () => {
  it("no wanted Meta holds only an empty or absent one", () => {
    expect(sameMeta(undefined, undefined)).toBe(true)
    expect(sameMeta(null, undefined)).toBe(true)
    expect(sameMeta({}, undefined)).toBe(true)
    expect(sameMeta({ a: "1" }, undefined)).toBe(false)
    expect(sameMeta({ a: "1" }, { a: "1" })).toBe(true)
    expect(sameMeta({ a: "1" }, { a: "2" })).toBe(false)
    expect(sameMeta({ a: "1", b: "2" }, { a: "1" })).toBe(false)
  })

  it("a check holds by Notes, TTL and reaping delay compared as durations; its status never counts", () => {
    const wanted = ttlCheck("consular", { ttl: "1h", deregisterCriticalAfter: "10m" })
    const held = { CheckID: "service:web.1", Status: "critical", Output: "", Notes: wanted.Notes, ServiceID: "web.1", Definition: { TTL: "1h0m0s", DeregisterCriticalServiceAfter: "10m0s" } }
    expect(checkHolds(held, wanted)).toBe(true)
    expect(checkHolds({ ...held, Status: "passing" }, wanted)).toBe(true)
    expect(checkHolds({ ...held, Definition: { TTL: "30m0s", DeregisterCriticalServiceAfter: "10m0s" } }, wanted)).toBe(false)
    expect(checkHolds({ ...held, Definition: { TTL: "1h0m0s", DeregisterCriticalServiceAfter: "0s" } }, wanted)).toBe(false)
    expect(checkHolds({ ...held, Notes: "someone else's" }, wanted)).toBe(false)
    // an agent that shows no definition (before Consul 1.7) cannot be compared: taken as right, or every pass would rewrite
    const { Definition: _, ...bare } = held
    expect(checkHolds(bare, wanted)).toBe(true)
    expect(checkHolds(undefined, wanted)).toBe(false)
    expect(checkHolds(held, undefined)).toBe(false)
    expect(checkHolds(undefined, undefined)).toBe(true)
  })
})
