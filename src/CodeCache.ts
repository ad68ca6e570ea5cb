import { createRequire } from "node:module"
import { basename, dirname, join, resolve } from "node:path"
import type { Script } from "node:vm"

// Node's built-ins through require(), not import: the ES module facade of node:fs reads every export, and its
// getters load the file streams (about 8 ms of every start, `--version` included)
const builtin = createRequire(import.meta.url)
const { closeSync, fstatSync, mkdirSync, openSync, readFileSync, renameSync, unlinkSync, writeFileSync } = builtin("node:fs") as typeof import("node:fs")
const { homedir, tmpdir } = builtin("node:os") as typeof import("node:os")
const { debuglog } = builtin("node:util") as typeof import("node:util")

/**
 * Loads the CLI's chunks (CommonJS scripts, see scripts/build.mjs) with V8's code cache: a start compiles none of
 * the JavaScript it compiled at an earlier start, but deserialises it. Node 20 caches no code of its own (no
 * `module.enableCompileCache`, nothing for ES modules), so the chunks are run as `vm.Script`s with `cachedData`.
 *
 * - Where: `$CACHE_DIRECTORY` (systemd's CacheDirectory=), else `$XDG_CACHE_HOME/consular`, else
 *   `~/.cache/consular`, else `<tmpdir>/consular-<uid>`; one file per chunk, named after the chunk (its name holds
 *   a hash of its code), the command (run, sync, demo, help), Node's version and the CPU architecture, and holding
 *   a sha-1 of the chunk's code and of the cache. A directory owned by another user, or that others may write, is
 *   not used (its cache would be code run by consular).
 * - When: a chunk whose cache is missing, rejected by V8, corrupt or made from other code is compiled as usual,
 *   and its cache is written once the chunk's code has run (what its initialisation compiled), to a temporary
 *   file then renamed: processes starting together never read half a file. A cache that cannot be written is
 *   skipped silently.
 * - `CONSULAR_CODE_CACHE=off` loads the chunks with Node's own `require`, as does `--enable-source-maps` (Node 20
 *   maps the stack traces of required files only). `NODE_DEBUG=consular` tells what the cache does, on stderr.
 */

const debug = debuglog("consular")

/** A chunk's code: CommonJS's module wrapper, written by scripts/build.mjs */
type ChunkFunction = (exports: unknown, require: unknown, module: { exports: unknown }, filename: string, dirname: string) => void

/**
 * sha-1 of the chunk's code and of the cached data, before the data: V8 itself checks a cache's header, not every
 * byte of it, and of the code only its length (a chunk's name comes from its code before it is made CommonJS)
 */
const digestBytes = 20
// node:crypto is required when a cache is read or written, not by `--version`
const sha1 = (...parts: ReadonlyArray<Uint8Array>): Buffer => {
  const hash = (builtin("node:crypto") as typeof import("node:crypto")).createHash("sha1")
  for (const part of parts) hash.update(part)
  return hash.digest()
}

const cacheDirectory = (): string | undefined => {
  const env = process.env
  if (env["CONSULAR_CODE_CACHE"] === "off" || process.sourceMapsEnabled) return undefined
  if (env["CACHE_DIRECTORY"]) return env["CACHE_DIRECTORY"].split(":")[0]
  if (env["XDG_CACHE_HOME"]) return join(env["XDG_CACHE_HOME"], "consular")
  const home = env["HOME"] ?? safeHomedir()
  if (home) return join(home, ".cache", "consular")
  return join(tmpdir(), `consular-${process.getuid?.() ?? "user"}`)
}

const safeHomedir = (): string | undefined => {
  try {
    return homedir()
  } catch {
    return undefined
  }
}

/** The directory, made if need be; undefined when it is not ours alone. */
const ownDirectory = (dir: string): string | undefined => {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    const fd = openSync(dir, "r")
    try {
      const stat = fstatSync(fd)
      const uid = process.getuid?.()
      if (!stat.isDirectory() || (uid !== undefined && stat.uid !== uid) || (stat.mode & 0o022) !== 0) {
        debug("code cache: %s is not this user's alone: not used", dir)
        return undefined
      }
    } finally {
      closeSync(fd)
    }
    return dir
  } catch (error) {
    debug("code cache: %s: %s", dir, String(error))
    return undefined
  }
}

