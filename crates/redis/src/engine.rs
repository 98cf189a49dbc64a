//! The engine's shared state: the two Redis connections (commands, and
//! pub/sub), the local fallback used while Redis is unreachable, the mirror
//! of this node's own entries (to resync Redis after a loss), and the mode.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use chorus_core::broker::memory::MemoryBroker;
use chorus_core::broker::{BrokerError, NodeSink, PresenceEntry, RegisteredConnection};
use chorus_clock::Clock;
use chorus_core::config::MemoryBrokerConfig;
use chorus_core::{NodeId, UserId};
use chorus_protocol::ChannelName;
use fred::prelude::*;
use parking_lot::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::RedisBrokerConfig;
use crate::keys::Keys;
use crate::metrics::RedisMetrics;

/// Whether Redis serves this node now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Up,
    /// Redis is unreachable or this node is out of sync with it; publishes
    /// reach local subscribers only (on local epochs), presence answers
    /// `unavailable`, the per-user limit holds per node.
    Degraded { reason: String, since_ms: i64 },
}

/// A Lua script: its text and the digest Redis knows it by.
pub struct Script {
    pub name: &'static str,
    pub text: String,
    pub sha: RwLock<Option<String>>,
}

impl Script {
    fn new(name: &'static str, parts: &[&str]) -> Self {
        Self { name, text: parts.concat(), sha: RwLock::new(None) }
    }
}

pub struct Scripts {
    pub publish: Script,
    pub history: Script,
    pub control: Script,
    pub heartbeat: Script,
    pub live_nodes: Script,
    pub presence_join: Script,
    pub presence_leave: Script,
    pub presence_sync: Script,
    pub registry_register: Script,
    pub registry_unregister: Script,
    pub registry_list: Script,
    pub registry_sync: Script,
    pub registry_page: Script,
}

impl Scripts {
    fn new() -> Self {
        let stream = include_str!("lua/stream_common.lua");
        let registry = include_str!("lua/registry_common.lua");
        Self {
            publish: Script::new("publish", &[stream, include_str!("lua/publish.lua")]),
            history: Script::new("history", &[stream, include_str!("lua/history.lua")]),
            control: Script::new("control", &[include_str!("lua/control.lua")]),
            heartbeat: Script::new("heartbeat", &[include_str!("lua/heartbeat.lua")]),
            live_nodes: Script::new("live_nodes", &[include_str!("lua/live_nodes.lua")]),
            presence_join: Script::new("presence_join", &[include_str!("lua/presence_join.lua")]),
            presence_leave: Script::new("presence_leave", &[include_str!("lua/presence_leave.lua")]),
            presence_sync: Script::new("presence_sync", &[include_str!("lua/presence_sync.lua")]),
            registry_register: Script::new("registry_register", &[registry, include_str!("lua/registry_register.lua")]),
            registry_unregister: Script::new("registry_unregister", &[registry, include_str!("lua/registry_unregister.lua")]),
            registry_list: Script::new("registry_list", &[registry, include_str!("lua/registry_list.lua")]),
            registry_sync: Script::new("registry_sync", &[registry, include_str!("lua/registry_sync.lua")]),
            registry_page: Script::new("registry_page", &[include_str!("lua/registry_page.lua")]),
        }
    }

    pub fn all(&self) -> [&Script; 13] {
        [
            &self.publish,
            &self.history,
            &self.control,
            &self.heartbeat,
            &self.live_nodes,
            &self.presence_join,
            &self.presence_leave,
            &self.presence_sync,
            &self.registry_register,
            &self.registry_unregister,
            &self.registry_list,
            &self.registry_sync,
            &self.registry_page,
        ]
    }
}

/// This node's own registrations and presence entries, kept beside Redis:
/// they enforce the per-user limit per node while Redis is away, and they
/// are what the node writes back into Redis when it returns.
#[derive(Default)]
pub struct Mirror {
    pub registry: Mutex<HashMap<UserId, Vec<RegisteredConnection>>>,
    pub presence: Mutex<HashMap<ChannelName, Vec<PresenceEntry>>>,
}

/// Probes sent through the command connection and heard back on pub/sub.
#[derive(Default)]
pub struct Probes {
    pub sent: u64,
    pub sent_at: Option<tokio::time::Instant>,
    pub heard: u64,
}

