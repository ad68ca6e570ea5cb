import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { readFileSync } from "node:fs"
import { operatorSetHeapFlags } from "../../src/HeapPolicy.js"
import { runCli } from "../support/Process.js"

const version = (JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }).version

describe("heap policy", () => {
  it("steps aside when the operator gives node heap flags, on the command line or in NODE_OPTIONS", () => {
    expect(operatorSetHeapFlags([], undefined)).toBe(false)
    expect(operatorSetHeapFlags(["--enable-source-maps"], "--trace-warnings")).toBe(false)
    expect(operatorSetHeapFlags(["--max-old-space-size=512"], undefined)).toBe(true)
    expect(operatorSetHeapFlags(["--max_semi_space_size=4"], undefined)).toBe(true)
    expect(operatorSetHeapFlags([], "--enable-source-maps --min-semi-space-size=2")).toBe(true)
    expect(operatorSetHeapFlags([], " --optimize-for-size")).toBe(true)
    expect(operatorSetHeapFlags([], "--heap-growing-percent=30")).toBe(true)
  })

  it.live("the built CLI starts with the policy, and with the operator's own heap flags", () =>
    Effect.gen(function*() {
      for (const env of [{}, { NODE_OPTIONS: "--max-semi-space-size=2 --max-old-space-size=256" }]) {
        // with a flag before it, --version goes through the CLI (alone, the bin entry answers it without the CLI)
        const result = yield* runCli(["--log-level=info", "--version"], { env })
        expect(result.stderr).toBe("")
        expect(result.code).toBe(0)
        expect(result.stdout.trim()).toBe(version)
      }
    }))
})
