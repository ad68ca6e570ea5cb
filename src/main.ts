#!/usr/bin/env node
import { Command, Options } from "@effect/cli"
import { HelpDoc } from "@effect/cli"
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { Console, Duration, Effect, Layer, LogLevel, Option } from "effect"
import { ConsulLive } from "./services/Consul.js"
import { LoggerLive } from "./services/Logger.js"
import { MarathonLive } from "./services/Marathon.js"
import { runDaemon } from "./programs/Daemon.js"
import { LedgerLive } from "./programs/Ledger.js"
import { TopologyLive } from "./programs/Topology.js"
import { planLines, summaryLines, syncOnce } from "./programs/Sync.js"

// consular [--scheme S] [--host H] [--port P] [--consul URL] [--marathon URL] [--registration-id ID]
//          [--sync-interval N] [--purge/--no-purge] [--logfile F] [--debug/--no-debug] [--timeout S]
//          [--fallback/--no-fallback] [--fallback-timeout S] [run | sync [--dry-run] | demo]
// The flags, names and defaults are the Python consular's: existing users swap it in unchanged.

const invalid = (flag: string, why: string) => (): HelpDoc.HelpDoc => HelpDoc.p(`--${flag}: ${why}`)

const httpUrl = (raw: string): URL => {
  const url = new URL(raw)
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new Error("not http(s)")
  return url
}

/** A number flag parsed here, so that a bad value is reported with the flag's name (the CLI library's is not). */
const numberFlag = (flag: string, fallback: number, valid: (n: number) => boolean, why: string) =>
  Options.text(flag).pipe(
    Options.withDefault(String(fallback)),
    Options.mapTryCatch((raw) => {
      const n = Number(raw.trim())
      if (raw.trim() === "" || !Number.isFinite(n) || !valid(n)) throw new Error(why)
      return n
    }, invalid(flag, why))
  )
