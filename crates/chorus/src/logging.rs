//! Structured logs: JSON (or pretty on a terminal), written by a background
//! thread through a bounded, lossy buffer so logging never blocks a request.
//! The level can be changed at run time (SIGHUP).

use std::io::{BufWriter, IsTerminal};

use serde::{Deserialize, Serialize};
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

mod filter;
mod json;

pub use filter::parse as parse_directives;

/// The `[log]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `target=level` directives: `info`, `debug`, `chorus_core=debug,info`, ...
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into(), format: LogFormat::Auto }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Pretty on a terminal, JSON otherwise.
    Auto,
    Json,
    Pretty,
}

/// Lines buffered before new ones are dropped (and counted by the appender).
const BUFFERED_LINES: usize = 64 * 1024;
/// The writer thread writes what has queued up in chunks of this size.
const WRITE_CHUNK_BYTES: usize = 64 * 1024;

/// Keeps the log writer alive and lets the level change.
pub struct Logging {
    directives: filter::Directives,
    _guard: WorkerGuard,
}

impl Logging {
    /// Installs the process's subscriber. Call once, first thing.
    pub fn init(config: &LogConfig) -> anyhow::Result<Self> {
        let directives = filter::Directives::new(filter::parse(&config.level).map_err(anyhow::Error::msg)?);
        // The writer thread drains the queue, then flushes once: one write per burst, not per line.
        let out = BufWriter::with_capacity(WRITE_CHUNK_BYTES, std::io::stdout());
        let (writer, guard) = NonBlockingBuilder::default().lossy(true).buffered_lines_limit(BUFFERED_LINES).finish(out);
        let pretty = match config.format {
            LogFormat::Pretty => true,
            LogFormat::Json => false,
            LogFormat::Auto => std::io::stdout().is_terminal(),
        };
        let registry = tracing_subscriber::registry().with(directives.clone());
        if pretty {
            registry.with(tracing_subscriber::fmt::layer().with_writer(writer).with_target(false)).try_init()?;
        } else {
            registry.with(json::JsonLines::new(writer)).try_init()?;
        }
        Ok(Self { directives, _guard: guard })
    }

    /// Applies a new level filter.
    pub fn set_level(&self, level: &str) -> anyhow::Result<()> {
        self.directives.replace(filter::parse(level).map_err(anyhow::Error::msg)?);
        Ok(())
    }
}

/// Sends panics to the log (with location) instead of bare stderr.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = chorus_core::supervise::panic_message(info.payload());
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        tracing::error!(panic = %message, location, "panic");
    }));
}
