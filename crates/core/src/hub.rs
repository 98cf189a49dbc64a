//! The hub: this node's connections, their subscriptions and the fan-out of
//! broker deliveries to them.
//!
//! Locks are plain `parking_lot` locks held only for map operations; no lock
//! is held across an `.await`. Broker listen/unlisten per channel is ordered
//! by a per-channel async gate so a node never stops listening to a channel
//! that has local subscribers.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use chorus_clock::Clock;
use chorus_protocol::push::ReasonData;
use chorus_protocol::reply::{PresenceUser, SubscribedResult};
use chorus_protocol::{ChannelName, CloseCode, ControlPush, EventType, Payload, StreamPosition, encode_control, timestamp};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::access::{AccessError, AccessPolicy};
use crate::broker::{Backplane, BrokerError, Control, Health, HistoryPage, HistoryQuery, NodeSink, PresenceEntry, RegisteredConnection, Retention};
use crate::config::{Limits, NamespaceConfig, RateLimits, Timing};
use crate::connection::{Connection, ConnectionInfo};
use crate::identity::Identity;
use crate::ids::{ConnId, NodeId, Transport, UserId};
use crate::limiter::{KeyedLimiter, Rate, Refusal, TokenBucket};
use crate::metrics::CoreMetrics;
use crate::outbound::{Outbound, Outgoing, QueueBounds, QueueLimits};
use crate::publication::{Draft, Position, Publication};
use crate::subscription::{Delivery, Subscription};
use crate::supervise::{catch_panic, spawn_background};
use crate::typing::{TypingChange, TypingTracker};

const SHARDS: usize = 64;

/// How many corrections a presence or typing announcement may make before
/// it leaves the rest to whoever changes the state next.
const SETTLE_ROUNDS: usize = 4;

/// Events buffered for each admin firehose reader; a reader further behind
/// than this misses the oldest and is told how many ([`FirehoseItem::Lagged`]).
pub const FIREHOSE_BUFFER: usize = 1024;

/// Maintenance mode as every node sees it. While on, everything that creates
/// content (messages, channels, agents, publications) is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum MaintenanceMode {
    #[default]
    Off,
    On {
        /// What the administrator wants users to read, if anything.
        message: Option<String>,
        /// Unix milliseconds.
        since_ms: i64,
    },
}

/// Content creation refused because of maintenance mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the server is in maintenance mode: {} is refused until it ends", self.subject())]
pub struct MaintenanceRefusal {
    /// What was refused, e.g. "publishing".
    pub what: String,
    /// The administrator's message.
    pub notice: Option<String>,
}

impl MaintenanceRefusal {
    /// The refused action with the administrator's message, for error texts.
    pub fn subject(&self) -> String {
        match &self.notice {
            Some(n) => format!("{} ({n})", self.what),
            None => self.what.clone(),
        }
    }
}

/// The firehose tap: a bounded broadcast, fed only while someone reads it.
struct Tap {
    tx: broadcast::Sender<Arc<Publication>>,
    readers: AtomicUsize,
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

/// Fixed settings of a hub.
#[derive(Debug, Clone)]
pub struct HubConfig {
    pub node: NodeId,
    pub timing: Timing,
}

/// What the composition root hands to [`Hub::start`].
pub struct HubParts {
    pub config: HubConfig,
    pub access: AccessPolicy,
    pub limits: watch::Receiver<Limits>,
    pub rates: watch::Receiver<RateLimits>,
    pub backplane: Backplane,
    pub metrics: CoreMetrics,
    pub clock: Arc<dyn Clock>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("this node is at its connection limit")]
    NodeFull,
    #[error("the server is shutting down")]
    ShuttingDown,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    #[error("already subscribed to `{0}`")]
    AlreadySubscribed(ChannelName),
    #[error("at most {0} subscriptions per connection")]
    TooMany(usize),
    #[error("connection is closed")]
    Closed,
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TypingError {
    #[error("typing is not enabled in namespace `{0}`")]
    Disabled(String),
    #[error("not subscribed to `{0}`")]
    NotSubscribed(ChannelName),
    #[error("too many typing indicators on this node")]
    Full,
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// The work left after a `subscribe` reply was sent: replay what was missed
/// (or announce that it cannot be), then catch up and go live.
pub struct FollowUp {
    sub: Arc<Subscription>,
    /// The connection's request id, for the follow-up's log lines.
    request_id: Arc<str>,
    start: SyncStart,
    retention: Retention,
}

enum SyncStart {
    Replay { from: Position, publications: Vec<Arc<Publication>> },
    Failed { current: Position },
}

struct ChannelEntry {
    subscribers: HashMap<ConnId, Arc<Subscription>>,
    /// Orders this node's listen/unlisten calls for the channel.
    gate: Arc<tokio::sync::Mutex<bool>>,
}

type ChannelShard = RwLock<HashMap<ChannelName, ChannelEntry>>;
type ConnShard = Mutex<HashMap<UserId, Vec<Arc<Connection>>>>;

pub(crate) struct HubInner {
    node: NodeId,
    timing: Timing,
    access: AccessPolicy,
    limits: watch::Receiver<Limits>,
    rates: watch::Receiver<RateLimits>,
    backplane: Backplane,
    channels: Box<[ChannelShard]>,
    conns: Box<[ConnShard]>,
    conn_count: AtomicUsize,
    sub_count: AtomicUsize,
    typing: TypingTracker,
    pub(crate) user_frames: KeyedLimiter<UserId>,
    pub(crate) user_messages: KeyedLimiter<UserId>,
    user_rest: KeyedLimiter<UserId>,
    connects: Mutex<Option<TokenBucket>>,
    /// Shared by every outbound queue; follows reloads of `limits`.
    queue_bounds: Arc<QueueBounds>,
    maintenance: RwLock<MaintenanceMode>,
    /// Mirrors `maintenance` for the cheap check on every publish.
    maintenance_on: AtomicBool,
    tap: Arc<Tap>,
    metrics: CoreMetrics,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
    background: TaskTracker,
    connections: TaskTracker,
}

/// Cheap to clone; all clones are the same hub.
#[derive(Clone)]
pub struct Hub(Arc<HubInner>);

fn shard_index<K: Hash + ?Sized>(key: &K) -> usize {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() as usize) % SHARDS
}

struct Sink(Weak<HubInner>);

impl NodeSink for Sink {
    fn publication(&self, publication: Arc<Publication>) {
        if let Some(inner) = self.0.upgrade() {
            Hub(inner).fan_out(&publication);
        }
    }

