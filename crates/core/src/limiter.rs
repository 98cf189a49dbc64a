//! Token-bucket rate limiting, for one connection or keyed by user.
//!
//! Time comes from `tokio::time::Instant`, so tests can pause and advance it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// A rate and the burst allowed above it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

impl Rate {
    pub fn per_minute(n: f64, burst: u32) -> Self {
        Self { per_second: n / 60.0, burst }
    }
}

/// One bucket. Starts full.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: Rate, now: Instant) -> Self {
        Self { tokens: f64::from(rate.burst.max(1)), last: now }
    }

    /// Whether the bucket has refilled to its burst by `now`: it then carries
    /// no state, since a new bucket would start the same.
    pub fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let burst = f64::from(rate.burst.max(1));
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * rate.per_second >= burst
    }

    /// Takes one token, or says how long until one is available.
    pub fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        let burst = f64::from(rate.burst.max(1));
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else if rate.per_second > 0.0 {
            Err(Duration::try_from_secs_f64((1.0 - self.tokens) / rate.per_second).unwrap_or(Duration::MAX))
        } else {
            Err(Duration::MAX)
        }
    }
}

/// Why a keyed check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over the rate; retry after this long.
    Rate(Duration),
    /// The limiter tracks as many keys as it may; fail closed rather than forget limits.
    Full,
}

impl Refusal {
    /// How long until a retry may succeed: the wait for a token or, when the
    /// table is full, the time an entry takes to refill completely (then it
    /// carries no state and makes room).
    pub fn wait(self, rate: Rate) -> Duration {
        match self {
            Refusal::Rate(d) => d,
            Refusal::Full => full_refill(rate),
        }
    }
}

/// Longest retry hint given: a client should come back within the hour.
const MAX_RETRY_HINT: Duration = Duration::from_secs(3600);

/// A request refused by a rate limit, as every front end reports it: one
/// message and one retry hint, whether the refusal reaches the client as a
/// WebSocket reply, an SSE command's answer or an HTTP 429.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("too many {what}; retry in {} s", self.retry_after_secs())]
pub struct RateLimited {
    /// What came too often, as a plural noun ("messages", "requests").
    pub what: Cow<'static, str>,
    /// How long until a retry may succeed.
    pub retry_after: Duration,
}

impl RateLimited {
    pub fn new(what: impl Into<Cow<'static, str>>, retry_after: Duration) -> Self {
        Self { what: what.into(), retry_after: retry_after.min(MAX_RETRY_HINT) }
    }

    /// A keyed limiter's refusal under `rate`.
    pub fn refused(what: impl Into<Cow<'static, str>>, refusal: Refusal, rate: Rate) -> Self {
        Self::new(what, refusal.wait(rate))
    }

    /// The retry hint in whole seconds, rounded up and at least 1 (for
    /// `Retry-After`, and the message).
    pub fn retry_after_secs(&self) -> u64 {
        let d = self.retry_after;
        (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
    }
}

const SHARDS: usize = 16;

/// Buckets keyed by `K`, bounded to `capacity` keys. Idle entries are
/// dropped by [`KeyedLimiter::sweep`]; when the table is full and a sweep
/// frees nothing, new keys are refused ([`Refusal::Full`]), because evicting
/// a live entry would hand its owner a fresh burst.
pub struct KeyedLimiter<K> {
    shards: Box<[Mutex<HashMap<K, TokenBucket>>]>,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    pub fn new() -> Self {
        Self { shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect() }
    }

    fn shard(&self, key: &K) -> &Mutex<HashMap<K, TokenBucket>> {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }

    pub fn check(&self, key: &K, rate: Rate, capacity: usize, now: Instant) -> Result<(), Refusal> {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        let mut map = self.shard(key).lock();
        if let Some(bucket) = map.get_mut(key) {
            return bucket.take(rate, now).map_err(Refusal::Rate);
        }
        if map.len() >= per_shard {
            // Entries that have refilled completely carry no state worth keeping.
            let full_after = full_refill(rate);
            map.retain(|_, b| now.saturating_duration_since(b.last) < full_after);
            if map.len() >= per_shard {
                return Err(Refusal::Full);
            }
        }
        let mut bucket = TokenBucket::new(rate, now);
        let result = bucket.take(rate, now).map_err(Refusal::Rate);
        map.insert(key.clone(), bucket);
        result
    }

