//! Command line: `chorus serve`, `chorus token`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::logging::{Logging, install_panic_hook};

#[derive(Debug, Parser)]
#[command(name = "chorus", version, about = "Realtime gateway and agent runtime for AI-agent chat")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (defaults: 127.0.0.1:8080, SQLite file and in-process broker in ./chorus-data).
    Serve {
        /// TOML configuration file; `CHORUS_*` environment variables override it.
        #[arg(long, env = "CHORUS_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print a signed connection token made with the server's secret.
    Token {
        /// The user id (the token's `sub`).
        #[arg(long)]
        user: String,
        /// Lifetime, e.g. `15m`, `24h`.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// A channel grant (exact name or `namespace:prefix*`); repeatable.
        #[arg(long = "channel")]
        channels: Vec<String>,
        #[arg(long, env = "CHORUS_CONFIG")]
        config: Option<PathBuf>,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::Token { user, ttl, channels, config } => {
            let result = Config::load(config.as_deref())
                .map_err(anyhow::Error::from)
                .and_then(|c| crate::token::run(&c, crate::token::TokenArgs { user, ttl, channels }));
            match result {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("chorus token: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn serve(path: Option<PathBuf>) -> ExitCode {
    let config = match Config::load(path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chorus serve: {e}");
            return ExitCode::FAILURE;
        }
    };
    let logging = match Logging::init(&config.log) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("chorus serve: logging: {e}");
            return ExitCode::FAILURE;
        }
    };
    install_panic_hook();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "could not start the runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(crate::serve::run(path, config, &logging));
    drop(runtime);
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "chorus stopped with an error");
            ExitCode::FAILURE
        }
    };
    // Dropping the logger flushes every buffered line.
    drop(logging);
    code
}
