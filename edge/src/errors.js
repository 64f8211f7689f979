/**
 * Errors that carry the HTTP status they should become, so every layer can fail with a
 * clear reason and the router turns it into `{"error": reason}` without guessing.
 */
export class HttpError extends Error {
  /**
   * @param {number} status HTTP status to answer with.
   * @param {string} message Reason shown to the caller (names what was wrong).
   * @param {Record<string, unknown>} [extra] Extra JSON fields for the response body.
   */
  constructor(status, message, extra = {}) {
    super(message);
    this.name = "HttpError";
    this.status = status;
    this.extra = extra;
  }
}

/** A wrangler.toml var or secret is missing or malformed: the operator must fix it (500). */
export class ConfigError extends HttpError {
  constructor(message) {
    super(500, `configuration error: ${message}`);
    this.name = "ConfigError";
  }
}
