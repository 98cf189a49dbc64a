//! External agents: agents that run in a team's own service.
//!
//! Chorus sends each run of such an agent to the agent's webhook and the
//! service pushes the run's events back through the server API. This crate
//! is the outbound half and what it needs:
//! - [`WebhookUrl`] and [`AddressPolicy`]: which URLs an agent may name and
//!   which addresses a delivery may reach (checked on save and on every
//!   connection, through [`PolicyResolver`]);
//! - [`SigningSecret`], [`SecretKey`], [`SecretSalt`]: each agent's signing
//!   secret, derived from a server key and a stored salt, and the Standard
//!   Webhooks signature scheme;
//! - [`Breakers`]: a circuit breaker per agent;
//! - [`WebhookClient`]: one delivery = a signed POST with a timeout and one
//!   retry, inside the agent's breaker.
//!
//! It knows HTTP as a client only; not the store, not the run state machine.

pub mod address;
pub mod breaker;
pub mod client;
pub mod config;
pub mod key;
pub mod metrics;
pub mod resolver;
pub mod signing;
pub mod url;

pub use address::{AddressPolicy, NetworkParseError, is_public};
pub use breaker::{Admission, BreakerConfig, BreakerOpen, BreakerState, Breakers};
pub use client::{AttemptError, ClientBuildError, Delivered, Delivery, DeliveryError, WebhookClient};
pub use config::{ExternalAgentsConfig, ExternalConfigError};
pub use key::{KeyError, KeyOrigin, SecretKey, SecretSalt};
pub use metrics::WebhookMetrics;
pub use resolver::PolicyResolver;
pub use signing::{
    HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, REPLAY_WINDOW, SECRET_PREFIX, SigningSecret, VerifyError,
    signature_header, verify,
};
pub use url::{UrlError, WebhookUrl};
