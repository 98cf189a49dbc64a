//! Several real `chorus serve` processes forming one deployment: one
//! `redis-server` this test starts (so it can pause it), one PostgreSQL
//! database on `CHORUS_TEST_POSTGRES_URL` (required, as for the store tests:
//! SQLite cannot be shared between processes). The broker is set
//! through the documented environment keys, with a short node TTL and
//! heartbeat so that a dead node is noticed within two seconds. Waits poll
//! for a state, bounded; every process is killed when its guard drops.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chorus_store::{NewUser, StoreConfig, UserRole};
use chorus_testkit::WsClient;
use chorus_testkit::db::{TestDatabase, TestEngine};
use serde_json::{Value, json};

use crate::process::{Served, WAIT, install_crypto};

const SECRET: &str = "cluster-test-secret-0123456789abcdef0123456789";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The test's own `redis-server`, killed (resumed first, if paused) on drop.
struct RedisProcess {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl RedisProcess {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        let r = Self { port, child, _dir: dir };
        let deadline = Instant::now() + WAIT;
        while !r.answers() {
            assert!(Instant::now() < deadline, "redis-server did not start on port {port}");
            std::thread::sleep(Duration::from_millis(10));
        }
        r
    }

    fn answers(&self) -> bool {
        Command::new("redis-cli").args(["-p", &self.port.to_string(), "ping"]).output().is_ok_and(|o| o.stdout.starts_with(b"PONG"))
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn signal(&self, sig: i32) {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: a signal to our own child process.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: a signal to our own child process (a stopped one must be resumed to die promptly).
            unsafe {
                libc::kill(pid, libc::SIGCONT);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Nodes sharing one Redis and one PostgreSQL database.
struct Cluster {
    nodes: Vec<Served>,
    redis: RedisProcess,
    db: TestDatabase,
    db_url: String,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Cluster {
    /// Fails the test without PostgreSQL (`TestDatabase::create` says how to start it).
    async fn start(nodes: usize) -> Cluster {
        install_crypto();
        let redis = RedisProcess::start();
        let db = TestDatabase::create(TestEngine::Postgres).await;
        let db_url = db.url.clone().expect("a PostgreSQL URL");
        let store = chorus_store::open_store(&StoreConfig { url: Some(db_url.clone()), ..StoreConfig::default() }, Path::new("/nonexistent")).await.expect("open store");
        store.migrate().await.expect("migrate");
        store.close().await;
        let mut c = Cluster { nodes: Vec::new(), redis, db, db_url, dir: tempfile::tempdir().unwrap(), http: reqwest::Client::new() };
        for i in 0..nodes {
            c.start_node(&format!("n{i}")).await;
        }
        c
    }

    async fn start_node(&mut self, name: &str) {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let config = write_node_config(&dir);
        let url = self.redis.url();
        let env = [
            ("CHORUS_NODE_ID", name),
            ("CHORUS_STORE__URL", self.db_url.as_str()),
            ("CHORUS_BROKER__KIND", "redis"),
            ("CHORUS_BROKER__REDIS__URL", url.as_str()),
            ("CHORUS_BROKER__REDIS__HEARTBEAT_INTERVAL", "200ms"),
            ("CHORUS_BROKER__REDIS__NODE_TTL", "1500ms"),
            ("CHORUS_BROKER__REDIS__PROBE_INTERVAL", "100ms"),
            ("CHORUS_BROKER__REDIS__RECONNECT_DELAY", "100ms"),
        ];
        let served = Served::start(&dir, &config, &env).await;
        self.nodes.push(served);
    }

    /// A user in the shared store and a token for it.
    async fn user(&self, name: &str, role: UserRole) -> (String, String) {
        let store = chorus_store::open_store(&StoreConfig { url: Some(self.db_url.clone()), ..StoreConfig::default() }, Path::new("/nonexistent")).await.expect("open store");
        let u = store.create_user(NewUser { username: name.into(), email: None, password_hash: None, role, external: None }).await.expect("user");
        store.close().await;
        let token = chorus_auth::mint_token(
            &chorus_auth::HmacSecret::new(SECRET),
            &chorus_auth::MintRequest { user: u.id.clone(), ttl: Duration::from_secs(3600), ..Default::default() },
            &chorus_clock::SystemClock,
        )
        .expect("mint");
        (u.id, token)
    }

    async fn ws(&self, node: usize, token: &str) -> WsClient {
        let mut ws = WsClient::connect(&format!("ws://{}/ws?token={token}", self.nodes[node].addr)).await.expect("ws connect");
        assert_eq!(ws.push().await["type"], "connected");
        ws
    }

    async fn get(&self, node: usize, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.get(self.nodes[node].url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn send(&self, method: reqwest::Method, node: usize, path: &str, token: &str, body: Value) -> (u16, Value) {
        let r = self.http.request(method, self.nodes[node].url(path)).bearer_auth(token).json(&body).send().await.expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Polls `GET path` on a node until `holds` accepts the answer.
    async fn until(&self, node: usize, path: &str, token: Option<&str>, what: &str, holds: impl Fn(u16, &Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let (status, body) = self.get(node, path, token).await;
            if holds(status, &body) {
                return body;
            }
            assert!(Instant::now() < deadline, "{what}: last answer {status} {body}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn alive(&mut self) -> bool {
        self.nodes.iter_mut().all(|n| matches!(n.child.try_wait(), Ok(None)))
    }

    async fn stop(mut self) {
        for n in &mut self.nodes {
            let _ = n.child.kill().await;
        }
        self.db.drop_now().await;
    }
}

fn write_node_config(dir: &Path) -> PathBuf {
    crate::process::write_config(
        dir,
        &format!(
            "[auth]\nhmac_secret = \"{SECRET}\"\n\n\
             [rate_limits]\nmessages_per_minute = 600000.0\nmessages_burst = 100000\nrest_per_minute = 600000.0\nrest_burst = 100000\n\
             frames_per_second = 100000.0\nframes_burst = 100000\nuser_frames_per_second = 100000.0\nuser_frames_burst = 100000\n\n\
             [namespaces.lobby]\nsubscribe = \"authenticated\"\npublish = \"subscribers\"\npresence = true\n"
        ),
    )
}

async fn subscribe(ws: &mut WsClient, channel: &str) {
    let r = ws.request(json!({"type": "subscribe", "channel": channel})).await;
    assert_eq!(r["result"]["channel"], channel, "{r}");
}

/// Reads pushes until a presence event of `kind` for `user` arrives.
async fn presence_event(ws: &mut WsClient, kind: &str, user: &str) {
    loop {
        let p = ws.push().await;
        if p["type"] == kind && p["data"]["user_id"] == user {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_users_leave_presence_counts_and_the_connection_list() {
    let cluster = Cluster::start(2).await;
    let (_, watcher_token) = cluster.user("watcher", UserRole::User).await;
    let (ghost, ghost_token) = cluster.user("ghost", UserRole::User).await;
    let (_, admin) = cluster.user("boss", UserRole::Admin).await;
    let mut watcher = cluster.ws(0, &watcher_token).await;
    subscribe(&mut watcher, "lobby:p").await;
    let mut ghosts = Vec::new();
    for _ in 0..2 {
        let mut g = cluster.ws(1, &ghost_token).await;
        subscribe(&mut g, "lobby:p").await;
        ghosts.push(g);
    }
    presence_event(&mut watcher, "presence_joined", &ghost).await;
    let listed = cluster.until(0, "/api/v1/admin/connections", Some(&admin), "both nodes' connections listed", |s, b| s == 200 && b["total"] == 3).await;
    assert_eq!(listed["scope"], "cluster");
    let nodes: BTreeSet<&str> = listed["connections"].as_array().unwrap().iter().filter_map(|c| c["node"].as_str()).collect();
    assert_eq!(nodes, BTreeSet::from(["n0", "n1"]), "{listed}");

    cluster.nodes[1].signal(libc::SIGKILL);
    // Within node_ttl (1.5 s here; 20 s + a 5 s heartbeat by default, see the
    // Redis engine's config test) plus a heartbeat of the surviving node.
    presence_event(&mut watcher, "presence_left", &ghost).await;
    let r = watcher.request(json!({"type": "presence", "channel": "lobby:p"})).await;
    let users: Vec<&str> = r["result"]["users"].as_array().unwrap().iter().filter_map(|u| u["user_id"].as_str()).collect();
    assert!(!users.contains(&ghost.as_str()), "{r}");
    let listed = cluster.until(0, "/api/v1/admin/connections", Some(&admin), "the dead node's connections gone", |s, b| s == 200 && b["total"] == 1).await;
    assert_eq!(listed["connections"][0]["node"], "n0");
    // The ghost's count is gone too: three new connections on the live node all stay.
    let mut fresh = Vec::new();
    for _ in 0..3 {
        fresh.push(cluster.ws(0, &ghost_token).await);
    }
    for ws in &mut fresh {
        let r = ws.request(json!({"type": "ping"})).await;
        assert!(r.get("error").is_none(), "{r}");
    }
    cluster.until(0, "/api/v1/admin/connections", Some(&admin), "the ghost's three new connections", |s, b| s == 200 && b["total"] == 4).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_disconnects_and_maintenance_reach_the_other_node() {
    let mut cluster = Cluster::start(2).await;
    let (dora, dora_token) = cluster.user("dora", UserRole::User).await;
    let (carol, carol_token) = cluster.user("carol", UserRole::User).await;
    let (_, admin) = cluster.user("boss", UserRole::Admin).await;

    // A fourth connection on another node closes the oldest, on its node.
    let mut doras = Vec::new();
    for _ in 0..3 {
        doras.push(cluster.ws(0, &dora_token).await);
    }
    let mut fourth = cluster.ws(1, &dora_token).await;
    assert_eq!(doras[0].closed().await.0, 4004, "the oldest closes with connection_limit");
    for ws in doras.iter_mut().skip(1).chain(std::iter::once(&mut fourth)) {
        assert!(ws.request(json!({"type": "ping"})).await.get("error").is_none());
    }
    let listed = cluster
        .until(1, "/api/v1/admin/connections", Some(&admin), "dora's three connections", |s, b| {
            s == 200 && b["connections"].as_array().is_some_and(|l| l.iter().filter(|c| c["user_id"] == dora.as_str()).count() == 3)
        })
        .await;
    let on: BTreeMap<String, usize> = listed["connections"].as_array().unwrap().iter().fold(BTreeMap::new(), |mut m, c| {
        *m.entry(c["node"].as_str().unwrap().to_owned()).or_default() += 1;
        m
    });
    assert_eq!(on, BTreeMap::from([("n0".to_owned(), 2), ("n1".to_owned(), 1)]), "{listed}");

    // An administrator's disconnect through node 0 closes carol's connection on node 1.
    let mut carol_ws = cluster.ws(1, &carol_token).await;
    subscribe(&mut carol_ws, "lobby:m").await;
    let (status, body) = cluster.send(reqwest::Method::POST, 0, &format!("/api/v1/admin/users/{carol}/disconnect"), &admin, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(carol_ws.closed().await.0, 4009, "admin_disconnect on the other node");

    // Maintenance switched on through node 0 refuses publishes on node 1.
    let mut carol_ws = cluster.ws(1, &carol_token).await;
    subscribe(&mut carol_ws, "lobby:m").await;
    let (status, body) = cluster.send(reqwest::Method::PUT, 0, "/api/v1/admin/maintenance", &admin, json!({"enabled": true, "message": "moving racks"})).await;
    assert_eq!(status, 200, "{body}");
    cluster.until(1, "/api/v1/admin/maintenance", Some(&admin), "maintenance on node 1", |s, b| s == 200 && b["enabled"] == true).await;
    let r = carol_ws.request(json!({"type": "publish", "channel": "lobby:m", "data": {"m": 1}})).await;
    assert_eq!(r["error"]["error"], "maintenance", "{r}");
    assert!(r["error"]["message"].as_str().is_some_and(|m| m.contains("moving racks")), "{r}");
    let (status, _) = cluster.send(reqwest::Method::PUT, 0, "/api/v1/admin/maintenance", &admin, json!({"enabled": false})).await;
    assert_eq!(status, 200);
    cluster.until(1, "/api/v1/admin/maintenance", Some(&admin), "maintenance off on node 1", |s, b| s == 200 && b["enabled"] == false).await;
    let r = carol_ws.request(json!({"type": "publish", "channel": "lobby:m", "data": {"m": 2}})).await;
    assert!(r.get("error").is_none(), "{r}");
    assert!(cluster.alive());
    cluster.stop().await;
}

/// One client of the pause test: what it published and saw acknowledged,
/// and what it received.
struct Member {
    ws: WsClient,
    name: String,
    next_id: u64,
    acked: Vec<String>,
    received: BTreeSet<String>,
    recovery_failed: bool,
}

impl Member {
    fn note(&mut self, p: &Value) {
        if p["channel"] != "lobby:storm" {
            return;
        }
        if p["type"] == "recovery_failed" {
            self.recovery_failed = true;
        }
        if let Some(m) = p["data"]["m"].as_str() {
            self.received.insert(m.to_owned());
        }
    }

    /// Publishes one message, noting the pushes that come meanwhile.
    async fn publish(&mut self, n: usize) {
        self.next_id += 1;
        let id = self.next_id;
        let m = format!("{}-{n}", self.name);
        self.ws.send_text(json!({"id": id, "type": "publish", "channel": "lobby:storm", "data": {"m": m}}).to_string()).await;
        loop {
            let f = self.ws.frame().await;
            if f["id"].as_u64() == Some(id) {
                if f.get("result").is_some() {
                    self.acked.push(m);
                }
                return;
            }
            self.note(&f);
        }
    }

    /// Reads until every message of `wanted` arrived.
    async fn receive(&mut self, wanted: &BTreeSet<String>) {
        while !wanted.is_subset(&self.received) {
            let f = self.ws.frame().await;
            self.note(&f);
        }
    }
}

/// Every member publishes once.
async fn round(members: &mut [Member], n: &mut usize) {
    *n += 1;
    for m in members.iter_mut() {
        m.publish(*n).await;
    }
}

fn acked(members: &[Member]) -> BTreeSet<String> {
    members.iter().flat_map(|m| m.acked.iter().cloned()).collect()
}

async fn broker_status(cluster: &Cluster, node: usize) -> Value {
    cluster.get(node, "/health/detailed", None).await.1["checks"]["broker"]["status"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_degrades_both_nodes_and_nothing_acknowledged_is_lost_silently() {
    let mut cluster = Cluster::start(2).await;
    let mut members = Vec::new();
    for i in 0..4 {
        let (_, token) = cluster.user(&format!("m{i}"), UserRole::User).await;
        let mut ws = cluster.ws(i % 2, &token).await;
        subscribe(&mut ws, "lobby:storm").await;
        members.push(Member { ws, name: format!("m{i}"), next_id: 1000, acked: Vec::new(), received: BTreeSet::new(), recovery_failed: false });
    }
    let mut n = 0;
    round(&mut members, &mut n).await;
    let before = acked(&members);
    assert_eq!(before.len(), 4, "all acknowledged while Redis is up");
    for m in &mut members {
        m.receive(&before).await;
    }

    cluster.redis.signal(libc::SIGSTOP);
    // Publishing through both nodes while Redis is stopped, until both say degraded.
    let deadline = Instant::now() + WAIT;
    loop {
        round(&mut members, &mut n).await;
        let mut degraded = 0;
        for node in 0..2 {
            assert_eq!(cluster.get(node, "/health", None).await.0, 200, "/health stays up");
            if broker_status(&cluster, node).await == "degraded" {
                degraded += 1;
            }
        }
        if degraded == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the nodes did not report degraded");
    }
    round(&mut members, &mut n).await;
    cluster.redis.signal(libc::SIGCONT);
    for node in 0..2 {
        let deadline = Instant::now() + WAIT;
        while broker_status(&cluster, node).await != "healthy" {
            assert!(Instant::now() < deadline, "node {node} not healthy again after Redis resumed");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    let during: BTreeSet<String> = acked(&members).difference(&before).cloned().collect();
    round(&mut members, &mut n).await;
    let after: BTreeSet<String> = acked(&members).difference(&before).filter(|m| !during.contains(*m)).cloned().collect();
    assert_eq!(after.len(), 4, "all acknowledged once Redis is back");
    for m in &mut members {
        m.receive(&after).await;
        let missing: Vec<&String> = during.difference(&m.received).collect();
        assert!(missing.is_empty() || m.recovery_failed, "{} missed {missing:?} without recovery_failed", m.name);
    }
    assert!(cluster.alive(), "no node crashed");
    cluster.stop().await;
}
