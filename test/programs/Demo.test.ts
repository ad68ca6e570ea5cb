import { afterEach, describe, expect, it, vi } from "@effect/vitest"
import { Effect, LogLevel } from "effect"
import { awaitLayout, demo, DemoFailed, runDemo } from "../../src/Demo.js"
import type { ConsulLayout, ServiceRow } from "../../src/Demo.js"
import { LoggedLines, LoggerMemory } from "../../src/services/Logger.js"
import { makeDatacenter } from "../support/Datacenter.js"

const ours = (app: string) => ["consular-reg-id=consular", `consular-app-id=${app}`]

const service = (agent: string, ID: string, Service: string, Port: number, Tags: ReadonlyArray<string>): ServiceRow => ({
  agent,
  service: { ID, Service, Address: agent, Port, Tags: [...Tags] }
})

/** The container-network app: on its agent, at the task's own address and its lowest container port. */
const payments: ServiceRow = {
  agent: "127.0.0.3",
  service: { ID: "payments.c1", Service: "payments", Address: "10.32.0.5", Port: 8080, Tags: ours("/payments") }
}
/** The pod's web container: on the instance's agent, at its allocated host port; the sidecar has no endpoint. */
const cart = service("127.0.0.1", "shop_cart.instance-k1.web", "shop-cart", 31020, ours("/shop/cart"))

const foreign: ReadonlyArray<ServiceRow> = [
  service("127.0.0.1", "postgres", "postgres", 5432, ["primary"]),
  service("127.0.0.2", "search.x1", "search", 9200, ["consular-reg-id=consular-eu", "consular-app-id=/search"])
]

/** The original's layout, written out by hand: what part 1's sync --purge must leave. */
const afterSync: ConsulLayout = {
  services: [
    foreign[0]!,
    cart,
    service("127.0.0.1", "shop_web.a1", "shop-web", 31000, ours("/shop/web")), // the lowest of 31001, 31000
    service("127.0.0.2", "api.p1", "api", 31010, ours("/api")),
    foreign[1]!,
    service("127.0.0.2", "shop_web.a2", "shop-web", 31002, ours("/shop/web")),
    payments,
    service("127.0.0.3", "worker.w1", "worker", 0, ours("/worker")) // portless; api.p2 (STAGING) absent; billing.d1 purged
  ],
  kv: [
    { key: "config/maintenance", value: "false" },
    { key: "consular/api/owner", value: "\"platform\"" },
    { key: "consular/shop-cart/tier", value: "\"cart\"" },
    { key: "consular/shop-web/domain", value: "\"shop.example.org\"" },
    { key: "consular/shop-web/tier", value: "\"frontend\"" },
    { key: "consular/worker/canary", value: "" },
    { key: "consular/worker/queue", value: "\"orders\"" }
  ]
}

/** After the story: /blog deployed, scaled, one task killed, relabelled (tasks replaced); the pod scaled; /api destroyed. */
const final: ConsulLayout = {
  services: [
    service("127.0.0.1", "blog.b5", "blog", 31104, ours("/blog")),
    foreign[0]!,
    cart,
    service("127.0.0.1", "shop_web.a1", "shop-web", 31000, ours("/shop/web")),
    service("127.0.0.2", "blog.b4", "blog", 31103, ours("/blog")),
    foreign[1]!,
    service("127.0.0.2", "shop_cart.instance-k2.web", "shop-cart", 31021, ours("/shop/cart")), // by the pod's events
    service("127.0.0.2", "shop_web.a2", "shop-web", 31002, ours("/shop/web")),
    payments,
    service("127.0.0.3", "worker.w1", "worker", 0, ours("/worker"))
  ],
  kv: [
    { key: "config/maintenance", value: "false" },
    { key: "consular/blog/domain", value: "\"www.blog.example.org\"" },
    { key: "consular/shop-cart/tier", value: "\"cart\"" },
    { key: "consular/shop-web/domain", value: "\"shop.example.org\"" },
    { key: "consular/shop-web/tier", value: "\"frontend\"" },
    { key: "consular/worker/canary", value: "" },
    { key: "consular/worker/queue", value: "\"orders\"" }
  ]
}

