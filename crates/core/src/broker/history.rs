//! A stream's retained events, kept compactly for the in-memory engine.
//!
//! Consecutive events of one type whose `data` share a long prefix (a run's
//! text deltas: the same run header, then the piece) are held as a
//! [`Series`]: that prefix once, and per event only its time and the rest of
//! its data. Reading rebuilds each event byte for byte as it was published,
//! so recovery stays exact while a streaming answer costs tens of bytes per
//! piece instead of a whole frame.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use chorus_protocol::{ChannelName, EventType, Payload};

use crate::ids::NodeId;
use crate::publication::{Draft, Epoch, Position, Publication};

/// Shortest shared prefix worth a series: below it a whole event costs
/// little more than a piece.
const MIN_SHARED: usize = 48;

/// What one event kept whole costs: the publication, its frame (payload plus
/// a header) and the reference to it.
fn whole_cost(p: &Publication) -> usize {
    std::mem::size_of::<Publication>() + 2 * p.data.len() + 128 + p.channel.as_str().len()
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("a kept event could not be rebuilt")]
pub struct Corrupt;

/// Events in offset order, without holes.
#[derive(Default)]
pub struct History {
    entries: VecDeque<Entry>,
    /// Events held.
    len: usize,
    /// What the entries cost, by [`whole_cost`] and [`Series::cost`].
    bytes: usize,
}

enum Entry {
    Whole(Arc<Publication>),
    Series(Series),
}

impl Entry {
    fn first_offset(&self) -> u64 {
        match self {
            Entry::Whole(p) => p.offset,
            Entry::Series(s) => s.first_offset,
        }
    }

    fn len(&self) -> usize {
        match self {
            Entry::Whole(_) => 1,
            Entry::Series(s) => s.count,
        }
    }

    fn cost(&self) -> usize {
        match self {
            Entry::Whole(p) => whole_cost(p),
            Entry::Series(s) => s.cost(),
        }
    }
}

impl History {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn first_offset(&self) -> Option<u64> {
        self.entries.front().map(Entry::first_offset)
    }

    pub fn first_time_ms(&self) -> Option<i64> {
        self.entries.front().map(|e| match e {
            Entry::Whole(p) => p.time_ms,
            Entry::Series(s) => s.first_time_ms,
        })
    }

    /// Appends the stream's newest event (turning it and the one before
    /// into a series may cost less than before).
    pub fn push(&mut self, p: Arc<Publication>) {
        self.len += 1;
        let kept = match self.entries.back_mut() {
            Some(Entry::Series(s)) => match s.shared_with(&p) {
                Some(shared) => {
                    let old = s.cost();
                    s.shrink_prefix_to(shared);
                    s.append(&p);
                    self.bytes = self.bytes - old + s.cost();
                    true
                }
                None => false,
            },
            Some(last) => match Series::pair(last, &p) {
                Some(series) => {
                    self.bytes = self.bytes - last.cost() + series.cost();
                    *last = Entry::Series(series);
                    true
                }
                None => false,
            },
            None => false,
        };
        if !kept {
            self.bytes += whole_cost(&p);
            self.entries.push_back(Entry::Whole(p));
        }
    }

    /// Drops the oldest event. Returns the bytes freed.
    pub fn pop_oldest(&mut self) -> usize {
        let before = self.bytes;
        match self.entries.front_mut() {
            Some(Entry::Series(s)) if s.count > 1 => {
                let old = s.cost();
                s.drop_first();
                self.bytes = self.bytes - old + s.cost();
                self.len -= 1;
            }
            Some(_) => {
                if let Some(e) = self.entries.pop_front() {
                    self.bytes -= e.cost();
                    self.len -= 1;
                }
            }
            None => {}
        }
        before - self.bytes
    }

    /// Up to `limit` events from offset `from` on, oldest first.
    pub fn read(&self, from: u64, limit: usize) -> Result<Vec<Arc<Publication>>, Corrupt> {
        let mut out = Vec::new();
        for entry in &self.entries {
            if out.len() >= limit {
                break;
            }
            let end = entry.first_offset() + entry.len() as u64;
            if end <= from {
                continue;
            }
            match entry {
                Entry::Whole(p) => out.push(p.clone()),
                Entry::Series(s) => s.render(from, limit - out.len(), &mut out)?,
            }
        }
        Ok(out)
    }

