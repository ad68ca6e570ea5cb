import { Effect, Layer } from "effect"
import { serveConsul } from "../../src/embedded/ConsulServer.js"
import { serveMarathon } from "../../src/embedded/MarathonServer.js"
import { ConsulLive } from "../../src/services/Consul.js"
import { ConsulStore } from "../../src/services/ConsulStore.js"
import { MarathonLive } from "../../src/services/Marathon.js"
import { MarathonStore } from "../../src/services/MarathonStore.js"
import { HostResolverMemory, HostTable } from "../../src/services/HostResolver.js"
import type { HostResolver } from "../../src/services/HostResolver.js"
import { LedgerLive } from "../../src/programs/Ledger.js"
import { TopologyLive } from "../../src/programs/Topology.js"
import { syncOnce } from "../../src/programs/Sync.js"
import type { SyncSettings } from "../../src/programs/Sync.js"

/**
 * A datacenter on loopback for end-to-end tests: an embedded Consul with one agent per address (same port) and
 * an embedded Marathon, and the live service layers talking HTTP to them. Short timeouts and retry delays keep
 * fault tests quick; every wait is bounded by them.
 */
export interface Datacenter {
  readonly consul: ConsulStore
  readonly marathon: MarathonStore
  readonly consulUrl: URL
  readonly marathonUrl: URL
  /** names the in-memory resolver knows: tests seed it (no test asks the network's DNS) */
  readonly hosts: HostTable
  readonly services: Layer.Layer<import("../../src/services/Consul.js").Consul | import("../../src/services/Marathon.js").Marathon | import("../../src/programs/Ledger.js").Ledger | import("../../src/programs/Topology.js").Topology | HostResolver>
}

export const agents = ["127.0.0.1", "127.0.0.2", "127.0.0.3"] as const

export interface DatacenterOptions {
  readonly addresses?: ReadonlyArray<string>
  readonly timeout?: number
  /** default-deny Consul: every request needs this ACL token (the services layer sends it) */
  readonly consulToken?: string
  /** both servers over TLS with this certificate (the services layer trusts `ca`) */
  readonly tls?: { readonly cert: string; readonly key: string; readonly ca: string }
  readonly marathonAuth?: { readonly basicAuth?: { readonly user: string; readonly password: string }; readonly token?: string }
}

export const makeDatacenter = (options: DatacenterOptions = {}) =>
  Effect.gen(function*() {
    const consul = new ConsulStore("127.0.0.1")
    consul.addAgent("127.0.0.1", "main")
    const marathon = new MarathonStore()
    const tls = options.tls === undefined ? undefined : { cert: options.tls.cert, key: options.tls.key }
    const consulServer = yield* serveConsul(consul, { addresses: options.addresses ?? agents, requiredToken: options.consulToken, tls })
    const marathonServer = yield* serveMarathon(marathon, { address: "127.0.0.1", tls, ...options.marathonAuth })
    const consulUrl = new URL(consulServer.url("127.0.0.1"))
    const marathonUrl = new URL(marathonServer.url)
    const timeout = `${options.timeout ?? 500} millis` as const
    const hosts = new HostTable()
    // built once, so that every program in a test shares one ledger and topology, as in the daemon
    const built = yield* Layer.build(Layer.mergeAll(
      ConsulLive({
        url: consulUrl,
        timeout,
        retries: 2,
        retryBase: "5 millis",
        fallbackTimeout: timeout,
        headers: options.consulToken === undefined ? {} : { "x-consul-token": options.consulToken },
        tls: options.tls === undefined ? undefined : { ca: options.tls.ca }
      }),
      MarathonLive({ url: marathonUrl, timeout, retries: 2, retryBase: "5 millis", tls: options.tls === undefined ? undefined : { ca: options.tls.ca } }),
      LedgerLive,
      TopologyLive(consulUrl),
      HostResolverMemory(hosts)
    ))
    const services = Layer.succeedContext(built)
    return { consul, marathon, consulUrl, marathonUrl, hosts, services } satisfies Datacenter
  })

/** One sync pass against the datacenter, with the original's defaults unless overridden. */
export const syncSettings = (dc: Datacenter, overrides: Partial<SyncSettings> = {}): SyncSettings => ({
  registrationId: "consular",
  purge: false,
  fallback: false,
  fallbackTimeout: "500 millis",
  consulUrl: dc.consulUrl,
  ...overrides
})

export const syncPass = (dc: Datacenter, overrides: Partial<SyncSettings> = {}) =>
  syncOnce(syncSettings(dc, overrides)).pipe(Effect.provide(dc.services))
