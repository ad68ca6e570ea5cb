/**
 * Marathon's health verdict on a task, as the status of its Consul TTL check. Consul probes nothing: it mirrors
 * what Marathon already knows, so no agent has to reach tasks it may not even route to.
 *
 * - an app without health checks: passing;
 * - Marathon's latest word on the task wins: the `healthCheckResults` a pass read, or a later health event
 *   (`health_status_changed_event` `alive`, `instance_health_changed_event` `healthy`);
 * - results: passing when every one is alive, critical when any is not;
 * - no word yet from Marathon on a task whose app has checks: the operator's `--initial-health`.
 */

export type CheckStatus = "passing" | "warning" | "critical"
export const checkStatuses: ReadonlyArray<CheckStatus> = ["passing", "warning", "critical"]

/** One entry of a task's `healthCheckResults`, with Marathon's field names. */
export interface HealthCheckResult {
  readonly alive: boolean
  readonly lastFailure?: string | null | undefined
  readonly lastFailureCause?: string | null | undefined
}

/** What Marathon said last about a task's health. */
export type HealthObservation =
  | { readonly _tag: "Results"; readonly results: ReadonlyArray<HealthCheckResult> }
  | { readonly _tag: "Event"; readonly alive: boolean; readonly timestamp?: string | undefined }

export interface HealthInput {
  readonly appHasHealthChecks: boolean
  readonly latest: HealthObservation | undefined
  readonly initial: CheckStatus
}

export interface HealthVerdict {
  readonly status: CheckStatus
  /** the check's Output: why, in Marathon's terms */
  readonly output: string
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`

const fromResults = (results: ReadonlyArray<HealthCheckResult>): HealthVerdict | undefined => {
  if (results.length === 0) return undefined
  const failing = results.filter((result) => !result.alive)
  if (failing.length === 0) return { status: "passing", output: `Marathon: ${plural(results.length, "health check")} alive` }
  const first = failing[0]!
  const when = first.lastFailure ? ` at ${first.lastFailure}` : ""
  const cause = first.lastFailureCause ? `: ${first.lastFailureCause}` : ""
  const count = results.length > 1 ? ` (${failing.length} of ${results.length} failing)` : ""
  return { status: "critical", output: `Marathon: health check failed${when}${cause}${count}` }
}

const fromEvent = (alive: boolean, timestamp: string | undefined): HealthVerdict => {
  const when = timestamp === undefined ? "" : ` at ${timestamp}`
  return alive
    ? { status: "passing", output: `Marathon: health check alive${when}` }
    : { status: "critical", output: `Marathon: health check failed${when}` }
}

export const healthVerdict = (input: HealthInput): HealthVerdict => {
  if (!input.appHasHealthChecks) return { status: "passing", output: "Marathon: the app has no health checks" }
  const latest = input.latest
  const said = latest === undefined
    ? undefined
    : latest._tag === "Results"
    ? fromResults(latest.results)
    : fromEvent(latest.alive, latest.timestamp)
  return said ?? { status: input.initial, output: "Marathon: no health check result yet" }
}

/** App task ids are `<instanceId>._app.<n>` (Marathon 1.5+): an instance's health applies to each of its tasks. */
export const instanceOfTask = (taskId: string): string => {
  const at = taskId.lastIndexOf("._app.")
  return at === -1 ? taskId : taskId.slice(0, at)
}
