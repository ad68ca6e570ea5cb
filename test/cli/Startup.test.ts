import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { cpSync, mkdtempSync, readdirSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { dirname, join } from "node:path"
import { mainJs, runCli, runProcess } from "../support/Process.js"

const version = "0.1.0"

describe("start-up of the built CLI", () => {
  it.live("--version is answered by the bin entry itself: it works with the CLI's code gone", () =>
    Effect.gen(function*() {
      // a copy of dist/ without the CLI chunk (main.ts and what only it imports)
      const copy = mkdtempSync(join(tmpdir(), "consular-dist-"))
      try {
        cpSync(dirname(mainJs), copy, { recursive: true })
        const chunks = join(copy, "chunks")
        const cliChunks = readdirSync(chunks).filter((name) => /^main-.*\.js$/.test(name))
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
