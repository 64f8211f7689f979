import {
  createExecutionContext,
  createScheduledController,
  env,
  waitOnExecutionContext,
} from "cloudflare:test";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import worker, { publishStandingConcepts } from "../src/index.js";
import wranglerToml from "../wrangler.toml?raw";
import { clearKv, interceptNetwork, testEnv } from "./helpers.js";

const WIKI = "https://en.wikipedia.org/w/api.php?action=query&list=search&format=json&srsearch=";

let net;
beforeEach(async () => {
  await clearKv();
  net = interceptNetwork();
});
afterEach(() => net.restore());

const cronEnv = () =>
  testEnv({
    DISCOVERY_SOURCES: [{ kind: "wikipedia", url: `${WIKI}{concept}` }],
    STANDING_CONCEPTS: [
      { concept: "momentum trading", symbol: "BTC-USD" },
      "mean reversion",
      { concept: "??" },
    ],
  });

describe("cron trigger", () => {
  it("wrangler.toml configures the */15 cron and standing concepts", () => {
    expect(wranglerToml).toMatch(/^\[triggers\]\s*\ncrons = \["\*\/15 \* \* \* \*"\]$/m);
    expect(env.STANDING_CONCEPTS.length).toBeGreaterThan(0);
  });

  it("publishes each standing concept; a bad one is reported, not fatal", async () => {
    net
      .route(WIKI, (c) => {
        const q = new URL(c.url).searchParams.get("srsearch");
        return Response.json({ query: { search: [{ title: `${q} overview` }] } });
      })
      .qstashOk();
    const ctx = createExecutionContext();
    await worker.scheduled(
      createScheduledController({ scheduledTime: new Date(), cron: "*/15 * * * *" }),
      cronEnv(),
      ctx,
    );
    await waitOnExecutionContext(ctx);

    const bodies = net.batchCalls().map((c) => JSON.parse(JSON.parse(c.body)[0].body));
    expect(bodies).toEqual([
      {
        concept: "momentum trading",
        urls: ["https://en.wikipedia.org/wiki/momentum_trading_overview"],
        symbol: "BTC-USD",
      },
      {
        concept: "mean reversion",
        urls: ["https://en.wikipedia.org/wiki/mean_reversion_overview"],
        symbol: null,
      },
    ]);
  });

  it("a second run republishes nothing that is still within the TTL", async () => {
    net
      .route(WIKI, () => Response.json({ query: { search: [{ title: "Same page" }] } }))
      .qstashOk();
    const first = await publishStandingConcepts(cronEnv());
    expect(first).toEqual([
      { concept: "momentum trading", ok: true, stored: 1 },
      { concept: "mean reversion", ok: true, stored: 0 },
      { concept: "??", ok: false, error: "concept must contain a letter or digit" },
    ]);
    const second = await publishStandingConcepts(cronEnv());
    expect(second.map((r) => r.stored)).toEqual([0, 0, undefined]);
    expect(net.batchCalls()).toHaveLength(1);
  });
});
