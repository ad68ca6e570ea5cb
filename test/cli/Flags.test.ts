import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { makeDatacenter } from "../support/Datacenter.js"
import { eventually, freePort, runCli, startCli } from "../support/Process.js"

const originalFlags = ["scheme", "host", "port", "consul", "marathon", "registration-id", "sync-interval", "purge", "logfile",
  "debug", "timeout", "fallback", "fallback-timeout"]

describe("the CLI an operator expects", () => {
  it.scopedLive("flags before the command are honoured, as after it", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.marathon.setTask("/web", { id: "web.1", host: "127.0.0.2", ports: [1] }, false)
      const before = yield* runCli(["--marathon", dc.marathonUrl.href, "--consul", dc.consulUrl.href, "--registration-id", "ops", "sync"])
      expect(before.code, before.stderr).toBe(0)
      expect(dc.consul.services("127.0.0.2").get("web.1")?.Tags).toContain("consular-reg-id=ops")
      // mixed, with `--name=value`, and a value spelled like a command stays a value
      const mixed = yield* runCli(["--marathon=" + dc.marathonUrl.href, "sync", "--consul=" + dc.consulUrl.href, "--registration-id", "sync"])
      expect(mixed.code, mixed.stderr).toBe(0)
      expect(dc.consul.services("127.0.0.2").get("web.1")?.Tags).toContain("consular-reg-id=sync")
    }))

  it.live("a flag given where it does nothing, twice, or unknown is a clear error naming it", () =>
    Effect.gen(function*() {
      yield* Effect.forEach([
        [["sync", "--port", "7001"], "--port belongs to the daemon"],
        [["--events", "sse", "sync"], "--events belongs to the daemon"],
        [["--dry-run"], "--dry-run belongs to consular sync"],
        [["run", "--dry-run"], "--dry-run belongs to consular sync"],
        [["--marathon", "http://a:8080", "sync", "--marathon", "http://b:8080"], "--marathon given twice"],
        [["sync", "--purge", "--no-purge"], "--no-purge given twice (with --purge)"],
        [["sync", "--marathon-url", "http://a:8080"], "unknown flag --marathon-url"],
        [["demo", "--port", "1"], "demo takes no flags"]
      ] as const, ([args, message]) =>
        Effect.map(runCli(args), (result) => {
          expect(result.code, args.join(" ")).toBe(1)
          expect(result.stderr).toContain(message)
        }), { concurrency: 4 })
    }))

  it.scopedLive("--name= with an empty value means the flag was not given: an empty token is no token", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.marathon.setTask("/web", { id: "web.1", host: "127.0.0.2", ports: [1] }, false)
      const result = yield* runCli(["sync", "--consul-token=", "--consul-token-file=", "--logfile=", "--consul", dc.consulUrl.href,
        "--marathon", dc.marathonUrl.href], { env: { CONSUL_HTTP_TOKEN: "" } })
      expect(result.code, result.stderr).toBe(0)
      expect(dc.consul.services("127.0.0.2").has("web.1")).toBe(true)
      // not given: the defaults hold (--timeout= is 5 seconds, not an error)
      const defaults = yield* runCli(["sync", "--timeout=", "--consul", dc.consulUrl.href, "--marathon", dc.marathonUrl.href])
      expect(defaults.code, defaults.stderr).toBe(0)
    }))

  it.scopedLive("durations as Consul writes them, or a bare number of seconds", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.marathon.setTask("/web", { id: "web.1", host: "127.0.0.2", ports: [1] }, false)
      for (const [timeout, fallbackTimeout] of [["1500ms", "1m30s"], ["1h", "0.5"]]) {
        const result = yield* runCli(["sync", "--timeout", timeout, "--fallback-timeout", fallbackTimeout, "--consul", dc.consulUrl.href, "--marathon", dc.marathonUrl.href])
        expect(result.code, `${timeout} ${fallbackTimeout}: ${result.stderr}`).toBe(0)
      }
      yield* Effect.forEach([["--timeout", "5x"], ["--timeout", "0s"], ["--timeout", "-1s"], ["--fallback-timeout", "1 m"], ["--timeout", "s"]] as const, ([flag, value]) =>
        Effect.map(runCli(["sync", flag, value, "--consul", dc.consulUrl.href, "--marathon", dc.marathonUrl.href]), (result) => {
          expect(result.code, `${flag} ${value}`).toBe(1)
          // the flag's own message, after the command too (not "unknown argument")
          expect(result.stderr).toContain(`${flag}: must be a positive duration`)
        }), { concurrency: 4 })
      // the daemon's --sync-interval takes one too: a task Marathon sends no event for is found by the next pass
      const port = yield* freePort()
      const daemon = yield* startCli(["run", "--host", "127.0.0.1", "--port", `${port}`, "--consul", dc.consulUrl.href,
        "--marathon", dc.marathonUrl.href, "--events", "callback", "--sync-interval", "300ms"])
      yield* eventually("the daemon serves GET /", async () => (await fetch(`http://127.0.0.1:${port}/`)).status === 200)
      dc.marathon.setTask("/web", { id: "web.2", host: "127.0.0.3", ports: [2] }, false)
      yield* eventually("a later periodic pass", () => dc.consul.services("127.0.0.3").has("web.2"))
      expect(yield* daemon.stop()).toBe(0)
    }))

  it.live("--help is compact and grouped: each flag once, typed, with its default and its environment variable", () =>
    Effect.gen(function*() {
      const result = yield* runCli(["--help"])
      expect(result.code).toBe(0)
      const help = result.stdout
      expect(help).not.toContain("A user-defined piece of text")
      expect(help).not.toContain("This setting is optional")
      expect(help.split("\n").length).toBeLessThan(90)
      for (const group of ["Upstreams:", "Security:", "Daemon (consular [run]):", "Logging:"]) expect(help).toContain(group)
      for (const flag of [...originalFlags, "consul-token", "log-level", "log-format", "events", "dry-run"]) {
        // listed once, at the start of its line
        expect(help.match(new RegExp(`^  --${flag}(?=[ ,]|$)`, "gm")) ?? [], flag).toHaveLength(1)
      }
      expect(help).toMatch(/^ {2}--port NUMBER .*\(default: 7000\)/m)
      expect(help).toMatch(/^ {2}--timeout DURATION .*\(default: 5\)/m)
      expect(help).toMatch(/^ {2}--consul-token TOKEN .*env:\s+CONSUL_HTTP_TOKEN/m)
      expect(help).toMatch(/^ {2}--consul-ca-file FILE .*env: CONSUL_CACERT/m)
      expect(help).toContain("Exit status of consular sync:")
      // a command's help lists only its flags
      const syncHelp = (yield* runCli(["sync", "--help"])).stdout
      expect(syncHelp).toContain("--dry-run")
      expect(syncHelp).not.toContain("--port")
      expect(syncHelp).toContain("Exit status of consular sync:")
      const runHelp = (yield* runCli(["--help", "run"])).stdout
      expect(runHelp).toContain("--port")
      expect(runHelp).not.toContain("--dry-run")
    }))

  it.scopedLive("--log-level sets the lowest level logged; --debug still means debug", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.marathon.setTask("/web", { id: "web.1", host: "127.0.0.2", ports: [1] }, false)
      const args = ["--consul", dc.consulUrl.href, "--marathon", dc.marathonUrl.href]
      const plain = yield* runCli(["sync", ...args])
      expect(plain.stderr).toContain("message=\"sync done\"")
      for (const quiet of [["sync", "--log-level", "warning"], ["--log-level=error", "sync"]]) {
        const result = yield* runCli([...quiet, ...args])
        expect(result.code).toBe(0)
        expect(result.stderr).not.toContain("sync done")
      }
      const debug = yield* runCli(["sync", "--log-level", "warning", "--debug", ...args])
      expect(debug.stderr).toMatch(/level=DEBUG .*message=http/)
      const bad = yield* runCli(["sync", "--log-level", "loud", ...args])
      expect(bad.code).toBe(1)
      expect(bad.stderr).toContain("--log-level")
    }))

  it.scopedLive("a defect is printed, message and stack, on stderr and in the log, and the exit status is not 0", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      const dir = mkdtempSync(join(tmpdir(), "consular-defect-"))
      // A defect made honestly: loaded before consular, this module breaks a Node API consular relies on (the
      // HTTP agent its transport builds), so the built CLI, unchanged, meets an exception it does not expect.
      const breakHttp = join(dir, "break-http.mjs")
      writeFileSync(breakHttp, [
        "import { createRequire, syncBuiltinESMExports } from \"node:module\"",
        "const http = createRequire(import.meta.url)(\"node:http\")",
        "http.Agent = class { constructor() { throw new Error(\"broken http.Agent\") } }",
        "syncBuiltinESMExports()"
      ].join("\n"))
      const logfile = join(dir, "consular.log")
      const result = yield* runCli(["sync", "--consul", dc.consulUrl.href, "--marathon", dc.marathonUrl.href, "--logfile", logfile],
        { nodeArgs: ["--import", breakHttp] })
      expect(result.code).toBe(1)
      expect(result.stderr).toContain("consular: defect (a bug): Error: broken http.Agent")
      expect(result.stderr).toMatch(/broken http\.Agent\n\s+at /) // the stack
      const log = readFileSync(logfile, "utf8")
      expect(log).toMatch(/level=FATAL .*message="defect: consular stops" cause="Error: broken http\.Agent\\n\s+at /)
    }))
})
