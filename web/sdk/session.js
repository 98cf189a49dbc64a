// A token source for Chorus's own accounts: sign up, log in, log out, and
// access tokens renewed with the refresh token. Refresh tokens work once, so
// the tabs of one browser refresh one at a time (a Web Lock) and read each
// other's result from shared storage instead of refreshing twice, which
// would end the session.

import { Emitter } from './emitter.js';
import { ChorusError } from './errors.js';
import { Rest } from './rest.js';

/**
 * @typedef {object} StoredSession
 * @property {string} access_token
 * @property {string} expires_at
 * @property {number} issued_at when we received it (ms since the epoch)
 * @property {string} refresh_token
 * @property {string} session_id
 * @property {{id: string, username: string, role: string, email?: string}} user
 */

/**
 * @typedef {object} SessionOptions
 * @property {string} url the server's base URL, ending in `/`
 * @property {Pick<Storage, 'getItem' | 'setItem' | 'removeItem'>} [storage] (localStorage, else in memory)
 * @property {string} [key] storage key ("chorus.session")
 * @property {{request: (name: string, callback: () => Promise<any>) => Promise<any>}} [locks] (navigator.locks, else one lock per page)
 * @property {typeof fetch} [fetch]
 * @property {any} [environment] where `storage` events come from (globalThis)
 */

/**
 * @typedef {object} SessionEvents
 * @property {{user: StoredSession['user'] | null}} change signed in, out, or the user changed
 */

export class LocalSession {
  /** @param {SessionOptions} options */
  constructor(options) {
    this.storage = options.storage ?? globalThis.localStorage ?? memoryStorage();
    this.key = options.key ?? 'chorus.session';
    this.locks = options.locks ?? globalThis.navigator?.locks ?? pageLock();
    this.rest = new Rest({ baseUrl: options.url, fetch: options.fetch, getToken: () => this.getToken({ reason: 'connect' }) });
    /** @type {Emitter<SessionEvents>} */
    this.events = new Emitter();
    this.lockName = `${this.key}.refresh`;
    /** The access token's source for `new Chorus({getToken})`. */
    this.getToken = this.getToken.bind(this);
    const env = options.environment ?? globalThis;
    if (env && typeof env.addEventListener === 'function') {
      env.addEventListener('storage', (/** @type {StorageEvent} */ e) => {
        if (e.key === this.key) this.events.emit('change', { user: this.user });
      });
    }
  }

  /**
   * @param {'change'} event
   * @param {(payload: {user: StoredSession['user'] | null}) => void} handler
   */
  on(event, handler) {
    return this.events.on(event, handler);
  }

  /** The signed-in user, or null. */
  get user() {
    return this.read()?.user ?? null;
  }

  /** @param {{username: string, password: string, email?: string}} account */
  async signUp(account) {
    await this.rest.post('auth/signup', account, { auth: false });
    return this.logIn({ username: account.username, password: account.password });
  }

  /** @param {{username: string, password: string}} credentials */
  async logIn(credentials) {
    const grant = await this.rest.post('auth/login', credentials, { auth: false });
    this.write(grant);
    this.events.emit('change', { user: grant.user });
    return grant.user;
  }

  /** Revokes this login session on the server (its connections end) and forgets it here. */
  async logOut() {
    const stored = this.read();
    if (stored) {
      try {
        await this.rest.post('auth/logout', undefined, { auth: false, headers: { authorization: `Bearer ${stored.access_token}` } });
      } catch {
        // Expired or already revoked: forgetting it is all that is left.
      }
    }
    this.clear();
  }

  /**
   * An access token: the stored one while it is fresh enough, else a new one
   * from the refresh token, fetched by one tab at a time.
   * @param {{reason: 'connect' | 'refresh' | 'rejected', rejectedToken?: string}} request
   * @returns {Promise<string>}
   */
  async getToken(request) {
    const stored = this.read();
    if (!stored) throw new ChorusError('signed_out', 'not signed in');
    if (fresh(stored, request)) return stored.access_token;
    return this.locks.request(this.lockName, async () => {
      // Another tab may have refreshed while we waited for the lock.
      const now = this.read();
      if (!now) throw new ChorusError('signed_out', 'signed out');
      if (fresh(now, request)) return now.access_token;
      let grant;
      try {
        grant = await this.rest.post('auth/refresh', { refresh_token: now.refresh_token }, { auth: false });
      } catch (error) {
        if (error instanceof ChorusError && (error.code === 'unauthorized' || error.code === 'token_expired' || error.code === 'not_found')) {
          this.clear();
          throw new ChorusError('signed_out', `the session ended: ${error.message}`, { requestId: error.requestId });
        }
        throw error;
      }
      this.write(grant);
      return grant.access_token;
    });
  }

  /** @returns {StoredSession | null} */
  read() {
    try {
      const raw = this.storage.getItem(this.key);
      if (!raw) return null;
      const parsed = JSON.parse(raw);
      return parsed && typeof parsed.access_token === 'string' && typeof parsed.refresh_token === 'string' ? parsed : null;
    } catch {
      return null;
    }
  }

  /** @param {Record<string, any>} grant a `TokenGrant` */
  write(grant) {
    /** @type {StoredSession} */
    const stored = {
      access_token: grant.access_token,
      expires_at: grant.expires_at,
      issued_at: Date.now(),
      refresh_token: grant.refresh_token,
      session_id: grant.session_id,
      user: grant.user,
    };
    this.storage.setItem(this.key, JSON.stringify(stored));
  }

  clear() {
    const had = this.read() !== null;
    this.storage.removeItem(this.key);
    if (had) this.events.emit('change', { user: null });
  }
}

/**
 * Whether a stored token serves a request: not the one the server refused,
 * and with enough of its life left (for a scheduled refresh, more than half:
 * that is only true of a token another tab just fetched).
 * @param {StoredSession} stored
 * @param {{reason: string, rejectedToken?: string}} request
 */
function fresh(stored, request) {
  if (request.rejectedToken && stored.access_token === request.rejectedToken) return false;
  const expires = Date.parse(stored.expires_at);
  if (!Number.isFinite(expires)) return false;
  const now = Date.now();
  const lifetime = Math.max(1, expires - stored.issued_at);
  const left = expires - now;
  if (request.reason === 'refresh') return left > lifetime * 0.5;
  return left > Math.min(30000, lifetime * 0.35);
}

/** @returns {Pick<Storage, 'getItem' | 'setItem' | 'removeItem'>} */
function memoryStorage() {
  /** @type {Map<string, string>} */
  const map = new Map();
  return {
    getItem: (k) => map.get(k) ?? null,
    setItem: (k, v) => void map.set(k, String(v)),
    removeItem: (k) => void map.delete(k),
  };
}

/** A lock for one page, where Web Locks are missing (Node, old browsers). */
function pageLock() {
  /** @type {Map<string, Promise<unknown>>} */
  const tails = new Map();
  return {
    /**
     * @param {string} name
     * @param {() => Promise<any>} callback
     */
    request(name, callback) {
      const previous = tails.get(name) ?? Promise.resolve();
      const run = previous.then(callback, callback);
      tails.set(name, run.catch(() => {}));
      return run;
    },
  };
}
