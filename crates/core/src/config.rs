//! Settings of the realtime core. Defaults and where they come from: `docs/decisions.md`.
//!
//! [`Limits`] and [`RateLimits`] can change at run time (SIGHUP); the hub
//! reads them through a `watch` channel. Everything else is fixed at start.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Count and size limits. Reloadable (queue bounds apply to open
/// connections at once; the WebSocket hard cap only to new ones).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Connections per user across the cluster; one more closes the oldest.
    pub connections_per_user: usize,
    /// Connections this node accepts before refusing new ones.
    pub connections_per_node: usize,
    /// New connections per second this node accepts.
    pub connects_per_second: u32,
    /// Channels one connection may be subscribed to.
    pub subscriptions_per_connection: usize,
    /// Outbound queue per connection: messages...
    pub outbound_queue_messages: usize,
    /// ...or bytes, whichever is reached first; then the client is a slow consumer.
    pub outbound_queue_bytes: usize,
    /// Largest text frame answered normally; larger ones get `frame_too_large`.
    pub frame_bytes: usize,
    /// Largest frame read at all; larger ones close the connection with 1009.
    pub frame_hard_cap_bytes: usize,
    /// Largest `limit` of a `history` command.
    pub history_page: usize,
    /// Typing indicators tracked on this node.
    pub typing_entries: usize,
    /// Entries in each keyed rate limiter before new keys are refused.
    pub limiter_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connections_per_user: 3,
            connections_per_node: 100_000,
            connects_per_second: 2_000,
            subscriptions_per_connection: 128,
            outbound_queue_messages: 50,
            outbound_queue_bytes: 1024 * 1024,
            frame_bytes: 64 * 1024,
            frame_hard_cap_bytes: 1024 * 1024,
            history_page: 1_000,
            typing_entries: 100_000,
            limiter_entries: 1_000_000,
        }
    }
}

/// Inbound rate limits. Reloadable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    /// Frames per second per connection...
    pub frames_per_second: f64,
    /// ...with this burst.
    pub frames_burst: u32,
    /// Frames per second per user, over all of the user's connections...
    pub user_frames_per_second: f64,
    pub user_frames_burst: u32,
    /// Chat messages and client publications per minute per user...
    pub messages_per_minute: f64,
    pub messages_burst: u32,
    /// REST requests per minute per caller...
    pub rest_per_minute: f64,
    pub rest_burst: u32,
    /// Publications per second through the server publish API per key a
    /// user created (a batch counts each item)...
    pub api_key_publishes_per_second: f64,
    pub api_key_publish_burst: u32,
    /// ...and per server key (`[auth] api_keys`).
    pub server_key_publishes_per_second: f64,
    pub server_key_publish_burst: u32,
    /// Frames refused for rate in a row before the connection is closed with 4007.
    pub flood_strikes: u32,
    /// Limiter entries idle this long are dropped...
    #[serde(with = "humantime_serde")]
    pub limiter_idle: Duration,
    /// ...by a sweep this often.
    #[serde(with = "humantime_serde")]
    pub limiter_sweep: Duration,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            frames_per_second: 100.0,
            frames_burst: 200,
            user_frames_per_second: 200.0,
            user_frames_burst: 400,
            messages_per_minute: 30.0,
            messages_burst: 5,
            rest_per_minute: 600.0,
            rest_burst: 60,
            api_key_publishes_per_second: 100.0,
            api_key_publish_burst: 200,
            server_key_publishes_per_second: 10_000.0,
            server_key_publish_burst: 20_000,
            flood_strikes: 50,
            limiter_idle: Duration::from_secs(2 * 3600),
            limiter_sweep: Duration::from_secs(3600),
        }
    }
}

/// Timers. Fixed at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timing {
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub pong_timeout: Duration,
    /// A connection whose writes (pings included) make no progress for this
    /// long is closed as stale; transports check it on every write.
    #[serde(with = "humantime_serde")]
    pub stale_after: Duration,
    /// How often the cleanup pass runs (empty channels unlistened, the
    /// broker's idle streams dropped).
    #[serde(with = "humantime_serde")]
    pub cleanup_interval: Duration,
    /// A WebSocket opened without a token must send `connect` within this.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub typing_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub sse_keepalive: Duration,
    /// Longest a shutdown waits for connections and tasks to finish.
    #[serde(with = "humantime_serde")]
    pub drain_limit: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(20),
            stale_after: Duration::from_secs(120),
            cleanup_interval: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            typing_ttl: Duration::from_secs(5),
            sse_keepalive: Duration::from_secs(15),
            drain_limit: Duration::from_secs(10),
        }
    }
}

/// Who may subscribe to a namespace's channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscribeRule {
    /// `user:<id>`: only the user whose id is the channel id.
    Owner,
    /// Membership decides, through the configured [`crate::access::MembershipCheck`].
    Members,
    /// A grant in the token (exact name or `ns:prefix*`).
    Grants,
    /// Any authenticated user.
    Authenticated,
}

/// Who may `publish` on a namespace's channels from a client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PublishRule {
    /// Only the server (publish API, chat messages, agents).
    Server,
    /// Anyone allowed to subscribe.
    Subscribers,
}

/// Rules of one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NamespaceConfig {
    pub subscribe: SubscribeRule,
    pub publish: PublishRule,
    /// Track who is in the channel and push `presence_joined` / `presence_left`.
    pub presence: bool,
    /// Allow `typing`.
    pub typing: bool,
    /// Events kept for recovery and `history`...
    pub history_size: usize,
    /// ...for at most this long.
    #[serde(with = "humantime_serde")]
    pub history_ttl: Duration,
}

impl Default for NamespaceConfig {
    fn default() -> Self {
        Self {
            subscribe: SubscribeRule::Grants,
            publish: PublishRule::Server,
            presence: false,
            typing: false,
            history_size: 1_000,
            history_ttl: Duration::from_secs(3600),
        }
    }
}

/// The namespaces a server knows; channels in any other namespace are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Namespaces(pub BTreeMap<String, NamespaceConfig>);

impl Default for Namespaces {
    fn default() -> Self {
        let mut m = BTreeMap::new();
        m.insert(
            "user".to_owned(),
            NamespaceConfig { subscribe: SubscribeRule::Owner, ..NamespaceConfig::default() },
        );
        m.insert(
            "room".to_owned(),
            NamespaceConfig {
                subscribe: SubscribeRule::Members,
                presence: true,
                typing: true,
                ..NamespaceConfig::default()
            },
        );
        Self(m)
    }
}

impl Namespaces {
    pub fn get(&self, ns: &str) -> Option<&NamespaceConfig> {
        self.0.get(ns)
    }
}

/// Memory bounds of the in-memory broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryBrokerConfig {
    /// Channel streams kept; past this the least recently used ones that
    /// nobody listens to are dropped (a client that later needs their
    /// history gets `recovery_failed`).
    pub max_streams: usize,
    /// Bytes of history kept over all streams; past this the oldest events
    /// of the least recently used streams are dropped.
    pub max_bytes: usize,
}

impl Default for MemoryBrokerConfig {
    fn default() -> Self {
        Self { max_streams: 100_000, max_bytes: 1024 * 1024 * 1024 }
    }
}
