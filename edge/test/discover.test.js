import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { call, chunkedBody, clearKv, hang, interceptNetwork, kvKeys, post } from "./helpers.js";

const WIKI = "https://en.wikipedia.org/w/api.php?action=query&list=search&format=json&srsearch=";
const SITE = "https://www.investopedia.com/search?q=";
const SOURCES = [
  { kind: "wikipedia", url: `${WIKI}{concept}` },
  {
    kind: "html",
    url: `${SITE}{concept}&sym={symbol}`,
    match: "^https://www\\.investopedia\\.com/terms/",
  },
];

const WIKI_JSON = {
  query: {
    search: [{ title: "Momentum (finance)" }, { title: "Momentum investing" }, { title: "" }],
  },
};

const SEARCH_PAGE = `<!doctype html><html><body>
  <a href="/terms/m/momentum.asp#top">Momentum</a>
  <a href="https://www.investopedia.com/terms/r/rsi.asp?utm_source=search">RSI</a>
  <a href="/about-us">About</a>
  <a href="mailto:editors@investopedia.com">mail</a>
  <a href="javascript:void(0)">js</a>
  <a href="http://127.0.0.1/terms/admin">loopback</a>
  <a href="http://169.254.169.254/latest/meta-data/">metadata</a>
  <a href="http://[::1]/terms/x">v6 loopback</a>
  <a href="file:///etc/passwd">file</a>
  <a href="https://www.facebook.com/terms/share">fb</a>
  <a href="/terms/m/momentum.asp">dup</a>
</body></html>`;

let net;
beforeEach(async () => {
  await clearKv();
  net = interceptNetwork();
});
afterEach(() => net.restore());

const sources = (extra = {}) => ({ DISCOVERY_SOURCES: SOURCES, ...extra });
const publishedUrls = () => JSON.parse(JSON.parse(net.batchCalls()[0].body)[0].body).urls;

