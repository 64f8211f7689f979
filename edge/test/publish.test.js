import { env } from "cloudflare:test";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { deduplicationId } from "../src/qstash.js";
import {
  call,
  clearKv,
  failingKv,
  interceptNetwork,
  kvKeys,
  post,
  QSTASH_BATCH,
  QSTASH_TOKEN,
  RECEIVER,
} from "./helpers.js";

let net;
beforeEach(async () => {
  await clearKv();
  net = interceptNetwork();
});
afterEach(() => {
  net.restore();
  vi.useRealTimers();
});

const URLS = ["https://example.com/a", "https://example.org/b?x=1"];

describe("publishing explicit urls", () => {
  it("sends exactly one /v2/batch request with the documented headers and body", async () => {
    net.qstashOk();
    const response = await call(post({ concept: "momentum", urls: URLS, symbol: "BTC-USD" }));
    expect(response.status).toBe(200);
    const result = await response.json();
    expect(result).toEqual({
      stored: 2,
      urls: URLS,
      messageIds: ["msg_1_0"],
      skipped: [],
    });

    expect(net.calls).toHaveLength(1);
    const [req] = net.calls;
    expect(req.method).toBe("POST");
    expect(req.url).toBe(QSTASH_BATCH);
    expect(req.headers.authorization).toBe(`Bearer ${QSTASH_TOKEN}`);
    expect(req.headers["content-type"]).toBe("application/json");
    const batch = JSON.parse(req.body);
    expect(batch).toEqual([
      {
        destination: RECEIVER,
        headers: {
          "Content-Type": "application/json",
          "Upstash-Deduplication-Id": await deduplicationId("momentum", URLS, "BTC-USD"),
          "Upstash-Retries": "3",
        },
        body: JSON.stringify({ concept: "momentum", urls: URLS, symbol: "BTC-USD" }),
      },
    ]);
    expect(batch[0].headers["Upstash-Deduplication-Id"]).toMatch(/^qpipe-[0-9a-f]{40}$/);
  });

  it("adds Upstash-Delay and the configured retries when set", async () => {
    net.qstashOk();
    const response = await call(post({ concept: "carry", urls: URLS }), {
      QSTASH_DELAY: "30s",
      QSTASH_RETRIES: "5",
    });
    expect(response.status).toBe(200);
    const [message] = JSON.parse(net.calls[0].body);
    expect(message.headers["Upstash-Delay"]).toBe("30s");
    expect(message.headers["Upstash-Retries"]).toBe("5");
    expect(JSON.parse(message.body)).toEqual({ concept: "carry", urls: URLS, symbol: null });
  });

  it("splits the URL set into messages of URLS_PER_MESSAGE, one message id each", async () => {
    net.qstashOk();
    const urls = Array.from({ length: 5 }, (_, i) => `https://example.com/p${i}`);
    const response = await call(post({ concept: "pairs", urls }), { URLS_PER_MESSAGE: "2" });
    const result = await response.json();
    expect(result.messageIds).toEqual(["msg_1_0", "msg_1_1", "msg_1_2"]);
    const batch = JSON.parse(net.calls[0].body);
    expect(batch.map((m) => JSON.parse(m.body).urls)).toEqual([
      urls.slice(0, 2),
      urls.slice(2, 4),
      urls.slice(4),
    ]);
    const ids = new Set(batch.map((m) => m.headers["Upstash-Deduplication-Id"]));
    expect(ids.size).toBe(3);
  });

  it("publishes normalised URLs: host case, fragment, tracking params, query order", async () => {
    net.qstashOk();
    const response = await call(
      post({
        concept: "momentum",
        urls: [
          "HTTPS://Example.COM:443/Path?b=2&utm_source=x&a=1#section",
          "https://example.com/Path?a=1&b=2&fbclid=abc",
        ],
      }),
    );
    const result = await response.json();
    expect(result.urls).toEqual(["https://example.com/Path?a=1&b=2"]);
    expect(result.stored).toBe(1);
    expect((await kvKeys()).map((k) => k.name)).toEqual(["url:https://example.com/Path?a=1&b=2"]);
  });

  it("the deduplication id depends on the URL set, not its order", async () => {
    const a = await deduplicationId("m", ["https://a.com/1", "https://a.com/2"], null);
    const b = await deduplicationId("m", ["https://a.com/2", "https://a.com/1"], null);
    const c = await deduplicationId("m", ["https://a.com/1"], null);
    const d = await deduplicationId("other", ["https://a.com/1", "https://a.com/2"], null);
    expect(a).toBe(b);
    expect(new Set([a, c, d]).size).toBe(3);
  });
});

