//! In-process broker, presence store and connection registry.
//!
//! Several hubs in one process may share one instance; it then behaves as an
//! engine shared between processes must, which the hub tests rely on.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use chorus_clock::{Clock, SystemClock};
use chorus_protocol::ChannelName;
use parking_lot::{Mutex, RwLock};

use super::history::History;
use super::{
    Broker, BrokerError, ConnectionCursor, ConnectionPage, ConnectionRegistry, Control, Health, HistoryPage, HistoryQuery, NodeSink, PresenceEntry,
    PresenceStore, PresentUser, RegisteredConnection, Retention,
};
use crate::config::MemoryBrokerConfig;
use crate::ids::{ConnId, NodeId, UserId};
use crate::publication::{Draft, Position, Publication, new_epoch};

const SHARDS: usize = 32;

type Sink = Arc<dyn NodeSink>;

struct Stream {
    epoch: crate::publication::Epoch,
    top: u64,
    events: History,
    retention: Retention,
    /// Nodes with local subscribers, and where to deliver to them.
    listeners: Vec<(NodeId, Sink)>,
    last_touch_ms: i64,
    /// Taken out of the map (idle, evicted): whoever still holds it must
    /// look the channel up again instead of writing into it.
    removed: bool,
}

impl Stream {
    fn new(epoch: crate::publication::Epoch, retention: Retention, now_ms: i64) -> Self {
        Self {
            epoch,
            top: 0,
            events: History::default(),
            retention,
            listeners: Vec::new(),
            last_touch_ms: now_ms,
            removed: false,
        }
    }

    /// Trims to the retention; returns the bytes freed.
    fn trim(&mut self, now_ms: i64) -> usize {
        let ttl_ms = i64::try_from(self.retention.ttl.as_millis()).unwrap_or(i64::MAX);
        let mut freed = 0;
        while self.events.len() > self.retention.max_events
            || self.events.first_time_ms().is_some_and(|t| now_ms.saturating_sub(t) > ttl_ms)
        {
            freed += self.events.pop_oldest();
        }
        freed
    }

    fn position(&self) -> Position {
        Position { offset: self.top, epoch: self.epoch.clone() }
    }

    /// Whether the stream may go: nobody listens, and it either never held
    /// an event (it carries nothing: see [`MemoryBroker::fresh_epoch`]) or
    /// was untouched for its history's lifetime.
    fn idle(&self, now_ms: i64) -> bool {
        let ttl_ms = i64::try_from(self.retention.ttl.as_millis()).unwrap_or(i64::MAX);
        self.listeners.is_empty() && (self.top == 0 || now_ms.saturating_sub(self.last_touch_ms) > ttl_ms)
    }
}

type StreamShard = Mutex<HashMap<ChannelName, Arc<Mutex<Stream>>>>;
type PresenceShard = Mutex<HashMap<ChannelName, HashMap<UserId, Vec<ConnId>>>>;
type RegistryShard = Mutex<HashMap<UserId, Vec<RegisteredConnection>>>;

/// The in-memory engines. Bounded: streams nobody listens to are evicted
/// past `max_streams` (streams with listeners are bounded by the
/// subscriptions that hold them), each stream is trimmed to its retention,
/// and all history together to `max_bytes` (oldest events of the least
/// recently used streams go first; a client that needed them gets
/// `recovery_failed`). Presence and registry entries exist only for live
/// connections and are removed when they close.
pub struct MemoryBroker {
    streams: Box<[StreamShard]>,
    /// The epoch every new stream starts in. It changes whenever a stream
    /// that held an event is dropped, and only then. So a stream that never
    /// held one can be dropped and made again under the same epoch: a client
    /// at its position (offset 0) resumes in the new stream with exactly what
    /// was published since. If anything that held events went in between,
    /// the epoch differs and that client gets `recovery_failed` instead.
    fresh_epoch: Mutex<crate::publication::Epoch>,
    stream_count: AtomicUsize,
    max_streams: usize,
    /// History bytes held, and the budget for them.
    bytes: AtomicUsize,
    max_bytes: usize,
    /// One shedding pass at a time; others skip it.
    shedding: Mutex<()>,
    nodes: RwLock<HashMap<NodeId, Sink>>,
    presence: Box<[PresenceShard]>,
    presence_channels: AtomicUsize,
    registry: Box<[RegistryShard]>,
    registry_users: AtomicUsize,
    clock: Arc<dyn Clock>,
}

