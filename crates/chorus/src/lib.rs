//! The `chorus` binary's library: command line, configuration, logging and
//! the composition root that picks every engine. `main.rs` only calls in.

pub mod cli;
pub mod config;
pub mod logging;
pub mod serve;
pub mod server;
pub mod tail;
pub mod token;
