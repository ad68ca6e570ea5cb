import { Effect } from "effect"

/** An HTTP answer as the embedded servers' wire-format tests read it. */
export interface Answer {
  readonly status: number
  readonly contentType: string | null
  readonly text: string
}

/** One request with fetch, bounded by 2 s; the body read as text. */
export const call = (url: string, init: RequestInit = {}): Effect.Effect<Answer, unknown> =>
  Effect.tryPromise(async () => {
    const response = await fetch(url, { ...init, signal: AbortSignal.timeout(2000) })
    return { status: response.status, contentType: response.headers.get("content-type"), text: await response.text() }
  })