    /// Drops entries idle for at least `idle`; returns how many remain.
    pub fn sweep(&self, idle: Duration, now: Instant) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let mut map = s.lock();
                map.retain(|_, b| now.saturating_duration_since(b.last) < idle);
                map.len()
            })
            .sum()
    }

    /// Drops entries whose bucket has refilled at `rate` (they carry nothing
    /// a new entry would not); returns how many remain.
    pub fn drop_full(&self, rate: Rate, now: Instant) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let mut map = s.lock();
                map.retain(|_, b| !b.is_full(rate, now));
                map.len()
            })
            .sum()
    }

    /// Drops `key`'s entry if its bucket has refilled; true if it went.
    pub fn forget_if_full(&self, key: &K, rate: Rate, now: Instant) -> bool {
        let mut map = self.shard(key).lock();
        let full = map.get(key).is_some_and(|b| b.is_full(rate, now));
        if full {
            map.remove(key);
        }
        full
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Hash + Eq + Clone> Default for KeyedLimiter<K> {
    fn default() -> Self {
        Self::new()
    }
}

fn full_refill(rate: Rate) -> Duration {
    if rate.per_second <= 0.0 {
        return Duration::MAX;
    }
    Duration::try_from_secs_f64(f64::from(rate.burst.max(1)) / rate.per_second).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_allows_burst_then_rate() {
        let rate = Rate { per_second: 10.0, burst: 5 };
        let mut b = TokenBucket::new(rate, Instant::now());
        for _ in 0..5 {
            b.take(rate, Instant::now()).unwrap();
        }
        assert!(b.take(rate, Instant::now()).is_err());
        tokio::time::advance(Duration::from_millis(100)).await;
        b.take(rate, Instant::now()).unwrap();
        assert!(b.take(rate, Instant::now()).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn keyed_limiter_is_bounded_and_swept() {
        let rate = Rate::per_minute(30.0, 5);
        let l = KeyedLimiter::<u32>::new();
        let cap = SHARDS * 2;
        let mut refused = 0;
        for k in 0..(cap as u32 * 4) {
            match l.check(&k, rate, cap, Instant::now()) {
                Ok(()) => {}
                Err(Refusal::Full) => refused += 1,
                Err(Refusal::Rate(_)) => panic!("first use of a key is never over rate"),
            }
        }
        assert!(refused > 0, "a full table refuses new keys");
        assert!(l.len() <= cap);
        // After a full refill period, entries carry no state and make room.
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(l.check(&99_999, rate, cap, Instant::now()).is_ok());
        tokio::time::advance(Duration::from_secs(7200)).await;
        assert_eq!(l.sweep(Duration::from_secs(7200), Instant::now()), 0);
    }

    #[test]
    fn a_refusal_names_what_and_when() {
        let rate = Rate::per_minute(30.0, 5);
        let r = RateLimited::refused("messages", Refusal::Rate(Duration::from_millis(1500)), rate);
        assert_eq!(r.retry_after_secs(), 2);
        assert_eq!(r.to_string(), "too many messages; retry in 2 s");
        // A full table: retry once an entry can have refilled (5 tokens at 0.5/s).
        assert_eq!(RateLimited::refused("messages", Refusal::Full, rate).retry_after, Duration::from_secs(10));
        assert_eq!(RateLimited::new("frames", Duration::from_millis(3)).retry_after_secs(), 1);
        assert_eq!(RateLimited::new("logins", Duration::MAX).retry_after, MAX_RETRY_HINT);
    }

    #[tokio::test(start_paused = true)]
    async fn refilled_entries_are_dropped_and_the_others_kept() {
        let rate = Rate::per_minute(60.0, 5);
        let l = KeyedLimiter::<&str>::new();
        l.check(&"once", rate, 100, Instant::now()).unwrap();
        for _ in 0..5 {
            l.check(&"drained", rate, 100, Instant::now()).unwrap();
        }
        // One token back a second: "once" is full again after one second, "drained" after five.
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(l.drop_full(rate, Instant::now()), 1);
        // The kept entry still remembers it was drained.
        l.check(&"drained", rate, 100, Instant::now()).unwrap();
        assert!(matches!(l.check(&"drained", rate, 100, Instant::now()), Err(Refusal::Rate(_))));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(l.drop_full(rate, Instant::now()), 0);
        assert!(l.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn keyed_limiter_limits_each_key() {
        let rate = Rate::per_minute(30.0, 5);
        let l = KeyedLimiter::<&str>::new();
        for _ in 0..5 {
            l.check(&"a", rate, 100, Instant::now()).unwrap();
        }
        assert!(matches!(l.check(&"a", rate, 100, Instant::now()), Err(Refusal::Rate(_))));
        l.check(&"b", rate, 100, Instant::now()).unwrap();
    }
}
