//! The hub: this node's connections, their subscriptions and the fan-out of
//! broker deliveries to them.
//!
//! One `Hub` type, its methods grouped by seam, one file each:
//! - [`connections`]: opening and releasing connections ([`Lease`]) and the
//!   connection table; [`control`]: messages to and from other nodes
//!   (disconnects, revocations, server-side unsubscribes);
//! - [`admission`]: the node's connection limit and connect rate, and the
//!   per-user rate limiters, in one component;
//! - [`subscriptions`]: subscribe, unsubscribe and the channel fan-out lists;
//!   [`follow_up`]: the replay after a `subscribe` and the catch-up that
//!   makes a subscription live;
//! - [`publish`]: publishing, history and fan-out of broker deliveries;
//! - [`presence`]: presence and typing announcements;
//! - [`maintenance`]: this node's copy of the maintenance switch;
//! - [`firehose`]: the admin firehose tap;
//! - [`background`]: the periodic passes (cleanup, expiry, limiter sweep,
//!   queue bounds following reloads) and scrape-time gauges;
//! - [`shutdown`]: shutdown and drain.
//!
//! Locks are plain `parking_lot` locks held only for map operations; no lock
//! is held across an `.await`. Broker listen/unlisten per channel is ordered
//! by a per-channel async gate so a node never stops listening to a channel
//! that has local subscribers.

mod admission;
mod background;
mod connections;
mod control;
mod firehose;
mod follow_up;
mod maintenance;
mod presence;
mod publish;
mod shutdown;
mod subscriptions;

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Weak};

use chorus_protocol::ChannelName;
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::AccessPolicy;
use crate::broker::{Backplane, BrokerError, Control, Health, NodeSink};
use chorus_clock::Clock;
use crate::config::{Limits, RateLimits, Timing};
use crate::connection::Connection;
use crate::ids::{ConnId, NodeId, UserId};
use crate::maintenance::MaintenanceSwitch;
use crate::metrics::CoreMetrics;
use crate::outbound::QueueBounds;
use crate::publication::Publication;
use crate::subscription::Subscription;
use crate::typing::TypingTracker;

pub use admission::{ConnectRefusal, UserLimiter};
pub use connections::{Lease, OpenError};
pub use control::RunControls;
pub use firehose::{FIREHOSE_BUFFER, Firehose, FirehoseItem};
pub use follow_up::FollowUp;
pub use presence::TypingError;
pub use publish::PublishError;
pub use subscriptions::SubscribeError;

use admission::Admission;
use firehose::Tap;

const SHARDS: usize = 64;

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
    sub_count: AtomicUsize,
    typing: TypingTracker,
    admission: Admission,
    /// Shared by every outbound queue; follows reloads of `limits`.
    queue_bounds: Arc<QueueBounds>,
    maintenance: MaintenanceSwitch,
    tap: Arc<Tap>,
    /// Where run controls from other nodes go (the agent runtime).
    run_controls: RwLock<Option<std::sync::Weak<dyn RunControls>>>,
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

/// Where the broker delivers to this hub; holds it weakly, so a hub that is
/// gone is simply not delivered to.
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
        let queue_bounds = QueueBounds::new(background::queue_limits(&parts.limits.borrow()));
        let admission = Admission::new(parts.limits.clone(), parts.rates.clone(), parts.metrics.clone());
        let inner = Arc::new(HubInner {
            node: parts.config.node,
            timing: parts.config.timing,
            access: parts.access,
            limits: parts.limits,
            rates: parts.rates,
            backplane: parts.backplane,
            channels: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            conns: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            sub_count: AtomicUsize::new(0),
            typing: TypingTracker::default(),
            admission,
            queue_bounds,
            maintenance: MaintenanceSwitch::default(),
            tap: Arc::new(Tap::new()),
            run_controls: RwLock::new(None),
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

    pub fn backplane(&self) -> &Backplane {
        &self.0.backplane
    }

    pub fn broker_health(&self) -> Health {
        self.0.backplane.broker.health()
    }
}
