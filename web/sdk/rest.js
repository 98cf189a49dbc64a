// REST calls to the server's `/api/v1` with the bearer token; every failure
// rejects with a `ChorusError` carrying the server's code and `request_id`.

import { ChorusError } from './errors.js';

/**
 * @typedef {object} RestOptions
 * @property {string} baseUrl the server's base URL, ending in `/`
 * @property {() => Promise<string | null>} [getToken] the bearer token (none for sign-in calls)
 * @property {typeof fetch} [fetch]
 * @property {number} [timeoutMs] (15000)
 */

export class Rest {
  /** @param {RestOptions} options */
  constructor(options) {
    this.baseUrl = options.baseUrl;
    this.getToken = options.getToken ?? (async () => null);
    this.fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.timeoutMs = options.timeoutMs ?? 15000;
  }

  /**
   * The absolute URL of an API path (`channels/x` → `<base>api/v1/channels/x`).
   * @param {string} path
   */
  url(path) {
    return new URL(`api/v1/${path.replace(/^\/+/, '')}`, this.baseUrl).href;
  }

  /** @param {string} path */
  get(path) {
    return this.call('GET', path);
  }

  /**
   * @param {string} path
   * @param {unknown} [body]
   * @param {{headers?: Record<string, string>, auth?: boolean}} [options]
   */
  post(path, body, options) {
    return this.call('POST', path, body, options);
  }

  /**
   * @param {string} path
   * @param {unknown} body
   */
  patch(path, body) {
    return this.call('PATCH', path, body);
  }

  /**
   * @param {string} path
   * @param {unknown} body
   */
  put(path, body) {
    return this.call('PUT', path, body);
  }

  /** @param {string} path */
  delete(path) {
    return this.call('DELETE', path);
  }

  /**
   * @param {string} method
   * @param {string} path
   * @param {unknown} [body]
   * @param {{headers?: Record<string, string>, auth?: boolean}} [options]
   * @returns {Promise<any>}
   */
  async call(method, path, body, options = {}) {
    /** @type {Record<string, string>} */
    const headers = { accept: 'application/json', ...(options.headers ?? {}) };
    if (options.auth !== false) {
      const token = await this.getToken();
      if (token) headers.authorization = `Bearer ${token}`;
    }
    if (body !== undefined) headers['content-type'] = 'application/json';
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), this.timeoutMs);
    let response;
    try {
      response = await this.fetchImpl(this.url(path), {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: controller.signal,
        credentials: 'same-origin',
      });
    } catch (error) {
      const timedOut = controller.signal.aborted;
      throw new ChorusError(timedOut ? 'timeout' : 'network', timedOut ? `${method} ${path}: no answer within ${this.timeoutMs} ms` : `${method} ${path}: ${String(error)}`);
    } finally {
      clearTimeout(timer);
    }
    const text = await response.text();
    let parsed = null;
    if (text) {
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = null;
      }
    }
    if (!response.ok) {
      if (parsed && typeof parsed.error === 'string') throw ChorusError.fromBody(parsed, response.status);
      throw new ChorusError('http_error', `${method} ${path}: HTTP ${response.status}`, {
        status: response.status,
        requestId: response.headers.get('x-request-id'),
      });
    }
    return parsed;
  }
}
