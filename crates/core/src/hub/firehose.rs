//! The admin firehose tap: every event passing through this node, for
//! readers that may fall behind (and are told so) but never slow anyone.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::broadcast;

use super::Hub;
use crate::publication::Publication;

/// Events buffered for each admin firehose reader; a reader further behind
/// than this misses the oldest and is told how many ([`FirehoseItem::Lagged`]).
pub const FIREHOSE_BUFFER: usize = 1024;

/// The firehose tap: a bounded broadcast, fed only while someone reads it.
pub(super) struct Tap {
    tx: broadcast::Sender<Arc<Publication>>,
    readers: AtomicUsize,
}

impl Tap {
    pub(super) fn new() -> Self {
        Self { tx: broadcast::channel(FIREHOSE_BUFFER).0, readers: AtomicUsize::new(0) }
    }
}

/// What a firehose reader gets next.
#[derive(Debug)]
pub enum FirehoseItem {
    Event(Arc<Publication>),
    /// The reader fell behind and this many events were dropped for it.
    Lagged(u64),
    /// The hub is gone.
    Closed,
}

/// One reader of every event passing through this node (see [`Hub::firehose`]).
pub struct Firehose {
    rx: broadcast::Receiver<Arc<Publication>>,
    tap: Arc<Tap>,
}

impl Firehose {
    pub async fn next(&mut self) -> FirehoseItem {
        match self.rx.recv().await {
            Ok(p) => FirehoseItem::Event(p),
            Err(broadcast::error::RecvError::Lagged(n)) => FirehoseItem::Lagged(n),
            Err(broadcast::error::RecvError::Closed) => FirehoseItem::Closed,
        }
    }
}

impl Drop for Firehose {
    fn drop(&mut self) {
        self.tap.readers.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Hub {
    /// A reader of every event passing through this node: those published
    /// here and those the broker delivers from other nodes, each once.
    /// Bounded by [`FIREHOSE_BUFFER`] per reader.
    pub fn firehose(&self) -> Firehose {
        let tap = self.0.tap.clone();
        tap.readers.fetch_add(1, Ordering::AcqRel);
        Firehose { rx: tap.tx.subscribe(), tap }
    }

    /// Readers of the firehose on this node.
    pub fn firehose_readers(&self) -> usize {
        self.0.tap.readers.load(Ordering::Acquire)
    }

    pub(super) fn tap(&self, p: &Arc<Publication>) {
        // One atomic load on the hot path while nobody watches.
        if self.0.tap.readers.load(Ordering::Relaxed) > 0 {
            // No receiver left (raced a drop) is not an error.
            let _ = self.0.tap.tx.send(p.clone());
        }
    }
}
