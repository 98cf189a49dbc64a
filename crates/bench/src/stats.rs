//! Accounting: latency histograms, per-stream sequence tracking (loss,
//! duplicates, order) and server offset continuity.

use hdrhistogram::Histogram;
use parking_lot::Mutex;

/// Latency histograms in µs, sharded so receivers on different threads
/// rarely meet on one lock; merged at the end.
pub struct Latency {
    shards: Vec<Mutex<Histogram<u64>>>,
}

/// Highest latency the histograms track (longer ones are clamped): 10 min.
const MAX_US: u64 = 600_000_000;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

impl Latency {
    pub fn new(shards: usize) -> Self {
        Self { shards: (0..shards.max(1)).map(|_| Mutex::new(new_histogram())).collect() }
    }

    pub fn record(&self, shard: usize, us: u64) {
        let mut h = self.shards[shard % self.shards.len()].lock();
        h.saturating_record(us.clamp(1, MAX_US));
    }

    pub fn merged(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for s in &self.shards {
            let _ = all.add(&*s.lock());
        }
        all
    }

    pub fn reset(&self) {
        for s in &self.shards {
            s.lock().reset();
        }
    }
}

/// Summary of a latency histogram, in µs.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: (h.mean() * 10.0).round() / 10.0,
        }
    }

    pub fn line(&self) -> String {
        format!(
            "p50 {} · p90 {} · p99 {} · p99.9 {} · max {} (n = {})",
            ms(self.p50_us),
            ms(self.p90_us),
            ms(self.p99_us),
            ms(self.p999_us),
            ms(self.max_us),
            self.count
        )
    }
}

/// µs as a readable millisecond figure.
pub fn ms(us: u64) -> String {
    if us >= 10_000 { format!("{:.1} ms", us as f64 / 1000.0) } else { format!("{:.2} ms", us as f64 / 1000.0) }
}

/// Which sequence numbers of one publisher stream a receiver saw.
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    bits: Vec<u64>,
    pub received: u64,
    pub unique: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    max: Option<u64>,
}

/// Sequence numbers above this are refused (a bug or a corrupted frame), so a
/// bad value cannot make the bitset huge.
const MAX_SEQ: u64 = 1 << 28;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    New,
    Duplicate,
    /// New, but after a higher sequence number had been seen.
    Late,
    Invalid,
}

impl SeqTracker {
    pub fn record(&mut self, s: u64) -> Seen {
        if s >= MAX_SEQ {
            return Seen::Invalid;
        }
        self.received += 1;
        let (w, b) = ((s / 64) as usize, s % 64);
        if w >= self.bits.len() {
            self.bits.resize(w + 1, 0);
        }
        if self.bits[w] & (1 << b) != 0 {
            self.duplicates += 1;
            return Seen::Duplicate;
        }
        self.bits[w] |= 1 << b;
        self.unique += 1;
        match self.max {
            Some(m) if s < m => {
                self.out_of_order += 1;
                Seen::Late
            }
            _ => {
                self.max = Some(s);
                Seen::New
            }
        }
    }

    pub fn contains(&self, s: u64) -> bool {
        let w = (s / 64) as usize;
        w < self.bits.len() && self.bits[w] & (1 << (s % 64)) != 0
    }

    /// How many of `0..count` (less `excluded`) were not seen.
    pub fn missing_below(&self, count: u64, excluded: &[u64]) -> u64 {
        let mut missing = 0;
        for s in 0..count {
            if !self.contains(s) && !excluded.contains(&s) {
                missing += 1;
            }
        }
        missing
    }

    /// Seen numbers that are not in `0..count` minus `excluded` (the publisher
    /// never had them acknowledged): counted, not treated as loss.
    pub fn unexpected(&self, count: u64, excluded: &[u64]) -> u64 {
        let beyond: u64 = self.bits.iter().enumerate().map(|(w, bits)| {
            let base = w as u64 * 64;
            (0..64).filter(|b| bits & (1 << b) != 0 && base + b >= count).count() as u64
        }).sum();
        beyond + excluded.iter().filter(|s| self.contains(**s)).count() as u64
    }
}

/// Offset continuity of one subscription: every event must be `last + 1` in
/// the same epoch.
#[derive(Debug, Default, Clone)]
pub struct OffsetTracker {
    pub last: Option<(String, u64)>,
    pub events: u64,
    pub gaps: u64,
    pub missing: u64,
    pub repeats: u64,
    pub epoch_changes: u64,
}

