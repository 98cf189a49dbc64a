//! The Redis engine against real `redis-server` processes this test starts
//! (each test its own, on a free port): fan-out, history and epochs,
//! restarts, lost pub/sub connections, the per-user limit across nodes,
//! dead nodes, degraded mode, control replay and key hygiene.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a failure should stop the test where it happens.

mod support;

use std::sync::Arc;
use std::time::Duration;

use chorus_core::broker::{
    Broker, BrokerError, ConnectionCursor, ConnectionRegistry, Control, Health, HistoryQuery, PresenceEntry, PresenceStore, RegisteredConnection, Retention,
};
use chorus_core::maintenance::MaintenanceMode;
use chorus_core::publication::{Draft, Position};
use chorus_core::{ConnId, NodeId, Transport, UserId};
use chorus_protocol::{ChannelName, CloseCode, EventType, Payload};
use chorus_redis::RedisBrokerConfig;
use serde_json::json;

use support::*;

const KEEP: Retention = Retention { max_events: 1000, ttl: Duration::from_secs(3600) };

fn ch(s: &str) -> ChannelName {
    ChannelName::parse(s).unwrap()
}

fn draft(n: u64) -> Draft {
    Draft::new(EventType::Publication, Payload::from_value(&json!({ "n": n })).unwrap())
}

async fn publish(n: &TestNode, channel: &str, i: u64) -> Arc<chorus_core::publication::Publication> {
    let mut d = draft(i);
    d.origin = Some(n.engine.node().clone());
    n.engine.publish(&ch(channel), d, KEEP).await.unwrap()
}

async fn until_degraded(engine: &chorus_redis::RedisBroker) {
    // A deadline against a hang, not a speed check.
    assert!(engine.until_degraded(Duration::from_secs(10)).await, "not degraded: {:?}", engine.health());
}

