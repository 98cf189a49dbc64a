//! The Chorus wire format, version 1.
//!
//! This crate is the only place that knows how frames look on the wire: how a
//! client command is decoded, how replies and pushes are encoded, which error
//! and close codes exist, and which event types may be published with which
//! fields. Everything else in Chorus works with the typed values defined here.
//! `PROTOCOL.md` at the repository root documents the same things for client
//! authors; keep both in step.

pub mod agui;
pub mod channel;
pub mod close;
pub mod command;
pub mod depth;
pub mod error;
pub mod event;
pub mod payload;
pub mod push;
pub mod reply;
pub mod run;
pub mod sse;
pub mod timestamp;

pub use channel::{ChannelName, ChannelNameError};
pub use close::CloseCode;
pub use command::{Command, DecodeError, Request, StreamPosition, decode_request};
pub use depth::{MAX_JSON_DEPTH, exceeds_max_depth};
pub use error::{ErrorCode, ErrorObject};
pub use event::{EventType, SchemaError};
pub use payload::{Payload, PayloadError};
pub use push::{ControlPush, PushHeader, encode_control, encode_push, encode_push_shared};
pub use reply::{Reply, ReplyBody};
pub use run::{RunErrorCode, RunOutcome};

/// Version of the protocol spoken on `/ws` and `/sse`.
pub const PROTOCOL_VERSION: u32 = 1;
