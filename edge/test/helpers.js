/**
 * Test plumbing. QStash and the discovery sites are on the internet, which tests cannot
 * reach, so outbound `fetch` is intercepted (the pool's own fetch wrapper exists so that
 * this interception works): every request is recorded with its exact method, URL, headers
 * and body, and any request without a route fails the test instead of leaving the box.
 */
import { createExecutionContext, env, waitOnExecutionContext } from "cloudflare:test";
import { vi } from "vitest";
import worker from "../src/index.js";

export const EDGE_TOKEN = "test-edge-token";
export const QSTASH_TOKEN = "test-qstash-token";
export const RECEIVER = "https://qpipe.example.com/api/qstash";
export const QSTASH_BATCH = "https://qstash.upstash.io/v2/batch";

/** Test env: the wrangler.toml vars plus fast retries and no discovery sources. */
export function testEnv(overrides = {}) {
  return { ...env, PUBLISH_BACKOFF_MS: "1", DISCOVERY_SOURCES: [], ...overrides };
}

/** Calls the worker's fetch handler in workerd, as Cloudflare would. */
export async function call(request, overrides = {}) {
  const ctx = createExecutionContext();
  const response = await worker.fetch(request, testEnv(overrides), ctx);
  await waitOnExecutionContext(ctx);
  return response;
}

/** An authorised `POST /` with a JSON body (or raw string / bytes). */
export function post(body, { token = EDGE_TOKEN, headers = {} } = {}) {
  const h = { "Content-Type": "application/json", ...headers };
  if (token !== null) h.Authorization = `Bearer ${token}`;
  return new Request("https://edge.example/", {
    method: "POST",
    headers: h,
    body: typeof body === "string" || body instanceof Uint8Array ? body : JSON.stringify(body),
  });
}

export async function clearKv() {
  let cursor;
  do {
    const page = await env.URLS.list({ cursor });
    await Promise.all(page.keys.map((k) => env.URLS.delete(k.name)));
    cursor = page.list_complete ? undefined : page.cursor;
  } while (cursor);
}

export async function kvKeys() {
  return (await env.URLS.list()).keys;
}

/**
 * Intercepts outbound fetch. `route(matcher, responder)` adds a handler; matcher is a URL
 * prefix or a predicate on the recorded call; responder gets (call, signal) and returns a
 * Response (or throws to simulate a network error).
 */
export function interceptNetwork() {
  const calls = [];
  const routes = [];
  const spy = vi.spyOn(globalThis, "fetch").mockImplementation(async (input, init) => {
    const request = new Request(input, init);
    const call = {
      method: request.method,
      url: request.url,
      headers: Object.fromEntries(request.headers),
      body: request.body ? await request.text() : "",
      redirect: request.redirect,
    };
    calls.push(call);
    const route = routes.find((r) => r.remaining !== 0 && r.matches(call));
    if (!route) throw new Error(`test: unexpected outbound request ${call.method} ${call.url}`);
    route.remaining -= 1;
    return route.respond(call, init?.signal ?? request.signal);
  });
  const net = {
    calls,
    route(matcher, respond, { times = -1 } = {}) {
      const matches =
        typeof matcher === "function" ? matcher : (c) => c.url.startsWith(String(matcher));
      routes.push({ matches, respond, remaining: times });
      return net;
    },
    /** QStash batch answering each message with a deterministic message id. */
    qstashOk() {
      return net.route(QSTASH_BATCH, (c) =>
        Response.json(
          JSON.parse(c.body).map((_, i) => ({ messageId: `msg_${calls.length}_${i}` })),
        ),
      );
    },
    batchCalls: () => calls.filter((c) => c.url === QSTASH_BATCH),
    restore: () => spy.mockRestore(),
  };
  return net;
}

/** A responder that never answers until the request is aborted (a hung server). */
export const hang = (_call, signal) =>
  new Promise((_, reject) => {
    if (!signal) return;
    signal.addEventListener("abort", () => reject(signal.reason));
  });

/**
 * A body stream of `total` bytes of `fill` sent in 64 KiB chunks without a Content-Length
 * (what a chunked upload looks like); `pulled()` says how many bytes the reader asked for.
 */
export function chunkedBody(total, fill = 0x20) {
  const chunk = new Uint8Array(64 * 1024).fill(fill);
  let sent = 0;
  const stream = new ReadableStream({
    pull(controller) {
      if (sent >= total) return controller.close();
      const n = Math.min(chunk.byteLength, total - sent);
      sent += n;
      controller.enqueue(chunk.slice(0, n));
    },
  });
  return { stream, pulled: () => sent };
}

/**
 * The real `URLS` namespace with injected failures: KV outages and per-key write errors
 * cannot be provoked in local KV, so `get`/`put` throw where the predicate says and
 * otherwise go to the real namespace.
 */
export function failingKv({ failGet = () => false, failPut = () => false } = {}) {
  return {
    get: (key, ...rest) =>
      failGet(key) ? Promise.reject(new Error("KV GET failed: 503")) : env.URLS.get(key, ...rest),
    put: (key, ...rest) =>
      failPut(key)
        ? Promise.reject(new Error("KV PUT failed: 429 Too Many Requests"))
        : env.URLS.put(key, ...rest),
    list: (...args) => env.URLS.list(...args),
    delete: (...args) => env.URLS.delete(...args),
  };
}