fn shard_of<K: Hash + ?Sized>(key: &K) -> usize {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() as usize) % SHARDS
}

fn shards<T: Default>() -> Box<[Mutex<T>]> {
    (0..SHARDS).map(|_| Mutex::new(T::default())).collect()
}

impl MemoryBroker {
    pub fn new(config: MemoryBrokerConfig) -> Self {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    pub fn with_clock(config: MemoryBrokerConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            streams: shards(),
            fresh_epoch: Mutex::new(new_epoch()),
            stream_count: AtomicUsize::new(0),
            max_streams: config.max_streams.max(1),
            bytes: AtomicUsize::new(0),
            max_bytes: config.max_bytes.max(1),
            shedding: Mutex::new(()),
            nodes: RwLock::new(HashMap::new()),
            presence: shards(),
            presence_channels: AtomicUsize::new(0),
            registry: shards(),
            registry_users: AtomicUsize::new(0),
            clock,
        }
    }

    fn stream(&self, channel: &ChannelName, retention: Retention) -> Arc<Mutex<Stream>> {
        let now = self.clock.now_ms();
        let shard = &self.streams[shard_of(channel.as_str())];
        if let Some(s) = shard.lock().get(channel) {
            return s.clone();
        }
        if self.stream_count.load(Ordering::Relaxed) >= self.max_streams {
            self.evict(now);
        }
        let mut map = shard.lock();
        let entry = map.entry(channel.clone()).or_insert_with(|| {
            self.stream_count.fetch_add(1, Ordering::Relaxed);
            let epoch = self.fresh_epoch.lock().clone();
            Arc::new(Mutex::new(Stream::new(epoch, retention, now)))
        });
        entry.clone()
    }

    /// Runs `f` on the channel's stream under its lock. A stream removed
    /// between the lookup and the lock is looked up again, so nothing is
    /// written into a stream the map no longer holds.
    fn with_stream<T>(&self, channel: &ChannelName, retention: Retention, mut f: impl FnMut(&mut Stream) -> T) -> T {
        loop {
            let stream = self.stream(channel, retention);
            let mut s = stream.lock();
            if !s.removed {
                return f(&mut s);
            }
        }
    }

    /// Takes a stream out of the map (its shard lock held by the caller).
    fn remove(&self, map: &mut HashMap<ChannelName, Arc<Mutex<Stream>>>, name: &ChannelName) {
        if let Some(stream) = map.remove(name) {
            let mut s = stream.lock();
            s.removed = true;
            self.bytes.fetch_sub(s.events.bytes(), Ordering::Relaxed);
            self.stream_count.fetch_sub(1, Ordering::Relaxed);
            if s.top > 0 {
                // Its positions must never match a later stream of that name.
                *self.fresh_epoch.lock() = new_epoch();
            }
        }
    }