impl OffsetTracker {
    /// The position a subscription starts from (subscribe reply or `since`).
    pub fn start_at(&mut self, epoch: &str, offset: u64) {
        self.last = Some((epoch.to_owned(), offset));
    }

    pub fn observe(&mut self, epoch: &str, offset: u64) {
        self.events += 1;
        match &mut self.last {
            Some((e, last)) if e == epoch => {
                if offset == *last + 1 {
                } else if offset <= *last {
                    self.repeats += 1;
                } else {
                    self.gaps += 1;
                    self.missing += offset - *last - 1;
                }
                *last = offset.max(*last);
            }
            Some((e, last)) => {
                self.epoch_changes += 1;
                *e = epoch.to_owned();
                *last = offset;
            }
            None => self.last = Some((epoch.to_owned(), offset)),
        }
    }
}

/// Sums of several trackers, for the report.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct StreamTotals {
    pub expected: u64,
    pub received: u64,
    pub unique: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub unacked_received: u64,
    pub offset_gaps: u64,
    pub offset_missing: u64,
    pub offset_repeats: u64,
    pub epoch_changes: u64,
}

impl StreamTotals {
    pub fn add_offsets(&mut self, o: &OffsetTracker) {
        self.offset_gaps += o.gaps;
        self.offset_missing += o.missing;
        self.offset_repeats += o.repeats;
        self.epoch_changes += o.epoch_changes;
    }

    /// Adds one receiver that should have seen `0..count` less `excluded`.
    pub fn add_seqs(&mut self, t: &SeqTracker, count: u64, excluded: &[u64]) {
        let expected = count.saturating_sub(excluded.len() as u64);
        self.expected += expected;
        self.received += t.received;
        self.unique += t.unique;
        self.lost += t.missing_below(count, excluded);
        self.duplicated += t.duplicates;
        self.out_of_order += t.out_of_order;
        self.unacked_received += t.unexpected(count, excluded);
    }

    pub fn clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.out_of_order == 0 && self.offset_gaps == 0 && self.offset_repeats == 0
    }

    pub fn line(&self) -> String {
        format!(
            "expected {} · received {} (unique {}) · lost {} · duplicated {} · out-of-order {} · offset gaps {} ({} offsets) · offset repeats {}{}",
            self.expected,
            self.received,
            self.unique,
            self.lost,
            self.duplicated,
            self.out_of_order,
            self.offset_gaps,
            self.offset_missing,
            self.offset_repeats,
            if self.unacked_received > 0 { format!(" · delivered but not acknowledged {}", self.unacked_received) } else { String::new() }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_accounting() {
        let mut t = SeqTracker::default();
        for s in [0, 1, 2, 4, 3, 3, 6] {
            t.record(s);
        }
        assert_eq!((t.received, t.unique, t.duplicates, t.out_of_order), (7, 6, 1, 1));
        assert_eq!(t.missing_below(7, &[]), 1); // 5
        assert_eq!(t.missing_below(7, &[5]), 0);
        assert_eq!(t.unexpected(5, &[]), 1); // 6 was never acknowledged
        assert_eq!(t.record(MAX_SEQ), Seen::Invalid);
        let mut tot = StreamTotals::default();
        tot.add_seqs(&t, 7, &[]);
        assert_eq!((tot.expected, tot.lost, tot.duplicated, tot.out_of_order), (7, 1, 1, 1));
        assert!(!tot.clean());
    }

    #[test]
    fn offset_continuity() {
        let mut o = OffsetTracker::default();
        o.start_at("E", 10);
        for off in [11, 12, 14, 14, 15] {
            o.observe("E", off);
        }
        assert_eq!((o.gaps, o.missing, o.repeats), (1, 1, 1));
        o.observe("F", 1);
        assert_eq!(o.epoch_changes, 1);
        o.observe("F", 2);
        assert_eq!(o.gaps, 1);
    }

    #[test]
    fn latency_shards_merge() {
        let l = Latency::new(4);
        for i in 0..1000u64 {
            l.record(i as usize, i + 1);
        }
        let s = LatencySummary::of(&l.merged());
        assert_eq!(s.count, 1000);
        assert!((985..=995).contains(&s.p99_us), "{}", s.p99_us);
        assert_eq!(s.max_us, 1000);
    }
}
