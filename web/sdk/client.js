// The Chorus client: one WebSocket authenticated with the `connect` command,
// reconnecting with backoff, refreshing its token before it expires, and
// carrying the subscriptions, the outbox and request/reply matching.

import { Backoff } from './backoff.js';
import { closePolicy } from './close-codes.js';
import { Emitter } from './emitter.js';
import { ChorusError } from './errors.js';
import { Outbox } from './outbox.js';
import { Rest } from './rest.js';
import { Subscription } from './subscription.js';

/** @typedef {import('./types.js').Push} Push */
/** @typedef {import('./types.js').ConnectResult} ConnectResult */
/** @typedef {import('./subscription.js').SubscriptionOptions} SubscriptionOptions */

/**
 * `disconnected`: not started, or `disconnect()` was called;
 * `connecting`: fetching a token, opening the socket, waiting for `connect`'s reply;
 * `connected`: authenticated, commands flow;
 * `reconnecting`: waiting for the backoff delay before the next attempt;
 * `stopped`: the server said not to come back on our own (evicted by a newer
 * connection, revoked, signed out, protocol error); only `connect()` restarts.
 * @typedef {'disconnected' | 'connecting' | 'connected' | 'reconnecting' | 'stopped'} ConnectionState
 */

/**
 * Why the client wants a token: `connect` (a new connection), `refresh`
 * (the live one's expires soon), `rejected` (the server refused
 * `rejectedToken`; a fresh one is needed).
 * @typedef {object} TokenRequest
 * @property {'connect' | 'refresh' | 'rejected'} reason
 * @property {string} [rejectedToken]
 */

/**
 * @typedef {object} ChorusOptions
 * @property {string} url the server's base URL (`https://chat.example.com/prefix/`); `ws(s)://…/ws` also works
 * @property {(request: TokenRequest) => Promise<string>} getToken an access token; a `ChorusError` with code `signed_out` or `unauthorized` stops the client
 * @property {typeof WebSocket} [WebSocket] the WebSocket class (globalThis.WebSocket)
 * @property {typeof fetch} [fetch] (globalThis.fetch)
 * @property {number} [requestTimeoutMs] default timeout of `request()` (10000)
 * @property {number} [connectTimeoutMs] from opening the socket to `connect`'s reply (10000)
 * @property {number} [minReconnectMs] (500)
 * @property {number} [maxReconnectMs] (20000)
 * @property {number} [stableAfterMs] a connection up this long resets the backoff (10000)
 * @property {number} [outboxLimit] messages waiting in the outbox at most (200)
 * @property {() => number} [random] for the backoff's jitter (Math.random)
 * @property {any} [environment] where `online`/`visibilitychange` come from (globalThis)
 * @property {(error: unknown, info: {event: string}) => void} [onHandlerError]
 */

/**
 * @typedef {object} StateChange
 * @property {ConnectionState} state
 * @property {ConnectionState} previous
 * @property {string} [reason] why (a close reason such as `replaced`, `revoked`, `connection_lost`)
 * @property {number} [code] the close code, when a close caused it
 * @property {number} [delayMs] for `reconnecting`: when the next attempt starts
 */

/**
 * @typedef {object} ClientEvents
 * @property {StateChange} state
 * @property {ConnectResult & {reconnected: boolean}} connected
 * @property {{code: number, reason: string}} disconnected
 * @property {Push} push
 * @property {unknown} error
 * @property {{error: unknown, event: string}} handler_error
 * @property {{expiresAt: string | null}} token_refreshed
 */

/** @typedef {{resolve: (v: any) => void, reject: (e: ChorusError) => void, timer: ReturnType<typeof setTimeout>, type: string, onResult?: (result: any) => void}} Pending */

/**
 * @typedef {object} RequestOptions
 * @property {number} [timeoutMs]
 * @property {(result: any) => void} [onResult] called with a successful result
 *   before any later frame is handled (a promise's continuation may run only
 *   after several frames that arrived together)
 */

const MAX_PENDING_REQUESTS = 1000;

