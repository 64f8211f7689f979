/**
 * Contract with the receiver: the bodies the worker publishes validate against the shared
 * JSON Schema (qpipe_dagster/schemas/concept_message.schema.json), and the fixtures in
 * test/fixtures/ are exactly what the worker publishes, so the Python side
 * (qpipe_dagster_tests/edge/test_contract.py) checks real output, not a hand-written guess.
 */
import Ajv from "ajv";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import schema from "../../qpipe_dagster/schemas/concept_message.schema.json";
import limits from "./fixtures/published_limits.json";
import withSymbol from "./fixtures/published_with_symbol.json";
import withoutSymbol from "./fixtures/published_without_symbol.json";
import { call, clearKv, interceptNetwork, post } from "./helpers.js";

const validate = new Ajv({ allErrors: true, strict: true }).compile(schema);

const CASES = [
  {
    fixture: "published_with_symbol.json",
    expected: withSymbol,
    request: {
      concept: "  momentum trading ",
      urls: [
        "https://en.wikipedia.org/wiki/Momentum_(finance)#History",
        "https://www.investopedia.com/terms/m/momentum.asp?utm_source=newsletter",
      ],
      symbol: "BTC-USD",
    },
  },
  {
    fixture: "published_without_symbol.json",
    expected: withoutSymbol,
    request: {
      concept: "mean reversion",
      urls: ["HTTPS://Example.com/mean-reversion?b=2&a=1&gclid=zz#chart"],
    },
  },
  {
    fixture: "published_limits.json",
    expected: limits,
    request: { concept: limits.concept, urls: limits.urls, symbol: "ETH/USDT" },
    env: { MAX_URLS: "100", URLS_PER_MESSAGE: "100" },
  },
];

let net;
beforeEach(async () => {
  await clearKv();
  net = interceptNetwork().qstashOk();
});
afterEach(() => net.restore());

describe("published bodies match the shared schema", () => {
  it.each(CASES)("$fixture is exactly what the worker publishes", async (c) => {
    const response = await call(post(c.request), c.env);
    expect(response.status).toBe(200);
    const batch = JSON.parse(net.batchCalls()[0].body);
    expect(batch).toHaveLength(1);
    const published = JSON.parse(batch[0].body);
    expect(published).toEqual(c.expected);
    expect(validate(published), JSON.stringify(validate.errors)).toBe(true);
  });

  it("the validator is live: bodies outside the schema fail", () => {
    const bad = [
      { urls: [] },
      { concept: "" },
      { concept: "x".repeat(201) },
      { concept: "ok", urls: ["ftp://a.com"] },
      { concept: "ok", urls: Array(101).fill("https://a.com") },
      { concept: "ok", symbol: "NOT A SYMBOL" },
    ];
    for (const body of bad) expect(validate(body), JSON.stringify(body)).toBe(false);
  });

  it("the concept limit counts characters (code points) as the schema does", async () => {
    const concept = `a${"\u{1F680}".repeat(199)}`; // 200 characters, 399 UTF-16 units
    const response = await call(post({ concept, urls: ["https://example.com/emoji"] }));
    expect(response.status).toBe(200);
    const published = JSON.parse(JSON.parse(net.batchCalls()[0].body)[0].body);
    expect(published.concept).toBe(concept);
    expect(validate(published), JSON.stringify(validate.errors)).toBe(true);
    expect(validate({ concept: `${concept}x` })).toBe(false);
  });

  it("the worker's limits are the schema's limits", async () => {
    const tooLong = { concept: "m".repeat(schema.properties.concept.maxLength + 1) };
    expect((await call(post(tooLong))).status).toBe(400);
    const tooMany = Array.from(
      { length: schema.properties.urls.maxItems + 1 },
      (_, i) => `https://a.com/${i}`,
    );
    const response = await call(post({ concept: "m", urls: tooMany }), { MAX_URLS: "100" });
    expect((await response.json()).error).toBe("too many urls (101 > 100)");
  });
});
