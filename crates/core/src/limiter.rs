//! Token-bucket rate limiting, for one connection or keyed by user.
//!
//! Time comes from `tokio::time::Instant`, so tests can pause and advance it.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
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

    /// When the bucket will have refilled to its burst if nothing is taken
    /// before; `None` when it never refills (a zero rate).
    pub fn full_at(&self, rate: Rate) -> Option<Instant> {
        if rate.per_second <= 0.0 {
            return None;
        }
        let missing = (f64::from(rate.burst.max(1)) - self.tokens).max(0.0);
        let wait = Duration::try_from_secs_f64(missing / rate.per_second).ok()?;
        // Rounded up a little, so that `is_full` holds at the instant given.
        self.last.checked_add(wait + Duration::from_micros(1))
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

/// Due entries a `check` drops on its way: more than the one entry a check
/// can add, so the expiry queue drains faster than it fills, and few enough
/// that no check pays for a backlog.
const EXPIRE_PER_CHECK: usize = 4;

/// An entry's place in its shard's expiry queue: the entry is looked at again
/// at `due`, when its bucket would have refilled if it was not used since.
struct Due<K> {
    at: Instant,
    /// The entry this was queued for; a key dropped and added again gets a
    /// new id, so a stale place is recognised and skipped.
    id: u64,
    key: K,
}

// Ordered by time, then by id (unique within a shard): keys need no order.
impl<K> PartialEq for Due<K> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.id) == (other.at, other.id)
    }
}

impl<K> Eq for Due<K> {}

impl<K> PartialOrd for Due<K> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<K> Ord for Due<K> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.id).cmp(&(other.at, other.id))
    }
}

struct Entry {
    bucket: TokenBucket,
    id: u64,
}

/// One shard: the buckets and their expiry queue, soonest first. The queue
/// holds one live place per entry (plus stale ones of dropped entries, which
/// leave it when due or when it is rebuilt), so it is bounded with the map.
struct Shard<K> {
    map: HashMap<K, Entry>,
    queue: BinaryHeap<Reverse<Due<K>>>,
    next_id: u64,
}

impl<K: Hash + Eq + Clone> Shard<K> {
    fn new() -> Self {
        Self { map: HashMap::new(), queue: BinaryHeap::new(), next_id: 0 }
    }

    /// Drops up to `max` entries whose bucket has refilled by `now`, in the
    /// order they refill; an entry used since it was queued goes back in the
    /// queue at its new refill time. Returns how many entries were dropped.
    fn expire(&mut self, rate: Rate, now: Instant, max: usize) -> usize {
        let mut dropped = 0;
        for _ in 0..max {
            let Some(Reverse(due)) = self.queue.peek() else { break };
            if due.at > now {
                break;
            }
            let Some(Reverse(due)) = self.queue.pop() else { break };
            let Some(entry) = self.map.get(&due.key).filter(|e| e.id == due.id) else { continue };
            match entry.bucket.full_at(rate) {
                // Used since it was queued: looked at again when it refills.
                Some(at) if at > now && !entry.bucket.is_full(rate, now) => self.queue.push(Reverse(Due { at, ..due })),
                // Never refills (a zero rate): left to the idle sweep.
                None if !entry.bucket.is_full(rate, now) => {}
                _ => {
                    self.map.remove(&due.key);
                    dropped += 1;
                }
            }
        }
        dropped
    }

    fn insert(&mut self, key: K, bucket: TokenBucket, rate: Rate) {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        if let Some(at) = bucket.full_at(rate) {
            self.queue.push(Reverse(Due { at, id, key: key.clone() }));
        }
        self.map.insert(key, Entry { bucket, id });
    }

    fn remove(&mut self, key: &K) {
        self.map.remove(key);
        self.compact();
    }

    fn retain(&mut self, mut keep: impl FnMut(&TokenBucket) -> bool) {
        self.map.retain(|_, e| keep(&e.bucket));
        self.compact();
    }

    /// Rebuilds the queue when stale places outnumber the entries, so the
    /// queue stays within twice the map (plus a little).
    fn compact(&mut self) {
        if self.queue.len() > 2 * self.map.len() + 64 {
            let map = &self.map;
            self.queue.retain(|Reverse(d)| map.get(&d.key).is_some_and(|e| e.id == d.id));
        }
    }
}

