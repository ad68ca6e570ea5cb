import { defineConfig } from "vitest/config"
import type { Reporter, TestModule } from "vitest/node"

// CI reads a plain `N passed, N failed` closing line; vitest's own summary is not in that form.
const plainSummary: Reporter = {
  onTestRunEnd(modules: ReadonlyArray<TestModule>) {
    let passed = 0
    let failed = 0
    let skipped = 0
    for (const m of modules) {
      const tests = [...m.children.allTests()]
      if (m.state() === "failed" && tests.length === 0) failed++ // the file failed to import
      for (const t of tests) {
        const s = t.result().state
        if (s === "passed") passed++
        else if (s === "failed") failed++
        else skipped++
      }
    }
    const line = `${passed} passed, ${failed} failed` + (skipped ? `, ${skipped} skipped` : "")
    process.once("exit", () => process.stdout.write(line + "\n")) // after vitest's own summary
  }
}

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    environment: "node",
    // generous: the CLI tests start node processes, which a loaded 2-core machine makes slow
    testTimeout: 60_000,
    hookTimeout: 30_000,
    reporters: ["default", plainSummary],
    // the programs log as they work; CONSULAR_TEST_LOGS=1 shows those lines
    onConsoleLog: () => process.env["CONSULAR_TEST_LOGS"] === "1"
  }
})
