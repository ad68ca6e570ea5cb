import { Schema } from "effect"

/** Wire schemas for the parts of Consul's HTTP API that consular reads and writes; field names are Consul's. */

/** Body of `PUT /v1/agent/service/register`. `Port` is left out for a task without ports (Consul shows 0). */
export const Registration = Schema.Struct({
  ID: Schema.String,
  Name: Schema.String,
  Address: Schema.String,
  Port: Schema.optional(Schema.Int),
  Tags: Schema.Array(Schema.String)
})
export type Registration = typeof Registration.Type

/** One entry of `GET /v1/agent/services`. Old agents send `Tags: null` for an untagged service. */
export const AgentService = Schema.Struct({
  ID: Schema.String,
  Service: Schema.String,
  Tags: Schema.optionalWith(Schema.NullOr(Schema.Array(Schema.String)), { default: () => null }),
  Address: Schema.optionalWith(Schema.String, { default: () => "" }),
  Port: Schema.optionalWith(Schema.Int, { default: () => 0 })
})
export type AgentService = typeof AgentService.Type

export const AgentServices = Schema.Record({ key: Schema.String, value: AgentService })
export type AgentServices = typeof AgentServices.Type

/** One entry of `GET /v1/catalog/nodes`: each node runs an agent at `Address`. */
export const CatalogNode = Schema.Struct({ Node: Schema.String, Address: Schema.String })
export type CatalogNode = typeof CatalogNode.Type
export const CatalogNodes = Schema.Array(CatalogNode)

/** One entry of `GET /v1/kv/<prefix>?recurse`: `Value` is base64, null for an empty value. */
export const KvEntry = Schema.Struct({ Key: Schema.String, Value: Schema.NullOr(Schema.String) })
export const KvEntries = Schema.Array(KvEntry)

/** `GET /v1/kv/<prefix>?keys[&separator=/]` */
export const KvKeys = Schema.Array(Schema.String)

/** One operation of `PUT /v1/txn` (Consul accepts at most 64 per transaction). */
export const TxnOperation = Schema.Struct({
  KV: Schema.Struct({
    Verb: Schema.Literal("set", "delete", "delete-tree"),
    Key: Schema.String,
    Value: Schema.optional(Schema.String)
  })
})
export type TxnOperation = typeof TxnOperation.Type
export const TxnOperations = Schema.Array(TxnOperation)

/** One refused operation of a rolled-back transaction (`PUT /v1/txn` answered 409): its index and Consul's words. */
export const TxnOpError = Schema.Struct({ OpIndex: Schema.Int, What: Schema.String })
export type TxnOpError = typeof TxnOpError.Type

/** The body of a 409 from `PUT /v1/txn`: `{"Results":null,"Errors":[{"OpIndex":0,"What":"Permission denied"}]}` */
export const TxnConflict = Schema.Struct({ Errors: Schema.Array(TxnOpError) })

/** Consul's limit on operations in one transaction. */
export const maxTxnOperations = 64

/** Answer of `PUT /v1/session/create` */
export const SessionCreated = Schema.Struct({ ID: Schema.String })

/** Body of `PUT /v1/session/create` as consular sends it: durations as Go duration strings. */
export const SessionCreate = Schema.Struct({
  Name: Schema.String,
  TTL: Schema.String,
  LockDelay: Schema.String,
  Behavior: Schema.Literal("release", "delete")
})
export type SessionCreate = typeof SessionCreate.Type

/** One entry of `GET /v1/kv/<key>`: `Session` only while a session holds the key. */
export const LockEntry = Schema.Struct({
  Key: Schema.String,
  Value: Schema.NullOr(Schema.String),
  Session: Schema.optional(Schema.String)
})
export const LockEntries = Schema.Array(LockEntry)

const goUnits: Record<string, number> = { ns: 1e-6, us: 1e-3, "µs": 1e-3, "μs": 1e-3, ms: 1, s: 1_000, m: 60_000, h: 3_600_000 }

/** Go's time.ParseDuration ("15s", "1m30s", "500ms"), in milliseconds; undefined where Go refuses the text. */
export const parseGoDuration = (raw: string): number | undefined => {
  if (raw === "0") return 0
  const match = /^([-+]?)((?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+$/.exec(raw)
  if (match === null) return undefined
  let total = 0
  for (const part of raw.replace(/^[-+]/, "").matchAll(/(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/g)) {
    total += Number(part[1]) * goUnits[part[2]!]!
  }
  return match[1] === "-" ? -total : total
}

/** A duration as Go prints one (`10s`, `1m30s`, `24h0m0s`): what consular sends as a session's TTL. */
export const goDurationText = (millis: number): string => {
  const hours = Math.floor(millis / 3_600_000)
  const minutes = Math.floor((millis % 3_600_000) / 60_000)
  const seconds = (millis % 60_000) / 1_000
  return hours > 0 ? `${hours}h${minutes}m${seconds}s` : minutes > 0 ? `${minutes}m${seconds}s` : `${seconds}s`
}

/** Consul's bounds on a session's TTL (`session_ttl_min`, default 10s, and `SessionTTLMax`, 24h). */
export const sessionTtlMinMillis = 10_000
export const sessionTtlMaxMillis = 24 * 3_600_000
