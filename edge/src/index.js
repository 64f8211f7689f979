/**
 * qpipe edge worker. `POST /` {concept, urls?, symbol?} with a bearer token → URLs are
 * discovered (unless given), filtered, de-duplicated against KV and published to QStash
 * for the qpipe receiver. `GET /health` for probes. The cron trigger re-publishes the
 * standing concepts from wrangler.toml.
 */
import { BodyTooLarge, readCappedBytes } from "./body.js";
import { loadConfig } from "./config.js";
import { ConfigError, HttpError } from "./errors.js";
import { publishConcept } from "./pipeline.js";
import { checkConcept, checkSymbol, MAX_BODY_BYTES, parseConceptRequest } from "./validate.js";

const json = (status, data, headers = {}) =>
  new Response(JSON.stringify(data), {
    status,
    headers: { "Content-Type": "application/json", ...headers },
  });

async function digest(text) {
  return crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
}

/** Constant-time bearer check (hashing first makes lengths equal). */
async function requireBearer(request, env) {
  const expected = env.EDGE_API_TOKEN;
  if (typeof expected !== "string" || expected.trim() === "") {
    throw new ConfigError(
      "secret EDGE_API_TOKEN is not set (npx wrangler secret put EDGE_API_TOKEN)",
    );
  }
  if (!/^[\x21-\x7e]+$/.test(expected.trim())) {
    // No client could ever send such a token in a Bearer header: every call would be a 401.
    throw new ConfigError(
      "secret EDGE_API_TOKEN holds spaces, control or non-ASCII characters, so no bearer " +
        "header can match it; set it again with npx wrangler secret put EDGE_API_TOKEN",
    );
  }
  const header = request.headers.get("Authorization") ?? "";
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  const unauthorized = new HttpError(401, "missing or invalid bearer token", {});
  if (!match) throw unauthorized;
  const [a, b] = await Promise.all([digest(match[1]), digest(expected.trim())]);
  if (!crypto.subtle.timingSafeEqual(a, b)) throw unauthorized;
}

async function readBody(request) {
  const type = request.headers.get("Content-Type") ?? "";
  const [essence, ...params] = type.split(";");
  if (essence.trim().toLowerCase() !== "application/json") {
    throw new HttpError(415, `Content-Type must be application/json, got "${type}"`);
  }
  // The body is decoded as UTF-8; a body declared as UTF-16 or Latin-1 would be misread.
  const charset = params
    .map((p) => p.split("="))
    .find(([key]) => key.trim().toLowerCase() === "charset")?.[1];
  if (charset !== undefined && !/^"?utf-?8"?$/i.test(charset.trim())) {
    throw new HttpError(415, `Content-Type charset must be utf-8, got "${charset.trim()}"`);
  }
  const declared = Number(request.headers.get("Content-Length") ?? "0");
  if (declared > MAX_BODY_BYTES) {
    throw new HttpError(413, `body too large (${declared} > ${MAX_BODY_BYTES} bytes)`);
  }
  let bytes;
  try {
    bytes = await readCappedBytes(request.body, MAX_BODY_BYTES);
  } catch (err) {
    if (err instanceof BodyTooLarge) {
      throw new HttpError(413, `body too large (more than ${MAX_BODY_BYTES} bytes)`);
    }
    throw new HttpError(400, `request body could not be read (${err?.message ?? err})`);
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new HttpError(400, "body is not valid UTF-8");
  }
}

async function handlePost(request, env) {
  await requireBearer(request, env);
  const config = loadConfig(env);
  const body = parseConceptRequest(await readBody(request), config);
  return json(200, await publishConcept(body, config, env.URLS));
}

async function route(request, env) {
  const { pathname } = new URL(request.url);
  if (pathname === "/health") {
    if (request.method !== "GET" && request.method !== "HEAD") {
      return json(
        405,
        { error: `method ${request.method} not allowed on /health` },
        { Allow: "GET, HEAD" },
      );
    }
    return json(200, { ok: true, service: "qpipe-edge" });
  }
  if (pathname === "/") {
    if (request.method !== "POST") {
      return json(405, { error: `method ${request.method} not allowed on /` }, { Allow: "POST" });
    }
    return handlePost(request, env);
  }
  return json(404, { error: `no route for ${pathname}` });
}

/**
 * Publishes every standing concept; one bad concept does not stop the others.
 * @returns {Promise<{concept: string, ok: boolean, stored?: number, error?: string}[]>}
 */
export async function publishStandingConcepts(env) {
  const config = loadConfig(env);
  const report = [];
  for (const item of config.standing) {
    try {
      const request = {
        concept: checkConcept(item.concept),
        urls: undefined,
        symbol: checkSymbol(item.symbol),
      };
      const outcome = await publishConcept(request, config, env.URLS);
      report.push({ concept: request.concept, ok: true, stored: outcome.stored });
    } catch (err) {
      report.push({ concept: String(item.concept), ok: false, error: err.message });
    }
  }
  console.log(JSON.stringify({ event: "standing-concepts", report }));
  return report;
}

export default {
  async fetch(request, env) {
    try {
      return await route(request, env);
    } catch (err) {
      if (err instanceof HttpError) {
        const headers =
          err.status === 401 ? { "WWW-Authenticate": 'Bearer realm="qpipe-edge"' } : {};
        if (err.status >= 500)
          console.error(JSON.stringify({ event: "error", error: err.message }));
        return json(err.status, { error: err.message, ...err.extra }, headers);
      }
      console.error(
        JSON.stringify({ event: "unexpected-error", error: String(err?.stack ?? err) }),
      );
      return json(500, { error: `internal error: ${err?.message ?? err}` });
    }
  },

  async scheduled(controller, env, ctx) {
    ctx.waitUntil(publishStandingConcepts(env));
  },
};
