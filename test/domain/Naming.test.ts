import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc, Schema } from "effect"
import { AppId, Host, TaskId } from "../../src/domain/MarathonApi.js"
import {
  agentUrl, appIdFromTags, appIdTag, appKvPrefix, appName, callbackUrl, encodeLabelValue, isOwnedBy, labelKey,
  parseLabelKey, registration, regIdTag
} from "../../src/domain/Naming.js"
import { AnyStringArb, AppIdArb, HostArb, PortArb, TaskIdArb } from "./Arbitraries.js"

const appId = Schema.decodeSync(AppId)
const taskId = Schema.decodeSync(TaskId)
const host = Schema.decodeSync(Host)

const many = { fastCheck: { numRuns: 500 } }

/** Python 2.7's json.dumps (ensure_ascii), written out: the bytes consul-template users already read. */
const pythonJsonDumps = (s: string): string => {
  const short: Record<number, string> = {
    0x22: "\\\"", 0x5c: "\\\\", 0x0a: "\\n", 0x0d: "\\r", 0x09: "\\t", 0x08: "\\b", 0x0c: "\\f"
  }
  let out = "\""
  for (let i = 0; i < s.length; i++) {
    const unit = s.charCodeAt(i)
    out += short[unit] ?? (unit < 0x20 || unit > 0x7e ? `\\u${unit.toString(16).padStart(4, "0")}` : s[i])
  }
  return `${out}"`
}

describe("appName", () => {
  it.prop("has no slash, for any app id", [AppIdArb], ([id]) => {
    expect(appName(id)).not.toContain("/")
  }, many)

  it.prop("drops only the leading slash and turns the others into dashes", [AppIdArb], ([id]) => {
    expect(appName(id)).toBe(id.slice(1).split("/").join("-"))
  }, many)

  it("/grp/web is grp-web", () => {
    expect(appName(appId("/grp/web"))).toBe("grp-web")
    expect(appName(appId("/web"))).toBe("web")
  })

  it("/a/b and /a-b clash: the same name", () => {
    expect(appName(appId("/a/b"))).toBe("a-b")
    expect(appName(appId("/a-b"))).toBe(appName(appId("/a/b")))
  })
})

describe("registration", () => {
  const web = appId("/grp/web")

  it("is exactly the original's object: lowest port, the two tags", () => {
    const task = { id: taskId("grp_web.1234"), host: host("10.0.0.7"), ports: [31002, 31000, 31001] }
    expect(registration("consular", web, task)).toStrictEqual({
      ID: "grp_web.1234",
      Name: "grp-web",
      Address: "10.0.0.7",
      Port: 31000,
      Tags: ["consular-reg-id=consular", "consular-app-id=/grp/web"]
    })
  })

  it("has no Port key at all for a task without ports (an empty list, or none at all)", () => {
    const reg = registration("blue", web, { id: taskId("grp_web.1"), host: host("agent-3"), ports: [] })
    expect(reg).toStrictEqual({
      ID: "grp_web.1",
      Name: "grp-web",
      Address: "agent-3",
      Tags: ["consular-reg-id=blue", "consular-app-id=/grp/web"]
    })
    expect(registration("blue", web, { id: taskId("grp_web.1"), host: host("agent-3") })).toStrictEqual(reg)
    expect(Object.keys(reg)).not.toContain("Port")
  })

  it.prop(
    "any task: its id, its app's name, its host, the lowest port, exactly the two tags",
    [fc.string(), AppIdArb, TaskIdArb, HostArb, fc.array(PortArb, { maxLength: 5 })],
    ([regId, app, id, taskHost, ports]) => {
      const reg = registration(regId, app, { id, host: taskHost, ports })
      expect(reg.ID).toBe(id)
      expect(reg.Name).toBe(appName(app))
      expect(reg.Address).toBe(taskHost)
      expect(reg.Tags).toStrictEqual([`consular-reg-id=${regId}`, `consular-app-id=${app}`])
      if (ports.length === 0) expect("Port" in reg).toBe(false)
      else expect(reg.Port).toBe(Math.min(...ports))
      expect(isOwnedBy(reg.Tags, regId)).toBe(true)
      expect(appIdFromTags(reg.Tags)).toBe(app)
    },
    many
  )
})

