//! Opening, releasing and closing connections; limits; supervised tasks.
//! What goes through the broker (the registry, releases, the per-user limit
//! across hubs) runs on every engine; the limits and background passes that
//! are the hub's own run on paused time over the in-memory engine, since a
//! real Redis cannot follow paused time and they do not touch the engine.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chorus_core::broker::memory::MemoryBroker;
use chorus_core::broker::{Backplane, BrokerError, ConnectionRegistry, RegisteredConnection};
use chorus_core::config::{Limits, RateLimits, Timing};
use chorus_core::hub::{ConnectRefusal, UserLimiter};
use chorus_core::outbound::{Outgoing, PushError, QueueLimits};
use chorus_core::{ConnId, Flow, Transport, UserId};
use chorus_protocol::CloseCode;
use serde_json::json;

use crate::common::*;
use crate::engines::{Deployment, eventually, every_engine};
use chorus_clock::Clock as _;

every_engine!(
    an_open_dropped_midway_releases_the_connection,
    ending_a_session_releases_everything_it_held,
    the_oldest_connection_goes_across_hubs_whatever_their_clocks,
);

/// A registry that never answers, so `open` can be dropped mid-await.
struct Stuck(Arc<dyn ConnectionRegistry>);

#[async_trait]
impl ConnectionRegistry for Stuck {
    async fn register(&self, _: RegisteredConnection, _: usize) -> Result<Vec<RegisteredConnection>, BrokerError> {
        std::future::pending().await
    }

    async fn unregister(&self, user: &UserId, conn: ConnId) -> Result<(), BrokerError> {
        self.0.unregister(user, conn).await
    }

    async fn connections(&self, user: &UserId) -> Result<Vec<RegisteredConnection>, BrokerError> {
        self.0.connections(user).await
    }

    fn users(&self) -> usize {
        self.0.users()
    }
}

async fn an_open_dropped_midway_releases_the_connection(d: Deployment) {
    let id = chorus_core::NodeId::random();
    let engine = d.backplane(&id).await;
    let backplane = Backplane { broker: engine.broker, presence: engine.presence, registry: Arc::new(Stuck(engine.registry)) };
    let n = d.node_with(NodeOptions { id, backplane: Some(backplane), clock: d.clock.clone(), ..Default::default() }).await;
    let identity = n.executor.authenticate(&token("alice", &[])).await.unwrap();
    let hub = n.hub.clone();
    let opening = tokio::spawn(async move { hub.open(identity, Transport::Sse, Arc::from("r"), hub.new_outbound()).await.map(|_| ()) });
    eventually("registered locally, waiting for the registry", || n.hub.connection_count() == 1).await;
    opening.abort();
    let _ = opening.await;
    eventually("released", || n.hub.connection_count() == 0).await;
    assert!(n.hub.user_connections(&UserId::new("alice")).is_empty());
}

async fn ending_a_session_releases_everything_it_held(d: Deployment) {
    let n = d.node().await;
    let mut c = Client::open(&n, &token("alice", &["room:a"])).await;
    c.request(json!({"type": "subscribe", "channel": "room:a"})).await;
    c.request(json!({"type": "subscribe", "channel": "chat:b"})).await;
    c.request(json!({"type": "typing", "channel": "chat:b"})).await;
    assert_eq!((n.hub.connection_count(), n.hub.subscription_count(), n.hub.typing_count()), (1, 2, 1));
    // Dropped without `end`, as when its task unwinds.
    drop(c);
    let counts = || (n.hub.connection_count(), n.hub.subscription_count(), n.hub.typing_count());
    eventually("the release", || counts() == (0, 0, 0) && n.hub.backplane().presence.channels() == 0 && n.hub.backplane().registry.users() == 0).await;
    assert_eq!(n.hub.backplane().presence.channels(), 0);
    assert_eq!(n.hub.backplane().registry.users(), 0);
    n.hub.cleanup().await;
    assert_eq!(n.hub.channel_count(), 0, "empty channels are unlistened by the cleanup pass");
}

/// The two-hub seam test of the per-user limit.
async fn the_oldest_connection_goes_across_hubs_whatever_their_clocks(d: Deployment) {
    let a = d.node().await;
    // Node B's clock runs an hour behind: its connections look older by time.
    let (id, behind) = (chorus_core::NodeId::random(), chorus_clock::ManualClock::starting_at(d.clock.now_ms() - 3_600_000));
    let backplane = d.backplane(&id).await;
    let b = d.node_with(NodeOptions { id, backplane: Some(backplane), clock: behind, ..Default::default() }).await;
    let first = Client::open(&a, &token("alice", &[])).await;
    let second = Client::open(&a, &token("alice", &[])).await;
    let third = Client::open(&b, &token("alice", &[])).await;
    let fourth = Client::open(&b, &token("alice", &[])).await;
    eventually("the oldest closed", || first.outbound.closed().is_some()).await;
    assert_eq!(first.outbound.closed(), Some(CloseCode::ConnectionLimit), "the first registered is the oldest");
    for c in [&second, &third, &fourth] {
        assert_eq!(c.outbound.closed(), None);
    }
}

