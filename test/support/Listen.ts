import { Effect } from "effect"
import type { Scope } from "effect"
import type { Server } from "node:http"
import type { AddressInfo } from "node:net"

/**
 * A plain Node server (for tests that need the raw socket: TLS peers, resets, hand-written answers) listening on
 * 127.0.0.1 until the scope closes; answers the port. Closing drops open connections first, or a kept-alive one
 * would hold `close()` forever.
 */
export const listenOnLoopback = (server: Server): Effect.Effect<number, never, Scope.Scope> =>
  Effect.map(
    Effect.acquireRelease(
      Effect.async<void>((resume) => {
        server.listen(0, "127.0.0.1", () => resume(Effect.void))
      }),
      () => Effect.async<void>((resume) => {
        server.closeAllConnections()
        server.close(() => resume(Effect.void))
      })
    ),
    () => (server.address() as AddressInfo).port
  )
