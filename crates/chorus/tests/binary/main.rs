//! The real `chorus` binary: CLI, logs, configuration reload and signals.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a failure should stop the test where it happens.

mod process;

mod cli;
mod cluster;
mod lifecycle;
mod logs;
mod reload;
mod secret;
mod signals;
mod tail;
mod web;
