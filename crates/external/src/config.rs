//! `[external_agents]`: how Chorus calls agents that run in other services.
//! Every key is in `chorus.example.toml`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::address::{AddressPolicy, NetworkParseError};
use crate::breaker::BreakerConfig;

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExternalAgentsConfig {
    /// One delivery attempt's limit, connect to last byte.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Pause before the one retry of a failed attempt.
    #[serde(with = "humantime_serde")]
    pub retry_delay: Duration,
    /// Consecutive failed deliveries that open an agent's circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker refuses deliveries before a probe.
    #[serde(with = "humantime_serde")]
    pub breaker_open_for: Duration,
    /// Agents whose breaker state is kept at most (least recently changed dropped first).
    pub breaker_max_agents: usize,
    /// Networks (CIDR) webhooks may reach besides public addresses, e.g.
    /// `["10.0.0.0/8"]` for agent services next to Chorus. Loopback, private,
    /// link-local and other non-public addresses are refused otherwise.
    pub allowed_networks: Vec<String>,
    /// The key signing secrets are derived from (at least 32 bytes). Takes
    /// precedence over `secret_key_file` and `<data_dir>/webhook-secret-key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key_file: Option<PathBuf>,
    /// After a rotation, deliveries are signed with the previous secret too for this long.
    #[serde(with = "humantime_serde")]
    pub previous_secret_ttl: Duration,
}

impl Default for ExternalAgentsConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            retry_delay: Duration::from_secs(1),
            breaker_failures: 5,
            breaker_open_for: Duration::from_secs(30),
            breaker_max_agents: 10_000,
            allowed_networks: Vec::new(),
            secret_key: None,
            secret_key_file: None,
            previous_secret_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

impl fmt::Debug for ExternalAgentsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalAgentsConfig")
            .field("timeout", &self.timeout)
            .field("retry_delay", &self.retry_delay)
            .field("breaker_failures", &self.breaker_failures)
            .field("breaker_open_for", &self.breaker_open_for)
            .field("breaker_max_agents", &self.breaker_max_agents)
            .field("allowed_networks", &self.allowed_networks)
            .field("secret_key", &self.secret_key.as_ref().map(|_| "[redacted]"))
            .field("secret_key_file", &self.secret_key_file)
            .field("previous_secret_ttl", &self.previous_secret_ttl)
            .finish()
    }
}

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExternalConfigError {
    #[error(transparent)]
    Network(#[from] NetworkParseError),
    #[error("external_agents.{0} must be greater than zero")]
    Zero(&'static str),
}

impl ExternalAgentsConfig {
    pub fn validate(&self) -> Result<(), ExternalConfigError> {
        self.address_policy()?;
        for (key, zero) in [
            ("timeout", self.timeout.is_zero()),
            ("breaker_failures", self.breaker_failures == 0),
            ("breaker_open_for", self.breaker_open_for.is_zero()),
            ("breaker_max_agents", self.breaker_max_agents == 0),
        ] {
            if zero {
                return Err(ExternalConfigError::Zero(key));
            }
        }
        Ok(())
    }

    pub fn address_policy(&self) -> Result<AddressPolicy, NetworkParseError> {
        AddressPolicy::new(&self.allowed_networks)
    }

    pub fn breaker(&self) -> BreakerConfig {
        BreakerConfig {
            failures: self.breaker_failures,
            open_for: self.breaker_open_for,
            max_agents: self.breaker_max_agents,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones_and_bad_settings_are_named() {
        let c = ExternalAgentsConfig::default();
        assert_eq!(
            (c.timeout, c.breaker_failures, c.breaker_open_for),
            (Duration::from_secs(10), 5, Duration::from_secs(30))
        );
        assert_eq!(c.validate(), Ok(()));
        let bad = ExternalAgentsConfig { allowed_networks: vec!["nope".into()], ..c.clone() };
        assert!(matches!(bad.validate(), Err(ExternalConfigError::Network(_))));
        let zero = ExternalAgentsConfig { breaker_failures: 0, ..c.clone() };
        assert_eq!(zero.validate(), Err(ExternalConfigError::Zero("breaker_failures")));
        let secret = ExternalAgentsConfig { secret_key: Some("do-not-print-me".into()), ..c };
        assert!(!format!("{secret:?}").contains("do-not-print-me"));
    }
}
