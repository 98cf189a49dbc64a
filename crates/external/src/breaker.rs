//! A circuit breaker per agent, so a dead webhook fails runs at once instead
//! of making every run wait out its timeouts.
//!
//! Closed: deliveries go through; consecutive failed deliveries are counted
//! and a success forgets them. After `failures` in a row the breaker opens
//! for `open_for`: deliveries are refused without a request. Then it is
//! half-open: one delivery goes through as a probe (the others are still
//! refused); its success closes the breaker, its failure opens it again.
//!
//! State is kept only for agents with failures, in a table of at most
//! `max_agents` entries; when it is full the entry changed least recently
//! is dropped (that agent starts again from closed). Time comes from the
//! injected [`Clock`], so tests move it instead of waiting.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chorus_clock::Clock;
use parking_lot::Mutex;

/// Breaker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failed deliveries that open the breaker.
    pub failures: u32,
    /// How long it stays open before a probe.
    pub open_for: Duration,
    /// Agents tracked at most.
    pub max_agents: usize,
}

/// What the breaker of one agent says now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

/// Times are the clock's Unix milliseconds.
#[derive(Debug)]
struct Entry {
    failures: u32,
    open_until: Option<i64>,
    probing: bool,
    touched: i64,
}

/// The breakers of every agent.
#[derive(Clone)]
pub struct Breakers {
    config: BreakerConfig,
    clock: Arc<dyn Clock>,
    table: Arc<Mutex<HashMap<String, Entry>>>,
}

impl std::fmt::Debug for Breakers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breakers").field("config", &self.config).field("tracked", &self.tracked()).finish()
    }
}

fn until(now: i64, later: i64) -> Duration {
    Duration::from_millis(u64::try_from(later - now).unwrap_or(0))
}

/// Refused: the breaker is open (or half-open with a probe under way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the agent's webhook failed repeatedly; deliveries resume in {retry_after:?}")]
pub struct BreakerOpen {
    pub retry_after: Duration,
}

/// Leave to deliver once. Report how it went with [`Admission::succeeded`]
/// or [`Admission::failed`]; dropping it unreported counts as a failure, so a
/// cancelled probe cannot leave the breaker half-open forever.
#[derive(Debug)]
pub struct Admission {
    breakers: Breakers,
    agent: String,
    probe: bool,
    reported: bool,
}

impl Breakers {
    pub fn new(config: BreakerConfig, clock: Arc<dyn Clock>) -> Self {
        Self { config, clock, table: Arc::new(Mutex::new(HashMap::new())) }
    }

    fn open_for_ms(&self) -> i64 {
        i64::try_from(self.config.open_for.as_millis()).unwrap_or(i64::MAX)
    }

    /// Leave to deliver to `agent`'s webhook, or how long the breaker stays open.
    pub fn admit(&self, agent: &str) -> Result<Admission, BreakerOpen> {
        let now = self.clock.now_ms();
        let mut table = self.table.lock();
        let probe = match table.get_mut(agent) {
            None => false,
            Some(e) => match e.open_until {
                None => false,
                Some(t) if t > now => {
                    return Err(BreakerOpen { retry_after: until(now, t) });
                }
                Some(_) if e.probing => {
                    return Err(BreakerOpen { retry_after: Duration::ZERO });
                }
                Some(_) => {
                    e.probing = true;
                    e.touched = now;
                    true
                }
            },
        };
        drop(table);
        Ok(Admission { breakers: self.clone(), agent: agent.to_owned(), probe, reported: false })
    }

    /// The state of `agent`'s breaker.
    pub fn state(&self, agent: &str) -> BreakerState {
        let now = self.clock.now_ms();
        match self.table.lock().get(agent) {
            None => BreakerState::Closed,
            Some(Entry { open_until: None, .. }) => BreakerState::Closed,
            Some(Entry { open_until: Some(until), .. }) if *until > now => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// Breakers open now (for health pages and metrics).
    pub fn open_count(&self) -> usize {
        let now = self.clock.now_ms();
        self.table.lock().values().filter(|e| e.open_until.is_some_and(|u| u > now)).count()
    }

    /// Agents tracked (for tests of the bound).
    pub fn tracked(&self) -> usize {
        self.table.lock().len()
    }

    fn succeeded(&self, agent: &str) {
        self.table.lock().remove(agent);
    }

    /// Returns true when this failure opened the breaker.
    fn failed(&self, agent: &str, probe: bool) -> bool {
        let now = self.clock.now_ms();
        let open_until = now.saturating_add(self.open_for_ms());
        let mut table = self.table.lock();
        if !table.contains_key(agent) && table.len() >= self.config.max_agents {
            let oldest = table.iter().min_by_key(|(_, e)| e.touched).map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                table.remove(&k);
            }
        }
        let e = table.entry(agent.to_owned()).or_insert(Entry {
            failures: 0,
            open_until: None,
            probing: false,
            touched: now,
        });
        e.touched = now;
        if probe {
            e.probing = false;
            e.open_until = Some(open_until);
            return true;
        }
        e.failures = e.failures.saturating_add(1);
        if e.failures >= self.config.failures && e.open_until.is_none_or(|u| u <= now) && !e.probing {
            e.open_until = Some(open_until);
            return true;
        }
        false
    }
}

impl Admission {
    /// Whether this delivery is the half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    pub fn succeeded(mut self) {
        self.reported = true;
        self.breakers.succeeded(&self.agent);
    }

