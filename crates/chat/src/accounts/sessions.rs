//! Whether a login session is still good, with a short cache in front of the
//! store, and throttled writes of its activity (`last_seen_at`).
//!
//! A session ends when it is revoked, at its absolute expiry, or after
//! `session_idle` without activity. Activity is a request or a new connection
//! made with one of its tokens, and, for as long as it lasts, a live
//! connection (the accounts' background loop touches those).
//!
//! The cache keeps what the store said for [`CACHE_TTL`]: a revocation made
//! on another node is seen within that time (live connections everywhere are
//! closed at once through the hub). An idle verdict is always confirmed
//! against the store, since another node may have seen activity.
//!
//! Every time here is the injected clock's, like the store's `last_seen_at`
//! it is compared with; a clock that went back counts as a long time (the
//! cache reloads, the session is touched again).

use std::sync::Arc;
use std::time::Duration;

use chorus_clock::Clock;
use chorus_store::{AuthSession, Store};

use super::cache::BoundedMap;
use crate::ChatError;

/// How long the store's answer about a session is trusted.
pub const CACHE_TTL: Duration = Duration::from_secs(5);
/// Sessions remembered at once.
const CAPACITY: usize = 50_000;

/// Whether a check counts as activity of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    /// A request or a new connection: refreshes `last_seen_at` (throttled).
    Use,
    /// Only looks.
    Look,
}

/// Why a session no longer authenticates anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Revoked, unknown, or not this token's user's.
    Revoked,
    Expired,
    Idle,
}

impl Ended {
    pub fn message(self) -> &'static str {
        match self {
            Ended::Revoked => "the login session has been revoked",
            Ended::Expired => "the login session has expired",
            Ended::Idle => "the login session expired after a period of inactivity",
        }
    }

    pub fn error(self) -> ChatError {
        ChatError::Unauthorized(self.message().into())
    }
}

#[derive(Debug, Clone)]
struct Entry {
    user_id: String,
    state: State,
    /// When the store was last read (or written) for it (Unix ms).
    checked: i64,
    /// When this node last wrote its `last_seen_at` (Unix ms).
    touched: Option<i64>,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Live(Times),
    Ended(Ended),
}

#[derive(Debug, Clone, Copy)]
struct Times {
    expires_at: i64,
    last_seen_at: i64,
}

impl Entry {
    fn from_store(s: &AuthSession, now_ms: i64, touched: Option<i64>) -> Self {
        let state = if s.revoked_at.is_some() {
            State::Ended(Ended::Revoked)
        } else if s.expires_at <= now_ms {
            State::Ended(Ended::Expired)
        } else {
            State::Live(Times { expires_at: s.expires_at, last_seen_at: s.last_seen_at })
        };
        Entry { user_id: s.user_id.clone(), state, checked: now_ms, touched }
    }

    fn gone(user_id: String, now_ms: i64) -> Self {
        Entry { user_id, state: State::Ended(Ended::Revoked), checked: now_ms, touched: None }
    }
}

/// Whether at least `span` went by from `since` to `now`; a clock that went back says yes.
fn passed(since: i64, now: i64, span: Duration) -> bool {
    now < since || now - since >= millis(span)
}

pub(crate) struct Sessions {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    cache: BoundedMap<String, Entry>,
    idle_ms: i64,
    touch_every: Duration,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Sessions {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, idle: Duration, touch_every: Duration) -> Self {
        // Touches must come well within the idle window, or use would not keep a session alive.
        let touch_every = touch_every.min(idle / 4).max(Duration::from_millis(100));
        Self { store, clock, cache: BoundedMap::new(CAPACITY), idle_ms: millis(idle), touch_every }
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn touch_every(&self) -> Duration {
        self.touch_every
    }

    pub fn idle_ms(&self) -> i64 {
        self.idle_ms
    }

    fn stale(&self, now_ms: i64) -> impl Fn(&Entry) -> bool + '_ {
        move |e: &Entry| passed(e.checked, now_ms, CACHE_TTL) && e.touched.is_none_or(|t| passed(t, now_ms, self.touch_every))
    }

    /// Records a session just created or rotated (its activity is now).
    pub fn remember(&self, s: &AuthSession) {
        let now_ms = self.now_ms();
        self.cache.insert(s.id.clone(), Entry::from_store(s, now_ms, Some(now_ms)), self.stale(now_ms));
    }

