import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { makeDatacenter } from "../support/Datacenter.js"
import { makePki } from "../support/Pki.js"
import { runCli } from "../support/Process.js"

describe("--consul-tls-skip-verify and --marathon-tls-skip-verify", () => {
  it.scopedLive("https upstreams whose CA consular was not given: refused naming the certificate problem, synced with the flags", () =>
    Effect.gen(function*() {
      const pki = makePki()
      const dc = yield* makeDatacenter({ tls: pki })
      dc.marathon.setTask("/web", { id: "web.1", host: "127.0.0.3", ports: [1] }, false)
      const upstreams = ["sync", "--consul", dc.consulUrl.href, "--marathon", dc.marathonUrl.href]

      const refused = yield* runCli(upstreams)
      expect(refused.code).not.toBe(0)
      expect(refused.stderr).toMatch(/cannot read Marathon.*UNABLE_TO_VERIFY_LEAF_SIGNATURE/)
      // Marathon trusted, Consul not: each agent's failure names the certificate problem
      const consulRefused = yield* runCli([...upstreams, "--marathon-tls-skip-verify"])
      expect(consulRefused.stdout + consulRefused.stderr).toContain("UNABLE_TO_VERIFY_LEAF_SIGNATURE")
      expect(dc.consul.services("127.0.0.3").size).toBe(0)

      const skipped = yield* runCli([...upstreams, "--marathon-tls-skip-verify", "--consul-tls-skip-verify"])
      expect(skipped.code, skipped.stderr).toBe(0)
      // the task's agent is reached by host swap with the same TLS settings
      expect(dc.consul.services("127.0.0.3").has("web.1")).toBe(true)
    }))
})
