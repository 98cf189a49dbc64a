//! The bounded queue between a connection's producers (fan-out, replies,
//! replays) and its writer.
//!
//! Live events use [`Outbound::try_push`]: if the queue is full (by count or
//! by bytes) the client is a slow consumer and the queue closes with 4005.
//! Replays use [`Outbound::push_paced`], which waits until the queue is at
//! most half full, so a replay never fills the room live events need and
//! never trips the slow-consumer limit by itself. Replies use
//! [`Outbound::push_reply`], which waits only for room in the whole queue:
//! a reply never waits behind a replay (the reader that sends it would stop
//! reading meanwhile, pongs included).
//!
//! The bounds are shared by every queue of a hub ([`QueueBounds`]), so a
//! reloaded limit applies to live connections at once.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use chorus_protocol::push::ReasonData;
use chorus_protocol::{ChannelName, CloseCode, ControlPush, encode_control, timestamp};
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::publication::{Position, Publication};

/// One item for the writer.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// A channel event.
    Event(Arc<Publication>),
    /// A reply to a command (WebSocket only).
    Reply(Bytes),
    /// A push outside any channel stream (e.g. `connected`).
    Control { name: &'static str, frame: Bytes },
    /// `recovery_failed`: the channel continues from `position`.
    RecoveryFailed { channel: ChannelName, position: Position, frame: Bytes },
    /// `unsubscribed`: the server ended a subscription.
    Unsubscribed { channel: ChannelName, frame: Bytes },
    /// Bookkeeping for transports that name positions (SSE event ids): from
    /// here on the channel is at `position`, or no longer subscribed
    /// (`None`). Writes nothing.
    Track { channel: ChannelName, position: Option<Position> },
}

static NOTHING: Bytes = Bytes::new();

impl Outgoing {
    /// The encoded frame.
    pub fn frame(&self) -> &Bytes {
        match self {
            Outgoing::Event(p) => p.frame(),
            Outgoing::Reply(b)
            | Outgoing::Control { frame: b, .. }
            | Outgoing::RecoveryFailed { frame: b, .. }
            | Outgoing::Unsubscribed { frame: b, .. } => b,
            Outgoing::Track { .. } => &NOTHING,
        }
    }

    fn size(&self) -> usize {
        self.frame().len()
    }

    /// The `unsubscribed` push: the server ended the subscription to `channel`.
    pub fn unsubscribed(channel: ChannelName, reason: String, now_ms: i64) -> Self {
        let push = ControlPush::Unsubscribed { channel: channel.to_string(), timestamp: timestamp::format_ms(now_ms), data: ReasonData { reason } };
        Outgoing::Unsubscribed { channel, frame: encode_control(&push) }
    }
}

/// Why a push failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The queue is full; the queue has been closed with [`CloseCode::SlowConsumer`].
    Full,
    /// The queue was already closed.
    Closed(CloseCode),
}

/// How much of the queue a waiting push may fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Room {
    /// Replays: half, leaving the rest to live events and replies.
    Half,
    /// Replies: all of it.
    Whole,
}

/// Queue bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    pub max_items: usize,
    pub max_bytes: usize,
}

/// The current bounds, shared by every queue of a hub and updated when the
/// limits are reloaded. A queue over a lowered bound closes as a slow
/// consumer at its next live event.
#[derive(Debug)]
pub struct QueueBounds {
    items: AtomicUsize,
    bytes: AtomicUsize,
}

impl QueueBounds {
    pub fn new(limits: QueueLimits) -> Arc<Self> {
        let b = Arc::new(Self { items: AtomicUsize::new(0), bytes: AtomicUsize::new(0) });
        b.set(limits);
        b
    }

    /// At least 2 items and 1 KiB, so paced pushes (half the queue) always fit one.
    pub fn set(&self, limits: QueueLimits) {
        self.items.store(limits.max_items.max(2), Ordering::Relaxed);
        self.bytes.store(limits.max_bytes.max(1024), Ordering::Relaxed);
    }

    pub fn get(&self) -> QueueLimits {
        QueueLimits { max_items: self.items.load(Ordering::Relaxed), max_bytes: self.bytes.load(Ordering::Relaxed) }
    }
}

