import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import { isOwnedByMeta, metaMaxPairs, serviceMeta } from "../../src/domain/ServiceMeta.js"

const many = { fastCheck: { numRuns: 500 } }

const base = { appId: "/shop/cart", taskId: "shop_cart.instance-1._app.1", registrationId: "consular" }

/** Consul's own check of a Meta pair (agent/structs validateMetaPair), written out independently. */
const consulAccepts = (meta: Readonly<Record<string, string>>): boolean =>
  Object.keys(meta).length <= 64 &&
  Object.entries(meta).every(([k, v]) =>
    /^[A-Za-z0-9_-]{1,128}$/.test(k) && !k.startsWith("consul-") && new TextEncoder().encode(v).length <= 512
  )

const LabelKeyArb = fc.oneof(
  fc.stringMatching(/^[A-Za-z0-9_-]{1,12}$/),
  fc.string({ maxLength: 140 }),
  fc.constantFrom("consul-x", "external-source", "marathon-app-id", "constructor", "__proto__", "a".repeat(129))
)
const LabelValueArb = fc.oneof(fc.string({ maxLength: 30 }), fc.string({ minLength: 500, maxLength: 600 }), fc.constant("é".repeat(257)))
const LabelsArb = fc.dictionary(LabelKeyArb, LabelValueArb, { maxKeys: 90 })

describe("serviceMeta", () => {
  it.prop("Consul accepts every Meta it makes", [LabelsArb], ([labels]) => {
    expect(consulAccepts(serviceMeta({ ...base, labels }).meta)).toBe(true)
  }, many)

  it.prop("the four fixed pairs are always there and always win", [LabelsArb], ([labels]) => {
    const { meta } = serviceMeta({ ...base, labels })
    expect(meta["external-source"]).toBe("marathon")
    expect(meta["marathon-app-id"]).toBe(base.appId)
    expect(meta["marathon-task-id"]).toBe(base.taskId)
    expect(meta["consular-reg-id"]).toBe("consular")
  }, many)

  it.prop("every label is either in Meta with its raw value or skipped with a reason, never both", [LabelsArb], ([labels]) => {
    const { meta, skipped } = serviceMeta({ ...base, labels })
    const skippedNames = new Set(skipped.map((s) => s.label))
    for (const [key, value] of Object.entries(labels)) {
      if (skippedNames.has(key)) continue
      expect(Object.hasOwn(meta, key)).toBe(true)
      expect(meta[key]).toBe(value)
    }
    expect(Object.keys(meta).length + skipped.length).toBe(4 + Object.keys(labels).length)
  }, many)

  it.prop("keys come sorted (a JavaScript object lists integer-like keys first, ascending, whatever the insertion order)", [LabelsArb], ([labels]) => {
    const keys = Object.keys(serviceMeta({ ...base, labels }).meta)
    const isIndex = (key: string) => /^(0|[1-9]\d*)$/.test(key) && Number(key) < 4294967295
    const indices = keys.filter(isIndex).sort((a, b) => Number(a) - Number(b))
    expect(keys).toEqual([...indices, ...keys.filter((key) => !isIndex(key)).sort()])
  }, many)

  it("labels as an operator writes them, and those Consul would refuse", () => {
    const { meta, skipped } = serviceMeta({
      ...base,
      labels: { HAPROXY_GROUP: "external", "traefik.enable": "true", "consul-weight": "3", "marathon-app-id": "/other", big: "x".repeat(513), ok: "" }
    })
    expect(meta).toEqual({
      HAPROXY_GROUP: "external",
      "consular-reg-id": "consular",
      "external-source": "marathon",
      "marathon-app-id": "/shop/cart",
      "marathon-task-id": "shop_cart.instance-1._app.1",
      ok: ""
    })
    expect(skipped.map((s) => s.label).sort()).toEqual(["big", "consul-weight", "marathon-app-id", "traefik.enable"])
  })

  it("at most 64 pairs: the labels after the first 60 (by key) are skipped", () => {
    const labels = Object.fromEntries(Array.from({ length: 70 }, (_, i) => [`l${String(i).padStart(2, "0")}`, "v"]))
    const { meta, skipped } = serviceMeta({ ...base, labels })
    expect(Object.keys(meta)).toHaveLength(metaMaxPairs)
    expect(skipped.map((s) => s.label)).toEqual(Array.from({ length: 10 }, (_, i) => `l${60 + i}`))
  })
})

describe("isOwnedByMeta", () => {
  it("ours by external-source and consular-reg-id, whatever the tags say", () => {
    expect(isOwnedByMeta(serviceMeta({ ...base, labels: {} }).meta, "consular")).toBe(true)
    expect(isOwnedByMeta(serviceMeta({ ...base, labels: {} }).meta, "other")).toBe(false)
    expect(isOwnedByMeta({ "consular-reg-id": "consular" }, "consular")).toBe(false)
    expect(isOwnedByMeta(null, "consular")).toBe(false)
    expect(isOwnedByMeta(undefined, "consular")).toBe(false)
  })
})
