use chorus_store::*;

use crate::common::*;

both_engines!(retention_in_batches, idempotency_key_cleanup);

async fn retention_in_batches(t: Ctx) {
    let alice = t.user("alice").await;
    let a = MemberRef::user(&alice.id);
    let short = t
        .store
        .create_channel(
            NewChannel { name: "short".into(), topic: None, owner_id: alice.id.clone(), retention_ms: Some(HOUR) },
            10,
        )
        .await
        .unwrap();
    let long = t
        .store
        .create_channel(
            NewChannel { name: "long".into(), topic: None, owner_id: alice.id.clone(), retention_ms: Some(10 * HOUR) },
            10,
        )
        .await
        .unwrap();
    let forever = t.channel(&alice, "forever").await;

    // 7 messages in each channel at T0, then 2 more in `short` at T0 + 2h.
    for i in 0..7 {
        for c in [&short, &long, &forever] {
            t.send(c, &a, &format!("old {i}")).await;
        }
    }
    t.clock.set_ms(T0 + 2 * HOUR);
    let recent = t.send(&short, &a, "recent 1").await.message;
    t.send(&short, &a, "recent 2").await;
    let keyed = t
        .store
        .insert_message(
            NewMessage { channel_id: short.id.clone(), author: a.clone(), text: "k".into() },
            Some("key"),
            &created_event,
        )
        .await
        .unwrap();
    assert!(matches!(keyed, InsertOutcome::Inserted(_)));

    // At T0 + 2h, only `short`'s first 7 are past retention: deleted 3 at a time.
    assert_eq!(t.store.delete_expired_messages(3).await.unwrap(), 3);
    assert_eq!(t.store.delete_expired_messages(3).await.unwrap(), 3);
    assert_eq!(t.store.delete_expired_messages(3).await.unwrap(), 1);
    assert_eq!(t.store.delete_expired_messages(3).await.unwrap(), 0);
    assert_eq!(t.store.delete_expired_messages(0).await.unwrap(), 0);

    let all = |c: &Channel| {
        let store = t.store.clone();
        let id = c.id.clone();
        async move { store.list_messages(&id, MessagePage { limit: 100, ..Default::default() }).await.unwrap() }
    };
    let left = all(&short).await;
    assert_eq!(left.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![10, 9, 8]);
    assert_eq!(left[2], recent);
    assert_eq!(all(&long).await.len(), 7);
    assert_eq!(all(&forever).await.len(), 7);

    // Sequences go on from where they were.
    assert_eq!(t.send(&short, &a, "next").await.message.seq, 11);

    // Later, `long` expires too; `forever` never does.
    t.clock.set_ms(T0 + 100 * HOUR);
    let mut total = 0;
    loop {
        let n = t.store.delete_expired_messages(4).await.unwrap();
        total += n;
        if n < 4 {
            break;
        }
    }
    assert_eq!(total, 4 + 7);
    assert_eq!(all(&forever).await.len(), 7);
    // The idempotency key went with its message: the same key inserts anew.
    let again = t
        .store
        .insert_message(
            NewMessage { channel_id: short.id.clone(), author: a.clone(), text: "k".into() },
            Some("key"),
            &created_event,
        )
        .await
        .unwrap();
    assert!(matches!(again, InsertOutcome::Inserted(_)));
}

async fn idempotency_key_cleanup(t: Ctx) {
    let alice = t.user("alice").await;
    let a = MemberRef::user(&alice.id);
    let c = t.channel(&alice, "general").await;
    let insert = |key: String| {
        let store = t.store.clone();
        let m = NewMessage { channel_id: c.id.clone(), author: a.clone(), text: "t".into() };
        async move { store.insert_message(m, Some(&key), &created_event).await.unwrap() }
    };
    for i in 0..5 {
        insert(format!("old{i}")).await;
    }
    t.clock.set_ms(T0 + 10 * HOUR);
    for i in 0..2 {
        insert(format!("new{i}")).await;
    }
    let cutoff = T0 + HOUR;
    assert_eq!(t.store.delete_idempotency_keys_before(cutoff, 2).await.unwrap(), 2);
    assert_eq!(t.store.delete_idempotency_keys_before(cutoff, 10).await.unwrap(), 3);
    assert_eq!(t.store.delete_idempotency_keys_before(cutoff, 10).await.unwrap(), 0);
    assert_eq!(t.store.delete_idempotency_keys_before(i64::MAX, 0).await.unwrap(), 0);
    // Cleaned keys no longer deduplicate; kept ones do; messages are untouched.
    assert!(matches!(insert("old0".into()).await, InsertOutcome::Inserted(_)));
    assert!(matches!(insert("new0".into()).await, InsertOutcome::Duplicate(_)));
    assert_eq!(t.store.list_messages(&c.id, MessagePage { limit: 100, ..Default::default() }).await.unwrap().len(), 8);
}