    /// Brings history back under its byte budget (to 90% of it, so passes
    /// are rare): idle streams go first, then the least recently used
    /// streams nobody listens to, then the oldest events of the least
    /// recently used streams that remain.
    fn shed(&self) {
        let Some(_pass) = self.shedding.try_lock() else { return };
        let target = self.max_bytes / 10 * 9;
        self.drop_idle(self.clock.now_ms());
        if self.bytes.load(Ordering::Relaxed) <= target {
            return;
        }
        let mut by_age: Vec<(i64, bool, ChannelName)> = Vec::new();
        for shard in self.streams.iter() {
            for (name, s) in shard.lock().iter() {
                let s = s.lock();
                by_age.push((s.last_touch_ms, !s.listeners.is_empty(), name.clone()));
            }
        }
        // Unlistened streams first, each group least recently used first.
        by_age.sort_unstable_by_key(|(t, listened, _)| (*listened, *t));
        for (_, listened, name) in by_age {
            if self.bytes.load(Ordering::Relaxed) <= target {
                return;
            }
            let mut map = self.streams[shard_of(name.as_str())].lock();
            if !listened {
                if map.get(&name).is_some_and(|s| s.lock().listeners.is_empty()) {
                    self.remove(&mut map, &name);
                }
                continue;
            }
            let Some(stream) = map.get(&name).cloned() else { continue };
            drop(map);
            let mut s = stream.lock();
            while !s.removed && !s.events.is_empty() && self.bytes.load(Ordering::Relaxed) > target {
                let freed = s.events.pop_oldest();
                self.bytes.fetch_sub(freed, Ordering::Relaxed);
            }
        }
    }

    /// History bytes held (for tests and health).
    pub fn history_bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Makes room for a new stream: drops idle ones, then the least recently
    /// used tenth of the streams nobody listens to.
    fn evict(&self, now: i64) {
        self.drop_idle(now);
        if self.stream_count.load(Ordering::Relaxed) < self.max_streams {
            return;
        }
        let mut candidates: Vec<(i64, ChannelName)> = Vec::new();
        for shard in self.streams.iter() {
            for (name, s) in shard.lock().iter() {
                let s = s.lock();
                if s.listeners.is_empty() {
                    candidates.push((s.last_touch_ms, name.clone()));
                }
            }
        }
        candidates.sort_unstable_by_key(|(t, _)| *t);
        let n = (self.max_streams / 10).max(1);
        for (_, name) in candidates.into_iter().take(n) {
            let shard = &self.streams[shard_of(name.as_str())];
            let mut map = shard.lock();
            if map.get(&name).is_some_and(|s| s.lock().listeners.is_empty()) {
                self.remove(&mut map, &name);
            }
        }
    }

    /// Channels with presence entries (for tests and metrics).
    pub fn channels_with_presence(&self) -> usize {
        self.presence_channels.load(Ordering::Relaxed)
    }

    /// Users with registered connections (for tests and metrics).
    pub fn registered_users(&self) -> usize {
        self.registry_users.load(Ordering::Relaxed)
    }

    fn drop_idle(&self, now: i64) {
        for shard in self.streams.iter() {
            let mut map = shard.lock();
            let idle: Vec<ChannelName> = map.iter().filter(|(_, s)| s.lock().idle(now)).map(|(n, _)| n.clone()).collect();
            for name in idle {
                self.remove(&mut map, &name);
            }
        }
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, channel: &ChannelName, draft: Draft, retention: Retention) -> Result<Arc<Publication>, BrokerError> {
        let now = self.clock.now_ms();
        let mut draft = Some(draft);
        let publication = self.with_stream(channel, retention, |s| {
            let draft = draft.take()?;
            s.top += 1;
            s.retention = retention;
            s.last_touch_ms = now;
            let publication = Arc::new(Publication::new(channel.clone(), s.position(), now, draft));
            let before = s.events.bytes();
            s.events.push(publication.clone());
            s.trim(now);
            let after = s.events.bytes();
            if after >= before {
                self.bytes.fetch_add(after - before, Ordering::Relaxed);
            } else {
                self.bytes.fetch_sub(before - after, Ordering::Relaxed);
            }
            // Delivering under the stream lock keeps every node's deliveries in offset order.
            for (_, sink) in &s.listeners {
                sink.publication(publication.clone());
            }
            Some(publication)
        });
        // `with_stream` runs the closure exactly once with a live stream.
        let publication = publication.ok_or_else(|| BrokerError::Unavailable("publish lost its draft".into()))?;
        if self.bytes.load(Ordering::Relaxed) > self.max_bytes {
            self.shed();
        }
        Ok(publication)
    }