/// Buckets keyed by `K`, bounded to `capacity` keys. An entry goes as soon
/// as its bucket has refilled (it then carries nothing a new entry would
/// not): each shard keeps its entries in a queue ordered by refill time, and
/// every check and every [`KeyedLimiter::expire`] drops the due ones, so the
/// table holds about rate × refill time entries, not one per key ever seen.
/// Entries idle too long are also dropped by [`KeyedLimiter::sweep`]. When
/// the table is full and nothing can be dropped, new keys are refused
/// ([`Refusal::Full`]), because evicting a live entry would hand its owner a
/// fresh burst.
pub struct KeyedLimiter<K> {
    shards: Box<[Mutex<Shard<K>>]>,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    pub fn new() -> Self {
        Self { shards: (0..SHARDS).map(|_| Mutex::new(Shard::new())).collect() }
    }

    fn shard(&self, key: &K) -> &Mutex<Shard<K>> {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }

    pub fn check(&self, key: &K, rate: Rate, capacity: usize, now: Instant) -> Result<(), Refusal> {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        let mut shard = self.shard(key).lock();
        shard.expire(rate, now, EXPIRE_PER_CHECK);
        if let Some(entry) = shard.map.get_mut(key) {
            return entry.bucket.take(rate, now).map_err(Refusal::Rate);
        }
        if shard.map.len() >= per_shard {
            shard.expire(rate, now, usize::MAX);
            if shard.map.len() >= per_shard {
                // The rate may have been reloaded since entries were queued.
                shard.retain(|b| !b.is_full(rate, now));
            }
            if shard.map.len() >= per_shard {
                return Err(Refusal::Full);
            }
        }
        let mut bucket = TokenBucket::new(rate, now);
        let result = bucket.take(rate, now).map_err(Refusal::Rate);
        shard.insert(key.clone(), bucket, rate);
        result
    }

    /// Drops the entries whose bucket has refilled at `rate` by `now` and
    /// that are due in the expiry queue (work in proportion to what goes);
    /// returns how many went.
    pub fn expire(&self, rate: Rate, now: Instant) -> usize {
        self.shards.iter().map(|s| s.lock().expire(rate, now, usize::MAX)).sum()
    }

