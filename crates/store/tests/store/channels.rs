use std::collections::BTreeSet;

use chorus_store::*;

use crate::common::*;

both_engines!(
    channel_create_and_limit,
    channel_limit_under_concurrency,
    channel_update_and_archive,
    channel_delete_cascades,
    channels_for_user,
    members,
);

fn new_channel(owner: &User, name: &str) -> NewChannel {
    NewChannel { name: name.into(), topic: Some("topic".into()), owner_id: owner.id.clone(), retention_ms: None }
}

async fn channel_create_and_limit(t: Ctx) {
    let alice = t.user("alice").await;
    let c = t.store.create_channel(new_channel(&alice, "general"), 3).await.unwrap();
    assert_eq!((c.created_at, c.updated_at, c.archived_at, c.last_seq), (T0, T0, None, 0));
    assert_eq!(c.topic.as_deref(), Some("topic"));
    assert_eq!(t.store.get_channel(&c.id).await.unwrap(), Some(c.clone()));
    assert_eq!(t.store.get_channel("missing").await.unwrap(), None);
    // The owner is a member with role owner.
    let members = t.store.list_members(&c.id).await.unwrap();
    assert_eq!(
        members,
        vec![ChannelMember {
            channel_id: c.id.clone(),
            member: MemberRef::user(&alice.id),
            role: MemberRole::Owner,
            added_at: T0
        }]
    );
    assert!(t.store.is_member(&c.id, &alice.id).await.unwrap());

    // Up to the limit (3), then refused; archived channels still count.
    t.store.create_channel(new_channel(&alice, "two"), 3).await.unwrap();
    let third = t.store.create_channel(new_channel(&alice, "three"), 3).await.unwrap();
    t.store.set_channel_archived(&third.id, true).await.unwrap();
    match t.store.create_channel(new_channel(&alice, "four"), 3).await {
        Err(StoreError::LimitExceeded(m)) => assert!(m.contains('3'), "{m}"),
        other => panic!("{other:?}"),
    }
    // A raised limit lets one more in; others are unaffected.
    t.store.create_channel(new_channel(&alice, "four"), 4).await.unwrap();
    let bob = t.user("bob").await;
    t.store.create_channel(new_channel(&bob, "bobs"), 1).await.unwrap();
    assert!(matches!(t.store.create_channel(new_channel(&bob, "again"), 1).await, Err(StoreError::LimitExceeded(_))));
    assert!(matches!(t.store.create_channel(new_channel(&bob, "none"), 0).await, Err(StoreError::LimitExceeded(_))));
    // Deleting frees a slot.
    t.store.delete_channel(&third.id).await.unwrap();
    t.store.create_channel(new_channel(&alice, "five"), 4).await.unwrap();

    let ghost = User { id: "ghost".into(), ..alice };
    assert_eq!(t.store.create_channel(new_channel(&ghost, "x"), 5).await, Err(StoreError::NotFound));
    // Names need not be unique.
    t.store.create_channel(new_channel(&bob, "general"), 5).await.unwrap();
}

async fn channel_limit_under_concurrency(t: Ctx) {
    let alice = t.user("alice").await;
    let limit = 3;
    let mut tasks = Vec::new();
    for i in 0..12 {
        let store = t.store.clone();
        let owner = alice.clone();
        tasks.push(tokio::spawn(
            async move { store.create_channel(new_channel(&owner, &format!("c{i}")), limit).await },
        ));
    }
    let (mut created, mut refused) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => created += 1,
            Err(StoreError::LimitExceeded(_)) => refused += 1,
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!((created, refused), (3, 9));
    assert_eq!(t.store.list_channels_for_user(&alice.id).await.unwrap().len(), 3);
}

