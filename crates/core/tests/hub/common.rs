//! A hub with no transport: clients drive a [`Session`] with JSON frames and
//! read their outbound queue directly, so time can be paused.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chorus_clock::ManualClock;
use chorus_core::access::AccessPolicy;
use chorus_core::broker::Backplane;
use chorus_core::broker::memory::MemoryBroker;
use chorus_core::config::{Limits, MemoryBrokerConfig, NamespaceConfig, Namespaces, RateLimits, SubscribeRule, Timing};
use chorus_core::metrics::CoreMetrics;
use chorus_core::outbound::{Batch, Outbound, Outgoing};
use chorus_core::{ChatCommands, CommandError, Executor, Flow, Hub, HubConfig, HubParts, Identity, NodeId, Session, TokenError, TokenVerifier, Transport, UserId};
use chorus_protocol::reply::MessageSentResult;
use chorus_protocol::{ChannelName, CloseCode, ErrorCode};
use serde_json::{Value, json};
use tokio::sync::watch;

/// Where every test clock starts (2026-11-22, Unix ms).
pub const T0: i64 = 1_795_000_000_000;

/// Tokens are JSON: `{"sub": .., "grants": [..], "exp": ms, "leeway": ms}`;
/// `"unavailable"` fails as an unreachable key set would.
pub struct TestVerifier;

#[async_trait]
impl TokenVerifier for TestVerifier {
    async fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        if token == "unavailable" {
            return Err(TokenError::Unavailable("key set unreachable".into()));
        }
        let v: Value = serde_json::from_str(token).map_err(|_| TokenError::Invalid("not a test token".into()))?;
        Ok(Identity {
            user_id: UserId::new(v["sub"].as_str().unwrap_or_default()),
            expires_at_ms: v["exp"].as_i64(),
            leeway_ms: v["leeway"].as_i64().unwrap_or(0),
            grants: v["grants"].as_array().map(|a| a.iter().filter_map(|g| g.as_str().map(str::to_owned)).collect()).unwrap_or_default(),
            session_id: None,
        })
    }
}

pub fn token(user: &str, grants: &[&str]) -> String {
    json!({ "sub": user, "grants": grants }).to_string()
}

pub fn token_expiring(user: &str, grants: &[&str], exp_ms: i64, leeway_ms: i64) -> String {
    json!({ "sub": user, "grants": grants, "exp": exp_ms, "leeway": leeway_ms }).to_string()
}

/// `room:` by grants (no store here) and `chat:` open to everyone, both with
/// presence and typing; `wide:` and `brief:` open to everyone, without.
pub fn namespaces() -> Namespaces {
    let mut ns = Namespaces::default();
    if let Some(room) = ns.0.get_mut("room") {
        room.subscribe = SubscribeRule::Grants;
    }
    ns.0.insert("chat".into(), NamespaceConfig { subscribe: SubscribeRule::Authenticated, presence: true, typing: true, ..Default::default() });
    // Open to everyone without presence: big fan-outs carry only the events under test.
    ns.0.insert("wide".into(), NamespaceConfig { subscribe: SubscribeRule::Authenticated, ..Default::default() });
    // History kept for a minute only.
    ns.0.insert("brief".into(), NamespaceConfig { subscribe: SubscribeRule::Authenticated, history_ttl: Duration::from_secs(60), ..Default::default() });
    ns
}

/// The hub tests have no chat domain: `send_message` is refused as it would
/// be while the store is down.
pub struct NoChat;

#[async_trait]
impl ChatCommands for NoChat {
    async fn send_message(&self, _: &Identity, _: &ChannelName, _: String, _: Option<String>) -> Result<MessageSentResult, CommandError> {
        Err(CommandError::new(ErrorCode::Unavailable, "no chat domain in the hub tests"))
    }
}

pub struct Node {
    pub hub: Hub,
    pub executor: Arc<Executor>,
    pub clock: ManualClock,
    pub limits: watch::Sender<Limits>,
}

pub struct NodeOptions {
    /// The node's id; an engine that serves one node (Redis) was connected under it.
    pub id: NodeId,
    pub limits: Limits,
    pub rates: RateLimits,
    pub timing: Timing,
    pub backplane: Option<Backplane>,
    pub clock: ManualClock,
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self { id: NodeId::random(), limits: Limits::default(), rates: RateLimits::default(), timing: Timing::default(), backplane: None, clock: ManualClock::starting_at(T0) }
    }
}

pub fn memory_backplane(clock: &ManualClock) -> (Arc<MemoryBroker>, Backplane) {
    let broker = Arc::new(MemoryBroker::with_clock(MemoryBrokerConfig::default(), Arc::new(clock.clone())));
    (broker.clone(), Backplane::memory(broker))
}

