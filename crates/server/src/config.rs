//! Settings of the HTTP edge.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Fixed at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Where to listen.
    pub bind: SocketAddr,
    /// Largest HTTP request body accepted.
    pub body_limit_bytes: usize,
    /// Most events in one `POST /api/v1/publish/batch`.
    pub publish_batch_max: usize,
    /// WebSocket read buffer per connection; it grows for a large frame and is
    /// the largest part of an idle connection's memory, so it starts small.
    pub ws_read_buffer_bytes: usize,
    /// Bytes buffered before a WebSocket write reaches the socket.
    pub ws_write_buffer_bytes: usize,
    /// Resident memory this process is meant to stay within: `/health/detailed`
    /// reports memory as degraded from 90 % of it and unhealthy above it.
    pub memory_budget_bytes: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            body_limit_bytes: 1024 * 1024,
            publish_batch_max: 1_000,
            ws_read_buffer_bytes: 512,
            ws_write_buffer_bytes: 8192,
            memory_budget_bytes: 2 * 1024 * 1024 * 1024,
        }
    }
}

/// Browser origin policy. Reloadable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OriginPolicy {
    /// Origins (e.g. `https://app.example.com`) allowed for CORS and WebSocket
    /// upgrades, besides the server's own. `*` allows any origin.
    pub allowed_origins: Vec<String>,
}

impl OriginPolicy {
    /// Whether a browser page at `origin` may talk to a server reached as `host`.
    pub fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        if self.allowed_origins.iter().any(|o| o == "*" || o.eq_ignore_ascii_case(origin)) {
            return true;
        }
        // Same origin: the page was served by this server.
        match (host, origin.split_once("://")) {
            (Some(host), Some((_, rest))) => rest.eq_ignore_ascii_case(host),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_policy() {
        let p = OriginPolicy { allowed_origins: vec!["https://app.example.com".into()] };
        assert!(p.allows("https://app.example.com", Some("api.example.com")));
        assert!(p.allows("http://localhost:8080", Some("localhost:8080")));
        assert!(!p.allows("https://evil.example", Some("localhost:8080")));
        assert!(!p.allows("null", None));
        assert!(OriginPolicy { allowed_origins: vec!["*".into()] }.allows("https://x", None));
    }
}
