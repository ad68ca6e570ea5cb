import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { serveMarathon } from "../../src/embedded/MarathonServer.js"
import { Marathon, MarathonLive, makeMarathonMemory } from "../../src/services/Marathon.js"
import type { MarathonSettings } from "../../src/services/Marathon.js"
import { MarathonStore } from "../../src/services/MarathonStore.js"
import { testTls } from "../support/Tls.js"
import { asMarathonError, marathonContract } from "./MarathonContract.js"

marathonContract("Marathon / makeMarathonMemory", (store, options) =>
  Effect.succeed(Layer.succeed(Marathon, makeMarathonMemory(store, { ...options, retryBase: "1 millis" }))))

marathonContract("Marathon / MarathonLive against the embedded Marathon", (store, options) =>
  Effect.gen(function*() {
    const server = yield* serveMarathon(store)
    return MarathonLive({ url: new URL(server.url), ...options, retryBase: "1 millis" })
  }))

describe("Marathon / MarathonLive only", () => {
  const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`

  it.scopedLive("auth: without credentials Unauthorized, never retried; basic auth or a token gets in", () =>
    Effect.gen(function*() {
      const store = new MarathonStore()
      store.putApp("/web")
      const server = yield* serveMarathon(store, { basicAuth: { user: "ops", password: "pw" }, token: "t0k" })
      const settings: MarathonSettings = { url: new URL(server.url), timeout: "500 millis", retries: 2, retryBase: "1 millis" }
      const client = (headers: Record<string, string>) =>
        Layer.build(MarathonLive({ ...settings, headers })).pipe(Effect.map((context) => Context.get(context, Marathon)))

      const error = asMarathonError(yield* Effect.flip((yield* client({})).apps))
      expect(error.reason).toBe("Unauthorized")
      expect(error.status).toBe(401)
      expect(store.requests).toBe(1)
      expect(asMarathonError(yield* Effect.flip((yield* client({ Authorization: basic("ops", "wrong") })).apps)).reason)
        .toBe("Unauthorized")

      expect((yield* (yield* client({ Authorization: basic("ops", "pw") })).apps).apps.map((app) => app.id)).toEqual(["/web"])
      expect((yield* (yield* client({ Authorization: "token=t0k" })).apps).apps.map((app) => app.id)).toEqual(["/web"])
    }))

  it.scopedLive("TLS: Marathon answers over https to a client that trusts the CA", () =>
    Effect.gen(function*() {
      const store = new MarathonStore()
      store.putApp("/web")
      const server = yield* serveMarathon(store, { tls: testTls })
      expect(server.url).toBe(`https://127.0.0.1:${server.port}`)
      const marathon = Context.get(
        yield* Layer.build(MarathonLive({ url: new URL(server.url), timeout: "2 seconds", retries: 0, tls: { ca: testTls.cert } })),
        Marathon
      )
      expect((yield* marathon.apps).apps.map((app) => app.id)).toEqual(["/web"])
    }))
})
