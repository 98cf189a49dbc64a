//! Settings of the Redis engine (`[broker.redis]`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisBrokerConfig {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// Prefix of every key and pub/sub channel, so deployments can share a Redis.
    pub key_prefix: String,
    /// Longest a command may take before Redis counts as unreachable.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// How often the node checks Redis (a publish it must receive back on its
    /// own pub/sub connection); a failed check turns the node degraded.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// Delay between reconnection attempts.
    #[serde(with = "humantime_serde")]
    pub reconnect_delay: Duration,
    /// How often the node renews its heartbeat and sweeps dead nodes.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A node silent this long is dead: its presence entries and registered
    /// connections are removed and its users announced as left.
    #[serde(with = "humantime_serde")]
    pub node_ttl: Duration,
    /// A channel's epoch and top offset are kept this long after its last
    /// publish or read (its events expire with the namespace's history TTL).
    #[serde(with = "humantime_serde")]
    pub meta_ttl: Duration,
    /// Control messages (disconnects, maintenance, revocations) kept for
    /// nodes that were cut off from Redis to replay: at most this many...
    pub control_max_entries: usize,
    /// ...and none older than this.
    #[serde(with = "humantime_serde")]
    pub control_replay: Duration,
    /// Pub/sub messages buffered between the connection and the delivery
    /// task; an overflow is treated as a loss and every channel is resynced.
    pub pubsub_buffer: usize,
}

impl Default for RedisBrokerConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            key_prefix: "chorus".into(),
            command_timeout: Duration::from_millis(500),
            probe_interval: Duration::from_millis(250),
            reconnect_delay: Duration::from_millis(250),
            heartbeat_interval: Duration::from_secs(5),
            node_ttl: Duration::from_secs(20),
            meta_ttl: Duration::from_secs(24 * 3600),
            control_max_entries: 10_000,
            control_replay: Duration::from_secs(600),
            pubsub_buffer: 65_536,
        }
    }
}

impl RedisBrokerConfig {
    /// Checks values that would make the engine misbehave.
    pub fn validate(&self) -> Result<(), String> {
        if self.url.trim().is_empty() {
            return Err("broker.redis.url must be set".into());
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains(['{', '}', '\n', '\t', ' ']) {
            return Err("broker.redis.key_prefix must be non-empty without braces or whitespace".into());
        }
        if self.command_timeout.is_zero() || self.probe_interval.is_zero() || self.heartbeat_interval.is_zero() {
            return Err("broker.redis timing values must be positive".into());
        }
        if self.node_ttl <= self.heartbeat_interval * 2 {
            return Err("broker.redis.node_ttl must exceed two heartbeat intervals".into());
        }
        if self.meta_ttl < Duration::from_secs(1) {
            return Err("broker.redis.meta_ttl must be at least 1s".into());
        }
        if self.pubsub_buffer < 64 || self.control_max_entries == 0 {
            return Err("broker.redis.pubsub_buffer must be at least 64 and control_max_entries at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dead node's entries go once a live node's heartbeat finds its own
    /// older than `node_ttl`: at most `node_ttl` + one heartbeat after its
    /// last one. The defaults must keep that within the promised 30 s.
    #[test]
    fn by_default_a_dead_node_is_swept_within_30_seconds() {
        let c = RedisBrokerConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert!(c.node_ttl + c.heartbeat_interval <= Duration::from_secs(30), "{:?} + {:?}", c.node_ttl, c.heartbeat_interval);
    }
}
