import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, realpathSync, rmSync, statSync, symlinkSync } from "node:fs"
import { tmpdir } from "node:os"
import { dirname, join, relative } from "node:path"
import { fileURLToPath } from "node:url"
import { makeDatacenter } from "../support/Datacenter.js"
import { eventually, freePort, runProcess, startProcess } from "../support/Process.js"
import { readTarball } from "./Tarball.js"
import type { TarEntry } from "./Tarball.js"

// The package as operators get it: `npm pack` on a clean checkout (no dist/: the prepack script builds it), then
// `npm install -g` of the tarball into a prefix of its own, and `consular` run from that prefix's bin/, in a
// directory outside the work tree. Nothing here reads or rebuilds the work tree's dist/, which the other tests
// are running meanwhile.

const root = fileURLToPath(new URL("../..", import.meta.url))

// What a clean clone has that `npm pack` could pick up: everything but the build output and the installed
// dependencies (linked back, so that the prepack build finds esbuild; npm never packs node_modules).
const notInAClone = new Set(["node_modules", "dist", "dist-bench", ".git"])

// npm sets these for the scripts it runs (`npm test`): they would point a nested npm at the work tree.
const nestedNpmEnv = Object.fromEntries(
  Object.keys(process.env)
    .filter((key) => /^npm_(package_|lifecycle_|command$|config_(local_prefix|prefix|global_prefix|call)$)/i.test(key))
    .map((key) => [key, undefined])
)

const work = mkdtempSync(join(tmpdir(), "consular-package-"))
const clone = join(work, "clone")
const packed = join(work, "packed")
const prefix = join(work, "prefix")
const outside = join(work, "elsewhere")
const consularBin = join(prefix, "bin", "consular")

let tarball = ""
let entries: ReadonlyArray<TarEntry> = []

const npm = (args: ReadonlyArray<string>, cwd: string, timeoutMs: number) =>
  Effect.runPromise(runProcess("npm", args, { cwd, timeoutMs, env: nestedNpmEnv })).then((result) => {
    if (result.code !== 0) throw new Error(`npm ${args.join(" ")} exited ${result.code}:\n${result.stderr}`)
    return result
  })

beforeAll(async () => {
  cpSync(root, clone, { recursive: true, filter: (source) => !notInAClone.has(relative(root, source).split("/")[0]!) })
  symlinkSync(join(root, "node_modules"), join(clone, "node_modules"), "dir")
  mkdirSync(packed)
  mkdirSync(outside)
  await npm(["pack", "--pack-destination", packed], clone, 120_000)
  tarball = join(packed, readdirSync(packed).find((name) => name.endsWith(".tgz"))!)
  entries = readTarball(tarball)
  // `npm ci` has just filled the cache: prefer it, the registry is the fallback
  await npm(["install", "--global", "--prefix", prefix, "--prefer-offline", "--no-audit", "--no-fund", tarball], outside, 240_000)
}, 400_000)

afterAll(() => rmSync(work, { recursive: true, force: true }))

const entry = (path: string) => entries.find((e) => e.path === `package/${path}`)

describe("the packed package", () => {
  it("holds the bundle, package.json and the README, and no sources or tests", () => {
    const paths = entries.filter((e) => e.type === "file").map((e) => e.path.replace(/^package\//, ""))
    expect(paths).toContain("dist/main.js")
    expect(paths).toContain("package.json")
    expect(paths).toContain("README.md")
    expect(paths.filter((p) => !p.startsWith("dist/") && !["package.json", "README.md"].includes(p) && !/^LICEN[CS]E/i.test(p))).toEqual([])
    expect(paths.filter((p) => /\.ts$/.test(p) || /(^|\/)(src|test|bench)\//.test(p))).toEqual([])
  })

  it("has dist/main.js as an executable node script", () => {
    const main = entry("dist/main.js")!
    expect(main.content.toString("utf8").split("\n")[0]).toBe("#!/usr/bin/env node")
    expect(main.mode & 0o111).toBe(0o111)
  })

  it("declares the bin, the files and the Node it needs", () => {
    const manifest = JSON.parse(entry("package.json")!.content.toString("utf8"))
    expect(manifest.bin).toEqual({ consular: expect.stringMatching(/^(\.\/)?dist\/main\.js$/) })
    expect(manifest.files).toEqual(["dist"])
    // Node 20 is what the Dockerfile and the README promise
    const minimum = /^>=\s*(\d+)/.exec(manifest.engines?.node ?? "")
    expect(minimum, `engines.node: ${manifest.engines?.node}`).not.toBeNull()
    expect(Number(minimum![1])).toBeLessThanOrEqual(20)
    expect(manifest.scripts.prepack).toBeDefined()
  })
})

describe("consular installed globally from the tarball", () => {
  it("is on the prefix's PATH, linked to the installed package, not the work tree", () => {
    expect(existsSync(consularBin)).toBe(true)
    const target = realpathSync(consularBin)
    expect(target).toBe(realpathSync(join(prefix, "lib", "node_modules", "consular", "dist", "main.js")))
    expect(statSync(target).mode & 0o111).toBe(0o111)
  })

  it.live("answers --version with the package's version", () =>
    Effect.gen(function*() {
      const manifest = JSON.parse(entry("package.json")!.content.toString("utf8"))
      const result = yield* runProcess("consular", ["--version"], { cwd: outside, env: installedPath() })
      expect(result.code, result.stderr).toBe(0)
      expect(result.stdout.trim()).toBe(manifest.version)
    }))

  it.scopedLive("sync --dry-run prints the plan against real HTTP servers and writes nothing", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.marathon.putApp("/shop/web", { domain: "shop.example" })
      dc.marathon.setTask("/shop/web", { id: "web.1", host: "127.0.0.2", ports: [8080] }, false)
      dc.consul.resetCounters()
      const result = yield* runProcess("consular", ["sync", "--dry-run", "--consul", dc.consulUrl.href, "--marathon", dc.marathonUrl.href],
        { cwd: outside, env: installedPath() })
      expect(result.code, result.stderr).toBe(0)
      expect(result.stdout).toContain("register web.1 (shop-web) at 127.0.0.2:8080 on agent 127.0.0.2")
      expect(result.stdout).toContain("set consular/shop-web/domain")
      expect(dc.consul.writes).toBe(0)
    }))

  it.scopedLive("runs the daemon: /health answers, and SIGTERM ends it with 0", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.marathon.setTask("/web", { id: "web.1", host: "127.0.0.2", ports: [1] }, false)
      const port = yield* freePort()
      const daemon = yield* startProcess("consular", ["run", "--host", "127.0.0.1", "--port", `${port}`, "--consul", dc.consulUrl.href,
        "--marathon", dc.marathonUrl.href, "--events", "callback", "--sync-interval", "1"], { cwd: outside, env: installedPath() })
      yield* eventually("the installed daemon serves /health", async () => (await fetch(`http://127.0.0.1:${port}/health`)).status === 200, 20_000)
      yield* eventually("the installed daemon's first sync", () => dc.consul.services("127.0.0.2").has("web.1"), 20_000)
      expect(yield* daemon.stop("SIGTERM"), daemon.output()).toBe(0)
    }))
})

/** PATH with the prefix's bin/ first, and the node running the tests (the bin's `#!/usr/bin/env node`). */
const installedPath = () => ({ ...nestedNpmEnv, PATH: [join(prefix, "bin"), dirname(process.execPath), process.env["PATH"] ?? ""].join(":") })
