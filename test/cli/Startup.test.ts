import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { mainJs, runCli, runProcess } from "../support/Process.js"

// the version the package is published as: src/Version.ts (what --version prints) must say the same
const version = (JSON.parse(readFileSync(fileURLToPath(new URL("../../package.json", import.meta.url)), "utf8")) as { version: string }).version

const tempDirectory = () => mkdtempSync(join(tmpdir(), "consular-startup-"))

/** `NODE_DEBUG=consular` lines about the code cache, e.g. "cli-X.cjs.help.v20.1.0-x64.v8 used" */
const cacheLines = (stderr: string) =>
  stderr.split("\n").filter((line) => line.includes("code cache:")).map((line) => line.replace(/^.*code cache: /, ""))

describe("start-up of the built CLI", () => {
  it.live("--version is answered by the bin entry itself: it works with the CLI's code gone", () =>
    Effect.gen(function*() {
      // a copy of dist/ without the CLI chunk (main.ts and what only it imports)
      const copy = tempDirectory()
      try {
        cpSync(dirname(mainJs), copy, { recursive: true })
        const chunks = join(copy, "chunks")
        const cliChunks = readdirSync(chunks).filter((name) => /^cli-.*\.cjs$/.test(name))
        expect(cliChunks).toHaveLength(1)
        for (const name of cliChunks) rmSync(join(chunks, name))
        const answered = yield* runProcess(process.execPath, [join(copy, "main.js"), "--version"])
        expect(answered.stderr).toBe("")
        expect(answered.code).toBe(0)
        expect(answered.stdout).toBe(`${version}\n\n`)
        // anything else needs the CLI
        const help = yield* runProcess(process.execPath, [join(copy, "main.js"), "--help"])
        expect(help.code).not.toBe(0)
      } finally {
        rmSync(copy, { recursive: true, force: true })
      }
    }))

  it.live("--version prints exactly what @effect/cli prints for it", () =>
    Effect.gen(function*() {
      const fast = yield* runCli(["--version"])
      // with another flag before it, --version goes through the CLI and @effect/cli answers it
      const viaCli = yield* runCli(["--log-level=info", "--version"])
      expect(viaCli.code).toBe(0)
      expect(fast.code).toBe(0)
      expect(fast.stdout).toBe(viaCli.stdout)
      expect(fast.stderr).toBe(viaCli.stderr)
    }))
})