const scheme = Options.choice("scheme", ["http", "https"]).pipe(
  Options.withDefault("http" as const),
  Options.withDescription("scheme of the callback URL given to Marathon")
)
const host = Options.text("host").pipe(
  Options.withDefault("localhost"),
  Options.withDescription("address to listen on, and host of the callback URL given to Marathon")
)
const port = numberFlag("port", 7000, (p) => Number.isInteger(p) && p >= 1 && p <= 65535, "must be an integer from 1 to 65535").pipe(
  Options.withDescription("port to listen on, and port of the callback URL")
)
const consul = Options.text("consul").pipe(
  Options.withDefault("http://localhost:8500"),
  Options.mapTryCatch(httpUrl, invalid("consul", "must be an http:// or https:// URL")),
  Options.withDescription("main Consul endpoint: KV, catalog, fallback agent; agents are reached on its scheme and port")
)
const marathon = Options.text("marathon").pipe(
  Options.withDefault("http://localhost:8080"),
  Options.mapTryCatch(httpUrl, invalid("marathon", "must be an http:// or https:// URL")),
  Options.withDescription("Marathon endpoint")
)
const registrationId = Options.text("registration-id").pipe(
  Options.withDefault("consular"),
  Options.mapTryCatch((id) => {
    if (id === "" || /[\s&#?]/.test(id)) throw new Error("id")
    return id
  }, invalid("registration-id", "must be non-empty, without spaces, '&', '#' or '?'")),
  Options.withDescription("owner tag consular-reg-id=<id> on every service consular registers")
)
const syncInterval = numberFlag("sync-interval", 0, (n) => n >= 0, "must be 0 (no periodic sync) or a positive number of seconds").pipe(
  Options.withDescription("seconds between syncs; the first runs at start; 0: events only")
)
const purge = Options.boolean("purge", { negationNames: ["no-purge"] }).pipe(
  Options.withDescription("deregister and delete what consular wrote that Marathon no longer runs")
)
const logfile = Options.text("logfile").pipe(Options.optional, Options.withDescription("append log lines to this file instead of stdout"))
const debug = Options.boolean("debug", { negationNames: ["no-debug"] }).pipe(
  Options.withDescription("log every HTTP request and response")
)
const timeout = numberFlag("timeout", 5, (n) => n > 0, "must be a positive number of seconds").pipe(
  Options.withDescription("HTTP timeout in seconds for Marathon and Consul")
)
const fallback = Options.boolean("fallback", { negationNames: ["no-fallback"] }).pipe(
  Options.withDescription("register on the main agent when the task host's agent cannot be reached")
)
const fallbackTimeout = numberFlag("fallback-timeout", 2, (n) => n > 0, "must be a positive number of seconds").pipe(
  Options.withDescription("timeout in seconds of a registration on the fallback agent")
)

const maxEventBytes = numberFlag("max-event-bytes", 1024 * 1024, (n) => Number.isInteger(n) && n >= 1, "must be a positive whole number of bytes").pipe(
  Options.withDescription("largest event body accepted; larger ones get 413")
)
const dryRun = Options.boolean("dry-run").pipe(Options.withDescription("print the plan, write nothing"))

/** Flags every command takes; the daemon adds its listener and schedule. */
const commonOptions = { consul, marathon, registrationId, purge, logfile, debug, timeout, fallback, fallbackTimeout }
const daemonOptions = { ...commonOptions, scheme, host, port, syncInterval, maxEventBytes }
type CommonOptions = Command.Command.ParseConfig<typeof commonOptions>
type DaemonOptions = Command.Command.ParseConfig<typeof daemonOptions>

const seconds = (s: number) => Duration.millis(Math.round(s * 1000))

/** Every layer factory is called here, once per invocation. */
const servicesLive = (o: CommonOptions) =>
  Layer.mergeAll(
    ConsulLive({ url: o.consul, timeout: seconds(o.timeout), retries: 3, debug: o.debug, fallbackTimeout: seconds(o.fallbackTimeout) }),
    MarathonLive({ url: o.marathon, timeout: seconds(o.timeout), retries: 3, debug: o.debug }),
    LedgerLive,
    TopologyLive(o.consul)
  )

const loggerLive = (o: CommonOptions, oneShot: boolean) =>
  LoggerLive({
    format: "text",
    level: o.debug ? LogLevel.Debug : LogLevel.Info,
    file: Option.getOrUndefined(o.logfile),
    toStderr: oneShot
  })

const syncSettings = (o: CommonOptions) => ({
  registrationId: o.registrationId,
  purge: o.purge,
  fallback: o.fallback,
  fallbackTimeout: seconds(o.fallbackTimeout),
  consulUrl: o.consul
})

const runHandler = (o: DaemonOptions) =>
  runDaemon({
    ...syncSettings(o),
    scheme: o.scheme,
    host: o.host,
    port: o.port,
    syncInterval: o.syncInterval,
    maxEventBytes: o.maxEventBytes
  }).pipe(Effect.provide(Layer.merge(servicesLive(o), loggerLive(o, false))))

// Invoked with no subcommand, consular runs the daemon, as the Python CLI did.
const consular = Command.make("consular", daemonOptions, runHandler)

const run = Command.make("run", daemonOptions, runHandler).pipe(
  Command.withDescription("the daemon: Marathon events, callback subscription, periodic sync and purge")
)

const sync = Command.make("sync", { ...commonOptions, dryRun }, (o) =>
  Effect.gen(function*() {
    const report = yield* syncOnce({ ...syncSettings(o), dryRun: o.dryRun }).pipe(
      Effect.catchTag("MarathonError", (error) =>
        Console.error(`consular: cannot read Marathon at ${o.marathon.origin}: ${error.message}; nothing was changed`).pipe(
          Effect.zipRight(Effect.fail(error))
        ))
    )
    if (o.dryRun) {
      const lines = planLines(report.plan)
      yield* Console.log(lines.length === 0 ? "plan: nothing to do" : ["plan:", ...lines.map((l) => `  ${l}`)].join("\n"))
    }
    yield* Console.log(summaryLines(report).join("\n"))
  }).pipe(Effect.provide(Layer.merge(servicesLive(o), loggerLive(o, true))))
).pipe(Command.withDescription("one pass: make Consul match Marathon, print a summary, exit"))

const cli = Command.run(consular.pipe(Command.withSubcommands([run, sync])), {
  name: "consular",
  version: "0.1.0"
})

cli(process.argv).pipe(
  Effect.provide(NodeContext.layer),
  NodeRuntime.runMain({ disablePrettyLogger: true, disableErrorReporting: true })
)
