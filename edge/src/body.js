/**
 * Bounded body reads. `request.arrayBuffer()` / `response.text()` buffer the whole body before
 * anyone can look at its size, so a chunked body (no Content-Length) of any size would be held
 * in the Worker's 128 MB of memory first; this reads chunk by chunk and stops past the limit.
 */

/** Thrown when a body is longer than the limit; `limit` is the byte count it went past. */
export class BodyTooLarge extends Error {
  constructor(limit) {
    super(`more than ${limit} bytes`);
    this.name = "BodyTooLarge";
    this.limit = limit;
  }
}

/**
 * Reads at most `limit` bytes of a body stream.
 * @param {ReadableStream<Uint8Array>|null} stream
 * @param {number} limit
 * @returns {Promise<Uint8Array>}
 * @throws {BodyTooLarge} as soon as the body goes past `limit` (the rest is not read).
 */
export async function readCappedBytes(stream, limit) {
  if (!stream) return new Uint8Array(0);
  const reader = stream.getReader();
  const chunks = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel().catch(() => {});
      throw new BodyTooLarge(limit);
    }
    chunks.push(value);
  }
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.byteLength;
  }
  return bytes;
}
