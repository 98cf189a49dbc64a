//! Store tests. Each `both_engines!` test runs once on SQLite and once on
//! PostgreSQL (`<test>::sqlite`, `<test>::postgres`), each on a database of its own.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a failure should stop the test where it happens.

#[macro_use]
mod common;

mod agents;
mod channels;
mod lifecycle;
mod maintenance;
mod messages;
mod runs;
mod sessions;
mod users;
