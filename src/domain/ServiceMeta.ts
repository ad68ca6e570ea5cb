/**
 * Service Meta of a registration (`--service-meta`): Consul's convention for an external system's registrations
 * (`external-source`, shown by its UI), the Marathon ids, consular's registration id, and the app's labels where
 * Consul's rules let them in. Consul refuses a whole registration whose Meta breaks a rule, so a label that would
 * is skipped here instead.
 *
 * Consul's rules (agent/structs: `validateMetaPair`): a key matches `^[A-Za-z0-9_-]{1,128}$` and does not start
 * with the reserved `consul-`; a value is at most 512 bytes; at most 64 pairs in all.
 */

export const metaMaxPairs = 64
const metaKeyPattern = /^[A-Za-z0-9_-]{1,128}$/
const metaMaxValueBytes = 512
const reservedPrefix = "consul-"

export const externalSource = "marathon"

export interface MetaInput {
  readonly appId: string
  readonly taskId: string
  readonly registrationId: string
  readonly labels: Readonly<Record<string, string>> | undefined
}

export interface SkippedLabel {
  readonly label: string
  readonly why: string
}

export interface ServiceMeta {
  readonly meta: Readonly<Record<string, string>>
  /** labels left out, with the rule each broke: warned once per app version */
  readonly skipped: ReadonlyArray<SkippedLabel>
}

/** The pairs consular always writes; they win over labels of the same name. */
export const fixedMeta = (input: Omit<MetaInput, "labels">): Readonly<Record<string, string>> => ({
  "external-source": externalSource,
  "marathon-app-id": input.appId,
  "marathon-task-id": input.taskId,
  "consular-reg-id": input.registrationId
})

const byteLength = (value: string): number => Buffer.byteLength(value, "utf8")

const ruleBroken = (key: string, value: string): string | undefined => {
  if (!metaKeyPattern.test(key)) return "key must be 1 to 128 letters, digits, '-' or '_'"
  if (key.startsWith(reservedPrefix)) return "keys starting with 'consul-' are reserved by Consul"
  if (byteLength(value) > metaMaxValueBytes) return `value longer than ${metaMaxValueBytes} bytes`
  return undefined
}

export const serviceMeta = (input: MetaInput): ServiceMeta => {
  const fixed = fixedMeta(input)
  const entries: Array<[string, string]> = Object.entries(fixed)
  const skipped: Array<SkippedLabel> = []
  const labels = Object.keys(input.labels ?? {}).sort()
  for (const label of labels) {
    if (Object.hasOwn(fixed, label)) {
      skipped.push({ label, why: "the name of a pair consular writes itself" })
      continue
    }
    const value = input.labels![label]!
    const broken = ruleBroken(label, value)
    if (broken !== undefined) skipped.push({ label, why: broken })
    else if (entries.length >= metaMaxPairs) skipped.push({ label, why: `more than ${metaMaxPairs} Meta pairs` })
    else entries.push([label, value])
  }
  entries.sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)
  return { meta: Object.fromEntries(entries), skipped }
}

/** Consul's own mark that consular made this registration, for purge when someone edited the tags. */
export const isOwnedByMeta = (meta: Readonly<Record<string, string>> | null | undefined, registrationId: string): boolean =>
  meta !== null && meta !== undefined && meta["external-source"] === externalSource && meta["consular-reg-id"] === registrationId