    fn control(&self, control: Control) {
        if let Some(inner) = self.0.upgrade() {
            Hub(inner).on_control(control);
        }
    }
}

impl Hub {
    /// Attaches to the broker and starts the hub's background tasks.
    pub async fn start(parts: HubParts) -> Result<Hub, BrokerError> {
        let queue_bounds = QueueBounds::new(queue_limits(&parts.limits.borrow()));
        let inner = Arc::new(HubInner {
            node: parts.config.node,
            timing: parts.config.timing,
            access: parts.access,
            limits: parts.limits,
            rates: parts.rates,
            backplane: parts.backplane,
            channels: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            conns: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            conn_count: AtomicUsize::new(0),
            sub_count: AtomicUsize::new(0),
            typing: TypingTracker::default(),
            user_frames: KeyedLimiter::new(),
            user_messages: KeyedLimiter::new(),
            user_rest: KeyedLimiter::new(),
            connects: Mutex::new(None),
            queue_bounds,
            maintenance: RwLock::new(MaintenanceMode::Off),
            maintenance_on: AtomicBool::new(false),
            tap: Arc::new(Tap { tx: broadcast::channel(FIREHOSE_BUFFER).0, readers: AtomicUsize::new(0) }),
            metrics: parts.metrics,
            clock: parts.clock,
            shutdown: CancellationToken::new(),
            background: TaskTracker::new(),
            connections: TaskTracker::new(),
        });
        let hub = Hub(inner);
        let sink: Arc<dyn NodeSink> = Arc::new(Sink(Arc::downgrade(&hub.0)));
        hub.0.backplane.broker.attach(&hub.0.node, sink).await?;
        hub.spawn_background_tasks();
        Ok(hub)
    }

