import { execFileSync } from "node:child_process"
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"

/**
 * A throwaway PKI made by the test itself with openssl: a CA, a server certificate it signs for 127.0.0.1-5
 * and localhost, and an unrelated CA (to see a wrong CA refused). Files and PEM contents both.
 */
export interface Pki {
  readonly dir: string
  readonly caFile: string
  readonly ca: string
  readonly cert: string
  readonly key: string
  readonly otherCaFile: string
}

const openssl = (dir: string, args: ReadonlyArray<string>) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" })

const makeCa = (dir: string, name: string) => {
  openssl(dir, ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
    "-subj", `/CN=${name}`, "-keyout", `${name}.key`, "-out", `${name}.pem`])
}

export const makePki = (): Pki => {
  const dir = mkdtempSync(join(tmpdir(), "consular-pki-"))
  makeCa(dir, "ca")
  makeCa(dir, "other-ca")
  writeFileSync(join(dir, "san.ext"), "subjectAltName=IP:127.0.0.1,IP:127.0.0.2,IP:127.0.0.3,IP:127.0.0.4,IP:127.0.0.5,DNS:localhost\n")
  openssl(dir, ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=consular-test-server",
    "-keyout", "server.key", "-out", "server.csr"])
  openssl(dir, ["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
    "-extfile", "san.ext", "-out", "server.pem"])
  const read = (name: string) => readFileSync(join(dir, name), "utf8")
  return {
    dir,
    caFile: join(dir, "ca.pem"),
    ca: read("ca.pem"),
    cert: read("server.pem"),
    key: read("server.key"),
    otherCaFile: join(dir, "other-ca.pem")
  }
}
