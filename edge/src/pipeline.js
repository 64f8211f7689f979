/**
 * concept → URLs → drop already-seen → publish → remember. Shared by the HTTP handler and
 * the cron trigger. KV is written only for URLs QStash accepted, so a failed publish is
 * retried in full next time instead of being silently forgotten.
 */
import { checkDailyLimit, countPublished } from "./daily.js";
import { discoverUrls } from "./discover.js";
import { HttpError } from "./errors.js";
import { buildMessages, publishBatch } from "./qstash.js";
import { partitionSeen, rememberPublished } from "./seen.js";

/**
 * @typedef {object} PublishOutcome
 * @property {number} stored  URLs QStash accepted (all remembered in KV unless `unrecorded`)
 * @property {string[]} urls  those URLs (normalised)
 * @property {string[]} messageIds  QStash message ids, one per message
 * @property {string[]} skipped  URLs already published within the TTL
 * @property {{source: string, error: string}[]} [discoveryErrors]
 * @property {{urls: string[], error: string}[]} [failed]  messages QStash refused
 * @property {{url: string, error: string}[]} [unrecorded]  published, but KV could not record
 */

/**
 * @param {import("./validate.js").ConceptRequest} request
 * @param {import("./config.js").EdgeConfig} config
 * @param {KVNamespace} kv
 * @returns {Promise<PublishOutcome>}
 * @throws {HttpError} 422 when discovery finds nothing, 503 when KV cannot be read (nothing
 *   published), 429 when QSTASH_DAILY_LIMIT would be passed (nothing published), 502 when
 *   QStash fails, 500 when KV cannot record what QStash accepted.
 */
export async function publishConcept(request, config, kv) {
  const { concept, symbol } = request;
  let candidates = request.urls;
  let discoveryErrors;
  if (candidates === undefined) {
    if (!config.sources.length) {
      // Otherwise the caller reads "nothing discovered" and blames the concept.
      throw new HttpError(
        422,
        "no urls given and no discovery sources are configured (DISCOVERY_SOURCES is empty); " +
          "send urls explicitly",
      );
    }
    const found = await discoverUrls(concept, symbol, config);
    candidates = found.urls;
    if (found.errors.length) discoveryErrors = found.errors;
    if (!candidates.length) {
      throw new HttpError(422, `no crawlable URLs discovered for concept "${concept}"`, {
        discoveryErrors: found.errors,
      });
    }
  }
  const now = Date.now();
  let split;
  try {
    split = await partitionSeen(kv, candidates, config.seenTtlSeconds, now);
  } catch (err) {
    throw new HttpError(
      503,
      `KV namespace URLS could not be read, so nothing was published: ${err?.message ?? err}`,
    );
  }
  const fresh = split.fresh.slice(0, config.maxUrls);
  const seen = split.seen;
  const outcome = { stored: 0, urls: [], messageIds: [], skipped: seen };
  if (discoveryErrors) outcome.discoveryErrors = discoveryErrors;
  if (!fresh.length) return outcome;

  const messages = await buildMessages(concept, symbol, fresh, config);
  const usedToday =
    config.dailyLimit === undefined
      ? undefined
      : await checkDailyLimit(kv, config.dailyLimit, messages.length, now);
  const results = await publishBatch(messages, config);
  const accepted = results.filter((r) => r.messageId);
  let uncounted;
  if (usedToday !== undefined && accepted.length) {
    try {
      await countPublished(kv, usedToday, accepted.length, now);
    } catch (err) {
      uncounted = String(err?.message ?? err);
    }
  }
  const published = accepted.flatMap((r) => r.urls.map((url) => ({ url, messageId: r.messageId })));
  const unrecorded = await rememberPublished(kv, published, concept, config.seenTtlSeconds, now);
  outcome.stored = published.length;
  outcome.urls = published.map((p) => p.url);
  outcome.messageIds = accepted.map((r) => r.messageId);

  const refused = results.filter((r) => r.error);
  const problems = [];
  if (refused.length) {
    problems.push(
      `QStash refused ${refused.length} of ${results.length} message(s): ${refused[0].error}`,
    );
    outcome.failed = refused.map((r) => ({ urls: r.urls, error: r.error }));
  }
  if (unrecorded.length) {
    // Published but not remembered: say so, or the caller cannot know why they come back.
    problems.push(
      `QStash accepted ${published.length} URL(s) but KV namespace URLS could not record ` +
        `${unrecorded.length} of them as published (${unrecorded[0].error}); ` +
        "those may be published again by a later request",
    );
    outcome.unrecorded = unrecorded;
  }
  if (uncounted) {
    problems.push(
      `QStash accepted ${accepted.length} message(s) but KV namespace URLS could not add them ` +
        `to today's QSTASH_DAILY_LIMIT count (${uncounted})`,
    );
  }
  if (problems.length) {
    throw new HttpError(refused.length ? 502 : 500, problems.join("; "), outcome);
  }
  return outcome;
}
