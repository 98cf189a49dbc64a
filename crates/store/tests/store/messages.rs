use std::collections::BTreeSet;
use std::sync::Arc;

use chorus_store::*;

use crate::common::*;

both_engines!(
    insert_allocates_seq_and_outbox,
    failed_inserts_write_nothing,
    insert_is_atomic,
    idempotent_insert,
    idempotent_insert_concurrent,
    concurrent_inserts_keep_seq_strict,
    edit_message,
    delete_message,
    history_pagination,
    outbox_pending_and_delete,
    outbox_claims_are_exclusive_between_two_relays,
    outbox_claims_end_with_their_lease_or_a_release,
);

fn claim(owner: &str, now_ms: i64, limit: u32) -> OutboxClaim {
    OutboxClaim { owner: owner.into(), now_ms, created_until_ms: now_ms, lease_until_ms: now_ms + 60_000, limit }
}

/// Two relays (two store handles, as two nodes have) claim concurrently
/// from one database: every row goes to exactly one of them.
async fn outbox_claims_are_exclusive_between_two_relays(t: Ctx) {
    let alice = t.user("alice").await;
    let a = MemberRef::user(&alice.id);
    let c = t.channel(&alice, "general").await;
    let mut written = BTreeSet::new();
    for i in 0..300 {
        written.insert(t.send(&c, &a, &format!("m{i}")).await.outbox_id);
    }
    let other = t.reopen().await;
    let relay = |store: Arc<dyn Store>, owner: &'static str| async move {
        let mut got = Vec::new();
        loop {
            let rows = store.claim_outbox(claim(owner, T0, 7)).await.unwrap();
            if rows.is_empty() {
                return got;
            }
            assert!(rows.windows(2).all(|w| w[0].id < w[1].id), "oldest first");
            got.extend(rows.into_iter().map(|r| r.id));
            tokio::task::yield_now().await;
        }
    };
    let (one, two) = tokio::join!(tokio::spawn(relay(t.store.clone(), "node-a")), tokio::spawn(relay(other, "node-b")));
    let (one, two) = (one.unwrap(), two.unwrap());
    let a_ids: BTreeSet<i64> = one.iter().copied().collect();
    let b_ids: BTreeSet<i64> = two.iter().copied().collect();
    assert_eq!(a_ids.len() + b_ids.len(), 300, "no row claimed twice (a {}, b {})", a_ids.len(), b_ids.len());
    assert!(a_ids.is_disjoint(&b_ids));
    assert_eq!(a_ids.union(&b_ids).copied().collect::<BTreeSet<_>>(), written);
    // Claimed rows stay in the outbox until deleted, invisible to claims.
    assert_eq!(t.store.pending_outbox(1000).await.unwrap().len(), 300);
    assert!(t.store.claim_outbox(claim("node-c", T0 + 59_999, 100)).await.unwrap().is_empty());
}

async fn outbox_claims_end_with_their_lease_or_a_release(t: Ctx) {
    let alice = t.user("alice").await;
    let a = MemberRef::user(&alice.id);
    let c = t.channel(&alice, "general").await;
    let first = t.send(&c, &a, "one").await.outbox_id;
    let second = t.send(&c, &a, "two").await.outbox_id;
    // Rows younger than the claim's bound are left to the request that wrote them.
    assert!(t.store.claim_outbox(OutboxClaim { created_until_ms: T0 - 1, ..claim("a", T0, 10) }).await.unwrap().is_empty());
    let ids = |rows: Vec<OutboxRecord>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(t.store.claim_outbox(claim("a", T0, 10)).await.unwrap()), vec![first, second]);
    // A released row is free at once; a held one only when its lease ends
    // (a node that died mid-pass).
    assert_eq!(t.store.release_outbox(&[second]).await.unwrap(), 1);
    assert_eq!(ids(t.store.claim_outbox(claim("b", T0 + 1, 10)).await.unwrap()), vec![second]);
    assert!(t.store.claim_outbox(claim("c", T0 + 59_999, 10)).await.unwrap().is_empty());
    assert_eq!(ids(t.store.claim_outbox(claim("c", T0 + 60_001, 10)).await.unwrap()), vec![first]);
    assert_eq!(t.store.delete_outbox(&[first, second]).await.unwrap(), 2);
    assert!(t.store.claim_outbox(claim("d", T0 + 1_000_000, 10)).await.unwrap().is_empty());
}

