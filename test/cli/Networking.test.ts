import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { makeDatacenter } from "../support/Datacenter.js"
import { runCli } from "../support/Process.js"

/** `consular sync` with networking modes, as operators run it (the built CLI against the embedded servers). */
describe("consular sync: networking modes and --service-per-port", () => {
  it.scopedLive("--dry-run prints where each registration sends traffic; --service-per-port adds a service per port", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.marathon.setNetworking("/pay", {
        networks: [{ mode: "container", name: "calico" }],
        container: { portMappings: [{ containerPort: 9090, name: "admin" }, { containerPort: 8080, name: "http" }] }
      })
      dc.marathon.setTask("/pay", { id: "pay.1", host: "127.0.0.2", ports: [], ipAddresses: [{ ipAddress: "10.32.0.5", protocol: "IPv4" }] }, false)
      const base = ["sync", "--consul", dc.consulUrl.href, "--marathon", dc.marathonUrl.href]

      const plain = yield* runCli([...base, "--dry-run"])
      expect(plain.code, plain.stderr).toBe(0)
      expect(plain.stdout).toContain("register pay.1 (pay) at 10.32.0.5:8080 on agent 127.0.0.2")
      expect(plain.stdout).not.toContain("pay.1:admin")

      const perPort = yield* runCli([...base, "--service-per-port"])
      expect(perPort.code, perPort.stderr).toBe(0)
      expect(Object.fromEntries([...dc.consul.services("127.0.0.2")].map(([id, s]) => [id, `${s.Service} ${s.Address}:${s.Port}`]))).toEqual({
        "pay.1": "pay 10.32.0.5:8080",
        "pay.1:admin": "pay-admin 10.32.0.5:9090"
      })
    }))
})
