import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import type { ConsulStore } from "../../src/services/ConsulStore.js"
import { makeDatacenter } from "../support/Datacenter.js"
import type { Datacenter } from "../support/Datacenter.js"
import { statusUpdate } from "../support/Daemon.js"
import { parsePrometheus } from "../support/Prometheus.js"
import { eventually, freePort, runCli, startCli } from "../support/Process.js"
import type { Daemon } from "../support/Process.js"

/**
 * Three consular daemons as real processes (`node dist/main.js run --leader-election`) against the embedded
 * Consul and Marathon. Each talks to Consul through an agent of its own (127.0.0.1, .2, .3) with a token of its
 * own, which the embedded Consul records with every request: that is how a test tells which process wrote. The
 * apps' tasks run on 127.0.0.4. Every wait is bounded; the bounds are the issue's, not speed targets.
 */

const ttlSeconds = 10
const lockDelaySeconds = 1
const key = "service/consular/ha/leader"

interface Instance {
  readonly name: string
  readonly token: string
  readonly agent: string
  readonly port: number
  readonly daemon: Daemon
  readonly address: string
}

interface ReadyAnswer {
  readonly status: number
  readonly leader: boolean
  readonly leaderAt: string | null
}

const ready = async (instance: Instance): Promise<ReadyAnswer | undefined> => {
  try {
    const response = await fetch(`http://127.0.0.1:${instance.port}/ready`, { signal: AbortSignal.timeout(1_000) })
    const body = await response.json() as { leader: boolean; leaderAt: string | null }
    return { status: response.status, leader: body.leader, leaderAt: body.leaderAt }
  } catch {
    return undefined
  }
}

const startThree = (dc: Datacenter) =>
  Effect.gen(function*() {
    const instances: Array<Instance> = []
    for (const [index, agent] of ["127.0.0.1", "127.0.0.2", "127.0.0.3"].entries()) {
      const port = yield* freePort()
      const token = `tok-${index + 1}`
      const consul = new URL(dc.consulUrl.href)
      consul.hostname = agent
      const daemon = yield* startCli([
        "run", "--host", "127.0.0.1", "--port", `${port}`, "--consul", consul.href, "--marathon", dc.marathonUrl.href,
        "--registration-id", "ha", "--events", "callback", "--sync-interval", "2", "--purge", "--timeout", "2",
        "--consul-token", token, "--leader-election", "--session-ttl", `${ttlSeconds}s`
      ])
      instances.push({ name: `instance ${index + 1}`, token, agent, port, daemon, address: `127.0.0.1:${port}` })
    }
    return instances
  })

/** The instances whose /ready says they lead, among those answering. */
const leaders = (instances: ReadonlyArray<Instance>) =>
  Effect.promise(async () => {
    const answers = await Promise.all(instances.map(async (instance) => ({ instance, answer: await ready(instance) })))
    return answers.filter(({ answer }) => answer?.leader === true).map(({ instance }) => instance)
  })

const oneLeader = (instances: ReadonlyArray<Instance>, timeoutMs: number) =>
  Effect.gen(function*() {
    let found: Instance | undefined
    yield* eventually("exactly one instance leads", async () => {
      const claiming = await Effect.runPromise(leaders(instances))
      found = claiming.length === 1 ? claiming[0] : undefined
      return found !== undefined
    }, timeoutMs)
    return found!
  })

/**
 * Polls every instance's /ready in the background and records any moment two of them claim to lead; the
 * embedded Consul's log says who wrote. Both are checked at the end of a test.
 */
const watchClaims = (instances: ReadonlyArray<Instance>) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const overlaps: Array<string> = []
      let stopped = false
      const loop = async () => {
        while (!stopped) {
          const claiming = await Effect.runPromise(leaders(instances))
          if (claiming.length > 1) overlaps.push(claiming.map((instance) => instance.name).join(" and "))
          await new Promise((resolve) => setTimeout(resolve, 50))
        }
      }
      const done = loop()
      return { overlaps, stop: () => { stopped = true; return done } }
    }),
    (watch) => Effect.promise(() => watch.stop())
  )

/** When the lock key next gets a session other than `previous`, by the embedded Consul's clock (Date.now()). */
const nextLockHolder = (store: ConsulStore, previous: string | undefined) => {
  const seen: { at?: number } = {}
  const unsubscribe = store.onChange(() => {
    const holder = store.keyMeta.get(key)?.Session
    if (seen.at === undefined && holder !== undefined && holder !== previous) {
      seen.at = Date.now()
      unsubscribe()
    }
  })
  return seen
}