#[tokio::test(start_paused = true)]
async fn reloaded_queue_bounds_apply_to_open_connections() {
    let n = node(NodeOptions::default()).await;
    let c = Client::open(&n, &token("alice", &[])).await;
    assert_eq!(n.hub.queue_limits(), QueueLimits { max_items: 50, max_bytes: 1024 * 1024 });
    n.limits.send_modify(|l| l.outbound_queue_messages = 3);
    settle().await;
    let item = || Outgoing::Reply(bytes::Bytes::from_static(b"{}"));
    for _ in 0..3 {
        c.outbound.try_push(item()).unwrap();
    }
    assert_eq!(c.outbound.try_push(item()), Err(PushError::Full));
    assert_eq!(c.outbound.closed(), Some(CloseCode::SlowConsumer));
}

#[tokio::test(start_paused = true)]
async fn a_refused_connect_closes_with_a_code_that_says_whether_to_retry() {
    let n = node(NodeOptions::default()).await;
    let mut bad = Client::unopened(&n);
    assert_eq!(bad.send(json!({"type": "connect", "token": "forged"})).await.1, Flow::Close(CloseCode::Unauthorized));
    assert_eq!(bad.frame().await["error"]["error"], "unauthorized");
    let mut unreachable = Client::unopened(&n);
    assert_eq!(unreachable.send(json!({"type": "connect", "token": "unavailable"})).await.1, Flow::Close(CloseCode::TryAgainLater));

    n.limits.send_modify(|l| l.connections_per_node = 1);
    let _holder = Client::open(&n, &token("holder", &[])).await;
    let mut late = Client::unopened(&n);
    assert_eq!(late.send(json!({"type": "connect", "token": token("late", &[])})).await.1, Flow::Close(CloseCode::TryAgainLater));
    assert_eq!(late.frame().await["error"]["error"], "unavailable");

    n.hub.shutdown();
    let mut during_shutdown = Client::unopened(&n);
    assert_eq!(during_shutdown.send(json!({"type": "connect", "token": token("x", &[])})).await.1, Flow::Close(CloseCode::ServiceRestart));
}

#[tokio::test(start_paused = true)]
async fn oversize_frames_get_replies_then_close_as_abuse() {
    let n = node(NodeOptions { limits: Limits { frame_bytes: 100, ..Limits::default() }, ..Default::default() }).await;
    let mut c = Client::open(&n, &token("alice", &[])).await;
    let big = json!({"type": "ping", "pad": "x".repeat(200)});
    for _ in 0..20 {
        assert_eq!(c.send(big.clone()).await.1, Flow::Continue);
        assert_eq!(c.frame().await["error"]["error"], "frame_too_large");
    }
    assert_eq!(c.send(big).await.1, Flow::Close(CloseCode::ProtocolViolation));
}

/// A broker whose sweep panics on its first call.
struct PanicsOnce {
    inner: Arc<MemoryBroker>,
    sweeps: AtomicU32,
}

#[async_trait]
impl chorus_core::broker::Broker for PanicsOnce {
    async fn publish(
        &self,
        channel: &chorus_protocol::ChannelName,
        draft: chorus_core::publication::Draft,
        retention: chorus_core::broker::Retention,
    ) -> Result<Arc<chorus_core::publication::Publication>, BrokerError> {
        self.inner.publish(channel, draft, retention).await
    }

    async fn history(
        &self,
        channel: &chorus_protocol::ChannelName,
        query: chorus_core::broker::HistoryQuery,
        retention: chorus_core::broker::Retention,
    ) -> Result<chorus_core::broker::HistoryPage, BrokerError> {
        self.inner.history(channel, query, retention).await
    }

    async fn attach(&self, node: &chorus_core::NodeId, sink: Arc<dyn chorus_core::broker::NodeSink>) -> Result<(), BrokerError> {
        self.inner.attach(node, sink).await
    }

    async fn detach(&self, node: &chorus_core::NodeId) {
        self.inner.detach(node).await;
    }

    async fn listen(&self, node: &chorus_core::NodeId, channel: &chorus_protocol::ChannelName) -> Result<(), BrokerError> {
        self.inner.listen(node, channel).await
    }

    async fn unlisten(&self, node: &chorus_core::NodeId, channel: &chorus_protocol::ChannelName) -> Result<(), BrokerError> {
        self.inner.unlisten(node, channel).await
    }

