/**
 * Remembers published URLs in the `URLS` KV namespace so the same page is not crawled twice
 * within the TTL. KV expiry is lazy and eventually consistent, so each value also records
 * when it was stored and the age check is done here too.
 */

const LONG_KEY_LIMIT = 480; // KV keys may be at most 512 bytes.

async function sha256Hex(text) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** KV key of a normalised URL: readable when short enough, a hash otherwise. */
export async function seenKey(url) {
  const key = `url:${url}`;
  if (new TextEncoder().encode(key).length <= LONG_KEY_LIMIT) return key;
  return `urlsha256:${await sha256Hex(url)}`;
}

/** A stored record, or null when absent or unreadable (then the URL is simply republished). */
async function readRecord(kv, key) {
  const text = await kv.get(key);
  if (text === null) return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/**
 * Splits normalised URLs into those not yet published and those seen within the TTL.
 * @param {KVNamespace} kv
 * @param {string[]} urls
 * @param {number} ttlSeconds
 * @param {number} now epoch ms
 */
export async function partitionSeen(kv, urls, ttlSeconds, now) {
  const records = await Promise.all(urls.map(async (u) => readRecord(kv, await seenKey(u))));
  const fresh = [];
  const seen = [];
  urls.forEach((url, i) => {
    const storedAt = Number(records[i]?.storedAt);
    const alive = Number.isFinite(storedAt) && now - storedAt < ttlSeconds * 1000;
    (alive ? seen : fresh).push(url);
  });
  return { fresh, seen };
}

/**
 * Records published URLs with a TTL. Only called with URLs QStash accepted, so every write is
 * attempted even when some fail: the caller must learn exactly which ones were not recorded.
 * @param {KVNamespace} kv
 * @param {{url: string, messageId: string}[]} published
 * @returns {Promise<{url: string, error: string}[]>} the URLs KV failed to record, and why.
 */
export async function rememberPublished(kv, published, concept, ttlSeconds, now) {
  const results = await Promise.allSettled(
    published.map(async ({ url, messageId }) =>
      kv.put(await seenKey(url), JSON.stringify({ storedAt: now, concept, messageId }), {
        expirationTtl: ttlSeconds,
      }),
    ),
  );
  return results.flatMap((r, i) =>
    r.status === "rejected"
      ? [{ url: published[i].url, error: String(r.reason?.message ?? r.reason) }]
      : [],
  );
}