describe("KV dedup", () => {
  it("remembers published URLs with a TTL and does not republish them", async () => {
    net.qstashOk();
    const first = await (await call(post({ concept: "momentum", urls: URLS }))).json();
    expect(first.stored).toBe(2);

    const keys = await kvKeys();
    expect(keys.map((k) => k.name).sort()).toEqual(URLS.map((u) => `url:${u}`).sort());
    const ttl = Number(env.SEEN_TTL_SECONDS);
    for (const key of keys) {
      const remaining = key.expiration - Date.now() / 1000;
      expect(remaining).toBeGreaterThan(ttl - 60);
      expect(remaining).toBeLessThanOrEqual(ttl + 1);
    }
    const record = await env.URLS.get(`url:${URLS[0]}`, "json");
    expect(record).toMatchObject({ concept: "momentum", messageId: "msg_1_0" });

    // Same URLs again, one new one, tracking noise on an old one: only the new one goes out.
    const again = await call(
      post({ concept: "momentum", urls: [`${URLS[0]}?utm_medium=mail`, "https://example.net/c"] }),
    );
    const second = await again.json();
    expect(second).toEqual({
      stored: 1,
      urls: ["https://example.net/c"],
      messageIds: ["msg_2_0"],
      skipped: [URLS[0]],
    });
    expect(JSON.parse(JSON.parse(net.calls[1].body)[0].body).urls).toEqual([
      "https://example.net/c",
    ]);
  });

  it("an unreadable KV record counts as not seen instead of failing the request", async () => {
    net.qstashOk();
    await env.URLS.put(`url:${URLS[0]}`, "not json");
    const result = await (await call(post({ concept: "momentum", urls: URLS }))).json();
    expect(result.stored).toBe(2);
  });

  it("makes no QStash call at all when every URL was already published", async () => {
    net.qstashOk();
    await call(post({ concept: "momentum", urls: URLS }));
    const response = await call(post({ concept: "momentum", urls: URLS }));
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ stored: 0, urls: [], messageIds: [], skipped: URLS });
    expect(net.batchCalls()).toHaveLength(1);
  });

  it("republishes once the TTL has passed", async () => {
    net.qstashOk();
    const overrides = { SEEN_TTL_SECONDS: "60" };
    vi.useFakeTimers({ toFake: ["Date"] });
    vi.setSystemTime(new Date("2026-05-01T12:00:00Z"));
    await call(post({ concept: "momentum", urls: URLS }), overrides);

    vi.setSystemTime(new Date("2026-05-01T12:00:59Z"));
    const within = await (await call(post({ concept: "momentum", urls: URLS }), overrides)).json();
    expect(within.stored).toBe(0);

    vi.setSystemTime(new Date("2026-05-01T12:01:01Z"));
    const after = await (await call(post({ concept: "momentum", urls: URLS }), overrides)).json();
    expect(after.stored).toBe(2);
    expect(after.urls).toEqual(URLS);
    expect(net.batchCalls()).toHaveLength(2);
  });
});