fn msg(channel: &Channel, author: &MemberRef, text: &str) -> NewMessage {
    NewMessage { channel_id: channel.id.clone(), author: author.clone(), text: text.into() }
}

async fn insert_allocates_seq_and_outbox(t: Ctx) {
    let alice = t.user("alice").await;
    let a = MemberRef::user(&alice.id);
    let c1 = t.channel(&alice, "one").await;
    let c2 = t.channel(&alice, "two").await;

    let first = t.send(&c1, &a, "hello").await;
    assert_eq!(first.message.seq, 1);
    assert_eq!((first.message.text.as_str(), first.message.created_at), ("hello", T0));
    assert_eq!((first.message.edited_at, first.message.deleted_at), (None, None));
    assert_eq!(first.message.author, a);
    assert_eq!(t.send(&c1, &a, "two").await.message.seq, 2);
    // Sequences are per channel.
    assert_eq!(t.send(&c2, &a, "other").await.message.seq, 1);
    assert_eq!(t.send(&c1, &a, "three").await.message.seq, 3);
    assert_eq!(t.store.get_channel(&c1.id).await.unwrap().unwrap().last_seq, 3);
    assert_eq!(t.store.get_message(&first.message.id).await.unwrap(), Some(first.message.clone()));
    assert_eq!(t.store.get_message("missing").await.unwrap(), None);

    // The outbox row carries what only the transaction knew (id and seq).
    let pending = t.store.pending_outbox(100).await.unwrap();
    assert_eq!(pending.len(), 4);
    let row = &pending[0];
    assert_eq!(row.id, first.outbox_id);
    assert_eq!(row.channel, format!("room:{}", c1.id));
    assert_eq!(row.event_type, "message_created");
    assert_eq!(row.payload, created_event(&first.message).payload);
    assert!(row.payload.contains("\"seq\":1"));
    assert_eq!(row.created_at, T0);

    // Agents author messages too.
    let bot = t.agent(&alice, "bot").await;
    let by_bot = t.send(&c2, &MemberRef::agent(&bot.id), "beep").await;
    assert_eq!(by_bot.message.author, MemberRef::agent(&bot.id));
}

