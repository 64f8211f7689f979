/**
 * Finds URLs worth crawling for a concept from the configured discovery sources. One slow or
 * broken source must not sink the request, so each is fetched with a timeout and its
 * failure is reported next to the URLs the other sources found.
 */
import { BodyTooLarge, readCappedBytes } from "./body.js";
import { normaliseUrl, refusalReason } from "./urls.js";

/**
 * Discovery keeps more candidates than it may publish, so links already published (and
 * skipped by KV) leave room for newer ones on the next run instead of starving it.
 */
const CANDIDATES_PER_SLOT = 5;

/** Largest discovery response read, in bytes (search pages are far smaller). */
const MAX_SOURCE_BYTES = 2 * 1024 * 1024;

/** Fills `{concept}` / `{symbol}` in a source URL template. */
export function expandTemplate(template, concept, symbol) {
  return template
    .replaceAll("{concept}", encodeURIComponent(concept))
    .replaceAll("{symbol}", encodeURIComponent(symbol ?? ""));
}

async function readCapped(response) {
  const declared = Number(response.headers.get("content-length") ?? "0");
  if (declared > MAX_SOURCE_BYTES) throw new Error(`response too large (${declared} bytes)`);
  try {
    return new TextDecoder().decode(await readCappedBytes(response.body, MAX_SOURCE_BYTES));
  } catch (err) {
    if (err instanceof BodyTooLarge) {
      throw new Error(`response too large (more than ${MAX_SOURCE_BYTES} bytes)`);
    }
    throw err;
  }
}

/** MediaWiki `list=search` JSON → article URLs on the same wiki host. */
function wikipediaLinks(text, sourceUrl) {
  let data;
  try {
    data = JSON.parse(text);
  } catch {
    throw new Error("response is not JSON");
  }
  const hits = data?.query?.search;
  if (!Array.isArray(hits)) throw new Error("response has no query.search list");
  const origin = new URL(sourceUrl).origin;
  const links = [];
  for (const hit of hits) {
    if (typeof hit?.title !== "string" || hit.title.trim() === "") continue;
    try {
      links.push(`${origin}/wiki/${encodeURIComponent(hit.title.trim().replaceAll(" ", "_"))}`);
    } catch {
      // A title with an unpaired surrogate ("\ud800" in the JSON) cannot be a URL: skip that
      // hit only, not the whole source.
    }
  }
  return links;
}

/** Every `<a href>` of an HTML page, resolved against the page URL, via HTMLRewriter. */
async function htmlLinks(response, pageUrl) {
  const hrefs = [];
  const rewritten = new HTMLRewriter()
    .on("a[href]", {
      element(el) {
        hrefs.push(el.getAttribute("href"));
      },
    })
    .transform(
      new Response(await readCapped(response), { headers: { "content-type": "text/html" } }),
    );
  await rewritten.arrayBuffer();
  const base = response.url || pageUrl;
  const links = [];
  for (const href of hrefs) {
    try {
      links.push(new URL(href.trim(), base).toString());
    } catch {
      // An unparsable href in someone else's page is not our error; skip it.
    }
  }
  return links;
}

async function linksFromSource(source, concept, symbol, timeoutMs) {
  const url = expandTemplate(source.url, concept, symbol);
  const response = await fetch(url, {
    headers: { Accept: source.kind === "wikipedia" ? "application/json" : "text/html" },
    signal: AbortSignal.timeout(timeoutMs),
  });
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  const links =
    source.kind === "wikipedia"
      ? wikipediaLinks(await readCapped(response), url)
      : await htmlLinks(response, url);
  return source.match ? links.filter((link) => source.match.test(link)) : links;
}

/**
 * @param {string} concept
 * @param {string|null} symbol
 * @param {import("./config.js").EdgeConfig} config
 * @returns {Promise<{urls: string[], errors: {source: string, error: string}[]}>}
 *   normalised, filtered (SSRF guard, allow/deny lists), de-duplicated, at most
 *   maxUrls × CANDIDATES_PER_SLOT (the pipeline publishes at most maxUrls unseen ones).
 */
export async function discoverUrls(concept, symbol, config) {
  const results = await Promise.allSettled(
    config.sources.map((s) => linksFromSource(s, concept, symbol, config.discoveryTimeoutMs)),
  );
  const urls = [];
  const seen = new Set();
  const errors = [];
  results.forEach((result, i) => {
    const source = expandTemplate(config.sources[i].url, concept, symbol);
    if (result.status === "rejected") {
      const err = result.reason;
      const reason = err?.name === "TimeoutError" ? "timed out" : String(err?.message ?? err);
      errors.push({ source, error: reason });
      return;
    }
    for (const link of result.value) {
      if (refusalReason(link, config) !== null) continue;
      const url = normaliseUrl(link);
      if (url.length > 2048 || seen.has(url)) continue;
      seen.add(url);
      urls.push(url);
    }
  });
  return { urls: urls.slice(0, config.maxUrls * CANDIDATES_PER_SLOT), errors };
}
