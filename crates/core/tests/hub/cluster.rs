//! Several hubs of one deployment, on every engine: fan-out, recovery on
//! another node, presence and the per-user limit across nodes, admin
//! disconnects and maintenance reaching every node, and history expiry.

use chorus_core::UserId;
use chorus_core::config::Limits;
use chorus_core::maintenance::MaintenanceMode;
use chorus_protocol::CloseCode;
use serde_json::{Value, json};

use crate::common::*;
use crate::engines::{Deployment, Engine, eventually, every_engine};
use chorus_clock::Clock as _;

every_engine!(
    three_nodes_deliver_every_event_in_order_to_every_subscriber,
    a_recovery_storm_onto_another_node_recovers_exactly,
    presence_and_the_per_user_limit_span_the_nodes,
    an_admin_disconnect_reaches_every_node,
    maintenance_set_on_one_node_applies_on_every_node,
    history_older_than_its_ttl_is_not_recovered,
);

/// A node that accepts connects as fast as a test opens them.
async fn fast_node(d: &Deployment) -> Node {
    d.node_with(NodeOptions { limits: Limits { connects_per_second: 100_000, ..Limits::default() }, ..Default::default() }).await
}

fn n_of(f: &Value) -> Option<u64> {
    (f["type"] == "publication").then(|| f["data"]["n"].as_u64()).flatten()
}

/// Reads publications until `count` arrived (or panics after 10 s of silence).
async fn read_ns(c: &mut Client, count: usize) -> Vec<u64> {
    let mut got = Vec::new();
    while got.len() < count {
        if let Some(n) = n_of(&c.frame().await) {
            got.push(n);
        }
    }
    got
}

/// Waits for a presence event about `user` (others, e.g. one's own join, pass by).
async fn presence_event(c: &mut Client, kind: &str, user: &str) {
    loop {
        let f = c.frame().await;
        if f["type"] == kind && f["data"]["user_id"] == user {
            return;
        }
    }
}

async fn three_nodes_deliver_every_event_in_order_to_every_subscriber(d: Deployment) {
    let nodes = [fast_node(&d).await, fast_node(&d).await, fast_node(&d).await];
    let mut clients = Vec::new();
    for i in 0..1000 {
        let mut c = Client::open(&nodes[i % 3], &token(&format!("u{i}"), &[])).await;
        assert_eq!(c.request(json!({"type": "subscribe", "channel": "wide:all"})).await["result"]["channel"], "wide:all");
        clients.push(c);
    }
    for n in 1..=20 {
        publish(&nodes[0].hub, "wide:all", n).await;
    }
    for c in &mut clients {
        assert_eq!(read_ns(c, 20).await, (1..=20).collect::<Vec<_>>());
    }
}

async fn a_recovery_storm_onto_another_node_recovers_exactly(d: Deployment) {
    let (a, b) = (fast_node(&d).await, fast_node(&d).await);
    let users = 100;
    let mut positions = Vec::new();
    for i in 0..users {
        let channel = format!("wide:u{i}");
        let mut c = Client::open(&a, &token(&format!("u{i}"), &[])).await;
        c.request(json!({"type": "subscribe", "channel": channel})).await;
        publish(&a.hub, &channel, 1).await;
        let f = c.until("publication").await.pop().unwrap();
        positions.push((f["offset"].as_u64().unwrap(), f["epoch"].as_str().unwrap().to_owned()));
        c.close().await;
    }
    // Missed while away: 5 events per channel, published on the other node.
    for i in 0..users {
        for n in 2..=6 {
            publish(&b.hub, &format!("wide:u{i}"), n).await;
        }
    }
    for (i, (offset, epoch)) in positions.into_iter().enumerate() {
        let mut c = Client::open(&b, &token(&format!("u{i}"), &[])).await;
        let r = c.request(json!({"type": "subscribe", "channel": format!("wide:u{i}"), "since": {"offset": offset, "epoch": epoch}})).await;
        assert_eq!(r["result"]["recovered"], true, "{r}");
        assert_eq!(read_ns(&mut c, 5).await, vec![2, 3, 4, 5, 6]);
        publish(&a.hub, &format!("wide:u{i}"), 7).await;
        assert_eq!(read_ns(&mut c, 1).await, vec![7], "live again after the replay");
    }
}

/// The two-hub seam test: presence is one list, and the 4th connection of
/// a user anywhere closes the oldest, on the node that holds it, which then
/// announces the leave everywhere.
async fn presence_and_the_per_user_limit_span_the_nodes(d: Deployment) {
    let (a, b) = (d.node().await, d.node().await);
    let mut watcher = Client::open(&b, &token("wendy", &[])).await;
    watcher.request(json!({"type": "subscribe", "channel": "chat:p"})).await;
    let mut first = Client::open(&a, &token("alice", &[])).await;
    first.request(json!({"type": "subscribe", "channel": "chat:p"})).await;
    presence_event(&mut watcher, "presence_joined", "alice").await;
    for c in [&mut watcher, &mut first] {
        let r = c.request(json!({"type": "presence", "channel": "chat:p"})).await;
        assert_eq!(r["result"]["users"], json!([{"user_id": "alice", "connections": 1}, {"user_id": "wendy", "connections": 1}]), "either node lists both");
    }

    // Three more of alice's connections, two on the other node: the oldest (on a) goes.
    let second = Client::open(&a, &token("alice", &[])).await;
    let third = Client::open(&b, &token("alice", &[])).await;
    let fourth = Client::open(&b, &token("alice", &[])).await;
    loop {
        match first.next().await {
            Item::Closed(code) => break assert_eq!(code, CloseCode::ConnectionLimit),
            Item::Frame(_) => {}
        }
    }
    drop(first);
    presence_event(&mut watcher, "presence_left", "alice").await;
    for c in [&second, &third, &fourth] {
        assert_eq!(c.outbound.closed(), None, "exactly the oldest went");
    }
    let r = watcher.request(json!({"type": "presence", "channel": "chat:p"})).await;
    assert_eq!(r["result"]["users"], json!([{"user_id": "wendy", "connections": 1}]));
}

