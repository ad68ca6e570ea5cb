import { assert, describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { createServer } from "node:http"
import { ConsulError, MarathonError } from "../../src/domain/Errors.js"
import { Consul, ConsulLive } from "../../src/services/Consul.js"
import { redactSecrets, upstreamWordsLimit } from "../../src/services/Http.js"
import { Marathon, MarathonLive } from "../../src/services/Marathon.js"
import { listenOnLoopback } from "../support/Listen.js"

/**
 * A failure line carries the status and the upstream's own words (the body's first 200 characters, secrets
 * redacted): read in the one HTTP helper, so Consul's and Marathon's failures both have them.
 */

/** A server on loopback that answers every request with this status and body. */
const answering = (status: number, body: string) =>
  Effect.gen(function*() {
    let requests = 0
    const server = createServer((request, response) => {
      requests++
      request.resume()
      request.on("end", () => response.writeHead(status, { "content-type": "text/plain; charset=utf-8" }).end(body))
    })
    const port = yield* listenOnLoopback(server)
    return { url: new URL(`http://127.0.0.1:${port}`), requests: () => requests }
  })

const token = "b1946ac9-2f8e-4c7b-9f0e-1d2e3f4a5b6c"

describe("failure lines carry the upstream's words", () => {
  it.scopedLive("Consul: status and body in the message, the body cut to 200 characters, the token it echoes redacted", () =>
    Effect.gen(function*() {
      const body = `rpc error making call: token ${token} is invalid; secret=hunter2 ` + "x".repeat(500) + " END-OF-BODY"
      const server = yield* answering(400, body)
      const consul = Context.get(
        yield* Layer.build(ConsulLive({ url: server.url, timeout: "1 second", retries: 0, headers: { "X-Consul-Token": token } })),
        Consul
      )
      const error = yield* Effect.flip(consul.kvPut("consular/web/a", "1"))
      assert.instanceOf(error, ConsulError)
      expect(error.status).toBe(400)
      expect(error.message).toContain("answered 400: \"rpc error making call: token <redacted> is invalid; secret=<redacted> xxx")
      expect(error.message).not.toContain(token)
      expect(error.message).not.toContain("hunter2")
      expect(error.message).not.toContain("END-OF-BODY")
      const quoted = JSON.parse(/answered 400: (".*")$/.exec(error.message)![1]!) as string
      expect(quoted.length).toBe(upstreamWordsLimit)
    }))

  it.scopedLive("Marathon: the same helper, the same words", () =>
    Effect.gen(function*() {
      const server = yield* answering(403, "{\"message\":\"Not Authorized to perform this action!\"}")
      const marathon = Context.get(yield* Layer.build(MarathonLive({ url: server.url, timeout: "1 second", retries: 0 })), Marathon)
      const error = yield* Effect.flip(marathon.apps)
      assert.instanceOf(error, MarathonError)
      expect(error.reason).toBe("Forbidden")
      expect(error.message).toContain("403")
      expect(error.message).toContain("Not Authorized to perform this action!")
    }))

  it.scopedLive("Consul's 500 `Unknown service` to a deregistration is 'already gone': NotFound, asked once", () =>
    Effect.gen(function*() {
      const server = yield* answering(500, "Unknown service \"web.1\"")
      const consul = Context.get(yield* Layer.build(ConsulLive({ url: server.url, timeout: "1 second", retries: 3, retryBase: "1 millis" })), Consul)
      const error = yield* Effect.flip(consul.deregister("127.0.0.1", "web.1"))
      expect(error._tag).toBe("NotFound")
      expect(server.requests()).toBe(1)
      // any other 500 is still a failure, and retried
      const other = yield* answering(500, "rpc error: leader lost")
      const consul2 = Context.get(yield* Layer.build(ConsulLive({ url: other.url, timeout: "1 second", retries: 2, retryBase: "1 millis" })), Consul)
      expect((yield* Effect.flip(consul2.deregister("127.0.0.1", "web.1")))._tag).toBe("ConsulError")
      expect(other.requests()).toBe(3)
    }))

  it("redactSecrets: known secrets, Bearer credentials, userinfo, token/secret/password assignments", () => {
    expect(redactSecrets("Authorization: Bearer abcdefgh12345678 failed")).toBe("Authorization: Bearer <redacted> failed")
    expect(redactSecrets("GET http://user:pa55@marathon:8080/v2/apps")).toBe("GET http://<redacted>@marathon:8080/v2/apps")
    expect(redactSecrets("{\"token\": \"abc\", \"password\":\"p\", \"name\": \"web\"}")).toBe(
      "{\"token\": \"<redacted>\", \"password\":\"<redacted>\", \"name\": \"web\"}"
    )
    expect(redactSecrets("?secret=s1&x=1")).toBe("?secret=<redacted>&x=1")
    expect(redactSecrets("the value tok-7f3a9c echoed", ["tok-7f3a9c"])).toBe("the value <redacted> echoed")
    // Consul's own denials stay readable
    expect(redactSecrets("Permission denied: anonymous token lacks permission 'key:write' on \"consular/web/a\"")).toBe(
      "Permission denied: anonymous token lacks permission 'key:write' on \"consular/web/a\""
    )
  })
})