describe("QStash failures", () => {
  it("retries 429 and 5xx with backoff, then succeeds", async () => {
    net
      .route(QSTASH_BATCH, () => new Response("slow down", { status: 429 }), { times: 1 })
      .route(QSTASH_BATCH, () => new Response("oops", { status: 503 }), { times: 1 })
      .qstashOk();
    const response = await call(post({ concept: "momentum", urls: URLS }));
    expect(response.status).toBe(200);
    expect((await response.json()).stored).toBe(2);
    expect(net.batchCalls()).toHaveLength(3);
    // Every attempt is the identical request, so QStash dedup makes retries safe.
    expect(new Set(net.calls.map((c) => c.body)).size).toBe(1);
  });

  it("gives up after PUBLISH_ATTEMPTS with a 502 naming the reason and stores nothing", async () => {
    net.route(QSTASH_BATCH, () => new Response("upstream down", { status: 500 }));
    const response = await call(post({ concept: "momentum", urls: URLS }), {
      PUBLISH_ATTEMPTS: "3",
    });
    expect(response.status).toBe(502);
    const body = await response.json();
    expect(body.error).toBe("QStash unavailable after 3 attempt(s): HTTP 500 upstream down");
    expect(net.batchCalls()).toHaveLength(3);
    expect(await kvKeys()).toEqual([]);

    // Nothing was remembered, so the next request publishes the same URLs.
    net.restore();
    net = interceptNetwork().qstashOk();
    const retry = await (await call(post({ concept: "momentum", urls: URLS }))).json();
    expect(retry.stored).toBe(2);
  });

  it("retries network errors too", async () => {
    net
      .route(
        QSTASH_BATCH,
        () => {
          throw new TypeError("connection reset");
        },
        { times: 2 },
      )
      .qstashOk();
    const response = await call(post({ concept: "momentum", urls: URLS }));
    expect(response.status).toBe(200);
    expect(net.batchCalls()).toHaveLength(3);
  });

  it("does not retry a 4xx refusal (bad token): 502 at once", async () => {
    net.route(QSTASH_BATCH, () => new Response('{"error":"invalid token"}', { status: 401 }));
    const response = await call(post({ concept: "momentum", urls: URLS }));
    expect(response.status).toBe(502);
    expect((await response.json()).error).toBe(
      'QStash rejected the batch: HTTP 401 {"error":"invalid token"}',
    );
    expect(net.batchCalls()).toHaveLength(1);
    expect(await kvKeys()).toEqual([]);
  });

  it("stores only the messages QStash accepted when it refuses some of the batch", async () => {
    net.route(QSTASH_BATCH, () =>
      Response.json([{ messageId: "msg_ok" }, { error: "destination is not allowed" }]),
    );
    const urls = ["https://example.com/1", "https://example.com/2", "https://example.com/3"];
    const response = await call(post({ concept: "momentum", urls }), { URLS_PER_MESSAGE: "2" });
    expect(response.status).toBe(502);
    const body = await response.json();
    expect(body.error).toBe("QStash refused 1 of 2 message(s): destination is not allowed");
    expect(body.stored).toBe(2);
    expect(body.messageIds).toEqual(["msg_ok"]);
    expect(body.failed).toEqual([
      { urls: ["https://example.com/3"], error: "destination is not allowed" },
    ]);
    expect((await kvKeys()).map((k) => k.name).sort()).toEqual(
      ["url:https://example.com/1", "url:https://example.com/2"].sort(),
    );
  });

  it("502 when QStash answers 200 with something that is not a batch result", async () => {
    net.route(QSTASH_BATCH, () => new Response("<html>proxy</html>", { status: 200 }));
    const response = await call(post({ concept: "momentum", urls: URLS }));
    expect(response.status).toBe(502);
    expect((await response.json()).error).toMatch(/non-JSON/);
    expect(await kvKeys()).toEqual([]);
  });
});

