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
pub mod messages;
pub mod views;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chorus_auth::{HmacSecret, JwtVerifier};
use chorus_core::Hub;
use chorus_store::{Store, UserRole};

pub use accounts::Accounts;
pub use admin::Admin;
pub use agents::Agents;
pub use channels::Channels;
pub use config::ChatConfig;
pub use error::ChatError;
pub use messages::Messages;

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

/// Maintenance mode: while on, everything that creates content is refused;
/// sign-in, reads and administration still work.
#[derive(Debug, Clone, Default)]
pub struct Maintenance(Arc<AtomicBool>);

impl Maintenance {
    pub fn set(&self, on: bool) {
        self.0.store(on, Ordering::Release);
    }

    pub fn is_on(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// `Err(Maintenance)` while on; `what` names the refused action ("sending messages").
    pub fn check(&self, what: &str) -> Result<(), ChatError> {
        if self.is_on() { Err(ChatError::Maintenance(what.to_owned())) } else { Ok(()) }
    }
}

/// What every service shares.
#[derive(Clone)]
pub struct Deps {
    pub store: Arc<dyn Store>,
    pub hub: Hub,
    pub config: Arc<ChatConfig>,
    pub maintenance: Maintenance,
}

/// What the composition root hands in.
pub struct ChatParts {
    pub store: Arc<dyn Store>,
    pub hub: Hub,
    pub config: ChatConfig,
    /// Signs access tokens issued at login.
    pub secret: HmacSecret,
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
        let deps = Deps { store: parts.store, hub: parts.hub, config: Arc::new(parts.config), maintenance: Maintenance::default() };
        let accounts = Accounts::new(deps.clone(), parts.secret, parts.jwt);
        let channels = Channels::new(deps.clone());
        let messages = Messages::new(deps.clone());
        let agents = Agents::new(deps.clone());
        let admin = Admin::new(deps.clone(), accounts.clone(), messages.clone());
        Self { accounts, channels, messages, agents, admin, deps }
    }

    pub fn deps(&self) -> &Deps {
        &self.deps
    }

    /// Starts the domain's background work (outbox relay, cleanup) until `stop`.
    pub fn spawn_background(&self, _tasks: &tokio_util::task::TaskTracker, _stop: tokio_util::sync::CancellationToken) {}
}
