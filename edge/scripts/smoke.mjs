#!/usr/bin/env node
/**
 * End-to-end smoke test of the real thing: `wrangler dev` (workerd + local KV) talking over
 * loopback HTTP to a stand-in QStash and a stand-in discovery site started here.
 * Usage: `npm run smoke` (from edge/). Exits non-zero on the first failed check.
 */
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";

const TOKEN = "smoke-edge-token";
const received = [];

function listen(handler) {
  const server = createServer(handler);
  server.listen(0, "127.0.0.1");
  return once(server, "listening").then(() => server);
}

const qstash = await listen((req, res) => {
  let body = "";
  req.on("data", (c) => (body += c));
  req.on("end", () => {
    received.push({ path: req.url, auth: req.headers.authorization, batch: JSON.parse(body) });
    const ids = JSON.parse(body).map((_, i) => ({ messageId: `msg_${received.length}_${i}` }));
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(ids));
  });
});
const site = await listen((req, res) => {
  const q = new URL(req.url, "http://x").searchParams.get("q").replaceAll(" ", "-");
  res.writeHead(200, { "content-type": "text/html" });
  res.end(`<a href="https://example.com/terms/${q}?utm_source=x">m</a>
           <a href="http://169.254.169.254/terms/">metadata</a>`);
});

const port = 18000 + Math.floor(Math.random() * 1000);
const state = mkdtempSync(join(tmpdir(), "qpipe-edge-smoke-"));
const sourceUrl = `http://127.0.0.1:${site.address().port}/search?q={concept}`;
const vars = {
  EDGE_API_TOKEN: TOKEN,
  QSTASH_TOKEN: "smoke-qstash-token",
  QSTASH_URL: `http://127.0.0.1:${qstash.address().port}`,
  DISCOVERY_SOURCES: JSON.stringify([{ kind: "html", url: sourceUrl, match: "/terms/" }]),
  STANDING_CONCEPTS: JSON.stringify([{ concept: "cron concept" }]),
};
const args = ["wrangler", "dev", "--port", String(port), "--ip", "127.0.0.1", "--test-scheduled"];
for (const [k, v] of Object.entries(vars)) args.push("--var", `${k}:${v}`);
args.push("--persist-to", state);
const dev = spawn("npx", args, {
  env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "1" },
  stdio: ["ignore", "pipe", "pipe"],
  detached: true,
});
let log = "";
dev.stdout.on("data", (d) => (log += d));
dev.stderr.on("data", (d) => (log += d));

const base = `http://127.0.0.1:${port}`;
const post = (body, token = TOKEN) =>
  fetch(`${base}/`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
  });

function check(condition, what, detail) {
  if (!condition) throw new Error(`smoke check failed: ${what}\n${JSON.stringify(detail)}`);
  console.log(`ok - ${what}`);
}

let failed = false;
try {
  const deadline = Date.now() + 60_000;
  let health;
  while (!health) {
    health = await fetch(`${base}/health`).catch(() => undefined);
    if (!health && Date.now() > deadline) throw new Error(`wrangler dev did not start:\n${log}`);
    if (!health) await new Promise((r) => setTimeout(r, 300));
  }
  check(health.status === 200, "GET /health", await health.text());

  const first = await (await post({ concept: "momentum", symbol: "BTC-USD" })).json();
  check(
    first.stored === 1 && first.urls[0] === "https://example.com/terms/momentum",
    "discovery → filtered, normalised URL published",
    first,
  );
  const msg = received[0]?.batch?.[0];
  check(
    received[0]?.path === "/v2/batch" &&
      received[0].auth === "Bearer smoke-qstash-token" &&
      JSON.parse(msg.body).symbol === "BTC-USD",
    "QStash got one /v2/batch call with the bearer token and the body",
    received[0],
  );
  const again = await (await post({ concept: "momentum" })).json();
  check(again.stored === 0 && received.length === 1, "second call is deduplicated by KV", again);
  const denied = await post({ concept: "momentum" }, "wrong");
  check(denied.status === 401, "wrong token → 401", denied.status);
  const bad = await post({ concept: "x", urls: ["http://127.0.0.1/"] });
  check(bad.status === 400, "SSRF URL → 400", await bad.text());

  const cron = await fetch(`${base}/__scheduled?cron=*/15+*+*+*+*`);
  check(cron.status === 200, "cron trigger runs", await cron.text());
  for (let i = 0; i < 50 && received.length < 2; i++) await new Promise((r) => setTimeout(r, 100));
  const cronBody = received[1] && JSON.parse(received[1].batch[0].body);
  check(
    cronBody?.concept === "cron concept" &&
      cronBody.urls[0] === "https://example.com/terms/cron-concept",
    "cron published the standing concept",
    received,
  );
} catch (err) {
  failed = true;
  console.error(err.message);
} finally {
  process.kill(-dev.pid, "SIGINT");
  await once(dev, "exit");
  qstash.close();
  site.close();
  rmSync(state, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
