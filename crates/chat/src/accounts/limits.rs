//! Rate limits of sign-in, sign-up and refresh, built so that guessing
//! passwords stays expensive without handing anyone a way to lock a user out.
//!
//! A login attempt passes three limits:
//! 1. per client address (`logins_per_address_per_minute`), whatever the account;
//! 2. per account and address pair (`logins_per_account_address_per_minute`):
//!    an attacker hammering an account from one address is slowed there, and
//!    only there;
//! 3. per account from addresses that have not signed in to it before
//!    (`logins_per_account_per_hour`, a slow bucket): guessing from many
//!    addresses is capped, while the owner's usual addresses (any that signed
//!    in successfully within `session_max_age`) are never held back by it.
//!
//! All three count attempts for any username, existing or not, so their
//! answers say nothing about who has an account. State is per node.

use std::net::IpAddr;
use std::time::Duration;

use chorus_core::limiter::{KeyedLimiter, Rate, Refusal};
use tokio::time::Instant;

use super::cache::BoundedMap;
use crate::{ChatConfig, ChatError};

/// Keys each limiter tracks; past it new keys are refused (429) rather than
/// forgetting someone's recent attempts. Entries that have refilled make room.
const LIMITER_CAPACITY: usize = 50_000;
/// (account, address) pairs remembered as having signed in.
const KNOWN_CAPACITY: usize = 50_000;

/// A refusal as a 429 with a whole-second `Retry-After` rounded up.
pub(crate) fn refused(what: &str, refusal: Refusal) -> ChatError {
    let wait = match refusal {
        Refusal::Rate(d) => Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0)).min(Duration::from_secs(3600)),
        Refusal::Full => Duration::from_secs(60),
    };
    ChatError::RateLimited(chorus_core::limiter::RateLimited::new(what.to_owned(), wait))
}

pub(crate) fn per_minute(n: u32) -> Rate {
    let n = n.max(1);
    Rate::per_minute(f64::from(n), n)
}

fn per_hour(n: u32) -> Rate {
    let n = n.max(1);
    Rate { per_second: f64::from(n) / 3600.0, burst: n }
}

/// Accounts are named case-insensitively, like usernames.
fn account_key(username: &str) -> String {
    username.to_lowercase()
}

pub(crate) struct AuthLimits {
    login_address: KeyedLimiter<IpAddr>,
    login_pair: KeyedLimiter<(String, Option<IpAddr>)>,
    login_account: KeyedLimiter<String>,
    signup_address: KeyedLimiter<IpAddr>,
    refresh_address: KeyedLimiter<IpAddr>,
    /// (account, address) → when it last signed in successfully.
    known: BoundedMap<(String, IpAddr), Instant>,
}

impl AuthLimits {
    pub fn new() -> Self {
        Self {
            login_address: KeyedLimiter::new(),
            login_pair: KeyedLimiter::new(),
            login_account: KeyedLimiter::new(),
            signup_address: KeyedLimiter::new(),
            refresh_address: KeyedLimiter::new(),
            known: BoundedMap::new(KNOWN_CAPACITY),
        }
    }

    /// Checks (and counts) one login attempt for `username` from `ip`.
    pub fn check_login(&self, cfg: &ChatConfig, username: &str, ip: Option<IpAddr>) -> Result<(), ChatError> {
        let now = Instant::now();
        let account = account_key(username);
        if let Some(ip) = ip {
            self.login_address
                .check(&ip, per_minute(cfg.logins_per_address_per_minute), LIMITER_CAPACITY, now)
                .map_err(|r| refused("login attempts from this address", r))?;
        }
        self.login_pair
            .check(&(account.clone(), ip), per_minute(cfg.logins_per_account_address_per_minute), LIMITER_CAPACITY, now)
            .map_err(|r| refused("login attempts for this account from this address", r))?;
        if !self.is_known(cfg, &account, ip) {
            self.login_account.check(&account, per_hour(cfg.logins_per_account_per_hour), LIMITER_CAPACITY, now).map_err(|r| {
                refused("login attempts for this account from addresses it has not signed in from (addresses it signed in from before are not affected)", r)
            })?;
        }
        Ok(())
    }

    fn is_known(&self, cfg: &ChatConfig, account: &str, ip: Option<IpAddr>) -> bool {
        let Some(ip) = ip else { return false };
        self.known.get(&(account.to_owned(), ip)).is_some_and(|at| at.elapsed() < cfg.session_max_age)
    }

