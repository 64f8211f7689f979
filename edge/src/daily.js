/**
 * QSTASH_DAILY_LIMIT at the edge: QStash bills (and its free plan stops) per message per UTC
 * day, so the worker counts the messages it published today in the URLS namespace and refuses,
 * before publishing anything, a request that would pass the limit. A refusal publishes and
 * records nothing, so the same concept can be sent again tomorrow: nothing accepted is lost.
 *
 * KV has no atomic increment: two requests at the same instant can both pass the check, so the
 * count may overshoot by one request's messages. The Python publisher's count is exact (SQLite
 * transaction); this one keeps a runaway cron or client from spending the whole plan.
 */
import { HttpError } from "./errors.js";

const KEY_PREFIX = "qstash-daily:"; // never a URL key: those start with a scheme
const KEEP_SECONDS = 2 * 24 * 3600;

/** The UTC day of `now` (ms) as YYYY-MM-DD. */
export function utcDay(now) {
  return new Date(now).toISOString().slice(0, 10);
}

export function dailyKey(now) {
  return `${KEY_PREFIX}${utcDay(now)}`;
}

/** Messages published on the UTC day of `now` (0 when none or unreadable as a count). */
export async function publishedToday(kv, now) {
  const n = Number(await kv.get(dailyKey(now)));
  return Number.isInteger(n) && n >= 0 ? n : 0;
}

/**
 * Throws 429 naming the count and the limit when `wanted` more messages would pass it;
 * 503 when the count cannot be read (nothing published then either).
 * @returns {Promise<number>} today's count before this request
 */
export async function checkDailyLimit(kv, limit, wanted, now) {
  let used;
  try {
    used = await publishedToday(kv, now);
  } catch (err) {
    throw new HttpError(
      503,
      `QSTASH_DAILY_LIMIT is set but today's count in KV namespace URLS could not be read, ` +
        `so nothing was published: ${err?.message ?? err}`,
    );
  }
  if (used + wanted > limit) {
    throw new HttpError(
      429,
      `QSTASH_DAILY_LIMIT=${limit} reached: ${used} message(s) already published on ` +
        `${utcDay(now)} (UTC), ${wanted} more refused; nothing was published. ` +
        "Send it again after 00:00 UTC or raise QSTASH_DAILY_LIMIT",
      { publishedToday: used, limit, refused: wanted },
    );
  }
  return used;
}

/** Adds what QStash accepted to today's count (the key expires after two days). */
export async function countPublished(kv, used, accepted, now) {
  await kv.put(dailyKey(now), String(used + accepted), { expirationTtl: KEEP_SECONDS });
}