async fn an_admin_disconnect_reaches_every_node(d: Deployment) {
    let (a, b) = (d.node().await, d.node().await);
    let mut on_a = Client::open(&a, &token("mallory", &[])).await;
    let mut on_b = Client::open(&b, &token("mallory", &[])).await;
    let mut bystander = Client::open(&b, &token("bob", &[])).await;
    a.hub.disconnect_user(&UserId::new("mallory"), CloseCode::Revoked).await.unwrap();
    for c in [&mut on_a, &mut on_b] {
        loop {
            match c.next().await {
                Item::Closed(code) => break assert_eq!(code, CloseCode::Revoked),
                Item::Frame(_) => {}
            }
        }
    }
    assert_eq!(bystander.request(json!({"type": "ping"})).await["result"]["pong"], true, "only that user");
    // The transports end closed sessions; then only the bystander is registered.
    on_a.close().await;
    on_b.close().await;
    assert_eq!((a.hub.connection_count(), b.hub.connection_count()), (0, 1));
    let left = a.hub.backplane().registry.connections(&UserId::new("mallory")).await.unwrap();
    assert!(left.is_empty(), "{left:?}");
}

async fn maintenance_set_on_one_node_applies_on_every_node(d: Deployment) {
    let (a, b) = (d.node().await, d.node().await);
    a.hub.set_maintenance(MaintenanceMode::On { message: Some("upgrading".into()), since_ms: d.clock.now_ms() }).await.unwrap();
    assert!(a.hub.in_maintenance(), "at once on the node that set it");
    eventually("maintenance on the other node", || b.hub.in_maintenance()).await;
    assert_eq!(b.hub.maintenance(), a.hub.maintenance());
    assert!(b.hub.check_maintenance("publishing").is_err());
    // A node that starts while maintenance is on starts in it: Redis replays
    // the recent controls to a node that joins. (The in-memory engine serves
    // one process, where no node joins later.)
    if d.engine == Engine::Redis {
        let c = d.node().await;
        eventually("maintenance on a node started during it", || c.hub.in_maintenance()).await;
        b.hub.set_maintenance(MaintenanceMode::Off).await.unwrap();
        eventually("maintenance off everywhere", || !a.hub.in_maintenance() && !c.hub.in_maintenance()).await;
    } else {
        b.hub.set_maintenance(MaintenanceMode::Off).await.unwrap();
        eventually("maintenance off everywhere", || !a.hub.in_maintenance()).await;
    }
}

/// The engine drops events older than the namespace's `history_ttl`
/// (`brief:` keeps a minute), by the deployment's clock: a position that
/// needs them is told to refetch, on any node.
async fn history_older_than_its_ttl_is_not_recovered(d: Deployment) {
    let (a, b) = (d.node().await, d.node().await);
    let mut c = Client::open(&a, &token("alice", &[])).await;
    c.request(json!({"type": "subscribe", "channel": "brief:x"})).await;
    publish(&a.hub, "brief:x", 1).await;
    let f = c.until("publication").await.pop().unwrap();
    let since = json!({"offset": f["offset"], "epoch": f["epoch"]});
    c.close().await;
    publish(&a.hub, "brief:x", 2).await;

    // Within the ttl: recovered exactly.
    d.clock.advance_ms(30_000);
    let mut c = Client::open(&b, &token("alice", &[])).await;
    let r = c.request(json!({"type": "subscribe", "channel": "brief:x", "since": since})).await;
    assert_eq!(r["result"]["recovered"], true, "{r}");
    assert_eq!(read_ns(&mut c, 1).await, vec![2]);
    c.close().await;

    // Past the ttl of event 2: gone from history, so the position cannot be recovered.
    d.clock.advance_ms(31_000);
    let mut c = Client::open(&b, &token("alice", &[])).await;
    let r = c.request(json!({"type": "subscribe", "channel": "brief:x", "since": since})).await;
    assert_eq!(r["result"]["recovered"], false, "{r}");
    let f = c.frame().await;
    assert_eq!((f["type"].as_str(), f["channel"].as_str()), (Some("recovery_failed"), Some("brief:x")), "{f}");
    let r = c.request(json!({"type": "history", "channel": "brief:x", "limit": 10})).await;
    assert_eq!(r["result"]["events"], json!([]), "{r}");
}