export class Chorus {
  /** @param {ChorusOptions} options */
  constructor(options) {
    if (!options || typeof options.getToken !== 'function') throw new TypeError('Chorus: options.getToken is required');
    const urls = resolveUrls(options.url);
    this.wsUrl = urls.ws;
    this.httpBase = urls.http;
    this.getToken = options.getToken;
    this.WebSocketImpl = options.WebSocket ?? globalThis.WebSocket;
    if (!this.WebSocketImpl) throw new TypeError('Chorus: no WebSocket implementation (node 20: --experimental-websocket)');
    this.requestTimeoutMs = options.requestTimeoutMs ?? 10000;
    this.connectTimeoutMs = options.connectTimeoutMs ?? 10000;
    this.stableAfterMs = options.stableAfterMs ?? 10000;
    this.backoff = new Backoff({ minMs: options.minReconnectMs, maxMs: options.maxReconnectMs, random: options.random });
    /** @type {Emitter<ClientEvents>} */
    this.events = new Emitter((error, info) => this.reportHandlerError(error, info, options.onHandlerError));
    this.rest = new Rest({ baseUrl: this.httpBase, getToken: () => this.getToken({ reason: 'connect' }), fetch: options.fetch });

    /** @type {ConnectionState} */
    this.state = 'disconnected';
    /** Why the client stopped, while `state` is `stopped`. @type {{reason: string, code: number} | null} */
    this.stopped = null;
    /** The live connection's `connect` result. @type {ConnectResult | null} */
    this.session = null;
    /** @type {WebSocket | null} */
    this.socket = null;
    this.generation = 0;
    this.nextId = 1;
    /** @type {Map<number, Pending>} */
    this.pending = new Map();
    /** @type {Map<string, Subscription>} */
    this.subscriptions = new Map();
    this.outbox = new Outbox(this, { limit: options.outboxLimit ?? 200 });
    this.everConnected = false;
    /** The token the current socket authenticated with. @type {string | null} */
    this.token = null;
    /** Set when the last close asked for a fresh token. @type {string | null} */
    this.rejectedToken = null;
    this.authFailures = 0;
    /** A local reason for closing our own socket (stale, connect timeout). @type {string | null} */
    this.localCloseReason = null;
    this.lastReceived = 0;
    /** @type {ReturnType<typeof setTimeout> | null} */ this.reconnectTimer = null;
    /** @type {ReturnType<typeof setTimeout> | null} */ this.connectTimer = null;
    /** @type {ReturnType<typeof setTimeout> | null} */ this.stableTimer = null;
    /** @type {ReturnType<typeof setTimeout> | null} */ this.refreshTimer = null;
    /** @type {ReturnType<typeof setInterval> | null} */ this.heartbeatTimer = null;
    /** Removes the environment listeners `watchEnvironment` added. @type {() => void} */
    this.detachEnvironment = () => {};
    this.refreshing = false;
    this.watchEnvironment(options.environment ?? globalThis);
  }

  // ------------------------------------------------------------ public API

  /**
   * Adds a handler; returns a function that removes it.
   * @template {keyof ClientEvents & string} K
   * @param {K} event
   * @param {(payload: ClientEvents[K]) => void} handler
   */
  on(event, handler) {
    return this.events.on(event, handler);
  }

  /** Starts connecting (or retries at once while waiting to reconnect). */
  connect() {
    if (this.state === 'connected' || this.state === 'connecting') return;
    this.stopped = null;
    this.authFailures = 0;
    this.clearTimer('reconnectTimer');
    this.open();
  }

  /** Retries now instead of waiting out the backoff delay. */
  retryNow() {
    if (this.state !== 'reconnecting') return;
    this.clearTimer('reconnectTimer');
    this.open();
  }

  /** Closes the connection and stays disconnected until `connect()`. */
  disconnect() {
    this.clearTimer('reconnectTimer');
    this.teardown(1000, 'client disconnect');
    this.setState('disconnected', { reason: 'client' });
  }

  /** Disconnects for good: also stops listening to the browser's online and visibility events. */
  close() {
    this.disconnect();
    this.outbox.close();
    this.detachEnvironment();
  }

