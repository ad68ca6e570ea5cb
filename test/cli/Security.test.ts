import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { serveMarathon } from "../../src/embedded/MarathonServer.js"
import { makeDatacenter } from "../support/Datacenter.js"
import { statusUpdate } from "../support/Daemon.js"
import { makePki } from "../support/Pki.js"
import { parsePrometheus } from "../support/Prometheus.js"
import { eventually, freePort, runCli, startCli } from "../support/Process.js"

const secretFile = (contents: string) => {
  const file = join(mkdtempSync(join(tmpdir(), "consular-secret-")), "secret")
  writeFileSync(file, contents)
  return file
}

describe("Consul ACL tokens", () => {
  it.scopedLive("a default-deny Consul: sync works with --consul-token, the token never shows, a 403 is named", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter({ consulToken: "tok-7f3a9c" })
      dc.marathon.putApp("/web", { a: "1" })
      dc.marathon.setTask("/web", { id: "web.1", host: "127.0.0.2", ports: [1] }, false)
      const base = ["sync", "--purge", "--debug", "--consul", dc.consulUrl.href, "--marathon", dc.marathonUrl.href]
      const denied = yield* runCli(base)
      // nothing landed, so not 0: 1 while the embedded Consul refuses reads without a token (nothing was read, nothing
      // written), 2 where Consul filters them as a real one does (each denied write listed)
      expect(denied.code).not.toBe(0)
      expect(denied.stdout + denied.stderr).toContain("permission denied (403)")
      expect(dc.consul.services("127.0.0.2").size).toBe(0)
      const allowed = yield* runCli([...base, "--consul-token", "tok-7f3a9c"])
      expect(allowed.code, allowed.stderr).toBe(0)
      expect(dc.consul.services("127.0.0.2").has("web.1")).toBe(true)
      expect(dc.consul.kv.get("consular/web/a")).toBe("\"1\"")
      expect(allowed.stdout + allowed.stderr).not.toContain("tok-7f3a9c")
      // the daemon's events go through the same token
      const port = yield* freePort()
      const daemon = yield* startCli(["run", "--host", "127.0.0.1", "--port", `${port}`, "--consul", dc.consulUrl.href,
        "--marathon", dc.marathonUrl.href, "--events", "callback", "--consul-token", "tok-7f3a9c", "--debug"])
      yield* eventually("the daemon serves", async () => (await fetch(`http://127.0.0.1:${port}/`)).status === 200)
      const event = JSON.stringify(statusUpdate({ taskId: "web.2", taskStatus: "TASK_RUNNING", appId: "/web", host: "127.0.0.3" }))
      const response = yield* Effect.promise(() => fetch(`http://127.0.0.1:${port}/events`, { method: "POST", body: event }))
      expect(response.status).toBe(200)
      expect(dc.consul.services("127.0.0.3").has("web.2")).toBe(true)
      expect(yield* daemon.stop()).toBe(0)
      expect(daemon.output()).not.toContain("tok-7f3a9c")
    }))

  it.scopedLive("the token may come from CONSUL_HTTP_TOKEN or --consul-token-file", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter({ consulToken: "tok-file-1" })
      dc.marathon.setTask("/web", { id: "web.1", host: "127.0.0.2", ports: [1] }, false)
      const fromFile = yield* runCli(["sync", "--consul", dc.consulUrl.href, "--marathon", dc.marathonUrl.href, "--consul-token-file", secretFile("tok-file-1\n")])
      expect(fromFile.code).toBe(0)
      expect(fromFile.stdout).toContain("errors 0")
      expect(dc.consul.services("127.0.0.2").has("web.1")).toBe(true)
      const fromEnv = yield* runCli(["sync", "--consul", dc.consulUrl.href, "--marathon", dc.marathonUrl.href], { env: { CONSUL_HTTP_TOKEN: "tok-file-1" } })
      expect(fromEnv.code).toBe(0)
      expect(fromEnv.stdout).toContain("errors 0")
    }))
})

describe("TLS", () => {
  it.scopedLive("https Consul and Marathon with a CA the test made; a wrong CA is a clear error", () =>
    Effect.gen(function*() {
      const pki = makePki()
      const dc = yield* makeDatacenter({ tls: pki })
      dc.marathon.setTask("/web", { id: "web.1", host: "127.0.0.3", ports: [1] }, false)
      expect(dc.consulUrl.protocol).toBe("https:")
      const ok = yield* runCli(["sync", "--consul", dc.consulUrl.href, "--marathon", dc.marathonUrl.href,
        "--consul-ca-file", pki.caFile, "--marathon-ca-file", pki.caFile])
      expect(ok.code, ok.stderr).toBe(0)
      // the task's agent is reached by host swap with the same TLS settings
      expect(dc.consul.services("127.0.0.3").has("web.1")).toBe(true)
      const wrong = yield* runCli(["sync", "--consul", dc.consulUrl.href, "--marathon", dc.marathonUrl.href,
        "--consul-ca-file", pki.caFile, "--marathon-ca-file", pki.otherCaFile])
      expect(wrong.code).not.toBe(0)
      expect(wrong.stderr).toMatch(/cannot read Marathon.*(certificate|CERT|self.signed|UNABLE)/i)
      const missing = yield* runCli(["sync", "--consul-ca-file", join(pki.dir, "nope.pem")])
      expect(missing.code).not.toBe(0)
      expect(missing.stdout + missing.stderr).toContain("--consul-ca-file")
    }))
})

