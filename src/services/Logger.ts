import { Headers } from "@effect/platform"
import { Context, Effect, Layer, Logger, LogLevel } from "effect"
import * as fs from "node:fs"

/**
 * The one logger setup. Text is logfmt (`timestamp=… level=INFO message="sync done" apps=3`), json is one object
 * per line with level, message and annotations. Lines go to stdout, stderr, or are appended to `--logfile`.
 * Messages are constant strings; data goes in annotations. No secret is ever annotated.
 */
export type LogFormat = "text" | "json"

export interface LoggerSettings {
  readonly format: LogFormat
  readonly level: LogLevel.LogLevel
  /** append to this file (as the original's --logfile); stdout otherwise */
  readonly file?: string | undefined
  /** one-shot commands keep stdout for their report */
  readonly toStderr?: boolean | undefined
}

const formatter = (format: LogFormat) => format === "json" ? Logger.jsonLogger : Logger.logfmtLogger

/**
 * The headers that carry consular's secrets: the Consul ACL token and Marathon's credentials. Whatever prints a
 * request (a log line, an error, a defect's cause) shows them as `<redacted>`.
 */
export const secretHeaders: ReadonlyArray<string> = ["x-consul-token", "authorization"]

const redactSecretHeaders = Layer.fiberRefLocallyScopedWith(Headers.currentRedactedNames, (names) => [
  ...names,
  ...secretHeaders.filter((name) => !names.includes(name))
])

export const LoggerLive = (settings: LoggerSettings): Layer.Layer<never> => {
  const write = settings.file === undefined
    ? Effect.succeed((line: string) => {
      ;(settings.toStderr === true ? process.stderr : process.stdout).write(line + "\n")
    })
    : Effect.acquireRelease(
      Effect.sync(() => fs.createWriteStream(settings.file!, { flags: "a" })),
      (stream) => Effect.async<void>((resume) => {
        stream.end(() => resume(Effect.void))
      })
    ).pipe(Effect.map((stream) => (line: string) => {
      stream.write(line + "\n")
    }))
  return Layer.unwrapScoped(Effect.map(write, (emit) =>
    Layer.mergeAll(
      Logger.replace(Logger.defaultLogger, Logger.map(formatter(settings.format), emit)),
      Logger.minimumLogLevel(settings.level),
      redactSecretHeaders
    )
  ))
}

/** Captures formatted lines in memory: for tests where a log line is the behaviour (or must not leak a secret). */
export class LoggedLines extends Context.Tag("consular/LoggedLines")<LoggedLines, Array<string>>() {}

export const LoggerMemory = (format: LogFormat = "text", level: LogLevel.LogLevel = LogLevel.All): Layer.Layer<LoggedLines> =>
  Layer.unwrapEffect(Effect.sync(() => {
    const lines: Array<string> = []
    return Layer.mergeAll(
      Logger.replace(Logger.defaultLogger, Logger.map(formatter(format), (line) => {
        lines.push(line)
      })),
      Logger.minimumLogLevel(level),
      redactSecretHeaders,
      Layer.succeed(LoggedLines, lines)
    )
  }))
