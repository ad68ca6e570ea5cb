import { Schema } from "effect"

/** Wire schemas for the parts of Consul's HTTP API that consular reads and writes; field names are Consul's. */

/** Service Meta: string keys to string values (Consul's rules on them: domain/ServiceMeta.ts). */
export const Meta = Schema.Record({ key: Schema.String, value: Schema.String })
export type Meta = typeof Meta.Type

/**
 * The TTL check of a registration body (`--health-checks ttl`); Consul names it `service:<service id>`.
 * Durations are Go duration strings ("1h", "90s"), as Consul reads them.
 */
export const TtlCheck = Schema.Struct({
  TTL: Schema.String,
  Notes: Schema.String,
  DeregisterCriticalServiceAfter: Schema.optional(Schema.String)
})
export type TtlCheck = typeof TtlCheck.Type

/**
 * Body of `PUT /v1/agent/service/register`. `Port` is left out for a task without ports (Consul shows 0);
 * `Meta` and `Check` only with `--service-meta` and `--health-checks ttl`: without them the body is today's.
 */
export const Registration = Schema.Struct({
  ID: Schema.String,
  Name: Schema.String,
  Address: Schema.String,
  Port: Schema.optional(Schema.Int),
  Tags: Schema.Array(Schema.String),
  Meta: Schema.optional(Meta),
  Check: Schema.optional(TtlCheck)
})
export type Registration = typeof Registration.Type

/** One entry of `GET /v1/agent/services`. Old agents send `Tags: null` for an untagged service. */
export const AgentService = Schema.Struct({
  ID: Schema.String,
  Service: Schema.String,
  Tags: Schema.optionalWith(Schema.NullOr(Schema.Array(Schema.String)), { default: () => null }),
  Address: Schema.optionalWith(Schema.String, { default: () => "" }),
  Port: Schema.optionalWith(Schema.Int, { default: () => 0 }),
  /** Consul >= 0.7.3 lists `{}` for none; older agents leave it out */
  Meta: Schema.optional(Schema.NullOr(Meta))
})
export type AgentService = typeof AgentService.Type

export const CheckStatus = Schema.Literal("passing", "warning", "critical")

/** Body of `PUT /v1/agent/check/update/<check id>`. */
export const CheckUpdate = Schema.Struct({ Status: CheckStatus, Output: Schema.String })
export type CheckUpdate = typeof CheckUpdate.Type

/**
 * One entry of `GET /v1/agent/checks` (keyed by CheckID). `Definition` (Consul >= 1.7) carries the TTL as Go
 * formats durations ("1h0m0s"); an agent without it cannot tell us the TTL, and its check is taken as it is.
 */
export const AgentCheck = Schema.Struct({
  CheckID: Schema.String,
  Status: Schema.String,
  Output: Schema.optionalWith(Schema.String, { default: () => "" }),
  Notes: Schema.optionalWith(Schema.String, { default: () => "" }),
  ServiceID: Schema.optionalWith(Schema.String, { default: () => "" }),
  Definition: Schema.optional(Schema.Struct({
    TTL: Schema.optional(Schema.String),
    DeregisterCriticalServiceAfter: Schema.optional(Schema.String)
  }))
})
export type AgentCheck = typeof AgentCheck.Type
export const AgentChecks = Schema.Record({ key: Schema.String, value: AgentCheck })

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

/** Go durations (what Consul reads and writes), from the one module that parses and prints them. */
export { formatGoDuration as goDurationText, parseGoDuration } from "./GoDuration.js"

/** Consul's bounds on a session's TTL (`session_ttl_min`, default 10s, and `SessionTTLMax`, 24h). */
export const sessionTtlMinMillis = 10_000
export const sessionTtlMaxMillis = 24 * 3_600_000
