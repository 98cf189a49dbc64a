//! One connection's subscription to one channel, and its place in the stream.
//!
//! A subscription starts *syncing*: live events are not sent but the newest
//! one seen is remembered, while the subscriber is brought up to date from
//! history (paced). When history has caught up with everything seen, it
//! flips to *live* under its lock, so no event falls into the seam. A live
//! subscription sends only the next offset; a duplicate is dropped and a gap
//! sends it back to syncing, so clients never see a silent gap.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chorus_protocol::ChannelName;
use parking_lot::Mutex;

use crate::ids::ConnId;
use crate::outbound::{Outbound, Outgoing, PushError};
use crate::publication::{Epoch, Position, Publication};

#[derive(Debug)]
enum SyncState {
    /// Sending live events; `last` is the offset of the last event queued.
    Live { epoch: Epoch, last: u64 },
    /// Catching up; `seen` is the newest live event that arrived meanwhile,
    /// `resume` the last position queued before a gap (if it was live once).
    Syncing { seen: Option<Position>, resume: Option<Position> },
}

/// What happened to one live event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Queued,
    /// Already sent (offset not newer than the last one).
    Duplicate,
    /// Held back while syncing.
    Deferred,
    /// An offset or epoch jump: the subscription went back to syncing and needs a catch-up.
    Gap,
    /// The connection's queue overflowed; it is now closing as a slow consumer.
    Overflow,
    /// The connection is already closing.
    Closed,
}

pub struct Subscription {
    pub channel: ChannelName,
    pub conn: ConnId,
    outbound: Arc<Outbound>,
    state: Mutex<SyncState>,
    active: AtomicBool,
}

impl Subscription {
    pub fn new(channel: ChannelName, conn: ConnId, outbound: Arc<Outbound>) -> Self {
        Self { channel, conn, outbound, state: Mutex::new(SyncState::Syncing { seen: None, resume: None }), active: AtomicBool::new(true) }
    }

    pub fn outbound(&self) -> &Arc<Outbound> {
        &self.outbound
    }

    /// Called by fan-out for every event of the channel, in stream order.
    pub fn deliver(&self, p: &Arc<Publication>) -> Delivery {
        let mut state = self.state.lock();
        match &mut *state {
            SyncState::Live { epoch, last } => {
                if p.epoch != *epoch || p.offset > *last + 1 {
                    let resume = Position { offset: *last, epoch: epoch.clone() };
                    *state = SyncState::Syncing { seen: Some(p.position()), resume: Some(resume) };
                    return Delivery::Gap;
                }
                if p.offset <= *last {
                    return Delivery::Duplicate;
                }
                *last = p.offset;
                // Pushing under the lock keeps this ordered with a concurrent flip.
                match self.outbound.try_push(Outgoing::Event(p.clone())) {
                    Ok(()) => Delivery::Queued,
                    Err(PushError::Full) => Delivery::Overflow,
                    Err(PushError::Closed(_)) => Delivery::Closed,
                }
            }
            SyncState::Syncing { seen, .. } => {
                let newer = match seen {
                    None => true,
                    Some(s) => s.epoch != p.epoch || p.offset > s.offset,
                };
                if newer {
                    *seen = Some(p.position());
                }
                Delivery::Deferred
            }
        }
    }

    /// Flips to live at `at` unless an event newer than `at` was seen while
    /// syncing; then returns false and the caller must catch up further.
    pub fn try_go_live(&self, at: &Position) -> bool {
        let mut state = self.state.lock();
        match &*state {
            SyncState::Live { .. } => true,
            SyncState::Syncing { seen, .. } => {
                let behind = seen.as_ref().is_some_and(|s| s.epoch != at.epoch || s.offset > at.offset);
                if behind {
                    return false;
                }
                *state = SyncState::Live { epoch: at.epoch.clone(), last: at.offset };
                true
            }
        }
    }

    pub fn is_live(&self) -> bool {
        matches!(*self.state.lock(), SyncState::Live { .. })
    }

    /// The last position queued to the client: now if live, or before the
    /// gap that sent it back to syncing.
    pub fn last_position(&self) -> Option<Position> {
        match &*self.state.lock() {
            SyncState::Live { epoch, last } => Some(Position { offset: *last, epoch: epoch.clone() }),
            SyncState::Syncing { resume, .. } => resume.clone(),
        }
    }

    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Marks the subscription as ended so a running catch-up stops.
    pub fn deactivate(&self) {
        self.active.store(false, Ordering::Release);
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").field("channel", &self.channel).field("conn", &self.conn).finish()
    }
}

#[cfg(test)]
mod tests {
    use chorus_protocol::{EventType, Payload};

    use super::*;
    use crate::outbound::{QueueBounds, QueueLimits};
    use crate::publication::Draft;

    fn publication(offset: u64, epoch: &str) -> Arc<Publication> {
        Arc::new(Publication::new(
            ChannelName::parse("room:a").unwrap(),
            Position { offset, epoch: epoch.into() },
            0,
            Draft::new(EventType::Publication, Payload::empty()),
        ))
    }

    fn sub() -> Subscription {
        Subscription::new(
            ChannelName::parse("room:a").unwrap(),
            ConnId::random(),
            Arc::new(Outbound::new(QueueBounds::new(QueueLimits { max_items: 50, max_bytes: 1 << 20 }))),
        )
    }

    #[test]
    fn syncing_defers_then_flip_refuses_when_behind() {
        let s = sub();
        assert_eq!(s.deliver(&publication(5, "e")), Delivery::Deferred);
        assert!(!s.try_go_live(&Position { offset: 4, epoch: "e".into() }));
        assert!(s.try_go_live(&Position { offset: 5, epoch: "e".into() }));
        assert_eq!(s.deliver(&publication(5, "e")), Delivery::Duplicate);
        assert_eq!(s.deliver(&publication(6, "e")), Delivery::Queued);
        assert_eq!(s.outbound().len(), 1);
    }

    #[test]
    fn gaps_and_epoch_changes_send_it_back_to_syncing() {
        let s = sub();
        assert!(s.try_go_live(&Position { offset: 1, epoch: "e".into() }));
        assert_eq!(s.deliver(&publication(3, "e")), Delivery::Gap);
        assert!(!s.is_live());
        assert_eq!(s.last_position(), Some(Position { offset: 1, epoch: "e".into() }));
        assert!(s.try_go_live(&Position { offset: 3, epoch: "e".into() }));
        assert_eq!(s.deliver(&publication(1, "f")), Delivery::Gap);
        assert!(!s.try_go_live(&Position { offset: 3, epoch: "e".into() }), "an event of another epoch was seen");
    }
}
