// What a WebSocket close code tells the client to do (PROTOCOL.md, "Close
// codes"). A browser sees every failed upgrade as 1006, which is why the
// client authenticates with the `connect` command after the upgrade.

/**
 * `reconnect`: come back after the backoff delay (with recovery);
 * `new_token`: fetch a fresh token first, then reconnect;
 * `stop`: never reconnect on its own (the app decides).
 * @typedef {'reconnect' | 'new_token' | 'stop'} CloseAction
 */

/**
 * @typedef {object} ClosePolicy
 * @property {CloseAction} action
 * @property {string} reason short machine-readable reason (e.g. `replaced`)
 * @property {number} [floorMs] least delay before reconnecting
 */

/** @type {Record<number, ClosePolicy>} */
const POLICIES = {
  1003: { action: 'stop', reason: 'protocol_error' },
  1009: { action: 'stop', reason: 'protocol_error' },
  1012: { action: 'reconnect', reason: 'server_restart' },
  1013: { action: 'reconnect', reason: 'try_again_later', floorMs: 2000 },
  4000: { action: 'stop', reason: 'protocol_error' },
  4001: { action: 'new_token', reason: 'unauthorized' },
  4002: { action: 'new_token', reason: 'token_expired' },
  4003: { action: 'stop', reason: 'revoked' },
  4004: { action: 'stop', reason: 'replaced' },
  4005: { action: 'reconnect', reason: 'slow_consumer' },
  4006: { action: 'reconnect', reason: 'stale' },
  4007: { action: 'reconnect', reason: 'flood', floorMs: 5000 },
  4008: { action: 'reconnect', reason: 'insufficient_state' },
  4009: { action: 'stop', reason: 'admin_disconnect' },
};

/**
 * @param {number} code
 * @returns {ClosePolicy}
 */
export function closePolicy(code) {
  // 1000, 1001, 1005, 1006, 1011 and anything unknown: the connection was
  // lost or ended without a verdict on the client; come back.
  return POLICIES[code] ?? { action: 'reconnect', reason: code === 1006 ? 'connection_lost' : 'closed' };
}