const headings = [
  "== 1. Before: what Marathon runs, what Consul holds ==",
  "== 2. consular sync --purge ==",
  "== 3. consular run --purge --sync-interval 1 --health-checks ttl ==",
  "== 4. Deploy /blog ==",
  "== 5. Scale /blog to 3 instances ==",
  "== 6. Kill a task of /blog ==",
  "== 7. Change a label of /blog ==",
  "== 8. Scale the pod /shop/cart to 2 instances ==",
  "== 9. Destroy /api ==",
  "== 10. A health check of /shop/web fails ==",
  "== 11. It recovers ==",
  "== 12. Stop the daemon =="
]

describe("consular demo", () => {
  afterEach(() => {
    vi.restoreAllMocks()
  })

  it.live("syncs, then tells the daemon its story through Marathon's events; Consul matches after every step", () =>
    Effect.gen(function*() {
      const lines: Array<string> = []
      const result = yield* demo({ print: (line) => Effect.sync(() => void lines.push(line)) })
      expect(result.afterSync).toEqual(afterSync)
      expect(result.final).toEqual(final)
      expect(lines.filter((line) => line.startsWith("== "))).toEqual(headings)
      expect(lines).toContain("  registered 6, deregistered 1, keys set 6, keys deleted 2, errors 0")
      // the second pass writes nothing
      expect(lines).toContain("  registered 0, deregistered 0, keys set 0, keys deleted 0, errors 0")
      expect(lines.some((line) => line.includes("did not match"))).toBe(false)
      // Marathon's failing health check turns the task critical in Consul, and routing leaves it out; then it is back
      expect(lines.some((line) => /127\.0\.0\.2\s+shop_web\.a2\s+service:shop_web\.a2\s+critical\s+Marathon: health check failed at /.test(line))).toBe(true)
      expect(lines.filter((line) => line.startsWith("  with ?passing"))).toEqual([
        "  with ?passing (what consul-template, Fabio and DNS route to): shop_web.a1",
        "  with ?passing (what consul-template, Fabio and DNS route to): shop_web.a1, shop_web.a2"
      ])
      // nothing went wrong along the way: not one warning from the sync or the daemon
      expect(yield* LoggedLines).toEqual([])
    }).pipe(Effect.provide(LoggerMemory("text", LogLevel.Warning))))

  it.live("runDemo: the report goes to stdout and the demo succeeds", () =>
    Effect.gen(function*() {
      const printed: Array<string> = []
      vi.spyOn(console, "log").mockImplementation((...args: Array<unknown>) => {
        printed.push(args.map(String).join(" "))
      })
      yield* runDemo
      expect(printed.filter((line) => line.startsWith("== "))).toEqual(headings)
      expect(printed.at(-1)?.trim()).toMatch(/^consular\/worker\/queue\s+"orders"$/)
    }))

  it.scopedLive("a step that does not converge fails with DemoFailed after its deadline, and says what is wrong", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      dc.consul.register("127.0.0.2", { ID: "extra.1", Name: "extra", Address: "127.0.0.2", Port: 1, Tags: ours("/extra") })
      dc.consul.put("consular/web/domain", "\"old.example.org\"")
      const expected: ConsulLayout = {
        services: [service("127.0.0.3", "web.1", "web", 31000, ours("/web"))],
        kv: [{ key: "consular/web/domain", value: "\"example.org\"" }, { key: "consular/web/tier", value: "\"db\"" }]
      }
      const lines: Array<string> = []
      const error = yield* awaitLayout("deploy /web", expected, "200 millis", (line) => Effect.sync(() => void lines.push(line))).pipe(
        Effect.provide(dc.services),
        Effect.flip
      )
      expect(error).toBeInstanceOf(DemoFailed)
      expect(error.step).toBe("deploy /web")
      expect(lines).toEqual([
        "  Consul did not match Marathon within 200ms:",
        "    service web.1 missing on agent 127.0.0.3",
        "    service extra.1 on agent 127.0.0.2 should not be there",
        "    key consular/web/domain holds \"old.example.org\", expected \"example.org\"",
        "    key consular/web/tier missing"
      ])
    }))
})