  /**
   * Sends a command and resolves with its result; rejects with a
   * `ChorusError` carrying the server's code and `request_id`, or `timeout`,
   * or `disconnected` (not connected, or the connection was lost first).
   * @param {string} type
   * @param {Record<string, any>} [fields]
   * @param {RequestOptions} [options]
   * @returns {Promise<any>}
   */
  request(type, fields = {}, options = {}) {
    if (this.state !== 'connected' || !this.socket) {
      return Promise.reject(new ChorusError('disconnected', `not connected (${this.state})`));
    }
    return this.send(this.socket, type, fields, options.timeoutMs ?? this.requestTimeoutMs, options.onResult);
  }

  /**
   * The subscription to `channel`: one per channel however often this is
   * called (later options are ignored). It lives across reconnects.
   * @param {string} channel
   * @param {SubscriptionOptions} [options]
   * @returns {Subscription}
   */
  subscribe(channel, options = {}) {
    let sub = this.subscriptions.get(channel);
    if (!sub) {
      sub = new Subscription(this, channel, options);
      this.subscriptions.set(channel, sub);
      if (this.state === 'connected') sub.start();
    }
    return sub;
  }

  /** @param {string} channel */
  async unsubscribe(channel) {
    const sub = this.subscriptions.get(channel);
    if (!sub) return;
    this.subscriptions.delete(channel);
    sub.close();
    if (this.state === 'connected') {
      try {
        await this.request('unsubscribe', { channel });
      } catch {
        // Gone with the connection: nothing to undo.
      }
    }
  }

  /**
   * Queues a chat message in the outbox (pending → sent or failed); it is
   * re-sent with the same idempotency key after a reconnect.
   * @param {string} channel `room:<id>`
   * @param {string} text
   */
  sendMessage(channel, text) {
    return this.outbox.add(channel, text);
  }

