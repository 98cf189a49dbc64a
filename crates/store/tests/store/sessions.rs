use chorus_clock::Clock as _;
use chorus_store::*;

use crate::common::*;

both_engines!(session_lifecycle, session_rotation, session_revocation, session_cleanup_in_batches, api_keys);

fn new_session(user: &User, hash: &str, ttl: i64) -> NewAuthSession {
    NewAuthSession {
        user_id: user.id.clone(),
        refresh_token_hash: hash.into(),
        expires_at: T0 + ttl,
        user_agent: Some("test-agent/1".into()),
        ip: Some("127.0.0.1".into()),
    }
}

async fn session_lifecycle(t: Ctx) {
    let u = t.user("alice").await;
    let s = t.store.create_session(new_session(&u, "h1", 24 * HOUR)).await.unwrap();
    assert_eq!((s.created_at, s.last_seen_at, s.revoked_at), (T0, T0, None));
    assert!(s.is_live(T0) && !s.is_idle(T0, 30 * 60_000));
    assert_eq!(t.store.get_session(&s.id).await.unwrap(), Some(s.clone()));
    assert_eq!(t.store.get_live_session_by_refresh_hash("h1").await.unwrap(), Some(s.clone()));
    assert_eq!(t.store.get_live_session_by_refresh_hash("nope").await.unwrap(), None);

    // Unknown user, taken hash.
    let ghost = User { id: "ghost".into(), ..u.clone() };
    assert_eq!(t.store.create_session(new_session(&ghost, "h2", HOUR)).await, Err(StoreError::NotFound));
    assert!(matches!(t.store.create_session(new_session(&u, "h1", HOUR)).await, Err(StoreError::Conflict(_))));

    // Touch moves last_seen; idleness is judged from it.
    t.clock.advance_ms(20 * 60_000);
    assert!(t.store.touch_session(&s.id).await.unwrap());
    let touched = t.store.get_session(&s.id).await.unwrap().unwrap();
    assert_eq!(touched.last_seen_at, T0 + 20 * 60_000);
    t.clock.advance_ms(31 * 60_000);
    assert!(touched.is_idle(t.clock.now_ms(), 30 * 60_000));
    assert!(!t.store.touch_session("missing").await.unwrap());

    // Listing: live sessions only, newest first.
    let s2 = t.store.create_session(new_session(&u, "h2", 48 * HOUR)).await.unwrap();
    let listed: Vec<String> = t.store.list_sessions(&u.id).await.unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(listed, vec![s2.id.clone(), s.id.clone()]);

    // Past absolute expiry: not live anywhere, cannot be touched.
    t.clock.set_ms(T0 + 24 * HOUR);
    assert_eq!(t.store.get_live_session_by_refresh_hash("h1").await.unwrap(), None);
    assert!(!t.store.touch_session(&s.id).await.unwrap());
    assert_eq!(t.store.list_sessions(&u.id).await.unwrap().len(), 1);
    assert!(t.store.get_session(&s.id).await.unwrap().is_some(), "kept until cleanup");
}

async fn session_rotation(t: Ctx) {
    let u = t.user("alice").await;
    let s = t.store.create_session(new_session(&u, "old", HOUR)).await.unwrap();
    t.clock.advance_ms(1000);
    let rotated = t.store.rotate_session_refresh(&s.id, "old", "new").await.unwrap();
    assert_eq!(rotated.refresh_token_hash, "new");
    assert_eq!(rotated.last_seen_at, T0 + 1000);
    assert_eq!(t.store.get_live_session_by_refresh_hash("old").await.unwrap(), None);
    assert_eq!(t.store.get_live_session_by_refresh_hash("new").await.unwrap(), Some(rotated));
    // The exchanged hash is remembered with its session; the current one is not "used".
    assert_eq!(t.store.get_session_by_used_refresh_hash("old").await.unwrap().map(|s| s.id), Some(s.id.clone()));
    assert_eq!(t.store.get_session_by_used_refresh_hash("new").await.unwrap(), None);
    assert_eq!(t.store.get_session_by_used_refresh_hash("never").await.unwrap(), None);
    // A replayed old token loses: compare-and-swap on the hash.
    assert_eq!(t.store.rotate_session_refresh(&s.id, "old", "other").await, Err(StoreError::NotFound));
    assert_eq!(t.store.rotate_session_refresh("missing", "new", "x").await, Err(StoreError::NotFound));
    // The new hash must be unique.
    let s2 = t.store.create_session(new_session(&u, "taken", HOUR)).await.unwrap();
    assert!(matches!(t.store.rotate_session_refresh(&s2.id, "taken", "new").await, Err(StoreError::Conflict(_))));
    // Revoked sessions cannot rotate.
    t.store.revoke_session(&s.id, None).await.unwrap();
    assert_eq!(t.store.rotate_session_refresh(&s.id, "new", "newer").await, Err(StoreError::NotFound));
    // Found in any state, so a reuse after revocation is still recognised.
    assert!(t.store.get_session_by_used_refresh_hash("old").await.unwrap().unwrap().revoked_at.is_some());
}

