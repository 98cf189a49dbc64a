//! What is particular to external agents' records: their kind, webhook URL
//! and signing secret.
//!
//! - The kind is chosen at creation and never changes.
//! - The URL is checked against the address policy on create and update
//!   (`chorus_external::WebhookUrl`).
//! - The signing secret is derived from the server key and a salt the store
//!   keeps; it is shown once, in the answer that creates the agent and in
//!   the answer to a rotation. A rotation keeps the previous secret signing
//!   for `previous_secret_ttl`.

use std::sync::Arc;
use std::time::Duration;

use chorus_external::{AddressPolicy, SecretKey, SecretSalt, SigningSecret, WebhookUrl};
use chorus_store::{Agent, AgentWebhook};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ChatError;

/// The model an external agent's record shows: its service picks its own.
pub const EXTERNAL_MODEL: &str = "external";

/// Where an agent runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum AgentKind {
    /// Chorus runs it with its model and tools.
    #[default]
    Hosted,
    /// It runs in its owner's service: Chorus sends each run to its webhook.
    External,
}

impl AgentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentKind::Hosted => "hosted",
            AgentKind::External => "external",
        }
    }

    pub fn of(agent: &Agent) -> Self {
        if agent.is_external() { AgentKind::External } else { AgentKind::Hosted }
    }
}

impl TryFrom<String> for AgentKind {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        match s.as_str() {
            "hosted" => Ok(AgentKind::Hosted),
            "external" => Ok(AgentKind::External),
            _ => Err(format!("must be `hosted` or `external` (got {s:?})")),
        }
    }
}

/// The settings and key external agents' records need (from `[external_agents]`).
#[derive(Clone)]
pub struct WebhookRules {
    pub policy: Arc<AddressPolicy>,
    pub key: Arc<SecretKey>,
    pub previous_secret_ttl: Duration,
}

impl WebhookRules {
    /// The URL, checked (the error names `webhook_url`).
    pub fn url(&self, raw: &str) -> Result<String, ChatError> {
        WebhookUrl::parse(raw, &self.policy)
            .map(|u| u.as_str().to_owned())
            .map_err(|e| ChatError::invalid("webhook_url", e))
    }

    /// The secrets deliveries of `agent` are signed with now: the current
    /// one, then the previous one while it is honoured. Empty for a hosted agent.
    pub fn signing_secrets(&self, agent: &Agent, now_ms: i64) -> Vec<SigningSecret> {
        let Some(w) = &agent.webhook else { return Vec::new() };
        let mut secrets = vec![self.key.derive(&agent.id, &SecretSalt::from_stored(w.secret_salt.clone()))];
        if let (Some(salt), Some(until)) = (&w.previous_salt, w.previous_until)
            && until > now_ms
        {
            secrets.push(self.key.derive(&agent.id, &SecretSalt::from_stored(salt.clone())));
        }
        secrets
    }

    /// The current secret of `agent`, as shown to its owner.
    pub fn reveal(&self, agent: &Agent) -> Option<String> {
        agent.webhook.as_ref().map(|w| self.key.derive(&agent.id, &SecretSalt::from_stored(w.secret_salt.clone())).reveal())
    }

    pub fn new_webhook(url: String) -> AgentWebhook {
        AgentWebhook { url, secret_salt: SecretSalt::generate().as_str().to_owned(), previous_salt: None, previous_until: None }
    }

    /// How long after now a rotated secret stays honoured, in ms.
    pub fn previous_until(&self, now_ms: i64) -> i64 {
        now_ms.saturating_add(i64::try_from(self.previous_secret_ttl.as_millis()).unwrap_or(i64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use chorus_external::KeyOrigin;

    use super::*;

    fn rules() -> WebhookRules {
        WebhookRules {
            policy: Arc::new(AddressPolicy::default()),
            key: Arc::new(SecretKey::from_bytes(&[7; 32], &KeyOrigin::Config).unwrap()),
            previous_secret_ttl: Duration::from_secs(60),
        }
    }

    fn agent(webhook: Option<AgentWebhook>) -> Agent {
        Agent {
            id: "a1".into(),
            owner_id: "u1".into(),
            name: "Outside".into(),
            persona: "Runs elsewhere.".into(),
            quirks: vec![],
            model: EXTERNAL_MODEL.into(),
            tools: vec![],
            response_policy: "mention".into(),
            on_busy: "enqueue".into(),
            webhook,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn urls_are_checked_and_secrets_follow_rotation() {
        let r = rules();
        assert_eq!(r.url(" https://agents.example.com/hook ").unwrap(), "https://agents.example.com/hook");
        let e = r.url("http://127.0.0.1/hook").unwrap_err().to_string();
        assert!(e.starts_with("webhook_url: ") && e.contains("non-public"), "{e}");

        assert!(r.signing_secrets(&agent(None), 0).is_empty());
        assert_eq!(r.reveal(&agent(None)), None);
        let w = WebhookRules::new_webhook("https://agents.example.com/hook".into());
        let one = agent(Some(w.clone()));
        let secrets = r.signing_secrets(&one, 0);
        assert_eq!(secrets.len(), 1);
        assert_eq!(r.reveal(&one), Some(secrets[0].reveal()));

        let rotated = agent(Some(AgentWebhook {
            secret_salt: "new".into(),
            previous_salt: Some(w.secret_salt.clone()),
            previous_until: Some(r.previous_until(1_000)),
            ..w
        }));
        let both = r.signing_secrets(&rotated, 1_000);
        assert_eq!(both.len(), 2);
        assert_eq!(both[1], secrets[0], "the previous secret still signs");
        assert_ne!(both[0], secrets[0]);
        assert_eq!(r.signing_secrets(&rotated, 61_000).len(), 1, "until its time is up");
        assert_eq!(AgentKind::try_from("external".to_owned()), Ok(AgentKind::External));
        assert!(AgentKind::try_from("remote".to_owned()).is_err());
    }
}