    fn spawn_background_tasks(&self) {
        let i = &self.0;
        let weak = Arc::downgrade(&self.0);
        spawn_background(&i.background, i.shutdown.clone(), i.metrics.clone(), "cleanup", Duration::from_secs(1), {
            let weak = weak.clone();
            move || {
                let weak = weak.clone();
                async move {
                    let Some(period) = weak.upgrade().map(|i| i.timing.cleanup_interval) else { return };
                    let mut tick = tokio::time::interval(period);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    tick.tick().await;
                    loop {
                        tick.tick().await;
                        let Some(inner) = weak.upgrade() else { return };
                        Hub(inner).cleanup().await;
                    }
                }
            }
        });
        spawn_background(&i.background, i.shutdown.clone(), i.metrics.clone(), "expiry", Duration::from_secs(1), {
            let weak = weak.clone();
            move || {
                let weak = weak.clone();
                async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(1));
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tick.tick().await;
                        let Some(inner) = weak.upgrade() else { return };
                        Hub(inner).expire().await;
                    }
                }
            }
        });
        spawn_background(&i.background, i.shutdown.clone(), i.metrics.clone(), "limiter_sweep", Duration::from_secs(1), {
            let weak = weak.clone();
            let rates = i.rates.clone();
            move || {
                let weak = weak.clone();
                let mut rates = rates.clone();
                async move {
                    let mut last = tokio::time::Instant::now();
                    // False once nothing can reload the rates any more.
                    let mut reloadable = true;
                    loop {
                        let period = rates.borrow_and_update().limiter_sweep;
                        // A reloaded period takes effect now, not after the old one ends.
                        tokio::select! {
                            _ = tokio::time::sleep_until(last + period) => {}
                            changed = rates.changed(), if reloadable => {
                                reloadable = changed.is_ok();
                                continue;
                            }
                        }
                        last = tokio::time::Instant::now();
                        let Some(inner) = weak.upgrade() else { return };
                        Hub(inner).sweep_limiters();
                    }
                }
            }
        });
        spawn_background(&i.background, i.shutdown.clone(), i.metrics.clone(), "queue_bounds", Duration::from_secs(1), {
            let bounds = i.queue_bounds.clone();
            let limits = i.limits.clone();
            move || {
                let bounds = bounds.clone();
                let mut limits = limits.clone();
                async move {
                    loop {
                        bounds.set(queue_limits(&limits.borrow_and_update()));
                        if limits.changed().await.is_err() {
                            // Nothing can reload the limits any more.
                            return std::future::pending().await;
                        }
                    }
                }
            }
        });
    }

    pub fn node(&self) -> &NodeId {
        &self.0.node
    }

    pub fn timing(&self) -> &Timing {
        &self.0.timing
    }

    pub fn access(&self) -> &AccessPolicy {
        &self.0.access
    }

    pub fn limits(&self) -> Limits {
        self.0.limits.borrow().clone()
    }

    pub fn rates(&self) -> RateLimits {
        self.0.rates.borrow().clone()
    }

    pub fn metrics(&self) -> &CoreMetrics {
        &self.0.metrics
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.0.clock
    }

    pub fn now_ms(&self) -> i64 {
        self.0.clock.now_ms()
    }

    pub fn is_shutting_down(&self) -> bool {
        self.0.shutdown.is_cancelled()
    }

    /// Resolves when the hub starts shutting down (for tasks outside the
    /// connection table, e.g. the admin firehose).
    pub async fn stopping(&self) {
        self.0.shutdown.cancelled().await;
    }

    // ---- maintenance mode --------------------------------------------------

    pub fn maintenance(&self) -> MaintenanceMode {
        self.0.maintenance.read().clone()
    }

    pub fn in_maintenance(&self) -> bool {
        self.0.maintenance_on.load(Ordering::Acquire)
    }

    /// `Err` while maintenance mode is on; `what` names the refused action ("publishing").
    pub fn check_maintenance(&self, what: &str) -> Result<(), MaintenanceRefusal> {
        if !self.in_maintenance() {
            return Ok(());
        }
        let notice = match &*self.0.maintenance.read() {
            MaintenanceMode::On { message, .. } => message.clone(),
            // Switched off between the two reads.
            MaintenanceMode::Off => return Ok(()),
        };
        Err(MaintenanceRefusal { what: what.to_owned(), notice })
    }

    /// Switches maintenance mode on this node at once, then on every node
    /// through the broker. `Err` means other nodes may not have heard of it.
    pub async fn set_maintenance(&self, mode: MaintenanceMode) -> Result<(), BrokerError> {
        self.apply_maintenance(mode.clone());
        self.0.backplane.broker.control(None, Control::Maintenance(mode)).await.inspect_err(|_| {
            self.0.metrics.broker_errors.inc();
        })
    }

    fn apply_maintenance(&self, mode: MaintenanceMode) {
        let mut current = self.0.maintenance.write();
        self.0.maintenance_on.store(matches!(mode, MaintenanceMode::On { .. }), Ordering::Release);
        if *current != mode {
            tracing::info!(?mode, "maintenance mode changed");
        }
        *current = mode;
    }

    // ---- admin firehose ----------------------------------------------------

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

    fn tap(&self, p: &Arc<Publication>) {
        // One atomic load on the hot path while nobody watches.
        if self.0.tap.readers.load(Ordering::Relaxed) > 0 {
            // No receiver left (raced a drop) is not an error.
            let _ = self.0.tap.tx.send(p.clone());
        }
    }

    pub fn queue_limits(&self) -> QueueLimits {
        self.0.queue_bounds.get()
    }

    /// A new outbound queue, bounded by the current (reloadable) limits.
    pub fn new_outbound(&self) -> Arc<Outbound> {
        Arc::new(Outbound::new(self.0.queue_bounds.clone()))
    }

    // ---- connections -------------------------------------------------------

    /// Takes one token of the node's connect rate; `Err` is the time to wait.
    pub fn admit_connect(&self) -> Result<(), Duration> {
        let (rate, per_node) = {
            let l = self.0.limits.borrow();
            (Rate { per_second: f64::from(l.connects_per_second), burst: l.connects_per_second.max(1) }, l.connections_per_node)
        };
        if self.connection_count() >= per_node {
            return Err(Duration::from_secs(1));
        }
        let now = tokio::time::Instant::now();
        let mut bucket = self.0.connects.lock();
        bucket.get_or_insert_with(|| TokenBucket::new(rate, now)).take(rate, now)
    }

    /// Registers an authenticated connection. Past the per-user limit the
    /// user's oldest connection (on whatever node) is closed with 4004.
    /// The lease exists before the first `.await`, so a caller dropped
    /// midway (a client gone during an SSE handshake) still releases it.
    pub async fn open(&self, identity: Identity, transport: Transport, request_id: Arc<str>, outbound: Arc<Outbound>) -> Result<Lease, OpenError> {
        if self.is_shutting_down() {
            return Err(OpenError::ShuttingDown);
        }
        let (per_node, per_user) = {
            let l = self.0.limits.borrow();
            (l.connections_per_node, l.connections_per_user)
        };
        if self.0.conn_count.fetch_add(1, Ordering::AcqRel) >= per_node {
            self.0.conn_count.fetch_sub(1, Ordering::AcqRel);
            return Err(OpenError::NodeFull);
        }
        let conn = Arc::new(Connection::new(identity, transport, request_id, outbound, self.now_ms()));
        self.0.conns[shard_index(conn.user.as_str())].lock().entry(conn.user.clone()).or_default().push(conn.clone());
        self.0.metrics.connections.get(transport).inc();
        self.0.metrics.connections_opened.get(transport).inc();
        let lease = Lease::new(self.clone(), conn.clone());

        let entry = RegisteredConnection { conn: conn.id, user: conn.user.clone(), node: self.0.node.clone(), since_ms: conn.opened_at_ms };
        match self.0.backplane.registry.register(entry, per_user).await {
            Ok(evicted) => {
                for e in evicted {
                    if e.node == self.0.node {
                        self.close_local(&e.user, e.conn, CloseCode::ConnectionLimit);
                    } else {
                        let msg = Control::Disconnect { user: e.user.clone(), conn: e.conn, code: CloseCode::ConnectionLimit };
                        if let Err(err) = self.0.backplane.broker.control(Some(&e.node), msg).await {
                            self.0.metrics.broker_errors.inc();
                            tracing::warn!(error = %err, node = %e.node, "could not reach the node holding an evicted connection");
                        }
                    }
                }
            }
            Err(err) => {
                // Degraded: the per-user limit holds on this node only until the registry is back.
                self.0.metrics.broker_errors.inc();
                tracing::warn!(error = %err, "connection registry unavailable; per-user limit not enforced cluster-wide");
            }
        }
        Ok(lease)
    }

    /// Releases everything a connection holds: subscriptions, presence,
    /// typing, registry entry, counters. Idempotent; runs for every end.
    pub async fn release(&self, conn: &Arc<Connection>) {
        let (subs, typing, identity) = {
            let mut st = conn.state.lock();
            if st.released {
                return;
            }
            st.released = true;
            (std::mem::take(&mut st.subscriptions), std::mem::take(&mut st.typing), st.identity.clone())
        };
        conn.outbound.close(CloseCode::Normal);
        {
            let mut shard = self.0.conns[shard_index(conn.user.as_str())].lock();
            if let Some(list) = shard.get_mut(&conn.user) {
                list.retain(|c| c.id != conn.id);
                if list.is_empty() {
                    shard.remove(&conn.user);
                }
            }
        }
        self.0.conn_count.fetch_sub(1, Ordering::AcqRel);
        // Typing stops before the user leaves.
        for channel in typing {
            if self.0.typing.stop(&channel, &identity.user_id) {
                self.announce_typing_stopped(&channel, &identity.user_id).await;
            }
        }
        for (_, sub) in subs {
            self.detach(conn, &sub).await;
        }
        if let Err(e) = self.0.backplane.registry.unregister(&conn.user, conn.id).await {
            self.0.metrics.broker_errors.inc();
            tracing::warn!(error = %e, "could not unregister connection");
        }
        let m = &self.0.metrics;
        m.connections.get(conn.transport).dec();
        m.connection_duration.get(conn.transport).observe(conn.age().as_secs_f64());
        m.disconnect(conn.close_reason().unwrap_or(CloseCode::Normal));
    }

    /// Wraps a connection's future (already running in its own task, e.g.
    /// axum's upgrade task): tracked for shutdown, panics caught.
    pub fn supervise_connection<F>(&self, task: &'static str, fut: F) -> impl Future<Output = ()> + Send + 'static + use<F>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let metrics = self.0.metrics.clone();
        self.0.connections.track_future(async move {
            catch_panic(&metrics, task, fut).await;
        })
    }

    /// Spawns a connection's task in its span: tracked for shutdown, panics
    /// caught (and logged in the span).
    pub fn spawn_connection<F>(&self, task: &'static str, span: tracing::Span, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let metrics = self.0.metrics.clone();
        self.0.connections.spawn(
            async move {
                catch_panic(&metrics, task, fut).await;
            }
            .instrument(span),
        );
    }

    pub fn connection_count(&self) -> usize {
        self.0.conn_count.load(Ordering::Acquire)
    }

    pub fn subscription_count(&self) -> usize {
        self.0.sub_count.load(Ordering::Acquire)
    }

    pub fn channel_count(&self) -> usize {
        self.0.channels.iter().map(|s| s.read().len()).sum()
    }

    pub fn typing_count(&self) -> usize {
        self.0.typing.len()
    }

    pub fn limiter_entries(&self) -> usize {
        self.0.user_frames.len() + self.0.user_messages.len() + self.0.user_rest.len()
    }

    /// Sum and maximum of the outbound queue lengths.
    pub fn queue_depths(&self) -> (usize, usize) {
        let mut sum = 0;
        let mut max = 0;
        for shard in self.0.conns.iter() {
            for list in shard.lock().values() {
                for c in list {
                    let n = c.outbound.len();
                    sum += n;
                    max = max.max(n);
                }
            }
        }
        (sum, max)
    }

    pub fn connection(&self, user: &UserId, id: ConnId) -> Option<Arc<Connection>> {
        self.0.conns[shard_index(user.as_str())].lock().get(user)?.iter().find(|c| c.id == id).cloned()
    }

    pub fn user_connections(&self, user: &UserId) -> Vec<Arc<Connection>> {
        self.0.conns[shard_index(user.as_str())].lock().get(user).cloned().unwrap_or_default()
    }

    fn all_connections(&self) -> Vec<Arc<Connection>> {
        let mut out = Vec::with_capacity(self.connection_count());
        for shard in self.0.conns.iter() {
            for list in shard.lock().values() {
                out.extend(list.iter().cloned());
            }
        }
        out
    }

    pub fn connection_infos(&self) -> Vec<ConnectionInfo> {
        let mut v: Vec<ConnectionInfo> = self.all_connections().iter().map(|c| c.info()).collect();
        v.sort_by_key(|c| c.opened_at_ms);
        v
    }

    /// The `limit` oldest connections of this node (oldest first) and how
    /// many there are in all; only the page's details are copied.
    pub fn connection_page(&self, limit: usize) -> (usize, Vec<ConnectionInfo>) {
        let mut all = self.all_connections();
        let total = all.len();
        if limit < total {
            all.select_nth_unstable_by_key(limit, |c| c.opened_at_ms);
            all.truncate(limit);
        }
        all.sort_by_key(|c| c.opened_at_ms);
        (total, all.iter().map(|c| c.info()).collect())
    }

    fn close_local(&self, user: &UserId, id: ConnId, code: CloseCode) -> bool {
        match self.connection(user, id) {
            Some(c) => c.close(code),
            None => false,
        }
    }

    /// Closes every connection of `user` on every node.
    pub async fn disconnect_user(&self, user: &UserId, code: CloseCode) -> Result<(), BrokerError> {
        self.0.backplane.broker.control(None, Control::DisconnectUser { user: user.clone(), code }).await
    }

    /// Closes, on every node, the connections opened with tokens of this login session.
    pub async fn revoke_session(&self, session_id: &str) -> Result<(), BrokerError> {
        self.0.backplane.broker.control(None, Control::RevokeSession { session_id: session_id.to_owned() }).await
    }

    /// Removes `user`'s subscriptions to `channel` on every node (membership revoked).
    pub async fn revoke_subscription(&self, user: &UserId, channel: &ChannelName, reason: &str) -> Result<(), BrokerError> {
        let msg = Control::Unsubscribe { user: user.clone(), channel: channel.clone(), reason: reason.to_owned() };
        self.0.backplane.broker.control(None, msg).await
    }

    fn on_control(&self, control: Control) {
        match control {
            Control::Disconnect { user, conn, code } => {
                self.close_local(&user, conn, code);
            }
            Control::DisconnectUser { user, code } => {
                for c in self.user_connections(&user) {
                    c.close(code);
                }
            }
            Control::RevokeSession { session_id } => {
                for c in self.all_connections() {
                    if c.session_id().as_deref() == Some(session_id.as_str()) {
                        c.close(CloseCode::Revoked);
                    }
                }
            }
            Control::Maintenance(mode) => self.apply_maintenance(mode),
            Control::PresenceExpired { channel, user } => {
                let hub = self.clone();
                self.spawn_task("presence_expired", async move {
                    match hub.0.backplane.presence.is_present(&channel, &user).await {
                        Ok(false) => hub.settle_presence(&channel, &user, false).await,
                        Ok(true) => {}
                        Err(e) => {
                            hub.0.metrics.broker_errors.inc();
                            tracing::warn!(error = %e, %channel, "presence check failed");
                        }
                    }
                });
            }
            Control::Unsubscribe { user, channel, reason } => {
                let targets: Vec<_> = self.user_connections(&user).into_iter().filter(|c| c.subscription(channel.as_str()).is_some()).collect();
                if targets.is_empty() {
                    return;
                }
                let hub = self.clone();
                self.spawn_task("unsubscribe", async move {
                    for conn in targets {
                        hub.server_unsubscribe(&conn, &channel, &reason).await;
                    }
                });
            }
        }
    }

    fn spawn_task<F: Future<Output = ()> + Send + 'static>(&self, task: &'static str, fut: F) {
        let metrics = self.0.metrics.clone();
        self.0.background.spawn(async move {
            catch_panic(&metrics, task, fut).await;
        });
    }

    /// Ends a subscription from the server's side and tells the client why.
    pub(crate) async fn server_unsubscribe(&self, conn: &Arc<Connection>, channel: &ChannelName, reason: &str) {
        if self.unsubscribe(conn, channel).await {
            let push = ControlPush::Unsubscribed {
                channel: channel.to_string(),
                timestamp: timestamp::format_ms(self.now_ms()),
                data: ReasonData { reason: reason.to_owned() },
            };
            // A full queue here means a slow consumer; it is closing anyway.
            let _ = conn.outbound.try_push(Outgoing::Unsubscribed { channel: channel.clone(), frame: encode_control(&push) });
        }
    }

    // ---- subscriptions -----------------------------------------------------

    fn retention(ns: &NamespaceConfig) -> Retention {
        Retention { max_events: ns.history_size, ttl: ns.history_ttl }
    }

    /// Adds a subscription (already authorized) and reads where the stream
    /// stands. The caller sends the reply, then runs the [`FollowUp`].
    pub async fn subscribe(&self, conn: &Arc<Connection>, channel: ChannelName, since: Option<StreamPosition>) -> Result<(SubscribedResult, FollowUp), SubscribeError> {
        let ns = self.0.access.namespace(&channel)?.clone();
        let retention = Self::retention(&ns);
        let sub = Arc::new(Subscription::new(channel.clone(), conn.id, conn.outbound.clone()));
        let max = self.0.limits.borrow().subscriptions_per_connection;
        {
            let mut st = conn.state.lock();
            if st.released {
                return Err(SubscribeError::Closed);
            }
            if st.subscriptions.contains_key(&channel) {
                return Err(SubscribeError::AlreadySubscribed(channel));
            }
            if st.subscriptions.len() >= max {
                return Err(SubscribeError::TooMany(max));
            }
            st.subscriptions.insert(channel.clone(), sub.clone());
        }
        self.0.sub_count.fetch_add(1, Ordering::AcqRel);
        self.0.metrics.subscriptions.inc();

        let setup = async {
            self.attach(&sub).await?;
            let query = match &since {
                Some(pos) => HistoryQuery::Since {
                    position: Position { offset: pos.offset, epoch: Arc::from(pos.epoch.as_str()) },
                    limit: ns.history_size.max(1),
                },
                None => HistoryQuery::Position,
            };
            match self.0.backplane.broker.history(&channel, query, retention).await {
                Ok(HistoryPage { current, publications }) => Ok((current.clone(), SyncStart::Replay { from: since_position(&since, &current), publications })),
                Err(BrokerError::Unrecoverable { current }) => Ok((current.clone(), SyncStart::Failed { current })),
                Err(e) => Err(SubscribeError::Broker(e)),
            }
        };
        let (current, start) = match setup.await {
            Ok(v) => v,
            Err(e) => {
                if self.remove_subscription(conn, &channel).is_some() {
                    self.detach(conn, &sub).await;
                }
                return Err(e);
            }
        };
        let recovered = since.as_ref().map(|_| matches!(start, SyncStart::Replay { .. }));
        if let Some(ok) = recovered {
            self.0.metrics.recovery(if ok { "recovered" } else { "failed" });
        }
        if ns.presence && sub.is_active() {
            self.join_presence(conn, &channel).await;
            // Released meanwhile: its detach may have run before this join.
            if !sub.is_active() {
                self.leave_presence(conn, &channel).await;
            }
        }
        let result = SubscribedResult { channel: channel.to_string(), offset: current.offset, epoch: current.epoch.to_string(), recovered };
        Ok((result, FollowUp { sub, request_id: conn.request_id.clone(), start, retention }))
    }

    /// Runs a subscription's follow-up in a task of its own, beside the
    /// connection's reader, so a long replay never holds up the client's
    /// frames (pongs, `refresh`, other commands).
    pub fn spawn_follow_up(&self, follow_up: FollowUp) {
        let hub = self.clone();
        let sub = follow_up.sub.clone();
        let span = tracing::info_span!(parent: None, "follow_up", request_id = %follow_up.request_id, channel = %sub.channel);
        self.spawn_sync("follow_up", &sub, span, async move { hub.run_follow_up(follow_up).await });
    }

    /// Spawns work that brings a subscription up to date, in its span. A
    /// panic there closes the connection with 1011: the subscription would
    /// otherwise stay behind for good.
    fn spawn_sync<F: Future<Output = ()> + Send + 'static>(&self, task: &'static str, sub: &Arc<Subscription>, span: tracing::Span, fut: F) {
        let metrics = self.0.metrics.clone();
        let outbound = sub.outbound().clone();
        self.0.connections.spawn(
            async move {
                if catch_panic(&metrics, task, fut).await.is_none() {
                    outbound.close(CloseCode::InternalError);
                }
            }
            .instrument(span),
        );
    }

    /// Sends the replay (or `recovery_failed`), then catches up and goes live.
    /// Stops once the subscription ends; nothing of it is queued after that.
    pub async fn run_follow_up(&self, follow_up: FollowUp) {
        let FollowUp { sub, start, retention, .. } = follow_up;
        let at = match start {
            SyncStart::Replay { mut from, publications } => {
                for p in publications {
                    if p.offset <= from.offset {
                        continue;
                    }
                    let offset = p.offset;
                    if !self.push_replayed(&sub, p).await {
                        return;
                    }
                    from.offset = offset;
                }
                from
            }
            SyncStart::Failed { current } => {
                if !self.push_recovery_failed(&sub, &current).await {
                    return;
                }
                current
            }
        };
        self.catch_up(&sub, at, retention).await;
    }

    async fn push_recovery_failed(&self, sub: &Subscription, current: &Position) -> bool {
        let push = ControlPush::RecoveryFailed {
            channel: sub.channel.to_string(),
            offset: current.offset,
            epoch: current.epoch.to_string(),
            timestamp: timestamp::format_ms(self.now_ms()),
            data: ReasonData { reason: "missed events are no longer in history; refetch, then continue from this position".into() },
        };
        let item = Outgoing::RecoveryFailed { channel: sub.channel.clone(), position: current.clone(), frame: encode_control(&push) };
        matches!(sub.outbound().push_paced_while(item, || sub.is_active()).await, Ok(true))
    }

    /// Queues one event from history, paced; false once the subscription or
    /// its connection has ended.
    async fn push_replayed(&self, sub: &Subscription, p: Arc<Publication>) -> bool {
        let event = p.event;
        let queued = matches!(sub.outbound().push_paced_while(Outgoing::Event(p), || sub.is_active()).await, Ok(true));
        if queued {
            self.0.metrics.events_out.inc_by(event, 1);
        }
        queued
    }

    /// Reads history until the subscription has everything it saw go by, then
    /// flips it live.
    async fn catch_up(&self, sub: &Arc<Subscription>, mut at: Position, retention: Retention) {
        let mut failures = 0u32;
        let mut empty_rounds = 0u32;
        loop {
            if !sub.is_active() || sub.try_go_live(&at) {
                return;
            }
            let query = HistoryQuery::Since { position: at.clone(), limit: retention.max_events.max(1) };
            match self.0.backplane.broker.history(&sub.channel, query, retention).await {
                Ok(page) => {
                    failures = 0;
                    if page.publications.is_empty() {
                        // Seen something history does not have yet; never spin forever.
                        empty_rounds += 1;
                        if empty_rounds > 50 {
                            sub.outbound().close(CloseCode::InsufficientState);
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                    empty_rounds = 0;
                    for p in page.publications {
                        let offset = p.offset;
                        if !self.push_replayed(sub, p).await {
                            return;
                        }
                        at.offset = offset;
                    }
                }
                Err(BrokerError::Unrecoverable { current }) => {
                    self.0.metrics.recovery("failed");
                    if !self.push_recovery_failed(sub, &current).await {
                        return;
                    }
                    at = current;
                }
                Err(BrokerError::Unavailable(e)) => {
                    self.0.metrics.broker_errors.inc();
                    failures += 1;
                    if failures > 5 {
                        tracing::warn!(error = %e, channel = %sub.channel, "cannot catch up a subscription; closing its connection");
                        sub.outbound().close(CloseCode::InsufficientState);
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100 << failures)).await;
                }
            }
        }
    }

    /// Ends a subscription; true if there was one.
    pub async fn unsubscribe(&self, conn: &Arc<Connection>, channel: &ChannelName) -> bool {
        let Some(sub) = self.remove_subscription(conn, channel) else { return false };
        // Typing stops before the user leaves.
        let stopped = {
            let mut st = conn.state.lock();
            let before = st.typing.len();
            st.typing.retain(|c| c != channel);
            before != st.typing.len()
        };
        if stopped && self.0.typing.stop(channel, &conn.user) {
            self.announce_typing_stopped(channel, &conn.user).await;
        }
        self.detach(conn, &sub).await;
        true
    }

    fn remove_subscription(&self, conn: &Connection, channel: &ChannelName) -> Option<Arc<Subscription>> {
        conn.state.lock().subscriptions.remove(channel)
    }

    /// Puts the subscription in the channel's fan-out list and makes sure the
    /// broker delivers the channel to this node.
    async fn attach(&self, sub: &Arc<Subscription>) -> Result<(), BrokerError> {
        let gate = {
            let mut shard = self.0.channels[shard_index(sub.channel.as_str())].write();
            let entry = shard.entry(sub.channel.clone()).or_insert_with(|| ChannelEntry {
                subscribers: HashMap::new(),
                gate: Arc::new(tokio::sync::Mutex::new(false)),
            });
            entry.subscribers.insert(sub.conn, sub.clone());
            // A release that raced this subscribe has already detached it; undo the insert.
            if !sub.is_active() {
                entry.subscribers.remove(&sub.conn);
            }
            entry.gate.clone()
        };
        let mut listening = gate.lock().await;
        if !*listening {
            // Marked first: if this future is dropped mid-call, the cleanup
            // pass still unlistens (unlisten is idempotent).
            *listening = true;
            if let Err(e) = self.0.backplane.broker.listen(&self.0.node, &sub.channel).await {
                *listening = false;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Takes the subscription out of fan-out and presence. The channel entry
    /// stays until the cleanup pass unlistens it.
    async fn detach(&self, conn: &Arc<Connection>, sub: &Arc<Subscription>) {
        sub.deactivate();
        {
            let mut shard = self.0.channels[shard_index(sub.channel.as_str())].write();
            if let Some(entry) = shard.get_mut(&sub.channel) {
                entry.subscribers.remove(&sub.conn);
            }
        }
        self.0.sub_count.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.subscriptions.dec();
        if self.0.access.namespace(&sub.channel).map(|ns| ns.presence).unwrap_or(false) {
            self.leave_presence(conn, &sub.channel).await;
        }
    }

    async fn join_presence(&self, conn: &Connection, channel: &ChannelName) {
        let entry = PresenceEntry { conn: conn.id, user: conn.user.clone(), node: self.0.node.clone() };
        match self.0.backplane.presence.join(channel, entry).await {
            Ok(true) => self.settle_presence(channel, &conn.user, true).await,
            Ok(false) => {}
            Err(e) => {
                self.0.metrics.broker_errors.inc();
                tracing::warn!(error = %e, %channel, "presence join failed");
            }
        }
    }

    async fn leave_presence(&self, conn: &Connection, channel: &ChannelName) {
        match self.0.backplane.presence.leave(channel, conn.id, &conn.user).await {
            Ok(true) => self.settle_presence(channel, &conn.user, false).await,
            Ok(false) => {}
            Err(e) => {
                self.0.metrics.broker_errors.inc();
                tracing::warn!(error = %e, %channel, "presence leave failed");
            }
        }
    }

    /// Announces that a user's presence changed, then makes sure the channel's
    /// last presence event agrees with the store. Two connections of one user
    /// (on one node or two) joining and leaving at once can publish their
    /// events in the opposite order of their store changes; whoever publishes
    /// last reads the settled state afterwards and corrects the channel.
    /// Presence events are therefore state announcements and may repeat.
    async fn settle_presence(&self, channel: &ChannelName, user: &UserId, mut present: bool) {
        for _ in 0..SETTLE_ROUNDS {
            let event = if present { EventType::PresenceJoined } else { EventType::PresenceLeft };
            self.announce(channel, event, user, None).await;
            match self.0.backplane.presence.is_present(channel, user).await {
                Ok(now) if now != present => present = now,
                Ok(_) => return,
                Err(e) => {
                    self.0.metrics.broker_errors.inc();
                    tracing::warn!(error = %e, %channel, "presence check failed");
                    return;
                }
            }
        }
    }

    /// Announces a typing change (`Some(expiry)`: started or renewed), then
    /// checks the tracker as presence does with its store: a start racing a
    /// stop (two connections, or the expiry pass) ends with the event that
    /// matches the tracker.
    async fn settle_typing(&self, channel: &ChannelName, user: &UserId, mut expires_at_ms: Option<i64>) {
        for _ in 0..SETTLE_ROUNDS {
            let event = if expires_at_ms.is_some() { EventType::TypingStarted } else { EventType::TypingStopped };
            self.announce(channel, event, user, expires_at_ms).await;
            let left = self.0.typing.remaining(channel, user, tokio::time::Instant::now());
            if left.is_some() == expires_at_ms.is_some() {
                return;
            }
            expires_at_ms = left.map(|d| self.now_ms().saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)));
        }
    }

    pub async fn presence(&self, channel: &ChannelName) -> Result<Vec<PresenceUser>, BrokerError> {
        Ok(self
            .0
            .backplane
            .presence
            .list(channel)
            .await?
            .into_iter()
            .map(|p| PresenceUser { user_id: p.user.to_string(), connections: p.connections })
            .collect())
    }

    /// Publishes a presence or typing event; failures are logged, not returned,
    /// because they must not fail the operation that caused them.
    async fn announce(&self, channel: &ChannelName, event: EventType, user: &UserId, expires_at_ms: Option<i64>) {
        #[derive(serde::Serialize)]
        struct UserEvent<'a> {
            user_id: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            expires_at: Option<String>,
        }
        let data = UserEvent { user_id: user.as_str(), expires_at: expires_at_ms.map(timestamp::format_ms) };
        let Ok(payload) = Payload::from_value(&data) else { return };
        if let Err(e) = self.publish(channel, Draft::new(event, payload)).await {
            tracing::warn!(error = %e, %channel, event = event.as_str(), "could not announce");
        }
    }

    async fn announce_typing_stopped(&self, channel: &ChannelName, user: &UserId) {
        self.settle_typing(channel, user, None).await;
    }

    // ---- publishing and fan-out --------------------------------------------

    /// Appends an event to a channel's stream; every subscriber on every node receives it.
    pub async fn publish(&self, channel: &ChannelName, mut draft: Draft) -> Result<Arc<Publication>, PublishError> {
        let retention = Self::retention(self.0.access.namespace(channel)?);
        let event = draft.event;
        draft.origin = Some(self.0.node.clone());
        let p = self.0.backplane.broker.publish(channel, draft, retention).await.inspect_err(|_| {
            self.0.metrics.broker_errors.inc();
        })?;
        self.0.metrics.events_in.inc_by(event, 1);
        self.tap(&p);
        Ok(p)
    }

    /// Reads retained events of a channel.
    pub async fn history(&self, channel: &ChannelName, query: HistoryQuery) -> Result<HistoryPage, PublishError> {
        let retention = Self::retention(self.0.access.namespace(channel)?);
        Ok(self.0.backplane.broker.history(channel, query, retention).await?)
    }

    /// Delivers one broker publication to the local subscribers of its channel.
    fn fan_out(&self, p: &Arc<Publication>) {
        // Events published here were tapped by `publish`.
        if p.origin.as_ref() != Some(&self.0.node) {
            self.tap(p);
        }
        let lag_ms = self.now_ms().saturating_sub(p.time_ms).max(0);
        self.0.metrics.delivery_lag.observe(lag_ms as f64 / 1000.0);
        let mut queued = 0u64;
        let mut gaps: Vec<Arc<Subscription>> = Vec::new();
        {
            let shard = self.0.channels[shard_index(p.channel.as_str())].read();
            let Some(entry) = shard.get(&p.channel) else { return };
            if !entry.subscribers.is_empty() {
                // Encode once, before the loop, for every subscriber to share.
                let _ = p.frame();
            }
            for sub in entry.subscribers.values() {
                match sub.deliver(p) {
                    Delivery::Queued => queued += 1,
                    Delivery::Gap => gaps.push(sub.clone()),
                    Delivery::Duplicate | Delivery::Deferred | Delivery::Overflow | Delivery::Closed => {}
                }
            }
        }
        self.0.metrics.events_out.inc_by(p.event, queued);
        for sub in gaps {
            let Ok(ns) = self.0.access.namespace(&sub.channel) else { continue };
            let retention = Self::retention(ns);
            // The catch-up starts from the last position queued before the gap.
            let Some(at) = sub.last_position() else { continue };
            let hub = self.clone();
            let task_sub = sub.clone();
            let span = tracing::info_span!(parent: None, "resync", conn = %sub.conn, channel = %sub.channel);
            self.spawn_sync("resync", &sub, span, async move { hub.catch_up(&task_sub, at, retention).await });
        }
    }

    // ---- typing ------------------------------------------------------------

    pub async fn typing(&self, conn: &Arc<Connection>, channel: &ChannelName, active: bool) -> Result<(), TypingError> {
        let ns = self.0.access.namespace(channel).map_err(PublishError::from)?;
        if !ns.typing {
            return Err(TypingError::Disabled(channel.namespace().to_owned()));
        }
        if conn.subscription(channel.as_str()).is_none() {
            return Err(TypingError::NotSubscribed(channel.clone()));
        }
        if !active {
            conn.state.lock().typing.retain(|c| c != channel);
            if self.0.typing.stop(channel, &conn.user) {
                self.announce_typing_stopped(channel, &conn.user).await;
            }
            return Ok(());
        }
        let ttl = self.0.timing.typing_ttl;
        let cap = self.0.limits.borrow().typing_entries;
        let change = self.0.typing.start(channel, &conn.user, ttl, cap, tokio::time::Instant::now()).map_err(|_| TypingError::Full)?;
        {
            let mut st = conn.state.lock();
            if !st.typing.contains(channel) {
                st.typing.push(channel.clone());
            }
        }
        if matches!(change, TypingChange::Started | TypingChange::Renewed) {
            let expires = self.now_ms().saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
            self.settle_typing(channel, &conn.user, Some(expires)).await;
        }
        Ok(())
    }

    /// Ends a user's typing indicator (e.g. when they send the message).
    pub async fn stop_typing(&self, channel: &ChannelName, user: &UserId) {
        if self.0.typing.stop(channel, user) {
            self.announce_typing_stopped(channel, user).await;
        }
    }

    // ---- background passes -------------------------------------------------

    /// Unlistens empty channels, sweeps the broker. (Stale connections are
    /// closed by their transports, which see their own reads and writes.)
    pub async fn cleanup(&self) {
        self.unlisten_empty_channels().await;
        self.0.backplane.broker.sweep().await;
        self.0.metrics.channels.set(i64::try_from(self.channel_count()).unwrap_or(i64::MAX));
    }

    async fn unlisten_empty_channels(&self) {
        for shard in self.0.channels.iter() {
            let empty: Vec<(ChannelName, Arc<tokio::sync::Mutex<bool>>)> =
                shard.read().iter().filter(|(_, e)| e.subscribers.is_empty()).map(|(n, e)| (n.clone(), e.gate.clone())).collect();
            for (name, gate) in empty {
                let mut listening = gate.lock().await;
                let still_empty = shard.read().get(&name).is_some_and(|e| e.subscribers.is_empty());
                if !still_empty {
                    continue;
                }
                if *listening {
                    if let Err(e) = self.0.backplane.broker.unlisten(&self.0.node, &name).await {
                        self.0.metrics.broker_errors.inc();
                        tracing::warn!(error = %e, channel = %name, "unlisten failed; will retry");
                        continue;
                    }
                    *listening = false;
                }
                let mut w = shard.write();
                if w.get(&name).is_some_and(|e| e.subscribers.is_empty() && Arc::ptr_eq(&e.gate, &gate)) {
                    w.remove(&name);
                }
            }
        }
    }

    /// Token expiry and typing expiry; runs every second.
    async fn expire(&self) {
        let now = self.now_ms();
        for c in self.all_connections() {
            if c.deadline_ms().is_some_and(|t| t <= now) {
                c.close(CloseCode::TokenExpired);
            }
        }
        for (channel, user) in self.0.typing.expire(tokio::time::Instant::now()) {
            for c in self.user_connections(&user) {
                c.state.lock().typing.retain(|ch| ch != &channel);
            }
            self.announce_typing_stopped(&channel, &user).await;
        }
    }

    /// Drops limiter entries idle past the configured time.
    pub fn sweep_limiters(&self) -> usize {
        let idle = self.0.rates.borrow().limiter_idle;
        let now = tokio::time::Instant::now();
        self.0.user_frames.sweep(idle, now) + self.0.user_messages.sweep(idle, now) + self.0.user_rest.sweep(idle, now)
    }

    /// Checks a per-user limit (`frames` or `messages`).
    pub fn check_user_rate(&self, limiter: UserLimiter, user: &UserId) -> Result<(), Refusal> {
        let (rate, cap) = {
            let r = self.0.rates.borrow();
            let cap = self.0.limits.borrow().limiter_entries;
            let rate = match limiter {
                UserLimiter::Frames => Rate { per_second: r.user_frames_per_second, burst: r.user_frames_burst },
                UserLimiter::Messages => Rate::per_minute(r.messages_per_minute, r.messages_burst),
                UserLimiter::Rest => Rate::per_minute(r.rest_per_minute, r.rest_burst),
            };
            (rate, cap)
        };
        let l = match limiter {
            UserLimiter::Frames => &self.0.user_frames,
            UserLimiter::Messages => &self.0.user_messages,
            UserLimiter::Rest => &self.0.user_rest,
        };
        let result = l.check(user, rate, cap, tokio::time::Instant::now());
        if result.is_err() {
            self.0.metrics.rate_limited(limiter.label());
        }
        result
    }

    // ---- health and shutdown -----------------------------------------------

    pub fn broker_health(&self) -> Health {
        self.0.backplane.broker.health()
    }

    pub fn backplane(&self) -> &Backplane {
        &self.0.backplane
    }

    /// Stops accepting, asks every connection to reconnect (1012), and stops
    /// background tasks. Await [`Hub::drained`] afterwards.
    pub fn shutdown(&self) {
        self.0.shutdown.cancel();
        for c in self.all_connections() {
            c.close(CloseCode::ServiceRestart);
        }
    }

    /// Waits until every connection task and background task has ended.
    pub async fn drained(&self) {
        self.0.connections.close();
        self.0.background.close();
        self.0.connections.wait().await;
        self.0.background.wait().await;
        self.0.backplane.broker.detach(&self.0.node).await;
    }

    /// Registers the gauges computed at scrape time (queue depths, map sizes).
    pub fn register_gauges(&self, registry: &mut prometheus_client::registry::Registry) {
        let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        let hub = |f: fn(&Hub) -> usize| {
            let h = self.clone();
            move || n(f(&h))
        };
        let b = &self.0.backplane;
        let (broker, presence, registered) = (b.broker.clone(), b.presence.clone(), b.registry.clone());
        crate::metrics::ScrapeGauges::default()
            .with("outbound_queued", "Events waiting in outbound queues on this node", hub(|h| h.queue_depths().0))
            .with("outbound_queue_max", "Longest outbound queue on this node", hub(|h| h.queue_depths().1))
            .with("limiter_entries", "Entries in the per-user rate limiters", hub(Hub::limiter_entries))
            .with("typing_indicators", "Typing indicators tracked on this node", hub(Hub::typing_count))
            .with("tasks", "Connection and background tasks running", hub(Hub::task_count))
            .with("broker_streams", "Channel streams held by the broker", move || n(broker.streams()))
            .with("presence_channels", "Channels with presence entries", move || n(presence.channels()))
            .with("registered_users", "Users with registered connections", move || n(registered.users()))
            .register(registry);
    }

    /// Tasks still running (connections plus background), for metrics and tests.
    pub fn task_count(&self) -> usize {
        self.0.connections.len() + self.0.background.len()
    }
}

