import { HttpClientRequest } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { execFileSync } from "node:child_process"
import { readFileSync } from "node:fs"
import { createServer } from "node:https"
import type { ServerOptions } from "node:https"
import type { TLSSocket } from "node:tls"
import { join } from "node:path"
import { describeFailure, makeHttp } from "../../src/services/Http.js"
import type { TlsSettings } from "../../src/services/Http.js"
import { makePki } from "../support/Pki.js"
import type { Pki } from "../support/Pki.js"
import { testTls } from "../support/Tls.js"
import { listenOnLoopback } from "../support/Listen.js"

/**
 * What `--consul-cert-file`/`--consul-key-file` (and Marathon's) and `--*-tls-skip-verify` give the transport,
 * against a loopback HTTPS server: a server that requires a client certificate signed by its CA (as Consul
 * with `verify_incoming`), and a server whose certificate no one trusts.
 */

/** A client certificate for `name`, signed by the CA `ca` ("ca" or "other-ca") of the test's PKI. */
const clientCert = (pki: Pki, name: string, ca: string): { cert: string; key: string } => {
  const openssl = (args: ReadonlyArray<string>) => execFileSync("openssl", args, { cwd: pki.dir, stdio: "pipe" })
  openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", `/CN=${name}`,
    "-keyout", `${name}.key`, "-out", `${name}.csr`])
  openssl(["x509", "-req", "-in", `${name}.csr`, "-CA", `${ca}.pem`, "-CAkey", `${ca}.key`, "-CAcreateserial", "-days", "2",
    "-out", `${name}.pem`])
  return { cert: readFileSync(join(pki.dir, `${name}.pem`), "utf8"), key: readFileSync(join(pki.dir, `${name}.key`), "utf8") }
}

/** An HTTPS server on loopback that answers the client certificate's subject (or "none"). */
const httpsServer = (options: ServerOptions) =>
  Effect.gen(function*() {
    const server = createServer(options, (request, response) => {
      const peer = (request.socket as TLSSocket).getPeerCertificate()
      response.setHeader("content-type", "application/json")
      response.end(JSON.stringify({ client: peer?.subject?.CN ?? "none" }))
    })
    server.on("tlsClientError", () => undefined)
    const port = yield* listenOnLoopback(server)
    return `https://127.0.0.1:${port}/v1/agent/self`
  })

const get = (url: string, tls: TlsSettings) =>
  Effect.gen(function*() {
    const http = yield* makeHttp({ timeout: "5 seconds", retries: 0, tls })
    return yield* http.send(HttpClientRequest.get(url), (response) => response.json).pipe(
      Effect.match({ onFailure: (failure) => ({ failure: describeFailure(failure), body: undefined }), onSuccess: (body) => ({ body, failure: undefined }) })
    )
  })

describe("HTTPS upstreams: client certificates and skip-verify", () => {
  it.scopedLive("a server that requires a client certificate: the right one is accepted, none or one of another CA is refused, named", () =>
    Effect.gen(function*() {
      const pki = makePki()
      const url = yield* httpsServer({ cert: pki.cert, key: pki.key, ca: pki.ca, requestCert: true, rejectUnauthorized: true })
      const right = clientCert(pki, "consular-client", "ca")
      const wrong = clientCert(pki, "intruder", "other-ca")

      const accepted = yield* get(url, { ca: pki.ca, ...right })
      expect(accepted).toEqual({ body: { client: "consular-client" }, failure: undefined })

      // TLS 1.3: the server's refusal is an alert after the handshake, named by Node's error code, unless the
      // request already sent turned it into a reset (a race on the server's close): then the failure says so
      const refusal = (alert: string) => new RegExp(`^GET ${url}: (${alert}|ECONNRESET \\(the server closed the new TLS connection unanswered: did it refuse the client certificate\\?\\))$`)
      for (let i = 0; i < 3; i++) {
        expect((yield* get(url, { ca: pki.ca })).failure).toMatch(refusal("ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED"))
        expect((yield* get(url, { ca: pki.ca, ...wrong })).failure).toMatch(refusal("ERR_SSL_TLSV1_ALERT_UNKNOWN_CA"))
      }
    }))

  it.scopedLive("skip-verify connects to a server whose certificate is not trusted; without it the certificate problem is named", () =>
    Effect.gen(function*() {
      const pki = makePki()
      // signed by a CA the client was not given, and a self-signed one
      const unknownCa = yield* httpsServer({ cert: pki.cert, key: pki.key })
      const selfSigned = yield* httpsServer({ cert: testTls.cert, key: testTls.key })
      for (const url of [unknownCa, selfSigned]) {
        expect(yield* get(url, { skipVerify: true })).toEqual({ body: { client: "none" }, failure: undefined })
      }
      expect(yield* get(unknownCa, {})).toEqual({ failure: `GET ${unknownCa}: UNABLE_TO_VERIFY_LEAF_SIGNATURE`, body: undefined })
      expect(yield* get(selfSigned, { skipVerify: false })).toEqual({ failure: `GET ${selfSigned}: DEPTH_ZERO_SELF_SIGNED_CERT`, body: undefined })
      // a CA given explicitly that did not sign the server's certificate is refused as well
      expect(yield* get(unknownCa, { ca: readFileSync(pki.otherCaFile, "utf8") })).toEqual({
        failure: `GET ${unknownCa}: UNABLE_TO_VERIFY_LEAF_SIGNATURE`,
        body: undefined
      })
    }))
})
