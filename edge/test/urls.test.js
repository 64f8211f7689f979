import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { normaliseUrl, unsafeUrlReason } from "../src/urls.js";
import { call, clearKv, interceptNetwork, kvKeys, post } from "./helpers.js";

describe("SSRF guard", () => {
  const unsafe = [
    "http://127.0.0.1/",
    "http://127.1/",
    "http://2130706433/",
    "http://0x7f.0.0.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/",
    "http://[::]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[fd00::1]/",
    "http://[fe80::1]/",
    "http://[64:ff9b::a00:1]/",
    "http://[2002:a9fe:a9fe::]/", // 6to4 wrapping of 169.254.169.254
    "http://[2002:7f00:1::1]/", // 6to4 wrapping of 127.0.0.1
    "http://[::ffff:0:a00:1]/", // IPv4-translated 10.0.0.1
    "http://[fec0::1]/", // site-local
    "http://10.1.2.3/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://0.0.0.0/",
    "http://localhost:8080/",
    "http://api.localhost/",
    "http://metadata.google.internal/",
    "http://printer.local/",
    "http://intranet/",
    "https://user:pass@example.com/",
    "http://a..example.com/", // an empty label: the receiver and the crawler refuse it
    "http://.example.com/",
    "http://example.com:0/",
    "file:///etc/passwd",
    "ftp://example.com/",
    "gopher://example.com/",
    "javascript:alert(1)",
    "data:text/html,hi",
    "not a url",
  ];
  it.each(unsafe)("refuses %s", (url) => {
    expect(unsafeUrlReason(url)).toEqual(expect.any(String));
  });

  const safe = [
    "https://example.com/",
    "http://8.8.8.8/",
    "http://172.32.0.1/",
    "http://[2606:4700::1111]/",
    "http://[2002:808:808::]/", // 6to4 of a public address
    "https://en.wikipedia.org/wiki/Momentum_(finance)",
  ];
  it.each(safe)("accepts %s", (url) => {
    expect(unsafeUrlReason(url)).toBeNull();
  });

  describe("at the HTTP entry point", () => {
    let net;
    beforeEach(async () => {
      await clearKv();
      net = interceptNetwork();
    });
    afterEach(() => net.restore());

    it.each([
      ["http://127.0.0.1/admin", /127\.0\.0\.1 is private/],
      ["http://169.254.169.254/latest/meta-data/", /169\.254\.169\.254 is private/],
      ["http://[::1]/", /\[::1\] is private/],
      ["file:///etc/passwd", /scheme file: is not http/],
    ])("POST with %s is a 400 that names the URL", async (url, reason) => {
      const response = await call(
        post({ concept: "momentum", urls: ["https://example.com/ok", url] }),
      );
      expect(response.status).toBe(400);
      const { error } = await response.json();
      expect(error).toMatch(/^urls\[1\] refused: /);
      expect(error).toMatch(reason);
      expect(net.calls).toEqual([]);
      expect(await kvKeys()).toEqual([]);
    });
  });
});

describe("normaliseUrl", () => {
  it.each([
    ["HTTPS://WWW.Example.COM/A/b", "https://www.example.com/A/b"],
    ["https://example.com:443/x", "https://example.com/x"],
    ["http://example.com:80/x", "http://example.com/x"],
    ["https://example.com/x#frag", "https://example.com/x"],
    ["https://example.com/x?", "https://example.com/x"],
    ["https://example.com/x?b=2&a=1&a=0", "https://example.com/x?a=0&a=1&b=2"],
    [
      "https://example.com/x?utm_source=a&UTM_Campaign=b&gclid=c&id=7",
      "https://example.com/x?id=7",
    ],
    ["https://example.com/x?fbclid=1&mc_cid=2&_ga=3", "https://example.com/x"],
    ["https://example.com/x?q=a%20b", "https://example.com/x?q=a+b"],
  ])("%s → %s", (raw, expected) => {
    expect(normaliseUrl(raw)).toBe(expected);
  });

  it("is idempotent", () => {
    const once = normaliseUrl("HTTPS://Example.com/p?z=1&utm_x=2&a=%2F#f");
    expect(normaliseUrl(once)).toBe(once);
  });
});
