// The error every failed request rejects with: the server's standard error
// object (`{error, message, timestamp, request_id}`) or a client-side one
// (`timeout`, `disconnected`, `network`) with the same fields.

/**
 * @typedef {object} ErrorObject
 * @property {string} error
 * @property {string} message
 * @property {string} [timestamp]
 * @property {string} [request_id]
 */

export class ChorusError extends Error {
  /**
   * @param {string} code the `error` code (e.g. `rate_limited`), or `timeout`, `disconnected`, `network`
   * @param {string} message
   * @param {{requestId?: string | null, timestamp?: string | null, status?: number | null}} [extra]
   */
  constructor(code, message, extra = {}) {
    super(message);
    this.name = 'ChorusError';
    /** @type {string} */
    this.code = code;
    /** @type {string | null} */
    this.requestId = extra.requestId ?? null;
    /** @type {string | null} */
    this.timestamp = extra.timestamp ?? null;
    /** HTTP status for REST errors. @type {number | null} */
    this.status = extra.status ?? null;
  }

  /**
   * @param {ErrorObject} body
   * @param {number | null} [status]
   */
  static fromBody(body, status = null) {
    return new ChorusError(body.error, body.message, { requestId: body.request_id, timestamp: body.timestamp, status });
  }

  /** Whether the server answered (as opposed to a timeout or a lost connection). */
  get fromServer() {
    return !CLIENT_CODES.has(this.code);
  }
}

const CLIENT_CODES = new Set(['timeout', 'disconnected', 'network']);

/**
 * Error codes that say the server refused a message for good: sending it
 * again with the same idempotency key cannot succeed.
 */
export const DEFINITE_REFUSALS = new Set([
  'bad_request',
  'malformed_json',
  'unknown_command',
  'invalid_field',
  'invalid_event',
  'forbidden',
  'not_found',
  'conflict',
  'payload_too_large',
  'frame_too_large',
  'maintenance',
  'internal',
  'unauthorized',
  'limit_exceeded',
]);
