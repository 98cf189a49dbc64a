//! A client watching one run from this node: the run's events, exactly as
//! they go on the channel, handed over as they are published (the AG-UI
//! endpoint streams them). The channel keeps them for everyone else; a
//! watch is only a tap.
//!
//! Bounded: each watch holds at most [`WATCH_BUFFER`] events. A watcher
//! that falls that far behind is dropped (its feed ends, `lagged` set) and
//! the run goes on; a watcher that goes away changes nothing for the run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chorus_llm::{Message as Turn, ToolDefinition};
use chorus_protocol::{EventType, Payload};
use parking_lot::Mutex;
use tokio::sync::mpsc;

/// Events one watch buffers before its watcher counts as too slow.
pub const WATCH_BUFFER: usize = 512;
/// Watches one run takes; more are refused (the channel still has the events).
pub const MAX_WATCHERS: usize = 4;

/// One event of the watched run, as published.
#[derive(Debug, Clone)]
pub struct WatchedEvent {
    pub event: EventType,
    pub data: Payload,
}

/// The receiving end of a watch.
#[derive(Debug)]
pub struct RunFeed {
    rx: mpsc::Receiver<WatchedEvent>,
    lagged: Arc<AtomicBool>,
    moved: Arc<AtomicBool>,
}

impl RunFeed {
    /// The next event; `None` once the run has ended (after its terminal
    /// event) or the watch was dropped (see [`RunFeed::lagged`]).
    pub async fn next(&mut self) -> Option<WatchedEvent> {
        self.rx.recv().await
    }

    /// The watch was dropped because its buffer was full.
    pub fn lagged(&self) -> bool {
        self.lagged.load(Ordering::Acquire)
    }

    /// The feed ended because another node produces the run (it claimed
    /// it first, or the agent was busy in the channel there): the run's
    /// events and ending are on the channel, not here.
    pub fn moved(&self) -> bool {
        self.moved.load(Ordering::Acquire)
    }
}

struct Watcher {
    tx: mpsc::Sender<WatchedEvent>,
    lagged: Arc<AtomicBool>,
}

/// The watches of one run.
#[derive(Default)]
pub(crate) struct Watchers(Mutex<WatcherList>);

#[derive(Default)]
struct WatcherList {
    list: Vec<Watcher>,
    /// The run is over here: no new watch (it would never end).
    closed: bool,
    /// Shared with every feed: set when the run moved to another node.
    moved: Arc<AtomicBool>,
}

impl Watchers {
    /// A new watch, unless the run is over or has [`MAX_WATCHERS`] already.
    pub(crate) fn add(&self) -> Option<RunFeed> {
        let mut guard = self.0.lock();
        if guard.closed {
            return None;
        }
        let moved = guard.moved.clone();
        let list = &mut guard.list;
        list.retain(|w| !w.tx.is_closed());
        if list.len() >= MAX_WATCHERS {
            return None;
        }
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let lagged = Arc::new(AtomicBool::new(false));
        list.push(Watcher { tx, lagged: lagged.clone() });
        Some(RunFeed { rx, lagged, moved })
    }

    /// Hands `event` to every watcher; drops those that are gone or full.
    pub(crate) fn send(&self, event: EventType, data: &Payload) {
        let mut guard = self.0.lock();
        let list = &mut guard.list;
        if list.is_empty() {
            return;
        }
        list.retain(|w| match w.tx.try_send(WatchedEvent { event, data: data.clone() }) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                w.lagged.store(true, Ordering::Release);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }

    /// Another node produces the run: every feed ends, marked moved.
    pub(crate) fn close_moved(&self) {
        self.0.lock().moved.store(true, Ordering::Release);
        self.close();
    }

    /// The run is over here: every feed ends.
    pub(crate) fn close(&self) {
        let mut guard = self.0.lock();
        guard.closed = true;
        guard.list.clear();
    }
}

/// What a client adds to one run, beyond what the channel says: tools it
/// executes itself, and the turns that continue a conversation after it
/// executed some. Kept in memory with the live run only: a run resumed
/// after a restart runs without them.
#[derive(Debug, Clone, Default)]
pub struct ClientTurns {
    /// Tools the model may call that the client executes (frontend tools).
    /// A call of one ends the run, with the call left for the client.
    pub frontend_tools: Vec<ToolDefinition>,
    /// Turns after the channel's history: the model's earlier frontend tool
    /// calls and the client's results for them.
    pub continuation: Vec<Turn>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload() -> Payload {
        Payload::from_value(&serde_json::json!({"run_id": "r"})).unwrap()
    }

    #[tokio::test]
    async fn feeds_watchers_and_drops_the_slow_and_the_gone() {
        let watchers = Watchers::default();
        let mut fast = watchers.add().unwrap();
        let slow = watchers.add().unwrap();
        let gone = watchers.add().unwrap();
        drop(gone);
        let third = watchers.add();
        let fourth = watchers.add();
        assert!(third.is_some() && fourth.is_some(), "a gone watcher frees its place");
        assert!(watchers.add().is_none(), "at most MAX_WATCHERS");
        for _ in 0..WATCH_BUFFER {
            watchers.send(EventType::AgentTextDelta, &payload());
            assert!(fast.next().await.is_some());
        }
        assert!(!slow.lagged());
        watchers.send(EventType::AgentTextDelta, &payload());
        assert!(slow.lagged(), "one past its buffer drops the slow watcher");
        assert!(!fast.lagged());
        assert_eq!(fast.next().await.map(|e| e.event), Some(EventType::AgentTextDelta));
        assert!(!fast.moved());
        watchers.close_moved();
        assert!(fast.next().await.is_none(), "the feed ends when the run ends");
        assert!(fast.moved(), "and says the run moved to another node");
        assert!(watchers.add().is_none(), "no watch after the ending");
    }
}
