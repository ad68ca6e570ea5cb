#!/usr/bin/env node
import { version } from "./Version.js"

// The `consular` bin (built to dist/main.js). `consular --version` is answered here, byte for byte as
// @effect/cli answers it, without reading and compiling the CLI and Effect (about 1 MB of code): it then starts
// about as fast as `node -e 0`. Everything else is the CLI in main.ts, loaded now.
const args = process.argv.slice(2)
if (args.length === 1 && args[0] === "--version") {
  process.stdout.write(`${version}\n\n`)
} else {
  await import("./main.js")
}
