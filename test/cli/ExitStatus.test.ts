import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { makeDatacenter } from "../support/Datacenter.js"
import { runCli } from "../support/Process.js"

/**
 * `consular sync`'s exit status, as a cron job or a deploy pipeline reads it: 0 all landed, 2 not all, 1 nothing
 * (Marathon unreadable: Cli.test.ts).
 */
describe("consular sync exit status", () => {
  it.scopedLive("0 when everything planned landed", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.marathon.putApp("/web", { tier: "front" })
      dc.marathon.setTask("/web", { id: "web.1", host: "127.0.0.2", ports: [1] }, false)
      const result = yield* runCli(["sync", "--consul", dc.consulUrl.href, "--marathon", dc.marathonUrl.href])
      expect(result.code, result.stderr).toBe(0)
      expect(result.stdout).toContain("complete: everything planned landed")
      expect(dc.consul.services("127.0.0.2").has("web.1")).toBe(true)
    }))

  it.scopedLive("2 when a write failed: each failed task id is listed on stderr, and the rest landed", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.marathon.putApp("/web", { tier: "front" })
      dc.marathon.setTask("/web", { id: "web.1", host: "127.0.0.2", ports: [1] }, false)
      dc.marathon.setTask("/web", { id: "web.2", host: "127.0.0.3", ports: [2] }, false)
      dc.marathon.setTask("/web", { id: "web.3", host: "127.0.0.3", ports: [3] }, false)
      // the agent of 127.0.0.3 answers 500 to everything, its registrations included
      dc.consul.setFault("127.0.0.3", { _tag: "Status", status: 500 })
      const result = yield* runCli(["sync", "--consul", dc.consulUrl.href, "--marathon", dc.marathonUrl.href, "--timeout", "2s"])
      expect(result.code, result.stdout + result.stderr).toBe(2)
      expect(result.stderr).toMatch(/error: agent 127\.0\.0\.3: task web\.2: consul register/)
      expect(result.stderr).toMatch(/error: agent 127\.0\.0\.3: task web\.3: consul register/)
      expect(result.stdout).toContain("incomplete:")
      // the rest landed
      expect(dc.consul.services("127.0.0.2").has("web.1")).toBe(true)
      expect(dc.consul.kv.get("consular/web/tier")).toBe("\"front\"")
    }))

  it.scopedLive("2 when Consul refused one KV write (a per-key ACL): the key is listed on stderr, every other write landed", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      // Consul's key_prefix rules, the longest prefix winning: consular/ is writable, one key of it only readable
      dc.consul.acl = {
        tokens: { t: { service: "write", node: "read", key: { "consular/": "write", "consular/web/owner": "read" } } }
      }
      dc.marathon.putApp("/web", { tier: "front", owner: "ops" })
      dc.marathon.putApp("/api", { tier: "back" })
      dc.marathon.setTask("/web", { id: "web.1", host: "127.0.0.2", ports: [1] }, false)
      dc.marathon.setTask("/api", { id: "api.1", host: "127.0.0.3", ports: [2] }, false)
      const result = yield* runCli(["sync", "--consul", dc.consulUrl.href, "--marathon", dc.marathonUrl.href, "--consul-token", "t"])
      expect(result.code, result.stdout + result.stderr).toBe(2)
      expect(result.stderr).toMatch(/error: kv: key consular\/web\/owner: .*[Pp]ermission denied/)
      expect(result.stderr).not.toMatch(/key consular\/web\/tier|key consular\/api\/tier/)
      expect(result.stdout).toContain("incomplete:")
      // every other write landed
      expect(dc.consul.kv.has("consular/web/owner")).toBe(false)
      expect(dc.consul.kv.get("consular/web/tier")).toBe("\"front\"")
      expect(dc.consul.kv.get("consular/api/tier")).toBe("\"back\"")
      expect(dc.consul.services("127.0.0.2").has("web.1")).toBe(true)
      expect(dc.consul.services("127.0.0.3").has("api.1")).toBe(true)
    }))

  it.scopedLive("2 when a task's agent cannot be read, even if nothing else was to be written", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.marathon.setTask("/web", { id: "web.1", host: "127.0.0.2", ports: [1] }, false)
      const args = ["sync", "--consul", dc.consulUrl.href, "--marathon", dc.marathonUrl.href]
      expect((yield* runCli(args)).code).toBe(0)
      dc.consul.setFault("127.0.0.2", { _tag: "Refuse" })
      const result = yield* runCli(args)
      expect(result.code).toBe(2)
      expect(result.stderr).toContain("error: agent 127.0.0.2")
    }))

  it.scopedLive("2 when a name clash skipped an app", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.marathon.setTask("/a/b", { id: "ab.1", host: "127.0.0.2", ports: [1] }, false)
      dc.marathon.setTask("/a-b", { id: "a-b.1", host: "127.0.0.2", ports: [2] }, false)
      dc.marathon.setTask("/web", { id: "web.1", host: "127.0.0.2", ports: [3] }, false)
      const result = yield* runCli(["sync", "--consul", dc.consulUrl.href, "--marathon", dc.marathonUrl.href])
      expect(result.code).toBe(2)
      expect(result.stderr).toContain("name clash: a-b")
      expect(dc.consul.services("127.0.0.2").has("web.1")).toBe(true)
    }))

  it.scopedLive("1 when no Consul read succeeded: not one write is even tried", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.marathon.putApp("/web", { tier: "front" })
      dc.marathon.setTask("/web", { id: "web.1", host: "127.0.0.2", ports: [1] }, false)
      for (const agent of ["127.0.0.1", "127.0.0.2", "127.0.0.3"]) dc.consul.setFault(agent, { _tag: "Status", status: 500 })
      const result = yield* runCli(["sync", "--debug", "--consul", dc.consulUrl.href, "--marathon", dc.marathonUrl.href])
      expect(result.code).toBe(1)
      expect(result.stderr).toContain("no Consul read succeeded; nothing was written")
      // --debug logs every request: reads only
      expect(result.stderr).toMatch(/method=GET/)
      expect(result.stderr).not.toMatch(/method=(PUT|DELETE)/)
    }))
})