    async fn history(&self, channel: &ChannelName, query: HistoryQuery, retention: Retention) -> Result<HistoryPage, BrokerError> {
        let now = self.clock.now_ms();
        self.with_stream(channel, retention, |s| {
            s.retention = retention;
            let freed = s.trim(now);
            self.bytes.fetch_sub(freed, Ordering::Relaxed);
            s.last_touch_ms = now;
            let current = s.position();
            let publications = match &query {
                HistoryQuery::Position => Ok(Vec::new()),
                HistoryQuery::Latest { limit } => s.events.latest(*limit),
                HistoryQuery::Since { position, limit } => {
                    let first_retained = s.events.first_offset().unwrap_or(s.top + 1);
                    if position.epoch != s.epoch || position.offset > s.top || position.offset + 1 < first_retained {
                        return Err(BrokerError::Unrecoverable { current });
                    }
                    s.events.read(position.offset + 1, *limit)
                }
            };
            // Kept events that cannot be rebuilt are as good as trimmed.
            let publications = publications.map_err(|_| BrokerError::Unrecoverable { current: current.clone() })?;
            Ok(HistoryPage { current, publications })
        })
    }

    async fn attach(&self, node: &NodeId, sink: Arc<dyn NodeSink>) -> Result<(), BrokerError> {
        self.nodes.write().insert(node.clone(), sink);
        Ok(())
    }

    async fn detach(&self, node: &NodeId) {
        self.nodes.write().remove(node);
        for shard in self.streams.iter() {
            for s in shard.lock().values() {
                s.lock().listeners.retain(|(n, _)| n != node);
            }
        }
    }

    async fn listen(&self, node: &NodeId, channel: &ChannelName) -> Result<(), BrokerError> {
        let sink = self
            .nodes
            .read()
            .get(node)
            .cloned()
            .ok_or_else(|| BrokerError::Unavailable(format!("node {node} is not attached")))?;
        // Publish and history set the real retention; this only creates the stream.
        // In effect before it returns: the next publish reaches this node.
        self.with_stream(channel, Retention { max_events: 0, ttl: std::time::Duration::ZERO }, |s| {
            if !s.listeners.iter().any(|(n, _)| n == node) {
                s.listeners.push((node.clone(), sink.clone()));
            }
        });
        Ok(())
    }

    async fn unlisten(&self, node: &NodeId, channel: &ChannelName) -> Result<(), BrokerError> {
        let mut map = self.streams[shard_of(channel.as_str())].lock();
        let Some(stream) = map.get(channel).cloned() else { return Ok(()) };
        let carries_nothing = {
            let mut s = stream.lock();
            s.listeners.retain(|(n, _)| n != node);
            s.listeners.is_empty() && s.top == 0
        };
        // A stream that never held an event goes with its last listener, under
        // the same rule as the sweep (see `fresh_epoch`): recovery stays exact.
        if carries_nothing {
            self.remove(&mut map, channel);
        }
        Ok(())
    }

    async fn live_nodes(&self) -> Result<Vec<NodeId>, BrokerError> {
        Ok(self.nodes.read().keys().cloned().collect())
    }

    async fn control(&self, target: Option<&NodeId>, control: Control) -> Result<(), BrokerError> {
        let sinks: Vec<Sink> = {
            let nodes = self.nodes.read();
            match target {
                Some(node) => nodes.get(node).cloned().into_iter().collect(),
                None => nodes.values().cloned().collect(),
            }
        };
        for sink in sinks {
            sink.control(control.clone());
        }
        Ok(())
    }

    async fn sweep(&self) {
        self.drop_idle(self.clock.now_ms());
    }

    fn health(&self) -> Health {
        Health::Up { detail: format!("in-memory, {} streams", self.streams()) }
    }