pub async fn node(opts: NodeOptions) -> Node {
    let backplane = opts.backplane.unwrap_or_else(|| memory_backplane(&opts.clock).1);
    let (limits, limits_rx) = watch::channel(opts.limits);
    let (_, rates_rx) = watch::channel(opts.rates);
    let hub = Hub::start(HubParts {
        config: HubConfig { node: opts.id, timing: opts.timing },
        access: AccessPolicy::new(namespaces(), None),
        limits: limits_rx,
        rates: rates_rx,
        backplane,
        metrics: CoreMetrics::unregistered(),
        clock: Arc::new(opts.clock.clone()),
    })
    .await
    .unwrap();
    let executor = Arc::new(Executor::new(hub.clone(), Arc::new(TestVerifier), Arc::new(NoChat), None));
    Node { hub, executor, clock: opts.clock, limits }
}

/// What a client reads from its queue.
#[derive(Debug)]
pub enum Item {
    Frame(Value),
    Closed(CloseCode),
}

pub struct Client {
    pub session: Session,
    pub outbound: Arc<Outbound>,
    next_id: u64,
    read: VecDeque<Outgoing>,
    closed: Option<CloseCode>,
}

impl Client {
    /// A session that is not authenticated yet.
    pub fn unopened(node: &Node) -> Self {
        let outbound = node.hub.new_outbound();
        let session = Session::new(node.executor.clone(), Transport::WebSocket, Arc::from("test-request"), outbound.clone());
        Self { session, outbound, next_id: 1, read: VecDeque::new(), closed: None }
    }

    /// A session authenticated with `token`, as at upgrade.
    pub async fn open(node: &Node, token: &str) -> Self {
        let mut c = Self::unopened(node);
        let identity = node.executor.authenticate(token).await.unwrap();
        c.session.open(identity).await.unwrap();
        c
    }

    pub fn connection(&self) -> Arc<chorus_core::Connection> {
        self.session.connection().unwrap().clone()
    }

    /// Sends a command (an `id` is added) and returns that id and the flow.
    pub async fn send(&mut self, mut command: Value) -> (u64, Flow) {
        let id = self.next_id;
        self.next_id += 1;
        command["id"] = json!(id);
        let flow = self.session.on_text(command.to_string().as_bytes()).await;
        (id, flow)
    }

    /// Sends a command and reads until its reply; other frames stay queued for [`Client::next`].
    pub async fn request(&mut self, command: Value) -> Value {
        let (id, _) = self.send(command).await;
        let mut skipped = VecDeque::new();
        let reply = loop {
            match self.next_raw().await {
                Some(item) => {
                    if let Outgoing::Reply(b) = &item {
                        let v: Value = serde_json::from_slice(b).unwrap();
                        if v["id"] == json!(id) {
                            break v;
                        }
                    }
                    skipped.push_back(item);
                }
                None => panic!("closed ({:?}) before the reply to {id}", self.closed),
            }
        };
        while let Some(item) = skipped.pop_back() {
            self.read.push_front(item);
        }
        reply
    }

    /// The next queued item, waiting up to 10 s (of paused time: instant).
    pub async fn next_raw(&mut self) -> Option<Outgoing> {
        if let Some(item) = self.read.pop_front() {
            return Some(item);
        }
        if self.closed.is_some() {
            return None;
        }
        let mut batch = Vec::new();
        match tokio::time::timeout(Duration::from_secs(10), self.outbound.next_batch(&mut batch, 64)).await {
            Ok(Batch::Items) => {}
            Ok(Batch::Closed(code)) => self.closed = Some(code),
            Err(_) => panic!("nothing arrived within 10 s"),
        }
        self.read.extend(batch);
        self.read.pop_front()
    }

    /// The next frame (bookkeeping items skipped), or the close.
    pub async fn next(&mut self) -> Item {
        loop {
            match self.next_raw().await {
                Some(Outgoing::Track { .. }) => continue,
                Some(item) => return Item::Frame(serde_json::from_slice(item.frame()).unwrap()),
                None => return Item::Closed(self.closed.unwrap_or(CloseCode::Normal)),
            }
        }
    }

    /// The next frame; panics on a close.
    pub async fn frame(&mut self) -> Value {
        match self.next().await {
            Item::Frame(v) => v,
            Item::Closed(code) => panic!("closed with {code:?}"),
        }
    }

    /// Frames until (and including) the first of type `ty`.
    pub async fn until(&mut self, ty: &str) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let f = self.frame().await;
            let done = f["type"] == ty;
            out.push(f);
            if done {
                return out;
            }
        }
    }

    pub async fn close(self) {
        self.session.end().await;
    }
}

/// Lets spawned tasks (follow-ups, releases, announcements) run.
pub async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// Publishes a `publication` with `{"n": n}` through the hub.
pub async fn publish(hub: &Hub, channel: &str, n: u64) -> u64 {
    let ch = chorus_protocol::ChannelName::parse(channel).unwrap();
    let data = chorus_protocol::Payload::from_value(&json!({ "n": n })).unwrap();
    hub.publish(&ch, chorus_core::publication::Draft::new(chorus_protocol::EventType::Publication, data)).await.unwrap().offset
}

pub fn channel(s: &str) -> chorus_protocol::ChannelName {
    chorus_protocol::ChannelName::parse(s).unwrap()
}
