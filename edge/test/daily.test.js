import { env } from "cloudflare:test";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { dailyKey } from "../src/daily.js";
import { publishStandingConcepts } from "../src/index.js";
import { call, clearKv, interceptNetwork, post, testEnv } from "./helpers.js";

let net;
beforeEach(async () => {
  await clearKv();
  net = interceptNetwork();
  vi.useFakeTimers({ toFake: ["Date"] });
  vi.setSystemTime(new Date("2026-12-06T12:00:00Z")); // a pinned UTC day
});
afterEach(() => {
  net.restore();
  vi.useRealTimers();
});

const urls = (n, tag) => Array.from({ length: n }, (_, i) => `https://example.com/${tag}${i}`);

describe("QSTASH_DAILY_LIMIT", () => {
  it("publishes up to the limit, then refuses with today's count and publishes nothing", async () => {
    net.qstashOk();
    const limits = { QSTASH_DAILY_LIMIT: "3", URLS_PER_MESSAGE: "1" };
    const first = await call(post({ concept: "momentum", urls: urls(2, "a") }), limits);
    expect(first.status).toBe(200);
    expect((await first.json()).messageIds).toHaveLength(2);
    expect(await env.URLS.get(dailyKey(Date.now()))).toBe("2");

    const over = await call(post({ concept: "carry", urls: urls(2, "b") }), limits);
    expect(over.status).toBe(429);
    expect(await over.json()).toEqual({
      error:
        "QSTASH_DAILY_LIMIT=3 reached: 2 message(s) already published on 2026-12-06 (UTC), " +
        "2 more refused; nothing was published. Send it again after 00:00 UTC or raise " +
        "QSTASH_DAILY_LIMIT",
      publishedToday: 2,
      limit: 3,
      refused: 2,
    });
    expect(net.batchCalls()).toHaveLength(1); // the refused request never reached QStash
    // nothing of the refused request is remembered as published: it can be sent again
    const again = await call(post({ concept: "carry", urls: urls(1, "b") }), limits);
    expect(again.status).toBe(200);
    expect(await env.URLS.get(dailyKey(Date.now()))).toBe("3");

    vi.setSystemTime(new Date("2026-12-07T00:00:01Z")); // a new UTC day, a new count
    const tomorrow = await call(post({ concept: "carry", urls: urls(2, "f") }), limits);
    expect(tomorrow.status).toBe(200);
    expect(await env.URLS.get(dailyKey(Date.now()))).toBe("2");
  });

  it("counts only what QStash accepted", async () => {
    net.route("https://qstash.upstash.io/v2/batch", () =>
      Response.json([{ messageId: "msg_ok" }, { error: "invalid destination" }]),
    );
    const response = await call(post({ concept: "pairs", urls: urls(2, "c") }), {
      QSTASH_DAILY_LIMIT: "10",
      URLS_PER_MESSAGE: "1",
    });
    expect(response.status).toBe(502);
    expect(await env.URLS.get(dailyKey(Date.now()))).toBe("1");
  });

  it("stops the cron's standing concepts at the limit, saying why for each", async () => {
    net.qstashOk();
    net.route(
      "https://links.example/",
      () =>
        new Response('<a href="https://example.com/standing">standing</a>', {
          headers: { "content-type": "text/html" },
        }),
    );
    await env.URLS.put(dailyKey(Date.now()), "5");
    const report = await publishStandingConcepts(
      testEnv({
        QSTASH_DAILY_LIMIT: "5",
        STANDING_CONCEPTS: [{ concept: "momentum trading" }],
        DISCOVERY_SOURCES: [{ kind: "html", url: "https://links.example/?q={concept}" }],
      }),
    );
    expect(net.batchCalls()).toHaveLength(0);
    expect(report).toEqual([
      expect.objectContaining({
        concept: "momentum trading",
        ok: false,
        error: expect.stringContaining("QSTASH_DAILY_LIMIT=5 reached: 5 message(s) already"),
      }),
    ]);
  });

  it("is off when unset or blank, and a bad value names the variable", async () => {
    net.qstashOk();
    expect((await call(post({ concept: "x", urls: urls(1, "d") }))).status).toBe(200);
    expect(await env.URLS.get(dailyKey(Date.now()))).toBeNull();
    const bad = await call(post({ concept: "y", urls: urls(1, "e") }), { QSTASH_DAILY_LIMIT: "0" });
    expect(bad.status).toBe(500);
    expect((await bad.json()).error).toBe(
      "configuration error: QSTASH_DAILY_LIMIT must be between 1 and 1000000000, got 0",
    );
  });
});
