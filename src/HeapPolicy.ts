import { setFlagsFromString } from "node:v8"

/**
 * consular's live heap is small (about 20 MB in the middle of a sync of 5,000 tasks, code included), but V8's
 * defaults are sized for the machine's whole memory: the young generation grows to 32 MB, and the old one fills
 * with dead objects to several times its live size before a full collection. A daemon beside every Consul
 * should stay small, and here that costs little CPU:
 * - the old generation may grow by a quarter of its live size between full collections (`--heap-growing-percent`);
 * - the young generation stops growing once the modules are initialised, at the 8 MB that takes
 *   (`--semi-space-growth-factor=1`; smaller, collections come so often that events slow down).
 * Measured on the bench (5,000 tasks, 4,000 events), with the bundle split: peak RSS 106 -> 94 MiB (sync) and
 * 166 -> 100 MiB (daemon), events no slower (about 1,700-2,100 RUNNING/s, p99 23-28 ms). The daemon's peak is
 * mostly reached by its first sync; its live heap is then about 17 MB.
 * V8 reads both flags at each collection, so setting them while running takes effect. Heap flags an operator
 * gives node (`node --max-semi-space-size=… dist/main.js`, or NODE_OPTIONS) win: then this sets nothing.
 */

/** Heap flags the operator gave node themselves (on its command line or in NODE_OPTIONS): theirs win. */
export const operatorSetHeapFlags = (execArgv: ReadonlyArray<string>, nodeOptions: string | undefined): boolean =>
  [...execArgv, ...(nodeOptions ?? "").split(/\s+/)].some((flag) =>
    /^--(max|min)[-_](semi|old)[-_]space[-_]size|^--(heap[-_]growing[-_]percent|semi[-_]space[-_]growth[-_]factor|optimize[-_]for[-_]size)/
      .test(flag)
  )

/**
 * Called by the bin once the modules are initialised: their initialisation has grown the young generation to 8 MB
 * (it doubles from 1 MB at collections), and from here on it keeps that size. Their code cache (CodeCache.ts) is
 * made before: V8 refuses a cache made under other flags than those of the start that reads it.
 */
export const applyHeapPolicy = (): void => {
  if (!operatorSetHeapFlags(process.execArgv, process.env["NODE_OPTIONS"])) {
    setFlagsFromString("--heap-growing-percent=25 --semi-space-growth-factor=1")
  }
}

