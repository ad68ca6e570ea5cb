import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { readFileSync, mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { connect } from "node:net"
import { join } from "node:path"
import { serveMarathon } from "../../src/embedded/MarathonServer.js"
import { makeDatacenter } from "../support/Datacenter.js"
import { statusUpdate } from "../support/Daemon.js"
import { eventually, freePort, runCli, startCli } from "../support/Process.js"

const ours = (app: string, regId = "consular") => [`consular-reg-id=${regId}`, `consular-app-id=${app}`]

describe("the consular CLI, as operators run it", () => {
  it.live("--help lists the original's flags", () =>
    Effect.gen(function*() {
      const result = yield* runCli(["--help"])
      expect(result.code).toBe(0)
      for (const flag of ["--scheme", "--host", "--port", "--consul", "--marathon", "--registration-id", "--sync-interval",
        "--purge", "--logfile", "--debug", "--timeout", "--fallback", "--fallback-timeout"]) {
        expect(result.stdout).toContain(flag)
      }
    }))

  for (const [args, flag] of [
    [["--port", "abc"], "--port"],
    [["--port", "70000"], "--port"],
    [["--consul", "ftp://x"], "--consul"],
    [["--marathon", "not a url"], "--marathon"],
    [["--sync-interval", "-1"], "--sync-interval"],
    [["--timeout", "0"], "--timeout"],
    [["sync", "--fallback-timeout", "x"], "--fallback-timeout"],
    [["--scheme", "ftp"], "--scheme"],
    [["--events", "poll"], "--events"],
    [["sync", "--log-format", "xml"], "--log-format"],
    [["--health-checks", "http"], "--health-checks"],
    [["sync", "--initial-health", "ok"], "--initial-health"],
    [["sync", "--health-ttl", "soon"], "--health-ttl"],
    [["sync", "--deregister-critical-after", "30s"], "--deregister-critical-after"]
  ] as const) {
    it.live(`a bad ${flag} names the flag and exits non-zero`, () =>
      Effect.gen(function*() {
        const result = yield* runCli(args)
        expect(result.code).not.toBe(0)
        expect(result.stdout + result.stderr).toContain(flag)
      }))
  }

  it.scopedLive("sync --purge makes the original's layout and prints a summary; a second run writes nothing", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.marathon.putApp("/shop/web", { domain: "shop.example" })
      dc.marathon.setTask("/shop/web", { id: "web.1", host: "127.0.0.2", ports: [8080, 8081] }, false)
      dc.consul.register("127.0.0.3", { ID: "dead.1", Name: "dead", Address: "127.0.0.3", Tags: ours("/dead", "ops") })
      const args = ["sync", "--purge", "--consul", dc.consulUrl.href, "--marathon", dc.marathonUrl.href, "--registration-id", "ops"]
      const first = yield* runCli(args)
      expect(first.code, first.stderr).toBe(0)
      expect(first.stdout).toContain("registered 1")
      expect(first.stdout).toContain("deregistered 1")
      expect(Object.fromEntries(dc.consul.services("127.0.0.2"))).toEqual({
        "web.1": { ID: "web.1", Service: "shop-web", Address: "127.0.0.2", Port: 8080, Tags: ours("/shop/web", "ops") }
      })
      expect(dc.consul.services("127.0.0.3").size).toBe(0)
      expect(dc.consul.kv.get("consular/shop-web/domain")).toBe("\"shop.example\"")
      dc.consul.resetCounters()
      const second = yield* runCli(args)
      expect(second.code).toBe(0)
      expect(dc.consul.writes).toBe(0)
    }))

  it.scopedLive("sync --health-checks ttl --service-meta: the check with its TTL, the verdict, the Meta", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.marathon.putApp("/shop/web", { tier: "front" })
      dc.marathon.setTask("/shop/web", { id: "web.1", host: "127.0.0.2", ports: [8080] }, false)
      const args = ["sync", "--consul", dc.consulUrl.href, "--marathon", dc.marathonUrl.href, "--health-checks", "ttl", "--health-ttl", "2h",
        "--deregister-critical-after", "90m", "--service-meta"]
      const result = yield* runCli(args)
      expect(result.code, result.stderr).toBe(0)
      expect(result.stdout).toContain("checks updated 1")
      expect(dc.consul.checks("127.0.0.2").get("service:web.1")).toMatchObject({
        TTL: "2h", DeregisterCriticalServiceAfter: "90m", Status: "passing", Output: "Marathon: the app has no health checks"
      })
      expect(dc.consul.services("127.0.0.2").get("web.1")?.Meta).toEqual({
        "consular-reg-id": "consular", "external-source": "marathon", "marathon-app-id": "/shop/web", "marathon-task-id": "web.1", tier: "front"
      })
    }))

  it.scopedLive("sync exits 1 with a clear message when Marathon cannot be read, and writes nothing", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      const port = yield* freePort()
      dc.consul.resetCounters()
      const result = yield* runCli(["sync", "--purge", "--consul", dc.consulUrl.href, "--marathon", `http://127.0.0.1:${port}`, "--timeout", "0.5"])
      expect(result.code).toBe(1)
      expect(result.stderr).toContain("cannot read Marathon")
      expect(dc.consul.writes).toBe(0)
    }))

  it.scopedLive("bare `consular --flags` runs the daemon: subscribes, syncs, handles events, exits 0 on SIGTERM", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.marathon.setTask("/web", { id: "web.1", host: "127.0.0.2", ports: [1] }, false)
      const port = yield* freePort()
      const logDir = mkdtempSync(join(tmpdir(), "consular-"))
      const logfile = join(logDir, "consular.log")
      const daemon = yield* startCli(["--host", "127.0.0.1", "--port", `${port}`, "--consul", dc.consulUrl.href,
        "--marathon", dc.marathonUrl.href, "--sync-interval", "1", "--purge", "--logfile", logfile])
      yield* eventually("the daemon serves GET /", async () => (await fetch(`http://127.0.0.1:${port}/`)).status === 200)
      yield* eventually("the callback subscription", () => dc.marathon.subscriptions.includes(`http://127.0.0.1:${port}/events?registration=consular`))
      yield* eventually("the first sync", () => dc.consul.services("127.0.0.2").has("web.1"))
      // Marathon delivers a RUNNING event through the callback, as the real one does
      dc.marathon.setTask("/web", { id: "web.2", host: "127.0.0.3", ports: [2] })
      yield* eventually("the event's registration", () => dc.consul.services("127.0.0.3").has("web.2"))
      const response = yield* Effect.promise(() =>
        fetch(`http://127.0.0.1:${port}/events`, { method: "POST", body: JSON.stringify(statusUpdate({ taskId: "web.2", taskStatus: "TASK_KILLED", appId: "/web", host: "127.0.0.3" })) })
      )
      expect(response.status).toBe(200)
      expect(dc.consul.services("127.0.0.3").has("web.2")).toBe(false)
      const code = yield* daemon.stop("SIGTERM")
      expect(code).toBe(0)
      expect(readFileSync(logfile, "utf8")).toContain("sync done")
    }))

  it.scopedLive("SIGTERM lets an event in flight finish: its answer is sent before the daemon exits 0", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      const port = yield* freePort()
      const daemon = yield* startCli(["run", "--host", "127.0.0.1", "--port", `${port}`, "--consul", dc.consulUrl.href,
        "--marathon", dc.marathonUrl.href, "--sync-interval", "0", "--events", "callback", "--timeout", "0.5"])
      yield* eventually("the daemon serves GET /", async () => (await fetch(`http://127.0.0.1:${port}/`)).status === 200)
      dc.consul.register("127.0.0.3", { ID: "web.2", Name: "web", Address: "127.0.0.3", Port: 2, Tags: ["consular-reg-id=consular", "consular-app-id=/web"] })
      // the task's agent never answers: the kill is still being applied (timeouts, retries) when SIGTERM comes
      dc.consul.setFault("127.0.0.3", { _tag: "Hang" })
      const answer = fetch(`http://127.0.0.1:${port}/events`, {
        method: "POST",
        body: JSON.stringify(statusUpdate({ taskId: "web.2", taskStatus: "TASK_KILLED", appId: "/web", host: "127.0.0.3" })),
        signal: AbortSignal.timeout(30_000)
      }).then(async (response) => ({ status: response.status, json: await response.json() as unknown }))
      yield* Effect.sleep("300 millis")
      const code = yield* daemon.stop("SIGTERM")
      expect(code).toBe(0)
      // answered, not cut off: Consul failed the request, so a 502 naming Consul
      const answered = yield* Effect.promise(() => answer)
      expect(answered.status).toBe(502)
      expect(answered.json).toMatchObject({ upstream: "consul" })
    }))

  it.scopedLive("the daemon serves with Marathon down at start, and converges once it is back", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      const marathonPort = yield* freePort()
      const port = yield* freePort()
      const daemon = yield* startCli(["run", "--host", "127.0.0.1", "--port", `${port}`, "--consul", dc.consulUrl.href,
        "--marathon", `http://127.0.0.1:${marathonPort}`, "--sync-interval", "1", "--timeout", "0.5"])
      yield* eventually("the daemon serves GET /", async () => (await fetch(`http://127.0.0.1:${port}/`)).status === 200)
      dc.marathon.setTask("/web", { id: "web.1", host: "127.0.0.2", ports: [1] }, false)
      yield* serveMarathon(dc.marathon, { address: "127.0.0.1", port: marathonPort })
      yield* eventually("the sync after Marathon is back", () => dc.consul.services("127.0.0.2").has("web.1"), 15_000)
      yield* eventually("the subscription after Marathon is back", () => dc.marathon.subscriptions.length === 1, 15_000)
      expect(yield* daemon.stop("SIGINT")).toBe(0)
    }))

  it.scopedLive("an unparseable HTTP request gets a JSON 400 too, and the daemon keeps serving", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      const port = yield* freePort()
      const daemon = yield* startCli(["run", "--host", "127.0.0.1", "--port", `${port}`, "--consul", dc.consulUrl.href,
        "--marathon", dc.marathonUrl.href, "--events", "callback"])
      yield* eventually("the daemon serves GET /", async () => (await fetch(`http://127.0.0.1:${port}/`)).status === 200)
      for (const garbage of ["GARBAGE\r\n\r\n", "POST /events HTTP/1.1\r\nContent-Length: abc\r\n\r\n"]) {
        const answer = yield* Effect.promise(() =>
          new Promise<string>((resolve, reject) => {
            const socket = connect(port, "127.0.0.1", () => socket.end(garbage))
            let data = ""
            socket.on("data", (chunk) => (data += chunk))
            socket.on("close", () => resolve(data))
            socket.on("error", reject)
            socket.setTimeout(5_000, () => socket.destroy(new Error("no answer")))
          })
        )
        expect(answer).toMatch(/^HTTP\/1\.1 400/)
        expect(JSON.parse(answer.slice(answer.indexOf("\r\n\r\n") + 4))).toMatchObject({ error: "bad request" })
      }
      expect((yield* Effect.promise(() => fetch(`http://127.0.0.1:${port}/`))).status).toBe(200)
      expect(yield* daemon.stop()).toBe(0)
    }))
})
