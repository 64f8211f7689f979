/**
 * concept → URLs → drop already-seen → publish → remember. Shared by the HTTP handler and
 * the cron trigger. KV is written only for URLs QStash accepted, so a failed publish is
 * retried in full next time instead of being silently forgotten.
 */
import { discoverUrls } from "./discover.js";
import { HttpError } from "./errors.js";
import { buildMessages, publishBatch } from "./qstash.js";
import { partitionSeen, rememberPublished } from "./seen.js";

/**
 * @typedef {object} PublishOutcome
 * @property {number} stored  URLs newly published and remembered
 * @property {string[]} urls  those URLs (normalised)
 * @property {string[]} messageIds  QStash message ids, one per message
 * @property {string[]} skipped  URLs already published within the TTL
 * @property {{source: string, error: string}[]} [discoveryErrors]
 */

/**
 * @param {import("./validate.js").ConceptRequest} request
 * @param {import("./config.js").EdgeConfig} config
 * @param {KVNamespace} kv
 * @returns {Promise<PublishOutcome>}
 * @throws {HttpError} 422 when discovery finds nothing, 502 when QStash fails.
 */
export async function publishConcept(request, config, kv) {
  const { concept, symbol } = request;
  let candidates = request.urls;
  let discoveryErrors;
  if (candidates === undefined) {
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
  const split = await partitionSeen(kv, candidates, config.seenTtlSeconds, now);
  const fresh = split.fresh.slice(0, config.maxUrls);
  const seen = split.seen;
  const outcome = { stored: 0, urls: [], messageIds: [], skipped: seen };
  if (discoveryErrors) outcome.discoveryErrors = discoveryErrors;
  if (!fresh.length) return outcome;

  const messages = await buildMessages(concept, symbol, fresh, config);
  const results = await publishBatch(messages, config);
  const accepted = results.filter((r) => r.messageId);
  const published = accepted.flatMap((r) => r.urls.map((url) => ({ url, messageId: r.messageId })));
  await rememberPublished(kv, published, concept, config.seenTtlSeconds, now);
  outcome.stored = published.length;
  outcome.urls = published.map((p) => p.url);
  outcome.messageIds = accepted.map((r) => r.messageId);

  const refused = results.filter((r) => r.error);
  if (refused.length) {
    throw new HttpError(
      502,
      `QStash refused ${refused.length} of ${results.length} message(s): ${refused[0].error}`,
      { ...outcome, failed: refused.map((r) => ({ urls: r.urls, error: r.error })) },
    );
  }
  return outcome;
}
