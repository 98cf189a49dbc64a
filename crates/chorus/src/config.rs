//! The whole configuration: a TOML file plus `CHORUS_*` environment
//! overrides (`CHORUS_LIMITS__CONNECTIONS_PER_USER=5` sets
//! `[limits] connections_per_user`). Defaults and where they come from: `docs/decisions.md`.

use std::path::{Path, PathBuf};

use chorus_auth::AuthConfig;
use chorus_chat::ChatConfig;
use chorus_store::StoreConfig;
use chorus_core::config::{Limits, MemoryBrokerConfig, Namespaces, RateLimits, Timing};
use chorus_redis::RedisBrokerConfig;
use chorus_server::{OriginPolicy, ServerConfig};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::logging::LogConfig;

/// Top-level keys, the only ones `CHORUS_*` variables may set.
const SECTIONS: &[&str] = &[
    "data_dir", "node_id", "log", "server", "cors", "limits", "rate_limits", "timing", "namespaces", "broker", "auth", "store", "chat",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the server keeps its files (generated secret, SQLite database).
    pub data_dir: PathBuf,
    /// This node's id in a cluster; random when absent.
    pub node_id: Option<String>,
    pub log: LogConfig,
    pub server: ServerConfig,
    pub cors: OriginPolicy,
    pub limits: Limits,
    pub rate_limits: RateLimits,
    pub timing: Timing,
    pub namespaces: Namespaces,
    pub broker: BrokerConfig,
    pub auth: AuthConfig,
    pub store: StoreConfig,
    pub chat: ChatConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("chorus-data"),
            node_id: None,
            log: LogConfig::default(),
            server: ServerConfig::default(),
            cors: OriginPolicy::default(),
            limits: Limits::default(),
            rate_limits: RateLimits::default(),
            timing: Timing::default(),
            namespaces: Namespaces::default(),
            broker: BrokerConfig::default(),
            auth: AuthConfig::default(),
            store: StoreConfig::default(),
            chat: ChatConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    pub kind: BrokerKind,
    pub memory: MemoryBrokerConfig,
    pub redis: RedisBrokerConfig,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self { kind: BrokerKind::Memory, memory: MemoryBrokerConfig::default(), redis: RedisBrokerConfig::default() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BrokerKind {
    /// One process: fan-out, history and presence in memory.
    Memory,
    /// Several nodes sharing one Redis (`[broker.redis]`).
    Redis,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(String),
    #[error("configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads defaults, then the file (if any), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Load(format!("file {} does not exist", path.display())));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        // Only variables naming a section of ours: tools share the prefix (CHORUS_TEST_*, CHORUS_BENCH_*).
        let env = Env::prefixed("CHORUS_").split("__").filter(|key| {
            let top = key.as_str().split('.').next().unwrap_or_default();
            SECTIONS.iter().any(|s| s.eq_ignore_ascii_case(top))
        });
        figment = figment.merge(env);
        let config: Config = figment.extract().map_err(|e| ConfigError::Load(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values no type can express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if l.connections_per_user == 0 {
            return bad("limits.connections_per_user must be at least 1".into());
        }
        if l.connections_per_node == 0 || l.connects_per_second == 0 {
            return bad("limits.connections_per_node and limits.connects_per_second must be at least 1".into());
        }
        if l.outbound_queue_messages < 2 || l.outbound_queue_bytes < 1024 {
            return bad("limits.outbound_queue_messages must be at least 2 and outbound_queue_bytes at least 1024".into());
        }
        if l.frame_bytes == 0 || l.frame_bytes > l.frame_hard_cap_bytes {
            return bad("limits.frame_bytes must be between 1 and limits.frame_hard_cap_bytes".into());
        }
        if l.history_page == 0 || l.subscriptions_per_connection == 0 {
            return bad("limits.history_page and limits.subscriptions_per_connection must be at least 1".into());
        }
        let r = &self.rate_limits;
        for (name, v) in [
            ("frames_per_second", r.frames_per_second),
            ("user_frames_per_second", r.user_frames_per_second),
            ("messages_per_minute", r.messages_per_minute),
            ("rest_per_minute", r.rest_per_minute),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(format!("rate_limits.{name} must be a positive number"));
            }
        }
        if self.broker.kind == BrokerKind::Redis
            && let Err(m) = self.broker.redis.validate()
        {
            return bad(m);
        }
        if self.node_id.as_deref().is_some_and(|n| n.is_empty() || n.contains(['\n', '\t', '{', '}', ' '])) {
            return bad("node_id must be non-empty, without whitespace or braces".into());
        }
        let t = &self.timing;
        if t.ping_interval.is_zero() || t.pong_timeout.is_zero() || t.stale_after.is_zero() || t.cleanup_interval.is_zero() {
            return bad("timing intervals must be greater than zero".into());
        }
        for (name, ns) in &self.namespaces.0 {
            if !chorus_protocol::channel::valid_namespace(name) {
                return bad(format!("namespaces.{name}: not a valid namespace name"));
            }
            if ns.history_size == 0 {
                return bad(format!("namespaces.{name}.history_size must be at least 1"));
            }
        }
        if self.server.ws_read_buffer_bytes < 256 {
            return bad("server.ws_read_buffer_bytes must be at least 256".into());
        }
        crate::logging::parse_directives(&self.log.level).map_err(|e| ConfigError::Invalid(format!("log.level: {e}")))?;
        Ok(())
    }

    /// Names of the reloadable keys whose values differ between two configs.
    pub fn reloadable_changes(&self, new: &Config) -> Vec<String> {
        let mut changed = Vec::new();
        diff_keys("limits", &self.limits, &new.limits, &mut changed);
        diff_keys("rate_limits", &self.rate_limits, &new.rate_limits, &mut changed);
        diff_keys("cors", &self.cors, &new.cors, &mut changed);
        diff_keys("log", &LogLevelOnly { level: &self.log.level }, &LogLevelOnly { level: &new.log.level }, &mut changed);
        changed
    }

    /// Top-level sections that changed but only take effect after a restart.
    pub fn restart_only_changes(&self, new: &Config) -> Vec<String> {
        let mut changed = Vec::new();
        let sections: [(&str, serde_json::Value, serde_json::Value); 10] = [
            ("data_dir", to_value(&self.data_dir), to_value(&new.data_dir)),
            ("node_id", to_value(&self.node_id), to_value(&new.node_id)),
            ("server", to_value(&self.server), to_value(&new.server)),
            ("timing", to_value(&self.timing), to_value(&new.timing)),
            ("namespaces", to_value(&self.namespaces), to_value(&new.namespaces)),
            ("broker", to_value(&self.broker), to_value(&new.broker)),
            ("auth", to_value(&self.auth), to_value(&new.auth)),
            ("store", to_value(&self.store), to_value(&new.store)),
            ("chat", to_value(&self.chat), to_value(&new.chat)),
            ("log.format", to_value(&self.log.format), to_value(&new.log.format)),
        ];
        for (name, a, b) in sections {
            if a != b {
                changed.push(name.to_owned());
            }
        }
        changed
    }
}

/// The reloadable part of `[log]`, so a change is named `log.level`.
#[derive(Serialize)]
struct LogLevelOnly<'a> {
    level: &'a str,
}

fn to_value<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// Appends `section.key` for every top-level field that differs.
fn diff_keys<T: Serialize>(section: &str, old: &T, new: &T, out: &mut Vec<String>) {
    match (to_value(old), to_value(new)) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in &b {
                if a.get(k) != Some(v) {
                    out.push(format!("{section}.{k}"));
                }
            }
        }
        (a, b) => {
            if a != b {
                out.push(section.to_owned());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_product_brief() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.server.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(c.limits.connections_per_user, 3);
        assert_eq!(c.limits.outbound_queue_messages, 50);
        assert_eq!(c.timing.ping_interval.as_secs(), 25);
        assert_eq!(c.rate_limits.messages_per_minute, 30.0);
    }

    /// Every key of a default configuration, as dotted paths.
    fn keys(v: &toml::Value, prefix: &str, out: &mut std::collections::BTreeSet<String>) {
        if let toml::Value::Table(t) = v {
            for (k, v) in t {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                keys(v, &path, out);
                out.insert(path);
            }
        }
    }

    #[test]
    fn the_example_file_holds_every_key_at_its_default() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../chorus.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let parsed: Config = toml::from_str(&text).unwrap();
        assert_eq!(parsed, Config::default(), "chorus.example.toml sets a value other than the default");
        let (mut written, mut defaults) = (Default::default(), Default::default());
        keys(&toml::from_str(&text).unwrap(), "", &mut written);
        keys(&toml::Value::try_from(Config::default()).unwrap(), "", &mut defaults);
        let missing: Vec<_> = defaults.difference(&written).collect();
        assert!(missing.is_empty(), "chorus.example.toml lacks {missing:?}");
    }

    #[test]
    fn file_then_environment() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "[limits]\nconnections_per_user = 7\n[timing]\nping_interval = \"10s\"").unwrap();
        let c = Config::load(Some(f.path())).unwrap();
        assert_eq!(c.limits.connections_per_user, 7);
        assert_eq!(c.timing.ping_interval.as_secs(), 10);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "[limits]\nconections_per_user = 7").unwrap();
        assert!(Config::load(Some(f.path())).is_err());
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "[limits]\nconnections_per_user = 0").unwrap();
        assert!(matches!(Config::load(Some(f.path())), Err(ConfigError::Invalid(_))));
        assert!(Config::load(Some(Path::new("/nonexistent/chorus.toml"))).is_err());
    }

    #[test]
    fn reload_diff_names_keys() {
        let a = Config::default();
        let mut b = a.clone();
        b.limits.connections_per_user = 4;
        b.cors.allowed_origins.push("https://x".into());
        b.log.level = "debug".into();
        b.timing.ping_interval = std::time::Duration::from_secs(1);
        assert_eq!(a.reloadable_changes(&b), vec!["limits.connections_per_user", "cors.allowed_origins", "log.level"]);
        assert_eq!(a.restart_only_changes(&b), vec!["timing"]);
    }
}
