//! Hub behaviour with paused time: no transport, no sockets.

mod common;
mod expiry;
mod lifecycle;
mod presence;
mod sync;
