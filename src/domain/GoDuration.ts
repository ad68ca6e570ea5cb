/**
 * Durations as Consul reads and writes them: Go's `time.ParseDuration` syntax ("1h", "90s", "1h30m", "1.5s") and
 * Go's `Duration.String()` ("1h0m0s"), which `/v1/agent/checks` shows. Milliseconds are enough for consular.
 */

const unitMillis: Readonly<Record<string, number>> = {
  ns: 1e-6,
  us: 1e-3,
  "µs": 1e-3,
  "μs": 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000
}

/** Milliseconds of a Go duration string; undefined when Go would refuse it. */
export const parseGoDuration = (text: string): number | undefined => {
  if (text === "0" || text === "+0" || text === "-0") return 0
  const match = /^([+-]?)((?:(?:\d+\.?\d*|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+)$/.exec(text)
  if (match === null) return undefined
  let total = 0
  for (const [, number, unit] of match[2]!.matchAll(/(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)/g)) {
    total += Number(number) * unitMillis[unit!]!
  }
  return match[1] === "-" ? -total : total
}

/** Go's `Duration.String()` of whole milliseconds: 3600000 -> "1h0m0s", 90000 -> "1m30s", 500 -> "500ms". */
export const formatGoDuration = (millis: number): string => {
  if (millis === 0) return "0s"
  const sign = millis < 0 ? "-" : ""
  let rest = Math.abs(Math.round(millis))
  if (rest < 1000) return `${sign}${rest}ms`
  const hours = Math.floor(rest / 3_600_000)
  rest -= hours * 3_600_000
  const minutes = Math.floor(rest / 60_000)
  rest -= minutes * 60_000
  const seconds = rest % 1000 === 0 ? String(rest / 1000) : (rest / 1000).toFixed(3).replace(/0+$/, "")
  if (hours > 0) return `${sign}${hours}h${minutes}m${seconds}s`
  if (minutes > 0) return `${sign}${minutes}m${seconds}s`
  return `${sign}${seconds}s`
}