describe("V8's code cache of the CLI", () => {
  const withCacheHome = <A, E, R>(body: (home: string, env: Record<string, string | undefined>) => Effect.Effect<A, E, R>) =>
    Effect.acquireUseRelease(
      Effect.sync(tempDirectory),
      (home) => body(home, { XDG_CACHE_HOME: home, NODE_DEBUG: "consular", CACHE_DIRECTORY: undefined, CONSULAR_CODE_CACHE: undefined }),
      (home) => Effect.sync(() => rmSync(home, { recursive: true, force: true }))
    )
  const cacheFiles = (home: string) => {
    const dir = join(home, "consular")
    return existsSync(dir) ? readdirSync(dir).filter((name) => name.endsWith(".v8")) : []
  }

  it.live("is written by the first start, in $XDG_CACHE_HOME/consular, and used by the next", () =>
    withCacheHome((home, env) =>
      Effect.gen(function*() {
        const first = yield* runCli(["--help"], { env })
        expect(first.code).toBe(0)
        expect(first.stdout).toContain("Usage:")
        expect(cacheLines(first.stderr).some((line) => /^wrote cli-.*\.cjs\.help\.v\d+.*\.v8/.test(line))).toBe(true)
        const files = cacheFiles(home)
        expect(files.some((name) => name.startsWith("cli-") && name.includes(`${process.version}-${process.arch}`))).toBe(true)

        const second = yield* runCli(["--help"], { env })
        expect(second.code).toBe(0)
        expect(second.stdout).toBe(first.stdout)
        const lines = cacheLines(second.stderr)
        expect(lines.filter((line) => line.startsWith("cli-"))).toEqual([expect.stringMatching(/^cli-.* used$/)])
        // nothing to write: every chunk came from the cache
        expect(lines.filter((line) => line.startsWith("wrote"))).toEqual([])
      })))

  it.live("a one-shot sync reads neither the daemon's chunks nor the demo's", () =>
    withCacheHome((_home, env) =>
      Effect.gen(function*() {
        const chunks = join(dirname(mainJs), "chunks")
        // the daemon's metrics (prom-client, only the daemon serves /metrics), and the demo: each in a chunk of its own
        const daemonChunk = readdirSync(chunks).find((name) =>
          name.endsWith(".cjs") && readFileSync(join(chunks, name), "utf8").includes("process_cpu_user_seconds_total"))
        const demoChunk = readdirSync(chunks).find((name) => /^Demo-.*\.cjs$/.test(name))
        expect(daemonChunk).toBeDefined()
        expect(demoChunk).toBeDefined()
        const result = yield* runCli(["sync", "--consul", "http://127.0.0.1:1", "--marathon", "http://127.0.0.1:1"], { env })
        expect(result.code).toBe(1)
        // every chunk the sync ran is named once, as it has no cache yet
        const read = cacheLines(result.stderr).flatMap((line) => /^none for (\S+)\.sync\./.exec(line)?.[1] ?? [])
        expect(read).toContainEqual(expect.stringMatching(/^cli-/))
        expect(read).not.toContain(daemonChunk)
        expect(read).not.toContain(demoChunk)
      })))

  it.live("a corrupt cache is ignored and written anew", () =>
    withCacheHome((home, env) =>
      Effect.gen(function*() {
        yield* runCli(["--help"], { env })
        const cli = cacheFiles(home).find((name) => name.startsWith("cli-"))!
        const path = join(home, "consular", cli)
        const bytes = readFileSync(path)
        // one byte of the code changed, deep inside: V8's own checks of the header would not see it
        bytes[Math.floor(bytes.length * 0.6)]! ^= 0xff
        writeFileSync(path, bytes)
        const corrupt = yield* runCli(["--help"], { env })
        expect(corrupt.code).toBe(0)
        expect(corrupt.stdout).toContain("Usage:")
        expect(cacheLines(corrupt.stderr)).toContain(`${cli} is corrupt or not of this code: ignored`)
        expect(cacheLines(corrupt.stderr)).toContainEqual(expect.stringMatching(new RegExp(`^wrote ${cli.replace(/\./g, "\\.")}`)))
        // truncated: the same
        writeFileSync(path, bytes.subarray(0, 10))
        const truncated = yield* runCli(["--help"], { env })
        expect(truncated.code).toBe(0)
        expect(cacheLines(truncated.stderr)).toContain(`${cli} is corrupt or not of this code: ignored`)
        const again = yield* runCli(["--help"], { env })
        expect(cacheLines(again.stderr)).toContain(`${cli} used`)
      })))

  it.live("a cache directory that cannot be written is no error: the CLI runs, without a cache", () =>
    withCacheHome((home, env) =>
      Effect.gen(function*() {
        // root may write anywhere (tests run as root in CI): a file where the directory should be stands in for a
        // read-only directory
        writeFileSync(join(home, "consular"), "")
        const result = yield* runCli(["--help"], { env })
        expect(result.code).toBe(0)
        expect(result.stdout).toContain("Usage:")
        expect(cacheLines(result.stderr)).toEqual([expect.stringContaining("consular")])
      })))

  it.live("a cache directory others may write is not used", () =>
    withCacheHome((home, env) =>
      Effect.gen(function*() {
        mkdirSync(join(home, "consular"))
        chmodSync(join(home, "consular"), 0o777)
        const result = yield* runCli(["--help"], { env })
        expect(result.code).toBe(0)
        expect(cacheLines(result.stderr)).toEqual([expect.stringMatching(/is not this user's alone: not used$/)])
        expect(cacheFiles(home)).toEqual([])
      })))

  it.live("CONSULAR_CODE_CACHE=off and --enable-source-maps load the CLI without it", () =>
    withCacheHome((home, env) =>
      Effect.gen(function*() {
        const off = yield* runCli(["--help"], { env: { ...env, CONSULAR_CODE_CACHE: "off" } })
        expect(off.code).toBe(0)
        expect(off.stdout).toContain("Usage:")
        const mapped = yield* runCli(["--help"], { env, nodeArgs: ["--enable-source-maps"] })
        expect(mapped.code).toBe(0)
        expect(mapped.stdout).toBe(off.stdout)
        expect(cacheLines(off.stderr + mapped.stderr)).toEqual([])
        expect(cacheFiles(home)).toEqual([])
      })))
})