    /// The latest `limit` events, oldest first.
    pub fn latest(&self, limit: usize) -> Result<Vec<Arc<Publication>>, Corrupt> {
        match self.first_offset() {
            Some(first) => self.read(first + self.len.saturating_sub(limit) as u64, limit),
            None => Ok(Vec::new()),
        }
    }
}

/// Consecutive events of one type and origin whose data start with `prefix`.
struct Series {
    channel: ChannelName,
    epoch: Epoch,
    event: EventType,
    origin: Option<NodeId>,
    prefix: Bytes,
    /// Times are kept relative to this one.
    base_time_ms: i64,
    /// Per event: its time after `base_time_ms` and the length of its rest
    /// (both LEB128), then the rest of its data.
    pieces: Vec<u8>,
    /// Where the first retained piece starts in `pieces`.
    start: usize,
    first_offset: u64,
    first_time_ms: i64,
    count: usize,
}

impl Series {
    /// A series of `first` and `next`, when they share enough.
    fn pair(first: &Entry, next: &Publication) -> Option<Series> {
        let Entry::Whole(first) = first else { return None };
        if first.event != next.event || first.origin != next.origin || first.epoch != next.epoch || next.offset != first.offset + 1 {
            return None;
        }
        let (a, b) = (first.data.as_bytes(), next.data.as_bytes());
        let shared = common_prefix(a, b);
        // End it after a quote when there is one: a prefix that ends inside a
        // value (digits of a number, letters of a word) would soon need shrinking.
        let shared = a[..shared].iter().rposition(|&c| c == b'"').map_or(shared, |q| q + 1);
        if shared < MIN_SHARED || next.time_ms < first.time_ms {
            return None;
        }
        let mut series = Series {
            channel: first.channel.clone(),
            epoch: first.epoch.clone(),
            event: first.event,
            origin: first.origin.clone(),
            prefix: Bytes::copy_from_slice(&a[..shared]),
            base_time_ms: first.time_ms,
            pieces: Vec::new(),
            start: 0,
            first_offset: first.offset,
            first_time_ms: first.time_ms,
            count: 0,
        };
        series.append(first);
        series.append(next);
        Some(series)
    }

    /// How much of the prefix `p` shares, when `p` continues this series
    /// (after shrinking the prefix to that if need be).
    fn shared_with(&self, p: &Publication) -> Option<usize> {
        let continues = p.event == self.event
            && p.origin == self.origin
            && p.epoch == self.epoch
            && p.offset == self.first_offset + self.count as u64
            && p.time_ms >= self.base_time_ms
            && u32::try_from(p.time_ms - self.base_time_ms).is_ok();
        let shared = common_prefix(&self.prefix, p.data.as_bytes());
        (continues && shared >= MIN_SHARED).then_some(shared)
    }

    /// Shortens the prefix to its first `shared` bytes, moving the cut bytes
    /// into every kept piece (rare: prefixes end after a quote).
    fn shrink_prefix_to(&mut self, shared: usize) {
        if shared == self.prefix.len() {
            return;
        }
        let moved = self.prefix.slice(shared..);
        let mut pieces = Vec::with_capacity(self.pieces.len() - self.start + self.count * moved.len());
        let mut at = self.start;
        for _ in 0..self.count {
            let (time, rest, next) = piece_at(&self.pieces, at);
            put_varint(&mut pieces, time);
            put_varint(&mut pieces, (moved.len() + rest.len()) as u64);
            pieces.extend_from_slice(&moved);
            pieces.extend_from_slice(rest);
            at = next;
        }
        self.prefix = self.prefix.slice(..shared);
        self.pieces = pieces;
        self.start = 0;
    }

    fn append(&mut self, p: &Publication) {
        let rest = &p.data.as_bytes()[self.prefix.len()..];
        // Grow by a quarter rather than double: a series lives as long as
        // its channel's history, and the slack would live with it.
        let need = rest.len() + 20;
        if self.pieces.capacity() - self.pieces.len() < need {
            self.pieces.reserve_exact(need.max(self.pieces.capacity() / 4));
        }
        put_varint(&mut self.pieces, (p.time_ms - self.base_time_ms) as u64);
        put_varint(&mut self.pieces, rest.len() as u64);
        self.pieces.extend_from_slice(rest);
        if self.count == 0 {
            self.first_time_ms = p.time_ms;
        }
        self.count += 1;
    }