    /// Returns true when this failure opened the breaker.
    pub fn failed(mut self) -> bool {
        self.reported = true;
        self.breakers.failed(&self.agent, self.probe)
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if !self.reported {
            self.breakers.failed(&self.agent, self.probe);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use chorus_clock::ManualClock;

    fn breakers() -> (Breakers, ManualClock) {
        let clock = ManualClock::starting_at(1_000_000);
        let b = Breakers::new(
            BreakerConfig { failures: 5, open_for: Duration::from_secs(30), max_agents: 3 },
            Arc::new(clock.clone()),
        );
        (b, clock)
    }

    #[test]
    fn five_failures_open_it_for_thirty_seconds_then_one_probe() {
        let (b, clock) = breakers();
        for i in 0..4 {
            assert!(!b.admit("a").unwrap().failed(), "failure {i} keeps it closed");
        }
        assert_eq!(b.state("a"), BreakerState::Closed);
        assert!(b.admit("a").unwrap().failed(), "the fifth opens it");
        assert_eq!(b.state("a"), BreakerState::Open);
        assert_eq!(b.admit("a").unwrap_err().retry_after, Duration::from_secs(30));
        assert_eq!(b.open_count(), 1);
        b.admit("other").expect("breakers are per agent").succeeded();

        clock.advance_ms(29000);
        assert_eq!(b.admit("a").unwrap_err().retry_after, Duration::from_secs(1));
        clock.advance_ms(1000);
        assert_eq!(b.state("a"), BreakerState::HalfOpen);
        let probe = b.admit("a").unwrap();
        assert!(probe.is_probe());
        assert_eq!(b.admit("a").unwrap_err().retry_after, Duration::ZERO, "one probe at a time");
        assert!(probe.failed(), "a failed probe opens it again");
        assert_eq!(b.state("a"), BreakerState::Open);

        clock.advance_ms(30000);
        let probe = b.admit("a").unwrap();
        probe.succeeded();
        assert_eq!(b.state("a"), BreakerState::Closed);
        assert_eq!(b.tracked(), 0, "a closed breaker keeps no state");
        for _ in 0..4 {
            b.admit("a").unwrap().failed();
        }
        assert_eq!(b.state("a"), BreakerState::Closed, "the count started again");
    }

    #[test]
    fn a_success_forgets_earlier_failures_and_a_dropped_probe_is_a_failure() {
        let (b, clock) = breakers();
        for _ in 0..4 {
            b.admit("a").unwrap().failed();
        }
        b.admit("a").unwrap().succeeded();
        b.admit("a").unwrap().failed();
        assert_eq!(b.state("a"), BreakerState::Closed);
        for _ in 0..4 {
            drop(b.admit("a").unwrap());
        }
        assert_eq!(b.state("a"), BreakerState::Open, "dropped admissions count as failures");
        clock.advance_ms(30000);
        drop(b.admit("a").unwrap());
        assert_eq!(b.state("a"), BreakerState::Open, "a probe whose delivery was abandoned opens it again");
    }

    #[test]
    fn the_table_is_bounded_by_dropping_the_stalest_entry() {
        let (b, clock) = breakers();
        for agent in ["a", "b", "c"] {
            b.admit(agent).unwrap().failed();
            clock.advance_ms(10);
        }
        assert_eq!(b.tracked(), 3);
        b.admit("a").unwrap().failed(); // "a" is now the freshest
        clock.advance_ms(10);
        b.admit("d").unwrap().failed();
        assert_eq!(b.tracked(), 3);
        // "b" was dropped: its count starts again.
        for _ in 0..4 {
            b.admit("b").unwrap().failed();
        }
        assert_eq!(b.state("b"), BreakerState::Closed);
    }
}