describe("discovery", () => {
  it("queries every source with the encoded concept and publishes the filtered links", async () => {
    net
      .route(WIKI, () => Response.json(WIKI_JSON))
      .route(SITE, () => new Response(SEARCH_PAGE, { headers: { "content-type": "text/html" } }))
      .qstashOk();
    const response = await call(
      post({ concept: "momentum & carry", symbol: "BTC-USD" }),
      sources(),
    );
    expect(response.status).toBe(200);
    const result = await response.json();

    expect(net.calls.map((c) => c.url)).toEqual([
      `${WIKI}momentum%20%26%20carry`,
      `${SITE}momentum%20%26%20carry&sym=BTC-USD`,
      "https://qstash.upstash.io/v2/batch",
    ]);
    const expected = [
      "https://en.wikipedia.org/wiki/Momentum_(finance)",
      "https://en.wikipedia.org/wiki/Momentum_investing",
      "https://www.investopedia.com/terms/m/momentum.asp",
      "https://www.investopedia.com/terms/r/rsi.asp",
    ];
    expect(result.urls).toEqual(expected);
    expect(publishedUrls()).toEqual(expected);
    expect(result.discoveryErrors).toBeUndefined();
  });

  it("caps discovered URLs at MAX_URLS", async () => {
    const many = { query: { search: Array.from({ length: 30 }, (_, i) => ({ title: `T${i}` })) } };
    net.route(WIKI, () => Response.json(many)).qstashOk();
    const response = await call(post({ concept: "momentum" }), {
      DISCOVERY_SOURCES: [SOURCES[0]],
      MAX_URLS: "7",
    });
    expect((await response.json()).stored).toBe(7);
    expect(publishedUrls()).toEqual(
      Array.from({ length: 7 }, (_, i) => `https://en.wikipedia.org/wiki/T${i}`),
    );

    // The next run skips the 7 already published and takes the next 7 links.
    const next = await (
      await call(post({ concept: "momentum" }), { DISCOVERY_SOURCES: [SOURCES[0]], MAX_URLS: "7" })
    ).json();
    expect(next.skipped).toHaveLength(7);
    expect(next.urls).toEqual(
      Array.from({ length: 7 }, (_, i) => `https://en.wikipedia.org/wiki/T${i + 7}`),
    );
  });

  it("applies the allow list to discovered links", async () => {
    net
      .route(WIKI, () => Response.json(WIKI_JSON))
      .route(SITE, () => new Response(SEARCH_PAGE))
      .qstashOk();
    const response = await call(
      post({ concept: "momentum" }),
      sources({ ALLOW_DOMAINS: ["investopedia.com"] }),
    );
    expect((await response.json()).urls).toEqual([
      "https://www.investopedia.com/terms/m/momentum.asp",
      "https://www.investopedia.com/terms/r/rsi.asp",
    ]);
  });

  it("a failing source is reported while the others still publish", async () => {
    net
      .route(WIKI, () => new Response("busy", { status: 503 }))
      .route(SITE, () => new Response(SEARCH_PAGE))
      .qstashOk();
    const result = await (await call(post({ concept: "momentum" }), sources())).json();
    expect(result.stored).toBe(2);
    expect(result.discoveryErrors).toEqual([{ source: `${WIKI}momentum`, error: "HTTP 503" }]);
  });

  it("a hung source times out after DISCOVERY_TIMEOUT_MS", async () => {
    net
      .route(WIKI, hang)
      .route(SITE, () => new Response(SEARCH_PAGE))
      .qstashOk();
    const started = Date.now();
    const result = await (
      await call(post({ concept: "momentum" }), sources({ DISCOVERY_TIMEOUT_MS: "200" }))
    ).json();
    expect(Date.now() - started).toBeLessThan(5000);
    expect(result.discoveryErrors).toEqual([{ source: `${WIKI}momentum`, error: "timed out" }]);
    expect(result.stored).toBe(2);
  });

  it("malformed source answers are reported, not crashed on", async () => {
    net
      .route(WIKI, () => new Response("<html>not json</html>"))
      .route(SITE, () => Response.json({ unexpected: true }));
    const response = await call(
      post({ concept: "momentum" }),
      sources({ DISCOVERY_SOURCES: [SOURCES[0], { kind: "wikipedia", url: `${SITE}{concept}` }] }),
    );
    expect(response.status).toBe(422);
    const body = await response.json();
    expect(body.error).toBe('no crawlable URLs discovered for concept "momentum"');
    expect(body.discoveryErrors.map((e) => e.error)).toEqual([
      "response is not JSON",
      "response has no query.search list",
    ]);
    expect(net.batchCalls()).toEqual([]);
    expect(await kvKeys()).toEqual([]);
  });

  it("a huge chunked source answer is cut off at 2 MiB, not buffered whole", async () => {
    const huge = chunkedBody(64 * 1024 * 1024);
    net
      .route(WIKI, () => new Response(huge.stream, { headers: { "content-type": "text/html" } }))
      .route(SITE, () => new Response(SEARCH_PAGE))
      .qstashOk();
    const result = await (await call(post({ concept: "momentum" }), sources())).json();
    expect(result.discoveryErrors).toEqual([
      { source: `${WIKI}momentum`, error: "response too large (more than 2097152 bytes)" },
    ]);
    expect(result.stored).toBe(2);
    expect(huge.pulled()).toBeLessThan(4 * 1024 * 1024);
  });

  it("a search hit whose title is not text (lone surrogate) is skipped, not the source", async () => {
    const answer =
      '{"query": {"search": [{"title": "Bad \\ud800 title"}, {"title": "Momentum investing"}]}}';
    net.route(WIKI, () => new Response(answer)).qstashOk();
    const response = await call(post({ concept: "momentum" }), {
      DISCOVERY_SOURCES: [SOURCES[0]],
    });
    expect(response.status).toBe(200);
    const result = await response.json();
    expect(result.urls).toEqual(["https://en.wikipedia.org/wiki/Momentum_investing"]);
    expect(result.discoveryErrors).toBeUndefined();
  });

  it("422 without any QStash call when no source is configured", async () => {
    const response = await call(post({ concept: "momentum" }));
    expect(response.status).toBe(422);
    expect(net.calls).toEqual([]);
  });

  it("explicit urls skip discovery entirely", async () => {
    net.qstashOk();
    await call(post({ concept: "momentum", urls: ["https://example.com/x"] }), sources());
    expect(net.calls.map((c) => c.url)).toEqual(["https://qstash.upstash.io/v2/batch"]);
  });
});