async fn channel_update_and_archive(t: Ctx) {
    let alice = t.user("alice").await;
    let c = t.channel(&alice, "general").await;
    t.clock.advance_ms(100);
    let renamed = t
        .store
        .update_channel(&c.id, ChannelUpdate { name: Some("renamed".into()), ..Default::default() })
        .await
        .unwrap();
    assert_eq!((renamed.name.as_str(), renamed.topic.as_deref(), renamed.updated_at), ("renamed", None, T0 + 100));
    let topical = t
        .store
        .update_channel(
            &c.id,
            ChannelUpdate { topic: Some(Some("news".into())), retention_ms: Some(Some(HOUR)), ..Default::default() },
        )
        .await
        .unwrap();
    assert_eq!(
        (topical.name.as_str(), topical.topic.as_deref(), topical.retention_ms),
        ("renamed", Some("news"), Some(HOUR))
    );
    let cleared = t
        .store
        .update_channel(&c.id, ChannelUpdate { topic: Some(None), retention_ms: Some(None), ..Default::default() })
        .await
        .unwrap();
    assert_eq!((cleared.topic.clone(), cleared.retention_ms), (None, None));
    assert_eq!(t.store.get_channel(&c.id).await.unwrap(), Some(cleared));
    assert_eq!(t.store.update_channel("missing", ChannelUpdate::default()).await, Err(StoreError::NotFound));

    t.clock.advance_ms(100);
    let archived = t.store.set_channel_archived(&c.id, true).await.unwrap();
    assert_eq!(archived.archived_at, Some(T0 + 200));
    t.clock.advance_ms(100);
    let again = t.store.set_channel_archived(&c.id, true).await.unwrap();
    assert_eq!(again.archived_at, Some(T0 + 200), "first archive time kept");
    let open = t.store.set_channel_archived(&c.id, false).await.unwrap();
    assert_eq!(open.archived_at, None);
    assert_eq!(t.store.set_channel_archived("missing", true).await, Err(StoreError::NotFound));
}

async fn channel_delete_cascades(t: Ctx) {
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let bot = t.agent(&alice, "bot").await;
    let c = t.channel(&alice, "general").await;
    let other = t.channel(&alice, "other").await;
    t.clock.advance_ms(1);
    t.store.add_member(&c.id, &MemberRef::user(&bob.id), MemberRole::Member).await.unwrap();
    t.clock.advance_ms(1);
    t.store.add_member(&c.id, &MemberRef::agent(&bot.id), MemberRole::Member).await.unwrap();
    t.store.add_member(&other.id, &MemberRef::agent(&bot.id), MemberRole::Member).await.unwrap();
    let m = t.send(&c, &MemberRef::user(&bob.id), "hello").await;
    let kept = t.send(&other, &MemberRef::user(&alice.id), "stay").await;
    t.store
        .insert_message(
            NewMessage { channel_id: c.id.clone(), author: MemberRef::user(&bob.id), text: "k".into() },
            Some("key"),
            &created_event,
        )
        .await
        .unwrap();

    let removed = t.store.delete_channel(&c.id).await.unwrap();
    let who: Vec<MemberRef> = removed.iter().map(|m| m.member.clone()).collect();
    assert_eq!(who, vec![MemberRef::user(&alice.id), MemberRef::user(&bob.id), MemberRef::agent(&bot.id)]);
    assert_eq!(t.store.get_channel(&c.id).await.unwrap(), None);
    assert!(t.store.list_members(&c.id).await.unwrap().is_empty());
    assert!(!t.store.is_member(&c.id, &bob.id).await.unwrap());
    assert_eq!(t.store.get_message(&m.message.id).await.unwrap(), None);
    assert!(t.store.list_messages(&c.id, MessagePage { limit: 10, ..Default::default() }).await.unwrap().is_empty());
    // The other channel is untouched.
    assert_eq!(t.store.get_message(&kept.message.id).await.unwrap(), Some(kept.message));
    assert_eq!(t.store.list_members(&other.id).await.unwrap().len(), 2);
    // Outbox rows are events already committed: they stay to be delivered.
    assert_eq!(t.store.pending_outbox(100).await.unwrap().len(), 3);
    assert_eq!(t.store.delete_channel(&c.id).await, Err(StoreError::NotFound));
}

async fn channels_for_user(t: Ctx) {
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let a = t.channel(&alice, "a").await;
    t.clock.advance_ms(1);
    let b = t.channel(&bob, "b").await;
    t.clock.advance_ms(1);
    let c = t.channel(&bob, "c").await;
    t.store.add_member(&b.id, &MemberRef::user(&alice.id), MemberRole::Member).await.unwrap();
    let listed = t.store.list_channels_for_user(&alice.id).await.unwrap();
    assert_eq!(
        listed.iter().map(|uc| (uc.channel.id.clone(), uc.role)).collect::<Vec<_>>(),
        vec![(a.id.clone(), MemberRole::Owner), (b.id.clone(), MemberRole::Member)]
    );
    assert_eq!(listed[0].channel, a);
    let bobs: BTreeSet<String> =
        t.store.list_channels_for_user(&bob.id).await.unwrap().into_iter().map(|uc| uc.channel.id).collect();
    assert_eq!(bobs, BTreeSet::from([b.id.clone(), c.id.clone()]));
    assert!(t.store.list_channels_for_user("nobody").await.unwrap().is_empty());
}

