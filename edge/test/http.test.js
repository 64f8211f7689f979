import { SELF } from "cloudflare:test";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  call,
  chunkedBody,
  clearKv,
  EDGE_TOKEN,
  interceptNetwork,
  kvKeys,
  post,
} from "./helpers.js";

let net;
beforeEach(async () => {
  await clearKv();
  net = interceptNetwork();
});
afterEach(() => net.restore());

async function expectRejected(response, status, reasonPattern) {
  expect(response.status).toBe(status);
  expect(response.headers.get("Content-Type")).toBe("application/json");
  const body = await response.json();
  expect(body.error).toMatch(reasonPattern);
  // A rejected request publishes nothing and remembers nothing.
  expect(net.calls).toEqual([]);
  expect(await kvKeys()).toEqual([]);
  return body;
}

describe("runtime", () => {
  it("runs inside workerd, not Node", () => {
    expect(navigator.userAgent).toBe("Cloudflare-Workers");
    expect(typeof HTMLRewriter).toBe("function");
  });
});

describe("routing", () => {
  it("GET /health answers without a token (through the deployed entrypoint)", async () => {
    const response = await SELF.fetch("https://edge.example/health");
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ ok: true, service: "qpipe-edge" });
  });

  it("unknown paths are 404 and wrong methods 405 with Allow", async () => {
    const missing = await SELF.fetch("https://edge.example/nope");
    expect(missing.status).toBe(404);
    expect((await missing.json()).error).toContain("/nope");
    const get = await SELF.fetch("https://edge.example/");
    expect(get.status).toBe(405);
    expect(get.headers.get("Allow")).toBe("POST");
    const postHealth = await SELF.fetch("https://edge.example/health", { method: "POST" });
    expect(postHealth.status).toBe(405);
  });
});

describe("authentication", () => {
  it("401 without a bearer token", async () => {
    const response = await call(post({ concept: "momentum" }, { token: null }));
    expect(response.headers.get("WWW-Authenticate")).toContain("Bearer");
    await expectRejected(response, 401, /bearer token/);
  });

  it("401 with a wrong token or a non-bearer scheme", async () => {
    await expectRejected(await call(post({ concept: "x1" }, { token: "wrong" })), 401, /bearer/);
    const basic = post({ concept: "x1" }, { token: null, headers: { Authorization: "Basic abc" } });
    await expectRejected(await call(basic), 401, /bearer/);
  });

  it("auth is checked before the body is parsed", async () => {
    await expectRejected(await call(post("{not json", { token: null })), 401, /bearer/);
  });

  it("fails closed with 500 naming the secret when EDGE_API_TOKEN is unset", async () => {
    const response = await call(post({ concept: "x1" }), { EDGE_API_TOKEN: "" });
    await expectRejected(response, 500, /EDGE_API_TOKEN/);
  });

  it("through the deployed entrypoint (SELF, real bindings and secrets) a valid call publishes", async () => {
    net.qstashOk();
    const denied = await SELF.fetch(post({ concept: "momentum" }, { token: "nope" }));
    expect(denied.status).toBe(401);
    const urls = ["https://example.com/self"];
    const response = await SELF.fetch(post({ concept: "momentum", urls }, { token: EDGE_TOKEN }));
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ stored: 1, urls });
    expect(net.batchCalls()).toHaveLength(1);
    expect((await kvKeys()).map((k) => k.name)).toEqual(["url:https://example.com/self"]);
  });
});

