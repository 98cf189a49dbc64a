//! One test body, every broker engine: as the store tests run each body on
//! SQLite and PostgreSQL, the hub tests that exercise the broker run each
//! body on the in-memory engine and on Redis. A body gets a [`Deployment`]
//! (one shared broker) and starts as many hubs (nodes) on it as it needs.
//!
//! Redis tests use the server named by `CHORUS_TEST_REDIS_URL`
//! (`scripts/test-services.sh start` exports it; `scripts/test.sh` always
//! does) and fail without it. Each test has its own key prefix, so tests
//! share the one server and run in parallel.
//!
//! Bodies run in real time (a real Redis cannot follow paused tokio time);
//! the wall clock the hubs and engines read is one [`ManualClock`] per
//! deployment, starting at the real time, which a body may move forward.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chorus_clock::{Clock, ManualClock, SystemClock};
use chorus_core::NodeId;
use chorus_core::broker::Backplane;
use chorus_core::broker::memory::MemoryBroker;
use chorus_core::config::MemoryBrokerConfig;
use chorus_redis::{RedisBroker, RedisBrokerConfig, RedisMetrics};
use parking_lot::Mutex;

use crate::common::{Node, NodeOptions, node};

pub const REDIS_ENV: &str = "CHORUS_TEST_REDIS_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Memory,
    Redis,
}

/// The nodes of one deployment: they share one in-memory broker, or one key
/// prefix on the test Redis.
pub struct Deployment {
    pub engine: Engine,
    /// The wall clock of every hub and engine of the deployment.
    pub clock: ManualClock,
    memory: Arc<MemoryBroker>,
    redis: Option<RedisBrokerConfig>,
    /// The Redis engines connected so far, by node.
    engines: Mutex<Vec<(NodeId, RedisBroker)>>,
}

impl Deployment {
    pub fn new(engine: Engine) -> Self {
        let clock = ManualClock::starting_at(SystemClock.now_ms());
        let memory = Arc::new(MemoryBroker::with_clock(MemoryBrokerConfig::default(), Arc::new(clock.clone())));
        let redis = (engine == Engine::Redis).then(|| {
            let url = std::env::var(REDIS_ENV).unwrap_or_default();
            assert!(
                !url.trim().is_empty(),
                "{REDIS_ENV} is not set: the Redis hub tests need a server. \
                 Run `eval \"$(scripts/test-services.sh start)\"` first (scripts/test.sh does)."
            );
            RedisBrokerConfig {
                url,
                key_prefix: format!("t{}", NodeId::random()),
                // Failures are noticed and healed within a second; generous
                // enough that a loaded machine does not look like a stalled Redis.
                command_timeout: Duration::from_millis(2000),
                probe_interval: Duration::from_millis(50),
                reconnect_delay: Duration::from_millis(50),
                heartbeat_interval: Duration::from_millis(200),
                node_ttl: Duration::from_millis(1500),
                ..RedisBrokerConfig::default()
            }
        });
        Self { engine, clock, memory, redis, engines: Mutex::new(Vec::new()) }
    }

    /// The backplane of node `id` of this deployment.
    pub async fn backplane(&self, id: &NodeId) -> Backplane {
        match &self.redis {
            None => Backplane::memory(self.memory.clone()),
            Some(config) => {
                let engine = RedisBroker::connect(config.clone(), id.clone(), Arc::new(self.clock.clone()), RedisMetrics::default())
                    .await
                    .unwrap_or_else(|e| panic!("connecting to {REDIS_ENV}: {e}"));
                let backplane = engine.backplane();
                self.engines.lock().push((id.clone(), engine));
                backplane
            }
        }
    }

    /// A hub on this deployment with default options.
    pub async fn node(&self) -> Node {
        self.node_with(NodeOptions::default()).await
    }

    /// A hub on this deployment: on `opts.backplane` if the body built one
    /// (from [`Deployment::backplane`] under `opts.id`), on its own otherwise.
    /// The deployment's clock replaces `opts.clock` unless the body passes
    /// one of its own.
    pub async fn node_with(&self, mut opts: NodeOptions) -> Node {
        if opts.backplane.is_none() {
            opts.backplane = Some(self.backplane(&opts.id).await);
            opts.clock = self.clock.clone();
        }
        let id = opts.id.clone();
        let n = node(opts).await;
        let engine = self.engines.lock().iter().find(|(node, _)| *node == id).map(|(_, e)| e.clone());
        if let Some(engine) = engine {
            assert!(engine.until_up(Duration::from_secs(10)).await, "the Redis engine of {id} did not come up: {:?}", engine.mode());
        }
        n
    }
}

/// Waits (real time, bounded) until `f` holds; polls, since what it waits
/// for happens on another node.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs `body` on a fresh deployment of `engine`.
pub async fn run<F, Fut>(engine: Engine, body: F)
where
    F: FnOnce(Deployment) -> Fut,
    Fut: Future<Output = ()>,
{
    body(Deployment::new(engine)).await;
}

/// Declares each named `async fn(Deployment)` as two tests,
/// `<name>::memory` and `<name>::redis`.
macro_rules! every_engine {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn memory() {
                    $crate::engines::run($crate::engines::Engine::Memory, super::$name).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis() {
                    $crate::engines::run($crate::engines::Engine::Redis, super::$name).await
                }
            }
        )+
    };
}
pub(crate) use every_engine;