fn since(offset: u64, epoch: &str, limit: usize) -> HistoryQuery {
    HistoryQuery::Since { position: Position { offset, epoch: Arc::from(epoch) }, limit }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_every_listening_node_in_order_and_history_serves_recovery() {
    let redis = RedisServer::start();
    let a = node("a", &redis.url()).await;
    let b = node("b", &redis.url()).await;
    for n in [&a, &b] {
        n.engine.listen(n.engine.node(), &ch("room:x")).await.unwrap();
    }
    let mut epoch = String::new();
    for i in 1..=200 {
        let p = publish(&a, "room:x", i).await;
        assert_eq!(p.offset, i);
        epoch = p.epoch.to_string();
    }
    let expected: Vec<u64> = (1..=200).collect();
    for n in [&a, &b] {
        n.sink.until("200 events", Duration::from_secs(5), |s| s.offsets("room:x").len() >= 200).await;
        assert_eq!(n.sink.offsets("room:x"), expected, "every node gets every event once, in offset order");
    }
    let p = b.sink.publications.lock()[41].clone();
    assert_eq!((p.offset, p.event, p.origin.clone()), (42, EventType::Publication, Some(NodeId::new("a"))));
    assert_eq!(p.data.as_bytes().as_ref(), br#"{"n":42}"#);

    // Recovery from any node: exactly what was missed.
    let page = b.engine.history(&ch("room:x"), since(190, &epoch, 100), KEEP).await.unwrap();
    assert_eq!(page.publications.iter().map(|p| p.offset).collect::<Vec<_>>(), (191..=200).collect::<Vec<_>>());
    assert_eq!(page.current, Position { offset: 200, epoch: Arc::from(epoch.as_str()) });
    let latest = b.engine.history(&ch("room:x"), HistoryQuery::Latest { limit: 3 }, KEEP).await.unwrap();
    assert_eq!(latest.publications.iter().map(|p| p.offset).collect::<Vec<_>>(), vec![198, 199, 200]);
    assert!(matches!(b.engine.history(&ch("room:x"), since(5, "other", 10), KEEP).await, Err(BrokerError::Unrecoverable { .. })));
    assert!(matches!(b.engine.history(&ch("room:x"), since(201, &epoch, 10), KEEP).await, Err(BrokerError::Unrecoverable { .. })));

    // Unlistened: no more deliveries to that node.
    b.engine.unlisten(b.engine.node(), &ch("room:x")).await.unwrap();
    publish(&a, "room:x", 201).await;
    a.sink.until("event 201", Duration::from_secs(5), |s| s.offsets("room:x").len() == 201).await;
    assert_eq!(b.sink.offsets("room:x").len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_trimmed_by_length_and_age() {
    let redis = RedisServer::start();
    // Event times and the age cut-off come from the node's clock, moved by the test.
    let clock = chorus_clock::ManualClock::starting_now();
    let a = node_with_clock("a", config(&redis.url()), Arc::new(clock.clone())).await;
    assert!(a.engine.until_up(Duration::from_secs(5)).await);
    let short = Retention { max_events: 3, ttl: Duration::from_secs(3600) };
    let mut epoch = String::new();
    for i in 1..=5 {
        epoch = a.engine.publish(&ch("room:t"), draft(i), short).await.unwrap().epoch.to_string();
    }
    let page = a.engine.history(&ch("room:t"), HistoryQuery::Latest { limit: 10 }, short).await.unwrap();
    assert_eq!(page.publications.iter().map(|p| p.offset).collect::<Vec<_>>(), vec![3, 4, 5]);
    assert!(matches!(a.engine.history(&ch("room:t"), since(1, &epoch, 10), short).await, Err(BrokerError::Unrecoverable { .. })));
    assert_eq!(a.engine.history(&ch("room:t"), since(2, &epoch, 10), short).await.unwrap().publications.len(), 3);

    let brief = Retention { max_events: 100, ttl: Duration::from_secs(60) };
    a.engine.publish(&ch("room:age"), draft(1), brief).await.unwrap();
    clock.advance(Duration::from_secs(61));
    let p = a.engine.publish(&ch("room:age"), draft(2), brief).await.unwrap();
    let page = a.engine.history(&ch("room:age"), HistoryQuery::Latest { limit: 10 }, brief).await.unwrap();
    assert_eq!(page.publications.iter().map(|p| p.offset).collect::<Vec<_>>(), vec![2], "the old event aged out");
    assert!(matches!(a.engine.history(&ch("room:age"), since(0, &p.epoch, 10), brief).await, Err(BrokerError::Unrecoverable { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_from_an_older_snapshot_starts_a_new_epoch() {
    let mut redis = RedisServer::start();
    let a = node("a", &redis.url()).await;
    for i in 1..=5 {
        publish(&a, "room:s", i).await;
    }
    redis.save();
    let mut before = None;
    for i in 6..=10 {
        before = Some(publish(&a, "room:s", i).await);
    }
    let before = before.unwrap();
    // Within the same second as the save: LASTSAVE alone could not tell.
    redis.restart();
    assert!(a.engine.until_up(Duration::from_secs(5)).await);
    let after = publish(&a, "room:s", 11).await;
    assert_ne!(after.epoch, before.epoch, "offsets 6..10 would otherwise be reused");
    assert_eq!(after.offset, 1);
    let old = since(before.offset, &before.epoch, 10);
    assert!(matches!(a.engine.history(&ch("room:s"), old, KEEP).await, Err(BrokerError::Unrecoverable { .. })));

    // Restarted empty: a new epoch too.
    redis.kill();
    let _ = std::fs::remove_file(redis.dir.join("dump.rdb"));
    redis.restart();
    assert!(a.engine.until_up(Duration::from_secs(5)).await);
    let empty = publish(&a, "room:s", 12).await;
    assert_ne!(empty.epoch, after.epoch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_pubsub_connection_is_resubscribed_and_missed_events_are_handed_over() {
    let redis = RedisServer::start();
    let a = node("a", &redis.url()).await;
    let b = node("b", &redis.url()).await;
    b.engine.listen(b.engine.node(), &ch("room:k")).await.unwrap();
    publish(&a, "room:k", 1).await;
    b.sink.until("first event", Duration::from_secs(5), |s| s.offsets("room:k") == [1]).await;
    redis.cli(&["client", "kill", "type", "pubsub"]).unwrap();
    // Published while b's subscriptions are gone.
    publish(&a, "room:k", 2).await;
    b.sink.until("the missed event's position", Duration::from_secs(5), |s| s.offsets("room:k").contains(&2)).await;
    publish(&a, "room:k", 3).await;
    b.sink.until("live again", Duration::from_secs(5), |s| s.offsets("room:k").contains(&3)).await;
    let offsets = b.sink.offsets("room:k");
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "never out of order: {offsets:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_user_limit_holds_across_nodes_and_the_holder_is_told() {
    let redis = RedisServer::start();
    let a = node("a", &redis.url()).await;
    let b = node("b", &redis.url()).await;
    let user = UserId::new("alice");
    let reg = |node: &str, i: i64| RegisteredConnection { conn: ConnId::random(), user: user.clone(), node: NodeId::new(node), since_ms: i, transport: Transport::WebSocket };
    let first = reg("a", 3);
    assert!(a.engine.register(first.clone(), 3).await.unwrap().is_empty());
    assert!(a.engine.register(reg("a", 2), 3).await.unwrap().is_empty());
    // Node b's clock is behind: order is Redis's, not the clocks'.
    assert!(b.engine.register(reg("b", 1), 3).await.unwrap().is_empty());
    let evicted = b.engine.register(reg("b", 0), 3).await.unwrap();
    assert_eq!(evicted.iter().map(|e| e.conn).collect::<Vec<_>>(), vec![first.conn]);
    assert_eq!(evicted[0].node, NodeId::new("a"));
    assert_eq!(b.engine.connections(&user).await.unwrap().len(), 3);
    // The hub sends the eviction to the holder; the engine carries it.
    let close = Control::Disconnect { user: user.clone(), conn: first.conn, code: CloseCode::ConnectionLimit };
    b.engine.control(Some(&NodeId::new("a")), close.clone()).await.unwrap();
    a.sink.until("the disconnect", Duration::from_secs(5), |s| s.controls.lock().contains(&close)).await;
    assert!(!b.sink.controls.lock().contains(&close), "addressed to a only");
    for c in b.engine.connections(&user).await.unwrap() {
        let holder = if c.node == NodeId::new("a") { &a } else { &b };
        holder.engine.unregister(&user, c.conn).await.unwrap();
    }
    assert!(a.engine.connections(&user).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_list_pages_through_every_nodes_connections() {
    let redis = RedisServer::start();
    let a = node("a", &redis.url()).await;
    let b = node("b", &redis.url()).await;
    let mut expected = Vec::new();
    for i in 0..9_i64 {
        let (holder, name) = if i % 3 == 0 { (&b, "b") } else { (&a, "a") };
        let e = RegisteredConnection {
            conn: ConnId::random(),
            user: UserId::new(format!("u{}", i % 4)),
            node: NodeId::new(name),
            // One tie: the id decides.
            since_ms: 1_000 + (i / 2),
            transport: if i == 4 { Transport::Sse } else { Transport::WebSocket },
        };
        assert!(holder.engine.register(e.clone(), 10).await.unwrap().is_empty());
        expected.push(e);
    }
    expected.sort_by_key(RegisteredConnection::cursor);
    for asker in [&a, &b] {
        let mut seen = Vec::new();
        let mut after: Option<ConnectionCursor> = None;
        loop {
            let page = asker.engine.page(after.as_ref(), 4).await.unwrap();
            assert_eq!(page.total, 9);
            assert!(page.connections.len() <= 4);
            seen.extend(page.connections);
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, expected, "every node's connections once, in order, with node and transport");
    }
    // Released and evicted ones leave the list; a killed node's go with its heartbeat.
    let gone = expected.iter().find(|e| e.node == NodeId::new("a")).unwrap().clone();
    a.engine.unregister(&gone.user, gone.conn).await.unwrap();
    assert_eq!(b.engine.page(None, 100).await.unwrap().total, 8);
    let crowd = UserId::new("u1");
    let newest = RegisteredConnection { conn: ConnId::random(), user: crowd.clone(), node: NodeId::new("b"), since_ms: 5_000, transport: Transport::WebSocket };
    let evicted = b.engine.register(newest, 1).await.unwrap();
    assert!(!evicted.is_empty());
    for e in &evicted {
        // What the hub does once the holder closes it.
        let holder = if e.node == NodeId::new("a") { &a } else { &b };
        holder.engine.unregister(&e.user, e.conn).await.unwrap();
    }
    let listed = a.engine.page(None, 100).await.unwrap();
    assert_eq!(listed.total as usize, 9 - evicted.len());
    assert!(listed.connections.iter().all(|c| !evicted.iter().any(|e| e.conn == c.conn)));
    a.engine.halt().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let page = b.engine.page(None, 100).await.unwrap();
        if page.connections.iter().all(|c| c.node == NodeId::new("b")) {
            assert_eq!(page.total as usize, page.connections.len());
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the dead node's connections stayed listed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_users_opening_a_fourth_connection_at_once_keep_exactly_three() {
    let redis = RedisServer::start();
    let a = node("a", &redis.url()).await;
    let b = node("b", &redis.url()).await;
    let users: Vec<UserId> = (0..1000).map(|i| UserId::new(format!("u{i}"))).collect();
    let mut oldest = Vec::new();
    for (i, u) in users.iter().enumerate() {
        for k in 0..3 {
            let e = RegisteredConnection { conn: ConnId::random(), user: u.clone(), node: NodeId::new("a"), since_ms: (i * 3 + k) as i64, transport: Transport::WebSocket };
            if k == 0 {
                oldest.push(e.conn);
            }
            a.engine.register(e, 3).await.unwrap();
        }
    }
    let calls = users.iter().map(|u| {
        let e = RegisteredConnection { conn: ConnId::random(), user: u.clone(), node: NodeId::new("b"), since_ms: 0, transport: Transport::WebSocket };
        b.engine.register(e, 3)
    });
    let results = futures_util::future::join_all(calls).await;
    for (i, r) in results.into_iter().enumerate() {
        let evicted = r.unwrap();
        assert_eq!(evicted.iter().map(|e| e.conn).collect::<Vec<_>>(), vec![oldest[i]], "user {i}: exactly the oldest goes");
    }
    for u in users.iter().step_by(97) {
        assert_eq!(a.engine.connections(u).await.unwrap().len(), 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_presence_and_connections_vanish_and_its_users_are_announced_left() {
    let redis = RedisServer::start();
    let a = node("a", &redis.url()).await;
    let doomed = node("doomed", &redis.url()).await;
    let room = ch("room:p");
    let ghost = UserId::new("ghost");
    let conn = ConnId::random();
    doomed.engine.register(RegisteredConnection { conn, user: ghost.clone(), node: NodeId::new("doomed"), since_ms: 0, transport: Transport::WebSocket }, 3).await.unwrap();
    assert!(doomed.engine.join(&room, PresenceEntry { conn, user: ghost.clone(), node: NodeId::new("doomed") }).await.unwrap());
    assert_eq!(a.engine.list(&room).await.unwrap().len(), 1);
    doomed.engine.halt().await;
    // node_ttl is 1.5 s in tests (30 s bound in production: 20 s + a heartbeat).
    let expired = Control::PresenceExpired { channel: room.clone(), user: ghost.clone() };
    a.sink.until("the ghost's presence to expire", Duration::from_secs(10), |s| s.controls.lock().contains(&expired)).await;
    assert!(a.engine.list(&room).await.unwrap().is_empty());
    assert!(!a.engine.is_present(&room, &ghost).await.unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !a.engine.connections(&ghost).await.unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the dead node's registrations stayed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_delivery_stays_local_on_a_new_epoch_and_comes_back() {
    let mut redis = RedisServer::start();
    let a = node("a", &redis.url()).await;
    a.engine.listen(a.engine.node(), &ch("room:d")).await.unwrap();
    let before = publish(&a, "room:d", 1).await;
    a.sink.until("first event", Duration::from_secs(5), |s| s.offsets("room:d").len() == 1).await;

    redis.kill();
    until_degraded(&a.engine).await;
    let local = publish(&a, "room:d", 2).await;
    assert_ne!(local.epoch, before.epoch, "local offsets never pass for Redis's");
    a.sink.until("the local event", Duration::from_secs(2), |s| s.publications.lock().iter().any(|p| p.epoch == local.epoch)).await;
    assert!(matches!(a.engine.list(&ch("room:d")).await, Err(BrokerError::Unavailable(_))));
    // The per-user limit holds on this node meanwhile.
    let u = UserId::new("bob");
    let reg = || RegisteredConnection { conn: ConnId::random(), user: u.clone(), node: NodeId::new("a"), since_ms: 0, transport: Transport::WebSocket };
    let first = reg();
    a.engine.register(first.clone(), 2).await.unwrap();
    a.engine.register(reg(), 2).await.unwrap();
    assert_eq!(a.engine.register(reg(), 2).await.unwrap().iter().map(|e| e.conn).collect::<Vec<_>>(), vec![first.conn]);

    redis.restart();
    // `until_up` returns once the recovery has finished, registrations
    // written back included (not merely once commands work again).
    assert!(a.engine.until_up(Duration::from_secs(10)).await, "back to normal after Redis returns");
    assert!(matches!(a.engine.health(), Health::Up { .. }), "{:?}", a.engine.health());
    // Redis learned of the connections opened meanwhile.
    assert_eq!(a.engine.connections(&u).await.unwrap().len(), 2);
    let p = publish(&a, "room:d", 3).await;
    a.sink.until("delivery through Redis again", Duration::from_secs(5), |s| s.publications.lock().iter().any(|q| q.epoch == p.epoch)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_degrades_then_recovers_without_losing_acknowledged_events() {
    let redis = RedisServer::start();
    let quick = || RedisBrokerConfig { command_timeout: Duration::from_millis(300), ..config(&redis.url()) };
    let a = node_with("a", quick()).await;
    assert!(a.engine.until_up(Duration::from_secs(5)).await);
    let b = node("b", &redis.url()).await;
    b.engine.listen(b.engine.node(), &ch("room:z")).await.unwrap();
    let first = publish(&a, "room:z", 1).await;
    b.sink.until("first", Duration::from_secs(5), |s| s.offsets("room:z").len() == 1).await;
    redis.pause();
    until_degraded(&a.engine).await;
    redis.resume();
    assert!(a.engine.until_up(Duration::from_secs(5)).await);
    assert!(b.engine.until_up(Duration::from_secs(5)).await);
    let next = publish(&a, "room:z", 2).await;
    b.sink.until("live after the pause", Duration::from_secs(5), |s| s.publications.lock().iter().any(|p| p.offset == next.offset && p.epoch == next.epoch)).await;
    assert_eq!(next.epoch, first.epoch, "a pause is not a restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_reaches_a_node_that_was_cut_off_and_one_that_starts_later() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(redis.port).await;
    let a = node("a", &redis.url()).await;
    let b = node("b", &proxy.url()).await;
    proxy.cut();
    until_degraded(&b.engine).await;
    let close = Control::DisconnectUser { user: UserId::new("mallory"), code: CloseCode::AdminDisconnect };
    a.engine.control(None, close.clone()).await.unwrap();
    let on = MaintenanceMode::On { message: Some("upgrading".into()), since_ms: 1 };
    a.engine.control(None, Control::Maintenance(on.clone())).await.unwrap();
    a.sink.until("a's own copy", Duration::from_secs(5), |s| s.controls.lock().contains(&close)).await;
    proxy.heal();
    b.sink.until("the replayed disconnect", Duration::from_secs(5), |s| s.controls.lock().contains(&close)).await;
    b.sink.until("maintenance", Duration::from_secs(5), |s| s.controls.lock().contains(&Control::Maintenance(on.clone()))).await;
    assert_eq!(b.sink.controls.lock().iter().filter(|c| **c == close).count(), 1, "applied once");

    let c = node("c", &redis.url()).await;
    assert!(c.sink.controls.lock().contains(&Control::Maintenance(on)), "a node starting during maintenance knows at once");
    assert!(!c.sink.controls.lock().contains(&close), "a new node does not replay old disconnects");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_channels_leave_no_keys_behind() {
    let redis = RedisServer::start();
    let mut cfg = config(&redis.url());
    cfg.meta_ttl = Duration::from_secs(1);
    // A loaded test machine must not count as Redis being away.
    cfg.command_timeout = Duration::from_secs(3);
    let a = node_with("a", cfg).await;
    assert!(a.engine.until_up(Duration::from_secs(5)).await);
    let start = redis.dbsize();
    let brief = Retention { max_events: 10, ttl: Duration::from_millis(500) };
    let user = UserId::new("walker");
    let channels: Vec<ChannelName> = (0..100_000).map(|i| ch(&format!("room:c{i}"))).collect();
    let (engine, user) = (&a.engine, &user);
    for (b, batch) in channels.chunks(200).enumerate() {
        let calls = batch.iter().enumerate().map(|(i, c)| async move {
            // Presence on a tenth of them (it leaves nothing once they leave).
            let conn = ConnId::random();
            let present = i % 10 == 0;
            if present {
                engine.join(c, PresenceEntry { conn, user: user.clone(), node: NodeId::new("a") }).await.unwrap();
            }
            engine.publish(c, draft(1), brief).await.unwrap();
            if present {
                engine.leave(c, conn, user).await.unwrap();
            }
        });
        futures_util::future::join_all(calls).await;
        if b == 0 {
            assert!(redis.dbsize() >= start + 300, "a stream and a meta per fresh channel");
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while redis.dbsize() > start + 10 {
        assert!(tokio::time::Instant::now() < deadline, "{} keys left", redis.dbsize());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
