//! Agent runtime tests against the real composition root: runs over real
//! sockets, with the demo model and the mock provider servers
//! (`chorus-llm-mock`), each on SQLite and PostgreSQL where storage is involved.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a failure should stop the test where it happens.

#[macro_use]
#[path = "../api/common.rs"]
mod common;
#[path = "../api/conformance.rs"]
mod conformance;
mod harness;

mod agui;
mod external;
mod flow;
mod guard;
mod lifecycle;
mod mcp;
mod nodes;
mod memory;
mod providers;
mod storm;
mod scheduling;
