import { readFileSync } from "node:fs"
import { gunzipSync } from "node:zlib"

export interface TarEntry {
  readonly path: string
  readonly mode: number
  readonly type: "file" | "directory" | "other"
  readonly content: Buffer
}

/**
 * The entries of a .tgz as npm pack writes it (ustar, with pax headers for long names): what is in the package,
 * read from the tarball itself rather than from npm's own listing of it.
 */
export const readTarball = (file: string): ReadonlyArray<TarEntry> => {
  const tar = gunzipSync(readFileSync(file))
  const entries: Array<TarEntry> = []
  let paxPath: string | undefined
  for (let offset = 0; offset + 512 <= tar.length;) {
    const header = tar.subarray(offset, offset + 512)
    if (header.every((byte) => byte === 0)) break
    const field = (start: number, length: number) => header.subarray(start, start + length).toString("utf8").replace(/\0.*$/s, "")
    const size = parseInt(field(124, 12).trim() || "0", 8)
    const typeflag = field(156, 1)
    const content = tar.subarray(offset + 512, offset + 512 + size)
    offset += 512 + Math.ceil(size / 512) * 512
    if (typeflag === "x") {
      // a pax header: its `path` record names the next entry
      paxPath = /\d+ path=([^\n]*)\n/.exec(content.toString("utf8"))?.[1]
      continue
    }
    const prefix = field(345, 155)
    const path = paxPath ?? (prefix === "" ? field(0, 100) : `${prefix}/${field(0, 100)}`)
    paxPath = undefined
    const type = typeflag === "0" || typeflag === "" ? "file" : typeflag === "5" ? "directory" : "other"
    entries.push({ path, mode: parseInt(field(100, 8).trim() || "0", 8), type, content: Buffer.from(content) })
  }
  return entries
}