/** consular's data writes (registrations, deregistrations, KV) in order, by the token that made them. */
const writers = (store: ConsulStore): Array<string> =>
  store.log.filter((record) => record.write && record.token !== undefined).map((record) => record.token!)

/** No two instances ever took turns: each token's writes form one unbroken run. */
const expectOneWriterAtATime = (store: ConsulStore) => {
  const runs: Array<string> = []
  for (const token of writers(store)) if (runs[runs.length - 1] !== token) runs.push(token)
  expect(new Set(runs).size, `writers took turns: ${runs.join(" ")}`).toBe(runs.length)
  return runs
}

const metricsOf = (instance: Instance) =>
  Effect.promise(async () => parsePrometheus(await (await fetch(`http://127.0.0.1:${instance.port}/metrics`)).text()))

const setup = Effect.gen(function*() {
  const dc = yield* makeDatacenter({ addresses: ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"] })
  dc.marathon.putApp("/web", { domain: "example.org" })
  dc.marathon.setTask("/web", { id: "web.1", host: "127.0.0.4", ports: [31001] }, false)
  const instances = yield* startThree(dc)
  const claims = yield* watchClaims(instances)
  return { dc, instances, claims }
})

describe("--leader-election: three daemons, one leader", () => {
  it.scopedLive("one leads and writes; the followers stand by (ready, 503 on /events naming the leader); SIGTERM hands over within 2 s", () =>
    Effect.gen(function*() {
      const { dc, instances, claims } = yield* setup
      const leader = yield* oneLeader(instances, 30_000)
      const followers = instances.filter((instance) => instance !== leader)
      yield* eventually("the leader synced", () =>
        dc.consul.services("127.0.0.4").has("web.1") && dc.consul.kv.get("consular/web/domain") === "\"example.org\"", 15_000)

      // /ready: the leader and the followers are all ready, and agree on who leads
      yield* eventually("all ready", async () => {
        const answers = await Promise.all(instances.map(ready))
        return answers.every((answer) => answer?.status === 200 && answer.leaderAt === leader.address)
      }, 15_000)
      expect((yield* Effect.promise(() => ready(leader)))?.leader).toBe(true)
      for (const follower of followers) expect((yield* Effect.promise(() => ready(follower)))?.leader).toBe(false)

      // the lock key: held by a session, the leader's {host, port, version}, and nothing under consular/
      expect(dc.consul.keyMeta.get(key)?.Session).toBeDefined()
      expect(JSON.parse(dc.consul.kv.get(key)!)).toEqual({ host: "127.0.0.1", port: leader.port, version: "0.1.0" })

      // only the leader subscribed its callback
      expect(dc.marathon.subscriptions).toEqual([`http://${leader.address}/events?registration=ha`])

      // a follower answers /events 503 naming the leader, and applies nothing
      const event = statusUpdate({ taskId: "web.2", taskStatus: "TASK_RUNNING", appId: "/web", host: "127.0.0.4", ports: [31002] })
      const refused = yield* Effect.promise(() =>
        fetch(`http://${followers[0]!.address}/events?registration=ha`, { method: "POST", body: JSON.stringify(event) }))
      expect(refused.status).toBe(503)
      expect(yield* Effect.promise(() => refused.json())).toMatchObject({ error: "not the leader", leader: leader.address })
      expect(dc.consul.services("127.0.0.4").has("web.2")).toBe(false)

      // every spelling the router serves /events by too (a trailing slash, doubled slashes, another case)
      for (const path of ["/events/", "//events", "/EVENTS"]) {
        const answer = yield* Effect.promise(() =>
          fetch(`http://${followers[0]!.address}${path}?registration=ha`, { method: "POST", body: JSON.stringify(event), signal: AbortSignal.timeout(5_000) }))
        expect(answer.status, path).toBe(503)
        expect(dc.consul.services("127.0.0.4").has("web.2"), path).toBe(false)
      }

      // POST /sync and GET /diff too: a follower answers 503 naming the leader, the leader confirms its lock and syncs
      for (const [method, path] of [["POST", "/sync"], ["GET", "/diff"], ["POST", "/Sync/"], ["GET", "/diff/"]] as const) {
        const answer = yield* Effect.promise(() => fetch(`http://${followers[1]!.address}${path}`, { method, signal: AbortSignal.timeout(5_000) }))
        expect(answer.status).toBe(503)
        expect(yield* Effect.promise(() => answer.json())).toMatchObject({ error: "not the leader", leader: leader.address })
      }
      const synced = yield* Effect.promise(() => fetch(`http://${leader.address}/sync`, { method: "POST", signal: AbortSignal.timeout(15_000) }))
      expect(synced.status).toBe(200)
      expect(yield* Effect.promise(() => synced.json())).toMatchObject({ outcome: "complete", registered: 0 })

      // metrics
      const leaderMetrics = yield* metricsOf(leader)
      expect(leaderMetrics.value("consular_leader")).toBe(1)
      expect(leaderMetrics.value("consular_leader_changes_total")).toBeGreaterThanOrEqual(1)
      for (const follower of followers) expect((yield* metricsOf(follower)).value("consular_leader")).toBe(0)

      // SIGTERM: the leader releases the lock and destroys its session; another leads within 2 s
      const lockedAgain = nextLockHolder(dc.consul, dc.consul.keyMeta.get(key)?.Session)
      const stoppedAt = Date.now()
      leader.daemon.child.kill("SIGTERM")
      const next = yield* oneLeader(followers, 2_000)
      const failoverMs = Date.now() - stoppedAt
      console.log(`SIGTERM failover: lock taken by another session after ${(lockedAgain.at ?? NaN) - stoppedAt} ms; its /ready said leader after ${failoverMs} ms`)
      // it exits 0 once done (a second signal now would kill it outright: only the first one is handled)
      const code = yield* Effect.promise(() =>
        new Promise<number | null>((resolve) => {
          const child = leader.daemon.child
          if (child.exitCode !== null || child.signalCode !== null) return resolve(child.exitCode)
          const timer = setTimeout(() => resolve(-1), 10_000)
          child.once("exit", (exitCode) => {
            clearTimeout(timer)
            resolve(exitCode)
          })
        }))
      expect(code).toBe(0)
      expect(dc.consul.endedSessions.some((ended) => ended.why === "destroyed")).toBe(true)
      yield* eventually("the new leader subscribed and the old one's callback is gone", () =>
        dc.marathon.subscriptions.length === 1 && dc.marathon.subscriptions[0] === `http://${next.address}/events?registration=ha`, 10_000)

      // the new leader applies events
      const applied = yield* Effect.promise(() =>
        fetch(`http://${next.address}/events?registration=ha`, { method: "POST", body: JSON.stringify(event) }))
      expect(applied.status).toBe(200)
      expect(dc.consul.services("127.0.0.4").has("web.2")).toBe(true)

      expect(claims.overlaps).toEqual([])
      const runs = expectOneWriterAtATime(dc.consul)
      expect(runs[0]).toBe(leader.token)
      expect(runs[runs.length - 1]).toBe(next.token)
    }), 90_000)

  it.scopedLive("SIGKILL of the leader: another leads within 2 × TTL + LockDelay + 2 s and converges a Marathon change made in the gap", () =>
    Effect.gen(function*() {
      const { dc, instances, claims } = yield* setup
      const leader = yield* oneLeader(instances, 30_000)
      yield* eventually("the leader synced", () => dc.consul.services("127.0.0.4").has("web.1"), 15_000)
      const lockedAgain = nextLockHolder(dc.consul, dc.consul.keyMeta.get(key)?.Session)
      const killedAt = Date.now()
      yield* leader.daemon.stop("SIGKILL")
      // the gap: Marathon changes while no one leads (the callback goes to the dead leader)
      dc.marathon.setTask("/web", { id: "web.3", host: "127.0.0.4", ports: [31003] }, true)
      dc.marathon.endTask("/web", "web.1", "TASK_KILLED", true)
      const next = yield* oneLeader(instances.filter((instance) => instance !== leader), (2 * ttlSeconds + lockDelaySeconds + 2) * 1000)
      const failoverMs = Date.now() - killedAt
      console.log(`SIGKILL failover: lock taken by another session after ${(lockedAgain.at ?? NaN) - killedAt} ms; its /ready said leader after ${failoverMs} ms`)
      expect(dc.consul.endedSessions.some((ended) => ended.why === "expired")).toBe(true)
      yield* eventually("the new leader's pass converged Consul", () =>
        dc.consul.services("127.0.0.4").has("web.3") && !dc.consul.services("127.0.0.4").has("web.1"), 15_000)
      expect(claims.overlaps).toEqual([])
      const runs = expectOneWriterAtATime(dc.consul)
      expect(runs[runs.length - 1]).toBe(next.token)
    }), 90_000)

  it.scopedLive("a leader cut off from Consul steps down before its TTL lapses, then stands by again once Consul is back", () =>
    Effect.gen(function*() {
      const { dc, instances, claims } = yield* setup
      const leader = yield* oneLeader(instances, 30_000)
      yield* eventually("the leader synced", () => dc.consul.services("127.0.0.4").has("web.1"), 15_000)
      const session = dc.consul.keyMeta.get(key)!.Session!
      dc.consul.setFault(leader.agent, { _tag: "Refuse" })
      const cutAt = Date.now()
      // its renewals fail from now on: the session ends at the last renewal's time + TTL
      let steppedDownAt = 0
      yield* eventually("the cut-off leader steps down", async () => {
        const answer = await ready(leader)
        if (answer?.leader === false) steppedDownAt = Date.now()
        return answer?.leader === false
      }, (ttlSeconds + 5) * 1000)
      const lapsesAt = dc.consul.sessions.get(session)?.expiresAt
      const ended = dc.consul.endedSessions.find((record) => record.id === session)
      const ttlLapse = lapsesAt ?? ended!.at
      console.log(`cut off at +0 ms; stepped down at +${steppedDownAt - cutAt} ms; its session's TTL lapses at +${ttlLapse - cutAt} ms`)
      expect(steppedDownAt).toBeLessThan(ttlLapse)
      // nothing written with its token after it stepped down
      const lateWrites = dc.consul.log.filter((record) => record.write && record.token === leader.token && (record.at ?? 0) >= steppedDownAt)
      expect(lateWrites).toEqual([])
      // once its session has ended, another takes over
      const next = yield* oneLeader(instances.filter((instance) => instance !== leader), (2 * ttlSeconds + lockDelaySeconds + 2) * 1000)
      expect(next).not.toBe(leader)
      dc.consul.setFault(leader.agent, undefined)
      yield* eventually("the old leader stands by again", async () => {
        const answer = await ready(leader)
        return answer?.status === 200 && answer.leader === false && answer.leaderAt === next.address
      }, 20_000)
      expect(claims.overlaps).toEqual([])
      expectOneWriterAtATime(dc.consul)
    }), 90_000)
})

describe("--leader-election flags", () => {
  it.scopedLive("--session-ttl below Consul's 10 s and --leader-key under consular/ are refused naming the flag", () =>
    Effect.gen(function*() {
      const short = yield* runCli(["run", "--leader-election", "--session-ttl", "5s"])
      expect(short.code).toBe(1)
      expect(short.stdout + short.stderr).toContain("--session-ttl: must be a duration from 10s (Consul's minimum)")
      const garbled = yield* runCli(["run", "--leader-election", "--session-ttl", "soon"])
      expect(garbled.code).toBe(1)
      expect(garbled.stdout + garbled.stderr).toContain("--session-ttl")
      const labels = yield* runCli(["run", "--leader-election", "--leader-key", "consular/leader"])
      expect(labels.code).toBe(1)
      expect(labels.stdout + labels.stderr).toContain("--leader-key: must not be under consular/")
    }), 60_000)

  it.scopedLive("--session-ttl 1m or a bare number of seconds; --leader-key names the key the session locks", () =>
    Effect.gen(function*() {
      const dc = yield* makeDatacenter()
      for (const [ttl, sent, lockKey] of [["1m", "1m0s", "service/ops/consular-leader"], ["20", "20s", "service/consular/consular/leader"]] as const) {
        const port = yield* freePort()
        const extra = lockKey === "service/ops/consular-leader" ? ["--leader-key", lockKey] : []
        const daemon = yield* startCli(["run", "--host", "127.0.0.1", "--port", `${port}`, "--consul", dc.consulUrl.href,
          "--marathon", dc.marathonUrl.href, "--events", "callback", "--leader-election", "--session-ttl", ttl, ...extra])
        yield* eventually(`a session with TTL ${sent} holds ${lockKey}`, () => {
          const holder = dc.consul.keyMeta.get(lockKey)?.Session
          return holder !== undefined && dc.consul.sessions.get(holder)?.TTL === sent
        }, 20_000)
        const session = dc.consul.sessions.get(dc.consul.keyMeta.get(lockKey)!.Session!)!
        expect(session).toMatchObject({ Behavior: "release", lockDelayMillis: 1_000, Name: "consular consular" })
        expect(yield* daemon.stop("SIGTERM")).toBe(0)
        expect(dc.consul.sessions.size).toBe(0) // destroyed on the way out
      }
    }), 90_000)
})
