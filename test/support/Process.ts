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

/** Runs the CLI to completion, killed after `timeoutMs` at the latest. */
export const runCli = (
  args: ReadonlyArray<string>,
  options: {
    readonly timeoutMs?: number
    readonly env?: Record<string, string>
    /** options for node itself, before the script (`--import <module>`) */
    readonly nodeArgs?: ReadonlyArray<string>
  } = {}
) =>
  Effect.promise(() =>
    new Promise<Finished>((resolve) => {
      const timeoutMs = options.timeoutMs ?? 20_000
      const child = spawn(process.execPath, [...(options.nodeArgs ?? []), mainJs, ...args], {
        stdio: ["ignore", "pipe", "pipe"],
        env: { ...process.env, ...options.env }
      })
      let stdout = ""
      let stderr = ""
      child.stdout.on("data", (chunk) => (stdout += chunk))
      child.stderr.on("data", (chunk) => (stderr += chunk))
      const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs)
      child.on("close", (code) => {
        clearTimeout(timer)
        resolve({ code, stdout, stderr })
      })
    })
  )

export interface Daemon {
  readonly child: ChildProcess
  readonly output: () => string
  /** SIGTERM, then the exit code (SIGKILL after a deadline) */
  readonly stop: (signal?: NodeJS.Signals) => Effect.Effect<number | null>
}

/** Starts a long-running CLI process, stopped with the scope. */
export const startCli = (args: ReadonlyArray<string>) =>
  Effect.acquireRelease(
    Effect.sync((): Daemon => {
      const child = spawn(process.execPath, [mainJs, ...args], { stdio: ["ignore", "pipe", "pipe"] })
      let output = ""
      child.stdout!.on("data", (chunk) => (output += chunk))
      child.stderr!.on("data", (chunk) => (output += chunk))
      const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)))
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
