#!/usr/bin/env node
import { Command, Options } from "@effect/cli"
import { HelpDoc } from "@effect/cli"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Config, Console, Data, Duration, Effect, Layer, LogLevel, Option, Redacted } from "effect"
import { readFileSync } from "node:fs"
import { applyHeapPolicy } from "./HeapPolicy.js"
import { parseGoDuration } from "./domain/GoDuration.js"
import { ConsulLive } from "./services/Consul.js"
import { LoggerLive } from "./services/Logger.js"
import { MarathonLive } from "./services/Marathon.js"
import type { DaemonSettings } from "./programs/Daemon.js"
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
/** A choice flag parsed here, so that a bad value is reported with the flag's name. */
const choiceFlag = <const C extends ReadonlyArray<string>>(flag: string, choices: C, fallback: C[number]) =>
  Options.text(flag).pipe(
    Options.withDefault(fallback),
    Options.mapTryCatch((raw): C[number] => {
      const found = choices.find((choice) => choice === raw.trim())
      if (found === undefined) throw new Error(raw)
      return found
    }, invalid(flag, `must be one of ${choices.join(", ")}`))
  )

const scheme = choiceFlag("scheme", ["http", "https"], "http").pipe(
  Options.withDescription("scheme of the callback URL given to Marathon (default: http)")
)
const host = Options.text("host").pipe(
  Options.withDefault("localhost"),
  Options.withDescription("address to listen on, and host of the callback URL given to Marathon (default: localhost)")
)
const port = numberFlag("port", 7000, (p) => Number.isInteger(p) && p >= 1 && p <= 65535, "must be an integer from 1 to 65535").pipe(
  Options.withDescription("port to listen on, and port of the callback URL (default: 7000)")
)
const consul = Options.text("consul").pipe(
  Options.withDefault("http://localhost:8500"),
  Options.mapTryCatch(httpUrl, invalid("consul", "must be an http:// or https:// URL")),
  Options.withDescription("main Consul endpoint: KV, catalog, fallback agent; agents are reached on its scheme and port (default: http://localhost:8500)")
)
const marathon = Options.text("marathon").pipe(
  Options.withDefault("http://localhost:8080"),
  Options.mapTryCatch(
    (raw) => raw.split(",").map((part) => httpUrl(part.trim())),
    invalid("marathon", "must be an http:// or https:// URL, or several separated by commas")
  ),
  Options.withDescription("Marathon endpoint; several, comma-separated, for a Marathon cluster (default: http://localhost:8080)")
)
const registrationId = Options.text("registration-id").pipe(
  Options.withDefault("consular"),
  Options.mapTryCatch((id) => {
    if (id === "" || /[\s&#?]/.test(id)) throw new Error("id")
    return id
  }, invalid("registration-id", "must be non-empty, without spaces, '&', '#' or '?'")),
  Options.withDescription("owner tag consular-reg-id=<id> on every service consular registers (default: consular)")
)
const syncInterval = numberFlag("sync-interval", 0, (n) => n >= 0, "must be 0 (no periodic sync) or a positive number of seconds").pipe(
  Options.withDescription("seconds between syncs; the first runs at start; 0: events only (default: 0)")
)
const purge = Options.boolean("purge", { negationNames: ["no-purge"] }).pipe(
  Options.withDescription("deregister and delete what consular wrote that Marathon no longer runs")
)
const logfile = Options.text("logfile").pipe(Options.optional, Options.withDescription("append log lines to this file instead of stdout"))
const debug = Options.boolean("debug", { negationNames: ["no-debug"] }).pipe(
  Options.withDescription("log every HTTP request and response")
)
const timeout = numberFlag("timeout", 5, (n) => n > 0, "must be a positive number of seconds").pipe(
  Options.withDescription("HTTP timeout in seconds for Marathon and Consul (default: 5)")
)
const fallback = Options.boolean("fallback", { negationNames: ["no-fallback"] }).pipe(
  Options.withDescription("register on the main agent when the task host's agent cannot be reached")
)
const fallbackTimeout = numberFlag("fallback-timeout", 2, (n) => n > 0, "must be a positive number of seconds").pipe(
  Options.withDescription("timeout in seconds of a registration on the fallback agent (default: 2)")
)

/** A Go duration flag ("1h", "90s"), as Consul reads it; checked here so that a bad one names the flag. */
const durationFlag = (flag: string, valid: (millis: number) => boolean, why: string) =>
  Options.text(flag).pipe(
    Options.mapTryCatch((raw) => {
      const millis = parseGoDuration(raw.trim())
      if (millis === undefined || !valid(millis)) throw new Error(why)
      return { text: raw.trim(), millis }
    }, invalid(flag, why))
  )
const healthChecks = choiceFlag("health-checks", ["none", "ttl"], "none").pipe(
  Options.withDescription("ttl: each service carries a TTL check whose status mirrors Marathon's health checks; none: no check (default: none)")
)
const initialHealth = choiceFlag("initial-health", ["passing", "warning", "critical"], "critical").pipe(
  Options.withDescription("check status until Marathon has a first result for a task whose app has health checks (default: critical)")
)
const healthTtl = durationFlag("health-ttl", (ms) => ms >= 1000, "must be a duration of at least 1s, such as 1h or 90m").pipe(
  Options.withDefault({ text: "1h", millis: 3_600_000 }),
  Options.withDescription("TTL of the checks; consular re-pushes each before half of it has gone (default: 1h)")
)
const deregisterCriticalAfter = durationFlag("deregister-critical-after", (ms) => ms >= 60_000, "must be a duration of at least 1m (Consul's minimum)").pipe(
  Options.optional,
  Options.withDescription("Consul deregisters a service whose check stayed critical this long (at least 1m); also tasks Marathon marks unhealthy")
)
const serviceMetaFlag = Options.boolean("service-meta").pipe(
  Options.withDescription("Service Meta on every registration: external-source, Marathon app and task ids, registration id, and the app's labels")
)

const maxEventBytes = numberFlag("max-event-bytes", 1024 * 1024, (n) => Number.isInteger(n) && n >= 1, "must be a positive whole number of bytes").pipe(
  Options.withDescription("largest event body accepted in bytes; larger ones get 413 (default: 1048576)")
)
const dryRun = Options.boolean("dry-run").pipe(Options.withDescription("print the plan, write nothing"))

const events = choiceFlag("events", ["auto", "callback", "sse"], "auto").pipe(
  Options.withDescription("event source: callback (HTTP callbacks, Marathon < 1.5), sse (/v2/events), auto (callbacks when Marathon accepts them)")
)
const logFormat = choiceFlag("log-format", ["text", "json"], "text").pipe(
  Options.withDescription("log lines as logfmt text or as one JSON object per line")
)

/** A file flag: its contents, read now so that an unreadable file is reported with the flag's name. */
const fileFlag = (flag: string, description: string, env?: string) => {
  const base = Options.text(flag).pipe(Options.withDescription(description))
  return (env === undefined ? base : base.pipe(Options.withFallbackConfig(Config.string(env)))).pipe(
    Options.optional,
    Options.mapTryCatch(
      (path) => Option.map(path, (p) => readFileSync(p, "utf8")),
      invalid(flag, "cannot read that file")
    )
  )
}
/** A secret read from a file: the file's first line, trimmed; an empty one means none. */
const secretFileFlag = (flag: string, description: string) =>
  fileFlag(flag, description).pipe(Options.map((contents) => Option.filter(Option.map(contents, (c) => c.split(/\r?\n/)[0]!.trim()), (c) => c !== "")))

const consulToken = Options.redacted("consul-token").pipe(
  Options.withFallbackConfig(Config.redacted("CONSUL_HTTP_TOKEN")),
  Options.optional,
  Options.withDescription("Consul ACL token sent as X-Consul-Token (or CONSUL_HTTP_TOKEN); empty: none")
)
const consulTokenFile = secretFileFlag("consul-token-file", "read the Consul ACL token from this file")
const consulCaFile = fileFlag("consul-ca-file", "CA bundle (PEM) to verify Consul's certificate", "CONSUL_CACERT")
const consulCertFile = fileFlag("consul-cert-file", "client certificate (PEM) for Consul", "CONSUL_CLIENT_CERT")
const consulKeyFile = fileFlag("consul-key-file", "client key (PEM) for Consul", "CONSUL_CLIENT_KEY")
const consulSkipVerify = Options.boolean("consul-tls-skip-verify").pipe(
  Options.withDescription("do not verify Consul's certificate (CONSUL_HTTP_SSL_VERIFY=false does the same)")
)
const marathonCaFile = fileFlag("marathon-ca-file", "CA bundle (PEM) to verify Marathon's certificate")
const marathonCertFile = fileFlag("marathon-cert-file", "client certificate (PEM) for Marathon")
const marathonKeyFile = fileFlag("marathon-key-file", "client key (PEM) for Marathon")
const marathonSkipVerify = Options.boolean("marathon-tls-skip-verify").pipe(Options.withDescription("do not verify Marathon's certificate"))
const marathonUser = Options.text("marathon-user").pipe(Options.optional, Options.withDescription("Marathon basic auth user (password from --marathon-password-file)"))
const marathonPasswordFile = secretFileFlag("marathon-password-file", "read the Marathon basic auth password from this file")
const marathonTokenFile = secretFileFlag("marathon-token-file", "read a DC/OS token from this file (Authorization: token=<t>)")
const eventsSecretFile = secretFileFlag("events-secret-file", "require this secret on POST /events; the callback URL given to Marathon carries it")

/** Flags every command takes; the daemon adds its listener, schedule and event source. */
const commonOptions = {
  consul, marathon, registrationId, purge, logfile, debug, timeout, fallback, fallbackTimeout, logFormat,
  consulToken, consulTokenFile, consulCaFile, consulCertFile, consulKeyFile, consulSkipVerify,
  marathonCaFile, marathonCertFile, marathonKeyFile, marathonSkipVerify, marathonUser, marathonPasswordFile, marathonTokenFile,
  healthChecks, initialHealth, healthTtl, deregisterCriticalAfter, serviceMeta: serviceMetaFlag
}
const daemonOptions = { ...commonOptions, scheme, host, port, syncInterval, maxEventBytes, events, eventsSecretFile }
type CommonOptions = Command.Command.ParseConfig<typeof commonOptions>
type DaemonOptions = Command.Command.ParseConfig<typeof daemonOptions>

const seconds = (s: number) => Duration.millis(Math.round(s * 1000))

class UsageError extends Data.TaggedError("UsageError")<{ readonly message: string }> {}

/** Credentials and TLS from the flags; contradictions are reported with the flags' names. */
const upstreamSecurity = (o: CommonOptions) =>
  Effect.gen(function*() {
    const token = Option.orElse(
      Option.filter(Option.map(o.consulToken, Redacted.value), (t) => t.trim() !== ""),
      () => o.consulTokenFile
    )
    if (o.marathonUser._tag === "Some" && o.marathonPasswordFile._tag === "None") {
      return yield* new UsageError({ message: "--marathon-user needs --marathon-password-file" })
    }
    if (o.marathonTokenFile._tag === "Some" && o.marathonUser._tag === "Some") {
      return yield* new UsageError({ message: "--marathon-token-file and --marathon-user exclude each other" })
    }
    // Consul's own variable, as its CLI reads it
    const sslVerify = yield* Config.boolean("CONSUL_HTTP_SSL_VERIFY").pipe(
      Config.withDefault(true),
      Effect.mapError(() => new UsageError({ message: "CONSUL_HTTP_SSL_VERIFY must be true or false" }))
    )
    const marathonAuthorization = o.marathonTokenFile._tag === "Some"
      ? `token=${o.marathonTokenFile.value}`
      : o.marathonUser._tag === "Some" && o.marathonPasswordFile._tag === "Some"
      ? `Basic ${Buffer.from(`${o.marathonUser.value}:${o.marathonPasswordFile.value}`).toString("base64")}`
      : undefined
    return {
      consulHeaders: Option.match(token, { onNone: () => ({}), onSome: (t) => ({ "x-consul-token": t }) }),
      consulTls: {
        ca: Option.getOrUndefined(o.consulCaFile),
        cert: Option.getOrUndefined(o.consulCertFile),
        key: Option.getOrUndefined(o.consulKeyFile),
        skipVerify: o.consulSkipVerify || !sslVerify
      },
      marathonHeaders: marathonAuthorization === undefined ? {} : { authorization: marathonAuthorization },
      marathonTls: {
        ca: Option.getOrUndefined(o.marathonCaFile),
        cert: Option.getOrUndefined(o.marathonCertFile),
        key: Option.getOrUndefined(o.marathonKeyFile),
        skipVerify: o.marathonSkipVerify
      }
    }
  })

/** No tracer is exported, so spans (one per request and per event) would only cost stack traces. */
const untraced = Layer.setTracerEnabled(false)

/** Every layer factory is called here, once per invocation. */
const servicesLive = (o: CommonOptions) =>
  Layer.unwrapEffect(Effect.map(upstreamSecurity(o), (security) =>
    Layer.mergeAll(
      ConsulLive({
        url: o.consul,
        timeout: seconds(o.timeout),
        retries: 3,
        debug: o.debug,
        fallbackTimeout: seconds(o.fallbackTimeout),
        headers: security.consulHeaders,
        tls: security.consulTls
      }),
      MarathonLive({
        url: o.marathon,
        timeout: seconds(o.timeout),
        retries: 3,
        debug: o.debug,
        headers: security.marathonHeaders,
        tls: security.marathonTls
      }),
      LedgerLive,
      TopologyLive(o.consul)
    )
  ))

const loggerLive = (o: CommonOptions, oneShot: boolean) =>
  LoggerLive({
    format: o.logFormat,
    level: o.debug ? LogLevel.Debug : LogLevel.Info,
    file: Option.getOrUndefined(o.logfile),
    toStderr: oneShot
  })

const syncSettings = (o: CommonOptions) => ({
  registrationId: o.registrationId,
  purge: o.purge,
  fallback: o.fallback,
  fallbackTimeout: seconds(o.fallbackTimeout),
  consulUrl: o.consul,
  serviceMeta: o.serviceMeta,
  health: o.healthChecks === "none" ? undefined : {
    ttl: o.healthTtl.text,
    ttlMillis: o.healthTtl.millis,
    initial: o.initialHealth,
    deregisterCriticalAfter: Option.getOrUndefined(Option.map(o.deregisterCriticalAfter, (d) => d.text))
  }
})

/** A usage error is printed as the CLI prints its own, with a non-zero exit. */
const reportUsage = <A, E, R>(effect: Effect.Effect<A, E | UsageError, R>) =>
  effect.pipe(Effect.catchIf(
    (error): error is UsageError => error instanceof UsageError,
    (error) => Console.error(error.message).pipe(Effect.zipRight(Effect.fail(error)))
  ))

// Loaded when their command runs: a one-shot sync does not parse the HTTP server, the metrics or the embedded
// Consul and Marathon (the bundle is split at these imports).
const loadDaemon = Effect.promise(() => import("./programs/Daemon.js"))
const loadDemo = Effect.promise(() => import("./programs/Demo.js"))

const runHandler = (o: DaemonOptions) => {
  const settings: DaemonSettings = {
    ...syncSettings(o),
    scheme: o.scheme,
    host: o.host,
    port: o.port,
    syncInterval: o.syncInterval,
    maxEventBytes: o.maxEventBytes,
    events: o.events,
    eventsSecret: Option.getOrUndefined(o.eventsSecretFile),
    // the daemon's first pass drops checks an earlier --health-checks ttl left
    sweepStaleChecks: true
  }
  return Effect.flatMap(loadDaemon, ({ daemonObservability, runDaemon }) =>
    runDaemon(settings).pipe(
      Effect.catchTag("ServeError", (error) =>
        Console.error(`consular: cannot listen on ${o.host}:${o.port}: ${error.cause instanceof Error ? error.cause.message : String(error.cause)}`).pipe(
          Effect.zipRight(Effect.fail(error))
        )),
      Effect.provide(Layer.mergeAll(servicesLive(o), daemonObservability(settings), loggerLive(o, false), untraced)),
      reportUsage
    ))
}

// Invoked with no subcommand, consular runs the daemon, as the Python CLI did.
const consular = Command.make("consular", daemonOptions, runHandler)

const run = Command.make("run", daemonOptions, runHandler).pipe(
  Command.withDescription("the daemon: Marathon events, callback subscription, periodic sync and purge")
)

const sync = Command.make("sync", { ...commonOptions, dryRun }, (o) =>
  Effect.gen(function*() {
    const report = yield* syncOnce({ ...syncSettings(o), dryRun: o.dryRun }).pipe(
      Effect.catchTag("MarathonError", (error) =>
        Console.error(`consular: cannot read Marathon: ${error.message}; nothing was changed`).pipe(
          Effect.zipRight(Effect.fail(error))
        ))
    )
    if (o.dryRun) {
      const lines = planLines(report.plan)
      yield* Console.log(lines.length === 0 ? "plan: nothing to do" : ["plan:", ...lines.map((l) => `  ${l}`)].join("\n"))
    }
    yield* Console.log(summaryLines(report).join("\n"))
  }).pipe(Effect.provide(Layer.mergeAll(servicesLive(o), loggerLive(o, true), untraced)), reportUsage)
).pipe(Command.withDescription("one pass: make Consul match Marathon, print a summary, exit"))

const demo = Command.make("demo", {}, () => Effect.flatMap(loadDemo, ({ runDemo }) => runDemo)).pipe(
  Command.withDescription("start an embedded Marathon and Consul on loopback and show consular at work")
)

const cli = Command.run(consular.pipe(Command.withSubcommands([run, sync, demo])), {
  name: "consular",
  version: "0.1.0"
})

applyHeapPolicy()

cli(process.argv).pipe(
  Effect.provide(NodeContext.layer),
  NodeRuntime.runMain({ disablePrettyLogger: true, disableErrorReporting: true })
)
