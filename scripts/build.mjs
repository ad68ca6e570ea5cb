// Bundles src/bin.ts into dist/main.js (the `consular` bin) and the CLI it loads (src/main.ts and everything it
// imports) into chunks in dist/chunks/. `--version` is answered by the bin alone (0.43 -> 0.11 s, `node -e 0`
// takes 0.10 s); the daemon's and the demo's code is loaded only when their command runs, so that a one-shot
// sync neither parses it nor keeps it in memory (peak RSS of the CLI 85 -> 71 MiB).
// Node then reads and compiles a few files instead of resolving the hundreds of modules behind the Effect
// barrels: `node dist/main.js --version` takes about 0.21 s instead of about 1 s.
// Type-checking is tsc's job (`npm run build` runs `tsc --noEmit` first); esbuild only strips the types.
// `node scripts/build.mjs --metafile` also writes dist/meta.json (what the bundle is made of, by input file).
import { build } from "esbuild"
import { chmod, mkdir, rm, writeFile } from "node:fs/promises"
import { fileURLToPath } from "node:url"

const root = fileURLToPath(new URL("..", import.meta.url))

// a clean dist/: no module left over from an older, unbundled build
await rm(`${root}dist`, { recursive: true, force: true })
await mkdir(`${root}dist`, { recursive: true })

const result = await build({
  absWorkingDir: root,
  entryPoints: { main: "src/bin.ts" },
  outdir: "dist",
  // the CLI, the daemon and the demo are chunks of their own, imported when their command runs
  splitting: true,
  chunkNames: "chunks/[name]-[hash]",
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  // esbuild keeps the entry's `#!/usr/bin/env node` line first
  // the CommonJS dependencies (undici, prom-client) call require() for Node's built-ins; an ES module has none
  banner: { js: "import { createRequire as __consularRequire } from \"node:module\"; const require = __consularRequire(import.meta.url);" },
  sourcemap: true,
  sourcesContent: false,
  legalComments: "none",
  // a third of the bytes to read and parse at every start, and a smaller heap: stack traces still map through the source map
  minify: true,
  logLevel: "warning",
  metafile: process.argv.includes("--metafile")
})

if (result.metafile !== undefined) await writeFile(`${root}dist/meta.json`, JSON.stringify(result.metafile))
await chmod(`${root}dist/main.js`, 0o755)
