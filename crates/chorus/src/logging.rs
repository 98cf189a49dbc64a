//! Structured logs: JSON (or pretty on a terminal), written by a background
//! thread through a bounded, lossy buffer so logging never blocks a request.
//! The level can be changed at run time (SIGHUP).

use std::io::IsTerminal;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::{LogConfig, LogFormat};

/// Lines buffered before new ones are dropped (and counted by the appender).
const BUFFERED_LINES: usize = 64 * 1024;

/// Keeps the log writer alive and lets the level change.
pub struct Logging {
    filter: reload::Handle<EnvFilter, Registry>,
    _guard: WorkerGuard,
}

impl Logging {
    /// Installs the process's subscriber. Call once, first thing.
    pub fn init(config: &LogConfig) -> anyhow::Result<Self> {
        let filter = EnvFilter::try_new(&config.level)?;
        let (filter, handle) = reload::Layer::new(filter);
        let (writer, guard) = NonBlockingBuilder::default().lossy(true).buffered_lines_limit(BUFFERED_LINES).finish(std::io::stdout());
        let pretty = match config.format {
            LogFormat::Pretty => true,
            LogFormat::Json => false,
            LogFormat::Auto => std::io::stdout().is_terminal(),
        };
        let registry = tracing_subscriber::registry().with(filter);
        if pretty {
            registry.with(tracing_subscriber::fmt::layer().with_writer(writer).with_target(false)).try_init()?;
        } else {
            registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .json()
                        .flatten_event(true)
                        .with_current_span(true)
                        .with_span_list(false)
                        .with_writer(writer),
                )
                .try_init()?;
        }
        Ok(Self { filter: handle, _guard: guard })
    }

    /// Applies a new level filter.
    pub fn set_level(&self, level: &str) -> anyhow::Result<()> {
        self.filter.reload(EnvFilter::try_new(level)?)?;
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
