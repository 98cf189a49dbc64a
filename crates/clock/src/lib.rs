//! The time of day, behind one trait so that every component reads the same
//! clock and tests can move it by hand.
//!
//! The composition root creates one [`Clock`] (the [`SystemClock`] in
//! production) and hands the same `Arc<dyn Clock>` to the store, the hub, the
//! chat domain and token verification. Whatever compares a time with a
//! stored or signed timestamp (expiry, idleness, retention, idempotency
//! windows, token `exp`) reads it; tests start the server with a
//! [`ManualClock`] and move it instead of sleeping.
//!
//! Timers (pings, rate-limit refills, background intervals) stay on tokio's
//! monotonic time: they measure durations, not the time of day.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where the time of day comes from.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        // A clock before 1970 reads as 1970; one past the year 292 million as the end of time.
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A clock that moves only when told to. Clones share the same time, so a
/// test keeps one and hands clones to the components.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn starting_at(ms: i64) -> Self {
        Self(Arc::new(AtomicI64::new(ms)))
    }

    /// Starting at the wall clock's time now (so tokens and timestamps made
    /// outside the server still look current).
    pub fn starting_now() -> Self {
        Self::starting_at(SystemClock.now_ms())
    }

    pub fn advance(&self, by: Duration) {
        self.advance_ms(i64::try_from(by.as_millis()).unwrap_or(i64::MAX));
    }

    pub fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }

    pub fn set_ms(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_clones_share_it() {
        let clock = ManualClock::starting_at(1_000);
        let shared: Arc<dyn Clock> = Arc::new(clock.clone());
        assert_eq!(shared.now_ms(), 1_000);
        clock.advance(Duration::from_millis(250));
        clock.advance_ms(-50);
        assert_eq!(shared.now_ms(), 1_200);
        clock.set_ms(7);
        assert_eq!(shared.now_ms(), 7);
    }

    #[test]
    fn the_system_clock_reads_the_time_of_day() {
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
        let now = SystemClock.now_ms();
        let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
        assert!(before <= now && now <= after);
    }
}
