// A small event emitter. Handlers are removable, and an exception in one is
// caught and reported to the `onHandlerError` hook instead of breaking the
// caller (a UI bug must never take the client's connection down with it).

/**
 * @typedef {(error: unknown, info: {event: string}) => void} HandlerErrorHook
 */

/**
 * @template {Record<string, any>} Events
 */
export class Emitter {
  /** @param {HandlerErrorHook} [onHandlerError] */
  constructor(onHandlerError) {
    /** @type {Map<string, Set<(payload: any) => void>>} */
    this.handlers = new Map();
    /** @type {HandlerErrorHook} */
    this.onHandlerError = onHandlerError ?? defaultHandlerError;
  }

  /**
   * Adds a handler; returns a function that removes it.
   * @template {keyof Events & string} K
   * @param {K} event
   * @param {(payload: Events[K]) => void} handler
   * @returns {() => void}
   */
  on(event, handler) {
    let set = this.handlers.get(event);
    if (!set) {
      set = new Set();
      this.handlers.set(event, set);
    }
    set.add(handler);
    return () => this.off(event, handler);
  }

  /**
   * @template {keyof Events & string} K
   * @param {K} event
   * @param {(payload: Events[K]) => void} handler
   */
  off(event, handler) {
    const set = this.handlers.get(event);
    if (!set) return;
    set.delete(handler);
    if (set.size === 0) this.handlers.delete(event);
  }

  /**
   * Calls every handler of `event` with `payload`; returns how many ran.
   * @template {keyof Events & string} K
   * @param {K} event
   * @param {Events[K]} payload
   * @returns {number}
   */
  emit(event, payload) {
    const set = this.handlers.get(event);
    if (!set) return 0;
    // A copy: a handler may remove itself or add others while we iterate.
    for (const handler of [...set]) {
      try {
        handler(payload);
      } catch (error) {
        try {
          this.onHandlerError(error, { event });
        } catch {
          // The reporter itself failed; nothing sensible is left to do.
        }
      }
    }
    return set.size;
  }

  /** @param {string} event */
  listenerCount(event) {
    return this.handlers.get(event)?.size ?? 0;
  }
}

/** @type {HandlerErrorHook} */
function defaultHandlerError(error, info) {
  console.error(`chorus: a handler of "${info.event}" threw`, error);
}
