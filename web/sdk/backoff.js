// Reconnect delays: exponential with full jitter between `minMs` and a
// ceiling that doubles per attempt up to `maxMs`, so a thousand clients cut
// at once do not come back in step.

/**
 * @typedef {object} BackoffOptions
 * @property {number} [minMs] shortest delay (500)
 * @property {number} [maxMs] longest delay (20000)
 * @property {() => number} [random] uniform in [0, 1) (Math.random)
 */

export class Backoff {
  /** @param {BackoffOptions} [options] */
  constructor(options = {}) {
    this.minMs = options.minMs ?? 500;
    this.maxMs = options.maxMs ?? 20000;
    this.random = options.random ?? Math.random;
    this.attempt = 0;
  }

  /**
   * The delay before the next attempt; each call counts one attempt.
   * @param {number} [floorMs] a lower bound for this delay (e.g. after a flood close)
   */
  next(floorMs = 0) {
    const ceiling = Math.min(this.maxMs, this.minMs * 2 ** Math.min(this.attempt, 30));
    this.attempt += 1;
    const delay = this.minMs + this.random() * (ceiling - this.minMs);
    return Math.min(this.maxMs, Math.max(floorMs, Math.round(delay)));
  }

  reset() {
    this.attempt = 0;
  }
}
