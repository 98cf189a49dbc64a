//! Hub behaviour with no transport and no sockets. The tests that exercise
//! the broker run once per engine (in-memory and Redis, see `engines.rs`)
//! in real time; the hub's own timers and limits run on paused time over the
//! in-memory engine.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a failure should stop the test where it happens.

mod common;
mod engines;
mod cluster;
mod expiry;
mod lifecycle;
mod presence;
mod sync;
