/**
 * Reads the worker's vars/secrets into one validated object. Misconfiguration fails loudly
 * with the variable's name instead of silently publishing to the wrong place.
 */
import { ConfigError } from "./errors.js";

const DEFAULTS = {
  QSTASH_URL: "https://qstash.upstash.io",
  QSTASH_RETRIES: "3",
  QSTASH_DELAY: "",
  PUBLISH_ATTEMPTS: "4",
  PUBLISH_BACKOFF_MS: "500",
  URLS_PER_MESSAGE: "10",
  MAX_URLS: "20",
  SEEN_TTL_SECONDS: "604800",
  DISCOVERY_TIMEOUT_MS: "5000",
};

/** KV refuses expirationTtl below 60 s. */
const KV_MIN_TTL_SECONDS = 60;
/** The receiver schema caps `urls` at 100 per message. */
const SCHEMA_MAX_URLS = 100;
const DELAY_PATTERN = /^\d+[smhd]$/;

/** What a bearer token may hold: visible ASCII (a header carries bytes, not Unicode). */
const TOKEN_PATTERN = /^[\x21-\x7e]+$/;

function intVar(env, name, min, max) {
  const raw = env[name] ?? DEFAULTS[name];
  // String([20]) is "20": only a string or a number may stand for a number.
  const text = typeof raw === "string" || typeof raw === "number" ? String(raw).trim() : "";
  if (!/^\d+$/.test(text)) {
    throw new ConfigError(`${name} must be a whole number, got ${JSON.stringify(raw)}`);
  }
  const value = Number(text);
  if (value < min || value > max) {
    throw new ConfigError(`${name} must be between ${min} and ${max}, got ${value}`);
  }
  return value;
}