async fn session_revocation(t: Ctx) {
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let a1 = t.store.create_session(new_session(&alice, "a1", HOUR)).await.unwrap();
    let a2 = t.store.create_session(new_session(&alice, "a2", HOUR)).await.unwrap();
    let a3 = t.store.create_session(new_session(&alice, "a3", HOUR)).await.unwrap();
    let b1 = t.store.create_session(new_session(&bob, "b1", HOUR)).await.unwrap();

    // Owner-checked: bob cannot find alice's session.
    assert_eq!(t.store.revoke_session(&a1.id, Some(&bob.id)).await, Err(StoreError::NotFound));
    assert_eq!(t.store.revoke_session("missing", None).await, Err(StoreError::NotFound));
    assert!(t.store.revoke_session(&a1.id, Some(&alice.id)).await.unwrap());
    assert!(!t.store.revoke_session(&a1.id, Some(&alice.id)).await.unwrap(), "already revoked");
    let revoked = t.store.get_session(&a1.id).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(T0));
    assert!(!revoked.is_live(T0));
    assert_eq!(t.store.get_live_session_by_refresh_hash("a1").await.unwrap(), None);
    assert!(!t.store.touch_session(&a1.id).await.unwrap());

    // Admin revoke (no owner).
    assert!(t.store.revoke_session(&a2.id, None).await.unwrap());

    // All of a user's live sessions.
    let a4 = t.store.create_session(new_session(&alice, "a4", HOUR)).await.unwrap();
    let mut ids = t.store.revoke_user_sessions(&alice.id).await.unwrap();
    ids.sort();
    let mut expected = vec![a3.id, a4.id];
    expected.sort();
    assert_eq!(ids, expected);
    assert!(t.store.list_sessions(&alice.id).await.unwrap().is_empty());
    assert_eq!(t.store.list_sessions(&bob.id).await.unwrap().len(), 1);
    assert!(t.store.get_live_session_by_refresh_hash("b1").await.unwrap().is_some());

    // An expired session is not "live" when revoked.
    t.clock.set_ms(T0 + HOUR);
    assert!(!t.store.revoke_session(&b1.id, None).await.unwrap());
}

async fn session_cleanup_in_batches(t: Ctx) {
    let u = t.user("alice").await;
    // 3 absolutely expired at T0+1h, 4 idle (seen only at T0), 2 revoked, 2 fresh.
    for i in 0..3 {
        t.store.create_session(new_session(&u, &format!("exp{i}"), HOUR)).await.unwrap();
    }
    let mut idle = Vec::new();
    for i in 0..4 {
        idle.push(t.store.create_session(new_session(&u, &format!("idle{i}"), 48 * HOUR)).await.unwrap());
    }
    for i in 0..2 {
        let s = t.store.create_session(new_session(&u, &format!("rev{i}"), 48 * HOUR)).await.unwrap();
        t.store.revoke_session(&s.id, None).await.unwrap();
    }
    t.clock.set_ms(T0 + 2 * HOUR);
    let mut fresh = Vec::new();
    for i in 0..2 {
        fresh.push(
            t.store
                .create_session(NewAuthSession {
                    expires_at: T0 + 48 * HOUR,
                    ..new_session(&u, &format!("fresh{i}"), 0)
                })
                .await
                .unwrap(),
        );
    }
    // Idle means: not seen in the last 30 minutes.
    let idle_cutoff = t.clock.now_ms() - 30 * 60_000;

    let first = t.store.delete_expired_sessions(idle_cutoff, 2).await.unwrap();
    assert_eq!(first, SessionCleanup { expired: 2, idle: 2, revoked: 2 });
    // The last expired one may already have gone as idle (it was never touched either).
    let second = t.store.delete_expired_sessions(idle_cutoff, 2).await.unwrap();
    let third = t.store.delete_expired_sessions(idle_cutoff, 2).await.unwrap();
    assert_eq!(second.revoked + third.revoked, 0);
    assert_eq!(second.total() + third.total(), 3);
    assert_eq!(t.store.delete_expired_sessions(idle_cutoff, 2).await.unwrap().total(), 0);
    assert_eq!(t.store.delete_expired_sessions(idle_cutoff, 0).await.unwrap().total(), 0);

    let left: Vec<String> = t.store.list_sessions(&u.id).await.unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(left.len(), 2);
    for s in &fresh {
        assert!(left.contains(&s.id));
    }
    for s in &idle {
        assert_eq!(t.store.get_session(&s.id).await.unwrap(), None);
    }
}