describe("input validation", () => {
  const cases = [
    ["bad JSON", "{concept: momentum", /not valid JSON/],
    ["a JSON array", "[1, 2]", /JSON object/],
    ["missing concept", { urls: ["https://example.com/a"] }, /concept is required/],
    ["non-string concept", { concept: 42 }, /concept must be a string/],
    ["blank concept", { concept: "   " }, /concept is empty/],
    ["punctuation-only concept", { concept: "?!-" }, /letter or digit/],
    ["control characters", { concept: "momentum\u0007bell" }, /control characters/],
    ["a lone surrogate", { concept: "halving \uD800 momentum" }, /unpaired UTF-16 surrogate/],
    ["a lone surrogate escape", '{"concept": "x\\udfff"}', /unpaired UTF-16 surrogate/],
    ["oversized concept", { concept: "m".repeat(201) }, /too long \(201 > 200/],
    ["unknown field", { concept: "momentum", url: "https://a.com" }, /unknown field\(s\): url/],
    // JSON.parse keeps the last of two equal keys; which concept was meant is unknowable.
    [
      "a duplicate field",
      '{"concept": "momentum", "urls": ["https://a.com/x"], "concept": "carry"}',
      /^field "concept" appears more than once in the body$/,
    ],
    [
      "a duplicate field spelt with an escape",
      '{"symbol": "BTC-USD", "concept": "m", "\\u0073ymbol": null}',
      /^field "symbol" appears more than once/,
    ],
    [
      "a concept with letters but none in A-Z or 0-9",
      { concept: "Доходность" },
      /^concept must contain a letter or digit from A-Z, a-z or 0-9/,
    ],
    ["201 emoji", { concept: "\u{1F680}".repeat(201) }, /too long \(201 > 200 characters\)/],
    ["urls not a list", { concept: "momentum", urls: "https://a.com" }, /urls must be a list/],
    [
      "too many urls",
      { concept: "momentum", urls: Array.from({ length: 21 }, (_, i) => `https://a.com/${i}`) },
      /too many urls \(21 > 20\)/,
    ],
    [
      "non-http url",
      { concept: "momentum", urls: ["ftp://a.com/x"] },
      /urls\[0\] refused: scheme ftp: is not http\/https/,
    ],
    [
      "javascript url",
      { concept: "c", urls: ["https://a.com", "javascript:alert(1)"] },
      /urls\[1\]/,
    ],
    ["non-string url", { concept: "momentum", urls: [7] }, /urls\[0\] must be a string/],
    ["empty urls", { concept: "momentum", urls: [] }, /urls is empty/],
    ["bad symbol", { concept: "momentum", symbol: "BTC USD!" }, /symbol "BTC USD!"/],
    ["denied domain", { concept: "m", urls: ["https://www.facebook.com/x"] }, /deny list/],
    // The URL parser silently drops tabs/line breaks ("exa\tmple" → "example") and turns a
    // lone surrogate into U+FFFD: a different URL from the one given.
    [
      "a tab inside a url",
      { concept: "m", urls: ["https://example.com/ok", "https://exa\tmple.com/a"] },
      /^urls\[1\] contains control characters .*exa\\tmple/,
    ],
    [
      "a line break inside a url",
      { concept: "m", urls: ["https://example.com/a\nb"] },
      /^urls\[0\] contains control characters/,
    ],
    ["a NUL inside a url", { concept: "m", urls: ["https://example.com/a\u0000"] }, /control/],
    [
      "a lone surrogate escape inside a url",
      '{"concept": "m", "urls": ["https://example.com/\\ud800"]}',
      /^urls\[0\] contains an unpaired UTF-16 surrogate/,
    ],
    [
      "a space in the host",
      { concept: "m", urls: ["https://exa mple.com/"] },
      /^urls\[0\] refused: not a valid URL \(its host or port is malformed\)$/,
    ],
    [
      "a port over 65535",
      { concept: "m", urls: ["https://example.com:99999/"] },
      /^urls\[0\] refused: not a valid URL \(its host or port is malformed\)$/,
    ],
    [
      "a relative url",
      { concept: "m", urls: ["/wiki/Momentum"] },
      /^urls\[0\] refused: not an absolute URL$/,
    ],
  ];
  it.each(cases)("400 for %s", async (_name, body, reason) => {
    await expectRejected(await call(post(body)), 400, reason);
  });

  it("a surrogate pair (an emoji) is text: only unpaired halves are refused", async () => {
    net.qstashOk();
    const urls = ["https://example.com/rocket"];
    const response = await call(post({ concept: "halving \u{1F680} momentum", urls }));
    expect(response.status).toBe(200);
  });

  it("equal keys inside nested values are not duplicates of the body's fields", async () => {
    net.qstashOk();
    const text = '{"concept": "m \\"concept\\": x", "urls": ["https://example.com/{\\"urls\\"}"]}';
    const response = await call(post(text));
    expect(response.status).toBe(200);
  });

  it("10,000 unknown fields: a short 400 listing the first few", async () => {
    const fields = Object.fromEntries(Array.from({ length: 10_000 }, (_, i) => [`f${i}`, 1]));
    const body = await expectRejected(
      await call(post({ concept: "m", ...fields })),
      400,
      /^unknown/,
    );
    expect(body.error).toBe(
      "unknown field(s): f0, f1, f2, f3, f4, … (allowed: concept, urls, symbol)",
    );
  });

  it("the allow list refuses other domains", async () => {
    const response = await call(post({ concept: "m", urls: ["https://b.org/x"] }), {
      ALLOW_DOMAINS: ["example.com"],
    });
    await expectRejected(response, 400, /b\.org is not on the allow list/);
  });

  it("415 when the body is not declared as JSON", async () => {
    const response = await call(
      post({ concept: "m" }, { headers: { "Content-Type": "text/plain" } }),
    );
    await expectRejected(response, 415, /application\/json/);
  });

  it.each([
    ["application/json; charset=utf-16", /charset must be utf-8, got "utf-16"/],
    ["application/json;charset=iso-8859-1", /charset must be utf-8, got "iso-8859-1"/],
    [
      "application/json-patch+json",
      /must be application\/json, got "application\/json-patch\+json"/,
    ],
    ["application/json-seq", /must be application\/json/],
  ])("415 for Content-Type %s", async (type, reason) => {
    const response = await call(post({ concept: "m" }, { headers: { "Content-Type": type } }));
    await expectRejected(response, 415, reason);
  });

  it.each([
    "APPLICATION/JSON",
    "application/json; charset=UTF-8",
    'application/json;charset="utf-8"',
    "application/json ; charset=utf8",
  ])("Content-Type %s is accepted", async (type) => {
    net.qstashOk();
    const urls = ["https://example.com/ct"];
    const response = await call(
      post({ concept: "m", urls }, { headers: { "Content-Type": type } }),
    );
    expect(response.status).toBe(200);
  });

  it.each([
    ["lower-case scheme", "bearer test-edge-token"],
    ["tab and trailing spaces", "Bearer\ttest-edge-token  "],
  ])("Authorization with %s is accepted", async (_name, header) => {
    net.qstashOk();
    const request = post(
      { concept: "m", urls: ["https://example.com/auth"] },
      { token: null, headers: { Authorization: header } },
    );
    expect((await call(request)).status).toBe(200);
  });

  it.each([
    ["two tokens", "Bearer test-edge-token other"],
    ["no space after the scheme", "Bearertest-edge-token"],
    ["the token twice", "Bearer test-edge-token, Bearer test-edge-token"],
  ])("Authorization with %s is a 401", async (_name, header) => {
    const request = post({ concept: "m" }, { token: null, headers: { Authorization: header } });
    await expectRejected(await call(request), 401, /bearer/);
  });

  it("400 for a body that is not UTF-8", async () => {
    const bytes = new Uint8Array([0x7b, 0x22, 0x63, 0xff, 0xfe, 0x7d]);
    await expectRejected(await call(post(bytes)), 400, /not valid UTF-8/);
  });

  it("413 for an oversized body", async () => {
    const body = JSON.stringify({ concept: "m", pad: "x".repeat(300 * 1024) });
    await expectRejected(await call(post(body)), 413, /body too large/);
  });

  it("a chunked body over the limit is refused after reading just past the limit", async () => {
    // No Content-Length, 32 MiB of JSON whitespace: it must not all be buffered first.
    const body = chunkedBody(32 * 1024 * 1024);
    const request = new Request("https://edge.example/", {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${EDGE_TOKEN}` },
      body: body.stream,
    });
    expect(request.headers.get("Content-Length")).toBeNull();
    await expectRejected(await call(request), 413, /body too large \(more than 262144 bytes\)/);
    expect(body.pulled()).toBeLessThan(1024 * 1024);
  });

  it("500 naming the variable for a broken config, before any I/O", async () => {
    const r1 = await call(post({ concept: "m", urls: ["https://a.com/"] }), { MAX_URLS: "lots" });
    await expectRejected(r1, 500, /MAX_URLS must be a whole number/);
    const r2 = await call(post({ concept: "m", urls: ["https://a.com/"] }), {
      SEEN_TTL_SECONDS: "10",
    });
    await expectRejected(r2, 500, /SEEN_TTL_SECONDS must be between 60/);
    const r3 = await call(post({ concept: "m", urls: ["https://a.com/"] }), { QSTASH_TOKEN: "" });
    await expectRejected(r3, 500, /QSTASH_TOKEN/);
    const r4 = await call(post({ concept: "m" }), { DISCOVERY_SOURCES: "[{" });
    await expectRejected(r4, 500, /DISCOVERY_SOURCES is not valid JSON/);
  });
});
