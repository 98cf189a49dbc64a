//! Coalescing of streamed text and reasoning: at most one `agent_text_delta`
//! (and one `agent_thinking`) per run per interval, so a long answer does not
//! flood the channel's history.
//!
//! Emissions sit on a grid: the first piece after a quiet spell goes out at
//! once; a piece arriving sooner than one interval after the previous
//! emission waits until that interval is over, together with whatever else
//! arrives meanwhile. The grid advances by the scheduled time, not the
//! actual one, so the wait of a piece never includes the publishing delay of
//! the previous one.

use std::time::Duration;

use tokio::time::Instant;

/// One stream of pieces (the answer, or the reasoning).
#[derive(Debug)]
pub struct Coalescer {
    interval: Duration,
    buffer: String,
    /// When the buffer goes out; `None` while it is empty.
    due: Option<Instant>,
    /// The earliest time the next emission may go out.
    slot: Option<Instant>,
}

impl Coalescer {
    pub fn new(interval: Duration) -> Self {
        Coalescer { interval, buffer: String::new(), due: None, slot: None }
    }

    /// Adds a piece; returns what to emit now, if anything.
    pub fn push(&mut self, piece: &str, now: Instant) -> Option<String> {
        if piece.is_empty() {
            return None;
        }
        self.buffer.push_str(piece);
        if self.due.is_none() {
            let due = self.slot.map_or(now, |slot| slot.max(now));
            self.due = Some(due);
        }
        self.take_due(now)
    }

    /// When the buffered pieces must go out.
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// The buffer, if it is due at `now`.
    pub fn take_due(&mut self, now: Instant) -> Option<String> {
        let due = self.due?;
        if due > now {
            return None;
        }
        self.due = None;
        self.slot = Some(due + self.interval);
        Some(std::mem::take(&mut self.buffer))
    }

    /// Whatever is buffered, due or not (before another event, or the end).
    pub fn flush(&mut self) -> Option<String> {
        let due = self.due.take()?;
        self.slot = Some(due.max(self.slot.unwrap_or(due)) + self.interval);
        Some(std::mem::take(&mut self.buffer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test(start_paused = true)]
    async fn at_most_one_emission_per_interval_on_a_fixed_grid() {
        let mut c = Coalescer::new(100 * MS);
        let t0 = Instant::now();
        assert_eq!(c.push("a", t0).as_deref(), Some("a"), "first piece goes out at once");
        assert_eq!(c.push("b", t0 + 50 * MS), None);
        assert_eq!(c.due(), Some(t0 + 100 * MS));
        assert_eq!(c.push("c", t0 + 80 * MS), None);
        assert_eq!(c.take_due(t0 + 99 * MS), None);
        assert_eq!(c.take_due(t0 + 103 * MS).as_deref(), Some("bc"), "late publishing does not move the grid");
        assert_eq!(c.push("d", t0 + 150 * MS), None);
        assert_eq!(c.due(), Some(t0 + 200 * MS));
        assert_eq!(c.take_due(t0 + 200 * MS).as_deref(), Some("d"));
        assert_eq!(c.push("e", t0 + 1000 * MS).as_deref(), Some("e"), "after a quiet spell, at once");
        assert_eq!(c.push("f", t0 + 1001 * MS), None);
        assert_eq!(c.flush().as_deref(), Some("f"));
        assert_eq!(c.flush(), None);
        assert_eq!(c.push("g", t0 + 1050 * MS), None, "a flush counts as an emission");
        assert_eq!(c.push("", t0 + 2000 * MS), None);
    }
}