struct State {
    items: VecDeque<Outgoing>,
    bytes: usize,
    closed: Option<CloseCode>,
}

/// A bounded multi-producer, single-consumer queue with a close reason.
pub struct Outbound {
    state: Mutex<State>,
    bounds: Arc<QueueBounds>,
    /// Wakes the writer.
    readable: Notify,
    /// Wakes paced producers.
    writable: Notify,
    /// Wakes writers blocked on the socket when the queue closes.
    closing: Notify,
}

/// What the writer gets from [`Outbound::next_batch`].
#[derive(Debug)]
pub enum Batch {
    Items,
    /// The queue is closed with this code. The items left were moved into the
    /// batch first so they go out before the close frame (e.g. the error reply
    /// that explains it), except for a slow consumer, whose backlog is the
    /// problem and is dropped.
    Closed(CloseCode),
}

impl Outbound {
    pub fn new(bounds: Arc<QueueBounds>) -> Self {
        Self {
            state: Mutex::new(State { items: VecDeque::new(), bytes: 0, closed: None }),
            bounds,
            readable: Notify::new(),
            writable: Notify::new(),
            closing: Notify::new(),
        }
    }

    /// Live push: never waits; a full queue closes it as a slow consumer.
    pub fn try_push(&self, item: Outgoing) -> Result<(), PushError> {
        let size = item.size();
        let limits = self.bounds.get();
        {
            let mut s = self.state.lock();
            if let Some(code) = s.closed {
                return Err(PushError::Closed(code));
            }
            if s.items.len() >= limits.max_items || s.bytes + size > limits.max_bytes {
                s.closed = Some(CloseCode::SlowConsumer);
                s.items.clear();
                s.bytes = 0;
                drop(s);
                self.wake_all();
                return Err(PushError::Full);
            }
            s.items.push_back(item);
            s.bytes += size;
        }
        self.readable.notify_one();
        Ok(())
    }

    /// Paced push: waits until the queue is at most half full.
    pub async fn push_paced(&self, item: Outgoing) -> Result<(), CloseCode> {
        self.push_waiting(item, Room::Half, || true).await.map(|_| ())
    }

    /// A reply (or other item a command waits on): waits only until the
    /// whole queue has room, so it overtakes a paced replay. A client that
    /// reads nothing fills the queue with live events and is closed as a
    /// slow consumer, which ends the wait too.
    pub async fn push_reply(&self, item: Outgoing) -> Result<(), CloseCode> {
        self.push_waiting(item, Room::Whole, || true).await.map(|_| ())
    }

    /// Paced push of an item that is only wanted while `wanted()` holds
    /// (e.g. its subscription is still active). The check runs under the
    /// queue's lock at the moment of the push, so anything queued after the
    /// condition turned false (an `unsubscribe` reply, say) is never followed
    /// by this item. `Ok(false)`: dropped, not wanted any more.
    pub async fn push_paced_while(&self, item: Outgoing, wanted: impl Fn() -> bool) -> Result<bool, CloseCode> {
        self.push_waiting(item, Room::Half, wanted).await
    }

    async fn push_waiting(&self, item: Outgoing, room: Room, wanted: impl Fn() -> bool) -> Result<bool, CloseCode> {
        let size = item.size();
        loop {
            let wait = self.writable.notified();
            {
                let mut s = self.state.lock();
                if let Some(code) = s.closed {
                    return Err(code);
                }
                if !wanted() {
                    return Ok(false);
                }
                let limits = self.bounds.get();
                let (max_items, max_bytes) = match room {
                    Room::Half => (limits.max_items / 2, limits.max_bytes / 2),
                    Room::Whole => (limits.max_items, limits.max_bytes),
                };
                // An item bigger than the byte budget still goes into an empty queue.
                if s.items.len() < max_items && (s.bytes + size <= max_bytes || s.items.is_empty()) {
                    s.items.push_back(item);
                    s.bytes += size;
                    drop(s);
                    self.readable.notify_one();
                    return Ok(true);
                }
            }
            wait.await;
        }
    }

