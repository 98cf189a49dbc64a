// Who is in a channel, and who is typing there. Presence is a snapshot
// (the `presence` command) kept current by `presence_joined`/`presence_left`
// and taken again after every reconnect; events that arrive while a snapshot
// is on its way are applied after it (each event states the current state,
// so the last one per user wins).

import { Emitter } from './emitter.js';

/** @typedef {import('./types.js').ChannelEvent} ChannelEvent */

/**
 * @typedef {object} PresenceEvents
 * @property {{users: Map<string, number>}} change
 */

/** Users tracked per channel at most; beyond it the snapshot is cut. */
const MAX_USERS = 10000;

export class Presence {
  /** @param {(error: unknown, info: {event: string}) => void} [onHandlerError] */
  constructor(onHandlerError) {
    /** user id → their connection count (0 when only an event told us). @type {Map<string, number>} */
    this.users = new Map();
    /** Events held back while a snapshot is on its way. @type {ChannelEvent[] | null} */
    this.held = null;
    /** Whether a snapshot was ever applied on the current connection. */
    this.current = false;
    /** @type {Emitter<PresenceEvents>} */
    this.events = new Emitter(onHandlerError);
  }

  /**
   * @param {'change'} event
   * @param {(payload: {users: Map<string, number>}) => void} handler
   */
  on(event, handler) {
    return this.events.on(event, handler);
  }

  /** Whether `userId` is present. @param {string} userId */
  has(userId) {
    return this.users.has(userId);
  }

  /** Starts a snapshot: events from now on wait for it. */
  beginSnapshot() {
    this.held = [];
    this.current = false;
  }

  /** @param {{users: {user_id: string, connections?: number}[]}} result */
  applySnapshot(result) {
    this.users = new Map();
    for (const u of (result.users ?? []).slice(0, MAX_USERS)) this.users.set(u.user_id, u.connections ?? 1);
    /** @type {ChannelEvent[]} */
    const held = this.held ?? [];
    this.held = null;
    this.current = true;
    for (const event of held) this.apply(event);
    this.changed();
  }

  /** The snapshot failed (e.g. no presence in this namespace): stop holding. */
  abandonSnapshot() {
    /** @type {ChannelEvent[]} */
    const held = this.held ?? [];
    this.held = null;
    for (const event of held) this.apply(event);
    if (held.length) this.changed();
  }

  /** @param {ChannelEvent} event */
  onEvent(event) {
    if (event.type !== 'presence_joined' && event.type !== 'presence_left') return;
    if (this.held) {
      if (this.held.length < MAX_USERS) this.held.push(event);
      return;
    }
    this.apply(event);
    this.changed();
  }

  /** @param {ChannelEvent} event */
  apply(event) {
    const user = event.data?.user_id;
    if (typeof user !== 'string') return;
    if (event.type === 'presence_joined') {
      if (!this.users.has(user) && this.users.size < MAX_USERS) this.users.set(user, 1);
    } else {
      this.users.delete(user);
    }
  }

  changed() {
    this.events.emit('change', { users: this.users });
  }
}

/**
 * @typedef {object} TypingEvents
 * @property {{users: string[]}} change
 */

export class Typing {
  /**
   * @param {(error: unknown, info: {event: string}) => void} [onHandlerError]
   * @param {() => number} [now]
   */
  constructor(onHandlerError, now = Date.now) {
    /** user id → expiry (ms since the epoch). @type {Map<string, number>} */
    this.until = new Map();
    /** @type {Map<string, ReturnType<typeof setTimeout>>} */
    this.timers = new Map();
    this.now = now;
    /** @type {Emitter<TypingEvents>} */
    this.events = new Emitter(onHandlerError);
  }

  /**
   * @param {'change'} event
   * @param {(payload: {users: string[]}) => void} handler
   */
  on(event, handler) {
    return this.events.on(event, handler);
  }

  /** Users typing now, in the order they started. */
  get users() {
    return [...this.until.keys()];
  }

  /** @param {ChannelEvent} event */
  onEvent(event) {
    const user = event.data?.user_id;
    if (typeof user !== 'string') return;
    if (event.type === 'typing_started') {
      const expires = Date.parse(event.data.expires_at);
      // Our clock may differ from the server's; never longer than 10 s.
      const ms = Number.isFinite(expires) ? Math.min(10000, Math.max(0, expires - this.now())) : 5000;
      this.set(user, ms);
    } else if (event.type === 'typing_stopped' || event.type === 'presence_left') {
      this.remove(user);
    } else if (event.type === 'message_created' && event.data?.message?.author?.id) {
      // Sending a message ends typing; the server says so too, maybe later.
      this.remove(event.data.message.author.id);
    }
  }

  /**
   * @param {string} user
   * @param {number} ms
   */
  set(user, ms) {
    const old = this.timers.get(user);
    if (old) clearTimeout(old);
    if (!this.until.has(user) && this.until.size >= MAX_USERS) return;
    this.until.set(user, this.now() + ms);
    this.timers.set(user, setTimeout(() => this.remove(user), ms));
    this.events.emit('change', { users: this.users });
  }

  /** @param {string} user */
  remove(user) {
    const timer = this.timers.get(user);
    if (timer) clearTimeout(timer);
    this.timers.delete(user);
    if (this.until.delete(user)) this.events.emit('change', { users: this.users });
  }

  clear() {
    for (const timer of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
    if (this.until.size) {
      this.until.clear();
      this.events.emit('change', { users: [] });
    }
  }
}
