#!/usr/bin/env node
import { fileURLToPath } from "node:url"
import { loadChunks } from "./CodeCache.js"
import { applyHeapPolicy } from "./HeapPolicy.js"
import { version } from "./Version.js"

/** the CLI's chunk (main.ts and what it imports), named by scripts/build.mjs */
declare const CONSULAR_CLI_CHUNK: string

// The `consular` bin (built to dist/main.js). `consular --version` is answered here, byte for byte as
// @effect/cli answers it, without reading and compiling the CLI and Effect (about 1 MB of code): it then starts
// about as fast as `node -e 0`. Everything else is the CLI in main.ts, loaded now with V8's code cache.
const args = process.argv.slice(2)
if (args.length === 1 && args[0] === "--version") {
  process.stdout.write(`${version}\n\n`)
} else {
  // as main.ts reads argv: the first command named, else the daemon (or help)
  const command = args.find((arg) => arg === "run" || arg === "sync" || arg === "demo") ??
    (args.includes("--help") || args.includes("-h") ? "help" : "run")
  loadChunks(fileURLToPath(new URL(CONSULAR_CLI_CHUNK, import.meta.url)), command)
  applyHeapPolicy()
}
