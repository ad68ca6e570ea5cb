import { HttpRouter } from "@effect/platform"
import { Deferred, Effect, Exit, Queue, Ref } from "effect"
import { NotLeading } from "../domain/Errors.js"
import type { MarathonError } from "../domain/Errors.js"
import { notTheLeader } from "./Election.js"
import { jsonAnswer } from "./JsonAnswer.js"
import { problemLines } from "./Sync.js"
import type { SyncReport } from "./Sync.js"

/**
 * The operator's endpoints (issue 14): `POST /sync` runs a pass now and answers its report; `GET /diff` answers
 * the plan a pass would apply now and writes nothing. The secret and the leader are checked before these routes
 * (Daemon.ts `requireSecret`, Election.ts `refuseUnlessLeading`).
 */

export interface PassQueue<A, E> {
  /**
   * Waits for the pass that serves this request and gets its result. The pass under way serves it if that pass
   * has not begun reading Marathon yet; otherwise the next one does, and serves every request made meanwhile. So
   * the result always reflects Marathon as read after the request, and requests never start passes of their own.
   * Fails with NotLeading when the worker stopped (the leader stepped down, the daemon stops) before serving it.
   */
  readonly request: Effect.Effect<A, E | NotLeading>
  /** Runs the passes asked for, one after the other; a fiber of the daemon's (of the leader's work, with election). */
  readonly worker: Effect.Effect<never>
}

type Waiters<A, E> = Deferred.Deferred<A, E | NotLeading>

interface QueueState<A, E> {
  /** the requests the next pass to read Marathon serves */
  readonly next: Waiters<A, E> | undefined
  /** the worker ran and was interrupted: requests fail at once until it runs again */
  readonly stopped: boolean
}

/**
 * `pass` is given the effect to run as it begins reading Marathon: from then on, requests wait for the next pass.
 * A pass that ends without running it (a leader that could not confirm its lock) answers the requests waiting.
 */
export const makePassQueue = <A, E>(pass: (readingMarathon: Effect.Effect<void>) => Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    const state = yield* Ref.make<QueueState<A, E>>({ next: undefined, stopped: false })
    const wake = yield* Queue.sliding<void>(1)
    const takeNext = Ref.modify(state, (current): [Waiters<A, E> | undefined, QueueState<A, E>] => [current.next, { ...current, next: undefined }])
    const stopped = new NotLeading({ leader: null })

    const request: Effect.Effect<A, E | NotLeading> = Effect.gen(function*() {
      const fresh = yield* Deferred.make<A, E | NotLeading>()
      const waiting = yield* Ref.modify(state, (current): [Waiters<A, E> | undefined, QueueState<A, E>] =>
        current.stopped ? [undefined, current] : current.next !== undefined ? [current.next, current] : [fresh, { ...current, next: fresh }])
      if (waiting === undefined) return yield* stopped
      yield* Queue.offer(wake, undefined)
      return yield* Deferred.await(waiting)
    })

    const runOne = Effect.gen(function*() {
      if ((yield* Ref.get(state)).next === undefined) return // served by the pass before
      const claimed = yield* Ref.make<Waiters<A, E> | undefined>(undefined)
      const readingMarathon = Effect.flatMap(takeNext, (waiters) => Ref.update(claimed, (earlier) => earlier ?? waiters))
      const answer = (exit: Exit.Exit<A, E | NotLeading>) =>
        Effect.flatMap(Ref.get(claimed), (waiters) => waiters === undefined ? takeNext : Effect.succeed(waiters)).pipe(
          Effect.flatMap((waiters) => waiters === undefined ? Effect.void : Effect.asVoid(Deferred.done(waiters, exit)))
        )
      yield* pass(readingMarathon).pipe(
        Effect.exit,
        Effect.flatMap(answer),
        // interrupted mid-pass (stepping down): those it was serving are told, not left waiting
        Effect.onInterrupt(() => answer(Exit.fail(stopped)))
      )
    })

    const worker: Effect.Effect<never> = Effect.zipRight(
      Ref.update(state, (current) => ({ ...current, stopped: false })),
      Effect.forever(Effect.zipRight(Queue.take(wake), runOne))
    ).pipe(
      Effect.onInterrupt(() =>
        Effect.flatMap(
          Ref.modify(state, (current): [Waiters<A, E> | undefined, QueueState<A, E>] => [current.next, { next: undefined, stopped: true }]),
          (waiters) => waiters === undefined ? Effect.void : Effect.asVoid(Deferred.fail(waiters, stopped))
        )
      )
    )
    return { request, worker } satisfies PassQueue<A, E>
  })

