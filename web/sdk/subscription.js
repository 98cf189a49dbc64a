// One subscription per channel, alive across reconnects. It remembers the
// last position it delivered and resumes from it (`since`); it drops what it
// has already seen, resubscribes when it notices a gap, and on
// `recovery_failed` lets the app refetch its state (`loadState`) while
// holding back live events, which it then delivers on top.

import { Emitter } from './emitter.js';
import { ChorusError } from './errors.js';
import { Presence, Typing } from './presence.js';
import { RUN_EVENTS, RunTracker } from './runs.js';

/** @typedef {import('./types.js').ChannelEvent} ChannelEvent */
/** @typedef {import('./types.js').Push} Push */
/** @typedef {import('./types.js').Position} Position */
/** @typedef {import('./client.js').Chorus} Chorus */

/**
 * Why `loadState` runs: `initial` (the first subscribe: load what happened
 * before it), `recovery_failed` (events were lost: refetch).
 * @typedef {object} LoadContext
 * @property {'initial' | 'recovery_failed'} reason
 * @property {Subscription} subscription
 */

/**
 * @typedef {object} SubscriptionOptions
 * @property {(context: LoadContext) => Promise<void> | void} [loadState] refetch the channel's state over REST; live events wait for it
 * @property {Position} [since] start after this position instead of now
 * @property {boolean} [presence] keep a presence snapshot (`room:` channels)
 * @property {boolean} [runs] keep run view models, loaded from REST with the state (at the start and after `recovery_failed`; `room:` channels)
 */

/**
 * `pending`: waiting for a connection; `subscribing`: the command is out;
 * `live`: events flow; `failed`: the server refused (see `error`);
 * `ended`: the server ended it (`unsubscribed`) or the app closed it.
 * @typedef {'pending' | 'subscribing' | 'live' | 'failed' | 'ended'} SubscriptionState
 */

/**
 * @typedef {object} SubscriptionEvents
 * @property {ChannelEvent} event every new channel event, in order, once
 * @property {{state: SubscriptionState, error?: ChorusError}} state
 * @property {Push} recovery_failed events were lost; `loadState` runs next
 * @property {{reason: 'initial' | 'recovery_failed'}} loaded `loadState` finished and held events were delivered
 * @property {Push} unsubscribed the server ended the subscription
 * @property {unknown} error
 */

/** Message ids remembered for deduplication. */
const SEEN_IDS = 5000;
/** Events held while `loadState` runs; past this the state is loaded again. */
const MAX_HELD = 5000;

export class Subscription {
  /**
   * @param {Chorus} client
   * @param {string} channel
   * @param {SubscriptionOptions} options
   */
  constructor(client, channel, options) {
    this.client = client;
    this.channel = channel;
    this.options = options;
    const onHandlerError = client.events.onHandlerError;
    /** @type {Emitter<SubscriptionEvents & Record<string, any>>} */
    this.events = new Emitter(onHandlerError);
    /** @type {SubscriptionState} */
    this.state = 'pending';
    /** @type {ChorusError | null} */
    this.error = null;
    /** The last event accepted. @type {Position | null} */
    this.position = options.since ? { ...options.since } : null;
    this.loadedOnce = Boolean(options.since);
    /** Events waiting for `loadState`; null when not loading. @type {ChannelEvent[] | null} */
    this.held = null;
    this.reloadAgain = false;
    /** @type {Set<string>} */
    this.seen = new Set();
    /** Bumped on every (re)subscribe and suspend; replies of older attempts are ignored. */
    this.attempt = 0;
    this.resubscribing = false;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.retryTimer = null;
    this.presence = options.presence ? new Presence(onHandlerError) : null;
    this.typing = new Typing(onHandlerError);
    this.runs = options.runs ? new RunTracker(onHandlerError) : null;
  }

  /**
   * `event` (every channel event), a type (`message_created`, ...), `state`,
   * `recovery_failed`, `loaded`, `unsubscribed`, `error`.
   * @param {string} event
   * @param {(payload: any) => void} handler
   */
  on(event, handler) {
    return this.events.on(event, handler);
  }

