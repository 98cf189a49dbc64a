//! REST API tests against the real composition root, each on SQLite and on
//! PostgreSQL (`<test>::sqlite`, `<test>::postgres`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a failure should stop the test where it happens.

#[macro_use]
mod common;
mod conformance;

mod accounts;
mod admin;
mod agents;
mod channels;
mod keys;
mod lookups;
mod messages;