describe("Marathon authentication", () => {
  it.scopedLive("basic auth from flags or from the URL, a DC/OS token, and a clear 401 otherwise; no password in output", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter({ marathonAuth: { basicAuth: { user: "ops", password: "pw-91b2" }, token: "dcos-tok-55" } })
      dc.marathon.setTask("/web", { id: "web.1", host: "127.0.0.2", ports: [1] }, false)
      const consul = ["--consul", dc.consulUrl.href]
      const none = yield* runCli(["sync", ...consul, "--marathon", dc.marathonUrl.href])
      expect(none.code).not.toBe(0)
      expect(none.stderr).toContain("unauthorized (401)")
      const flags = yield* runCli(["sync", ...consul, "--marathon", dc.marathonUrl.href, "--marathon-user", "ops", "--marathon-password-file", secretFile("pw-91b2\n")])
      expect(flags.code, flags.stderr).toBe(0)
      const inUrl = new URL(dc.marathonUrl.href)
      inUrl.username = "ops"
      inUrl.password = "pw-91b2"
      const userinfo = yield* runCli(["sync", ...consul, "--marathon", inUrl.href, "--debug"])
      expect(userinfo.code, userinfo.stderr).toBe(0)
      expect(userinfo.stdout + userinfo.stderr).not.toContain("pw-91b2")
      const token = yield* runCli(["sync", ...consul, "--marathon", dc.marathonUrl.href, "--marathon-token-file", secretFile("dcos-tok-55")])
      expect(token.code, token.stderr).toBe(0)
      const lonelyUser = yield* runCli(["sync", ...consul, "--marathon", dc.marathonUrl.href, "--marathon-user", "ops"])
      expect(lonelyUser.code).not.toBe(0)
      expect(lonelyUser.stderr).toContain("--marathon-password-file")
    }))
})

describe("the event source", () => {
  it.scopedLive("auto falls back to /v2/events when Marathon has no callbacks; survives a Marathon restart and resyncs", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.marathon.callbacks = "removed" // Marathon >= 1.5
      const port = yield* freePort()
      const marathonPort = yield* freePort()
      // a Marathon of its own on a fixed port, so that it can be stopped and started again
      let marathonScope = yield* Scope.make()
      yield* serveMarathon(dc.marathon, { address: "127.0.0.1", port: marathonPort }).pipe(Scope.extend(marathonScope))
      const daemon = yield* startCli(["run", "--host", "127.0.0.1", "--port", `${port}`, "--consul", dc.consulUrl.href,
        "--marathon", `http://127.0.0.1:${marathonPort}`, "--events", "auto", "--purge", "--timeout", "0.5"])
      const streams = () => dc.marathon.requestLog.filter((op) => op === "events").length
      yield* eventually("the stream attached", () => streams() === 1)
      yield* eventually("the log names the source", () => daemon.output().includes("source=sse"))
      dc.marathon.setTask("/web", { id: "web.1", host: "127.0.0.2", ports: [1] })
      yield* eventually("RUNNING applied from the stream", () => dc.consul.services("127.0.0.2").has("web.1"))
      dc.marathon.endTask("/web", "web.1", "TASK_KILLED")
      yield* eventually("KILLED applied from the stream", () => !dc.consul.services("127.0.0.2").has("web.1"))
      // Marathon goes away; a task starts meanwhile without anyone hearing of it
      yield* Scope.close(marathonScope, Exit.void)
      yield* eventually("the daemon notices", () => daemon.output().includes("event stream lost"))
      dc.marathon.setTask("/web", { id: "web.2", host: "127.0.0.3", ports: [2] }, false)
      marathonScope = yield* Scope.make()
      yield* serveMarathon(dc.marathon, { address: "127.0.0.1", port: marathonPort }).pipe(Scope.extend(marathonScope))
      yield* eventually("the full sync after reconnecting", () => dc.consul.services("127.0.0.3").has("web.2"), 20_000)
      expect(streams()).toBeGreaterThanOrEqual(2)
      expect(dc.marathon.subscriptions).toEqual([])
      expect(yield* daemon.stop()).toBe(0)
      yield* Scope.close(marathonScope, Exit.void)
    }))

  it.scopedLive("auto uses callbacks when Marathon accepts them, and SSE when it answers 400 (no http_callback)", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      const port = yield* freePort()
      const withCallbacks = yield* startCli(["run", "--host", "127.0.0.1", "--port", `${port}`, "--consul", dc.consulUrl.href,
        "--marathon", dc.marathonUrl.href, "--events", "auto"])
      yield* eventually("the callback subscription", () => dc.marathon.subscriptions.length === 1)
      expect(dc.marathon.requestLog).not.toContain("events")
      expect(yield* withCallbacks.stop()).toBe(0)
      dc.marathon.callbacks = "disabled"
      const port2 = yield* freePort()
      const withStream = yield* startCli(["run", "--host", "127.0.0.1", "--port", `${port2}`, "--consul", dc.consulUrl.href,
        "--marathon", dc.marathonUrl.href, "--events", "auto"])
      yield* eventually("the stream attached", () => dc.marathon.requestLog.includes("events"))
      expect(yield* withStream.stop()).toBe(0)
    }))
})