function httpsUrlVar(env, name, { required, base = false }) {
  const raw = env[name] ?? DEFAULTS[name];
  if (raw === undefined || raw === "") {
    if (required) throw new ConfigError(`${name} is not set`);
    return undefined;
  }
  if (typeof raw !== "string") {
    // String(["https://a"]) is "https://a": a list or table here is a mistake, not a URL.
    throw new ConfigError(`${name} must be a URL string, got ${JSON.stringify(raw)}`);
  }
  let url;
  try {
    url = new URL(String(raw));
  } catch {
    throw new ConfigError(`${name} is not a valid URL: ${JSON.stringify(raw)}`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw new ConfigError(`${name} must be an http(s) URL, got ${JSON.stringify(raw)}`);
  }
  // A base URL gets "/v2/batch" appended: a query, fragment or user:password would swallow it.
  if (base && (url.search || url.hash || url.username || url.password)) {
    throw new ConfigError(
      `${name} must be a plain base URL like "https://qstash.upstash.io" ` +
        `(no query, fragment or credentials), got ${JSON.stringify(raw)}`,
    );
  }
  return url.toString().replace(/\/$/, "");
}

/** A var that is a JSON value in wrangler.toml, or a JSON string when set in the dashboard. */
function jsonVar(env, name, fallback) {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  if (typeof raw !== "string") return raw;
  try {
    return JSON.parse(raw);
  } catch (err) {
    throw new ConfigError(`${name} is not valid JSON (${err.message})`);
  }
}

/**
 * Entries are compared with URL hostnames, which the URL parser lower-cases and turns into
 * punycode, so each entry goes through the same parser; "https://x.com" or "x.com/path" would
 * never match any host, and a deny list that silently matches nothing is refused instead.
 */
function domainListVar(env, name) {
  const list = jsonVar(env, name, []);
  if (!Array.isArray(list)) {
    throw new ConfigError(`${name} must be a list of domain names, got ${JSON.stringify(list)}`);
  }
  return list.map((entry, i) => {
    const where = `${name}[${i}]`;
    const text = typeof entry === "string" ? entry.trim().replace(/^\*?\./, "") : "";
    let host = "";
    if (text !== "" && !/[/:@?#\\\s]/.test(text)) {
      try {
        host = new URL(`http://${text}/`).hostname.replace(/\.$/, "");
      } catch {
        host = "";
      }
    }
    if (host === "") {
      throw new ConfigError(
        `${where} must be a domain name like "example.com" (no scheme, path or port), ` +
          `got ${JSON.stringify(entry)}`,
      );
    }
    return host;
  });
}

function refuseUnknownKeys(item, allowed, where) {
  const unknown = Object.keys(item).filter((k) => !allowed.includes(k));
  if (unknown.length) {
    throw new ConfigError(
      `${where} has unknown key(s) ${unknown.join(", ")} (allowed: ${allowed.join(", ")})`,
    );
  }
}

function sourcesVar(env) {
  const list = jsonVar(env, "DISCOVERY_SOURCES", []);
  if (!Array.isArray(list)) throw new ConfigError("DISCOVERY_SOURCES must be a list");
  return list.map((src, i) => {
    const where = `DISCOVERY_SOURCES[${i}]`;
    if (typeof src !== "object" || src === null || Array.isArray(src)) {
      throw new ConfigError(`${where} is not a table`);
    }
    // A misspelt "match" would publish every link of the page instead of the matching ones.
    refuseUnknownKeys(src, ["kind", "url", "match"], where);
    if (src.kind !== "wikipedia" && src.kind !== "html") {
      throw new ConfigError(`${where}.kind must be "wikipedia" or "html", got ${src.kind}`);
    }
    if (typeof src.url !== "string" || !/^https?:\/\//.test(src.url)) {
      throw new ConfigError(`${where}.url must be an http(s) URL template`);
    }
    let match;
    if (src.match !== undefined) {
      try {
        match = new RegExp(src.match);
      } catch (err) {
        throw new ConfigError(`${where}.match is not a valid regex (${err.message})`);
      }
    }
    return { kind: src.kind, url: src.url, match };
  });
}

function standingVar(env) {
  const list = jsonVar(env, "STANDING_CONCEPTS", []);
  if (!Array.isArray(list)) throw new ConfigError("STANDING_CONCEPTS must be a list");
  return list.map((item, i) => {
    if (typeof item === "string") return { concept: item };
    if (typeof item !== "object" || item === null || typeof item.concept !== "string") {
      throw new ConfigError(`STANDING_CONCEPTS[${i}] needs a "concept" string`);
    }
    // "urls" or a misspelt "symbol" would otherwise be dropped without a word.
    refuseUnknownKeys(item, ["concept", "symbol"], `STANDING_CONCEPTS[${i}]`);
    return item;
  });
}

/** An optional whole-number var: unset or "" is undefined. */
function optionalIntVar(env, name, min, max) {
  const raw = env[name];
  if (raw === undefined || raw === null || (typeof raw === "string" && raw.trim() === "")) {
    return undefined;
  }
  return intVar({ [name]: raw }, name, min, max);
}

/**
 * @typedef {object} EdgeConfig
 * @property {string} receiverUrl  @property {string} qstashUrl  @property {string} qstashToken
 * @property {number} qstashRetries  @property {string|undefined} qstashDelay
 * @property {number} publishAttempts  @property {number} publishBackoffMs
 * @property {number} urlsPerMessage  @property {number} maxUrls  @property {number} seenTtlSeconds
 * @property {number} discoveryTimeoutMs  @property {string[]} allowDomains
 * @property {string[]} denyDomains  @property {{kind:string,url:string,match?:RegExp}[]} sources
 * @property {{concept:string,symbol?:string|null}[]} standing
 * @property {number|undefined} dailyLimit  QSTASH_DAILY_LIMIT (messages per UTC day)
 */

/** @returns {EdgeConfig} */
export function loadConfig(env) {
  const rawDelay = env.QSTASH_DELAY ?? DEFAULTS.QSTASH_DELAY;
  const delay = typeof rawDelay === "string" ? rawDelay.trim() : null;
  if (delay === null || (delay !== "" && !DELAY_PATTERN.test(delay))) {
    throw new ConfigError(
      `QSTASH_DELAY must look like "30s", "5m", "2h" or "1d", got ${JSON.stringify(rawDelay)}`,
    );
  }
  const qstashToken = env.QSTASH_TOKEN;
  if (typeof qstashToken !== "string" || qstashToken.trim() === "") {
    throw new ConfigError("secret QSTASH_TOKEN is not set (npx wrangler secret put QSTASH_TOKEN)");
  }
  if (!TOKEN_PATTERN.test(qstashToken.trim())) {
    // fetch() would refuse the header and every attempt would look like a network error.
    throw new ConfigError(
      "secret QSTASH_TOKEN holds spaces, control or non-ASCII characters (a pasted quote?); " +
        "set it again with npx wrangler secret put QSTASH_TOKEN",
    );
  }
  if (!env.URLS || typeof env.URLS.get !== "function") {
    throw new ConfigError("KV namespace binding URLS is missing (see wrangler.toml)");
  }
  return {
    receiverUrl: httpsUrlVar(env, "RECEIVER_URL", { required: true }),
    qstashUrl: httpsUrlVar(env, "QSTASH_URL", { required: true, base: true }),
    qstashToken: qstashToken.trim(),
    qstashRetries: intVar(env, "QSTASH_RETRIES", 0, 100),
    qstashDelay: delay === "" ? undefined : delay,
    publishAttempts: intVar(env, "PUBLISH_ATTEMPTS", 1, 10),
    publishBackoffMs: intVar(env, "PUBLISH_BACKOFF_MS", 0, 30_000),
    urlsPerMessage: intVar(env, "URLS_PER_MESSAGE", 1, SCHEMA_MAX_URLS),
    maxUrls: intVar(env, "MAX_URLS", 1, SCHEMA_MAX_URLS),
    seenTtlSeconds: intVar(env, "SEEN_TTL_SECONDS", KV_MIN_TTL_SECONDS, 365 * 24 * 3600),
    discoveryTimeoutMs: intVar(env, "DISCOVERY_TIMEOUT_MS", 100, 30_000),
    allowDomains: domainListVar(env, "ALLOW_DOMAINS"),
    denyDomains: domainListVar(env, "DENY_DOMAINS"),
    sources: sourcesVar(env),
    standing: standingVar(env),
    dailyLimit: optionalIntVar(env, "QSTASH_DAILY_LIMIT", 1, 1_000_000_000),
  };
}