    /// Moves up to `max` items into `batch`, waiting while the queue is empty.
    pub async fn next_batch(&self, batch: &mut Vec<Outgoing>, max: usize) -> Batch {
        loop {
            let wait = self.readable.notified();
            {
                let mut s = self.state.lock();
                if let Some(code) = s.closed {
                    if code != CloseCode::SlowConsumer {
                        batch.extend(s.items.drain(..));
                    }
                    s.items.clear();
                    s.bytes = 0;
                    return Batch::Closed(code);
                }
                if !s.items.is_empty() {
                    let n = s.items.len().min(max);
                    let mut taken = 0;
                    for item in s.items.drain(..n) {
                        taken += item.size();
                        batch.push(item);
                    }
                    s.bytes -= taken;
                    let max_items = self.bounds.get().max_items;
                    if s.items.capacity() > 4 * max_items && s.items.is_empty() {
                        s.items.shrink_to(max_items);
                    }
                    drop(s);
                    self.writable.notify_waiters();
                    return Batch::Items;
                }
            }
            wait.await;
        }
    }

    /// Closes the queue. The first reason wins.
    pub fn close(&self, code: CloseCode) -> bool {
        let first = {
            let mut s = self.state.lock();
            if s.closed.is_some() {
                false
            } else {
                s.closed = Some(code);
                true
            }
        };
        self.wake_all();
        first
    }

    pub fn closed(&self) -> Option<CloseCode> {
        self.state.lock().closed
    }

    /// Resolves once the queue is closed, with the reason. Writers race a
    /// blocked socket write against this so a close is never stuck behind it.
    pub async fn wait_closed(&self) -> CloseCode {
        loop {
            let notified = self.closing.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(code) = self.closed() {
                return code;
            }
            notified.await;
        }
    }