  /**
   * Tells the channel the user is (not) typing. Never queued: while not
   * connected it does nothing and resolves false.
   * @param {string} channel
   * @param {boolean} active
   * @returns {Promise<boolean>}
   */
  async typing(channel, active) {
    if (this.state !== 'connected') return false;
    try {
      await this.request('typing', { channel, active }, { timeoutMs: 5000 });
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Cancels an agent run: the `cancel_run` command on the live connection,
   * `POST /api/v1/runs/{id}/cancel` while it is down. Idempotent: resolves
   * with the run's status after the request (`cancelled`, or the ending it
   * already had); its `agent_error` (code `cancelled`) follows on the
   * channel. Rejects with `invalid_field`, `not_found`, `forbidden` or
   * `unavailable` (no agent runtime).
   * @param {string} runId
   * @returns {Promise<{run_id: string, status: string}>}
   */
  async cancelRun(runId) {
    if (this.state === 'connected') {
      try {
        return await this.request('cancel_run', { run_id: runId });
      } catch (error) {
        if (!(error instanceof ChorusError && error.code === 'disconnected')) throw error;
      }
    }
    const run = await this.rest.post(`runs/${encodeURIComponent(runId)}/cancel`);
    return { run_id: String(run?.id ?? runId), status: String(run?.status ?? '') };
  }

  // ------------------------------------------------------------ connection

  async open() {
    const generation = ++this.generation;
    this.setState('connecting');
    const rejectedToken = this.rejectedToken;
    let token;
    try {
      token = await this.getToken(rejectedToken ? { reason: 'rejected', rejectedToken } : { reason: 'connect' });
    } catch (error) {
      if (generation !== this.generation) return;
      this.events.emit('error', error);
      if (isSignedOut(error)) {
        this.stop('signed_out', 4001);
      } else {
        this.scheduleReconnect({ reason: 'token_unavailable' });
      }
      return;
    }
    if (generation !== this.generation) return;
    if (typeof token !== 'string' || token.length === 0) {
      this.events.emit('error', new ChorusError('unauthorized', 'getToken gave no token'));
      this.stop('unauthorized', 4001);
      return;
    }
    this.token = token;
    let socket;
    try {
      socket = new this.WebSocketImpl(this.wsUrl);
    } catch (error) {
      this.events.emit('error', error);
      this.scheduleReconnect({ reason: 'connection_lost' });
      return;
    }
    this.socket = socket;
    this.localCloseReason = null;
    this.connectTimer = setTimeout(() => this.closeLocally(socket, 'connect_timeout'), this.connectTimeoutMs);
    socket.onopen = () => {
      if (this.socket !== socket) return;
      this.send(socket, 'connect', { token }, this.connectTimeoutMs).then(
        (result) => this.onConnected(socket, result),
        (error) => {
          // The server closes with the code that says what to do next.
          if (this.socket === socket) this.events.emit('error', error);
        },
      );
    };
    socket.onmessage = (message) => {
      if (this.socket !== socket) return;
      this.lastReceived = Date.now();
      this.onFrame(message.data);
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.onClosed(event.code, event.reason);
    };
    socket.onerror = () => {
      // An error means the connection failed or broke (1006); some
      // implementations fire no close event after it, so act now.
      if (this.socket !== socket) return;
      this.onClosed(1006, 'error');
      try {
        socket.close();
      } catch {
        // Already closed.
      }
    };
  }

  /**
   * @param {WebSocket} socket
   * @param {ConnectResult} result
   */
  onConnected(socket, result) {
    if (this.socket !== socket) return;
    this.clearTimer('connectTimer');
    this.session = result;
    this.rejectedToken = null;
    this.authFailures = 0;
    this.lastReceived = Date.now();
    const reconnected = this.everConnected;
    this.everConnected = true;
    this.setState('connected');
    this.stableTimer = setTimeout(() => this.backoff.reset(), this.stableAfterMs);
    this.startHeartbeat(socket, result.ping_interval_ms || 25000, result.pong_timeout_ms || 20000);
    this.scheduleRefresh(result.expires_at ?? null);
    this.events.emit('connected', { ...result, reconnected });
    for (const sub of this.subscriptions.values()) sub.start();
    this.outbox.flush();
  }

  /**
   * @param {number} code
   * @param {string} reason
   */
  onClosed(code, reason) {
    const local = this.localCloseReason;
    this.teardown();
    this.events.emit('disconnected', { code, reason: local ?? reason });
    if (local) {
      this.scheduleReconnect({ reason: local, code });
      return;
    }
    const policy = closePolicy(code);
    if (policy.action === 'stop') {
      this.stop(policy.reason, code);
    } else if (policy.action === 'new_token') {
      this.authFailures += 1;
      // A fresh token refused again means the account cannot connect: stop.
      if (this.authFailures > 2) {
        this.stop(policy.reason, code);
        return;
      }
      this.rejectedToken = this.token;
      this.scheduleReconnect({ reason: policy.reason, code, floorMs: policy.floorMs });
    } else {
      this.scheduleReconnect({ reason: policy.reason, code, floorMs: policy.floorMs });
    }
  }

  /**
   * Ends the socket and everything tied to it; requests in flight reject
   * with `disconnected`.
   * @param {number} [code]
   * @param {string} [reason]
   */
  teardown(code, reason) {
    const socket = this.socket;
    this.socket = null;
    this.session = null;
    this.generation += 1;
    for (const name of /** @type {const} */ (['connectTimer', 'stableTimer', 'refreshTimer'])) this.clearTimer(name);
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
    this.refreshing = false;
    if (socket) {
      socket.onopen = null;
      socket.onmessage = null;
      socket.onclose = null;
      socket.onerror = null;
      if (code !== undefined) {
        try {
          socket.close(code, reason);
        } catch {
          // Already closing.
        }
      }
    }
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) {
      clearTimeout(p.timer);
      p.reject(new ChorusError('disconnected', `connection lost before the reply to ${p.type}`));
    }
    for (const sub of this.subscriptions.values()) sub.suspend();
  }

  /**
   * Closes our own socket for a local reason and reconnects.
   * @param {WebSocket} socket
   * @param {string} reason
   */
  closeLocally(socket, reason) {
    if (this.socket !== socket) return;
    this.localCloseReason = reason;
    this.onClosed(1006, reason);
    try {
      socket.close(1000, reason);
    } catch {
      // Already closing.
    }
  }

