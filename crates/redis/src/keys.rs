//! Key and pub/sub channel names. Everything of one channel (or one user)
//! shares a hash tag, so each script touches a single slot.

use chorus_core::NodeId;
use chorus_protocol::ChannelName;

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_owned() }
    }

    /// Hash: epoch `e`, top offset `s`, last save seen `l`, run id `r`.
    pub fn meta(&self, ch: &ChannelName) -> String {
        format!("{}:m:{{{}}}", self.prefix, ch.as_str())
    }

    /// Stream of the channel's events; entry id = offset.
    pub fn stream(&self, ch: &ChannelName) -> String {
        format!("{}:s:{{{}}}", self.prefix, ch.as_str())
    }

    /// Pub/sub channel of the channel's events.
    pub fn events(&self, ch: &ChannelName) -> String {
        format!("{}:p:{}", self.prefix, ch.as_str())
    }

    /// The channel name back from its pub/sub channel.
    pub fn channel_of<'a>(&self, pubsub: &'a str) -> Option<&'a str> {
        pubsub.strip_prefix(self.prefix.as_str())?.strip_prefix(":p:")
    }

    /// Presence: conn -> user \t node.
    pub fn presence_conns(&self, ch: &ChannelName) -> String {
        format!("{}:pc:{{{}}}", self.prefix, ch.as_str())
    }

    /// Presence: user -> connection count.
    pub fn presence_users(&self, ch: &ChannelName) -> String {
        format!("{}:pu:{{{}}}", self.prefix, ch.as_str())
    }

    /// Registry: conn -> registration sequence.
    pub fn user_order(&self, user: &str) -> String {
        format!("{}:uo:{{{}}}", self.prefix, user)
    }

    /// Registry: conn -> node \t since_ms; `#` holds the sequence.
    pub fn user_details(&self, user: &str) -> String {
        format!("{}:ud:{{{}}}", self.prefix, user)
    }

    /// Sorted set of nodes by last heartbeat.
    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// Channels where a node has presence entries.
    pub fn node_channels(&self, node: &str) -> String {
        format!("{}:nc:{}", self.prefix, node)
    }

    /// Users with connections registered by a node.
    pub fn node_users(&self, node: &str) -> String {
        format!("{}:nu:{}", self.prefix, node)
    }

    /// A node's connections for the cluster-wide list: a sorted set, every
    /// score 0, members `since_ms (20 digits) \t conn \t transport \t user`
    /// so that their byte order is the list's order.
    pub fn node_connections(&self, node: &str) -> String {
        format!("{}:nx:{}", self.prefix, node)
    }

    /// Claim on sweeping a dead node, so one live node does it.
    pub fn sweep_claim(&self, node: &str) -> String {
        format!("{}:sweep:{}", self.prefix, node)
    }

    /// Stream of control messages, and their pub/sub channel.
    pub fn control(&self) -> String {
        format!("{}:control", self.prefix)
    }

    /// Maintenance mode, stored so a node that starts or reconnects reads it.
    pub fn maintenance(&self) -> String {
        format!("{}:maintenance", self.prefix)
    }

    /// A node's probe channel: it publishes there and must hear it back.
    pub fn probe(&self, node: &NodeId) -> String {
        format!("{}:probe:{}", self.prefix, node.as_str())
    }
}