async fn api_keys(t: Ctx) {
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let new_key = |user: &User, hash: &str| NewApiKey {
        user_id: user.id.clone(),
        name: "ci".into(),
        prefix: "chk_ab12".into(),
        key_hash: hash.into(),
        scope: None,
    };
    let scoped = t.store.create_api_key(NewApiKey { scope: Some(r#"{"agent":"a1"}"#.into()), ..new_key(&bob, "kh0") }).await.unwrap();
    assert_eq!(t.store.get_live_api_key_by_hash("kh0").await.unwrap().unwrap().scope.as_deref(), Some(r#"{"agent":"a1"}"#));
    assert_eq!(t.store.list_api_keys(&bob.id).await.unwrap(), vec![scoped]);
    let k1 = t.store.create_api_key(new_key(&alice, "kh1")).await.unwrap();
    assert_eq!((k1.created_at, k1.last_used_at, k1.revoked_at), (T0, None, None));
    assert_eq!(t.store.get_live_api_key_by_hash("kh1").await.unwrap(), Some(k1.clone()));
    assert_eq!(t.store.get_live_api_key_by_hash("nope").await.unwrap(), None);
    match t.store.create_api_key(new_key(&bob, "kh1")).await {
        Err(StoreError::Conflict(m)) => assert!(m.contains("api key"), "{m}"),
        other => panic!("{other:?}"),
    }
    let ghost = User { id: "ghost".into(), ..alice.clone() };
    assert_eq!(t.store.create_api_key(new_key(&ghost, "kh9")).await, Err(StoreError::NotFound));

    t.clock.advance_ms(10);
    let k2 = t.store.create_api_key(new_key(&alice, "kh2")).await.unwrap();
    t.store.create_api_key(new_key(&bob, "kh3")).await.unwrap();
    let listed: Vec<String> = t.store.list_api_keys(&alice.id).await.unwrap().into_iter().map(|k| k.id).collect();
    assert_eq!(listed, vec![k2.id.clone(), k1.id.clone()]);

    t.clock.advance_ms(5);
    t.store.touch_api_key(&k1.id).await.unwrap();
    assert_eq!(t.store.get_live_api_key_by_hash("kh1").await.unwrap().unwrap().last_used_at, Some(T0 + 15));
    assert_eq!(t.store.touch_api_key("missing").await, Err(StoreError::NotFound));

    // Revocation is owner-checked.
    assert_eq!(t.store.revoke_api_key(&bob.id, &k1.id).await, Err(StoreError::NotFound));
    assert_eq!(t.store.revoke_api_key(&alice.id, "missing").await, Err(StoreError::NotFound));
    assert!(t.store.revoke_api_key(&alice.id, &k1.id).await.unwrap());
    assert!(!t.store.revoke_api_key(&alice.id, &k1.id).await.unwrap());
    assert_eq!(t.store.get_live_api_key_by_hash("kh1").await.unwrap(), None);
    let listed = t.store.list_api_keys(&alice.id).await.unwrap();
    assert_eq!(listed.len(), 2, "revoked keys are still listed");
    assert_eq!(listed[1].revoked_at, Some(T0 + 15));
}
