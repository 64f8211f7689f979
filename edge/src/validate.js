/**
 * Validates the POST body. Limits come from the shared JSON Schema
 * (qpipe_dagster/schemas/concept_message.schema.json) so the worker can never accept
 * something the receiver would reject.
 */
import schema from "../../qpipe_dagster/schemas/concept_message.schema.json";
import { HttpError } from "./errors.js";
import { normaliseUrl, refusalReason } from "./urls.js";

const conceptRule = schema.properties.concept;
const urlsRule = schema.properties.urls;
const symbolRule = schema.properties.symbol;
const CONCEPT_PATTERN = new RegExp(conceptRule.pattern);
const URL_PATTERN = new RegExp(urlsRule.items.pattern);
const SYMBOL_PATTERN = new RegExp(symbolRule.pattern);
const CONTROL_CHARS = new RegExp(conceptRule.not.pattern);
const KNOWN_FIELDS = new Set(["concept", "urls", "symbol"]);
// With the u flag a surrogate pair is one code point, so this matches only unpaired halves
// (what a lone "\ud800" JSON escape decodes to): not text, and the receiver refuses it.
const LONE_SURROGATE = /[\uD800-\uDFFF]/u;

/** Largest request body read, in bytes: 100 max-length URLs plus slack. */
export const MAX_BODY_BYTES = 256 * 1024;

const bad = (reason) => new HttpError(400, reason);

/**
 * @typedef {object} ConceptRequest
 * @property {string} concept  trimmed
 * @property {string[]|undefined} urls  normalised, de-duplicated, in request order
 * @property {string|null} symbol
 */

/**
 * Parses and validates a request body.
 * @param {string} text raw body
 * @param {import("./config.js").EdgeConfig} config
 * @returns {ConceptRequest}
 * @throws {HttpError} 400 naming the offending field.
 */
export function parseConceptRequest(text, config) {
  let body;
  try {
    body = JSON.parse(text);
  } catch (err) {
    throw bad(`body is not valid JSON (${err.message})`);
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw bad('body must be a JSON object like {"concept": "..."}');
  }
  const names = new Set();
  const duplicate = topLevelKeys(text).find((key) => names.has(key) || !names.add(key));
  if (duplicate !== undefined) {
    // JSON.parse would keep the last one silently; the sender meant one of them.
    throw bad(`field ${JSON.stringify(duplicate)} appears more than once in the body`);
  }
  const unknown = Object.keys(body).filter((k) => !KNOWN_FIELDS.has(k));
  if (unknown.length) {
    const shown = unknown.slice(0, 5).join(", ") + (unknown.length > 5 ? ", …" : "");
    throw bad(`unknown field(s): ${shown} (allowed: concept, urls, symbol)`);
  }
  return {
    concept: checkConcept(body.concept),
    urls: body.urls === undefined ? undefined : checkUrls(body.urls, config),
    symbol: checkSymbol(body.symbol),
  };
}

/**
 * The keys of a JSON text's top-level object in order, repeats included. Only called on text
 * JSON.parse accepted as an object, so strings and nesting are all that need tracking.
 * @param {string} text
 * @returns {string[]}
 */
function topLevelKeys(text) {
  const keys = [];
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let end = i + 1;
      while (text[end] !== '"') end += text[end] === "\\" ? 2 : 1;
      if (depth === 1 && expectKey) keys.push(JSON.parse(text.slice(i, end + 1)));
      expectKey = false;
      i = end;
    } else if (c === "{" || c === "[") {
      depth += 1;
      expectKey = depth === 1;
    } else if (c === "}" || c === "]") {
      depth -= 1;
    } else if (c === "," && depth === 1) {
      expectKey = true;
    }
  }
  return keys;
}

/** @returns {string} the trimmed concept */
export function checkConcept(value) {
  if (value === undefined || value === null) throw bad("concept is required");
  if (typeof value !== "string") throw bad("concept must be a string");
  const concept = value.trim();
  // JSON Schema (and the receiver's Python len) count code points: an emoji is one, not two.
  const length = [...concept].length;
  if (length < conceptRule.minLength) throw bad("concept is empty");
  if (length > conceptRule.maxLength) {
    throw bad(`concept is too long (${length} > ${conceptRule.maxLength} characters)`);
  }
  if (!CONCEPT_PATTERN.test(concept)) {
    // "Доходность" has letters, just none the receiver's ASCII partition key can keep.
    throw bad(
      /[^\x00-\x7f]/.test(concept)
        ? "concept must contain a letter or digit from A-Z, a-z or 0-9 (the receiver makes an ASCII key from it)"
        : "concept must contain a letter or digit",
    );
  }
  // The schema refuses control characters (slugs and logs must stay printable).
  if (CONTROL_CHARS.test(concept)) throw bad("concept contains control characters");
  if (LONE_SURROGATE.test(concept)) {
    throw bad("concept contains an unpaired UTF-16 surrogate (not valid Unicode text)");
  }
  return concept;
}

/** @returns {string|null} */
export function checkSymbol(value) {
  if (value === undefined || value === null) return null;
  if (typeof value !== "string" || !SYMBOL_PATTERN.test(value.trim())) {
    throw bad(`symbol ${JSON.stringify(value)} is not a ticker like BTC-USD or AAPL`);
  }
  return value.trim();
}

function checkUrls(value, config) {
  if (!Array.isArray(value)) throw bad("urls must be a list of strings");
  const limit = Math.min(config.maxUrls, urlsRule.maxItems);
  if (value.length > limit) throw bad(`too many urls (${value.length} > ${limit})`);
  const seen = new Set();
  const out = [];
  value.forEach((raw, i) => {
    if (typeof raw !== "string") throw bad(`urls[${i}] must be a string`);
    const text = raw.trim();
    if (text.length > urlsRule.items.maxLength) {
      throw bad(`urls[${i}] is too long (${text.length} > ${urlsRule.items.maxLength})`);
    }
    // The URL parser would silently drop tabs and line breaks and turn a lone surrogate into
    // U+FFFD, publishing a different URL than the one given; the receiver refuses both.
    if (CONTROL_CHARS.test(text)) {
      throw bad(
        `urls[${i}] contains control characters (tab, line break, NUL…): ${JSON.stringify(text)}`,
      );
    }
    if (LONE_SURROGATE.test(text)) {
      throw bad(`urls[${i}] contains an unpaired UTF-16 surrogate (not valid Unicode text)`);
    }
    const reason = refusalReason(text, config);
    if (reason) throw bad(`urls[${i}] refused: ${reason}`);
    const url = normaliseUrl(text);
    if (!URL_PATTERN.test(url)) throw bad(`urls[${i}] is not an http(s) URL: ${text}`);
    if (url.length > urlsRule.items.maxLength) throw bad(`urls[${i}] is too long once normalised`);
    if (!seen.has(url)) {
      seen.add(url);
      out.push(url);
    }
  });
  if (!out.length) throw bad("urls is empty; leave it out to discover URLs instead");
  return out;
}
