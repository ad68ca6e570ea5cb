import { describe, expect, it } from "@effect/vitest"
import { HttpClientError, HttpClientRequest } from "@effect/platform"
import { Cause, Effect, LogLevel } from "effect"
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { LoggedLines, LoggerLive, LoggerMemory } from "../../src/services/Logger.js"

describe("Logger", () => {
  it.effect("json: one object per line with level, message and annotations", () =>
    Effect.gen(function*() {
      yield* Effect.logInfo("sync done").pipe(Effect.annotateLogs({ apps: 3, agent: "127.0.0.2" }))
      const [line] = yield* LoggedLines
      const parsed = JSON.parse(line!)
      expect(parsed).toMatchObject({ message: "sync done", logLevel: "INFO", annotations: { apps: 3, agent: "127.0.0.2" } })
    }).pipe(Effect.provide(LoggerMemory("json"))))

  it.effect("text: logfmt, and lines under the level are dropped", () =>
    Effect.gen(function*() {
      yield* Effect.logDebug("hidden")
      yield* Effect.logWarning("event refused").pipe(Effect.annotateLogs({ error: "invalid JSON" }))
      const lines = yield* LoggedLines
      expect(lines).toHaveLength(1)
      expect(lines[0]).toMatch(/level=WARN .*message="event refused".*error="invalid JSON"/)
    }).pipe(Effect.provide(LoggerMemory("text", LogLevel.Info))))

  it.live("--logfile appends to what the file already holds", () =>
    Effect.gen(function*() {
      const file = join(mkdtempSync(join(tmpdir(), "consular-log-")), "consular.log")
      writeFileSync(file, "earlier line\n")
      yield* Effect.scoped(
        Effect.logInfo("sync done").pipe(Effect.provide(LoggerLive({ format: "json", level: LogLevel.Info, file })))
      )
      const lines = readFileSync(file, "utf8").trim().split("\n")
      expect(lines[0]).toBe("earlier line")
      expect(JSON.parse(lines[1]!)).toMatchObject({ message: "sync done", logLevel: "INFO" })
    }))

  for (const format of ["text", "json"] as const) {
    it.effect(`${format}: a logged request or request error never shows the Consul token or Marathon's credentials`, () =>
      Effect.gen(function*() {
        const request = HttpClientRequest.put("http://127.0.0.2:8500/v1/agent/service/register").pipe(
          HttpClientRequest.setHeaders({ "x-consul-token": "tok-5e1f9a", authorization: "Basic c2VjcmV0LXB3" })
        )
        yield* Effect.logDebug("http", request)
        yield* Effect.logError("defect", Cause.die(new HttpClientError.RequestError({ request, reason: "Transport" })))
        const lines = yield* LoggedLines
        expect(lines).toHaveLength(2)
        expect(lines.join("\n")).toContain("x-consul-token") // the header is there, its value is not
        expect(lines.join("\n")).not.toContain("tok-5e1f9a")
        expect(lines.join("\n")).not.toContain("c2VjcmV0LXB3")
      }).pipe(Effect.provide(LoggerMemory(format))))
  }
})
