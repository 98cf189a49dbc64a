//! Admission: who may come in, and how often, in one component. The node's
//! connection count and connect rate, and the per-user rate limiters
//! (frames, messages, REST requests). The per-user connection count is not
//! here: it holds cluster-wide, so the broker's `ConnectionRegistry` keeps it.

use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::watch;

use super::Hub;
use crate::config::{Limits, RateLimits};
use crate::ids::UserId;
use crate::limiter::{KeyedLimiter, Rate, RateLimited, TokenBucket};
use crate::metrics::CoreMetrics;

/// Why a new connection is refused before any work is done for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectRefusal {
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("this node is at its connection limit")]
    NodeFull,
    /// Over the node's connect rate.
    #[error(transparent)]
    Rate(RateLimited),
}

/// Which per-user limiter to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserLimiter {
    /// Frames (and SSE commands) per user.
    Frames,
    /// Chat messages and client publications per user.
    Messages,
    /// REST requests per user.
    Rest,
}

impl UserLimiter {
    /// The metric label of a refusal.
    pub fn label(self) -> &'static str {
        match self {
            UserLimiter::Frames => "user_frames",
            UserLimiter::Messages => "user_messages",
            UserLimiter::Rest => "user_rest",
        }
    }

    /// What a refusal says came too often.
    fn what(self) -> &'static str {
        match self {
            UserLimiter::Frames => "frames",
            UserLimiter::Messages => "messages",
            UserLimiter::Rest => "requests",
        }
    }

    fn rate(self, r: &RateLimits) -> Rate {
        match self {
            UserLimiter::Frames => Rate { per_second: r.user_frames_per_second, burst: r.user_frames_burst },
            UserLimiter::Messages => Rate::per_minute(r.messages_per_minute, r.messages_burst),
            UserLimiter::Rest => Rate::per_minute(r.rest_per_minute, r.rest_burst),
        }
    }
}

pub(super) struct Admission {
    limits: watch::Receiver<Limits>,
    rates: watch::Receiver<RateLimits>,
    metrics: CoreMetrics,
    /// Connections open on this node.
    connections: AtomicUsize,
    /// The node's connect rate; created on first use.
    connects: Mutex<Option<TokenBucket>>,
    user_frames: KeyedLimiter<UserId>,
    user_messages: KeyedLimiter<UserId>,
    user_rest: KeyedLimiter<UserId>,
}

impl Admission {
    pub(super) fn new(limits: watch::Receiver<Limits>, rates: watch::Receiver<RateLimits>, metrics: CoreMetrics) -> Self {
        Self {
            limits,
            rates,
            metrics,
            connections: AtomicUsize::new(0),
            connects: Mutex::new(None),
            user_frames: KeyedLimiter::new(),
            user_messages: KeyedLimiter::new(),
            user_rest: KeyedLimiter::new(),
        }
    }

    /// The node's connection limit and connect rate (takes one token).
    fn admit_connect(&self) -> Result<(), ConnectRefusal> {
        let (rate, per_node) = {
            let l = self.limits.borrow();
            (Rate { per_second: f64::from(l.connects_per_second), burst: l.connects_per_second.max(1) }, l.connections_per_node)
        };
        if self.connections() >= per_node {
            self.metrics.rate_limited("node_connections");
            return Err(ConnectRefusal::NodeFull);
        }
        let now = tokio::time::Instant::now();
        let mut bucket = self.connects.lock();
        bucket.get_or_insert_with(|| TokenBucket::new(rate, now)).take(rate, now).map_err(|wait| {
            self.metrics.rate_limited("connect_rate");
            ConnectRefusal::Rate(RateLimited::new("new connections", wait))
        })
    }

