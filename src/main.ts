import { Command, HelpDoc, Options } from "@effect/cli"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Cause, Config, Console, Data, Duration, Effect, Either, Exit, FiberRef, Layer, Logger, LogLevel, Option, Redacted } from "effect"
import { readFileSync } from "node:fs"
import { version } from "./Version.js"
import { sessionTtlMaxMillis, sessionTtlMinMillis } from "./domain/ConsulApi.js"
import { leaderKey as defaultLeaderKey, leaderKeyProblem } from "./domain/Naming.js"
import { parseGoDuration } from "./domain/GoDuration.js"
import { ConsulLive } from "./services/Consul.js"
import { HostResolverLive } from "./services/HostResolver.js"
import { LeadershipLive } from "./services/Leadership.js"
import { LoggerLive } from "./services/Logger.js"
import { MarathonLive } from "./services/Marathon.js"
import type { DaemonSettings } from "./programs/Daemon.js"
import { LedgerLive } from "./programs/Ledger.js"
import { TopologyLive } from "./programs/Topology.js"
import { planLines, problemLines, summaryLines, syncOnce } from "./programs/Sync.js"

// consular [run] [flags]   the daemon (also with no command, as the Python consular ran)
// consular sync [flags]    one pass, a summary, an exit status
// consular demo            embedded Marathon and Consul on loopback, consular at work
// Every flag is defined once, at the root, so that it is parsed before or after the command alike; the flag
// names and defaults are the Python consular's: existing users swap it in unchanged. `--help` is rendered here
// from the same definitions (grouped, one line per flag), and a small pass over argv before @effect/cli parses
// it drops `--name=` with an empty value ("not given"), names unknown or repeated flags, and says which command
// a flag belongs to.

type Group = "upstreams" | "sync" | "security" | "daemon" | "logging"
/** Which invocations take a flag: every command, the daemon only, `sync` only. */
type Applies = "all" | "daemon" | "sync"

interface FlagDoc {
  readonly name: string
  readonly negation?: string
  readonly group: Group
  readonly applies: Applies
  /** what the value is, as help shows it; absent for a switch */
  readonly value?: string
  readonly default?: string
  readonly env?: string
  readonly description: string
}

/** Every flag, in the order help lists them; filled by `define` as the options below are made. */
const flagDocs: Array<FlagDoc> = []
const define = <A>(doc: FlagDoc, options: Options.Options<A>): Options.Options<A> => {
  flagDocs.push(doc)
  return options
}

const invalid = (flag: string, why: string) => (): HelpDoc.HelpDoc => HelpDoc.p(`--${flag}: ${why}`)

/** A flag with a value, parsed here so that a bad value is reported with the flag's name. */
const valueFlag = <A>(doc: FlagDoc & { readonly value: string; readonly default: string }, parse: (raw: string) => A | undefined, why: string) =>
  define(
    doc,
    Options.text(doc.name).pipe(
      Options.withDescription(doc.description),
      Options.withDefault(doc.default),
      Options.mapTryCatch((raw) => {
        const parsed = parse(raw.trim())
        if (parsed === undefined) throw new Error(why)
        return parsed
      }, invalid(doc.name, why))
    )
  )

const switchFlag = (doc: FlagDoc) =>
  define(
    doc,
    Options.boolean(doc.name, doc.negation === undefined ? {} : { negationNames: [doc.negation] }).pipe(Options.withDescription(doc.description))
  )

const httpUrl = (raw: string): URL | undefined => {
  try {
    const url = new URL(raw)
    return url.protocol === "http:" || url.protocol === "https:" ? url : undefined
  } catch {
    return undefined
  }
}

const number = (raw: string): number | undefined => {
  const n = Number(raw)
  return raw === "" || !Number.isFinite(n) ? undefined : n
}

/**
 * A duration as Consul (Go's time.ParseDuration) writes it: `10s`, `5m`, `1h`, `1m30s`, `500ms`; or a bare number
 * of seconds, as the Python consular took it. Milliseconds; undefined when it is neither.
 */
const parseDuration = (raw: string): number | undefined => {
  const seconds = number(raw)
  if (seconds !== undefined) return seconds * 1_000
  return parseGoDuration(raw)
}

/** Node's timers hold at most 2^31 - 1 ms (about 24.8 days); a longer one would fire at once. */
const longestTimer = 2 ** 31 - 1