    /// Records that a session ended here (revoked or deleted).
    pub fn forget(&self, id: &str, user_id: &str) {
        let now_ms = self.now_ms();
        self.cache.insert(id.to_owned(), Entry::gone(user_id.to_owned(), now_ms), self.stale(now_ms));
    }

    async fn load(&self, id: &str, now_ms: i64, touched: Option<i64>) -> Result<Entry, ChatError> {
        let entry = match self.store.get_session(id).await? {
            Some(s) => Entry::from_store(&s, now_ms, touched),
            // Unknown ids are remembered as gone too: a replayed token must not reach the store each time.
            None => Entry::gone(String::new(), now_ms),
        };
        self.cache.insert(id.to_owned(), entry.clone(), self.stale(now_ms));
        Ok(entry)
    }

    /// Checks that session `id` belongs to `user_id` and is live and not idle;
    /// with [`Activity::Use`], records the activity.
    pub async fn check(&self, id: &str, user_id: &str, activity: Activity) -> Result<Result<(), Ended>, ChatError> {
        let now_ms = self.now_ms();
        let cached = self.cache.get(id);
        let touched = cached.as_ref().and_then(|e| e.touched);
        let (mut entry, fresh) = match cached {
            Some(e) if !passed(e.checked, now_ms, CACHE_TTL) => (e, false),
            _ => (self.load(id, now_ms, touched).await?, true),
        };
        let mut verdict = self.judge(&entry, user_id, now_ms);
        if verdict == Err(Ended::Idle) && !fresh {
            entry = self.load(id, now_ms, touched).await?;
            verdict = self.judge(&entry, user_id, now_ms);
        }
        if verdict.is_err() || activity == Activity::Look {
            return Ok(verdict);
        }
        if entry.touched.is_none_or(|t| passed(t, now_ms, self.touch_every)) && !self.touch(id, now_ms).await? {
            // It ended since it was read: say why.
            let entry = self.load(id, now_ms, None).await?;
            return Ok(Err(self.judge(&entry, user_id, now_ms).err().unwrap_or(Ended::Revoked)));
        }
        Ok(Ok(()))
    }

    fn judge(&self, e: &Entry, user_id: &str, now_ms: i64) -> Result<(), Ended> {
        if e.user_id != user_id {
            return Err(Ended::Revoked);
        }
        let t = match e.state {
            State::Live(t) => t,
            State::Ended(why) => return Err(why),
        };
        if now_ms >= t.expires_at {
            Err(Ended::Expired)
        } else if now_ms.saturating_sub(t.last_seen_at) >= self.idle_ms {
            Err(Ended::Idle)
        } else {
            Ok(())
        }
    }

    /// Writes the session's activity at `now_ms`; false if it is no longer live.
    async fn touch(&self, id: &str, now_ms: i64) -> Result<bool, ChatError> {
        let live = self.store.touch_session(id).await?;
        if live {
            self.cache.update(id, |e| {
                e.touched = Some(now_ms);
                if let State::Live(t) = &mut e.state {
                    t.last_seen_at = t.last_seen_at.max(now_ms);
                }
            });
        } else {
            // Ended (revoked or past its maximum age): the next check reads why.
            self.cache.remove(id);
        }
        Ok(live)
    }

    /// Touches a session in use by a live connection, unless this node wrote
    /// its activity recently. False if it is no longer live.
    pub async fn touch_if_due(&self, id: &str) -> Result<bool, ChatError> {
        let now_ms = self.now_ms();
        match self.cache.get(id) {
            Some(e) if matches!(e.state, State::Ended(_)) && !passed(e.checked, now_ms, CACHE_TTL) => Ok(false),
            Some(e) if e.touched.is_some_and(|t| !passed(t, now_ms, self.touch_every)) => Ok(true),
            Some(_) => self.touch(id, now_ms).await,
            None => {
                let live = self.store.touch_session(id).await?;
                if live {
                    // Reads it so the next checks are served from the cache.
                    self.load(id, now_ms, Some(now_ms)).await?;
                }
                Ok(live)
            }
        }
    }

    /// Drops entries that carry nothing worth keeping.
    pub fn sweep(&self) {
        let stale = self.stale(self.now_ms());
        self.cache.retain(|_, e| !stale(e));
    }
}
