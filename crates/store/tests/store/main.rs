//! Store tests. Each `both_engines!` test runs once on SQLite and once on
//! PostgreSQL (`<test>::sqlite`, `<test>::postgres`), each on a database of its own.

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
