import { Context, Duration, Effect, Layer } from "effect"
import { lookup } from "node:dns"
import { isIP } from "node:net"

/**
 * Host names to addresses (DNS), so that a task host Marathon names by a DNS name still finds its node's agent
 * as the original did (it simply connected to `<host>:8500`). A name that does not resolve, or not in time, has
 * no addresses: to consular it is then no known agent, never an error that fails an event or a pass.
 */
export class HostResolver extends Context.Tag("consular/HostResolver")<HostResolver, {
  /** the addresses of a host name (an IP address is its own); none when it does not resolve in time */
  readonly addresses: (host: string) => Effect.Effect<ReadonlyArray<string>>
}>() {}

export interface HostResolverSettings {
  /** how long one lookup may take; getaddrinfo cannot be cancelled, consular only stops waiting */
  readonly timeout: Duration.DurationInput
}

/** The system resolver (node:dns `lookup`: /etc/hosts, then DNS, as a connection to the host would). */
export const HostResolverLive = (settings: HostResolverSettings = { timeout: "2 seconds" }): Layer.Layer<HostResolver> =>
  Layer.succeed(HostResolver, HostResolver.of({
    addresses: (host) =>
      isIP(host) !== 0
        ? Effect.succeed([host])
        : Effect.async<ReadonlyArray<string>>((resume) => {
          lookup(host, { all: true }, (error, found) => {
            resume(Effect.succeed(error === null ? found.map((entry) => entry.address) : []))
          })
        }).pipe(
          Effect.timeout(settings.timeout),
          Effect.catchTag("TimeoutException", () =>
            Effect.as(Effect.logDebug("host name lookup timed out").pipe(Effect.annotateLogs({ host })), [])),
          Effect.withSpan("HostResolver.addresses")
        )
  }))

/** The table behind `HostResolverMemory`: tests seed names and count the lookups. */
export class HostTable {
  readonly names = new Map<string, ReadonlyArray<string>>()
  lookups = 0
  set(host: string, addresses: ReadonlyArray<string>): this {
    this.names.set(host.toLowerCase(), addresses)
    return this
  }
}

export class HostResolverState extends Context.Tag("consular/HostResolverState")<HostResolverState, HostTable>() {}

export const makeHostResolverMemory = (table: HostTable): HostResolver["Type"] =>
  HostResolver.of({
    addresses: (host) =>
      Effect.sync(() => {
        if (isIP(host) !== 0) return [host]
        table.lookups++
        return table.names.get(host.toLowerCase()) ?? []
      })
  })

/** Names resolve only as seeded: no test ever asks the network's DNS. */
export const HostResolverMemory = (table: HostTable = new HostTable()): Layer.Layer<HostResolver | HostResolverState> =>
  Layer.succeedContext(Context.make(HostResolver, makeHostResolverMemory(table)).pipe(Context.add(HostResolverState, table)))
