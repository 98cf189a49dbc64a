// Chat messages waiting to be sent. Each gets an idempotency key when it is
// written; it is sent with that key whenever the client is connected, one at
// a time in order, and re-sent with the same key after a reconnect (the
// server then answers with the stored message instead of storing it twice).
// Only a definite refusal fails it for good.

import { Emitter } from './emitter.js';
import { ChorusError } from './errors.js';

/** @typedef {import('./client.js').Chorus} Chorus */

/**
 * @typedef {object} OutboxItem
 * @property {string} key the idempotency key
 * @property {string} channel
 * @property {string} text
 * @property {'pending' | 'sent' | 'failed'} status
 * @property {number} attempts
 * @property {string} createdAt
 * @property {Record<string, any> | null} result the `send_message` result once sent
 * @property {ChorusError | null} error why it failed
 * @property {Promise<Record<string, any>>} done resolves when sent, rejects when failed
 */

/**
 * @typedef {object} OutboxEvents
 * @property {{item: OutboxItem}} change
 */

export class Outbox {
  /**
   * @param {Chorus} client
   * @param {{limit: number}} options
   */
  constructor(client, options) {
    this.client = client;
    this.limit = options.limit;
    /** Items not yet sent, in order. @type {OutboxItem[]} */
    this.queue = [];
    /** @type {Map<string, {resolve: (v: any) => void, reject: (e: ChorusError) => void}>} */
    this.waiters = new Map();
    this.flushing = false;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.retryTimer = null;
    /** @type {Emitter<OutboxEvents>} */
    this.events = new Emitter(client.events.onHandlerError);
  }

  /**
   * @param {'change'} event
   * @param {(payload: {item: OutboxItem}) => void} handler
   */
  on(event, handler) {
    return this.events.on(event, handler);
  }

  /** Items still pending, in order. */
  pending() {
    return this.queue.filter((i) => i.status === 'pending');
  }

  /**
   * @param {string} channel
   * @param {string} text
   * @returns {OutboxItem}
   */
  add(channel, text) {
    if (this.queue.length >= this.limit) {
      throw new ChorusError('limit_exceeded', `at most ${this.limit} messages may wait to be sent`);
    }
    /** @type {(v: any) => void} */
    let resolve = () => {};
    /** @type {(e: ChorusError) => void} */
    let reject = () => {};
    /** @type {Promise<Record<string, any>>} */
    const done = new Promise((res, rej) => {
      resolve = res;
      reject = rej;
    });
    // An unobserved failure is reported through `change`; never as an unhandled rejection.
    done.catch(() => {});
    /** @type {OutboxItem} */
    const item = { key: newKey(), channel, text, status: 'pending', attempts: 0, createdAt: new Date().toISOString(), result: null, error: null, done };
    this.waiters.set(item.key, { resolve, reject });
    this.queue.push(item);
    this.events.emit('change', { item });
    this.flush();
    return item;
  }

  /**
   * Sends a failed item again (same key: nothing was stored for it).
   * @param {OutboxItem} item
   */
  retry(item) {
    if (item.status !== 'failed') return;
    item.status = 'pending';
    item.error = null;
    if (!this.queue.includes(item)) this.queue.push(item);
    this.events.emit('change', { item });
    this.flush();
  }

  /**
   * Forgets a failed item.
   * @param {OutboxItem} item
   */
  discard(item) {
    if (item.status === 'pending') return;
    this.queue = this.queue.filter((i) => i !== item);
    this.waiters.delete(item.key);
  }

  /** Stops retrying (the client is closed for good). */
  close() {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }

  /** Sends pending items one by one while connected. */
  async flush() {
    if (this.flushing || this.client.state !== 'connected') return;
    this.flushing = true;
    try {
      for (;;) {
        const item = this.queue.find((i) => i.status === 'pending');
        if (!item || this.client.state !== 'connected') return;
        const outcome = await this.sendOne(item);
        if (outcome === 'stop') return;
      }
    } finally {
      this.flushing = false;
    }
  }

  /**
   * @param {OutboxItem} item
   * @returns {Promise<'next' | 'stop'>}
   */
  async sendOne(item) {
    item.attempts += 1;
    try {
      const result = await this.client.request('send_message', { channel: item.channel, text: item.text, idempotency_key: item.key });
      item.status = 'sent';
      item.result = result;
      this.queue = this.queue.filter((i) => i !== item);
      this.waiters.get(item.key)?.resolve(result);
      this.waiters.delete(item.key);
      this.events.emit('change', { item });
      return 'next';
    } catch (e) {
      const error = e instanceof ChorusError ? e : new ChorusError('internal', String(e));
      if (error.code === 'disconnected') return 'stop'; // flushed again on the next connection
      if (error.code === 'timeout' || error.code === 'rate_limited' || error.code === 'unavailable') {
        // Not a verdict: try again with the same key.
        const wait = error.code === 'rate_limited' ? retryDelay(error.message) : 1000;
        this.retryTimer = setTimeout(() => {
          this.retryTimer = null;
          this.flush();
        }, wait);
        return 'stop';
      }
      // A definite refusal, or a code this SDK does not know: failing it
      // (the user can retry) beats re-sending it forever.
      item.status = 'failed';
      item.error = error;
      this.waiters.get(item.key)?.reject(error);
      this.events.emit('change', { item });
      return 'next';
    }
  }
}

/** A unique idempotency key (1-128 visible ASCII characters). */
function newKey() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === 'function') return c.randomUUID();
  return `k-${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

/**
 * The wait a `rate_limited` message names ("retry in 1500 ms"), bounded.
 * @param {string} message
 */
function retryDelay(message) {
  const m = /retry in (\d+) ms/.exec(message);
  const ms = m ? Number(m[1]) : 2000;
  return Math.min(60000, Math.max(250, ms));
}
