//! Hub behaviour with paused time: no transport, no sockets.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a failure should stop the test where it happens.

mod common;
mod expiry;
mod lifecycle;
mod presence;
mod sync;
