import { Effect } from "effect"
import { listen } from "../../src/embedded/Listen.js"
import { daemonApp } from "../../src/programs/Daemon.js"
import type { DaemonSettings } from "../../src/programs/Daemon.js"
import type { Datacenter } from "./Datacenter.js"

export const daemonSettings = (dc: Datacenter, overrides: Partial<DaemonSettings> = {}): DaemonSettings => ({
  registrationId: "consular",
  purge: false,
  fallback: false,
  fallbackTimeout: "300 millis",
  consulUrl: dc.consulUrl,
  maxEventBytes: 1024 * 1024,
  scheme: "http",
  host: "127.0.0.1",
  port: 7000,
  syncInterval: 0,
  reconnectBase: "5 millis",
  reconnectCap: "50 millis",
  ...overrides
})

/** The daemon's HTTP app served on a free loopback port, with the datacenter's live services. */
export const serveDaemon = (dc: Datacenter, overrides: Partial<DaemonSettings> = {}) =>
  Effect.gen(function*() {
    const app = yield* daemonApp(daemonSettings(dc, overrides)).pipe(Effect.provide(dc.services))
    const port = yield* listen(app, { address: "127.0.0.1", port: 0 })
    const base = `http://127.0.0.1:${port}`
    const post = (body: string | object, headers: Record<string, string> = { "content-type": "application/json" }) =>
      Effect.promise(async () => {
        const response = await fetch(`${base}/events`, {
          method: "POST",
          headers,
          body: typeof body === "string" ? body : JSON.stringify(body)
        })
        const text = await response.text()
        return { status: response.status, contentType: response.headers.get("content-type") ?? "", text, json: parse(text) }
      })
    const get = (path: string) =>
      Effect.promise(async () => {
        const response = await fetch(`${base}${path}`)
        const text = await response.text()
        return { status: response.status, contentType: response.headers.get("content-type") ?? "", text, json: parse(text) }
      })
    return { base, post, get }
  })

const parse = (text: string): unknown => {
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}

export const statusUpdate = (fields: {
  readonly taskId: string
  readonly taskStatus: string
  readonly appId: string
  readonly host: string
  readonly ports?: ReadonlyArray<number>
  readonly version?: string
}) => ({
  eventType: "status_update_event",
  timestamp: "2026-11-25T10:00:00.000Z",
  slaveId: "20140909-054127-177048842-5050-1494-0",
  message: "",
  ipAddresses: [{ ipAddress: fields.host, protocol: "IPv4" }],
  ports: [],
  ...fields
})