    pub fn len(&self) -> usize {
        self.state.lock().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn wake_all(&self) {
        self.readable.notify_one();
        self.writable.notify_waiters();
        self.closing.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(n: usize) -> Outgoing {
        Outgoing::Reply(Bytes::from(vec![b'x'; n]))
    }

    #[tokio::test]
    async fn full_by_count_closes_as_slow_consumer() {
        let q = Outbound::new(QueueBounds::new(QueueLimits { max_items: 3, max_bytes: 1 << 20 }));
        for _ in 0..3 {
            q.try_push(reply(1)).unwrap();
        }
        assert_eq!(q.try_push(reply(1)), Err(PushError::Full));
        assert_eq!(q.closed(), Some(CloseCode::SlowConsumer));
        assert_eq!(q.try_push(reply(1)), Err(PushError::Closed(CloseCode::SlowConsumer)));
        let mut batch = Vec::new();
        assert!(matches!(q.next_batch(&mut batch, 10).await, Batch::Closed(CloseCode::SlowConsumer)));
        assert!(batch.is_empty(), "a slow consumer's backlog is dropped");
    }

    #[tokio::test]
    async fn full_by_bytes_closes_as_slow_consumer() {
        let q = Outbound::new(QueueBounds::new(QueueLimits { max_items: 50, max_bytes: 2048 }));
        q.try_push(reply(1500)).unwrap();
        assert_eq!(q.try_push(reply(600)), Err(PushError::Full));
    }

    #[tokio::test]
    async fn paced_push_waits_for_the_writer_and_never_closes() {
        let q = Arc::new(Outbound::new(QueueBounds::new(QueueLimits { max_items: 4, max_bytes: 1 << 20 })));
        let producer = {
            let q = q.clone();
            tokio::spawn(async move {
                for _ in 0..20 {
                    q.push_paced(reply(1)).await.unwrap();
                }
            })
        };
        let mut got = 0;
        while got < 20 {
            let mut batch = Vec::new();
            assert!(matches!(q.next_batch(&mut batch, 100).await, Batch::Items));
            assert!(batch.len() <= 2, "paced pushes keep the queue at most half full");
            got += batch.len();
        }
        producer.await.unwrap();
        assert_eq!(q.closed(), None);
        // Live pushes still have room while a replay is paced in.
        q.try_push(reply(1)).unwrap();
    }

    #[tokio::test]
    async fn reloaded_bounds_apply_to_a_live_queue() {
        let bounds = QueueBounds::new(QueueLimits { max_items: 10, max_bytes: 1 << 20 });
        let q = Outbound::new(bounds.clone());
        for _ in 0..4 {
            q.try_push(reply(1)).unwrap();
        }
        bounds.set(QueueLimits { max_items: 4, max_bytes: 1 << 20 });
        assert_eq!(q.try_push(reply(1)), Err(PushError::Full), "the lowered bound holds at once");
    }

    #[tokio::test]
    async fn a_paced_push_no_longer_wanted_is_dropped() {
        let q = Arc::new(Outbound::new(QueueBounds::new(QueueLimits { max_items: 4, max_bytes: 1 << 20 })));
        let wanted = Arc::new(std::sync::atomic::AtomicBool::new(true));
        q.try_push(reply(1)).unwrap();
        q.try_push(reply(1)).unwrap();
        // Half full: the paced push waits for the writer.
        let paced = {
            let (q, wanted) = (q.clone(), wanted.clone());
            tokio::spawn(async move { q.push_paced_while(reply(7), || wanted.load(Ordering::SeqCst)).await })
        };
        tokio::task::yield_now().await;
        // The subscription ends (its end is marked in the queue), then the writer drains.
        wanted.store(false, Ordering::SeqCst);
        q.try_push(reply(2)).unwrap();
        let mut batch = Vec::new();
        assert!(matches!(q.next_batch(&mut batch, 10).await, Batch::Items));
        assert_eq!(paced.await.unwrap(), Ok(false));
        assert!(q.is_empty(), "nothing follows the end marker");
        assert_eq!(batch.iter().map(|i| i.frame().len()).collect::<Vec<_>>(), vec![1, 1, 2]);
    }

    #[tokio::test]
    async fn a_reply_overtakes_a_paced_replay() {
        let q = Arc::new(Outbound::new(QueueBounds::new(QueueLimits { max_items: 4, max_bytes: 1 << 20 })));
        q.try_push(reply(1)).unwrap();
        q.try_push(reply(1)).unwrap();
        let replay = {
            let q = q.clone();
            tokio::spawn(async move { q.push_paced(reply(9)).await })
        };
        tokio::task::yield_now().await;
        assert!(!replay.is_finished(), "the replay waits for room in the lower half");
        q.push_reply(reply(3)).await.unwrap();
        assert_eq!(q.len(), 3, "the reply went in at once");
        let mut batch = Vec::new();
        assert!(matches!(q.next_batch(&mut batch, 10).await, Batch::Items));
        replay.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn restart_close_flushes_what_is_queued() {
        let q = Outbound::new(QueueBounds::new(QueueLimits { max_items: 10, max_bytes: 1 << 20 }));
        q.try_push(reply(1)).unwrap();
        q.try_push(reply(1)).unwrap();
        assert!(q.close(CloseCode::ServiceRestart));
        assert!(!q.close(CloseCode::Stale), "first reason wins");
        let mut batch = Vec::new();
        assert!(matches!(q.next_batch(&mut batch, 10).await, Batch::Closed(CloseCode::ServiceRestart)));
        assert_eq!(batch.len(), 2);
    }

    #[tokio::test]
    async fn close_wakes_a_waiting_writer_and_paced_producer() {
        let q = Arc::new(Outbound::new(QueueBounds::new(QueueLimits { max_items: 2, max_bytes: 1 << 20 })));
        q.try_push(reply(1)).unwrap();
        let paced = {
            let q = q.clone();
            tokio::spawn(async move { q.push_paced(reply(1)).await })
        };
        let waiter = {
            let q = q.clone();
            tokio::spawn(async move { q.wait_closed().await })
        };
        tokio::task::yield_now().await;
        q.close(CloseCode::Stale);
        assert_eq!(paced.await.unwrap(), Err(CloseCode::Stale));
        assert_eq!(waiter.await.unwrap(), CloseCode::Stale);
    }
}
