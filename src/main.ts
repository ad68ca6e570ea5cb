#!/usr/bin/env node
import { Command, Options } from "@effect/cli"
import { HelpDoc } from "@effect/cli"
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Layer, LogLevel } from "effect"
import { ConsulLive } from "./services/Consul.js"
import { LoggerLive } from "./services/Logger.js"
import { MarathonLive } from "./services/Marathon.js"
import { LedgerLive } from "./programs/Ledger.js"
import { planLines, summaryLines, syncOnce } from "./programs/Sync.js"

// consular [--scheme S] [--host H] [--port P] [--consul URL] [--marathon URL] [--registration-id ID]
//          [--sync-interval N] [--purge/--no-purge] [--logfile F] [--debug/--no-debug] [--timeout S]
//          [--fallback/--no-fallback] [--fallback-timeout S] [run | sync [--dry-run] | demo]
// The flags, names and defaults are the Python consular's: existing users swap it in unchanged.

const invalid = (flag: string, why: string) => (): HelpDoc.HelpDoc => HelpDoc.p(`--${flag}: ${why}`)

const httpUrl = (flag: string) => (raw: string): URL => {
  const url = new URL(raw)
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new Error("not http(s)")
  return url
}

const positiveSeconds = (flag: string, allowZero: boolean) => (value: number): number => {
  if (!Number.isFinite(value) || value < 0 || (!allowZero && value === 0)) throw new Error(flag)
  return value
}

const scheme = Options.choice("scheme", ["http", "https"]).pipe(
  Options.withDefault("http" as const),
  Options.withDescription("scheme of the callback URL given to Marathon")
)
const host = Options.text("host").pipe(
  Options.withDefault("localhost"),
  Options.withDescription("address to listen on, and host of the callback URL given to Marathon")
)
const port = Options.integer("port").pipe(
  Options.withDefault(7000),
  Options.mapTryCatch((p) => {
    if (p < 1 || p > 65535) throw new Error("range")
    return p
  }, invalid("port", "must be an integer from 1 to 65535")),
  Options.withDescription("port to listen on, and port of the callback URL")
)
const consul = Options.text("consul").pipe(
  Options.withDefault("http://localhost:8500"),
  Options.mapTryCatch(httpUrl("consul"), invalid("consul", "must be an http:// or https:// URL")),
  Options.withDescription("main Consul endpoint: KV, catalog, fallback agent; agents are reached on its scheme and port")
)
const marathon = Options.text("marathon").pipe(
  Options.withDefault("http://localhost:8080"),
  Options.mapTryCatch(httpUrl("marathon"), invalid("marathon", "must be an http:// or https:// URL")),
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
const syncInterval = Options.integer("sync-interval").pipe(
  Options.withDefault(0),
  Options.mapTryCatch(positiveSeconds("sync-interval", true), invalid("sync-interval", "must be 0 (no periodic sync) or a number of seconds")),
  Options.withDescription("seconds between syncs; the first runs at start; 0: events only")
)
const purge = Options.boolean("purge", { negationNames: ["no-purge"] }).pipe(
  Options.withDescription("deregister and delete what consular wrote that Marathon no longer runs")
)
const logfile = Options.text("logfile").pipe(Options.optional, Options.withDescription("append log lines to this file instead of stdout"))
const debug = Options.boolean("debug", { negationNames: ["no-debug"] }).pipe(
  Options.withDescription("log every HTTP request and response")
)
const timeout = Options.float("timeout").pipe(
  Options.withDefault(5),
  Options.mapTryCatch(positiveSeconds("timeout", false), invalid("timeout", "must be a positive number of seconds")),
  Options.withDescription("HTTP timeout in seconds for Marathon and Consul")
)
const fallback = Options.boolean("fallback", { negationNames: ["no-fallback"] }).pipe(
  Options.withDescription("register on the main agent when the task host's agent cannot be reached")
)
const fallbackTimeout = Options.float("fallback-timeout").pipe(
  Options.withDefault(2),
  Options.mapTryCatch(positiveSeconds("fallback-timeout", false), invalid("fallback-timeout", "must be a positive number of seconds")),
  Options.withDescription("timeout in seconds of a registration on the fallback agent")
)

const rootOptions = {
  scheme, host, port, consul, marathon, registrationId, syncInterval, purge, logfile, debug, timeout, fallback, fallbackTimeout
}
export type RootOptions = Command.Command.ParseConfig<typeof rootOptions>

const seconds = (s: number) => `${s * 1000} millis` as const

/** Every layer factory is called here, once per invocation. */
const servicesLive = (o: RootOptions) =>
  Layer.mergeAll(
    ConsulLive({ url: o.consul, timeout: seconds(o.timeout), retries: 3, debug: o.debug, fallbackTimeout: seconds(o.fallbackTimeout) }),
    MarathonLive({ url: o.marathon, timeout: seconds(o.timeout), retries: 3, debug: o.debug }),
    LedgerLive
  )

const loggerLive = (o: RootOptions, oneShot: boolean) =>
  LoggerLive({
    format: "text",
    level: o.debug ? LogLevel.Debug : LogLevel.Info,
    file: o.logfile._tag === "Some" ? o.logfile.value : undefined,
    toStderr: oneShot
  })

const consular = Command.make("consular", rootOptions, () =>
  Console.error("consular: the daemon (`consular run`) is not built yet; use `consular sync`").pipe(
    Effect.zipRight(Effect.fail(new Error("not built yet")))
  ))

const dryRun = Options.boolean("dry-run").pipe(Options.withDescription("print the plan, write nothing"))

const sync = Command.make("sync", { dryRun }, ({ dryRun }) =>
  Effect.gen(function*() {
    const o = yield* consular
    const report = yield* syncOnce({
      registrationId: o.registrationId,
      purge: o.purge,
      fallback: o.fallback,
      fallbackTimeout: seconds(o.fallbackTimeout),
      consulUrl: o.consul,
      dryRun
    }).pipe(
      Effect.catchTag("MarathonError", (error) =>
        Console.error(`consular: cannot read Marathon at ${o.marathon.origin}: ${error.message}; nothing was changed`).pipe(
          Effect.zipRight(Effect.fail(error))
        ))
    )
    if (dryRun) {
      const lines = planLines(report.plan)
      yield* Console.log(lines.length === 0 ? "plan: nothing to do" : ["plan:", ...lines.map((l) => `  ${l}`)].join("\n"))
    }
    yield* Console.log(summaryLines(report).join("\n"))
  }).pipe(
    Effect.provide(Layer.unwrapEffect(Effect.map(consular, (o) => Layer.merge(servicesLive(o), loggerLive(o, true)))))
  )).pipe(Command.withDescription("one pass: make Consul match Marathon, print a summary, exit"))

const cli = Command.run(consular.pipe(Command.withSubcommands([sync])), {
  name: "consular",
  version: "0.1.0"
})

cli(process.argv).pipe(
  Effect.provide(NodeContext.layer),
  NodeRuntime.runMain({ disablePrettyLogger: true, disableErrorReporting: true })
)