  /**
   * @param {{reason: string, code?: number, floorMs?: number}} why
   */
  scheduleReconnect(why) {
    this.clearTimer('reconnectTimer');
    const delayMs = this.backoff.next(why.floorMs ?? 0);
    this.setState('reconnecting', { reason: why.reason, code: why.code, delayMs });
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.open();
    }, delayMs);
  }

  /**
   * @param {string} reason
   * @param {number} code
   */
  stop(reason, code) {
    this.clearTimer('reconnectTimer');
    this.teardown();
    this.stopped = { reason, code };
    this.setState('stopped', { reason, code });
  }

  /**
   * @param {ConnectionState} state
   * @param {Partial<StateChange>} [detail]
   */
  setState(state, detail = {}) {
    const previous = this.state;
    this.state = state;
    if (previous === state && state !== 'reconnecting') return;
    this.events.emit('state', { ...detail, state, previous });
  }

  // ------------------------------------------------------------ frames

  /**
   * @param {WebSocket} socket
   * @param {string} type
   * @param {Record<string, any>} fields
   * @param {number} timeoutMs
   * @param {(result: any) => void} [onResult]
   * @returns {Promise<any>}
   */
  send(socket, type, fields, timeoutMs, onResult) {
    if (this.pending.size >= MAX_PENDING_REQUESTS) {
      return Promise.reject(new ChorusError('limit_exceeded', `more than ${MAX_PENDING_REQUESTS} requests waiting for replies`));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new ChorusError('timeout', `no reply to ${type} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer, type, onResult });
      try {
        socket.send(JSON.stringify({ ...fields, id, type }));
      } catch (error) {
        clearTimeout(timer);
        this.pending.delete(id);
        reject(new ChorusError('disconnected', `could not send ${type}: ${String(error)}`));
      }
    });
  }

  /** @param {unknown} data */
  onFrame(data) {
    if (typeof data !== 'string') return;
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      this.events.emit('error', new ChorusError('malformed_json', 'the server sent a frame that is not JSON'));
      return;
    }
    if (frame === null || typeof frame !== 'object') return;
    if ('id' in frame) {
      this.onReply(frame);
      return;
    }
    this.events.emit('push', frame);
    const sub = typeof frame.channel === 'string' ? this.subscriptions.get(frame.channel) : undefined;
    if (sub) sub.onPush(frame);
  }

  /** @param {{id: number | null, result?: any, error?: import('./errors.js').ErrorObject}} frame */
  onReply(frame) {
    if (typeof frame.id !== 'number') {
      if (frame.error) this.events.emit('error', ChorusError.fromBody(frame.error));
      return;
    }
    const pending = this.pending.get(frame.id);
    if (!pending) return;
    this.pending.delete(frame.id);
    clearTimeout(pending.timer);
    if (frame.error) {
      pending.reject(ChorusError.fromBody(frame.error));
      return;
    }
    if (pending.onResult) {
      try {
        pending.onResult(frame.result);
      } catch (error) {
        this.reportHandlerError(error, { event: `${pending.type} result` }, undefined);
      }
    }
    pending.resolve(frame.result);
  }

  // ------------------------------------------------------------ liveness and tokens

  /**
   * Browsers answer the server's pings without telling the page, so a dead
   * network is noticed only by asking: after an interval with nothing
   * received, a `ping` command that must be answered in time.
   * @param {WebSocket} socket
   * @param {number} intervalMs
   * @param {number} timeoutMs
   */
  startHeartbeat(socket, intervalMs, timeoutMs) {
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = setInterval(() => {
      if (this.socket !== socket || Date.now() - this.lastReceived < intervalMs) return;
      this.send(socket, 'ping', {}, timeoutMs).catch((error) => {
        if (error instanceof ChorusError && error.code === 'timeout') this.closeLocally(socket, 'stale');
      });
    }, intervalMs);
  }

  /** @param {string | null} expiresAt */
  scheduleRefresh(expiresAt) {
    this.clearTimer('refreshTimer');
    if (!expiresAt) return;
    const remaining = Date.parse(expiresAt) - Date.now();
    if (!Number.isFinite(remaining)) return;
    // Refresh with 30% of the lifetime left (at most a minute before), so a
    // token of a few seconds is renewed in time and a long one not too early.
    const delay = Math.max(0, remaining - Math.min(60000, remaining * 0.3));
    this.refreshTimer = setTimeout(() => this.refreshToken(), delay);
  }

  /**
   * A new access token (over REST, serialized across tabs by the token
   * source), then the `refresh` command on the live connection.
   */
  async refreshToken() {
    if (this.state !== 'connected' || this.refreshing) return;
    this.refreshing = true;
    const generation = this.generation;
    try {
      let token;
      try {
        token = await this.getToken({ reason: 'refresh' });
      } catch (error) {
        if (isSignedOut(error)) {
          // The token source says the session is over (signed out elsewhere).
          if (generation === this.generation) this.stop('signed_out', 4001);
          return;
        }
        throw error;
      }
      if (generation !== this.generation) return;
      const result = await this.request('refresh', { token });
      this.token = token;
      this.events.emit('token_refreshed', { expiresAt: result.expires_at ?? null });
      this.scheduleRefresh(result.expires_at ?? null);
    } catch (error) {
      if (generation !== this.generation) return;
      this.events.emit('error', error);
      // Try again shortly; if the token expires first, the server closes
      // with 4002 and the reconnect fetches a fresh one.
      this.clearTimer('refreshTimer');
      this.refreshTimer = setTimeout(() => this.refreshToken(), 2000);
    } finally {
      if (generation === this.generation) this.refreshing = false;
    }
  }

  // ------------------------------------------------------------ helpers

  /** @param {'reconnectTimer' | 'connectTimer' | 'stableTimer' | 'refreshTimer'} name */
  clearTimer(name) {
    const timer = this[name];
    if (timer) clearTimeout(timer);
    this[name] = null;
  }

  /**
   * Reconnects at once when the browser comes back online or the tab
   * becomes visible, instead of waiting out the backoff.
   * @param {any} env
   */
  watchEnvironment(env) {
    if (!env || typeof env.addEventListener !== 'function') return;
    const online = () => this.retryNow();
    env.addEventListener('online', online);
    const doc = env.document;
    const visible = () => {
      if (doc.visibilityState === 'visible') this.retryNow();
    };
    if (doc && typeof doc.addEventListener === 'function') doc.addEventListener('visibilitychange', visible);
    this.detachEnvironment = () => {
      env.removeEventListener('online', online);
      if (doc && typeof doc.removeEventListener === 'function') doc.removeEventListener('visibilitychange', visible);
    };
  }

  /**
   * @param {unknown} error
   * @param {{event: string}} info
   * @param {((error: unknown, info: {event: string}) => void) | undefined} hook
   */
  reportHandlerError(error, info, hook) {
    if (hook) hook(error, info);
    else console.error(`chorus: a handler of "${info.event}" threw`, error);
    if (info.event !== 'handler_error') this.events.emit('handler_error', { error, event: info.event });
  }
}

/**
 * Whether a token source's error means there is no session to get a token
 * from any more (`signed_out`, or the server refusing the refresh token).
 * @param {unknown} error
 */
function isSignedOut(error) {
  return error instanceof ChorusError && (error.code === 'signed_out' || error.code === 'unauthorized' || error.code === 'token_expired');
}

/**
 * The WebSocket URL and the HTTP base (ending in `/`) of a server given
 * either way.
 * @param {string} url
 */
export function resolveUrls(url) {
  if (typeof url !== 'string' || url === '') throw new TypeError('Chorus: options.url is required');
  const parsed = new URL(url);
  if (parsed.protocol === 'ws:' || parsed.protocol === 'wss:') {
    const http = new URL(parsed.href);
    http.protocol = parsed.protocol === 'wss:' ? 'https:' : 'http:';
    http.pathname = http.pathname.replace(/ws\/?$/, '');
    http.search = '';
    return { ws: parsed.href, http: http.href };
  }
  const base = new URL(parsed.href);
  base.search = '';
  base.hash = '';
  if (!base.pathname.endsWith('/')) base.pathname += '/';
  const ws = new URL('ws', base);
  ws.protocol = base.protocol === 'https:' ? 'wss:' : 'ws:';
  return { ws: ws.href, http: base.href };
}
