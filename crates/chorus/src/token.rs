//! `chorus token`: prints a signed connection token made with the server's
//! secret, so a newcomer can connect in one step.

use std::time::Duration;

use chorus_auth::{HmacSecret, MintRequest, mint_token};
use chorus_clock::SystemClock;

use crate::config::Config;

pub struct TokenArgs {
    pub user: String,
    pub ttl: Duration,
    pub channels: Vec<String>,
}

pub fn run(config: &Config, args: TokenArgs) -> anyhow::Result<String> {
    let resolved = HmacSecret::resolve(&config.auth, &config.data_dir)?;
    let token = mint_token(
        &resolved.secret,
        &MintRequest {
            user: args.user,
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