    /// Takes one of the node's connection slots; false when the node is full.
    pub(super) fn take_slot(&self) -> bool {
        let per_node = self.limits.borrow().connections_per_node;
        if self.connections.fetch_add(1, Ordering::AcqRel) >= per_node {
            self.connections.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    pub(super) fn free_slot(&self) {
        self.connections.fetch_sub(1, Ordering::AcqRel);
    }

    pub(super) fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// Connections one user may hold across the cluster.
    pub(super) fn per_user(&self) -> usize {
        self.limits.borrow().connections_per_user
    }

    fn limiter(&self, limiter: UserLimiter) -> &KeyedLimiter<UserId> {
        match limiter {
            UserLimiter::Frames => &self.user_frames,
            UserLimiter::Messages => &self.user_messages,
            UserLimiter::Rest => &self.user_rest,
        }
    }

    fn check_user(&self, limiter: UserLimiter, user: &UserId) -> Result<(), RateLimited> {
        let rate = limiter.rate(&self.rates.borrow());
        let cap = self.limits.borrow().limiter_entries;
        self.limiter(limiter).check(user, rate, cap, tokio::time::Instant::now()).map_err(|refusal| {
            self.metrics.rate_limited(limiter.label());
            RateLimited::refused(limiter.what(), refusal, rate)
        })
    }

    /// Drops limiter entries idle past the configured time; returns how many remain.
    pub(super) fn sweep(&self) -> usize {
        let idle = self.rates.borrow().limiter_idle;
        let now = tokio::time::Instant::now();
        [UserLimiter::Frames, UserLimiter::Messages, UserLimiter::Rest].into_iter().map(|l| self.limiter(l).sweep(idle, now)).sum()
    }

    /// Drops the entries due in the limiters' expiry queues that have
    /// refilled; returns how many went. Cheap: it touches only what goes.
    fn expire_refilled(&self) -> usize {
        let now = tokio::time::Instant::now();
        let rates = self.rates.borrow();
        [UserLimiter::Frames, UserLimiter::Messages, UserLimiter::Rest].into_iter().map(|l| self.limiter(l).expire(l.rate(&rates), now)).sum()
    }

    /// Drops every entry that has refilled, queued or not (a full pass, which
    /// also catches entries queued under a rate since reloaded); returns how
    /// many remain.
    fn drop_refilled(&self) -> usize {
        let now = tokio::time::Instant::now();
        let rates = self.rates.borrow();
        [UserLimiter::Frames, UserLimiter::Messages, UserLimiter::Rest].into_iter().map(|l| self.limiter(l).drop_full(l.rate(&rates), now)).sum()
    }

    /// Drops a user's entries that have refilled; the others keep the
    /// user's budget until they refill, then leave through the expiry queue.
    fn forget_refilled(&self, user: &UserId) {
        let now = tokio::time::Instant::now();
        let rates = self.rates.borrow();
        for l in [UserLimiter::Frames, UserLimiter::Messages, UserLimiter::Rest] {
            self.limiter(l).forget_if_full(user, l.rate(&rates), now);
        }
    }

    pub(super) fn entries(&self) -> usize {
        self.user_frames.len() + self.user_messages.len() + self.user_rest.len()
    }
}

impl Hub {
    /// Whether a new connection may start: not while shutting down, not past
    /// the node's connection limit, not faster than its connect rate (this
    /// takes one token). Transports ask before any work (upgrade, token).
    pub fn admit_connect(&self) -> Result<(), ConnectRefusal> {
        if self.is_shutting_down() {
            return Err(ConnectRefusal::ShuttingDown);
        }
        self.0.admission.admit_connect()
    }

    /// Checks a per-user rate limit; a refusal is counted and says when to retry.
    pub fn check_user_rate(&self, limiter: UserLimiter, user: &UserId) -> Result<(), RateLimited> {
        self.0.admission.check_user(limiter, user)
    }

    /// Drops limiter entries idle past the configured time; returns how many remain.
    pub fn sweep_limiters(&self) -> usize {
        self.0.admission.sweep()
    }

    /// Drops the per-user limiter entries that have refilled since they were
    /// last looked at (run every second, and a few on every check): a user
    /// who stopped sending holds no entry for much longer than its refill.
    pub fn expire_refilled_limiters(&self) -> usize {
        self.0.admission.expire_refilled()
    }

    /// Drops every per-user limiter entry that has refilled (run by the
    /// cleanup pass, in case a rate was reloaded since entries were queued).
    pub fn drop_refilled_limiters(&self) -> usize {
        self.0.admission.drop_refilled()
    }

    /// Drops a user's refilled limiter entries (their last connection here ended).
    pub(super) fn forget_refilled_limits(&self, user: &UserId) {
        self.0.admission.forget_refilled(user);
    }

    pub fn connection_count(&self) -> usize {
        self.0.admission.connections()
    }

    pub fn limiter_entries(&self) -> usize {
        self.0.admission.entries()
    }
}