    /// Remembers that `ip` signed in to `username`: its later attempts skip
    /// the slow per-account limit.
    pub fn signed_in(&self, cfg: &ChatConfig, username: &str, ip: Option<IpAddr>) {
        if let Some(ip) = ip {
            let max_age = cfg.session_max_age;
            self.known.insert((account_key(username), ip), Instant::now(), |at| at.elapsed() >= max_age);
        }
    }

    pub fn check_signup(&self, cfg: &ChatConfig, ip: Option<IpAddr>) -> Result<(), ChatError> {
        let Some(ip) = ip else { return Ok(()) };
        self.signup_address
            .check(&ip, per_minute(cfg.signups_per_address_per_minute), LIMITER_CAPACITY, Instant::now())
            .map_err(|r| refused("sign-ups from this address", r))
    }

    pub fn check_refresh(&self, cfg: &ChatConfig, ip: Option<IpAddr>) -> Result<(), ChatError> {
        let Some(ip) = ip else { return Ok(()) };
        self.refresh_address
            .check(&ip, per_minute(cfg.refreshes_per_address_per_minute), LIMITER_CAPACITY, Instant::now())
            .map_err(|r| refused("token refreshes from this address", r))
    }

    /// Drops entries that have refilled (they carry nothing) and addresses
    /// known for longer than `session_max_age`; returns the limiter entries left.
    pub fn sweep(&self, cfg: &ChatConfig) -> usize {
        let now = Instant::now();
        let max_age = cfg.session_max_age;
        self.known.retain(|_, at| at.elapsed() < max_age);
        self.login_address.drop_full(per_minute(cfg.logins_per_address_per_minute), now)
            + self.login_pair.drop_full(per_minute(cfg.logins_per_account_address_per_minute), now)
            + self.login_account.drop_full(per_hour(cfg.logins_per_account_per_hour), now)
            + self.signup_address.drop_full(per_minute(cfg.signups_per_address_per_minute), now)
            + self.refresh_address.drop_full(per_minute(cfg.refreshes_per_address_per_minute), now)
    }

    pub fn entries(&self) -> usize {
        self.login_address.len() + self.login_pair.len() + self.login_account.len() + self.signup_address.len() + self.refresh_address.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ChatConfig {
        ChatConfig {
            logins_per_address_per_minute: 1000,
            logins_per_account_address_per_minute: 3,
            logins_per_account_per_hour: 5,
            ..ChatConfig::default()
        }
    }

    fn ip(n: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, n]))
    }

    #[tokio::test(start_paused = true)]
    async fn one_address_hammering_an_account_is_slowed_only_there() {
        let (l, c) = (AuthLimits::new(), cfg());
        l.signed_in(&c, "alice", ip(1));
        for _ in 0..3 {
            l.check_login(&c, "alice", ip(9)).unwrap();
        }
        assert!(matches!(l.check_login(&c, "Alice", ip(9)), Err(ChatError::RateLimited { .. })), "case does not make a new account");
        // The owner, from the address they use, is not affected.
        l.check_login(&c, "alice", ip(1)).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn many_addresses_are_capped_per_account_but_known_addresses_pass() {
        let (l, c) = (AuthLimits::new(), cfg());
        l.signed_in(&c, "alice", ip(1));
        for n in 10..15 {
            l.check_login(&c, "alice", ip(n)).unwrap();
        }
        let refused = l.check_login(&c, "alice", ip(20)).unwrap_err();
        assert!(refused.to_string().contains("addresses it signed in from before are not affected"), "{refused}");
        assert!(matches!(refused, ChatError::RateLimited(r) if r.retry_after > Duration::from_secs(60)), "a slow bucket");
        for _ in 0..3 {
            l.check_login(&c, "alice", ip(1)).unwrap();
        }
        // Other accounts are not affected either, existing or not.
        l.check_login(&c, "bob", ip(20)).unwrap();
        // An hour later the bucket has refilled and is swept.
        tokio::time::advance(Duration::from_secs(3600)).await;
        l.sweep(&c);
        l.check_login(&c, "alice", ip(21)).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn refilled_entries_are_swept_and_drained_ones_kept() {
        let (l, c) = (AuthLimits::new(), cfg());
        for _ in 0..3 {
            l.check_login(&c, "carol", ip(2)).unwrap();
        }
        assert!(l.entries() > 0);
        // A minute refills the pair, not the hourly account bucket.
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(l.sweep(&c), 1, "only the account's slow bucket is left");
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(l.sweep(&c), 0);
    }
}
