import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Exit, Layer, Scope } from "effect"
import { serveMarathon } from "../../src/embedded/MarathonServer.js"
import { Marathon, MarathonLive } from "../../src/services/Marathon.js"
import { MarathonStore } from "../../src/services/MarathonStore.js"
import { freePort } from "../support/Process.js"

const client = (urls: ReadonlyArray<string>) =>
  Layer.build(MarathonLive({ url: urls.map((u) => new URL(u)), timeout: "300 millis", retries: 0 })).pipe(
    Effect.map((context) => Context.get(context, Marathon))
  )

describe("a Marathon cluster (--marathon with several URLs)", () => {
  it.scopedLive("uses the Marathon that answers when the first is down", () =>
    Effect.gen(function*() {
      const store = new MarathonStore()
      store.setTask("/web", { id: "web.1", host: "127.0.0.2", ports: [1] }, false)
      const up = yield* serveMarathon(store, { address: "127.0.0.1" })
      const down = yield* freePort()
      const marathon = yield* client([`http://127.0.0.1:${down}`, up.url])
      const apps = (yield* marathon.apps).apps
      expect(apps.map((app) => app.id)).toEqual(["/web"])
      expect(yield* marathon.current).toBe(new URL(up.url).origin)
    }))

  it.scopedLive("follows the leader Marathon names, and keeps reading from it when the first one stops", () =>
    Effect.gen(function*() {
      const store = new MarathonStore()
      store.putApp("/web")
      const firstScope = yield* Scope.make()
      const first = yield* serveMarathon(store, { address: "127.0.0.1" }).pipe(Scope.extend(firstScope))
      const leader = yield* serveMarathon(store, { address: "127.0.0.1" })
      store.leader = `127.0.0.1:${new URL(leader.url).port}`
      const marathon = yield* client([first.url])
      expect(yield* marathon.current).toBe(new URL(first.url).origin)
      yield* marathon.followLeader
      expect(yield* marathon.current).toBe(new URL(leader.url).origin)
      yield* Scope.close(firstScope, Exit.void)
      expect((yield* marathon.apps).apps.map((app) => app.id)).toEqual(["/web"])
    }))

  it.scopedLive("credentials in a URL become an Authorization header and leave the URL", () =>
    Effect.gen(function*() {
      const store = new MarathonStore()
      const server = yield* serveMarathon(store, { address: "127.0.0.1", basicAuth: { user: "ops", password: "p@ss" } })
      const url = new URL(server.url)
      url.username = "ops"
      url.password = encodeURIComponent("p@ss")
      const marathon = yield* client([url.href])
      expect((yield* marathon.apps).apps).toEqual([])
      expect(yield* marathon.current).not.toContain("ops")
    }))
})