    /// Drops entries idle for at least `idle`; returns how many remain.
    pub fn sweep(&self, idle: Duration, now: Instant) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let mut shard = s.lock();
                shard.retain(|b| now.saturating_duration_since(b.last) < idle);
                shard.map.len()
            })
            .sum()
    }

    /// Drops every entry whose bucket has refilled at `rate`, queued or not
    /// (a full pass, for after a rate change); returns how many remain.
    pub fn drop_full(&self, rate: Rate, now: Instant) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let mut shard = s.lock();
                shard.retain(|b| !b.is_full(rate, now));
                shard.map.len()
            })
            .sum()
    }

    /// Drops `key`'s entry if its bucket has refilled; true if it went.
    pub fn forget_if_full(&self, key: &K, rate: Rate, now: Instant) -> bool {
        let mut shard = self.shard(key).lock();
        let full = shard.map.get(key).is_some_and(|e| e.bucket.is_full(rate, now));
        if full {
            shard.remove(key);
        }
        full
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Places in the expiry queues, live and stale (for tests of the bound).
    pub fn queued(&self) -> usize {
        self.shards.iter().map(|s| s.lock().queue.len()).sum()
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
    async fn refilled_entries_leave_through_the_queue_in_proportion_to_the_rate() {
        // One token a second, burst 1: an entry carries state for one second.
        let rate = Rate { per_second: 1.0, burst: 1 };
        let l = KeyedLimiter::<u32>::new();
        let mut most = 0;
        // A new key every 10 ms for 20 s, and no pass: only the checks drop entries.
        for k in 0..2_000 {
            l.check(&k, rate, 1_000_000, Instant::now()).unwrap();
            most = most.max(l.len());
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        // About rate × refill time (100) plus what the amortized drop lags, not 2,000.
        assert!(most <= 200, "{most} entries at most");
        assert_eq!(l.queued(), l.len(), "one place in the queue per entry");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(l.expire(rate, Instant::now()) > 0);
        assert!(l.is_empty());
        assert_eq!(l.queued(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_drained_key_stays_limited_until_it_refills() {
        let rate = Rate { per_second: 1.0, burst: 3 };
        let l = KeyedLimiter::<&str>::new();
        for _ in 0..3 {
            l.check(&"spender", rate, 100, Instant::now()).unwrap();
        }
        // Due in the queue at 3 s: at 0.5 s nothing drops it, and it refuses
        // (a user who reconnects now is still limited).
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(l.expire(rate, Instant::now()), 0);
        assert!(!l.forget_if_full(&"spender", rate, Instant::now()));
        assert!(matches!(l.check(&"spender", rate, 100, Instant::now()), Err(Refusal::Rate(_))));
        // Used at 1.5 s (1.5 tokens, one taken): full again at 4 s, so its
        // first place (3 s) finds it not refilled and queues it again.
        tokio::time::advance(Duration::from_millis(1_000)).await;
        l.check(&"spender", rate, 100, Instant::now()).unwrap();
        tokio::time::advance(Duration::from_millis(1_600)).await;
        assert_eq!(l.expire(rate, Instant::now()), 0);
        assert_eq!((l.len(), l.queued()), (1, 1));
        tokio::time::advance(Duration::from_millis(800)).await;
        assert_eq!(l.expire(rate, Instant::now()), 0);
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(l.expire(rate, Instant::now()), 1);
        assert!(l.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_dropped_and_added_again_is_not_dropped_by_its_old_place() {
        let rate = Rate { per_second: 1.0, burst: 2 };
        let l = KeyedLimiter::<&str>::new();
        l.check(&"k", rate, 100, Instant::now()).unwrap();
        // The idle sweep drops it, leaving its place (due at 1 s) behind.
        assert_eq!(l.sweep(Duration::ZERO, Instant::now()), 0);
        l.check(&"k", rate, 100, Instant::now()).unwrap();
        l.check(&"k", rate, 100, Instant::now()).unwrap();
        tokio::time::advance(Duration::from_millis(1_100)).await;
        assert_eq!(l.expire(rate, Instant::now()), 0, "the new entry is not full until 2 s");
        assert!(matches!(l.check(&"k", rate, 100, Instant::now()), Ok(())));
        assert!(matches!(l.check(&"k", rate, 100, Instant::now()), Err(Refusal::Rate(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_table_takes_new_keys_once_entries_are_due() {
        let rate = Rate { per_second: 1.0, burst: 1 };
        let l = KeyedLimiter::<u32>::new();
        let cap = SHARDS * 4;
        let mut refused = 0;
        for round in 0..10u32 {
            for k in 0..(cap as u32 * 2) {
                match l.check(&(round * 1_000 + k), rate, cap, Instant::now()) {
                    Ok(()) => {}
                    Err(Refusal::Full) => refused += 1,
                    Err(Refusal::Rate(_)) => panic!("first use of a key is never over rate"),
                }
            }
            assert!(l.len() <= cap);
            // Refilled: the queue drops them, and the full table has room again.
            tokio::time::advance(Duration::from_millis(1_001)).await;
            assert!(l.check(&u32::MAX, rate, cap, Instant::now()).is_ok());
            l.expire(rate, Instant::now());
            assert_eq!((l.len(), l.queued()), (1, 1));
            tokio::time::advance(Duration::from_millis(1_001)).await;
        }
        assert!(refused > 0, "a full table refuses new keys");
    }

    #[tokio::test(start_paused = true)]
    async fn stale_places_in_the_queue_stay_bounded() {
        let rate = Rate { per_second: 1.0, burst: 1 };
        let l = KeyedLimiter::<u32>::new();
        // Entries dropped before they are due (by the idle sweep) leave their
        // places behind; round after round, with no time passing, the queue
        // is rebuilt rather than growing by 1,600 a round.
        for round in 0..10u32 {
            for k in 0..1_600 {
                l.check(&(round * 10_000 + k), rate, 1_000_000, Instant::now()).unwrap();
            }
            assert_eq!(l.sweep(Duration::ZERO, Instant::now()), 0);
            assert!(l.queued() <= 64 * SHARDS, "{} places for no entry", l.queued());
        }
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
