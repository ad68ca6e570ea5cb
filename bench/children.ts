import { execFileSync, spawn } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import { readFileSync } from "node:fs"
import { createServer } from "node:net"
import { performance } from "node:perf_hooks"

/**
 * Child processes of the bench: every one is registered, bounded by a deadline, and killed when the bench ends
 * (normally, on an error, or on a signal).
 */

const live = new Set<ChildProcess>()

export const killAll = (): void => {
  for (const child of live) {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
  }
  live.clear()
}

/** Memory of a process in KiB: VmRSS (now) and VmHWM (peak so far). Undefined once it has exited. */
export interface Memory {
  readonly rssKiB: number
  readonly hwmKiB: number | undefined
}

export const memoryOf = (pid: number): Memory | undefined => {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8")
    const field = (name: string) => {
      const match = new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(status)
      return match === null ? undefined : Number(match[1])
    }
    const rss = field("VmRSS")
    // a zombie (exited, not reaped yet) has no memory lines
    return rss === undefined ? undefined : { rssKiB: rss, hwmKiB: field("VmHWM") }
  } catch {
    // no /proc (macOS): ps knows the resident size, not the peak
    try {
      const out = execFileSync("ps", ["-o", "rss=", "-p", String(pid)], { encoding: "utf8", timeout: 2_000 }).trim()
      return out === "" ? undefined : { rssKiB: Number(out), hwmKiB: undefined }
    } catch {
      return undefined
    }
  }
}

/** CPU time (user + system) a process has used so far, ms; undefined without /proc. Resolution: one clock tick. */
export const cpuMsOf = (pid: number): number | undefined => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    // the fields after the command name, which is in parentheses and may contain anything
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    const ticks = Number(fields[11]) + Number(fields[12]) // utime, stime (fields 14 and 15 of stat)
    return Number.isFinite(ticks) ? ticks * (1000 / clockTicks) : undefined
  } catch {
    return undefined
  }
}

const clockTicks = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8", timeout: 2_000 }).trim()) || 100
  } catch {
    return 100
  }
})()

/** The CPU time of this process (user + system), ms. */
export const ownCpuMs = (): number => {
  const usage = process.cpuUsage()
  return (usage.user + usage.system) / 1000
}

export interface Finished {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly ms: number
  readonly stdout: string
  readonly stderr: string
  /** the highest VmHWM (else VmRSS) seen while it ran, KiB */
  readonly peakKiB: number | undefined
  /** CPU time at the last sample before exit (so slightly under the total), ms */
  readonly cpuMs: number | undefined
}

/**
 * Runs a command to its exit; the time is from spawn to exit. Memory is sampled every `sampleMs` (VmHWM only
 * grows, so the last sample before exit is the peak up to then).
 */
export const run = (
  command: string,
  args: ReadonlyArray<string>,
  options: { readonly timeoutMs: number; readonly sampleMs?: number }
): Promise<Finished> =>
  new Promise((resolve, reject) => {
    const start = performance.now()
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] })
    live.add(child)
    let stdout = ""
    let stderr = ""
    let peak: number | undefined
    let cpu: number | undefined
    child.stdout!.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk))
    child.stderr!.setEncoding("utf8").on("data", (chunk: string) => (stderr = (stderr + chunk).slice(-20_000)))
    const sample = () => {
      if (child.pid === undefined) return
      const memory = memoryOf(child.pid)
      if (memory !== undefined) peak = Math.max(peak ?? 0, memory.hwmKiB ?? memory.rssKiB)
      cpu = cpuMsOf(child.pid) ?? cpu
    }
    const sampler = options.sampleMs === undefined ? undefined : setInterval(sample, options.sampleMs)
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs)
    child.once("error", (error) => {
      clearTimeout(timer)
      if (sampler !== undefined) clearInterval(sampler)
      live.delete(child)
      reject(error)
    })
    child.once("exit", (code, signal) => {
      const ms = performance.now() - start
      clearTimeout(timer)
      if (sampler !== undefined) clearInterval(sampler)
      live.delete(child)
      // wait for the pipes to drain before answering
      let open = 2
      const done = () => {
        if (--open === 0) resolve({ code, signal, ms, stdout, stderr, peakKiB: peak, cpuMs: cpu })
      }
      if (child.stdout!.readableEnded) done()
      else child.stdout!.once("end", done)
      if (child.stderr!.readableEnded) done()
      else child.stderr!.once("end", done)
    })
  })

export interface Daemon {
  readonly child: ChildProcess
  readonly pid: number
  /** the last 20 kB of stdout and stderr */
  readonly output: () => string
  readonly exited: () => boolean
  /** SIGTERM, SIGKILL after `graceMs`; resolves with the exit code */
  readonly stop: (graceMs?: number) => Promise<number | null>
}

export const start = (command: string, args: ReadonlyArray<string>): Daemon => {
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] })
  live.add(child)
  if (child.pid === undefined) throw new Error(`could not start ${command}`)
  let output = ""
  const keep = (chunk: string) => (output = (output + chunk).slice(-20_000))
  child.stdout!.setEncoding("utf8").on("data", keep)
  child.stderr!.setEncoding("utf8").on("data", keep)
  const exit = new Promise<number | null>((resolve) => child.once("exit", (code) => {
    live.delete(child)
    resolve(code)
  }))
  return {
    child,
    pid: child.pid,
    output: () => output,
    exited: () => child.exitCode !== null || child.signalCode !== null,
    stop: (graceMs = 5_000) => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM")
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs)
      return exit.finally(() => clearTimeout(timer))
    }
  }
}

/** A loopback port nothing listens on right now. */
export const freePort = (host = "127.0.0.1"): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = createServer()
    server.once("error", reject)
    server.listen(0, host, () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** Polls `check` every 20 ms until it holds or `timeoutMs` passes; false on timeout. */
export const waitFor = async (check: () => boolean | Promise<boolean>, timeoutMs: number): Promise<boolean> => {
  const deadline = performance.now() + timeoutMs
  for (;;) {
    try {
      if (await check()) return true
    } catch {
      // not yet
    }
    if (performance.now() > deadline) return false
    await sleep(20)
  }
}