async fn members(t: Ctx) {
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let bot = t.agent(&alice, "bot").await;
    let c = t.channel(&alice, "general").await;
    let bob_ref = MemberRef::user(&bob.id);
    let bot_ref = MemberRef::agent(&bot.id);

    t.clock.advance_ms(5);
    let added = t.store.add_member(&c.id, &bob_ref, MemberRole::Member).await.unwrap();
    assert_eq!(
        added,
        ChannelMember { channel_id: c.id.clone(), member: bob_ref.clone(), role: MemberRole::Member, added_at: T0 + 5 }
    );
    match t.store.add_member(&c.id, &bob_ref, MemberRole::Owner).await {
        Err(StoreError::Conflict(m)) => assert!(m.contains("member"), "{m}"),
        other => panic!("{other:?}"),
    }
    t.clock.advance_ms(1);
    t.store.add_member(&c.id, &bot_ref, MemberRole::Member).await.unwrap();
    // Unknown channel, user or agent.
    assert_eq!(t.store.add_member("missing", &bob_ref, MemberRole::Member).await, Err(StoreError::NotFound));
    assert_eq!(
        t.store.add_member(&c.id, &MemberRef::user("ghost"), MemberRole::Member).await,
        Err(StoreError::NotFound)
    );
    assert_eq!(
        t.store.add_member(&c.id, &MemberRef::agent("ghost"), MemberRole::Member).await,
        Err(StoreError::NotFound)
    );
    // A user id is not an agent id.
    assert_eq!(
        t.store.add_member(&c.id, &MemberRef::agent(&bob.id), MemberRole::Member).await,
        Err(StoreError::NotFound)
    );

    let listed: Vec<(MemberRef, MemberRole)> =
        t.store.list_members(&c.id).await.unwrap().into_iter().map(|m| (m.member, m.role)).collect();
    assert_eq!(
        listed,
        vec![
            (MemberRef::user(&alice.id), MemberRole::Owner),
            (bob_ref.clone(), MemberRole::Member),
            (bot_ref.clone(), MemberRole::Member)
        ]
    );
    // The same members with their public profiles, in one query.
    let profiles = t.store.list_member_profiles(&c.id).await.unwrap();
    let members: Vec<ChannelMember> = profiles.iter().map(|p| p.member.clone()).collect();
    assert_eq!(members, t.store.list_members(&c.id).await.unwrap());
    let shown: Vec<(&str, Option<&str>, Option<&str>)> =
        profiles.iter().map(|p| (p.name.as_str(), p.agent_model.as_deref(), p.agent_owner_id.as_deref())).collect();
    assert_eq!(
        shown,
        vec![
            (alice.username.as_str(), None, None),
            (bob.username.as_str(), None, None),
            (bot.name.as_str(), Some(bot.model.as_str()), Some(alice.id.as_str()))
        ]
    );
    assert!(t.store.list_member_profiles("missing").await.unwrap().is_empty());
    assert_eq!(t.store.member_role(&c.id, &MemberRef::user(&alice.id)).await.unwrap(), Some(MemberRole::Owner));
    assert_eq!(t.store.member_role(&c.id, &bot_ref).await.unwrap(), Some(MemberRole::Member));
    assert_eq!(t.store.member_role(&c.id, &MemberRef::user("ghost")).await.unwrap(), None);
    assert!(t.store.is_member(&c.id, &bob.id).await.unwrap());
    // is_member is about users: an agent with that id does not count.
    assert!(!t.store.is_member(&c.id, &bot.id).await.unwrap());
    assert!(!t.store.is_member("missing", &bob.id).await.unwrap());

    assert!(t.store.remove_member(&c.id, &bob_ref).await.unwrap());
    assert!(!t.store.remove_member(&c.id, &bob_ref).await.unwrap());
    assert!(!t.store.is_member(&c.id, &bob.id).await.unwrap());
    assert!(t.store.remove_member(&c.id, &bot_ref).await.unwrap());
    assert!(!t.store.remove_member("missing", &bot_ref).await.unwrap());
    assert_eq!(t.store.list_members(&c.id).await.unwrap().len(), 1);
    // Re-adding after removal works.
    t.store.add_member(&c.id, &bob_ref, MemberRole::Owner).await.unwrap();
    assert_eq!(t.store.member_role(&c.id, &bob_ref).await.unwrap(), Some(MemberRole::Owner));
}
