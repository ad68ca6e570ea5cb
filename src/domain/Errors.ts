import { Schema } from "effect"

/**
 * The one error vocabulary. A 404 is always `NotFound`; every other upstream failure is the upstream's error
 * with a literal `reason`, so callers branch on tags and reasons, never on strings or status codes.
 */
export class NotFound extends Schema.TaggedError<NotFound>()("NotFound", {
  resource: Schema.String
}) {
  override get message() {
    return `not found: ${this.resource}`
  }
}

/**
 * Transport: the connection failed (refused, reset, DNS). Timeout: no answer in time.
 * Status: an unexpected HTTP status. Decode: the body did not match the schema.
 * Forbidden: 403, a permission the credentials lack. UnknownToken: 403 `ACL not found`, Consul does not know the
 * token at all. Unauthorized: 401 (Marathon auth). None of the last three is ever retried.
 */
export const Reason = Schema.Literal("Transport", "Timeout", "Status", "Decode", "Forbidden", "UnknownToken", "Unauthorized")
export type Reason = typeof Reason.Type

const upstreamFields = {
  operation: Schema.String,
  reason: Reason,
  /** the HTTP status when the upstream answered one */
  status: Schema.optional(Schema.Number),
  /** a short, secret-free description of what went wrong */
  detail: Schema.String
}

/** One operation of a transaction Consul rolled back (409): which one, on which key, and Consul's words. */
export const RefusedOperation = Schema.Struct({ index: Schema.Int, key: Schema.String, what: Schema.String })
export type RefusedOperation = typeof RefusedOperation.Type

/** One operation of a rolled-back transaction, as a failure line: its key and Consul's words. */
export const describeRefusedOperation = (operation: RefusedOperation): string =>
  `consul txn: ${operation.key} refused (409, operation #${operation.index}): ${operation.what}`

/** How many refused operations a message spells out; the rest are counted. */
const refusedShown = 5

export class ConsulError extends Schema.TaggedError<ConsulError>()("ConsulError", {
  ...upstreamFields,
  /** the agent (host) the request went to; absent for KV and catalog calls on the main Consul */
  agent: Schema.optional(Schema.String),
  /** the ACL permission the operation needs (`service:write`, `key:write`, …), named when it is denied */
  permission: Schema.optional(Schema.String),
  /** a transaction answered 409: each operation Consul refused (nothing was applied) */
  refused: Schema.optional(Schema.Array(RefusedOperation))
}) {
  override get message() {
    const where = this.agent === undefined ? "" : ` on agent ${this.agent}`
    switch (this.reason) {
      case "UnknownToken":
        return `consul ${this.operation}${where}: the token is not known to Consul (403 ACL not found): check --consul-token; ${this.detail}`
      case "Forbidden":
        return `consul ${this.operation}${where}: permission denied (403): the ACL token (--consul-token) lacks ${
          this.permission ?? "a permission"
        }; ${this.detail}`
    }
    if (this.refused !== undefined && this.refused.length > 0) {
      const shown = this.refused.slice(0, refusedShown).map((op) => `#${op.index} ${op.key}: ${op.what}`).join("; ")
      const more = this.refused.length > refusedShown ? `; and ${this.refused.length - refusedShown} more` : ""
      return `consul ${this.operation} rolled back (${describeReason(this.reason, this.status)}): ${this.refused.length} operation(s) refused: ${shown}${more}`
    }
    return `consul ${this.operation}${where} failed (${describeReason(this.reason, this.status)}): ${this.detail}`
  }
}

export class MarathonError extends Schema.TaggedError<MarathonError>()("MarathonError", upstreamFields) {
  override get message() {
    if (this.reason === "Unauthorized") {
      return `marathon ${this.operation}: unauthorized (401): check --marathon-user/--marathon-password-file or --marathon-token-file`
    }
    if (this.reason === "Forbidden") return `marathon ${this.operation}: forbidden (403): the credentials lack the permission; ${this.detail}`
    return `marathon ${this.operation} failed (${describeReason(this.reason, this.status)}): ${this.detail}`
  }
}

export type UpstreamError = ConsulError | MarathonError

const describeReason = (reason: Reason, status: number | undefined): string =>
  status === undefined ? reason : `${reason} ${status}`

/** Consul refused or did not answer: the only failures that send a registration to the fallback agent. */
export const isUnreachable = (error: ConsulError): boolean =>
  error.reason === "Transport" || error.reason === "Timeout"

/** A request body consular cannot act on: answered 400 with `problem` as the error and `detail` naming the field. */
export class InvalidEvent extends Schema.TaggedError<InvalidEvent>()("InvalidEvent", {
  problem: Schema.String,
  detail: Schema.String
}) {
  override get message() {
    return `${this.problem}: ${this.detail}`
  }
}

/** A request body over the limit: answered 413 without reading the rest. */
export class PayloadTooLarge extends Schema.TaggedError<PayloadTooLarge>()("PayloadTooLarge", {
  limit: Schema.Number
}) {
  override get message() {
    return `request body larger than ${this.limit} bytes`
  }
}

/** Asked of an instance that does not lead (`--leader-election`): answered 503 naming the leader, if known. */
export class NotLeading extends Schema.TaggedError<NotLeading>()("NotLeading", {
  /** "host:port" of the leader; null while none is known */
  leader: Schema.NullOr(Schema.String)
}) {
  override get message() {
    return `not the leader${this.leader === null ? "" : `: ${this.leader} leads`}`
  }
}
