//! `chorus serve`: starts the [`Server`], reloads on SIGHUP, and on
//! SIGTERM/SIGINT shuts down in order.

use std::path::PathBuf;

use tokio::signal::unix::{SignalKind, signal};

use crate::config::Config;
use crate::logging::Logging;
use crate::server::Server;

/// Applies a reloaded configuration's reloadable parts; refuses an invalid one.
fn reload(path: Option<&std::path::Path>, current: &mut Config, server: &Server, logging: &Logging) {
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "configuration reload refused; the running configuration is kept");
            return;
        }
    };
    let changed = current.reloadable_changes(&new);
    let restart_only = current.restart_only_changes(&new);
    if let Err(e) = logging.set_level(&new.log.level) {
        tracing::error!(error = %e, "log level not changed");
    }
    server.reloaders.limits.send_replace(new.limits.clone());
    server.reloaders.rates.send_replace(new.rate_limits.clone());
    server.reloaders.origins.send_replace(new.cors.clone());
    current.limits = new.limits;
    current.rate_limits = new.rate_limits;
    current.cors = new.cors;
    current.log.level = new.log.level;
    if changed.is_empty() {
        tracing::info!("configuration reloaded; nothing changed");
    } else {
        tracing::info!(changed = ?changed, "configuration reloaded");
    }
    if !restart_only.is_empty() {
        tracing::warn!(sections = ?restart_only, "these changes take effect only after a restart");
    }
}

pub async fn run(path: Option<PathBuf>, mut config: Config, logging: &Logging) -> anyhow::Result<()> {
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "starting");
    let mut server = Server::start(&config, std::sync::Arc::new(chorus_clock::SystemClock)).await?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = hup.recv() => reload(path.as_deref(), &mut config, &server, logging),
            _ = term.recv() => { tracing::info!(signal = "SIGTERM", "shutting down"); break; }
            _ = int.recv() => { tracing::info!(signal = "SIGINT", "shutting down"); break; }
            r = server.stopped() => return r,
        }
    }
    tracing::info!("stopped accepting; closing connections with 1012 and draining");
    if server.shutdown().await {
        tracing::info!("stopped cleanly");
    } else {
        tracing::warn!(limit = ?config.timing.drain_limit, "drain limit reached; stopping with work still open");
    }
    Ok(())
}