pub struct Inner {
    pub cfg: RedisBrokerConfig,
    pub keys: Keys,
    pub node: NodeId,
    pub commands: Client,
    pub pubsub: Client,
    pub local: MemoryBroker,
    pub sink: RwLock<Option<Arc<dyn NodeSink>>>,
    pub listened: Mutex<HashSet<ChannelName>>,
    pub mode: RwLock<Mode>,
    pub needs_recovery: AtomicBool,
    /// Set while a recovery runs: the mode turns `Up` midway through one
    /// (so new work goes to Redis), but the node is in step only at its end.
    pub recovering: AtomicBool,
    /// Bumped on every change of mode or sync state, for those who wait on one.
    pub changes: tokio::sync::watch::Sender<u64>,
    /// Set while the pub/sub connection is not delivering (commands may
    /// still work, so publishes keep going through Redis).
    pub pubsub_trouble: Mutex<Option<String>>,
    pub run_id: RwLock<String>,
    pub scripts: Scripts,
    pub mirror: Mirror,
    /// The per-user limit last asked for, for re-registrations after a loss.
    pub user_limit: AtomicUsize,
    /// The newest control message applied (stream id).
    pub last_control: Mutex<Option<(u64, u64)>>,
    pub probes: Mutex<Probes>,
    /// Taken by the pump; made before connecting so nothing arrives unheard.
    pub receivers: Mutex<Option<Receivers>>,
    pub metrics: RedisMetrics,
    pub clock: Arc<dyn Clock>,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
}

/// What the pump listens to: pub/sub messages and both clients' reconnections.
pub struct Receivers {
    pub messages: tokio::sync::broadcast::Receiver<fred::types::Message>,
    pub pubsub_reconnects: tokio::sync::broadcast::Receiver<Server>,
    pub command_reconnects: tokio::sync::broadcast::Receiver<Server>,
}

/// Failure to set the engine up at all (bad URL); an unreachable Redis is
/// not one: the engine then starts degraded.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("redis: {0}")]
    Config(String),
}

fn client(cfg: &RedisBrokerConfig, buffer: usize) -> Result<Client, SetupError> {
    let config = Config::from_url(&cfg.url).map_err(|e| SetupError::Config(e.to_string()))?;
    let mut builder = Builder::from_config(config);
    builder
        .with_config(|c| c.fail_fast = false)
        .with_performance_config(|p| {
            p.default_command_timeout = cfg.command_timeout;
            p.broadcast_channel_capacity = buffer;
        })
        .with_connection_config(|c| {
            // A command in flight when the connection drops is never sent
            // again: a second publish script would append the event twice.
            c.max_command_attempts = 1;
            c.connection_timeout = cfg.command_timeout.max(Duration::from_millis(100)) * 2;
            c.internal_command_timeout = cfg.command_timeout.max(Duration::from_millis(100)) * 2;
            c.unresponsive.max_timeout = Some(cfg.command_timeout * 4);
            c.unresponsive.interval = cfg.command_timeout.max(Duration::from_millis(10));
            c.tcp = TcpConfig { nodelay: Some(true), ..TcpConfig::default() };
        })
        .set_policy(ReconnectPolicy::new_constant(0, u32::try_from(cfg.reconnect_delay.as_millis()).unwrap_or(u32::MAX).max(10)));
    builder.build().map_err(|e| SetupError::Config(e.to_string()))
}

impl Inner {
    pub fn new(cfg: RedisBrokerConfig, node: NodeId, clock: Arc<dyn Clock>, metrics: RedisMetrics) -> Result<Self, SetupError> {
        cfg.validate().map_err(SetupError::Config)?;
        let commands = client(&cfg, 64)?;
        let pubsub = client(&cfg, cfg.pubsub_buffer)?;
        let now = clock.now_ms();
        Ok(Self {
            keys: Keys::new(&cfg.key_prefix),
            cfg,
            node,
            commands,
            pubsub,
            local: MemoryBroker::with_clock(MemoryBrokerConfig::default(), clock.clone()),
            sink: RwLock::new(None),
            listened: Mutex::new(HashSet::new()),
            mode: RwLock::new(Mode::Degraded { reason: "connecting to Redis".into(), since_ms: now }),
            needs_recovery: AtomicBool::new(true),
            recovering: AtomicBool::new(false),
            changes: tokio::sync::watch::Sender::new(0),
            pubsub_trouble: Mutex::new(None),
            run_id: RwLock::new(String::new()),
            scripts: Scripts::new(),
            mirror: Mirror::default(),
            user_limit: AtomicUsize::new(usize::MAX),
            last_control: Mutex::new(None),
            probes: Mutex::new(Probes::default()),
            receivers: Mutex::new(None),
            metrics,
            clock,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        })
    }

    pub fn is_up(&self) -> bool {
        matches!(*self.mode.read(), Mode::Up)
    }

    /// Fully in step with Redis: up, no recovery running or pending, and
    /// pub/sub delivering.
    pub fn in_step(&self) -> bool {
        self.is_up()
            && !self.needs_recovery.load(Ordering::Acquire)
            && !self.recovering.load(Ordering::Acquire)
            && self.pubsub_trouble.lock().is_none()
    }