describe("tags", () => {
  it("regIdTag and appIdTag are the original's", () => {
    expect(regIdTag("consular")).toBe("consular-reg-id=consular")
    expect(appIdTag(appId("/grp/web"))).toBe("consular-app-id=/grp/web")
  })

  it("appIdFromTags: one app-id tag gives its id; none or two give undefined", () => {
    expect(appIdFromTags(["consular-reg-id=consular", "consular-app-id=/grp/web"])).toBe("/grp/web")
    expect(appIdFromTags(["consular-reg-id=consular"])).toBeUndefined()
    expect(appIdFromTags([])).toBeUndefined()
    expect(appIdFromTags(["consular-app-id=/a", "consular-app-id=/b"])).toBeUndefined()
    expect(appIdFromTags(["consular-app-id=/a", "consular-app-id=/a"])).toBeUndefined()
  })

  it("isOwnedBy: our exact reg-id tag only", () => {
    expect(isOwnedBy(["consular-reg-id=consular"], "consular")).toBe(true)
    expect(isOwnedBy(["consular-reg-id=consular2"], "consular")).toBe(false)
    expect(isOwnedBy(["consular-reg-id=consular"], "consular2")).toBe(false)
    expect(isOwnedBy([], "consular")).toBe(false)
    expect(isOwnedBy(null, "consular")).toBe(false)
  })
})

describe("encodeLabelValue", () => {
  it("bar is stored as the five bytes \"bar\"", () => {
    expect(encodeLabelValue("bar")).toBe("\"bar\"")
    expect(Buffer.byteLength(encodeLabelValue("bar"))).toBe(5)
  })

  it("an empty string is stored as an empty value", () => {
    expect(encodeLabelValue("")).toBe("")
  })

  it("escapes quotes, backslashes and control characters as JSON", () => {
    expect(encodeLabelValue("say \"hi\"")).toBe("\"say \\\"hi\\\"\"")
    expect(encodeLabelValue("C:\\dir")).toBe("\"C:\\\\dir\"")
    expect(encodeLabelValue("a\nb\tc\r")).toBe("\"a\\nb\\tc\\r\"")
    expect(encodeLabelValue("\u0001\u001f\u007f")).toBe("\"\\u0001\\u001f\\u007f\"")
    expect(encodeLabelValue("a/b")).toBe("\"a/b\"") // json.dumps leaves "/" alone
  })

  it("escapes non-ASCII as Python's json.dumps: \\uXXXX, lowercase hex, surrogate pairs", () => {
    expect(encodeLabelValue("café")).toBe("\"caf\\u00e9\"")
    expect(encodeLabelValue("😀")).toBe("\"\\ud83d\\ude00\"")
    expect(encodeLabelValue("\u2028")).toBe("\"\\u2028\"")
    expect(encodeLabelValue("\ud800")).toBe("\"\\ud800\"") // a lone surrogate, as Python writes it
  })

  it.prop("JSON.parse gives the value back, for any non-empty string", [AnyStringArb], ([s]) => {
    fc.pre(s !== "")
    expect(JSON.parse(encodeLabelValue(s))).toBe(s)
  }, many)

  it.prop("is byte for byte Python's json.dumps, printable ASCII only", [AnyStringArb], ([s]) => {
    fc.pre(s !== "")
    const encoded = encodeLabelValue(s)
    expect(encoded).toBe(pythonJsonDumps(s))
    expect(encoded).toMatch(/^[\x20-\x7e]*$/)
  }, many)
})

