//! Settings of the chat domain (`[chat]`). Defaults and where they come from: `docs/decisions.md`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChatConfig {
    /// Channels a user may own (archived ones count).
    pub channels_per_user: u32,
    /// Agents a user may own.
    pub agents_per_user: u32,
    /// Agent creations per user per minute (burst the same).
    pub agent_creates_per_minute: u32,
    /// Longest agent name, in characters (ASCII letters, digits, `_`, `-`, space).
    pub agent_name_max_chars: usize,
    /// Shortest agent persona, in characters.
    pub agent_persona_min_chars: usize,
    /// Longest agent persona, in characters.
    pub agent_persona_max_chars: usize,
    /// Quirks an agent may have.
    pub agent_quirks_max: usize,
    /// Longest quirk, in characters.
    pub agent_quirk_max_chars: usize,
    /// Longest chat message, in characters.
    pub message_max_chars: usize,
    /// Lifetime of access tokens issued at login and refresh.
    #[serde(with = "humantime_serde")]
    pub access_token_ttl: Duration,
    /// A login session with no request or connection activity for this long expires.
    #[serde(with = "humantime_serde")]
    pub session_idle: Duration,
    /// A login session ends this long after login, whatever its activity.
    #[serde(with = "humantime_serde")]
    pub session_max_age: Duration,
    /// Login attempts per account and client address pair per minute (burst the same).
    pub logins_per_account_address_per_minute: u32,
    /// Login attempts per account per hour (burst the same) from addresses
    /// that have not signed in to it within `session_max_age`; addresses
    /// that have are never held back by this limit.
    pub logins_per_account_per_hour: u32,
    /// Login attempts per client address per minute (burst the same).
    pub logins_per_address_per_minute: u32,
    /// Sign-ups per client address per minute (burst the same).
    pub signups_per_address_per_minute: u32,
    /// Refresh-token exchanges per client address per minute (burst the same).
    pub refreshes_per_address_per_minute: u32,
    /// How often a login session's `last_seen_at` is written while it is in
    /// use (requests, live connections); at most a quarter of `session_idle`.
    #[serde(with = "humantime_serde")]
    pub session_touch_interval: Duration,
    /// Live login sessions a user may have; a new login past it ends the oldest.
    pub sessions_per_user: u32,
    /// API keys (not revoked) a user may have.
    pub api_keys_per_user: u32,
    /// Models an agent may use; checked on create and update. The first is
    /// the model of an agent created without one.
    pub allowed_models: Vec<String>,
    /// Tools an agent may use; checked on create and update.
    pub allowed_tools: Vec<String>,
    /// How often the cleanup pass runs (sessions, idempotency keys, retention).
    #[serde(with = "humantime_serde")]
    pub cleanup_interval: Duration,
    /// Rows deleted per batch by cleanup; small batches never block requests.
    pub cleanup_batch: u32,
    /// Pause between two cleanup batches, so requests get the writer in between.
    #[serde(with = "humantime_serde")]
    pub cleanup_pause: Duration,
    /// The outbox relay leaves rows younger than this to the request that
    /// wrote them (which publishes them itself), so a live send is never
    /// published twice. Rows left by a previous run are taken at once.
    #[serde(with = "humantime_serde")]
    pub relay_grace: Duration,
    /// Outbox rows read per relay batch.
    pub relay_batch: u32,
    /// An administrator created at start if no administrator exists.
    pub bootstrap_admin: Option<BootstrapAdmin>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapAdmin {
    pub username: String,
    pub password: String,
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            channels_per_user: 5,
            agents_per_user: 10,
            agent_creates_per_minute: 5,
            agent_name_max_chars: 50,
            agent_persona_min_chars: 10,
            agent_persona_max_chars: 500,
            agent_quirks_max: 10,
            agent_quirk_max_chars: 100,
            message_max_chars: 2_000,
            access_token_ttl: Duration::from_secs(15 * 60),
            session_idle: Duration::from_secs(30 * 60),
            session_max_age: Duration::from_secs(30 * 24 * 3600),
            logins_per_account_address_per_minute: 10,
            logins_per_account_per_hour: 100,
            logins_per_address_per_minute: 30,
            signups_per_address_per_minute: 10,
            refreshes_per_address_per_minute: 60,
            session_touch_interval: Duration::from_secs(60),
            sessions_per_user: 50,
            api_keys_per_user: 20,
            allowed_models: vec!["demo".into()],
            allowed_tools: vec!["clock".into(), "calculator".into()],
            cleanup_interval: Duration::from_secs(5 * 60),
            cleanup_batch: 500,
            cleanup_pause: Duration::from_millis(50),
            relay_grace: Duration::from_secs(10),
            relay_batch: 100,
            bootstrap_admin: None,
        }
    }
}
