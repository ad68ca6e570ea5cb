import { PerformanceObserver } from "node:perf_hooks"
import { getHeapSpaceStatistics, setFlagsFromString } from "node:v8"

/**
 * consular's live heap is small (about 20 MB in the middle of a sync of 5,000 tasks, code included), but V8's
 * defaults are sized for the machine's whole memory: the young generation grows to 32 MB, and the old one fills
 * with dead objects to several times its live size before a full collection. A daemon beside every Consul
 * should stay small, and here that costs little CPU:
 * - the old generation may grow by a quarter of its live size between full collections (`--heap-growing-percent`);
 * - the young generation stops growing at 8 MB (`--semi-space-growth-factor=1` once it is that big: smaller
 *   than that, collections come so often that events slow down).
 * Measured on the bench (5,000 tasks, 4,000 events), with the bundle split: peak RSS 106 -> 94 MiB (sync) and
 * 166 -> 100 MiB (daemon), events no slower (about 1,700-2,100 RUNNING/s, p99 23-28 ms). The daemon's peak is
 * mostly reached by its first sync; its live heap is then about 17 MB.
 * V8 reads both flags at each collection, so setting them while running takes effect. Heap flags an operator
 * gives node (`node --max-semi-space-size=… dist/main.js`, or NODE_OPTIONS) win: then this sets nothing.
 */

const youngGenerationCap = 8 * 1024 * 1024

/** Heap flags the operator gave node themselves (on its command line or in NODE_OPTIONS): theirs win. */
export const operatorSetHeapFlags = (execArgv: ReadonlyArray<string>, nodeOptions: string | undefined): boolean =>
  [...execArgv, ...(nodeOptions ?? "").split(/\s+/)].some((flag) =>
    /^--(max|min)[-_](semi|old)[-_]space[-_]size|^--(heap[-_]growing[-_]percent|semi[-_]space[-_]growth[-_]factor|optimize[-_]for[-_]size)/
      .test(flag)
  )

const youngGenerationSize = () => getHeapSpaceStatistics().find((space) => space.space_name === "new_space")?.space_size ?? 0

if (!operatorSetHeapFlags(process.execArgv, process.env["NODE_OPTIONS"])) {
  setFlagsFromString("--heap-growing-percent=25")
  // the young generation grows only at a collection: look after each one until it is big enough
  const capYoungGeneration = () => {
    if (youngGenerationSize() < youngGenerationCap) return false
    setFlagsFromString("--semi-space-growth-factor=1")
    return true
  }
  if (!capYoungGeneration()) {
    const observer = new PerformanceObserver(() => {
      if (capYoungGeneration()) observer.disconnect()
    })
    observer.observe({ entryTypes: ["gc"] })
  }
}