    fn drop_first(&mut self) {
        let (_, _, next) = piece_at(&self.pieces, self.start);
        self.start = next;
        self.first_offset += 1;
        self.count -= 1;
        let (time, _, _) = piece_at(&self.pieces, self.start);
        self.first_time_ms = self.base_time_ms + time as i64;
        // Reclaim the dropped pieces once they are half the buffer.
        if self.start > self.pieces.len() / 2 {
            self.pieces.drain(..self.start);
            self.pieces.shrink_to_fit();
            self.start = 0;
        }
    }

    fn cost(&self) -> usize {
        std::mem::size_of::<Series>() + self.prefix.len() + self.pieces.capacity()
    }

    /// Rebuilds up to `limit` events from offset `from` on into `out`.
    fn render(&self, from: u64, limit: usize, out: &mut Vec<Arc<Publication>>) -> Result<(), Corrupt> {
        let mut at = self.start;
        let mut taken = 0;
        for i in 0..self.count as u64 {
            if taken == limit {
                break;
            }
            let (time, rest, next) = piece_at(&self.pieces, at);
            at = next;
            let offset = self.first_offset + i;
            if offset < from {
                continue;
            }
            taken += 1;
            let mut data = Vec::with_capacity(self.prefix.len() + rest.len());
            data.extend_from_slice(&self.prefix);
            data.extend_from_slice(rest);
            let payload = Payload::from_bytes(Bytes::from(data)).map_err(|_| Corrupt)?;
            let draft = Draft { event: self.event, data: payload, origin: self.origin.clone() };
            let position = Position { offset, epoch: self.epoch.clone() };
            out.push(Arc::new(Publication::new(self.channel.clone(), position, self.base_time_ms + time as i64, draft)));
        }
        Ok(())
    }
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b.iter()).take_while(|(x, y)| x == y).count()
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &[u8], at: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    while let Some(&b) = buf.get(*at) {
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            break;
        }
        shift += 7;
    }
    v
}