/// Holds a connection open in the hub; releasing it (explicitly with
/// [`Lease::end`], or by dropping it, e.g. when a task unwinds) frees
/// everything the connection holds.
pub struct Lease {
    hub: Hub,
    conn: Option<Arc<Connection>>,
}

impl Lease {
    pub fn new(hub: Hub, conn: Arc<Connection>) -> Self {
        Self { hub, conn: Some(conn) }
    }

    pub fn connection(&self) -> Option<&Arc<Connection>> {
        self.conn.as_ref()
    }

    pub async fn end(mut self) {
        if let Some(conn) = self.conn.take() {
            self.hub.release(&conn).await;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let hub = self.hub.clone();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                let span = tracing::info_span!(parent: None, "release", request_id = %conn.request_id);
                handle.spawn(async move { hub.release(&conn).await }.instrument(span));
            }
        }
    }
}

/// Which per-user limiter to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserLimiter {
    /// Frames (and SSE commands) per user.
    Frames,
    /// Chat messages and client publications per user.
    Messages,
    /// REST requests per user.
    Rest,
}

impl UserLimiter {
    pub fn label(self) -> &'static str {
        match self {
            UserLimiter::Frames => "user_frames",
            UserLimiter::Messages => "user_messages",
            UserLimiter::Rest => "user_rest",
        }
    }
}

fn queue_limits(l: &Limits) -> QueueLimits {
    QueueLimits { max_items: l.outbound_queue_messages, max_bytes: l.outbound_queue_bytes }
}

fn since_position(since: &Option<StreamPosition>, current: &Position) -> Position {
    match since {
        Some(s) => Position { offset: s.offset, epoch: current.epoch.clone() },
        None => current.clone(),
    }
}
