/**
 * Publishes concept messages to QStash in one `/v2/batch` call. Retries are bounded and the
 * deduplication id is a hash of concept + URL set, so a retry after a lost response cannot
 * enqueue the same crawl twice.
 */
import { HttpError } from "./errors.js";

const MAX_RETRY_AFTER_MS = 10_000;
const ERROR_SNIPPET_CHARS = 300;

async function sha256Hex(text) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Same concept + same URL set (any order) + same symbol → same id. */
export async function deduplicationId(concept, urls, symbol) {
  const material = JSON.stringify([concept, [...urls].sort(), symbol ?? null]);
  return `qpipe-${(await sha256Hex(material)).slice(0, 40)}`;
}

/**
 * The JSON body the receiver gets. Must validate against concept_message.schema.json.
 * @returns {{concept: string, urls: string[], symbol: string|null}}
 */
export function messageBody(concept, urls, symbol) {
  return { concept, urls, symbol: symbol ?? null };
}

/**
 * Splits URLs into messages of at most `config.urlsPerMessage` and builds the batch items.
 * @returns {Promise<{urls: string[], item: {destination: string, headers: object, body: string}}[]>}
 */
export async function buildMessages(concept, symbol, urls, config) {
  const messages = [];
  for (let i = 0; i < urls.length; i += config.urlsPerMessage) {
    const chunk = urls.slice(i, i + config.urlsPerMessage);
    const headers = {
      "Content-Type": "application/json",
      "Upstash-Deduplication-Id": await deduplicationId(concept, chunk, symbol),
      "Upstash-Retries": String(config.qstashRetries),
    };
    if (config.qstashDelay) headers["Upstash-Delay"] = config.qstashDelay;
    messages.push({
      urls: chunk,
      item: {
        destination: config.receiverUrl,
        headers,
        body: JSON.stringify(messageBody(concept, chunk, symbol)),
      },
    });
  }
  return messages;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function retryDelayMs(response, attempt, baseMs) {
  const header = response?.headers.get("retry-after");
  const seconds = header !== null && header !== undefined ? Number(header) : NaN;
  if (Number.isFinite(seconds) && seconds >= 0) return Math.min(seconds * 1000, MAX_RETRY_AFTER_MS);
  return Math.min(baseMs * 2 ** attempt, MAX_RETRY_AFTER_MS);
}

async function snippet(response) {
  const text = (await response.text().catch(() => "")).trim();
  return text.length > ERROR_SNIPPET_CHARS ? `${text.slice(0, ERROR_SNIPPET_CHARS)}…` : text;
}

/**
 * POSTs the batch, retrying 429/5xx/network failures with exponential backoff.
 * @param {{urls: string[], item: object}[]} messages
 * @param {import("./config.js").EdgeConfig} config
 * @returns {Promise<{urls: string[], messageId?: string, deduplicated?: boolean, error?: string}[]>}
 *   one result per message, in order (QStash accepts or refuses each message on its own).
 * @throws {HttpError} 502 when QStash refuses the whole batch or stays unavailable.
 */
export async function publishBatch(messages, config) {
  const endpoint = `${config.qstashUrl}/v2/batch`;
  const payload = JSON.stringify(messages.map((m) => m.item));
  let lastReason = "";
  for (let attempt = 0; attempt < config.publishAttempts; attempt++) {
    let response;
    try {
      response = await fetch(endpoint, {
        method: "POST",
        headers: {
          Authorization: `Bearer ${config.qstashToken}`,
          "Content-Type": "application/json",
        },
        body: payload,
        // Followed, a 301 turns the POST into a GET and a redirect to https drops the
        // Authorization header: QStash then answers 405/401 and the token gets the blame.
        redirect: "manual",
      });
    } catch (err) {
      lastReason = `network error: ${err?.message ?? err}`;
    }
    if (response?.ok) {
      // A lost answer is retried: the deduplication ids make QStash answer the same again.
      let text;
      try {
        text = await response.text();
      } catch (err) {
        lastReason = `HTTP ${response.status} but reading its answer failed: ${err?.message ?? err}`;
      }
      if (text !== undefined) return parseBatchResponse(text, messages);
    } else if (response && response.status >= 300 && response.status < 400) {
      const location = response.headers.get("location") ?? "(no Location header)";
      throw new HttpError(
        502,
        `QStash rejected the batch: HTTP ${response.status} redirect to ${location}; ` +
          "QSTASH_URL must point at QStash itself (https)",
      );
    } else if (response) {
      const retriable = response.status === 429 || response.status >= 500;
      const reason = `HTTP ${response.status} ${await snippet(response)}`.trim();
      if (!retriable) throw new HttpError(502, `QStash rejected the batch: ${reason}`);
      lastReason = reason;
    }
    if (attempt + 1 < config.publishAttempts) {
      await sleep(retryDelayMs(response, attempt, config.publishBackoffMs));
    }
  }
  throw new HttpError(
    502,
    `QStash unavailable after ${config.publishAttempts} attempt(s): ${lastReason}`,
  );
}

function parseBatchResponse(text, messages) {
  let data;
  try {
    data = JSON.parse(text);
  } catch {
    const shown = text.trim().slice(0, ERROR_SNIPPET_CHARS);
    throw new HttpError(502, `QStash answered the batch with non-JSON: ${shown || "(empty)"}`);
  }
  if (!Array.isArray(data)) {
    const kind = data === null ? "null" : typeof data;
    throw new HttpError(502, `QStash answered the batch with a JSON ${kind}, not a list`);
  }
  if (data.length !== messages.length) {
    throw new HttpError(
      502,
      `QStash answered the batch with ${data.length} result(s) for ${messages.length} ` +
        "message(s); nothing is recorded as published",
    );
  }
  return data.map((entry, i) => {
    if (typeof entry?.messageId === "string" && entry.messageId !== "") {
      return {
        urls: messages[i].urls,
        messageId: entry.messageId,
        deduplicated: entry.deduplicated === true,
      };
    }
    const error = typeof entry?.error === "string" ? entry.error : "no messageId returned";
    return { urls: messages[i].urls, error };
  });
}