const durationFlag = (doc: Omit<FlagDoc, "value"> & { readonly default: string }, valid: (millis: number) => boolean, why: string) =>
  valueFlag({ ...doc, value: "DURATION" }, (raw) => {
    const millis = parseDuration(raw)
    return millis !== undefined && millis <= longestTimer && valid(millis) ? Duration.millis(millis) : undefined
  }, `${why}, at most 596h`)

const choiceFlag = <const C extends ReadonlyArray<string>>(doc: Omit<FlagDoc, "value"> & { readonly default: NoInfer<C[number]> }, choices: C) =>
  valueFlag({ ...doc, value: choices.join("|") }, (raw): C[number] | undefined => choices.find((choice) => choice === raw), `must be one of ${choices.join(", ")}`)

/** A file flag: its contents, read now so that an unreadable file is reported with the flag's name. */
const fileFlag = (doc: Omit<FlagDoc, "value">) => {
  const base = Options.text(doc.name).pipe(Options.withDescription(doc.description))
  return define(
    { ...doc, value: "FILE" },
    (doc.env === undefined ? base : base.pipe(Options.withFallbackConfig(Config.string(doc.env)))).pipe(
      Options.optional,
      Options.mapTryCatch((path) => Option.map(path, (p) => readFileSync(p, "utf8")), invalid(doc.name, "cannot read that file"))
    )
  )
}
/** A secret read from a file: the file's first line, trimmed; an empty one means none. */
const secretFileFlag = (doc: Omit<FlagDoc, "value">) =>
  fileFlag(doc).pipe(Options.map((contents) => Option.filter(Option.map(contents, (c) => c.split(/\r?\n/)[0]!.trim()), (c) => c !== "")))

// upstreams
const consul = valueFlag({
  name: "consul", group: "upstreams", applies: "all", value: "URL", default: "http://localhost:8500",
  description: "main Consul: KV, catalog, fallback agent; task agents are reached on its scheme and port"
}, httpUrl, "must be an http:// or https:// URL")
const marathon = valueFlag({
  name: "marathon", group: "upstreams", applies: "all", value: "URL[,URL…]", default: "http://localhost:8080",
  description: "Marathon; several, comma-separated, for a Marathon cluster"
}, (raw) => {
  const urls = raw.split(",").map((part) => httpUrl(part.trim()))
  return urls.every((url) => url !== undefined) ? urls.filter((url) => url !== undefined) : undefined
}, "must be an http:// or https:// URL, or several separated by commas")
const timeout = durationFlag({
  name: "timeout", group: "upstreams", applies: "all", default: "5",
  description: "HTTP timeout of each request to Marathon and Consul"
}, (millis) => millis > 0, "must be a positive duration (5, 5s, 1500ms)")