describe("the callback secret", () => {
  it.scopedLive("--events-secret-file: the callback URL carries it, POST /events without it is 401 and changes nothing", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      const port = yield* freePort()
      const daemon = yield* startCli(["run", "--host", "127.0.0.1", "--port", `${port}`, "--consul", dc.consulUrl.href,
        "--marathon", dc.marathonUrl.href, "--events", "callback", "--events-secret-file", secretFile("s3cr3t-x\n")])
      yield* eventually("the callback subscription", () => dc.marathon.subscriptions.length === 1)
      expect(dc.marathon.subscriptions).toEqual([`http://127.0.0.1:${port}/events?registration=consular&secret=s3cr3t-x`])
      const event = JSON.stringify(statusUpdate({ taskId: "web.1", taskStatus: "TASK_RUNNING", appId: "/web", host: "127.0.0.2" }))
      const refused = yield* Effect.promise(() => fetch(`http://127.0.0.1:${port}/events?registration=consular`, { method: "POST", body: event }))
      expect(refused.status).toBe(401)
      expect(yield* Effect.promise(() => refused.json())).toMatchObject({ error: "unauthorized" })
      expect(dc.consul.services("127.0.0.2").size).toBe(0)
      const accepted = yield* Effect.promise(() => fetch(`http://127.0.0.1:${port}/events?registration=consular&secret=s3cr3t-x`, { method: "POST", body: event }))
      expect(accepted.status).toBe(200)
      expect(dc.consul.services("127.0.0.2").has("web.1")).toBe(true)
      expect(daemon.output()).not.toContain("s3cr3t-x")
      expect(yield* daemon.stop()).toBe(0)
    }))
})

describe("operations endpoints", () => {
  it.scopedLive("/health, /ready before and after the first sync, /metrics after a known sequence of events", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.marathon.setTask("/web", { id: "web.1", host: "127.0.0.2", ports: [1] }, false)
      const marathonPort = yield* freePort()
      const port = yield* freePort()
      const base = `http://127.0.0.1:${port}`
      // Marathon is down at first: the daemon serves, but is not ready
      const daemon = yield* startCli(["run", "--host", "127.0.0.1", "--port", `${port}`, "--consul", dc.consulUrl.href,
        "--marathon", `http://127.0.0.1:${marathonPort}`, "--sync-interval", "1", "--events", "callback", "--timeout", "0.3"])
      yield* eventually("/health", async () => (await fetch(`${base}/health`)).status === 200)
      const notReady = yield* Effect.promise(() => fetch(`${base}/ready`))
      expect(notReady.status).toBe(503)
      expect(yield* Effect.promise(() => notReady.json())).toMatchObject({ status: "not ready" })
      yield* serveMarathon(dc.marathon, { address: "127.0.0.1", port: marathonPort })
      yield* eventually("/ready", async () => (await fetch(`${base}/ready`)).status === 200, 20_000)
      const post = (body: object) => Effect.promise(() => fetch(`${base}/events`, { method: "POST", body: JSON.stringify(body) }))
      expect((yield* post(statusUpdate({ taskId: "web.2", taskStatus: "TASK_RUNNING", appId: "/web", host: "127.0.0.2" }))).status).toBe(200)
      expect((yield* post(statusUpdate({ taskId: "web.2", taskStatus: "TASK_KILLED", appId: "/web", host: "127.0.0.2" }))).status).toBe(200)
      expect((yield* post({ eventType: "deployment_success" })).status).toBe(200)
      const text = yield* Effect.promise(async () => (await fetch(`${base}/metrics`)).text())
      const exposition = parsePrometheus(text)
      const sample = (name: string, labels: Record<string, string>) => exposition.value(name, labels)
      expect(sample("consular_events_total", { event_type: "status_update_event", task_state: "TASK_RUNNING" })).toBe(1)
      expect(sample("consular_events_total", { event_type: "status_update_event", task_state: "TASK_KILLED" })).toBe(1)
      expect(sample("consular_events_total", { event_type: "deployment_success", task_state: "" })).toBe(1)
      expect(sample("consular_sync_passes_total", { outcome: "ok" })).toBeGreaterThanOrEqual(1)
      expect(sample("consular_event_source_connected", { source: "callback" })).toBe(1)
      expect(exposition.types.has("process_resident_memory_bytes")).toBe(true)
      expect(yield* daemon.stop()).toBe(0)
    }))
})
