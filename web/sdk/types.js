// Shapes of the wire format the SDK reads (PROTOCOL.md), as JSDoc types for
// `tsc --checkJs`. This module exports nothing at run time.

/**
 * A position in a channel's stream.
 * @typedef {object} Position
 * @property {number} offset
 * @property {string} epoch
 */

/**
 * An event of a channel's stream (`message_created`, `agent_thinking`, ...).
 * @typedef {object} ChannelEvent
 * @property {string} type
 * @property {string} channel
 * @property {number} offset
 * @property {string} epoch
 * @property {string} timestamp
 * @property {Record<string, any>} data
 */

/**
 * Any push: a channel event or a control push (`recovery_failed`,
 * `unsubscribed`, `connected`, ...).
 * @typedef {object} Push
 * @property {string} type
 * @property {string} [channel]
 * @property {number} [offset]
 * @property {string} [epoch]
 * @property {string} [timestamp]
 * @property {Record<string, any>} [data]
 */

/**
 * The result of the `connect` command.
 * @typedef {object} ConnectResult
 * @property {string} connection_id
 * @property {string} user_id
 * @property {string} node
 * @property {number} protocol_version
 * @property {string | null} [expires_at]
 * @property {number} ping_interval_ms
 * @property {number} pong_timeout_ms
 */

/**
 * @typedef {object} SubscribeResult
 * @property {string} channel
 * @property {number} offset
 * @property {string} epoch
 * @property {boolean} [recovered]
 */

/**
 * A stored chat message (REST and `message_created` alike).
 * @typedef {object} Message
 * @property {string} id
 * @property {string} channel_id
 * @property {number} seq
 * @property {{kind: string, id: string, name?: string, display_name?: string}} author
 * @property {string} text
 * @property {string} created_at
 * @property {string} [edited_at]
 * @property {string} [deleted_at]
 * @property {string} [run_id]
 */

export {};