const readCache = (file: string, codeHash: Buffer): Buffer | undefined => {
  let bytes: Buffer
  try {
    bytes = readFileSync(file)
  } catch {
    debug("code cache: none for %s", basename(file))
    return undefined
  }
  const data = bytes.subarray(digestBytes)
  if (bytes.length <= digestBytes || !sha1(codeHash, data).equals(bytes.subarray(0, digestBytes))) {
    debug("code cache: %s is corrupt or not of this code: ignored", basename(file))
    return undefined
  }
  return data
}

const writeCache = (file: string, codeHash: Buffer, script: Script): void => {
  const temporary = `${file}.${process.pid}.tmp`
  try {
    const data = script.createCachedData()
    writeFileSync(temporary, Buffer.concat([sha1(codeHash, data), data]), { mode: 0o600 })
    renameSync(temporary, file)
    debug("code cache: wrote %s (%d bytes)", basename(file), data.length)
  } catch (error) {
    debug("code cache: cannot write %s: %s", basename(file), String(error))
    try {
      unlinkSync(temporary)
    } catch {
      // nothing was written
    }
  }
}

/** A chunk's script, from its cache if there is a good one. */
const compile = (path: string, cacheFile: string) => {
  const code = readFileSync(path)
  const codeHash = sha1(code)
  const cachedData = readCache(cacheFile, codeHash)
  const script = new (builtin("node:vm") as typeof import("node:vm")).Script(code.toString("utf8"), {
    filename: path,
    ...(cachedData === undefined ? {} : { cachedData })
  })
  const reused = cachedData !== undefined && !script.cachedDataRejected
  if (cachedData !== undefined) debug("code cache: %s %s", basename(cacheFile), reused ? "used" : "rejected by V8")
  return { script, codeHash, reused }
}

/**
 * Runs the chunk `file` (and the chunks it requires) and returns its exports. `command` names the cache: each
 * holds the functions its first start compiled, and `--help` does not run what a sync runs.
 */
export const loadChunks = (file: string, command: string): unknown => {
  const dir = cacheDirectory()
  const cache = dir === undefined ? undefined : ownDirectory(dir)
  const loaded = new Map<string, { exports: unknown }>()
  const outer = createRequire(file)
  const load = (path: string): unknown => {
    const known = loaded.get(path)
    if (known !== undefined) return known.exports
    const module = { exports: {} }
    // a chunk is CommonJS code in a function that takes CommonJS's arguments (scripts/build.mjs): run as a script,
    // it is that function; required, it exports it
    loaded.set(path, module)
    let chunk: ChunkFunction
    /** set when the chunk's cache is to be (re)written */
    let script: Script | undefined
    let codeHash: Buffer | undefined
    let cacheFile: string | undefined
    if (cache === undefined) {
      // Node's own loader, whose stack traces --enable-source-maps maps
      chunk = outer(path) as ChunkFunction
    } else {
      cacheFile = join(cache, `${basename(path)}.${command}.${process.version}-${process.arch}.v8`)
      // no Buffer outlives the compilation: the chunks' initialisation would move them to the old generation,
      // where they would stay until a full collection (2-3 MiB)
      const compiled = compile(path, cacheFile)
      codeHash = compiled.codeHash
      script = compiled.script
      chunk = script.runInThisContext() as ChunkFunction
      if (compiled.reused) script = undefined
    }
    const requireHere = (id: string) => id.startsWith("./") || id.startsWith("../") ? load(resolve(dirname(path), id)) : outer(id)
    chunk(module.exports, Object.assign(requireHere, { resolve: outer.resolve, cache: outer.cache }), module, path, dirname(path))
    // now, with what the chunk's initialisation compiled: at exit, the cache would also hold every function the
    // command ran, which the next start would deserialise whether it runs them or not (an idle sync after a cold one)
    if (script !== undefined && codeHash !== undefined && cacheFile !== undefined) writeCache(cacheFile, codeHash, script)
    return module.exports
  }
  return load(file)
}
