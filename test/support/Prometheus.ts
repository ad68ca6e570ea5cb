/**
 * A strict reader of the Prometheus text format (0.0.4), enough to check an exposition: `# HELP` and `# TYPE`
 * lines, and samples `name{label="value",…} value [timestamp]`. A line it cannot read, or a sample of a family
 * that has no `# TYPE`, throws: the test then fails on the exposition rather than on a missing number.
 */

export type MetricType = "counter" | "gauge" | "histogram" | "summary" | "untyped"

export interface Sample {
  readonly name: string
  readonly labels: Readonly<Record<string, string>>
  readonly value: number
}

export interface Exposition {
  readonly help: ReadonlyMap<string, string>
  readonly types: ReadonlyMap<string, MetricType>
  readonly samples: ReadonlyArray<Sample>
  /** the value of the one sample with exactly these labels; undefined when there is none */
  readonly value: (name: string, labels?: Readonly<Record<string, string>>) => number | undefined
  /** every sample of one name */
  readonly series: (name: string) => ReadonlyArray<Sample>
}

const metricName = "[a-zA-Z_:][a-zA-Z0-9_:]*"
const sampleLine = new RegExp(`^(${metricName})(?:\\{(.*)\\})?\\s+(\\S+)(?:\\s+-?\\d+)?$`)
const commentLine = new RegExp(`^#\\s+(HELP|TYPE)\\s+(${metricName})(?:\\s+(.*))?$`)
const labelPair = /\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)/y
const types: ReadonlyArray<MetricType> = ["counter", "gauge", "histogram", "summary", "untyped"]
const isType = (raw: string | undefined): raw is MetricType => types.some((type) => type === raw)

const unescape = (raw: string): string => raw.replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c))

const parseValue = (raw: string, line: string): number => {
  // as Prometheus reads them (Go's ParseFloat): any case, so prom-client's "Nan" for an empty histogram counts
  const special = raw.toLowerCase()
  if (special === "nan") return NaN
  if (special === "+inf" || special === "inf" || special === "+infinity" || special === "infinity") return Infinity
  if (special === "-inf" || special === "-infinity") return -Infinity
  const value = Number(raw)
  if (raw === "" || Number.isNaN(value)) throw new Error(`not a sample value: ${line}`)
  return value
}

const parseLabels = (raw: string, line: string): Record<string, string> => {
  const labels: Record<string, string> = {}
  labelPair.lastIndex = 0
  while (labelPair.lastIndex < raw.length) {
    const match = labelPair.exec(raw)
    if (match === null) throw new Error(`unreadable labels: ${line}`)
    const [, name, value, separator] = match
    if (name === undefined || value === undefined) throw new Error(`unreadable labels: ${line}`)
    if (name in labels) throw new Error(`label ${name} twice: ${line}`)
    labels[name] = unescape(value)
    if (separator === "") break
  }
  return labels
}

/** The family a sample belongs to: a histogram's `_bucket`, `_sum` and `_count` belong to its base name. */
const familyOf = (name: string, declared: ReadonlyMap<string, MetricType>): string | undefined => {
  if (declared.has(name)) return name
  for (const suffix of ["_bucket", "_sum", "_count"]) {
    if (name.endsWith(suffix)) {
      const base = name.slice(0, -suffix.length)
      const type = declared.get(base)
      if (type === "histogram" || (type === "summary" && suffix !== "_bucket")) return base
    }
  }
  return undefined
}

const sameLabels = (a: Readonly<Record<string, string>>, b: Readonly<Record<string, string>>): boolean => {
  const keys = Object.keys(a)
  return keys.length === Object.keys(b).length && keys.every((key) => a[key] === b[key])
}

export const parsePrometheus = (text: string): Exposition => {
  const help = new Map<string, string>()
  const declared = new Map<string, MetricType>()
  const samples: Array<Sample> = []
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue
    if (line.startsWith("#")) {
      const comment = commentLine.exec(line)
      if (comment === null) continue // other comments are allowed and mean nothing
      const [, kind, name, rest] = comment
      if (name === undefined) throw new Error(`unreadable comment: ${line}`)
      if (kind === "HELP") help.set(name, unescape(rest ?? ""))
      else if (isType(rest) && !declared.has(name)) declared.set(name, rest)
      else throw new Error(`bad or repeated TYPE: ${line}`)
      continue
    }
    const sample = sampleLine.exec(line)
    if (sample === null) throw new Error(`unreadable sample: ${line}`)
    const [, name, labels, value] = sample
    if (name === undefined || value === undefined) throw new Error(`unreadable sample: ${line}`)
    if (familyOf(name, declared) === undefined) throw new Error(`sample without a TYPE: ${line}`)
    samples.push({ name, labels: labels === undefined ? {} : parseLabels(labels, line), value: parseValue(value, line) })
  }
  const series = (name: string) => samples.filter((sample) => sample.name === name)
  const value = (name: string, labels: Readonly<Record<string, string>> = {}) => {
    const found = series(name).filter((sample) => sameLabels(sample.labels, labels))
    if (found.length > 1) throw new Error(`${found.length} samples of ${name} with the same labels`)
    return found[0]?.value
  }
  return { help, types: declared, samples, value, series }
}
