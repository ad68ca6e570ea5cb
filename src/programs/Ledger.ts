import { Context, Effect, Layer } from "effect"
import { appName } from "../domain/Naming.js"

/**
 * What events did while a sync pass was under way, so that the pass does not undo them: a pass that read
 * Marathon before a kill event must not re-register the killed task, nor purge a task an event just registered,
 * nor rewrite labels an event just refreshed. Events are recorded only while a pass is under way (passes never
 * overlap), so the ledger holds at most the events of one pass.
 */
export interface LedgerView {
  readonly started: ReadonlySet<string>
  readonly ended: ReadonlySet<string>
  readonly apps: ReadonlySet<string>
}

export class Ledger extends Context.Tag("consular/Ledger")<Ledger, {
  /** marks the start of a pass (before Marathon is read); returns its mark */
  readonly beginPass: Effect.Effect<number>
  readonly endPass: Effect.Effect<void>
  /** `appId` is named (its Consul name) only while a pass is under way: outside one nothing is recorded */
  readonly taskStarted: (taskId: string, appId: string) => Effect.Effect<void>
  readonly taskEnded: (taskId: string, appId: string) => Effect.Effect<void>
  /** what events did since the mark */
  readonly since: (mark: number) => Effect.Effect<LedgerView>
  /** whether an event changed this task since the mark (asked under the task's lock, just before a write) */
  readonly taskTouchedSince: (taskId: string, mark: number) => Effect.Effect<boolean>
  /** whether an event touched this app since the mark */
  readonly appTouchedSince: (appName: string, mark: number) => Effect.Effect<boolean>
}>() {}

interface Entry {
  readonly seq: number
  readonly kind: "started" | "ended"
  readonly taskId: string
  readonly appName: string
}

export const makeLedger = Effect.sync(() => {
  let seq = 0
  let passUnderWay = false
  let entries: Array<Entry> = []
  let lastOfTask = new Map<string, number>()
  let lastOfApp = new Map<string, number>()
  const record = (kind: Entry["kind"]) => (taskId: string, appId: string) =>
    Effect.sync(() => {
      // outside a pass there is nothing to protect: the next pass reads Marathon after this event
      if (!passUnderWay) return
      const name = appName(appId)
      entries.push({ seq: ++seq, kind, taskId, appName: name })
      lastOfTask.set(taskId, seq)
      lastOfApp.set(name, seq)
    })
  const forget = () => {
    entries = []
    lastOfTask = new Map()
    lastOfApp = new Map()
  }
  return Ledger.of({
    beginPass: Effect.sync(() => {
      passUnderWay = true
      forget()
      return seq
    }),
    endPass: Effect.sync(() => {
      passUnderWay = false
      forget()
    }),
    taskTouchedSince: (taskId, mark) => Effect.sync(() => (lastOfTask.get(taskId) ?? 0) > mark),
    appTouchedSince: (appName, mark) => Effect.sync(() => (lastOfApp.get(appName) ?? 0) > mark),
    taskStarted: record("started"),
    taskEnded: record("ended"),
    since: (mark) =>
      Effect.sync(() => {
        const started = new Set<string>()
        const ended = new Set<string>()
        const apps = new Set<string>()
        for (const entry of entries) {
          if (entry.seq <= mark) continue
          ;(entry.kind === "started" ? started : ended).add(entry.taskId)
          apps.add(entry.appName)
        }
        return { started, ended, apps }
      })
  })
})

export const LedgerLive: Layer.Layer<Ledger> = Layer.effect(Ledger, makeLedger)