async fn failed_inserts_write_nothing(t: Ctx) {
    let alice = t.user("alice").await;
    let a = MemberRef::user(&alice.id);
    let c = t.channel(&alice, "general").await;
    t.send(&c, &a, "one").await;

    let ghost = Channel { id: "missing".into(), ..c.clone() };
    assert_eq!(t.store.insert_message(msg(&ghost, &a, "x"), None, &created_event).await, Err(StoreError::NotFound));
    assert_eq!(
        t.store.insert_message(msg(&ghost, &a, "x"), Some("k"), &created_event).await,
        Err(StoreError::NotFound)
    );

    t.store.set_channel_archived(&c.id, true).await.unwrap();
    match t.store.insert_message(msg(&c, &a, "x"), Some("k2"), &created_event).await {
        Err(StoreError::Conflict(m)) => assert!(m.contains("archived"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Nothing of the failed inserts is left: no outbox row, no message, no seq, no key.
    assert_eq!(t.store.pending_outbox(100).await.unwrap().len(), 1);
    assert_eq!(t.store.list_messages(&c.id, MessagePage { limit: 10, ..Default::default() }).await.unwrap().len(), 1);
    t.store.set_channel_archived(&c.id, false).await.unwrap();
    let next = t.store.insert_message(msg(&c, &a, "after"), Some("k2"), &created_event).await.unwrap();
    match next {
        InsertOutcome::Inserted(w) => assert_eq!(w.message.seq, 2),
        other => panic!("the key of a failed insert must stay free: {other:?}"),
    }
}

async fn insert_is_atomic(t: Ctx) {
    let alice = t.user("alice").await;
    let a = MemberRef::user(&alice.id);
    let c = t.channel(&alice, "general").await;
    t.send(&c, &a, "before").await;
    // The event builder runs after the message row is written; if it fails,
    // nothing of the insert (message, seq, key, outbox row) survives.
    let store = t.store.clone();
    let m = msg(&c, &a, "doomed");
    let crashed = tokio::spawn(async move {
        let exploding = |_: &Message| -> OutboxEvent { panic!("builder failed") };
        store.insert_message(m, Some("k"), &exploding).await
    })
    .await;
    assert!(crashed.is_err(), "the task panicked");
    let history = t.store.list_messages(&c.id, MessagePage { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(history.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), vec!["before"]);
    assert_eq!(t.store.pending_outbox(10).await.unwrap().len(), 1);
    assert_eq!(t.store.get_channel(&c.id).await.unwrap().unwrap().last_seq, 1);
    // The store is still usable, and the key was not taken.
    match t.store.insert_message(msg(&c, &a, "retry"), Some("k"), &created_event).await.unwrap() {
        InsertOutcome::Inserted(w) => assert_eq!(w.message.seq, 2),
        other => panic!("{other:?}"),
    }
    assert_eq!(t.store.pending_outbox(10).await.unwrap().len(), 2);
}

async fn idempotent_insert(t: Ctx) {
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let a = MemberRef::user(&alice.id);
    let c = t.channel(&alice, "general").await;

    let original = match t.store.insert_message(msg(&c, &a, "once"), Some("key-1"), &created_event).await.unwrap() {
        InsertOutcome::Inserted(w) => w.message,
        other => panic!("{other:?}"),
    };
    // A retry (even with other text, even to another channel) returns the original, writes nothing.
    t.clock.advance_ms(HOUR);
    let c2 = t.channel(&alice, "other").await;
    for (channel, text) in [(&c, "once"), (&c, "changed"), (&c2, "elsewhere")] {
        let again = t.store.insert_message(msg(channel, &a, text), Some("key-1"), &created_event).await.unwrap();
        assert_eq!(again, InsertOutcome::Duplicate(original.clone()));
        assert_eq!(again.message(), &original);
    }
    assert_eq!(t.store.pending_outbox(100).await.unwrap().len(), 1);
    assert_eq!(t.store.get_channel(&c.id).await.unwrap().unwrap().last_seq, 1);

    // The key is per author; other keys are independent; no key never deduplicates.
    let by_bob =
        t.store.insert_message(msg(&c, &MemberRef::user(&bob.id), "bob"), Some("key-1"), &created_event).await.unwrap();
    assert!(matches!(by_bob, InsertOutcome::Inserted(_)));
    let bot = t.agent(&alice, "bot").await;
    let by_agent_same_id = t
        .store
        .insert_message(msg(&c, &MemberRef::agent(&bot.id), "bot"), Some("key-1"), &created_event)
        .await
        .unwrap();
    assert!(matches!(by_agent_same_id, InsertOutcome::Inserted(_)));
    assert!(matches!(
        t.store.insert_message(msg(&c, &a, "k2"), Some("key-2"), &created_event).await.unwrap(),
        InsertOutcome::Inserted(_)
    ));
    t.send(&c, &a, "no key").await;
    t.send(&c, &a, "no key").await;

    // The duplicate shows the message as it is now.
    t.store.edit_message(&original.id, &a, "edited", &updated_event).await.unwrap();
    match t.store.insert_message(msg(&c, &a, "once"), Some("key-1"), &created_event).await.unwrap() {
        InsertOutcome::Duplicate(m) => assert_eq!((m.id, m.text.as_str()), (original.id.clone(), "edited")),
        other => panic!("{other:?}"),
    }

    // Just inside 24 h: still a duplicate. At 24 h: a new message, and the key now points to it.
    t.clock.set_ms(T0 + 24 * HOUR - 1);
    assert!(matches!(
        t.store.insert_message(msg(&c, &a, "once"), Some("key-1"), &created_event).await.unwrap(),
        InsertOutcome::Duplicate(_)
    ));
    t.clock.set_ms(T0 + 24 * HOUR);
    let fresh = match t.store.insert_message(msg(&c, &a, "new day"), Some("key-1"), &created_event).await.unwrap() {
        InsertOutcome::Inserted(w) => w.message,
        other => panic!("{other:?}"),
    };
    assert_ne!(fresh.id, original.id);
    let retry = t.store.insert_message(msg(&c, &a, "new day"), Some("key-1"), &created_event).await.unwrap();
    assert_eq!(retry, InsertOutcome::Duplicate(fresh));
    // The original message is still there.
    assert!(t.store.get_message(&original.id).await.unwrap().is_some());
}

async fn idempotent_insert_concurrent(t: Ctx) {
    let alice = t.user("alice").await;
    let a = MemberRef::user(&alice.id);
    let c = t.channel(&alice, "general").await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = t.store.clone();
        let m = msg(&c, &a, &format!("try {i}"));
        tasks.push(tokio::spawn(async move { store.insert_message(m, Some("same-key"), &created_event).await }));
    }
    let mut inserted = Vec::new();
    let mut duplicates = Vec::new();
    for task in tasks {
        match task.await.unwrap().unwrap() {
            InsertOutcome::Inserted(w) => inserted.push(w.message),
            InsertOutcome::Duplicate(m) => duplicates.push(m),
        }
    }
    assert_eq!(inserted.len(), 1, "exactly one insert wins");
    assert_eq!(duplicates.len(), 7);
    assert!(duplicates.iter().all(|m| m == &inserted[0]));
    assert_eq!(t.store.pending_outbox(100).await.unwrap().len(), 1);
}

async fn concurrent_inserts_keep_seq_strict(t: Ctx) {
    let alice = t.user("alice").await;
    let c = Arc::new(t.channel(&alice, "busy").await);
    let writers = 4;
    let each = 25;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = t.store.clone();
        let c = c.clone();
        let author = MemberRef::user(&alice.id);
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..each {
                let out =
                    store.insert_message(msg(&c, &author, &format!("{w}-{i}")), None, &created_event).await.unwrap();
                match out {
                    InsertOutcome::Inserted(write) => seqs.push(write.message.seq),
                    other => panic!("{other:?}"),
                }
            }
            seqs
        }));
    }
    let mut all = BTreeSet::new();
    for task in tasks {
        let seqs = task.await.unwrap();
        // Each writer sees its own messages in increasing order.
        assert!(seqs.windows(2).all(|p| p[0] < p[1]));
        all.extend(seqs);
    }
    let total = (writers * each) as i64;
    assert_eq!(all, (1..=total).collect::<BTreeSet<_>>(), "no gap, no duplicate");
    // Outbox order follows seq order within the channel.
    let pending = t.store.pending_outbox(1000).await.unwrap();
    assert_eq!(pending.len() as i64, total);
    let seqs: Vec<i64> = pending
        .iter()
        .map(|r| {
            let tail = r.payload.split("\"seq\":").nth(1).unwrap();
            tail.split(',').next().unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>());
}