    async fn control(&self, target: Option<&chorus_core::NodeId>, control: chorus_core::broker::Control) -> Result<(), BrokerError> {
        self.inner.control(target, control).await
    }

    async fn live_nodes(&self) -> Result<Vec<chorus_core::NodeId>, BrokerError> {
        self.inner.live_nodes().await
    }

    async fn sweep(&self) {
        if self.sweeps.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("injected sweep failure");
        }
        self.inner.sweep().await;
    }

    fn health(&self) -> chorus_core::broker::Health {
        self.inner.health()
    }

    fn streams(&self) -> usize {
        self.inner.streams()
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_background_pass_is_counted_and_restarted() {
    let clock = chorus_clock::ManualClock::starting_at(T0);
    let (memory, _) = memory_backplane(&clock);
    let broker = Arc::new(PanicsOnce { inner: memory.clone(), sweeps: AtomicU32::new(0) });
    let backplane = Backplane { broker: broker.clone(), presence: memory.clone(), registry: memory };
    let timing = Timing { cleanup_interval: Duration::from_secs(1), ..Timing::default() };
    let n = node(NodeOptions { backplane: Some(backplane), timing, clock, ..Default::default() }).await;
    let mut c = Client::open(&n, &token("alice", &[])).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(broker.sweeps.load(Ordering::SeqCst) >= 3, "restarted after the panic and sweeping again");
    let panics = n.hub.metrics().panics.get_or_create(&vec![("task", "cleanup".into())]).get();
    assert_eq!(panics, 1);
    assert_eq!(c.request(json!({"type": "ping"})).await["result"]["pong"], true, "connections were not affected");
}

#[tokio::test(start_paused = true)]
async fn idle_limiter_entries_are_swept() {
    // A bucket that takes longer than the test to refill: only the idle sweep can drop it.
    let rates = RateLimits {
        limiter_idle: Duration::from_secs(120),
        limiter_sweep: Duration::from_secs(60),
        user_frames_per_second: 0.001,
        ..RateLimits::default()
    };
    let n = node(NodeOptions { rates, ..Default::default() }).await;
    let mut c = Client::open(&n, &token("alice", &[])).await;
    c.request(json!({"type": "ping"})).await;
    assert_eq!(n.hub.limiter_entries(), 1, "alice's frame limiter");
    c.close().await;
    // Kept while recent (a reconnecting user keeps their budget) ...
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(n.hub.limiter_entries(), 1);
    // ... and dropped by the first sweep after it has been idle for `limiter_idle`.
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(n.hub.limiter_entries(), 0);
}

#[tokio::test(start_paused = true)]
async fn refilled_limiter_entries_are_dropped_by_the_cleanup_pass() {
    // One frame a second, burst 10; the idle sweep is far away.
    let rates = RateLimits { user_frames_per_second: 1.0, user_frames_burst: 10, limiter_sweep: Duration::from_secs(3600), ..RateLimits::default() };
    let timing = Timing { cleanup_interval: Duration::from_secs(3), ..Timing::default() };
    let n = node(NodeOptions { rates, timing, ..Default::default() }).await;
    let mut c = Client::open(&n, &token("alice", &[])).await;
    for _ in 0..5 {
        c.request(json!({"type": "ping"})).await;
    }
    c.close().await;
    assert_eq!(n.hub.limiter_entries(), 1, "alice's frame limiter");
    // Not refilled yet (at most 9 of 10 tokens): it still remembers the frames.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(n.hub.limiter_entries(), 1);
    // Refilled: it carries nothing, and the next cleanup pass drops it.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(n.hub.limiter_entries(), 0);
}

/// Memory only: it moves paused time past the limiter's refill. On Redis the
/// same release (no stream kept for a channel that never held an event) is
/// `abandoned_channels_leave_no_keys_behind` in chorus-redis's engine tests.
#[tokio::test(start_paused = true)]
async fn a_users_last_connection_leaves_no_state_that_carries_nothing() {
    use chorus_core::broker::Broker as _;
    // No cleanup pass nor idle sweep runs during the test: what goes, goes on release.
    let rates = RateLimits { limiter_sweep: Duration::from_secs(3600), ..RateLimits::default() };
    let timing = Timing { cleanup_interval: Duration::from_secs(3600), ..Timing::default() };
    let clock = chorus_clock::ManualClock::starting_at(T0);
    let (broker, backplane) = memory_backplane(&clock);
    let n = node(NodeOptions { rates, timing, backplane: Some(backplane), clock, ..Default::default() }).await;
    let counts = |n: &Node| (n.hub.channel_count(), broker.streams(), n.hub.limiter_entries(), n.hub.connection_count());

    // Two connections of one user on a channel of its own and a presence channel.
    let mut a = Client::open(&n, &token("fresh", &[])).await;
    let mut b = Client::open(&n, &token("fresh", &[])).await;
    for c in [&mut a, &mut b] {
        for channel in ["user:fresh", "chat:lobby"] {
            let r = c.request(json!({"type": "subscribe", "channel": channel})).await;
            assert!(r.get("error").is_none(), "{r}");
        }
    }
    assert_eq!(counts(&n), (2, 2, 1, 2));
    // The frame bucket refills (400 a second) and leaves with the next expiry
    // tick, connections or not; the first connection's end keeps the rest.
    tokio::time::sleep(Duration::from_secs(5)).await;
    a.close().await;
    assert_eq!(counts(&n), (2, 2, 0, 1));
    // The last one drops the channel entries, the bucket and the stream that never held an event
    // (`user:fresh`); `chat:lobby` held the presence joins and leaves, so its history stays.
    b.close().await;
    assert_eq!(counts(&n), (0, 1, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_bucket_that_has_not_refilled_outlives_the_connection() {
    let rates = RateLimits { user_frames_per_second: 0.001, limiter_sweep: Duration::from_secs(3600), ..RateLimits::default() };
    let n = node(NodeOptions { rates, ..Default::default() }).await;
    let mut c = Client::open(&n, &token("spender", &[])).await;
    c.request(json!({"type": "ping"})).await;
    c.close().await;
    // It still remembers the frame: reconnecting does not reset the limit.
    assert_eq!(n.hub.limiter_entries(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_bucket_goes_within_a_second_of_refilling_and_a_quick_reconnect_stays_limited() {
    // One frame a second, burst 3; neither the cleanup pass nor the idle sweep runs.
    let rates = RateLimits { user_frames_per_second: 1.0, user_frames_burst: 3, limiter_sweep: Duration::from_secs(3600), ..RateLimits::default() };
    let timing = Timing { cleanup_interval: Duration::from_secs(3600), ..Timing::default() };
    let n = node(NodeOptions { rates, timing, ..Default::default() }).await;
    let mut c = Client::open(&n, &token("spender", &[])).await;
    for _ in 0..3 {
        assert_eq!(c.request(json!({"type": "ping"})).await["result"]["pong"], true);
    }
    c.close().await;
    assert_eq!(n.hub.limiter_entries(), 1, "drained: kept past the connection");
    // Back at once: the budget is the one it left with.
    let mut c = Client::open(&n, &token("spender", &[])).await;
    assert_eq!(c.request(json!({"type": "ping"})).await["error"]["error"], "rate_limited");
    c.close().await;
    // Full again 3 s after that last frame; gone by the next expiry tick, with no pass.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(n.hub.limiter_entries(), 1);
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    assert_eq!(n.hub.limiter_entries(), 0);
}

/// One admission answer for every transport: the node's limit, its connect
/// rate (with the wait as a retry hint), and shutdown, in that order.
#[tokio::test(start_paused = true)]
async fn admission_refuses_a_full_node_a_fast_one_and_one_shutting_down() {
    let limits = Limits { connections_per_node: 1, connects_per_second: 2, ..Limits::default() };
    let n = node(NodeOptions { limits, ..Default::default() }).await;
    assert_eq!(n.hub.admit_connect(), Ok(()));
    let c = Client::open(&n, &token("alice", &[])).await;
    assert_eq!(n.hub.admit_connect(), Err(ConnectRefusal::NodeFull));
    c.close().await;
    assert_eq!(n.hub.admit_connect(), Ok(()), "the second token of the burst");
    match n.hub.admit_connect() {
        Err(ConnectRefusal::Rate(limited)) => {
            assert_eq!(limited.retry_after, Duration::from_millis(500), "one token per 500 ms");
            assert_eq!(limited.to_string(), "too many new connections; retry in 1 s");
        }
        other => panic!("expected a rate refusal, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(n.hub.admit_connect(), Ok(()));
    n.hub.shutdown();
    assert_eq!(n.hub.admit_connect(), Err(ConnectRefusal::ShuttingDown));
}

/// Per-user limits refuse with the same message and retry hint everywhere.
#[tokio::test(start_paused = true)]
async fn a_per_user_refusal_says_what_and_when() {
    let rates = RateLimits { messages_per_minute: 6.0, messages_burst: 1, ..RateLimits::default() };
    let n = node(NodeOptions { rates, ..Default::default() }).await;
    let alice = UserId::new("alice");
    assert_eq!(n.hub.check_user_rate(UserLimiter::Messages, &alice), Ok(()));
    let refused = n.hub.check_user_rate(UserLimiter::Messages, &alice).unwrap_err();
    assert_eq!(refused.retry_after, Duration::from_secs(10));
    assert_eq!(refused.to_string(), "too many messages; retry in 10 s");
    assert_eq!(n.hub.check_user_rate(UserLimiter::Messages, &UserId::new("bob")), Ok(()), "per user");
}