/// The piece at `at`: its time offset, its rest, and where the next starts.
fn piece_at(buf: &[u8], mut at: usize) -> (u64, &[u8], usize) {
    let time = get_varint(buf, &mut at);
    let len = usize::try_from(get_varint(buf, &mut at)).unwrap_or(usize::MAX);
    let end = at.saturating_add(len).min(buf.len());
    (time, &buf[at.min(end)..end], end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn publication(offset: u64, time_ms: i64, event: EventType, data: serde_json::Value) -> Arc<Publication> {
        let draft = Draft::new(event, Payload::from_value(&data).unwrap());
        let position = Position { offset, epoch: Arc::from("ep0ch000") };
        Arc::new(Publication::new(ChannelName::parse("room:c1").unwrap(), position, time_ms, draft))
    }

    /// A text delta laid out as the runtime writes it: the run header and
    /// message id, then the piece, then `seq`.
    fn delta(offset: u64, piece: &str) -> Arc<Publication> {
        let data = format!(
            r#"{{"run_id":"01JRUN0000000000000000000","thread_id":"room:c1","agent_id":"01JAGENT00000000000000000","message_id":"01JMSG000000000000000000","delta":{},"seq":{offset}}}"#,
            json!(piece)
        );
        let draft = Draft::new(EventType::AgentTextDelta, Payload::from_bytes(Bytes::from(data)).unwrap());
        let position = Position { offset, epoch: Arc::from("ep0ch000") };
        Arc::new(Publication::new(ChannelName::parse("room:c1").unwrap(), position, 1_000 + offset as i64 * 7, draft))
    }

    fn frames(events: &[Arc<Publication>]) -> Vec<Bytes> {
        events.iter().map(|p| p.frame().clone()).collect()
    }

    /// Every read from every offset rebuilds exactly the frames published.
    fn assert_exact(history: &History, published: &[Arc<Publication>]) {
        let first = published.len() - history.len();
        for from in 0..=published.len() {
            let from_offset = published.first().map_or(1, |p| p.offset) + from as u64;
            let want: Vec<Bytes> = frames(&published[from.max(first)..]);
            assert_eq!(frames(&history.read(from_offset, usize::MAX).unwrap()), want, "read from {from_offset}");
            let two: Vec<Bytes> = want.iter().take(2).cloned().collect();
            assert_eq!(frames(&history.read(from_offset, 2).unwrap()), two, "two from {from_offset}");
        }
        for limit in 0..=history.len() {
            assert_eq!(frames(&history.latest(limit).unwrap()), frames(&published[published.len() - limit..]), "latest {limit}");
        }
    }

    #[test]
    fn a_run_of_deltas_is_kept_compactly_and_read_back_exactly() {
        let mut history = History::default();
        let published: Vec<_> = (1..=200).map(|i| delta(i, &format!("piece {i} "))).collect();
        let whole: usize = published.iter().map(|p| whole_cost(p)).sum();
        for p in &published {
            history.push(p.clone());
        }
        assert_eq!(history.len(), 200);
        assert_eq!(history.entries.len(), 1, "one series");
        assert!(history.bytes() * 8 < whole, "{} bytes against {whole} kept whole", history.bytes());
        assert_exact(&history, &published);
    }

    #[test]
    fn trimming_a_series_keeps_the_rest_exact() {
        let mut history = History::default();
        let published: Vec<_> = (1..=120).map(|i| delta(i, &format!("w{i}"))).collect();
        for p in &published {
            history.push(p.clone());
        }
        for kept in (1..120).rev() {
            let before = history.bytes();
            let freed = history.pop_oldest();
            assert_eq!(before - history.bytes(), freed);
            assert_eq!(history.len(), kept);
            let first = &published[120 - kept];
            assert_eq!((history.first_offset(), history.first_time_ms()), (Some(first.offset), Some(first.time_ms)));
            if kept % 17 == 0 {
                assert_exact(&history, &published);
            }
        }
        assert!(history.pop_oldest() > 0);
        assert!(history.is_empty() && history.bytes() == 0 && history.first_offset().is_none());
        assert_eq!(history.pop_oldest(), 0);
    }

    #[test]
    fn other_events_break_a_series_and_everything_reads_back_in_order() {
        let mut history = History::default();
        let mut published = Vec::new();
        let mut offset = 0;
        let mut next = |make: &dyn Fn(u64) -> Arc<Publication>| {
            offset += 1;
            make(offset)
        };
        for round in 0..5 {
            for _ in 0..(round + 1) {
                published.push(next(&|o| delta(o, "x")));
            }
            published.push(next(&|o| publication(o, 5_000, EventType::MessageCreated, json!({"id": format!("m{o}"), "text": "hello"}))));
            // Same type, another run: shares too little to join.
            published.push(next(&|o| publication(o, 5_000, EventType::AgentTextDelta, json!({"run_id": format!("other{o}"), "delta": "y"}))));
        }
        for p in &published {
            history.push(p.clone());
        }
        assert_exact(&history, &published);
        let total: usize = published.iter().map(|p| whole_cost(p)).sum();
        assert!(history.bytes() <= total);
    }

    #[test]
    fn a_prefix_that_stops_fitting_is_shortened_and_reads_stay_exact() {
        let mut history = History::default();
        // The first two share a long word after the last quote they share;
        // the third shares less: the series keeps going with a shorter prefix.
        let pieces = ["alpha-beta-gamma-1", "alpha-beta-gamma-2", "alpha-delta", "beta", "", "gamma \"quoted\""];
        let published: Vec<_> = pieces.iter().enumerate().map(|(i, p)| delta(i as u64 + 1, p)).collect();
        for p in &published {
            history.push(p.clone());
        }
        assert_eq!(history.entries.len(), 1, "still one series");
        assert_exact(&history, &published);
    }

    #[test]
    fn varints_round_trip() {
        let mut buf = Vec::new();
        let values = [0u64, 1, 127, 128, 300, 16_383, 16_384, u64::from(u32::MAX), u64::MAX];
        for v in values {
            put_varint(&mut buf, v);
        }
        let mut at = 0;
        for v in values {
            assert_eq!(get_varint(&buf, &mut at), v);
        }
        assert_eq!(at, buf.len());
    }
}
