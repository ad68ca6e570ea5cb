import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { makeDatacenter } from "../support/Datacenter.js"
import { runCli } from "../support/Process.js"

/**
 * `--max-purge N`: a Marathon answering with a suspiciously small app list must not wipe discovery. Over the limit
 * the pass skips its whole purge (exit 2: not everything planned landed), and registrations and labels still land.
 */
describe("consular sync --purge --max-purge", () => {
  it.scopedLive("refuses a purge over the limit (exit 2, nothing purged, registrations landed), then lets it through once the limit is raised", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      for (const app of ["/a", "/b", "/c"]) {
        dc.marathon.putApp(app, { tier: "front", owner: "ops" })
        dc.marathon.setTask(app, { id: `${app.slice(1)}.1`, host: "127.0.0.2", ports: [1] }, false)
      }
      const args = ["sync", "--purge", "--consul", dc.consulUrl.href, "--marathon", dc.marathonUrl.href]
      expect((yield* runCli(args)).code).toBe(0)
      // Marathon suddenly lists one app of three, and a new one
      dc.marathon.removeApp("/b")
      dc.marathon.removeApp("/c")
      dc.marathon.putApp("/d", { tier: "back" })
      dc.marathon.setTask("/d", { id: "d.1", host: "127.0.0.2", ports: [2] }, false)

      // 2 services and 4 keys to purge: over 1 (and over 3 by keys alone)
      for (const limit of ["1", "3"]) {
        const refused = yield* runCli([...args, "--max-purge", limit])
        expect(refused.code, refused.stdout + refused.stderr).toBe(2)
        expect(refused.stdout).toContain("purge refused (over --max-purge)")
        expect(refused.stderr).toContain(`purge refused: it would deregister 2 services and delete 4 keys (apps: b, c), over --max-purge ${limit}; nothing was purged`)
        expect(refused.stderr).toMatch(/purge refused: over --max-purge/) // the log line
        expect([...dc.consul.services("127.0.0.2").keys()].sort()).toEqual(["a.1", "b.1", "c.1", "d.1"])
        expect(dc.consul.kv.get("consular/b/tier")).toBe("\"front\"")
        expect(dc.consul.kv.get("consular/d/tier")).toBe("\"back\"")
      }

      const allowed = yield* runCli([...args, "--max-purge", "4"])
      expect(allowed.code, allowed.stdout + allowed.stderr).toBe(0)
      expect([...dc.consul.services("127.0.0.2").keys()].sort()).toEqual(["a.1", "d.1"])
      expect([...dc.consul.kv.keys()].filter((key) => key.startsWith("consular/b/") || key.startsWith("consular/c/"))).toEqual([])
    }), 60_000)

  it.scopedLive("a label gone from a running app is no purge: --max-purge 0 lets it go", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.marathon.putApp("/a", { tier: "front", owner: "ops" })
      dc.marathon.setTask("/a", { id: "a.1", host: "127.0.0.2", ports: [1] }, false)
      const args = ["sync", "--purge", "--max-purge", "0", "--consul", dc.consulUrl.href, "--marathon", dc.marathonUrl.href]
      expect((yield* runCli(args)).code).toBe(0)
      dc.marathon.setLabels("/a", { tier: "front" })
      const result = yield* runCli(args)
      expect(result.code, result.stdout + result.stderr).toBe(0)
      expect(dc.consul.kv.has("consular/a/owner")).toBe(false)
    }), 60_000)

  it.scopedLive("a negative or non-integer limit is refused naming the flag", () =>
    Effect.gen(function*() {
      for (const bad of ["-1", "1.5", "many"]) {
        const result = yield* runCli(["sync", "--max-purge", bad])
        expect(result.code).toBe(1)
        expect(result.stdout + result.stderr).toContain("--max-purge: must be a non-negative integer, or none (no limit)")
      }
    }), 60_000)
})
