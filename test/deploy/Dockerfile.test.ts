import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { makeDatacenter } from "../support/Datacenter.js"
import { eventually, freePort, runProcess, startCli } from "../support/Process.js"

// No container engine here: the Dockerfile is read, and what can run without one runs (its HEALTHCHECK).

const root = fileURLToPath(new URL("../..", import.meta.url))
const dockerfile = join(root, "deploy", "Dockerfile")

interface Instruction {
  readonly keyword: string
  readonly args: string
}

/** The Dockerfile's instructions: comments dropped, continuation lines joined. */
const instructions = (text: string): ReadonlyArray<Instruction> => {
  const joined = text
    .split("\n")
    .filter((line) => !/^\s*#/.test(line))
    .join("\n")
    .replace(/\\\n/g, " ")
  return joined
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "")
    .map((line) => {
      const [keyword, ...rest] = line.split(/\s+/)
      return { keyword: keyword!.toUpperCase(), args: rest.join(" ") }
    })
}

/** The instructions of each stage, from its FROM on. */
const stages = (all: ReadonlyArray<Instruction>) => {
  const result: Array<{ readonly image: string; readonly name: string | undefined; readonly body: Array<Instruction> }> = []
  for (const instruction of all) {
    if (instruction.keyword === "FROM") {
      const words = instruction.args.split(/\s+/).filter((w) => !w.startsWith("--"))
      result.push({ image: words[0]!, name: words[1]?.toUpperCase() === "AS" ? words[2] : undefined, body: [] })
    } else {
      result.at(-1)?.body.push(instruction)
    }
  }
  return result
}

const parsed = stages(instructions(readFileSync(dockerfile, "utf8")))
const final = parsed.at(-1)!
const last = (keyword: string) => final.body.filter((i) => i.keyword === keyword).at(-1)

/** A .dockerignore's verdict on a path: the last pattern that matches it (or one of its parents) decides. */
const ignoredBy = (patterns: ReadonlyArray<string>) => (path: string) => {
  let ignored = false
  for (const raw of patterns) {
    const exception = raw.startsWith("!")
    const pattern = (exception ? raw.slice(1) : raw).replace(/^\/+|\/+$/g, "")
    const regex = new RegExp(
      "^" + pattern.split("**").map((part) => part.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, "[^/]*").replace(/\?/g, "[^/]")).join(".*") + "$"
    )
    const segments = path.split("/")
    if (segments.some((_, i) => regex.test(segments.slice(0, i + 1).join("/")))) ignored = !exception
  }
  return ignored
}

const filesUnder = (path: string): ReadonlyArray<string> =>
  statSync(join(root, path)).isDirectory()
    ? readdirSync(join(root, path)).flatMap((name) => filesUnder(`${path}/${name}`))
    : [path]

describe("deploy/Dockerfile", () => {
  it("builds on Node 20 slim in every stage", () => {
    expect(parsed.length).toBeGreaterThan(0)
    for (const stage of parsed) expect(stage.image).toMatch(/^node:20(\.\d+){0,2}-(bookworm-)?slim$/)
  })

  it("runs as a user that is not root", () => {
    const user = last("USER")
    expect(user, "the final stage has a USER").toBeDefined()
    expect(user!.args.split(":")[0]).not.toMatch(/^(root|0)$/)
  })

  it("has `consular run` as its entrypoint, the bin the package declares", () => {
    const manifest = JSON.parse(readFileSync(join(root, "package.json"), "utf8"))
    expect(JSON.parse(last("ENTRYPOINT")!.args)).toEqual(["consular", "run"])
    expect(Object.keys(manifest.bin)).toContain("consular")
  })

  it("installs the packed tarball with production dependencies only", () => {
    const build = parsed.slice(0, -1).flatMap((stage) => stage.body)
    expect(build.some((i) => i.keyword === "RUN" && /\bnpm pack\b/.test(i.args))).toBe(true)
    const install = final.body.find((i) => i.keyword === "RUN" && /\bnpm install\b/.test(i.args))
    expect(install?.args).toMatch(/(-g|--global)\b/)
    expect(install?.args).toMatch(/--omit=dev\b/)
    expect(install?.args).toMatch(/\.tgz\b/)
  })

  it("exposes the port its health check asks", () => {
    expect(last("EXPOSE")?.args.split(/\s+/)).toContain("7000")
    expect(last("ENV")?.args).toContain("CONSULAR_HEALTH_URL=http://127.0.0.1:7000/health")
  })

  it("copies only files that exist, and that its .dockerignore lets into the build context", () => {
    const ignored = ignoredBy(
      readFileSync(`${dockerfile}.dockerignore`, "utf8").split("\n").map((l) => l.trim()).filter((l) => l !== "" && !l.startsWith("#"))
    )
    const stageNames = new Set<string>()
    let copies = 0
    for (const stage of parsed) {
      for (const instruction of stage.body.filter((i) => i.keyword === "COPY" || i.keyword === "ADD")) {
        const words = instruction.args.split(/\s+/)
        const from = words.find((w) => w.startsWith("--from="))?.slice("--from=".length)
        const sources = words.filter((w) => !w.startsWith("--")).slice(0, -1)
        if (from !== undefined) {
          expect(stageNames, `COPY --from=${from}`).toContain(from)
          continue
        }
        for (const source of sources) {
          copies++
          expect(existsSync(join(root, source)), `COPY ${source}`).toBe(true)
          for (const file of filesUnder(source)) expect(ignored(file), `${file} reaches the build context`).toBe(false)
        }
      }
      if (stage.name !== undefined) stageNames.add(stage.name)
    }
    expect(copies).toBeGreaterThan(0)
    // and what it does not copy stays out of the context
    expect(ignored("node_modules/effect/package.json")).toBe(true)
    expect(ignored("dist/main.js")).toBe(true)
  })

  const healthcheck = (): ReadonlyArray<string> => {
    const args = last("HEALTHCHECK")!.args
    const command = /\bCMD\s+(\[.*\])\s*$/.exec(args)
    expect(command, `HEALTHCHECK in exec form: ${args}`).not.toBeNull()
    return JSON.parse(command![1]!)
  }

  it.scopedLive("its HEALTHCHECK, run as Docker runs it, passes while consular serves /health", () =>
    Effect.gen(function*() {
      const [program, ...args] = healthcheck()
      expect(program).toBe("node")
      const dc = yield* makeDatacenter()
      const port = yield* freePort()
      const daemon = yield* startCli(["run", "--host", "127.0.0.1", "--port", `${port}`, "--consul", dc.consulUrl.href,
        "--marathon", dc.marathonUrl.href, "--events", "callback"])
      yield* eventually("the daemon serves", async () => (await fetch(`http://127.0.0.1:${port}/health`)).ok)
      const healthy = yield* runProcess(process.execPath, args, { env: { CONSULAR_HEALTH_URL: `http://127.0.0.1:${port}/health` } })
      expect(healthy.code, healthy.stderr).toBe(0)
      // a path the daemon answers 404 on: the check looks at the status, not only at the connection
      const notFound = yield* runProcess(process.execPath, args, { env: { CONSULAR_HEALTH_URL: `http://127.0.0.1:${port}/no-such-path` } })
      expect(notFound.code).toBe(1)
      expect(yield* daemon.stop("SIGTERM")).toBe(0)
      const stopped = yield* runProcess(process.execPath, args, { env: { CONSULAR_HEALTH_URL: `http://127.0.0.1:${port}/health` } })
      expect(stopped.code).toBe(1)
    }))
})