describe("KV failures", () => {
  it("KV unreadable: 503 naming KV, nothing published", async () => {
    net.qstashOk();
    const response = await call(post({ concept: "momentum", urls: URLS }), {
      URLS: failingKv({ failGet: () => true }),
    });
    expect(response.status).toBe(503);
    expect((await response.json()).error).toBe(
      "KV namespace URLS could not be read, so nothing was published: KV GET failed: 503",
    );
    expect(net.batchCalls()).toEqual([]);
    expect(await kvKeys()).toEqual([]);
  });

  it("KV refusing a write after QStash accepted: the reply says what was published and what was not recorded", async () => {
    net.qstashOk();
    const kv = failingKv({ failPut: (key) => key === `url:${URLS[1]}` });
    const response = await call(post({ concept: "momentum", urls: URLS }), { URLS: kv });
    expect(response.status).toBe(500);
    const body = await response.json();
    expect(body.error).toBe(
      "QStash accepted 2 URL(s) but KV namespace URLS could not record 1 of them as published " +
        "(KV PUT failed: 429 Too Many Requests); those may be published again by a later request",
    );
    expect(body).toMatchObject({ stored: 2, urls: URLS, messageIds: ["msg_1_0"] });
    expect(body.unrecorded).toEqual([
      { url: URLS[1], error: "KV PUT failed: 429 Too Many Requests" },
    ]);
    // The other write was not abandoned because one failed.
    expect((await kvKeys()).map((k) => k.name)).toEqual([`url:${URLS[0]}`]);
  });
});

describe("QStash answers that cannot be used", () => {
  it("a 200 whose body breaks off is retried (same dedup ids), not a bare 500", async () => {
    const broken = () =>
      new Response(
        new ReadableStream({
          start(controller) {
            controller.error(new Error("connection reset while reading"));
          },
        }),
        { status: 200 },
      );
    net.route(QSTASH_BATCH, broken, { times: 1 }).qstashOk();
    const response = await call(post({ concept: "momentum", urls: URLS }));
    expect(response.status).toBe(200);
    expect((await response.json()).stored).toBe(2);
    expect(net.batchCalls()).toHaveLength(2);
    expect(new Set(net.calls.map((c) => c.body)).size).toBe(1);
  });

  it("a 200 whose body always breaks off ends in a 502 naming QStash", async () => {
    net.route(QSTASH_BATCH, () => {
      return new Response(
        new ReadableStream({
          start(controller) {
            controller.error(new Error("connection reset while reading"));
          },
        }),
      );
    });
    const response = await call(post({ concept: "momentum", urls: URLS }), {
      PUBLISH_ATTEMPTS: "2",
    });
    expect(response.status).toBe(502);
    expect((await response.json()).error).toMatch(
      /^QStash unavailable after 2 attempt\(s\): HTTP 200 but reading its answer failed: /,
    );
    expect(await kvKeys()).toEqual([]);
  });

  it.each([
    ["a JSON object", { messageId: "m" }, "a JSON object, not a list"],
    ["too few results", [], "0 result(s) for 1 message(s)"],
    ["too many results", [{ messageId: "a" }, { messageId: "b" }], "2 result(s) for 1 message(s)"],
  ])("%s: 502 that says what QStash answered, nothing recorded", async (_n, answer, says) => {
    net.route(QSTASH_BATCH, () => Response.json(answer));
    const response = await call(post({ concept: "momentum", urls: URLS }));
    expect(response.status).toBe(502);
    expect((await response.json()).error).toContain(says);
    expect(await kvKeys()).toEqual([]);
  });

  it("a redirect is not followed (it would drop the token): 502 naming the target", async () => {
    net.route(QSTASH_BATCH, () => Response.redirect("https://qstash-eu.upstash.io/v2/batch", 308));
    const response = await call(post({ concept: "momentum", urls: URLS }));
    expect(net.batchCalls()[0].redirect).toBe("manual");
    expect(response.status).toBe(502);
    expect((await response.json()).error).toBe(
      "QStash rejected the batch: HTTP 308 redirect to https://qstash-eu.upstash.io/v2/batch; " +
        "QSTASH_URL must point at QStash itself (https)",
    );
    expect(net.batchCalls()).toHaveLength(1);
    expect(await kvKeys()).toEqual([]);
  });

  it("a non-JSON 200 is quoted in the error", async () => {
    net.route(QSTASH_BATCH, () => new Response("<html>captive portal</html>"));
    const response = await call(post({ concept: "momentum", urls: URLS }));
    expect((await response.json()).error).toBe(
      "QStash answered the batch with non-JSON: <html>captive portal</html>",
    );
  });
});