  /** The id after `room:` (or the whole name for other namespaces). */
  get id() {
    const i = this.channel.indexOf(':');
    return i < 0 ? this.channel : this.channel.slice(i + 1);
  }

  // ------------------------------------------------------------ lifecycle (called by the client)

  /** Subscribes on the live connection, resuming from the last position. */
  async start() {
    if (this.state === 'ended' || this.state === 'failed') return;
    this.clearRetry();
    const attempt = ++this.attempt;
    this.setState('subscribing');
    /** @type {Record<string, any>} */
    const fields = { channel: this.channel };
    if (this.position) fields.since = this.position;
    try {
      // Handled as the reply arrives: the channel's pushes follow right behind it.
      await this.client.request('subscribe', fields, { onResult: (result) => this.onSubscribed(attempt, result) });
    } catch (error) {
      if (attempt !== this.attempt) return;
      this.onSubscribeError(error);
    }
  }

  /**
   * @param {number} attempt
   * @param {import('./types.js').SubscribeResult} result
   */
  onSubscribed(attempt, result) {
    if (attempt !== this.attempt) return;
    this.resubscribing = false;
    this.setState('live');
    if (!this.position) {
      this.position = { offset: result.offset, epoch: result.epoch };
    }
    this.takePresence(attempt);
    if (!this.loadedOnce) {
      this.loadedOnce = true;
      this.load('initial');
    }
    // With `since`: `recovered` true means the missed events follow;
    // false means a `recovery_failed` push follows, which reloads.
  }

  /** The connection is gone: wait for the next one. */
  suspend() {
    this.attempt += 1;
    this.clearRetry();
    this.resubscribing = false;
    this.typing.clear();
    if (this.state === 'subscribing' || this.state === 'live') this.setState('pending');
  }

  /** The app unsubscribed. */
  close() {
    this.attempt += 1;
    this.clearRetry();
    this.typing.clear();
    this.setState('ended');
  }

  /** @param {unknown} error */
  onSubscribeError(error) {
    const code = error instanceof ChorusError ? error.code : 'internal';
    if (code === 'disconnected') return; // start() runs again on the next connection
    if (code === 'conflict') {
      // Already subscribed on this connection (a resubscribe raced): end it, start over.
      this.resubscribe();
      return;
    }
    if (code === 'timeout' || code === 'unavailable' || code === 'rate_limited' || code === 'internal') {
      this.events.emit('error', error);
      this.retryTimer = setTimeout(() => {
        this.retryTimer = null;
        if (this.client.state === 'connected') this.start();
      }, 2000);
      return;
    }
    this.error = error instanceof ChorusError ? error : new ChorusError(code, String(error));
    this.setState('failed', this.error);
    this.events.emit('error', error);
  }

  /** Ends the subscription on the server and subscribes again from our position. */
  async resubscribe() {
    if (this.resubscribing || this.client.state !== 'connected') return;
    this.resubscribing = true;
    const attempt = ++this.attempt;
    this.setState('subscribing');
    try {
      await this.client.request('unsubscribe', { channel: this.channel });
    } catch {
      // If the connection went, start() runs again on the next one.
    }
    if (attempt !== this.attempt) return;
    this.resubscribing = false;
    this.start();
  }

  // ------------------------------------------------------------ pushes

  /** @param {Push} push */
  onPush(push) {
    if (this.state === 'ended' || this.state === 'failed') return;
    if (push.type === 'recovery_failed') {
      this.onRecoveryFailed(push);
      return;
    }
    if (push.type === 'unsubscribed') {
      this.attempt += 1;
      this.typing.clear();
      this.setState('ended');
      this.events.emit('unsubscribed', push);
      return;
    }
    if (typeof push.offset !== 'number' || typeof push.epoch !== 'string') return;
    // While a resubscribe is under way, its replay brings these again.
    if (this.resubscribing || this.state !== 'live') return;
    const event = /** @type {ChannelEvent} */ (push);
    const pos = this.position;
    if (pos && event.epoch === pos.epoch && event.offset <= pos.offset) return; // seen
    if (pos && (event.epoch !== pos.epoch || event.offset !== pos.offset + 1)) {
      // A gap (or a new epoch without a word): get the missed events, or a
      // `recovery_failed`, by resubscribing from where we are.
      this.resubscribe();
      return;
    }
    this.position = { offset: event.offset, epoch: event.epoch };
    if (this.held) {
      if (this.held.length >= MAX_HELD) {
        this.held = [];
        this.reloadAgain = true;
      }
      this.held.push(event);
      return;
    }
    this.deliver(event);
  }

