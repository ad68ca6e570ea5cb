import { Arbitrary, FastCheck as fc, Schema } from "effect"
import { AppId, Host, Port, TaskId } from "../../src/domain/MarathonApi.js"

/**
 * Arbitraries shared by the domain tests. Each starts from the Schema's own arbitrary and adds the shapes that
 * the plain one rarely produces (nested app ids, dotted host names, IPv6), always filtered by the Schema itself,
 * so that a generated value is exactly one the decoder would let through.
 */

const segment = fc.stringMatching(/^[a-z0-9][a-z0-9._-]{0,6}$/)

export const AppIdArb: fc.Arbitrary<AppId> = fc.oneof(
  Arbitrary.make(AppId),
  fc.array(segment, { minLength: 1, maxLength: 4 }).map((segments) => `/${segments.join("/")}`)
    .filter(Schema.is(AppId)).map(Schema.decodeSync(AppId))
)

export const TaskIdArb: fc.Arbitrary<TaskId> = Arbitrary.make(TaskId)

const label = fc.stringMatching(/^[a-z0-9][a-z0-9_-]{0,6}$/)
const ipv6ish = fc.stringMatching(/^[0-9a-fA-F:.]{2,16}$/)

/** Anything `Host` accepts: its own arbitrary, IPv4, IPv6, DNS names, dotted labels and IPv6-looking strings. */
export const HostArb: fc.Arbitrary<Host> = fc.oneof(
  Arbitrary.make(Host),
  fc.ipV4(),
  fc.ipV6(),
  fc.domain(),
  fc.array(label, { minLength: 1, maxLength: 4 }).map((labels) => labels.join(".")),
  ipv6ish
).filter(Schema.is(Host)).map(Schema.decodeSync(Host))

export const PortArb: fc.Arbitrary<number> = Arbitrary.make(Port)

/** Any UTF-16 string: astral characters, lone surrogates, control characters and plain ASCII. */
export const AnyStringArb: fc.Arbitrary<string> = fc.oneof(
  fc.string(),
  fc.string({ unit: "grapheme" }),
  fc.string({ unit: "binary" }),
  fc.array(fc.integer({ min: 0, max: 0xffff })).map((units) => String.fromCharCode(...units))
)
