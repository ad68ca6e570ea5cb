// Builds dist/main.js (the `consular` bin, src/bin.ts) and the CLI it loads (src/main.ts and everything it imports)
// as chunks in dist/chunks/:
// - `--version` is answered by the bin alone (0.43 -> 0.11 s; `node -e 0` takes 0.10 s);
// - the daemon's and the demo's code is in chunks of their own, loaded only when their command runs, so that a
//   one-shot sync neither parses it nor keeps it in memory (peak RSS of the CLI 85 -> 71 MiB);
// - the chunks are CommonJS scripts, which the bin runs with V8's code cache (src/CodeCache.ts): Node 20 caches
//   no compiled code of ES modules. esbuild splits ES modules only, so the CLI is first bundled and split as ES
//   modules in a staging directory, then each chunk is turned into CommonJS (the source maps chained through).
// Node then reads a few files instead of resolving the hundreds of modules behind the Effect barrels.
// Type-checking is tsc's job (`npm run build` runs `tsc --noEmit` first); esbuild only strips the types.
// `node scripts/build.mjs --metafile` also writes dist/meta.json (what the CLI's chunks are made of, by input file).
import { build } from "esbuild"
import { chmod, mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { basename, join } from "node:path"
import { fileURLToPath } from "node:url"

const root = fileURLToPath(new URL("..", import.meta.url))
const common = {
  absWorkingDir: root,
  platform: "node",
  target: "node20",
  sourcemap: true,
  sourcesContent: false,
  legalComments: "none",
  // a third of the bytes to read and parse at every start, and a smaller heap: stack traces still map through the source map
  minify: true,
  logLevel: "warning"
}

// a clean dist/: no module left over from an older build
await rm(`${root}dist`, { recursive: true, force: true })
await mkdir(`${root}dist/chunks`, { recursive: true })
const staging = await mkdtemp(join(tmpdir(), "consular-build-"))
try {
  const split = await build({
    ...common,
    entryPoints: { cli: "src/main.ts" },
    outdir: staging,
    // the daemon and the demo are chunks of their own, required when their command runs
    splitting: true,
    bundle: true,
    format: "esm",
    entryNames: "[name]-[hash]",
    chunkNames: "[name]-[hash]",
    // their names once they are CommonJS, in the imports too
    outExtension: { ".js": ".cjs" },
    metafile: true
  })
  const chunks = (await readdir(staging)).filter((name) => name.endsWith(".cjs"))
  // ES module -> CommonJS, one chunk at a time (imports become require() of the other chunks)
  await build({
    ...common,
    entryPoints: chunks.map((name) => join(staging, name)),
    outdir: `${root}dist/chunks`,
    outExtension: { ".js": ".cjs" },
    bundle: false,
    format: "cjs",
    // import() of a chunk becomes require() too, which the bin's loader answers
    supported: { "dynamic-import": false },
    // CommonJS's module wrapper, in the file rather than added when it is read (that copy of the code cost 4 MiB
    // of RSS): run as a script (src/CodeCache.ts), a chunk's value is that function; required, it exports it
    banner: { js: "(function(f){return typeof module==\"object\"&&module!==null?module.exports=f:f})(function(exports,require,module,__filename,__dirname){" },
    footer: { js: "\n})" }
  })
  const cli = Object.entries(split.metafile.outputs).find(([, output]) => output.entryPoint === "src/main.ts")
  if (cli === undefined) throw new Error("no chunk for src/main.ts")
  await build({
    ...common,
    entryPoints: { main: "src/bin.ts" },
    outdir: "dist",
    bundle: true,
    format: "esm",
    // esbuild keeps the entry's `#!/usr/bin/env node` line first
    define: { CONSULAR_CLI_CHUNK: JSON.stringify(`./chunks/${basename(cli[0])}`) }
  })
  if (process.argv.includes("--metafile")) await writeFile(`${root}dist/meta.json`, JSON.stringify(split.metafile))
} finally {
  await rm(staging, { recursive: true, force: true })
}
await chmod(`${root}dist/main.js`, 0o755)