  /** @param {Push} push */
  onRecoveryFailed(push) {
    if (typeof push.offset === 'number' && typeof push.epoch === 'string') {
      this.position = { offset: push.offset, epoch: push.epoch };
    }
    this.typing.clear();
    this.events.emit('recovery_failed', push);
    this.load('recovery_failed');
  }

  /**
   * Runs `loadState` (and rebuilds runs) while live events wait, then
   * delivers them.
   * @param {'initial' | 'recovery_failed'} reason
   */
  async load(reason) {
    if (this.held) {
      // Already loading: load once more when it finishes.
      this.reloadAgain = true;
      return;
    }
    this.held = [];
    try {
      do {
        this.reloadAgain = false;
        const tasks = [];
        if (this.options.loadState) tasks.push(Promise.resolve().then(() => this.options.loadState?.({ reason, subscription: this })));
        // Runs under way when the page loaded, or whose events were lost.
        if (this.runs) tasks.push(this.rebuildRuns());
        const results = await Promise.allSettled(tasks);
        for (const r of results) if (r.status === 'rejected') this.events.emit('error', r.reason);
      } while (this.reloadAgain);
    } finally {
      /** @type {ChannelEvent[]} */
      const held = this.held ?? [];
      this.held = null;
      for (const event of held) this.deliver(event);
      this.events.emit('loaded', { reason });
    }
  }

  /** The channel's active runs over REST (`room:` channels). */
  async rebuildRuns() {
    if (!this.runs || !this.channel.startsWith('room:')) return;
    let body;
    try {
      body = await this.client.rest.get(`channels/${encodeURIComponent(this.id)}/runs?status=active`);
    } catch (error) {
      // No such channel, or a server without an agent runtime: nothing is active.
      if (!(error instanceof ChorusError && (error.code === 'not_found' || error.code === 'unavailable'))) throw error;
      body = { runs: [] };
    }
    this.runs.rebuild(Array.isArray(body?.runs) ? body.runs : []);
  }

  /** @param {ChannelEvent} event */
  deliver(event) {
    if (event.type === 'message_created') {
      const id = event.data?.message?.id;
      if (typeof id === 'string') {
        if (this.seen.has(id)) return;
        this.seen.add(id);
        if (this.seen.size > SEEN_IDS) {
          const oldest = this.seen.values().next().value;
          if (oldest !== undefined) this.seen.delete(oldest);
        }
      }
    }
    this.presence?.onEvent(event);
    this.typing.onEvent(event);
    if (this.runs && (RUN_EVENTS.has(event.type) || event.type === 'message_created')) this.runs.onEvent(event);
    this.events.emit('event', event);
    this.events.emit(event.type, event);
  }

  // ------------------------------------------------------------ presence

  /** @param {number} attempt */
  async takePresence(attempt) {
    const presence = this.presence;
    if (!presence) return;
    presence.beginSnapshot();
    try {
      const result = await this.client.request('presence', { channel: this.channel });
      if (attempt !== this.attempt) {
        presence.abandonSnapshot();
        return;
      }
      presence.applySnapshot(result);
    } catch (error) {
      presence.abandonSnapshot();
      if (!(error instanceof ChorusError && error.code === 'disconnected')) this.events.emit('error', error);
    }
  }

  // ------------------------------------------------------------ helpers

  /**
   * @param {SubscriptionState} state
   * @param {ChorusError} [error]
   */
  setState(state, error) {
    if (this.state === state) return;
    this.state = state;
    this.events.emit('state', error ? { state, error } : { state });
  }

  clearRetry() {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }
}
