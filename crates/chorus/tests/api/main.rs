//! REST API tests against the real composition root, each on SQLite and on
//! PostgreSQL (`<test>::sqlite`, `<test>::postgres`).

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
