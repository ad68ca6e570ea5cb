import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import { checkStatuses, healthVerdict, instanceOfTask } from "../../src/domain/Health.js"
import type { HealthObservation } from "../../src/domain/Health.js"

const many = { fastCheck: { numRuns: 1000 } }

const timestamp = fc.option(fc.date({ noInvalidDate: true }).map((d) => d.toISOString()), { nil: undefined })
const ResultArb = fc.record({
  alive: fc.boolean(),
  lastFailure: fc.option(fc.date({ noInvalidDate: true }).map((d) => d.toISOString()), { nil: null }),
  lastFailureCause: fc.option(fc.string({ maxLength: 20 }), { nil: undefined })
})
const ObservationArb: fc.Arbitrary<HealthObservation | undefined> = fc.option(
  fc.oneof(
    fc.record({ _tag: fc.constant("Results" as const), results: fc.array(ResultArb, { maxLength: 4 }) }),
    fc.record({ _tag: fc.constant("Event" as const), alive: fc.boolean(), timestamp })
  ),
  { nil: undefined }
)
const StatusArb = fc.constantFrom(...checkStatuses)

describe("healthVerdict, over every combination", () => {
  it.prop("an app without health checks is passing, whatever else", [ObservationArb, StatusArb], ([latest, initial]) => {
    expect(healthVerdict({ appHasHealthChecks: false, latest, initial }).status).toBe("passing")
  }, many)

  it.prop("Marathon's latest word decides; without one, the initial status", [ObservationArb, StatusArb], ([latest, initial]) => {
    const { status } = healthVerdict({ appHasHealthChecks: true, latest, initial })
    const expected = latest === undefined || (latest._tag === "Results" && latest.results.length === 0)
      ? initial
      : latest._tag === "Event"
      ? latest.alive ? "passing" : "critical"
      : latest.results.every((r) => r.alive) ? "passing" : "critical"
    expect(status).toBe(expected)
  }, many)

  it.prop("never warning unless the operator chose it as the initial status", [ObservationArb, StatusArb, fc.boolean()], ([latest, initial, checks]) => {
    const { status } = healthVerdict({ appHasHealthChecks: checks, latest, initial })
    if (status === "warning") expect(initial).toBe("warning")
  }, many)

  it.prop("the output always names Marathon and is short", [ObservationArb, StatusArb, fc.boolean()], ([latest, initial, checks]) => {
    const { output } = healthVerdict({ appHasHealthChecks: checks, latest, initial })
    expect(output.startsWith("Marathon: ")).toBe(true)
    expect(output.length).toBeLessThan(200)
  }, many)
})

describe("healthVerdict, the outputs an operator reads", () => {
  it("all results alive", () => {
    expect(healthVerdict({ appHasHealthChecks: true, initial: "critical", latest: { _tag: "Results", results: [{ alive: true }, { alive: true }, { alive: true }] } }))
      .toEqual({ status: "passing", output: "Marathon: 3 health checks alive" })
  })

  it("one failing result: when and why", () => {
    const latest: HealthObservation = {
      _tag: "Results",
      results: [{ alive: true }, { alive: false, lastFailure: "2026-12-02T06:00:00.000Z", lastFailureCause: "502 Bad Gateway" }]
    }
    expect(healthVerdict({ appHasHealthChecks: true, initial: "critical", latest })).toEqual({
      status: "critical",
      output: "Marathon: health check failed at 2026-12-02T06:00:00.000Z: 502 Bad Gateway (1 of 2 failing)"
    })
  })

  it("an event saying not alive", () => {
    expect(healthVerdict({ appHasHealthChecks: true, initial: "passing", latest: { _tag: "Event", alive: false, timestamp: "2014-03-01T23:29:30.158Z" } }))
      .toEqual({ status: "critical", output: "Marathon: health check failed at 2014-03-01T23:29:30.158Z" })
  })

  it("no result yet: the initial status, said as such", () => {
    expect(healthVerdict({ appHasHealthChecks: true, initial: "warning", latest: undefined }))
      .toEqual({ status: "warning", output: "Marathon: no health check result yet" })
  })
})

describe("instanceOfTask", () => {
  it("an app task of Marathon 1.5+ belongs to its instance", () => {
    expect(instanceOfTask("foo_bar.instance-9a3c1d24-6b4e-11e7-9b2e-0242ac110002._app.1")).toBe("foo_bar.instance-9a3c1d24-6b4e-11e7-9b2e-0242ac110002")
  })
  it("an older task id is its own instance", () => {
    expect(instanceOfTask("my-app_0-1396592784349")).toBe("my-app_0-1396592784349")
  })
})