describe("KV keys", () => {
  const web = appName(appId("/web"))
  const web2 = appName(appId("/web2"))

  it("appKvPrefix and labelKey keep the trailing slash, so web never covers web2", () => {
    expect(appKvPrefix(web)).toBe("consular/web/")
    expect(labelKey(web, "domain")).toBe("consular/web/domain")
    expect(labelKey(web2, "domain").startsWith(appKvPrefix(web))).toBe(false)
  })

  it.prop(
    "parseLabelKey(labelKey(app, label)) gives app and label back, an empty label included",
    [AppIdArb, fc.string()],
    ([id, label]) => {
      expect(parseLabelKey(labelKey(appName(id), label))).toStrictEqual({ app: appName(id), label })
    },
    many
  )

  it.prop(
    "a label key lies under its own app's prefix and no other app's",
    [AppIdArb, AppIdArb, fc.string({ minLength: 1 })],
    ([a, b, label]) => {
      const key = labelKey(appName(a), label)
      expect(key.startsWith(appKvPrefix(appName(a)))).toBe(true)
      expect(key.startsWith(appKvPrefix(appName(b)))).toBe(appName(a) === appName(b))
    },
    many
  )

  it("parseLabelKey keeps slashes in the label", () => {
    expect(parseLabelKey("consular/web/a/b")).toStrictEqual({ app: "web", label: "a/b" })
  })

  it("an empty label key is stored at consular/<app>/ and parsed back as such", () => {
    expect(labelKey(web, "")).toBe("consular/web/")
    expect(parseLabelKey("consular/web/")).toStrictEqual({ app: "web", label: "" })
  })

  it("parseLabelKey is undefined for keys consular never writes", () => {
    for (const key of ["consular/", "consular/web", "consular//domain", "other/web/domain", "consularx/web/d", "web/d", ""]) {
      expect(parseLabelKey(key), key).toBeUndefined()
    }
  })
})

describe("agentUrl", () => {
  const consul = new URL("https://consul.example:8501")

  it("swaps the host, keeping scheme and port", () => {
    expect(agentUrl(consul, "10.0.0.2").href).toBe("https://10.0.0.2:8501/")
    expect(agentUrl(new URL("http://localhost:8500"), "agent-3.dc1").href).toBe("http://agent-3.dc1:8500/")
    expect(agentUrl(new URL("http://localhost"), "10.0.0.2").href).toBe("http://10.0.0.2/")
  })

  it("brackets an IPv6 address, whether or not it came bracketed", () => {
    expect(agentUrl(consul, "2001:db8::7").href).toBe("https://[2001:db8::7]:8501/")
    expect(agentUrl(consul, "[2001:db8::7]").href).toBe("https://[2001:db8::7]:8501/")
    expect(agentUrl(new URL("http://[::1]:8500"), "10.0.0.2").href).toBe("http://10.0.0.2:8500/")
  })

  it("leaves the main URL alone", () => {
    const main = new URL("http://localhost:8500")
    agentUrl(main, "10.0.0.2")
    expect(main.href).toBe("http://localhost:8500/")
  })

  it.prop("puts any Host in the URL, whatever the main Consul's host", [HostArb], ([h]) => {
    const a = agentUrl(new URL("http://consul-a.test:8500"), h)
    const b = agentUrl(new URL("https://consul-b.test:8501"), h)
    expect(a.hostname).toBe(b.hostname)
    expect(a.hostname).not.toBe("consul-a.test")
    expect([a.protocol, a.port, b.protocol, b.port]).toStrictEqual(["http:", "8500", "https:", "8501"])
    if (!h.includes(":")) expect(a.hostname).toBe(h.toLowerCase())
  }, many)
})

describe("callbackUrl", () => {
  it("is exactly <scheme>://<host>:<port>/events?registration=<regid>", () => {
    expect(callbackUrl({ scheme: "http", host: "localhost", port: 7000, registrationId: "consular" }))
      .toBe("http://localhost:7000/events?registration=consular")
    expect(callbackUrl({ scheme: "https", host: "10.0.0.5", port: 443, registrationId: "blue" }))
      .toBe("https://10.0.0.5:443/events?registration=blue")
  })

  it("appends &secret= when there is a secret, URL-encoded", () => {
    expect(callbackUrl({ scheme: "http", host: "localhost", port: 7000, registrationId: "consular", secret: "s3cret" }))
      .toBe("http://localhost:7000/events?registration=consular&secret=s3cret")
    expect(callbackUrl({ scheme: "http", host: "h", port: 1, registrationId: "r", secret: "a&b=c d" }))
      .toBe("http://h:1/events?registration=r&secret=a%26b%3Dc%20d")
    expect(callbackUrl({ scheme: "http", host: "h", port: 1, registrationId: "r", secret: undefined }))
      .toBe("http://h:1/events?registration=r")
  })
})
