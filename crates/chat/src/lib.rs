//! The chat domain: accounts and login sessions, channels and their members,
//! messages (stored with their events, delivered through an outbox), agent
//! records, and administration. It sits on the store and the realtime hub and
//! knows neither HTTP nor the wire format; the REST layer and the WebSocket
//! executor both call into it.

pub mod accounts;
pub mod admin;
pub mod agents;
pub mod channels;
pub mod config;
pub mod error;
pub mod events;
pub mod keys;
pub mod messages;
pub mod response_policy;
mod text;
pub mod views;

use std::sync::Arc;

use chorus_auth::{HmacSecret, JwtVerifier};
use chorus_clock::Clock;
use chorus_core::Hub;
use chorus_store::{Store, UserRole};

pub use accounts::Accounts;
pub use admin::Admin;
pub use agents::Agents;
pub use channels::Channels;
pub use config::ChatConfig;
pub use error::ChatError;
pub use messages::Messages;

/// How often the outbox relay looks for events left undelivered.
const RELAY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
/// Pause before a panicked background task restarts.
const RELAY_BACKOFF: std::time::Duration = std::time::Duration::from_secs(1);

/// Who is making a request, as resolved from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: String,
    pub role: UserRole,
    /// The login session behind the token, if it came from a login.
    pub session_id: Option<String>,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.role == UserRole::Admin
    }

    pub fn require_admin(&self) -> Result<(), ChatError> {
        if self.is_admin() { Ok(()) } else { Err(ChatError::Forbidden("administrators only".into())) }
    }
}

/// What every service shares.
#[derive(Clone)]
pub struct Deps {
    pub store: Arc<dyn Store>,
    pub hub: Hub,
    pub config: Arc<ChatConfig>,
    /// The composition root's one clock (the store and the hub read it too).
    pub clock: Arc<dyn Clock>,
}

impl Deps {
    /// The time of day, Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// `Err(Maintenance)` while maintenance mode is on (on any node); `what`
    /// names the refused action ("sending messages"). Sign-in, reads and
    /// administration never call this.
    pub fn check_maintenance(&self, what: &str) -> Result<(), ChatError> {
        self.hub.check_maintenance(what).map_err(|r| ChatError::Maintenance(r.subject()))
    }
}

/// What the composition root hands in.
pub struct ChatParts {
    pub store: Arc<dyn Store>,
    pub hub: Hub,
    pub config: ChatConfig,
    /// The clock the store and the hub were given.
    pub clock: Arc<dyn Clock>,
    /// Signs access tokens issued at login; `None` turns local sign-in off
    /// (only an external identity provider's keys are configured).
    pub secret: Option<HmacSecret>,
    /// Verifies bearer tokens (own and external identity providers).
    pub jwt: JwtVerifier,
}

/// The chat domain's services. Cheap to clone.
#[derive(Clone)]
pub struct Chat {
    pub accounts: Accounts,
    pub channels: Channels,
    pub messages: Messages,
    pub agents: Agents,
    pub admin: Admin,
    deps: Deps,
}

impl Chat {
    pub fn new(parts: ChatParts) -> Self {
        let deps = Deps { store: parts.store, hub: parts.hub, config: Arc::new(parts.config), clock: parts.clock };
        let accounts = Accounts::new(deps.clone(), parts.secret, parts.jwt);
        let channels = Channels::new(deps.clone());
        let messages = Messages::new(deps.clone());
        let agents = Agents::new(deps.clone());
        let admin = Admin::new(deps.clone(), accounts.clone(), messages.clone(), agents.clone());
        Self { accounts, channels, messages, agents, admin, deps }
    }

    pub fn deps(&self) -> &Deps {
        &self.deps
    }

    /// Starts the domain's background work until `stop`: the outbox relay
    /// (at once, to deliver what a crash left committed but unpublished, then
    /// periodically) and the cleanup pass.
    pub fn spawn_background(&self, tasks: &tokio_util::task::TaskTracker, stop: tokio_util::sync::CancellationToken) {
        self.accounts.spawn_background(tasks, stop.clone());
        let metrics = self.deps.hub.metrics().clone();
        let messages = self.messages.clone();
        chorus_core::supervise::spawn_background(tasks, stop.clone(), metrics.clone(), "outbox_relay", RELAY_BACKOFF, move || {
            let messages = messages.clone();
            async move {
                let mut tick = tokio::time::interval(RELAY_INTERVAL);
                loop {
                    tick.tick().await;
                    if let Err(e) = messages.relay_pending().await {
                        tracing::warn!(error = %e, "outbox relay pass failed");
                    }
                }
            }
        });
        let admin = self.admin.clone();
        let every = self.deps.config.cleanup_interval;
        chorus_core::supervise::spawn_background(tasks, stop, metrics, "chat_cleanup", RELAY_BACKOFF, move || {
            let admin = admin.clone();
            async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    match admin.cleanup_pass().await {
                        Ok(report) => tracing::info!(?report, "cleanup pass"),
                        Err(e) => tracing::warn!(error = %e, "cleanup pass failed"),
                    }
                }
            }
        });
    }
}
