import { spawn } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import { createServer } from "node:net"
import { fileURLToPath } from "node:url"
import { Effect } from "effect"

/** The built CLI, as operators run it: `node dist/main.js …` (`npm test` builds first). */
export const mainJs = fileURLToPath(new URL("../../dist/main.js", import.meta.url))

export interface Finished {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

export interface RunOptions {
  readonly timeoutMs?: number
  /** added to this process's environment; a key set to undefined is left out */
  readonly env?: Record<string, string | undefined>
  readonly cwd?: string
}

/** Runs the CLI to completion, killed after `timeoutMs` at the latest. */
export const runCli = (args: ReadonlyArray<string>, options: RunOptions = {}) =>
  runProcess(process.execPath, [mainJs, ...args], options)

/** Runs any program to completion (`npm`, an installed `consular`), killed after `timeoutMs` at the latest. */
export const runProcess = (file: string, args: ReadonlyArray<string>, options: RunOptions = {}) =>
  Effect.promise(() =>
    new Promise<Finished>((resolve) => {
      const timeoutMs = options.timeoutMs ?? 20_000
      const child = spawn(file, args, {
        stdio: ["ignore", "pipe", "pipe"],
        env: { ...process.env, ...options.env },
        cwd: options.cwd
      })
      let stdout = ""
      let stderr = ""
      child.stdout.on("data", (chunk) => (stdout += chunk))
      child.stderr.on("data", (chunk) => (stderr += chunk))
      const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs)
      const finish = (code: number | null) => {
        clearTimeout(timer)
        resolve({ code, stdout, stderr })
      }
      // a program that cannot be started (ENOENT) ends here, with its reason as stderr
      child.on("error", (error) => {
        stderr += String(error)
        finish(null)
      })
      child.on("close", finish)
    })
  )

export interface Daemon {
  readonly child: ChildProcess
  readonly output: () => string
  /** SIGTERM, then the exit code (SIGKILL after a deadline) */
  readonly stop: (signal?: NodeJS.Signals) => Effect.Effect<number | null>
}

/** Starts a long-running CLI process, stopped with the scope. */
export const startCli = (args: ReadonlyArray<string>) => startProcess(process.execPath, [mainJs, ...args])

/** Starts any long-running program (an installed `consular run`), stopped with the scope. */
export const startProcess = (file: string, args: ReadonlyArray<string>, options: Omit<RunOptions, "timeoutMs"> = {}) =>
  Effect.acquireRelease(
    Effect.sync((): Daemon => {
      const child = spawn(file, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...options.env }, cwd: options.cwd })
      let output = ""
      child.stdout!.on("data", (chunk) => (output += chunk))
      child.stderr!.on("data", (chunk) => (output += chunk))
      const exited = new Promise<number | null>((resolve) => {
        child.on("exit", (code) => resolve(code))
        // a program that cannot be started never exits: its reason is its output
        child.on("error", (error) => {
          output += String(error)
          resolve(null)
        })
      })
      const stop = (signal: NodeJS.Signals = "SIGTERM") =>
        Effect.promise(() => {
          if (child.exitCode === null && child.signalCode === null) child.kill(signal)
          const timer = setTimeout(() => child.kill("SIGKILL"), 10_000)
          return exited.finally(() => clearTimeout(timer))
        })
      return { child, output: () => output, stop }
    }),
    (daemon) => Effect.asVoid(daemon.stop("SIGKILL"))
  )

/** A port nothing listens on right now (bound and released). */
export const freePort = (host = "127.0.0.1") =>
  Effect.promise(() =>
    new Promise<number>((resolve, reject) => {
      const server = createServer()
      server.once("error", reject)
      server.listen(0, host, () => {
        const address = server.address()
        const port = typeof address === "object" && address !== null ? address.port : 0
        server.close(() => resolve(port))
      })
    })
  )

/** Polls `check` until it holds, for at most `timeoutMs`; fails the test with `what` otherwise. */
export const eventually = (what: string, check: () => boolean | Promise<boolean>, timeoutMs = 10_000) =>
  Effect.promise(async () => {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      try {
        if (await check()) return
      } catch {
        // not yet
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`)
      await new Promise((resolve) => setTimeout(resolve, 25))
    }
  })