async fn edit_message(t: Ctx) {
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let a = MemberRef::user(&alice.id);
    let b = MemberRef::user(&bob.id);
    let c = t.channel(&alice, "general").await;
    t.store.add_member(&c.id, &b, MemberRole::Member).await.unwrap();
    let m = t.send(&c, &b, "helo").await.message;

    t.clock.advance_ms(50);
    let edited = t.store.edit_message(&m.id, &b, "hello", &updated_event).await.unwrap();
    assert_eq!(
        (edited.message.text.as_str(), edited.message.edited_at, edited.message.seq),
        ("hello", Some(T0 + 50), m.seq)
    );
    assert_eq!(t.store.get_message(&m.id).await.unwrap(), Some(edited.message.clone()));
    let pending = t.store.pending_outbox(100).await.unwrap();
    let row = pending.iter().find(|r| r.id == edited.outbox_id).unwrap();
    assert_eq!(row.event_type, "message_updated");
    assert!(row.payload.contains("\"text\":\"hello\""));

    // Only the author: not the channel owner, not another member, not an agent.
    match t.store.edit_message(&m.id, &a, "owner edit", &updated_event).await {
        Err(StoreError::Forbidden(_)) => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        t.store.edit_message(&m.id, &MemberRef::agent(&bob.id), "x", &updated_event).await,
        Err(StoreError::Forbidden(_))
    ));
    assert_eq!(t.store.edit_message("missing", &b, "x", &updated_event).await, Err(StoreError::NotFound));

    // Archived: refused. Deleted: gone.
    t.store.set_channel_archived(&c.id, true).await.unwrap();
    assert!(matches!(t.store.edit_message(&m.id, &b, "x", &updated_event).await, Err(StoreError::Conflict(_))));
    t.store.set_channel_archived(&c.id, false).await.unwrap();
    t.store.delete_message(&m.id, &b, &deleted_event).await.unwrap();
    assert_eq!(t.store.edit_message(&m.id, &b, "x", &updated_event).await, Err(StoreError::NotFound));
    // Failed edits wrote no outbox rows: created + updated + deleted.
    assert_eq!(t.store.pending_outbox(100).await.unwrap().len(), 3);
    assert_eq!(t.store.get_message(&m.id).await.unwrap().unwrap().text, "");
}

