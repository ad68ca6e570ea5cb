import { HttpServerResponse } from "@effect/platform"
import type { ServerResponse } from "node:http"

/**
 * The daemon's one way to answer: JSON with a status (and headers when needed), for every route, error or not.
 * The body stays a string with its length said: Node then sends head and body in one write, not two.
 */
export const jsonAnswer = (body: unknown, status: number, headers?: Readonly<Record<string, string>>): HttpServerResponse.HttpServerResponse => {
  const text = JSON.stringify(body)
  return HttpServerResponse.raw(text, {
    status,
    contentType: "application/json",
    contentLength: Buffer.byteLength(text),
    ...(headers === undefined ? {} : { headers })
  })
}

/** Writes an answer of `jsonAnswer` straight to Node's response, as the platform's server does (head and body at once). */
export const writeJsonAnswer = (response: ServerResponse, answer: HttpServerResponse.HttpServerResponse): void => {
  if (response.writableEnded) return
  response.writeHead(answer.status, answer.headers)
  response.end(answer.body._tag === "Raw" && typeof answer.body.body === "string" ? answer.body.body : undefined)
}
