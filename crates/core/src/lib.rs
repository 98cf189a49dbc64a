//! The Chorus realtime core.
//!
//! Bird's-eye view: a [`hub::Hub`] holds this node's connections and their
//! subscriptions and fans broker deliveries out to them. Transports drive a
//! [`session::Session`] (bidirectional) or call the [`executor::Executor`]
//! directly (SSE commands over HTTP); both run the same commands. Everything
//! shared between nodes sits behind the traits in [`broker`]. This crate knows
//! neither HTTP nor JSON: the wire format lives in `chorus-protocol`.

pub mod access;
pub mod broker;
pub mod config;
pub mod connection;
pub mod executor;
pub mod hub;
pub mod identity;
pub mod ids;
pub mod limiter;
pub mod maintenance;
pub mod metrics;
pub mod outbound;
pub mod publication;
pub mod session;
pub mod subscription;
pub mod supervise;
pub mod typing;

pub use connection::Connection;
pub use executor::{ChatCommands, CommandError, Executed, Executor, RunCommands};
pub use hub::{Hub, HubConfig, HubParts, Lease, RunControls};
pub use identity::{Identity, TokenError, TokenVerifier};
pub use ids::{ConnId, NodeId, Transport, UserId};
pub use session::{Flow, Session};