    /// Wakes whoever waits for a change of mode or sync state.
    pub fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Asks the pump for a recovery at its next tick.
    pub fn request_recovery(&self) {
        self.needs_recovery.store(true, Ordering::Release);
        self.changed();
    }

    /// Redis failed us: go degraded (once) and have the pump recover.
    pub fn mark_down(&self, reason: &str) {
        self.needs_recovery.store(true, Ordering::Release);
        {
            let mut mode = self.mode.write();
            if *mode == Mode::Up {
                tracing::warn!(reason, "Redis unavailable: degraded mode (local delivery only)");
                *mode = Mode::Degraded { reason: reason.to_owned(), since_ms: self.clock.now_ms() };
                self.metrics.up.set(0);
                self.metrics.degraded.inc();
            }
        }
        self.changed();
    }

    /// Pub/sub stopped delivering: resubscribe and resync, but keep
    /// publishing through Redis if commands still work.
    pub fn pubsub_down(&self, reason: &str) {
        self.needs_recovery.store(true, Ordering::Release);
        {
            let mut trouble = self.pubsub_trouble.lock();
            if trouble.is_none() {
                tracing::warn!(reason, "Redis pub/sub not delivering; resubscribing");
            }
            *trouble = Some(reason.to_owned());
        }
        self.changed();
    }

    pub fn mark_up(&self) {
        {
            let mut mode = self.mode.write();
            if *mode != Mode::Up {
                tracing::info!("Redis reachable: normal mode (resyncing this node)");
                *mode = Mode::Up;
                self.metrics.up.set(1);
            }
        }
        self.changed();
    }

    pub fn sink(&self) -> Option<Arc<dyn NodeSink>> {
        self.sink.read().clone()
    }

    fn options(&self) -> Options {
        Options { max_attempts: Some(1), timeout: Some(self.cfg.command_timeout), fail_fast: true, ..Options::default() }
    }

    /// The command client with per-command options: one attempt, bounded time.
    pub fn redis(&self) -> fred::clients::WithOptions<Client> {
        self.commands.with_options(&self.options())
    }

    pub fn subscriber(&self) -> fred::clients::WithOptions<Client> {
        self.pubsub.with_options(&self.options())
    }

    /// Turns a Redis failure into the seam's error, going degraded if it
    /// says Redis cannot be reached.
    pub fn fail(&self, what: &str, e: &Error) -> BrokerError {
        let reason = format!("{what}: {e}");
        if matches!(e.kind(), ErrorKind::IO | ErrorKind::Timeout | ErrorKind::Canceled | ErrorKind::Backpressure | ErrorKind::Routing) {
            self.mark_down(&reason);
        }
        BrokerError::Unavailable(reason)
    }

    /// Waits until Redis has processed every (un)subscribe sent so far on the
    /// pub/sub connection: the client library completes those when written,
    /// and Redis answers a PING on the same connection only after them.
    pub async fn pubsub_barrier(&self) -> Result<(), Error> {
        self.subscriber().ping::<Value>(None).await.map(|_| ())
    }

    pub async fn load_scripts(&self) -> Result<(), Error> {
        for s in self.scripts.all() {
            let sha: String = self.redis().script_load(s.text.clone()).await?;
            *s.sha.write() = Some(sha);
        }
        Ok(())
    }

    /// Runs a script (loading it again if Redis lost its script cache).
    pub async fn eval(&self, script: &Script, keys: Vec<String>, args: Vec<Value>) -> Result<Value, BrokerError> {
        let sha = script.sha.read().clone();
        let first = match sha {
            Some(sha) => self.redis().evalsha::<Value, _, _, _>(sha, keys.clone(), args.clone()).await,
            None => Err(Error::new(ErrorKind::Unknown, "NOSCRIPT not loaded yet")),
        };
        match first {
            Ok(v) => Ok(v),
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                // Never ran: safe to run once more after loading.
                let sha: String = self.redis().script_load(script.text.clone()).await.map_err(|e| self.fail(script.name, &e))?;
                *script.sha.write() = Some(sha.clone());
                self.redis().evalsha::<Value, _, _, _>(sha, keys, args).await.map_err(|e| self.fail(script.name, &e))
            }
            Err(e) => Err(self.fail(script.name, &e)),
        }
    }

    /// The server's run id (new at every start of `redis-server`).
    pub async fn read_run_id(&self) -> Result<String, Error> {
        let info: String = self.redis().info(Some(fred::types::InfoKind::Server)).await?;
        Ok(info.lines().find_map(|l| l.strip_prefix("run_id:")).unwrap_or_default().trim().to_owned())
    }
}

/// Values for script arguments.
pub fn arg(s: impl Into<String>) -> Value {
    Value::from(s.into())
}

pub fn int_arg(n: impl TryInto<i64>) -> Value {
    Value::Integer(n.try_into().unwrap_or(i64::MAX))
}

pub fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
