//! The real `chorus` binary: CLI, logs, configuration reload and signals.

mod process;

mod cli;
mod lifecycle;
mod logs;
mod reload;
mod secret;
mod signals;
mod tail;
mod web;
