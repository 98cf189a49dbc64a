//! Command line: `chorus serve`, `chorus token`, `chorus migrate`,
//! `chorus admin create-user`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use chorus_chat::accounts::NewAccount;
use chorus_store::UserRole;
use clap::{Parser, Subcommand, ValueEnum};

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
    /// Print a signed connection token made with the server's secret (found
    /// through the same configuration and data directory as `chorus serve`;
    /// never created here).
    #[command(group(clap::ArgGroup::new("who").required(true).args(["user", "username"])))]
    Token {
        /// The user id (the token's `sub`).
        #[arg(long)]
        user: Option<String>,
        /// An existing account's username, looked up in the server's store.
        #[arg(long)]
        username: Option<String>,
        /// Lifetime, e.g. `15m`, `24h`.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// A channel grant (exact name or `namespace:prefix*`); repeatable.
        #[arg(long = "channel")]
        channels: Vec<String>,
        #[arg(long, env = "CHORUS_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Apply pending store migrations and exit (the server also applies them at start).
    Migrate {
        #[arg(long, env = "CHORUS_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Administration of the configured store.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create a user with a password (an administrator unless `--role user`);
    /// applies pending migrations first.
    CreateUser {
        /// 3-32 characters of `A-Z a-z 0-9 _ . -`.
        #[arg(long)]
        username: String,
        /// 8-128 characters. Visible to other local users in the process
        /// list while the command runs: prefer `--password-stdin` on shared machines.
        #[arg(long, required_unless_present = "password_stdin", conflicts_with = "password_stdin")]
        password: Option<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        #[arg(long, value_enum, default_value_t = Role::Admin)]
        role: Role,
        #[arg(long)]
        email: Option<String>,
        #[arg(long, env = "CHORUS_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Role {
    Admin,
    User,
}

impl From<Role> for UserRole {
    fn from(r: Role) -> Self {
        match r {
            Role::Admin => UserRole::Admin,
            Role::User => UserRole::User,
        }
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::Migrate { config } => report("chorus migrate", run_blocking(migrate(config))),
        Command::Admin { command: AdminCommand::CreateUser { username, password, password_stdin: _, role, email, config } } => {
            let password = match password.map_or_else(read_password_line, Ok) {
                Ok(p) => p,
                Err(e) => return report("chorus admin create-user", Err(e)),
            };
            let account = NewAccount { username, password, email };
            report("chorus admin create-user", run_blocking(create_user(config, account, role.into())))
        }
        Command::Token { user, username, ttl, channels, config } => {
            let who = match (user, username) {
                (Some(id), _) => crate::token::Who::Id(id),
                (None, Some(name)) => crate::token::Who::Username(name),
                (None, None) => unreachable!("clap requires --user or --username"),
            };
            let result = Config::load(config.as_deref())
                .map_err(anyhow::Error::from)
                .and_then(|c| run_blocking(crate::token::run(&c, config.as_deref(), crate::token::TokenArgs { who, ttl, channels })));
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

/// Prints the outcome of a one-shot command and turns it into an exit code.
fn report(command: &str, result: anyhow::Result<String>) -> ExitCode {
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{command}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_blocking<T>(fut: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(fut)
}

fn read_password_line() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).context("reading the password from standard input")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Creates the data directory private to this user (0700) and narrows
/// files of ours found in it with wider modes to 0600, whichever command
/// runs first.
pub(crate) fn prepare_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    chorus_store::private::private_dir(dir).with_context(|| format!("creating data directory {}", dir.display()))?;
    let secret = dir.join(chorus_auth::SECRET_FILE_NAME);
    chorus_store::private::narrow(&secret).with_context(|| format!("narrowing the permissions of {}", secret.display()))?;
    Ok(())
}

/// Opens the configured store (creating the data directory) and applies pending migrations.
async fn open_migrated(path: Option<PathBuf>) -> anyhow::Result<std::sync::Arc<dyn chorus_store::Store>> {
    let config = Config::load(path.as_deref())?;
    prepare_data_dir(&config.data_dir)?;
    let store = chorus_store::open_store(&config.store, &config.data_dir).await.context("opening the store")?;
    if let Err(e) = store.migrate().await {
        store.close().await;
        return Err(anyhow::Error::from(e).context("migrating the store"));
    }
    Ok(store)
}

async fn migrate(path: Option<PathBuf>) -> anyhow::Result<String> {
    let store = open_migrated(path).await?;
    let engine = store.engine();
    store.close().await;
    Ok(format!("migrations applied ({engine} store)"))
}

async fn create_user(path: Option<PathBuf>, account: NewAccount, role: UserRole) -> anyhow::Result<String> {
    let store = open_migrated(path).await?;
    let created = chorus_chat::accounts::create_user(store.as_ref(), account, role).await;
    store.close().await;
    let user = created?;
    Ok(format!("created {role} `{}` (id {})", user.username, user.id))
}
