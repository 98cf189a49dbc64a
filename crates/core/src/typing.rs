//! Typing indicators: who is typing where, until when.

use std::collections::HashMap;
use std::time::Duration;

use chorus_protocol::ChannelName;
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::ids::UserId;

/// What a `typing` start did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypingChange {
    /// The user was not typing; announce it.
    Started,
    /// Still typing and the indicator was past half its life; announce the new expiry.
    Renewed,
    /// Still typing; nothing to announce.
    Unchanged,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many typing indicators on this node")]
pub struct TypingFull;

struct Entry {
    expires: Instant,
    announced: Instant,
}

/// Bounded map of (channel, user) to expiry; the hub announces changes.
#[derive(Default)]
pub struct TypingTracker {
    entries: Mutex<HashMap<(ChannelName, UserId), Entry>>,
}

impl TypingTracker {
    pub fn start(&self, channel: &ChannelName, user: &UserId, ttl: Duration, capacity: usize, now: Instant) -> Result<TypingChange, TypingFull> {
        let mut map = self.entries.lock();
        let key = (channel.clone(), user.clone());
        if let Some(e) = map.get_mut(&key) {
            e.expires = now + ttl;
            if now.saturating_duration_since(e.announced) >= ttl / 2 {
                e.announced = now;
                return Ok(TypingChange::Renewed);
            }
            return Ok(TypingChange::Unchanged);
        }
        if map.len() >= capacity {
            return Err(TypingFull);
        }
        map.insert(key, Entry { expires: now + ttl, announced: now });
        Ok(TypingChange::Started)
    }

    /// True if the user was typing there.
    pub fn stop(&self, channel: &ChannelName, user: &UserId) -> bool {
        self.entries.lock().remove(&(channel.clone(), user.clone())).is_some()
    }

    /// How long the user's indicator in the channel still runs, if it does.
    pub fn remaining(&self, channel: &ChannelName, user: &UserId, now: Instant) -> Option<Duration> {
        let map = self.entries.lock();
        let e = map.get(&(channel.clone(), user.clone()))?;
        (e.expires > now).then(|| e.expires - now)
    }

    /// Removes and returns every indicator that has expired.
    pub fn expire(&self, now: Instant) -> Vec<(ChannelName, UserId)> {
        let mut out = Vec::new();
        self.entries.lock().retain(|k, e| {
            if e.expires <= now {
                out.push(k.clone());
                false
            } else {
                true
            }
        });
        out
    }

    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn start_renew_expire() {
        let t = TypingTracker::default();
        let c = ChannelName::parse("room:a").unwrap();
        let u = UserId::new("u");
        let ttl = Duration::from_secs(5);
        assert_eq!(t.start(&c, &u, ttl, 10, Instant::now()), Ok(TypingChange::Started));
        assert_eq!(t.start(&c, &u, ttl, 10, Instant::now()), Ok(TypingChange::Unchanged));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(t.start(&c, &u, ttl, 10, Instant::now()), Ok(TypingChange::Renewed));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(t.expire(Instant::now()).is_empty(), "renewal moved the expiry");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(t.expire(Instant::now()), vec![(c.clone(), u.clone())]);
        assert!(t.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn bounded() {
        let t = TypingTracker::default();
        let c = ChannelName::parse("room:a").unwrap();
        t.start(&c, &UserId::new("a"), Duration::from_secs(5), 1, Instant::now()).unwrap();
        assert_eq!(t.start(&c, &UserId::new("b"), Duration::from_secs(5), 1, Instant::now()), Err(TypingFull));
    }
}
