/**
 * Bad wrangler vars / secrets: each must fail loudly naming the variable (and the entry),
 * before any network or KV traffic, instead of silently matching nothing or being dropped.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { call, clearKv, interceptNetwork, kvKeys, post } from "./helpers.js";

let net;
beforeEach(async () => {
  await clearKv();
  net = interceptNetwork();
});
afterEach(() => net.restore());

const REQUEST = { concept: "momentum", urls: ["https://www.facebook.com/groups/momentum"] };

describe("config errors name the variable", () => {
  it.each([
    // A deny list entry written as a URL matched no host, so facebook.com was published.
    [
      "a deny list entry with a scheme",
      { DENY_DOMAINS: ["https://facebook.com"] },
      'DENY_DOMAINS[0] must be a domain name like "example.com" (no scheme, path or port), got "https://facebook.com"',
    ],
    [
      "a deny list entry with a path",
      { DENY_DOMAINS: ["x.com", "facebook.com/"] },
      /^configuration error: DENY_DOMAINS\[1\] must be a domain name/,
    ],
    ["an allow list entry that is a number", { ALLOW_DOMAINS: [7] }, /ALLOW_DOMAINS\[0\]/],
    [
      "an allow list that is a table",
      { ALLOW_DOMAINS: '{"a": 1}' },
      /ALLOW_DOMAINS must be a list/,
    ],
    // String([20]) is "20": a list where a number belongs was taken as the number.
    [
      "a number var given as a list",
      { MAX_URLS: [20] },
      /MAX_URLS must be a whole number, got \[20\]/,
    ],
    [
      "a URL var given as a list",
      { RECEIVER_URL: ["https://a.example/x"] },
      /RECEIVER_URL must be a URL string, got \["https/,
    ],
    [
      "a delay given as a list",
      { QSTASH_DELAY: ["30s"] },
      /QSTASH_DELAY must look like .*got \["30s"\]/,
    ],
    ["a delay given as a number", { QSTASH_DELAY: 30 }, /QSTASH_DELAY must look like .*got 30$/],
    ["a number var given as true", { MAX_URLS: true }, /MAX_URLS must be a whole number, got true/],
    // "/v2/batch" would have been appended to the query string and posted to the root.
    [
      "a QSTASH_URL with a query",
      { QSTASH_URL: "https://qstash.upstash.io/?region=eu" },
      /^configuration error: QSTASH_URL must be a plain base URL .*region=eu/,
    ],
    [
      "a QSTASH_URL with credentials",
      { QSTASH_URL: "https://user:pw@qstash.upstash.io" },
      /QSTASH_URL must be a plain base URL/,
    ],
    // fetch() refused the header, which looked like a network error on every attempt.
    [
      "a QSTASH_TOKEN with a pasted curly quote",
      { QSTASH_TOKEN: "\u201ctok\u201d" },
      /secret QSTASH_TOKEN holds spaces, control or non-ASCII characters/,
    ],
    ["a QSTASH_TOKEN with a line break inside", { QSTASH_TOKEN: "tok\nen" }, /QSTASH_TOKEN/],
    // A misspelt "match" would publish every link of the page.
    [
      "a discovery source with a misspelt key",
      { DISCOVERY_SOURCES: [{ kind: "html", url: "https://a.com/?q={concept}", macth: "^x" }] },
      "DISCOVERY_SOURCES[0] has unknown key(s) macth (allowed: kind, url, match)",
    ],
    [
      "a standing concept with urls (never published)",
      { STANDING_CONCEPTS: [{ concept: "carry", urls: ["https://a.com/"] }] },
      "STANDING_CONCEPTS[0] has unknown key(s) urls (allowed: concept, symbol)",
    ],
  ])("%s", async (_name, overrides, reason) => {
    const response = await call(post(REQUEST), overrides);
    expect(response.status).toBe(500);
    const { error } = await response.json();
    if (typeof reason === "string") expect(error).toBe(`configuration error: ${reason}`);
    else expect(error).toMatch(reason);
    expect(net.calls).toEqual([]);
    expect(await kvKeys()).toEqual([]);
  });

  it("EDGE_API_TOKEN with a space inside fails closed naming it (no header could match)", async () => {
    const request = post(REQUEST, { token: "two words" });
    const response = await call(request, { EDGE_API_TOKEN: "two words" });
    expect(response.status).toBe(500);
    expect((await response.json()).error).toMatch(/secret EDGE_API_TOKEN holds spaces/);
    expect(net.calls).toEqual([]);
  });
});

describe("domain lists match the hosts the URL parser produces", () => {
  it.each([
    ["an IDN entry (hosts are punycode)", ["bücher.de"], "https://www.bücher.de/x"],
    ["a full-width entry", ["ｆａｃｅｂｏｏｋ.com"], "https://www.facebook.com/x"],
    ["an upper-case entry with a trailing dot", ["FACEBOOK.COM."], "https://facebook.com/x"],
    ["a wildcard entry", ["*.facebook.com"], "https://m.facebook.com/x"],
  ])("%s denies its host", async (_name, deny, url) => {
    const response = await call(post({ concept: "m", urls: [url] }), { DENY_DOMAINS: deny });
    expect(response.status).toBe(400);
    expect((await response.json()).error).toMatch(
      /^urls\[0\] refused: domain .* is on the deny list/,
    );
    expect(net.calls).toEqual([]);
  });

  it("an IDN allow list entry admits its host", async () => {
    net.qstashOk();
    const response = await call(post({ concept: "m", urls: ["https://bücher.de/a"] }), {
      ALLOW_DOMAINS: ["Bücher.de"],
    });
    expect(response.status).toBe(200);
    expect((await response.json()).urls).toEqual(["https://xn--bcher-kva.de/a"]);
  });
});

describe("blank discovery sources", () => {
  it("a request without urls is told that no sources are configured, not that none were found", async () => {
    const response = await call(post({ concept: "momentum" }), { DISCOVERY_SOURCES: "" });
    expect(response.status).toBe(422);
    expect((await response.json()).error).toBe(
      "no urls given and no discovery sources are configured (DISCOVERY_SOURCES is empty); " +
        "send urls explicitly",
    );
    expect(net.calls).toEqual([]);
  });
});