/** A pass's report as `POST /sync` answers it. */
export const reportJson = (report: SyncReport) => ({
  outcome: report.outcome,
  startedAt: report.startedAt.toISOString(),
  apps: report.apps,
  tasks: report.tasks,
  agents: report.agents,
  registered: report.registered,
  fallbackRegistered: report.fallbackRegistered,
  deregistered: report.deregistered,
  keysSet: report.keysSet,
  keysDeleted: report.keysDeleted,
  failures: report.failures.map((failure) => ({ scope: failure.scope, subject: failure.subject ?? null, message: failure.message })),
  skipped: report.skipped.map((task) => ({ taskId: task.taskId, appId: task.appId, host: task.host })),
  clashes: report.clashes.map((clash) => ({ name: clash.name, ids: clash.ids })),
  purgeRefused: report.purgeRefused ?? null,
  /** what did not land or was left out, one line each, as `consular sync` prints them */
  problems: problemLines(report)
})

/** The plan of a dry pass as `GET /diff` answers it; `kvDelete` lists every key, those of deleted trees included. */
export const diffJson = (report: SyncReport) => ({
  register: report.plan.register.map(({ agent, registration, fallback }) => ({
    agent,
    id: registration.ID,
    name: registration.Name,
    address: registration.Address,
    port: registration.Port ?? null,
    tags: registration.Tags,
    fallback: fallback === true
  })),
  deregister: report.plan.deregister.map(({ agent, serviceId, why }) => ({ agent, id: serviceId, why })),
  kvSet: report.plan.kvSet.map(({ key, value }) => ({ key, value })),
  kvDelete: [...new Set([...report.plan.kvDelete, ...report.treeKeys])].sort(),
  purgeRefused: report.purgeRefused ?? null,
  outcome: report.outcome,
  problems: problemLines(report)
})

export interface Control {
  /** a full pass, joined as `PassQueue.request` says */
  readonly sync: Effect.Effect<SyncReport, MarathonError | NotLeading>
  /** a dry pass: the plan, nothing written */
  readonly diff: Effect.Effect<SyncReport, MarathonError>
}

/** Marathon could not be read: nothing was planned or written. */
const marathonFailed = (error: MarathonError) =>
  Effect.as(
    Effect.logError("operator request failed: marathon unreadable").pipe(Effect.annotateLogs({ error: error.message })),
    jsonAnswer({ error: "marathon failed", upstream: "marathon", detail: `${error.message}; nothing was changed` }, 502)
  )

export const controlRoutes = (control: Control): HttpRouter.HttpRouter =>
  HttpRouter.empty.pipe(
    HttpRouter.post("/sync", control.sync.pipe(
      Effect.map((report) => jsonAnswer(reportJson(report), 200)),
      Effect.catchTags({
        MarathonError: marathonFailed,
        NotLeading: (error) => Effect.succeed(notTheLeader(error.leader, "this instance stepped down before the pass ran; ask the leader"))
      })
    )),
    HttpRouter.get("/diff", control.diff.pipe(
      Effect.map((report) => jsonAnswer(diffJson(report), 200)),
      Effect.catchTag("MarathonError", marathonFailed)
    ))
  )
