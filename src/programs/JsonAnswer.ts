import { HttpServerResponse } from "@effect/platform"

/** The daemon's one way to answer: JSON with a status (and headers when needed), for every route, error or not. */
export const jsonAnswer = (body: unknown, status: number, headers?: Readonly<Record<string, string>>): HttpServerResponse.HttpServerResponse =>
  HttpServerResponse.unsafeJson(body, { status, ...(headers === undefined ? {} : { headers }) })
