import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { basename, join } from "node:path"
import { fileURLToPath } from "node:url"
import { execFileSync } from "node:child_process"
import { makeDatacenter } from "../support/Datacenter.js"
import { eventually, freePort, mainJs, runCli, runProcess, startCli } from "../support/Process.js"

const root = fileURLToPath(new URL("../..", import.meta.url))
const unitPath = join(root, "deploy", "consular.service")
const envPath = join(root, "deploy", "consular.env")

/** A unit file's settings by section, every assignment of a key kept in order (systemd's syntax: `#`/`;` comments). */
const parseUnit = (text: string): ReadonlyMap<string, ReadonlyMap<string, ReadonlyArray<string>>> => {
  const sections = new Map<string, Map<string, Array<string>>>()
  let current: Map<string, Array<string>> | undefined
  for (const raw of text.replace(/\\\n/g, " ").split("\n")) {
    const line = raw.trim()
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue
    const header = /^\[(.+)\]$/.exec(line)
    if (header !== null) {
      current = new Map()
      sections.set(header[1]!, current)
      continue
    }
    const eq = line.indexOf("=")
    if (current === undefined || eq < 0) throw new Error(`not a unit file line: ${line}`)
    const key = line.slice(0, eq).trim()
    current.set(key, [...(current.get(key) ?? []), line.slice(eq + 1).trim()])
  }
  return sections
}

/** An EnvironmentFile as systemd reads it: KEY=VALUE lines, `#`/`;` comments, optional quotes around the value. */
const parseEnvironmentFile = (text: string): ReadonlyMap<string, string> =>
  new Map(
    text.split("\n")
      .map((line) => line.trim())
      .filter((line) => line !== "" && !line.startsWith("#") && !line.startsWith(";"))
      .map((line) => {
        const match = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line)
        if (match === null) throw new Error(`not an environment file line: ${line}`)
        return [match[1]!, match[2]!.replace(/^"(.*)"$|^'(.*)'$/, "$1$2")]
      })
  )

const unit = parseUnit(readFileSync(unitPath, "utf8"))
const envText = readFileSync(envPath, "utf8")
const environment = parseEnvironmentFile(envText)
const setting = (section: string, key: string) => unit.get(section)?.get(key) ?? []
const only = (section: string, key: string) => {
  const values = setting(section, key)
  expect(values, `${section}.${key}`).toHaveLength(1)
  return values[0]!
}

/** The flags `consular run` takes, as its own --help lists them (the CLI is the authority, not a list here). */
const runFlags = Effect.map(runCli(["run", "--help"]), (result) => {
  expect(result.code, result.stderr).toBe(0)
  return new Set(result.stdout.replace(/\x1b\[[0-9;]*m/g, "").match(/--[a-z][a-z0-9-]*/g) ?? [])
})

/** `flags` with the value after each named flag replaced; every named flag must be there. */
const withValues = (flags: ReadonlyArray<string>, values: Record<string, string>) => {
  for (const flag of Object.keys(values)) expect(flags, `CONSULAR_FLAGS sets ${flag}`).toContain(flag)
  return flags.map((word, i) => (i > 0 && values[flags[i - 1]!] !== undefined ? values[flags[i - 1]!]! : word))
}

const hasSystemdAnalyze = (() => {
  try {
    execFileSync("systemd-analyze", ["--version"], { stdio: "ignore" })
    return true
  } catch {
    return false
  }
})()

describe("deploy/consular.service", () => {
  it("runs the globally installed `consular run` with the flags of its EnvironmentFile", () => {
    const manifest = JSON.parse(readFileSync(join(root, "package.json"), "utf8"))
    const [binary, subcommand, ...args] = only("Service", "ExecStart").split(/\s+/)
    expect(binary).toBe("/usr/bin/consular")
    expect(Object.keys(manifest.bin)).toContain(basename(binary!))
    expect(subcommand).toBe("run")
    // $VAR (not ${VAR}): systemd splits it at whitespace into separate arguments
    expect(args).toEqual(["$CONSULAR_FLAGS"])
    const environmentFile = only("Service", "EnvironmentFile").replace(/^-/, "")
    expect(environmentFile).toBe("/etc/consular/consular.env")
    expect(basename(environmentFile)).toBe(basename(envPath))
    expect(environment.get("CONSULAR_FLAGS")).toBeDefined()
  })

  it("stops on SIGTERM, restarts on failure, and runs without root", () => {
    expect(only("Service", "KillSignal")).toBe("SIGTERM")
    expect(only("Service", "Restart")).toBe("on-failure")
    const user = setting("Service", "User").at(-1)
    expect(setting("Service", "DynamicUser").at(-1) === "yes" || (user !== undefined && !/^(root|0)$/.test(user))).toBe(true)
    expect(setting("Install", "WantedBy")).toContain("multi-user.target")
  })

  it("gives the code cache a directory of its own ($CACHE_DIRECTORY): ProtectHome= hides ~/.cache and PrivateTmp= empties /tmp at every start", () => {
    expect(only("Service", "CacheDirectory")).toBe("consular")
  })

  it("leaves V8 the writable executable memory its JIT compiler needs", () => {
    expect(setting("Service", "MemoryDenyWriteExecute").at(-1) ?? "no").toMatch(/^(no|false|0)$/)
  })

  it.live("consular.env sets only flags that `consular run` takes, and documents only those", () =>
    Effect.gen(function*() {
      const known = yield* runFlags
      expect(known.has("--consul")).toBe(true)
      const given = environment.get("CONSULAR_FLAGS")!.split(/\s+/).filter((word) => word.startsWith("--"))
      expect(given.length).toBeGreaterThan(0)
      expect(given.filter((flag) => !known.has(flag))).toEqual([])
      // the commented-out ones too: an operator copies them into CONSULAR_FLAGS
      const documented = envText.match(/(?<![\w-])--[a-z][a-z0-9-]*/g) ?? []
      expect(documented.filter((flag) => !known.has(flag))).toEqual([])
    }))

  it.scopedLive("consular.env's flags start the daemon, with only the endpoints swapped for test servers", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      const port = yield* freePort()
      const flags = environment.get("CONSULAR_FLAGS")!.split(/\s+/)
      const swapped = withValues(flags, { "--port": `${port}`, "--consul": dc.consulUrl.href, "--marathon": dc.marathonUrl.href })
      const daemon = yield* startCli(["run", ...swapped])
      yield* eventually("the daemon serves /health, or exits", async () =>
        daemon.child.exitCode !== null || (await fetch(`http://127.0.0.1:${port}/health`)).ok, 20_000)
      expect(daemon.child.exitCode, daemon.output()).toBeNull()
      expect(yield* daemon.stop("SIGTERM"), daemon.output()).toBe(0)
    }))

  it.live.runIf(hasSystemdAnalyze)("passes systemd-analyze verify", () =>
    Effect.gen(function*() {
      // verify checks that ExecStart's binary exists: the copy runs the built bundle in place of /usr/bin/consular
      const dir = mkdtempSync(join(tmpdir(), "consular-unit-"))
      const copy = join(dir, "consular.service")
      writeFileSync(copy, readFileSync(unitPath, "utf8").replace(/^ExecStart=\/usr\/bin\/consular /m, `ExecStart=${mainJs} `))
      const result = yield* runProcess("systemd-analyze", ["verify", copy]).pipe(
        Effect.ensuring(Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
      )
      expect(result.code, result.stderr).toBe(0)
      // verify reports bad keys and values as warnings, exiting 0: any line about the unit fails the test
      expect(result.stderr.split("\n").filter((line) => line.includes("consular.service"))).toEqual([])
    }))
})