async fn delete_message(t: Ctx) {
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let carol = t.user("carol").await;
    let (a, b, cr) = (MemberRef::user(&alice.id), MemberRef::user(&bob.id), MemberRef::user(&carol.id));
    let c = t.channel(&alice, "general").await;
    t.store.add_member(&c.id, &b, MemberRole::Member).await.unwrap();
    t.store.add_member(&c.id, &cr, MemberRole::Member).await.unwrap();
    let by_bob = t.send(&c, &b, "bob's").await.message;
    let by_bob2 = t.send(&c, &b, "bob's second").await.message;
    let by_alice = t.send(&c, &a, "alice's").await.message;

    // A plain member may not delete another's message.
    assert!(matches!(t.store.delete_message(&by_alice.id, &b, &deleted_event).await, Err(StoreError::Forbidden(_))));
    assert!(matches!(t.store.delete_message(&by_bob.id, &cr, &deleted_event).await, Err(StoreError::Forbidden(_))));

    // The author may.
    t.clock.advance_ms(7);
    let gone = t.store.delete_message(&by_bob.id, &b, &deleted_event).await.unwrap();
    assert_eq!((gone.message.text.as_str(), gone.message.deleted_at), ("", Some(T0 + 7)));
    let row = t.store.pending_outbox(100).await.unwrap().into_iter().find(|r| r.id == gone.outbox_id).unwrap();
    assert_eq!(row.event_type, "message_deleted");
    // A channel owner may delete anyone's.
    t.store.delete_message(&by_bob2.id, &a, &deleted_event).await.unwrap();
    // Twice, or unknown: NotFound.
    assert_eq!(t.store.delete_message(&by_bob.id, &b, &deleted_event).await, Err(StoreError::NotFound));
    assert_eq!(t.store.delete_message("missing", &a, &deleted_event).await, Err(StoreError::NotFound));
    // Archived: refused even to the owner.
    t.store.set_channel_archived(&c.id, true).await.unwrap();
    assert!(matches!(t.store.delete_message(&by_alice.id, &a, &deleted_event).await, Err(StoreError::Conflict(_))));

    // Deleted messages stay in history as tombstones (seq continuity).
    let page = t.store.list_messages(&c.id, MessagePage { limit: 10, ..Default::default() }).await.unwrap();
    let view: Vec<(i64, &str, bool)> = page.iter().map(|m| (m.seq, m.text.as_str(), m.deleted_at.is_some())).collect();
    assert_eq!(view, vec![(3, "alice's", false), (2, "", true), (1, "", true)]);
}

