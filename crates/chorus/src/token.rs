//! `chorus token`: prints a signed connection token made with the server's
//! secret, so a newcomer can connect in one step.
//!
//! It finds the secret exactly as `chorus serve` does (configuration, then
//! `<data_dir>/jwt-secret`) but never creates one: a token signed with a
//! secret the server does not have would only be refused. When nothing is
//! found it says where it looked.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use chorus_auth::{HmacSecret, MintRequest, mint_token};
use chorus_clock::SystemClock;

use crate::config::Config;

/// Whom the token is for.
pub enum Who {
    /// A user id, used as the token's `sub` as given.
    Id(String),
    /// An existing account, looked up by username in the server's store.
    Username(String),
}

pub struct TokenArgs {
    pub who: Who,
    pub ttl: Duration,
    pub channels: Vec<String>,
}

pub async fn run(config: &Config, config_file: Option<&Path>, args: TokenArgs) -> anyhow::Result<String> {
    let resolved = HmacSecret::find(&config.auth, &config.data_dir).with_context(|| looked_in(config, config_file))?;
    let user = match args.who {
        Who::Id(id) => id,
        Who::Username(name) => user_id_of(config, config_file, &name).await?,
    };
    let token = mint_token(
        &resolved.secret,
        &MintRequest {
            user,
            ttl: args.ttl,
            channels: args.channels,
            audience: config.auth.audience.first().cloned(),
            issuer: config.auth.issuer.clone(),
            session_id: None,
        },
        &SystemClock,
    )?;
    Ok(token)
}

/// Which configuration and data directory were used, for error messages.
fn looked_in(config: &Config, config_file: Option<&Path>) -> String {
    let file = config_file.map_or_else(|| "no configuration file (defaults and CHORUS_* variables)".to_owned(), |p| format!("configuration {}", p.display()));
    let dir = std::path::absolute(&config.data_dir).unwrap_or_else(|_| config.data_dir.clone());
    format!("looked with {file}, data directory {}; run this where the server runs, or pass the server's --config", dir.display())
}

async fn user_id_of(config: &Config, config_file: Option<&Path>, username: &str) -> anyhow::Result<String> {
    let store = chorus_store::open_existing_store(&config.store, &config.data_dir)
        .await
        .with_context(|| format!("opening the server's store to find `{username}` ({})", looked_in(config, config_file)))?;
    let found = store.get_user_by_username(username).await;
    store.close().await;
    match found.context("looking up the username")? {
        Some(user) => Ok(user.id),
        None => anyhow::bail!("no user named `{username}` in the store ({})", looked_in(config, config_file)),
    }
}