    fn streams(&self) -> usize {
        self.stream_count.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl PresenceStore for MemoryBroker {
    async fn join(&self, channel: &ChannelName, entry: PresenceEntry) -> Result<bool, BrokerError> {
        let mut map = self.presence[shard_of(channel.as_str())].lock();
        let users = map.entry(channel.clone()).or_insert_with(|| {
            self.presence_channels.fetch_add(1, Ordering::Relaxed);
            HashMap::new()
        });
        let conns = users.entry(entry.user).or_default();
        let first = conns.is_empty();
        if !conns.contains(&entry.conn) {
            conns.push(entry.conn);
        }
        Ok(first)
    }

    async fn leave(&self, channel: &ChannelName, conn: ConnId, user: &UserId) -> Result<bool, BrokerError> {
        let mut map = self.presence[shard_of(channel.as_str())].lock();
        let Some(users) = map.get_mut(channel) else { return Ok(false) };
        let Some(conns) = users.get_mut(user) else { return Ok(false) };
        let before = conns.len();
        conns.retain(|c| *c != conn);
        let last = before > 0 && conns.is_empty();
        if conns.is_empty() {
            users.remove(user);
        }
        if users.is_empty() {
            map.remove(channel);
            self.presence_channels.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(last)
    }

    async fn list(&self, channel: &ChannelName) -> Result<Vec<PresentUser>, BrokerError> {
        let map = self.presence[shard_of(channel.as_str())].lock();
        let mut users: Vec<PresentUser> = map
            .get(channel)
            .map(|u| {
                u.iter()
                    .map(|(user, conns)| PresentUser {
                        user: user.clone(),
                        connections: u32::try_from(conns.len()).unwrap_or(u32::MAX),
                    })
                    .collect()
            })
            .unwrap_or_default();
        users.sort_by(|a, b| a.user.cmp(&b.user));
        Ok(users)
    }

    async fn is_present(&self, channel: &ChannelName, user: &UserId) -> Result<bool, BrokerError> {
        let map = self.presence[shard_of(channel.as_str())].lock();
        Ok(map.get(channel).is_some_and(|users| users.get(user).is_some_and(|c| !c.is_empty())))
    }

    fn channels(&self) -> usize {
        self.presence_channels.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl ConnectionRegistry for MemoryBroker {
    async fn register(&self, entry: RegisteredConnection, limit: usize) -> Result<Vec<RegisteredConnection>, BrokerError> {
        let mut map = self.registry[shard_of(entry.user.as_str())].lock();
        let conns = map.entry(entry.user.clone()).or_insert_with(|| {
            self.registry_users.fetch_add(1, Ordering::Relaxed);
            Vec::new()
        });
        // Oldest means registered first: arrival order, never node clocks.
        conns.push(entry);
        let excess = conns.len().saturating_sub(limit.max(1));
        Ok(conns.drain(..excess).collect())
    }

    async fn unregister(&self, user: &UserId, conn: ConnId) -> Result<(), BrokerError> {
        let mut map = self.registry[shard_of(user.as_str())].lock();
        if let Some(conns) = map.get_mut(user) {
            conns.retain(|c| c.conn != conn);
            if conns.is_empty() {
                map.remove(user);
                self.registry_users.fetch_sub(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    async fn connections(&self, user: &UserId) -> Result<Vec<RegisteredConnection>, BrokerError> {
        Ok(self.registry[shard_of(user.as_str())].lock().get(user).cloned().unwrap_or_default())
    }

    async fn page(&self, after: Option<&ConnectionCursor>, limit: usize) -> Result<ConnectionPage, BrokerError> {
        let mut all = Vec::new();
        for shard in self.registry.iter() {
            all.extend(shard.lock().values().flatten().cloned());
        }
        Ok(ConnectionPage::of(all, after, limit))
    }

    fn users(&self) -> usize {
        self.registry_users.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chorus_protocol::{EventType, Payload};

    use super::*;
    use crate::ids::Transport;
    use chorus_clock::ManualClock;

    const KEEP: Retention = Retention { max_events: 3, ttl: Duration::from_secs(60) };

    fn ch(s: &str) -> ChannelName {
        ChannelName::parse(s).unwrap()
    }

    fn draft() -> Draft {
        Draft::new(EventType::Publication, Payload::empty())
    }

    #[tokio::test]
    async fn offsets_increase_and_history_is_trimmed_to_size() {
        let b = MemoryBroker::new(MemoryBrokerConfig::default());
        let c = ch("room:a");
        for i in 1..=5 {
            assert_eq!(b.publish(&c, draft(), KEEP).await.unwrap().offset, i);
        }
        let page = b.history(&c, HistoryQuery::Latest { limit: 10 }, KEEP).await.unwrap();
        assert_eq!(page.current.offset, 5);
        assert_eq!(page.publications.iter().map(|p| p.offset).collect::<Vec<_>>(), vec![3, 4, 5]);
        let since = |offset| HistoryQuery::Since { position: Position { offset, epoch: page.current.epoch.clone() }, limit: 10 };
        let got = b.history(&c, since(3), KEEP).await.unwrap();
        assert_eq!(got.publications.iter().map(|p| p.offset).collect::<Vec<_>>(), vec![4, 5]);
        assert!(b.history(&c, since(2), KEEP).await.unwrap().publications.len() == 3);
        assert!(matches!(b.history(&c, since(1), KEEP).await, Err(BrokerError::Unrecoverable { .. })));
        assert!(matches!(b.history(&c, since(6), KEEP).await, Err(BrokerError::Unrecoverable { .. })));
        let other_epoch = HistoryQuery::Since { position: Position { offset: 4, epoch: "zzz".into() }, limit: 10 };
        assert!(matches!(b.history(&c, other_epoch, KEEP).await, Err(BrokerError::Unrecoverable { .. })));
        assert!(b.history(&c, since(5), KEEP).await.unwrap().publications.is_empty());
    }

    #[tokio::test]
    async fn history_expires_by_time() {
        let clock = ManualClock::starting_at(1_000_000);
        let b = MemoryBroker::with_clock(MemoryBrokerConfig::default(), Arc::new(clock.clone()));
        let c = ch("room:a");
        b.publish(&c, draft(), KEEP).await.unwrap();
        clock.advance_ms(61_000);
        b.publish(&c, draft(), KEEP).await.unwrap();
        let page = b.history(&c, HistoryQuery::Latest { limit: 10 }, KEEP).await.unwrap();
        assert_eq!(page.publications.iter().map(|p| p.offset).collect::<Vec<_>>(), vec![2]);
        let since0 = HistoryQuery::Since { position: Position { offset: 0, epoch: page.current.epoch.clone() }, limit: 10 };
        assert!(matches!(b.history(&c, since0, KEEP).await, Err(BrokerError::Unrecoverable { .. })));
    }

    #[tokio::test]
    async fn stream_count_is_bounded_and_idle_streams_go() {
        let clock = ManualClock::starting_at(0);
        let b = MemoryBroker::with_clock(MemoryBrokerConfig { max_streams: 10, ..MemoryBrokerConfig::default() }, Arc::new(clock.clone()));
        for i in 0..25 {
            clock.advance_ms(1);
            b.publish(&ch(&format!("room:{i}")), draft(), KEEP).await.unwrap();
            assert!(b.streams() <= 10, "{} streams", b.streams());
        }
        clock.advance_ms(61_000);
        b.sweep().await;
        assert_eq!(b.streams(), 0);
    }

    #[tokio::test]
    async fn history_bytes_stay_within_the_budget() {
        let clock = ManualClock::starting_at(0);
        let b = MemoryBroker::with_clock(MemoryBrokerConfig { max_bytes: 64 * 1024, ..MemoryBrokerConfig::default() }, Arc::new(clock.clone()));
        let keep = Retention { max_events: 1000, ttl: Duration::from_secs(3600) };
        // Each event's data differs from its start, so none is kept as a series piece.
        let data = |i: usize| Payload::from_value(&serde_json::json!({ "id": i, "text": "x".repeat(500) })).unwrap();
        let first = b.publish(&ch("room:old"), Draft::new(EventType::Publication, data(0)), keep).await.unwrap();
        for i in 0..400 {
            clock.advance_ms(1);
            b.publish(&ch(&format!("room:{}", i % 4)), Draft::new(EventType::Publication, data(i)), keep).await.unwrap();
            assert!(b.history_bytes() <= 64 * 1024 + 2048, "{} bytes held", b.history_bytes());
        }
        // The least recently used stream went first; its position cannot be recovered.
        let since = HistoryQuery::Since { position: Position { offset: 0, epoch: first.epoch.clone() }, limit: 10 };
        assert!(matches!(b.history(&ch("room:old"), since, keep).await, Err(BrokerError::Unrecoverable { .. })));
        // A recent stream still has its latest events, in order, without holes.
        let page = b.history(&ch("room:3"), HistoryQuery::Latest { limit: 1000 }, keep).await.unwrap();
        let offsets: Vec<u64> = page.publications.iter().map(|p| p.offset).collect();
        assert!(!offsets.is_empty() && offsets.len() < 100, "{offsets:?}");
        assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1));
        assert_eq!(*offsets.last().unwrap(), page.current.offset);
    }

    #[tokio::test]
    async fn a_swept_stream_is_never_written_through_a_stale_handle() {
        let clock = ManualClock::starting_at(0);
        let b = MemoryBroker::with_clock(MemoryBrokerConfig::default(), Arc::new(clock.clone()));
        let c = ch("room:a");
        let stale = b.stream(&c, KEEP);
        clock.advance_ms(61_000);
        b.sweep().await;
        assert!(stale.lock().removed);
        let p = b.publish(&c, draft(), KEEP).await.unwrap();
        // A new stream (the swept one held nothing, so it keeps the epoch).
        assert_eq!((p.offset, &p.epoch), (1, &stale.lock().epoch));
        assert!(stale.lock().events.is_empty() && stale.lock().top == 0);
        assert!(!Arc::ptr_eq(&stale, &b.stream(&c, KEEP)));
        assert_eq!(b.history(&c, HistoryQuery::Latest { limit: 10 }, KEEP).await.unwrap().publications.len(), 1);
    }

    #[tokio::test]
    async fn streams_that_never_held_an_event_go_once_unlistened_and_resume_exactly() {
        let b = MemoryBroker::new(MemoryBrokerConfig::default());
        let quiet = ch("user:quiet");
        let node = NodeId::new("n");
        // A subscriber's position on a stream nothing was published on.
        let at = b.history(&quiet, HistoryQuery::Position, KEEP).await.unwrap().current;
        assert_eq!(at.offset, 0);
        b.sweep().await;
        assert_eq!(b.streams(), 0, "an empty stream nobody listens to carries nothing");
        // Published after it went: a client at offset 0 gets exactly that, in the same epoch.
        b.publish(&quiet, draft(), KEEP).await.unwrap();
        b.publish(&quiet, draft(), KEEP).await.unwrap();
        let since = HistoryQuery::Since { position: at.clone(), limit: 10 };
        let page = b.history(&quiet, since, KEEP).await.unwrap();
        assert_eq!(page.current.epoch, at.epoch);
        assert_eq!(page.publications.iter().map(|p| p.offset).collect::<Vec<_>>(), vec![1, 2]);
        // A listened empty stream stays.
        b.attach(&node, Arc::new(NullSink)).await.unwrap();
        b.listen(&node, &ch("user:listened")).await.unwrap();
        b.sweep().await;
        assert_eq!(b.streams(), 2, "the listened stream and the one with events stay");
    }

    #[tokio::test]
    async fn once_a_stream_with_events_is_dropped_old_empty_positions_fail_recovery() {
        let clock = ManualClock::starting_at(0);
        let b = MemoryBroker::with_clock(MemoryBrokerConfig::default(), Arc::new(clock.clone()));
        let c = ch("user:a");
        let at = b.history(&c, HistoryQuery::Position, KEEP).await.unwrap().current;
        b.sweep().await;
        // The channel gets an event, and that stream is dropped too (idle past its TTL).
        b.publish(&c, draft(), KEEP).await.unwrap();
        clock.advance_ms(61_000);
        b.sweep().await;
        assert_eq!(b.streams(), 0);
        // What was published in the dropped stream is lost: the old position must not resume silently.
        b.publish(&c, draft(), KEEP).await.unwrap();
        let since = HistoryQuery::Since { position: at, limit: 10 };
        assert!(matches!(b.history(&c, since, KEEP).await, Err(BrokerError::Unrecoverable { .. })));
    }

    struct NullSink;

    impl NodeSink for NullSink {
        fn publication(&self, _: Arc<Publication>) {}
        fn control(&self, _: Control) {}
    }

    #[tokio::test]
    async fn registry_returns_the_oldest_past_the_limit() {
        let b = MemoryBroker::new(MemoryBrokerConfig::default());
        let user = UserId::new("u");
        let node = NodeId::new("n");
        let ids: Vec<ConnId> = (0..4).map(|_| ConnId::random()).collect();
        for (i, id) in ids.iter().enumerate() {
            let evicted = b
                .register(RegisteredConnection { conn: *id, user: user.clone(), node: node.clone(), since_ms: i as i64, transport: Transport::WebSocket }, 3)
                .await
                .unwrap();
            if i < 3 {
                assert!(evicted.is_empty());
            } else {
                assert_eq!(evicted.iter().map(|e| e.conn).collect::<Vec<_>>(), vec![ids[0]]);
            }
        }
        assert_eq!(b.connections(&user).await.unwrap().len(), 3);
        for id in &ids {
            b.unregister(&user, *id).await.unwrap();
        }
        assert_eq!(b.users(), 0);
    }

    #[tokio::test]
    async fn every_nodes_connections_page_in_order_with_the_total() {
        let b = MemoryBroker::new(MemoryBrokerConfig::default());
        let mut registered = Vec::new();
        for i in 0..7_i64 {
            // Two nodes, two users, opening times out of order and one tie.
            let e = RegisteredConnection {
                conn: ConnId::random(),
                user: UserId::new(if i % 2 == 0 { "u" } else { "v" }),
                node: NodeId::new(if i < 4 { "a" } else { "b" }),
                since_ms: (7 - i) / 2,
                transport: if i == 3 { Transport::Sse } else { Transport::WebSocket },
            };
            assert!(b.register(e.clone(), 10).await.unwrap().is_empty());
            registered.push(e);
        }
        registered.sort_by_key(RegisteredConnection::cursor);
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = b.page(after.as_ref(), 3).await.unwrap();
            assert_eq!(page.total, 7);
            assert!(page.connections.len() <= 3);
            seen.extend(page.connections);
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, registered, "every connection once, by opening time then id");
        let whole = b.page(None, 1000).await.unwrap();
        assert_eq!((whole.connections.len(), whole.next), (7, None));
        b.unregister(&registered[0].user, registered[0].conn).await.unwrap();
        assert_eq!(b.page(None, 1).await.unwrap().total, 6);
    }

    #[tokio::test]
    async fn presence_is_per_user() {
        let b = MemoryBroker::new(MemoryBrokerConfig::default());
        let c = ch("room:a");
        let (u, n) = (UserId::new("u"), NodeId::new("n"));
        let (c1, c2) = (ConnId::random(), ConnId::random());
        assert!(b.join(&c, PresenceEntry { conn: c1, user: u.clone(), node: n.clone() }).await.unwrap());
        assert!(!b.join(&c, PresenceEntry { conn: c2, user: u.clone(), node: n.clone() }).await.unwrap());
        assert_eq!(b.list(&c).await.unwrap(), vec![PresentUser { user: u.clone(), connections: 2 }]);
        assert!(!b.leave(&c, c1, &u).await.unwrap());
        assert!(b.leave(&c, c2, &u).await.unwrap());
        assert!(!b.leave(&c, c2, &u).await.unwrap());
        assert_eq!(PresenceStore::channels(&b), 0);
    }
}