async fn history_pagination(t: Ctx) {
    let alice = t.user("alice").await;
    let a = MemberRef::user(&alice.id);
    let c = t.channel(&alice, "general").await;
    let other = t.channel(&alice, "other").await;
    for i in 1..=25 {
        t.send(&c, &a, &format!("m{i}")).await;
        t.clock.advance_ms(1);
    }
    t.send(&other, &a, "elsewhere").await;
    let seqs = |page: Vec<Message>| page.into_iter().map(|m| m.seq).collect::<Vec<_>>();
    let page = |before: Option<i64>, after: Option<i64>, limit: u32| MessagePage { before, after, limit };
    let list = |p: MessagePage| {
        let store = t.store.clone();
        let id = c.id.clone();
        async move { store.list_messages(&id, p).await.unwrap() }
    };

    // Newest first.
    assert_eq!(seqs(list(page(None, None, 5)).await), vec![25, 24, 23, 22, 21]);
    let newest = list(page(None, None, 1)).await;
    assert_eq!(newest[0].text, "m25");
    // Scrolling back with `before`.
    assert_eq!(seqs(list(page(Some(21), None, 5)).await), vec![20, 19, 18, 17, 16]);
    assert_eq!(seqs(list(page(Some(3), None, 5)).await), vec![2, 1]);
    assert!(list(page(Some(1), None, 5)).await.is_empty());
    // Catching up with `after`: the messages right after the cursor, still newest first.
    assert_eq!(seqs(list(page(None, Some(10), 3)).await), vec![13, 12, 11]);
    assert_eq!(seqs(list(page(None, Some(13), 3)).await), vec![16, 15, 14]);
    assert_eq!(seqs(list(page(None, Some(23), 5)).await), vec![25, 24]);
    assert!(list(page(None, Some(25), 5)).await.is_empty());
    assert_eq!(seqs(list(page(None, Some(0), 2)).await), vec![2, 1]);
    // Both bounds: strictly between, newest first.
    assert_eq!(seqs(list(page(Some(10), Some(5), 100)).await), vec![9, 8, 7, 6]);
    assert_eq!(seqs(list(page(Some(10), Some(5), 2)).await), vec![9, 8]);
    assert!(list(page(Some(6), Some(5), 10)).await.is_empty());
    assert!(list(page(Some(5), Some(10), 10)).await.is_empty());
    // Limits: 0 returns nothing; everything fits in a big page.
    assert!(list(page(None, None, 0)).await.is_empty());
    assert_eq!(list(page(None, None, u32::MAX)).await.len(), 25);
    // Walking the whole history backwards visits every message once.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let batch = list(page(before, None, 7)).await;
        if batch.is_empty() {
            break;
        }
        before = batch.last().map(|m| m.seq);
        seen.extend(seqs(batch));
    }
    assert_eq!(seen, (1..=25).rev().collect::<Vec<_>>());
    // Unknown channel: empty.
    assert!(t.store.list_messages("missing", page(None, None, 10)).await.unwrap().is_empty());
}

async fn outbox_pending_and_delete(t: Ctx) {
    let alice = t.user("alice").await;
    let a = MemberRef::user(&alice.id);
    let c = t.channel(&alice, "general").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(t.send(&c, &a, &format!("m{i}")).await.outbox_id);
    }
    assert!(ids.windows(2).all(|p| p[0] < p[1]), "outbox ids increase: {ids:?}");
    let pending = t.store.pending_outbox(3).await.unwrap();
    assert_eq!(pending.iter().map(|r| r.id).collect::<Vec<_>>(), ids[0..3]);
    assert!(t.store.pending_outbox(0).await.unwrap().is_empty());

    // Delivered rows go; unknown ids are ignored.
    assert_eq!(t.store.delete_outbox(&[ids[0], ids[2], 999_999]).await.unwrap(), 2);
    assert_eq!(t.store.delete_outbox(&[]).await.unwrap(), 0);
    let left: Vec<i64> = t.store.pending_outbox(100).await.unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(left, vec![ids[1], ids[3], ids[4]]);

    // Ids are never reused, even after the newest row is deleted.
    assert_eq!(t.store.delete_outbox(&left).await.unwrap(), 3);
    let next = t.send(&c, &a, "later").await.outbox_id;
    assert!(next > ids[4]);

    // A pending row survives a restart (a new handle on the same database).
    let reopened = t.reopen().await;
    let after_restart = reopened.pending_outbox(100).await.unwrap();
    assert_eq!(after_restart.len(), 1);
    assert_eq!(after_restart[0].id, next);
    reopened.close().await;

    // Large deletes are chunked.
    let many: Vec<i64> = (0..1200).map(|i| next + 1 + i).chain([next]).collect();
    assert_eq!(t.store.delete_outbox(&many).await.unwrap(), 1);
}
