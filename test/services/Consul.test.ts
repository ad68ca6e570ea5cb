import { assert, describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { ConsulError } from "../../src/domain/Errors.js"
import { serveConsul } from "../../src/embedded/ConsulServer.js"
import { Consul, ConsulLive, makeConsulMemory } from "../../src/services/Consul.js"
import type { ConsulSettings } from "../../src/services/Consul.js"
import { agents, asConsulError, consulContract, newStore } from "./ConsulContract.js"
import { testTls } from "../support/Tls.js"

consulContract("Consul / makeConsulMemory", (store, options) =>
  Effect.succeed(Layer.succeed(Consul, makeConsulMemory(store, { ...options, retryBase: "1 millis" }))))

consulContract("Consul / ConsulLive against the embedded Consul", (store, { token, ...options }) =>
  Effect.gen(function*() {
    const server = yield* serveConsul(store, { addresses: agents })
    return ConsulLive({
      url: new URL(server.url()),
      ...options,
      retryBase: "1 millis",
      ...(token === undefined ? {} : { headers: { "X-Consul-Token": token } })
    })
  }))

describe("Consul / ConsulLive only", () => {
  it.scopedLive("ACL: the token goes as X-Consul-Token; without it writes are Forbidden and not retried", () =>
    Effect.gen(function*() {
      const store = newStore()
      const server = yield* serveConsul(store, { addresses: agents, requiredToken: "s3cret" })
      const settings: ConsulSettings = { url: new URL(server.url()), timeout: "500 millis", retries: 2, retryBase: "1 millis" }
      const anonymous = Context.get(yield* Layer.build(ConsulLive(settings)), Consul)
      const error = yield* Effect.flip(anonymous.kvPut("consular/web/a", "1"))
      assert.instanceOf(error, ConsulError)
      expect(error.reason).toBe("Forbidden")
      expect(error.status).toBe(403)
      expect(store.requests).toBe(1) // never retried

      const withToken = Context.get(yield* Layer.build(ConsulLive({ ...settings, headers: { "X-Consul-Token": "s3cret" } })), Consul)
      yield* withToken.kvPut("consular/web/a", "1")
      expect(yield* withToken.kvGet("consular/web/a")).toBe("1")
    }))

  it.scopedLive("TLS: the agents answer over https to a client that trusts the CA", () =>
    Effect.gen(function*() {
      const store = newStore()
      const server = yield* serveConsul(store, { addresses: agents, tls: testTls })
      expect(server.url(agents[1])).toBe(`https://127.0.0.2:${server.port}`)
      const consul = Context.get(
        yield* Layer.build(ConsulLive({
          url: new URL(server.url()),
          timeout: "2 seconds",
          retries: 0,
          tls: { ca: testTls.cert }
        })),
        Consul
      )
      yield* consul.register(agents[1], { ID: "web.1", Name: "web", Address: agents[1], Port: 1, Tags: [] })
      expect([...(yield* consul.agentServices(agents[1])).keys()]).toEqual(["web.1"])
      yield* consul.kvPut("consular/web/a", "1")
      expect(yield* consul.kvGet("consular/web/a")).toBe("1")

      // a client that does not trust the certificate cannot talk to it
      const untrusting = Context.get(
        yield* Layer.build(ConsulLive({ url: new URL(server.url()), timeout: "2 seconds", retries: 0 })),
        Consul
      )
      expect(asConsulError(yield* Effect.flip(untrusting.kvGet("consular/web/a"))).reason).toBe("Transport")
    }))
})
