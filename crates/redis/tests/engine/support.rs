//! Real `redis-server` processes on free ports, a TCP proxy that can cut one
//! node off, and a sink that records what a node receives.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chorus_core::broker::{Control, NodeSink};
use chorus_clock::SystemClock;
use chorus_core::publication::Publication;
use chorus_core::NodeId;
use chorus_redis::{RedisBroker, RedisBrokerConfig, RedisMetrics};
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One `redis-server` owned by a test; killed when dropped.
pub struct RedisServer {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("chorus-redis-test-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = Self { port: free_port(), dir, child: None };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        self.child = Some(child);
        for _ in 0..200 {
            if self.cli(&["ping"]).map(|o| o.trim() == "PONG").unwrap_or(false) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli").args(["-p", &self.port.to_string()]).args(args).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.pid().to_string()]).status().unwrap().success();
        assert!(ok, "kill {sig}");
    }

    /// SIGKILL: gone at once, no save.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port and directory (loading `dump.rdb` if any).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// Writes a snapshot now and waits for it.
    pub fn save(&self) {
        assert_eq!(self.cli(&["save"]).unwrap().trim(), "OK");
    }

    pub fn dbsize(&self) -> u64 {
        self.cli(&["dbsize"]).unwrap().trim().parse().unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // A paused server would not die from SIGKILL's exit wait otherwise.
            let _ = Command::new("kill").args(["-CONT", &c.id().to_string()]).status();
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP proxy in front of Redis for one node: `cut` drops its connections
/// and refuses new ones until `heal`.
pub struct Proxy {
    pub port: u16,
    open: Arc<AtomicBool>,
    cut: Arc<Notify>,
}

impl Proxy {
    pub async fn start(target: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(Notify::new());
        let (o, c) = (open.clone(), cut.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                if !o.load(Ordering::SeqCst) {
                    let _ = inbound.shutdown().await;
                    continue;
                }
                let c = c.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = c.notified() => {}
                    }
                });
            }
        });
        Self { port, open, cut }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.cut.notify_waiters();
    }

    pub fn heal(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

/// What a node received from the engine.
#[derive(Default)]
pub struct Recorder {
    pub publications: Mutex<Vec<Arc<Publication>>>,
    pub controls: Mutex<Vec<Control>>,
    pub changed: Notify,
}

impl NodeSink for Recorder {
    fn publication(&self, publication: Arc<Publication>) {
        self.publications.lock().push(publication);
        self.changed.notify_waiters();
    }

    fn control(&self, control: Control) {
        self.controls.lock().push(control);
        self.changed.notify_waiters();
    }
}

impl Recorder {
    /// Waits (real time, bounded) until `f` holds.
    pub async fn until(&self, what: &str, limit: Duration, f: impl Fn(&Recorder) -> bool) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if f(self) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
            let _ = tokio::time::timeout(Duration::from_millis(20), self.changed.notified()).await;
        }
    }

    pub fn offsets(&self, channel: &str) -> Vec<u64> {
        self.publications.lock().iter().filter(|p| p.channel.as_str() == channel).map(|p| p.offset).collect()
    }
}

/// Fast timings for tests: failures are noticed and healed within a second
/// (a killed Redis at once; a stalled one after `command_timeout`, which is
/// generous so a loaded test machine does not look like a stalled Redis).
pub fn config(url: &str) -> RedisBrokerConfig {
    RedisBrokerConfig {
        url: url.to_owned(),
        command_timeout: Duration::from_millis(1000),
        probe_interval: Duration::from_millis(50),
        reconnect_delay: Duration::from_millis(50),
        heartbeat_interval: Duration::from_millis(200),
        node_ttl: Duration::from_millis(1500),
        ..RedisBrokerConfig::default()
    }
}

pub struct TestNode {
    pub engine: RedisBroker,
    pub sink: Arc<Recorder>,
}

pub async fn node_with(name: &str, config: RedisBrokerConfig) -> TestNode {
    node_with_clock(name, config, Arc::new(SystemClock)).await
}

/// A node whose clock the test moves (event times, trimming by age).
pub async fn node_with_clock(name: &str, config: RedisBrokerConfig, clock: Arc<dyn chorus_clock::Clock>) -> TestNode {
    use chorus_core::broker::Broker;
    // The engine's warnings (degraded, resyncing) show with a failing test.
    let _ = tracing_subscriber::fmt().with_max_level(tracing::Level::INFO).with_test_writer().try_init();
    let node = NodeId::new(name);
    let engine = RedisBroker::connect(config, node.clone(), clock, RedisMetrics::default()).await.unwrap();
    let sink = Arc::new(Recorder::default());
    engine.attach(&node, sink.clone()).await.unwrap();
    TestNode { engine, sink }
}

pub async fn node(name: &str, url: &str) -> TestNode {
    let n = node_with(name, config(url)).await;
    assert!(n.engine.until_up(Duration::from_secs(5)).await, "{name} did not come up");
    n
}