// what a pass does
const registrationId = valueFlag({
  name: "registration-id", group: "sync", applies: "all", value: "ID", default: "consular",
  description: "owner tag consular-reg-id=<id> on every service consular registers"
}, (id) => id === "" || /[\s&#?]/.test(id) ? undefined : id, "must be non-empty, without spaces, '&', '#' or '?'")
const purge = switchFlag({
  name: "purge", negation: "no-purge", group: "sync", applies: "all", default: "off",
  description: "deregister and delete what consular wrote that Marathon no longer runs"
})
const fallback = switchFlag({
  name: "fallback", negation: "no-fallback", group: "sync", applies: "all", default: "off",
  description: "register on the main agent if the task's agent is down"
})
const fallbackTimeout = durationFlag({
  name: "fallback-timeout", group: "sync", applies: "all", default: "2",
  description: "timeout of a registration on the fallback agent"
}, (millis) => millis > 0, "must be a positive duration (2, 2s, 500ms)")
const servicePerPort = switchFlag({
  name: "service-per-port", group: "sync", applies: "all", default: "off",
  description: "one service per port of a task (<task id>:<port name or index>), not only the lowest port's"
})
const maxPurge = valueFlag({
  name: "max-purge", group: "sync", applies: "all", value: "N|none", default: "none",
  description: "skip a purge over N services or keys; none: no limit"
}, (raw): Option.Option<number> | undefined => {
  if (raw === "none") return Option.none()
  return /^\d+$/.test(raw) && Number.isSafeInteger(Number(raw)) ? Option.some(Number(raw)) : undefined
}, "must be a non-negative integer, or none (no limit)")
const serviceMeta = switchFlag({
  name: "service-meta", group: "sync", applies: "all", default: "off",
  description: "Meta on every service: Marathon ids, reg id, labels"
})
const healthChecks = choiceFlag({
  name: "health-checks", group: "sync", applies: "all", default: "none",
  description: "ttl: a TTL check with Marathon's health verdict"
}, ["none", "ttl"])
const initialHealth = choiceFlag({
  name: "initial-health", group: "sync", applies: "all", default: "critical",
  description: "status until Marathon's first health result"
}, ["passing", "warning", "critical"])
/** A duration Consul is given as written (a check's TTL): Go's syntax only, kept as text, with its milliseconds. */
const goDuration = (valid: (millis: number) => boolean) => (raw: string): { readonly text: string; readonly millis: number } | undefined => {
  const millis = parseGoDuration(raw)
  return millis !== undefined && valid(millis) ? { text: raw, millis } : undefined
}
const healthTtl = valueFlag({
  name: "health-ttl", group: "sync", applies: "all", value: "DURATION", default: "1h",
  description: "TTL of the checks, re-pushed before half of it has gone"
}, goDuration((millis) => millis >= 1000 && millis <= longestTimer), "must be a duration of at least 1s, such as 1h or 90m")
const deregisterCriticalAfter = define(
  {
    name: "deregister-critical-after", group: "sync", applies: "all", value: "DURATION",
    description: "Consul drops a service critical this long (at least 1m)"
  },
  Options.text("deregister-critical-after").pipe(
    Options.optional,
    Options.mapTryCatch((raw) => Option.map(raw, (r) => {
      const parsed = goDuration((millis) => millis >= 60_000)(r.trim())
      if (parsed === undefined) throw new Error("must be a duration of at least 1m (Consul's minimum)")
      return parsed
    }), invalid("deregister-critical-after", "must be a duration of at least 1m (Consul's minimum)"))
  )
)
const dryRun = switchFlag({ name: "dry-run", group: "sync", applies: "sync", default: "off", description: "print the plan (with addresses and ports), write nothing" })

// security
const consulToken = define(
  {
    name: "consul-token", group: "security", applies: "all", value: "TOKEN", env: "CONSUL_HTTP_TOKEN",
    description: "Consul ACL token, sent as X-Consul-Token; empty: none"
  },
  Options.redacted("consul-token").pipe(Options.withFallbackConfig(Config.redacted("CONSUL_HTTP_TOKEN")), Options.optional)
)
const consulTokenFile = secretFileFlag({ name: "consul-token-file", group: "security", applies: "all", description: "read the Consul ACL token from this file" })
const consulCaFile = fileFlag({ name: "consul-ca-file", group: "security", applies: "all", env: "CONSUL_CACERT", description: "CA bundle (PEM) to verify Consul's certificate" })
const consulCertFile = fileFlag({ name: "consul-cert-file", group: "security", applies: "all", env: "CONSUL_CLIENT_CERT", description: "client certificate (PEM) for Consul" })
const consulKeyFile = fileFlag({ name: "consul-key-file", group: "security", applies: "all", env: "CONSUL_CLIENT_KEY", description: "client key (PEM) for Consul" })
const consulSkipVerify = switchFlag({
  name: "consul-tls-skip-verify", group: "security", applies: "all", default: "off",
  description: "do not verify Consul's certificate (CONSUL_HTTP_SSL_VERIFY=false does the same)"
})
const marathonCaFile = fileFlag({ name: "marathon-ca-file", group: "security", applies: "all", description: "CA bundle (PEM) to verify Marathon's certificate" })
const marathonCertFile = fileFlag({ name: "marathon-cert-file", group: "security", applies: "all", description: "client certificate (PEM) for Marathon" })
const marathonKeyFile = fileFlag({ name: "marathon-key-file", group: "security", applies: "all", description: "client key (PEM) for Marathon" })
const marathonSkipVerify = switchFlag({ name: "marathon-tls-skip-verify", group: "security", applies: "all", default: "off", description: "do not verify Marathon's certificate" })
const marathonUser = define(
  { name: "marathon-user", group: "security", applies: "all", value: "USER", description: "Marathon basic auth user (password from --marathon-password-file)" },
  Options.text("marathon-user").pipe(Options.optional)
)
const marathonPasswordFile = secretFileFlag({ name: "marathon-password-file", group: "security", applies: "all", description: "read the Marathon basic auth password from this file" })
const marathonTokenFile = secretFileFlag({ name: "marathon-token-file", group: "security", applies: "all", description: "read a DC/OS token from this file (Authorization: token=<t>)" })
const eventsSecretFile = secretFileFlag({
  name: "events-secret-file", group: "security", applies: "daemon",
  description: "require this secret on POST /events; the callback URL given to Marathon carries it"
})

// the daemon
const scheme = choiceFlag({ name: "scheme", group: "daemon", applies: "daemon", default: "http", description: "scheme of the callback URL given to Marathon" }, ["http", "https"])
const host = valueFlag({
  name: "host", group: "daemon", applies: "daemon", value: "HOST", default: "localhost",
  description: "address to listen on, and host of the callback URL given to Marathon"
}, (raw) => raw === "" ? undefined : raw, "must not be empty")
const port = valueFlag({
  name: "port", group: "daemon", applies: "daemon", value: "NUMBER", default: "7000",
  description: "port to listen on, and port of the callback URL"
}, (raw) => {
  const n = number(raw)
  return n !== undefined && Number.isInteger(n) && n >= 1 && n <= 65535 ? n : undefined
}, "must be an integer from 1 to 65535")
const syncInterval = durationFlag({
  name: "sync-interval", group: "daemon", applies: "daemon", default: "0",
  description: "time between sync passes, the first at start; 0: events only"
}, (millis) => millis >= 0, "must be 0 (no periodic sync) or a positive duration (30, 30s, 5m)")
const events = choiceFlag({
  name: "events", group: "daemon", applies: "daemon", default: "auto",
  description: "event source: callback (Marathon < 1.5), sse (/v2/events), auto (callbacks when Marathon accepts them)"
}, ["auto", "callback", "sse"])
const maxEventBytes = valueFlag({
  name: "max-event-bytes", group: "daemon", applies: "daemon", value: "NUMBER", default: "1048576",
  description: "largest event body accepted; larger ones get 413"
}, (raw) => {
  const n = number(raw)
  return n !== undefined && Number.isInteger(n) && n >= 1 ? n : undefined
}, "must be a positive whole number of bytes")
const leaderElection = switchFlag({
  name: "leader-election", group: "daemon", applies: "daemon", default: "off",
  description: "several instances with one registration id: only the holder of a Consul session lock syncs and applies events"
})
const leaderKey = define(
  { name: "leader-key", group: "daemon", applies: "daemon", value: "KEY", default: "service/consular/<registration-id>/leader", description: "the Consul KV key the leader locks" },
  Options.text("leader-key").pipe(
    Options.optional,
    Options.mapTryCatch((key) => Option.map(key, (k) => {
      const problem = leaderKeyProblem(k.trim())
      if (problem !== undefined) throw new Error(problem)
      return k.trim()
    }), (error) => HelpDoc.p(`--leader-key: ${error instanceof Error ? error.message : "invalid"}`))
  )
)
const sessionTtl = valueFlag({
  name: "session-ttl", group: "daemon", applies: "daemon", value: "DURATION", default: "15s",
  description: "TTL of the leader election's Consul session, renewed at half of it"
}, (raw) => {
  const millis = parseDuration(raw)
  return millis !== undefined && millis >= sessionTtlMinMillis && millis <= sessionTtlMaxMillis ? Duration.millis(millis) : undefined
}, "must be a duration from 10s (Consul's minimum) to 24h, e.g. 15s, 1m, or a number of seconds")

// logging
const logfile = define(
  { name: "logfile", group: "logging", applies: "all", value: "FILE", description: "append log lines to this file (default: stdout; sync: stderr)" },
  Options.text("logfile").pipe(Options.optional)
)
const logFormat = choiceFlag({ name: "log-format", group: "logging", applies: "all", default: "text", description: "log lines as logfmt text or one JSON object each" }, ["text", "json"])
// read by `prepareArgs` (it sets the fiber's minimum log level, which the logger honours), not by @effect/cli
flagDocs.push({
  name: "log-level", group: "logging", applies: "all", value: "all|trace|debug|info|warning|error|fatal|none", default: "info",
  description: "lowest level logged"
})
const debug = switchFlag({ name: "debug", negation: "no-debug", group: "logging", applies: "all", default: "off", description: "log every HTTP request and response (the log level is then debug)" })

/** The flags @effect/cli itself understands; they stay out of help but are not unknown. */
const builtInFlags: ReadonlyArray<FlagDoc> = [
  { name: "version", group: "logging", applies: "all", description: "print the version" },
  { name: "wizard", group: "logging", applies: "all", description: "" },
  { name: "completions", group: "logging", applies: "all", value: "SHELL", description: "" }
]

const flags = {
  consul, marathon, timeout, registrationId, purge, fallback, fallbackTimeout, servicePerPort, maxPurge, dryRun,
  consulToken, consulTokenFile, consulCaFile, consulCertFile, consulKeyFile, consulSkipVerify,
  marathonCaFile, marathonCertFile, marathonKeyFile, marathonSkipVerify, marathonUser, marathonPasswordFile, marathonTokenFile,
  eventsSecretFile, scheme, host, port, syncInterval, events, maxEventBytes, leaderElection, leaderKey, sessionTtl,
  healthChecks, initialHealth, healthTtl, deregisterCriticalAfter, serviceMeta,
  logfile, logFormat, debug
}
type Flags = Command.Command.ParseConfig<typeof flags>

class UsageError extends Data.TaggedError("UsageError")<{ readonly message: string }> {}

// ---------------------------------------------------------------------------------------------------------------
// argv, before @effect/cli

const commands = ["run", "sync", "demo"] as const
type CommandName = typeof commands[number]

interface Invocation {
  /**
   * what @effect/cli parses: every flag as one `--name=value` token, before the command. The root parses them with
   * its own messages (after the command, a bad value was reported as an unknown argument), and a value spelled
   * like a command (`--registration-id sync`) is not taken for one.
   */
  readonly args: ReadonlyArray<string>
  readonly command: CommandName | undefined
  readonly help: boolean
  /** `--log-level`, read here: @effect/cli's own handling of it does not survive a flag after the command */
  readonly logLevel: LogLevel.LogLevel | undefined
}

const flagByName = new Map<string, FlagDoc>()
for (const doc of [...flagDocs, ...builtInFlags]) {
  flagByName.set(`--${doc.name}`, doc)
  if (doc.negation !== undefined) flagByName.set(`--${doc.negation}`, doc)
}
const isSwitchValue = (raw: string) => ["true", "false", "yes", "no", "on", "off", "1", "0", "y", "n"].includes(raw.toLowerCase())

const belongsTo = (applies: Applies) => applies === "daemon" ? "the daemon (consular [run])" : "consular sync"

/** Where each flag stands, checked against the command it goes with; `--name=` (empty) is dropped. */
const prepareArgs = (args: ReadonlyArray<string>): Either.Either<Invocation, UsageError> => {
  const usage = (message: string) => Either.left(new UsageError({ message: `consular: ${message} (consular --help lists the flags)` }))
  const rest: Array<string> = []
  const given = new Map<FlagDoc, string>()
  let command: CommandName | undefined
  let help = false
  let logLevel: LogLevel.LogLevel | undefined
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!
    if (arg === "--") {
      rest.push(...args.slice(i))
      break
    }
    if (arg === "--help" || arg === "-h") {
      help = true
      continue
    }
    if (!arg.startsWith("--")) {
      const named = commands.find((name) => name === arg)
      if (command === undefined && named !== undefined) command = named
      else rest.push(arg)
      continue
    }
    const equals = arg.indexOf("=")
    const name = equals === -1 ? arg : arg.slice(0, equals)
    const doc = flagByName.get(name)
    if (doc === undefined) return usage(`unknown flag ${name}`)
    // `--consul-token=` as a unit file writes it when its variable is unset: the flag was not given
    if (equals === arg.length - 1) continue
    const earlier = given.get(doc)
    if (earlier !== undefined) return usage(`${name} given twice${earlier === name ? "" : ` (with ${earlier})`}`)
    given.set(doc, name)
    const next = args[i + 1]
    const takesNext = equals === -1 && next !== undefined && (doc.value !== undefined || isSwitchValue(next))
    if (doc.name === "log-level") {
      const raw = equals === -1 ? next : arg.slice(equals + 1)
      logLevel = LogLevel.allLevels.find((level) => level.label.toLowerCase() === raw?.toLowerCase() || level._tag.toLowerCase() === raw?.toLowerCase())
      if (logLevel === undefined) return usage(`--log-level: must be one of ${LogLevel.allLevels.map((level) => level._tag.toLowerCase()).join(", ")}`)
    } else {
      // one token per flag, so that no value can be taken for the command
      rest.push(takesNext ? `${arg}=${next}` : arg)
    }
    if (takesNext) i++
  }
  const wanted: Applies = command === "sync" ? "sync" : "daemon"
  for (const [doc, name] of given) {
    if (command === "demo" && doc.name !== "log-level") return usage(`${name}: demo takes no flags`)
    if (command !== "demo" && doc.applies !== "all" && doc.applies !== wanted) {
      return usage(`${name} belongs to ${belongsTo(doc.applies)}, not to ${command === "sync" ? "consular sync" : belongsTo("daemon")}`)
    }
  }
  return Either.right({ args: command === undefined ? rest : [...rest, command], command, help, logLevel })
}

// ---------------------------------------------------------------------------------------------------------------
// help, rendered from the flag definitions

const groupTitles: Record<Group, string> = {
  upstreams: "Upstreams",
  sync: "What a pass does",
  security: "Security",
  daemon: "Daemon (consular [run])",
  logging: "Logging"
}

const groupOrder: ReadonlyArray<Group> = ["upstreams", "sync", "security", "daemon", "logging"]

const wrap = (text: string, width: number): Array<string> => {
  const lines: Array<string> = []
  let line = ""
  for (const word of text.split(" ")) {
    if (line !== "" && line.length + 1 + word.length > width) {
      lines.push(line)
      line = word
    } else {
      line = line === "" ? word : `${line} ${word}`
    }
  }
  return [...lines, line]
}

const exitStatusLines = [
  "Exit status of consular sync:",
  "  0  everything planned landed",
  "  2  not everything did: a write failed (each failed task id or key is listed on stderr; the rest landed),",
  "     an agent or an app could not be read, a name clash or an unknown host skipped something, or a purge",
  "     over --max-purge was skipped",
  "  1  nothing was synced: Marathon could not be read, no Consul read succeeded, or a usage error"
]

const helpText = (command: CommandName | undefined): string => {
  const shown = flagDocs.filter((doc) =>
    command === undefined || (command !== "demo" && (doc.applies === "all" || doc.applies === (command === "sync" ? "sync" : "daemon")))
  )
  const left = (doc: FlagDoc) =>
    `--${doc.name}${doc.negation === undefined ? "" : `, --${doc.negation}`}${doc.value === undefined ? "" : ` ${doc.value}`}`
  const column = 36
  const flagLines = (doc: FlagDoc) => {
    const notes = [doc.default === undefined ? [] : `default: ${doc.default}`, doc.env === undefined ? [] : `env: ${doc.env}`].flat()
    const text = `${doc.description}${notes.length === 0 ? "" : ` (${notes.join("; ")})`}`
    const head = `  ${left(doc)}`
    const body = wrap(text, 110 - column)
    const first = head.length < column ? [`${head.padEnd(column)}${body[0]}`] : [head, `${" ".repeat(column)}${body[0]}`]
    return [...first, ...body.slice(1).map((line) => `${" ".repeat(column)}${line}`)]
  }
  const groups = groupOrder.flatMap((group) => {
    const docs = shown.filter((doc) => doc.group === group)
    return docs.length === 0 ? [] : ["", `${groupTitles[group]}:`, ...docs.flatMap(flagLines)]
  })
  const usage = command === undefined
    ? [
      "Usage:",
      "  consular [run] [flags]   the daemon: Marathon events, callback subscription, periodic sync and purge",
      "  consular sync [flags]    one pass: make Consul match Marathon, print a summary, exit",
      "  consular demo            an embedded Marathon and Consul on loopback, consular at work"
    ]
    : command === "sync"
    ? ["Usage: consular sync [flags]   one pass: make Consul match Marathon, print a summary, exit"]
    : command === "run"
    ? ["Usage: consular [run] [flags]   the daemon: Marathon events, callback subscription, periodic sync and purge"]
    : ["Usage: consular demo   an embedded Marathon and Consul on loopback, consular at work (no flags)"]
  return [
    "consular 0.1.0: keeps Consul true to Marathon",
    "",
    ...usage,
    ...(command === "demo" ? [] : [
      "",
      "Flags go before or after the command. --name= with nothing after '=' is the same as leaving the flag out.",
      "DURATION: 10s, 5m, 1h, 1m30s, 500ms (as Consul writes them), or a bare number of seconds."
    ]),
    ...groups,
    "",
    "  -h, --help                        this help; --version: the version",
    ...(command === undefined || command === "sync" ? ["", ...exitStatusLines] : [])
  ].join("\n")
}

// ---------------------------------------------------------------------------------------------------------------
// flags -> settings

/** Credentials and TLS from the flags; contradictions are reported with the flags' names. */
const upstreamSecurity = (o: Flags) =>
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

const syncSettings = (o: Flags) => ({
  registrationId: o.registrationId,
  purge: o.purge,
  fallback: o.fallback,
  fallbackTimeout: o.fallbackTimeout,
  consulUrl: o.consul,
  servicePerPort: o.servicePerPort,
  maxPurge: Option.getOrUndefined(o.maxPurge),
  serviceMeta: o.serviceMeta,
  health: o.healthChecks === "none" ? undefined : {
    ttl: o.healthTtl.text,
    ttlMillis: o.healthTtl.millis,
    initial: o.initialHealth,
    deregisterCriticalAfter: Option.getOrUndefined(Option.map(o.deregisterCriticalAfter, (d) => d.text))
  }
})

const daemonSettings = (o: Flags): DaemonSettings => ({
  ...syncSettings(o),
  scheme: o.scheme,
  host: o.host,
  port: o.port,
  syncInterval: Duration.toSeconds(o.syncInterval),
  maxEventBytes: o.maxEventBytes,
  events: o.events,
  eventsSecret: Option.getOrUndefined(o.eventsSecretFile),
  leaderElection: o.leaderElection
    ? { key: Option.getOrElse(o.leaderKey, () => defaultLeaderKey(o.registrationId)), sessionTtl: o.sessionTtl, version }
    : undefined,
  // the daemon's first pass drops checks an earlier --health-checks ttl left
  sweepStaleChecks: true
})

// ---------------------------------------------------------------------------------------------------------------
// layers: assembled here and nowhere else in the CLI

/** No tracer is exported, so spans (one per request and per event) would only cost stack traces. */
const untraced = Layer.setTracerEnabled(false)

const servicesLive = (o: Flags) =>
  Layer.unwrapEffect(Effect.map(upstreamSecurity(o), (security) => {
    const consulSettings = {
      url: o.consul,
      timeout: o.timeout,
      retries: 3,
      debug: o.debug,
      fallbackTimeout: o.fallbackTimeout,
      headers: security.consulHeaders,
      tls: security.consulTls
    }
    return Layer.mergeAll(
      ConsulLive(consulSettings),
      // the daemon's election only: a one-shot sync never takes the lock
      o.leaderElection ? LeadershipLive(consulSettings) : Layer.empty,
      MarathonLive({
        url: o.marathon,
        timeout: o.timeout,
        retries: 3,
        debug: o.debug,
        headers: security.marathonHeaders,
        tls: security.marathonTls
      }),
      LedgerLive,
      TopologyLive(o.consul),
      HostResolverLive({ timeout: o.timeout }),
      untraced
    )
  }))

/** `--debug` means debug; otherwise `--log-level` (set on the fiber by `main`), info by default. */
const loggerLive = (o: Flags, oneShot: boolean) =>
  Layer.unwrapEffect(Effect.map(FiberRef.get(FiberRef.currentMinimumLogLevel), (chosen) =>
    LoggerLive({
      format: o.logFormat,
      level: o.debug && LogLevel.greaterThan(chosen, LogLevel.Debug) ? LogLevel.Debug : chosen,
      file: Option.getOrUndefined(o.logfile),
      toStderr: oneShot
    })
  ))

// Loaded when their command runs: a one-shot sync does not parse the HTTP server, the metrics or the embedded
// Consul and Marathon (the bundle is split at these imports).
const loadDaemon = Effect.promise(() => import("./programs/Daemon.js"))
const loadDemo = Effect.promise(() => import("./Demo.js"))

/**
 * Runs a command's program with every layer it needs. The logger is built first and torn down last, so that a
 * defect anywhere (a layer's construction included) is logged before the process ends.
 */
const provideAll = <A, E, X, R extends Layer.Layer.Success<ReturnType<typeof servicesLive>> | X>(
  o: Flags,
  oneShot: boolean,
  /** what the command needs beyond the upstream services */
  extra: Layer.Layer<X>,
  program: Effect.Effect<A, E, R>
) =>
  program.pipe(
    Effect.provide(Layer.merge(servicesLive(o), extra)),
    Effect.tapDefect((cause) => Effect.logFatal("defect: consular stops", cause)),
    Effect.provide(loggerLive(o, oneShot)),
    reportUsage
  )

/** A usage error is printed as the CLI prints its own, with a non-zero exit. */
const reportUsage = <A, E, R>(effect: Effect.Effect<A, E | UsageError, R>) =>
  effect.pipe(Effect.catchIf(
    (error): error is UsageError => error instanceof UsageError,
    (error) => Console.error(error.message).pipe(Effect.zipRight(Effect.fail(error)))
  ))

// ---------------------------------------------------------------------------------------------------------------
// commands

/** `consular sync` did not land everything it planned: exit status 2. */
class SyncIncomplete extends Data.TaggedError("SyncIncomplete")<{}> {}
/** `consular sync` read no Consul: nothing was written, exit status 1. */
class ConsulUnread extends Data.TaggedError("ConsulUnread")<{}> {}

const runDaemon = (o: Flags) =>
  provideAll(o, false, Layer.unwrapEffect(Effect.map(loadDaemon, ({ daemonObservability }) => daemonObservability(daemonSettings(o)))), Effect.flatMap(loadDaemon, ({ runDaemon }) =>
    runDaemon(daemonSettings(o)).pipe(
      Effect.catchTag("ServeError", (error) =>
        Console.error(`consular: cannot listen on ${o.host}:${o.port}: ${error.cause instanceof Error ? error.cause.message : String(error.cause)}`).pipe(
          Effect.zipRight(Effect.fail(error))
        ))
    )))

const syncPass = (o: Flags) =>
  provideAll(o, true, Layer.empty, Effect.gen(function*() {
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
    const problems = problemLines(report)
    if (problems.length > 0) yield* Console.error(problems.join("\n"))
    if (report.outcome === "unread") {
      yield* Console.error("consular: no Consul read succeeded; nothing was written")
      return yield* new ConsulUnread()
    }
    if (report.outcome === "incomplete") return yield* new SyncIncomplete()
  }))

// Invoked with no command, consular runs the daemon, as the Python CLI did.
const consular = Command.make("consular", flags, runDaemon)
const run = Command.make("run", {}, () => Effect.flatMap(consular, runDaemon))
const sync = Command.make("sync", {}, () => Effect.flatMap(consular, syncPass))
const demo = Command.make("demo", {}, () => Effect.flatMap(loadDemo, ({ runDemo }) => runDemo))

const cli = Command.run(consular.pipe(Command.withSubcommands([run, sync, demo])), { name: "consular", version })

/** 0: done (or stopped by a signal); 2: a sync that did not land everything; 1: anything else. */
const exitStatus = (exit: Exit.Exit<unknown, unknown>): number => {
  if (Exit.isSuccess(exit) || Cause.isInterruptedOnly(exit.cause)) return 0
  return Option.match(Cause.failureOption(exit.cause), {
    onNone: () => 1,
    onSome: (error) => error instanceof SyncIncomplete ? 2 : 1
  })
}

const main = (argv: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const invocation = prepareArgs(argv.slice(2))
    if (Either.isLeft(invocation)) {
      yield* Console.error(invocation.left.message)
      return yield* invocation.left
    }
    if (invocation.right.help) return yield* Console.log(helpText(invocation.right.command))
    const { args, logLevel } = invocation.right
    const parsed = cli([...argv.slice(0, 2), ...args])
    return yield* (logLevel === undefined ? parsed : Logger.withMinimumLogLevel(parsed, logLevel))
  }).pipe(
    // a defect is a bug: say so, with its stack, whatever the log's destination
    Effect.tapErrorCause((cause) => Cause.isDie(cause) ? Console.error(`consular: defect (a bug): ${Cause.pretty(cause)}`) : Effect.void),
    Effect.provide(NodeContext.layer)
  )

// the bin applies the heap policy (HeapPolicy.ts) once this module has run
NodeRuntime.runMain(main(process.argv), {
  disablePrettyLogger: true,
  // every failure was printed where it happened (usage, Marathon, listen), every defect just above
  disableErrorReporting: true,
  teardown: (exit, onExit) => onExit(exitStatus(exit))
})
