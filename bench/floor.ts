import { performance } from "node:perf_hooks"
import { Pool } from "undici"
import { coldSyncWrites, makeSeed, mainAgent, txnBatches } from "./seed.js"
import type { Sizes } from "./seed.js"

/**
 * The earlier, write-only floor (a labelled line of the bench, not a target: no program that starts, reads and
 * diffs can come near it; bench/floor/ holds the honest one): a bare keep-alive HTTP client that sends only what
 * a cold sync cannot avoid (one registration per task to its agent, the labels in /v1/txn batches of 64) at a
 * fixed concurrency, and nothing else: no reads, no decoding, no plan. It runs as its own process, like consular, so that it does not share a core with the
 * embedded Consul; its clock starts at its first request (process start-up is not counted).
 *
 * Usage: node dist-bench/bench/floor.js '<json: { port, sizes }>'; prints one JSON line { ms, requests, failures }.
 */

interface FloorInput {
  readonly port: number
  readonly sizes: Pick<Sizes, "apps" | "tasks" | "agents" | "labels" | "concurrency">
}

const input = JSON.parse(process.argv[2] ?? "{}") as FloorInput
const writes = coldSyncWrites(makeSeed(input.sizes))

interface Job {
  readonly agent: string
  readonly path: string
  readonly body: string
}

// prepared before the clock starts: the floor measures the wire and the server, not JSON encoding
const jobs: Array<Job> = [
  ...txnBatches(writes.kv).map((batch): Job => ({ agent: mainAgent, path: "/v1/txn", body: JSON.stringify(batch) })),
  ...writes.registrations.map(({ agent, registration }): Job => ({
    agent,
    path: "/v1/agent/service/register",
    body: JSON.stringify(registration)
  }))
]

const pools = new Map<string, Pool>()
const poolOf = (agent: string): Pool => {
  let pool = pools.get(agent)
  if (pool === undefined) {
    pool = new Pool(`http://${agent}:${input.port}`, {
      connections: input.sizes.concurrency,
      headersTimeout: 30_000,
      bodyTimeout: 30_000
    })
    pools.set(agent, pool)
  }
  return pool
}

const main = async () => {
  let next = 0
  let failures = 0
  const worker = async () => {
    for (;;) {
      const job = jobs[next++]
      if (job === undefined) return
      const response = await poolOf(job.agent).request({
        method: "PUT",
        path: job.path,
        body: job.body,
        headers: { "content-type": "application/json" }
      })
      await response.body.dump()
      if (response.statusCode !== 200) failures++
    }
  }
  const start = performance.now()
  await Promise.all(Array.from({ length: input.sizes.concurrency }, worker))
  const ms = performance.now() - start
  await Promise.all([...pools.values()].map((pool) => pool.close()))
  process.stdout.write(JSON.stringify({ ms, requests: jobs.length, failures }) + "\n")
}

main().catch((error: unknown) => {
  process.stderr.write(`floor: ${error instanceof Error ? error.stack ?? error.message : String(error)}\n`)
  process.exit(1)
})
