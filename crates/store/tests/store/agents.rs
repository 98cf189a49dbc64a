use chorus_store::*;

use crate::common::*;

both_engines!(
    agent_crud,
    agent_limit,
    agent_limit_under_concurrency,
    agent_names,
    agent_delete_removes_memberships,
    agent_memberships
);

async fn agent_crud(t: Ctx) {
    let alice = t.user("alice").await;
    let created = t.store.create_agent(new_agent(&alice, "Helper"), 10).await.unwrap();
    assert_eq!((created.created_at, created.updated_at), (T0, T0));
    assert_eq!(created.quirks, vec!["terse".to_string(), "uses emoji".to_string()]);
    assert_eq!(created.tools, vec!["clock".to_string()]);
    assert_eq!(t.store.get_agent(&created.id).await.unwrap(), Some(created.clone()));
    assert_eq!(t.store.get_agent("missing").await.unwrap(), None);
    let ghost = User { id: "ghost".into(), ..alice.clone() };
    assert_eq!(t.store.create_agent(new_agent(&ghost, "x"), 10).await, Err(StoreError::NotFound));

    // Partial update: only the given fields change.
    t.clock.advance_ms(9);
    let updated = t
        .store
        .update_agent(
            &created.id,
            AgentUpdate { persona: Some("A different voice.".into()), quirks: Some(vec![]), ..Default::default() },
        )
        .await
        .unwrap();
    assert_eq!(updated.persona, "A different voice.");
    assert!(updated.quirks.is_empty());
    assert_eq!(
        (updated.name.as_str(), updated.model.as_str(), updated.tools.clone()),
        ("Helper", "demo", vec!["clock".to_string()])
    );
    assert_eq!((updated.created_at, updated.updated_at), (T0, T0 + 9));
    let everything = t
        .store
        .update_agent(
            &created.id,
            AgentUpdate {
                name: Some("Renamed".into()),
                persona: Some("Persona three.".into()),
                quirks: Some(vec!["a \"quoted\" quirk".into()]),
                model: Some("gpt".into()),
                tools: Some(vec!["search".into(), "calc".into()]),
                response_policy: Some("always".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(t.store.get_agent(&created.id).await.unwrap(), Some(everything.clone()));
    assert_eq!(everything.quirks, vec!["a \"quoted\" quirk".to_string()]);
    assert_eq!(t.store.update_agent("missing", AgentUpdate::default()).await, Err(StoreError::NotFound));

    t.clock.advance_ms(1);
    let second = t.agent(&alice, "Second").await;
    let listed: Vec<String> = t.store.list_agents(&alice.id).await.unwrap().into_iter().map(|a| a.id).collect();
    assert_eq!(listed, vec![created.id.clone(), second.id.clone()]);
    assert!(t.store.list_agents("nobody").await.unwrap().is_empty());

    assert_eq!(t.store.delete_agent(&created.id).await.unwrap(), Vec::<String>::new());
    assert_eq!(t.store.get_agent(&created.id).await.unwrap(), None);
    assert_eq!(t.store.delete_agent(&created.id).await, Err(StoreError::NotFound));
}

async fn agent_limit(t: Ctx) {
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    for i in 0..3 {
        t.store.create_agent(new_agent(&alice, &format!("a{i}")), 3).await.unwrap();
    }
    match t.store.create_agent(new_agent(&alice, "a3"), 3).await {
        Err(StoreError::LimitExceeded(m)) => assert!(m.contains('3'), "{m}"),
        other => panic!("{other:?}"),
    }
    // Per owner.
    t.store.create_agent(new_agent(&bob, "a0"), 3).await.unwrap();
    // Deleting frees a slot.
    let first = t.store.list_agents(&alice.id).await.unwrap().remove(0);
    t.store.delete_agent(&first.id).await.unwrap();
    t.store.create_agent(new_agent(&alice, "a3"), 3).await.unwrap();
    assert!(matches!(t.store.create_agent(new_agent(&alice, "a4"), 3).await, Err(StoreError::LimitExceeded(_))));
}

async fn agent_limit_under_concurrency(t: Ctx) {
    let alice = t.user("alice").await;
    let mut tasks = Vec::new();
    for i in 0..15 {
        let store = t.store.clone();
        let new = new_agent(&alice, &format!("agent{i}"));
        tasks.push(tokio::spawn(async move { store.create_agent(new, 10).await }));
    }
    let mut created = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => created += 1,
            Err(StoreError::LimitExceeded(_)) => {}
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(created, 10);
    assert_eq!(t.store.list_agents(&alice.id).await.unwrap().len(), 10);
}

async fn agent_names(t: Ctx) {
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let helper = t.agent(&alice, "Helper").await;
    for taken in ["Helper", "helper", "HELPER"] {
        match t.store.create_agent(new_agent(&alice, taken), 10).await {
            Err(StoreError::Conflict(m)) => assert!(m.contains("name"), "{m}"),
            other => panic!("{taken}: {other:?}"),
        }
    }
    // Another owner may use the name.
    t.agent(&bob, "helper").await;
    // Renaming onto a taken name conflicts; renaming to a case variant of one's own name works.
    let other = t.agent(&alice, "Other").await;
    assert!(matches!(
        t.store.update_agent(&other.id, AgentUpdate { name: Some("HELPER".into()), ..Default::default() }).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(t.store.get_agent(&other.id).await.unwrap().unwrap().name, "Other", "failed update changed nothing");
    let recased = t
        .store
        .update_agent(&helper.id, AgentUpdate { name: Some("HELPER".into()), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(recased.name, "HELPER");
    // A deleted agent's name is free again.
    t.store.delete_agent(&other.id).await.unwrap();
    t.agent(&alice, "other").await;
}

async fn agent_delete_removes_memberships(t: Ctx) {
    let alice = t.user("alice").await;
    let bot = t.agent(&alice, "bot").await;
    let keep = t.agent(&alice, "keep").await;
    let c1 = t.channel(&alice, "one").await;
    let c2 = t.channel(&alice, "two").await;
    let c3 = t.channel(&alice, "three").await;
    for c in [&c1, &c2] {
        t.store.add_member(&c.id, &MemberRef::agent(&bot.id), MemberRole::Member).await.unwrap();
        t.store.add_member(&c.id, &MemberRef::agent(&keep.id), MemberRole::Member).await.unwrap();
    }
    // Its messages stay (history), authored by an agent that no longer exists.
    let said = t.send(&c1, &MemberRef::agent(&bot.id), "bye").await;

    let mut left = t.store.delete_agent(&bot.id).await.unwrap();
    left.sort();
    let mut expected = vec![c1.id.clone(), c2.id.clone()];
    expected.sort();
    assert_eq!(left, expected);
    for c in [&c1, &c2] {
        assert_eq!(t.store.member_role(&c.id, &MemberRef::agent(&bot.id)).await.unwrap(), None);
        assert_eq!(t.store.member_role(&c.id, &MemberRef::agent(&keep.id)).await.unwrap(), Some(MemberRole::Member));
    }
    assert_eq!(t.store.list_members(&c3.id).await.unwrap().len(), 1);
    assert!(t.store.get_message(&said.message.id).await.unwrap().is_some());
    // It cannot be added back.
    assert_eq!(
        t.store.add_member(&c3.id, &MemberRef::agent(&bot.id), MemberRole::Member).await,
        Err(StoreError::NotFound)
    );
}

async fn agent_memberships(t: Ctx) {
    let alice = t.user("alice").await;
    let bot = t.agent(&alice, "bot").await;
    let other = t.agent(&alice, "other").await;
    assert!(t.store.list_agent_memberships(&bot.id).await.unwrap().is_empty());
    assert!(t.store.list_agent_memberships("missing").await.unwrap().is_empty());
    let c1 = t.channel(&alice, "one").await;
    let c2 = t.channel(&alice, "two").await;
    t.channel(&alice, "three").await;
    t.clock.advance_ms(5);
    for c in [&c2, &c1] {
        t.store.add_member(&c.id, &MemberRef::agent(&bot.id), MemberRole::Member).await.unwrap();
    }
    t.store.add_member(&c1.id, &MemberRef::agent(&other.id), MemberRole::Member).await.unwrap();

    let got = t.store.list_agent_memberships(&bot.id).await.unwrap();
    let mut expected = vec![c1.id.clone(), c2.id.clone()];
    expected.sort();
    assert_eq!(got.iter().map(|m| m.channel_id.clone()).collect::<Vec<_>>(), expected, "ordered by channel id");
    for m in &got {
        assert_eq!(m.member, MemberRef::agent(&bot.id));
        assert_eq!((m.role, m.added_at), (MemberRole::Member, T0 + 5));
    }
    // The owner's own (user) memberships are not the agent's.
    assert_eq!(t.store.list_agent_memberships(&other.id).await.unwrap().len(), 1);

    t.store.remove_member(&c2.id, &MemberRef::agent(&bot.id)).await.unwrap();
    assert_eq!(t.store.list_agent_memberships(&bot.id).await.unwrap().len(), 1);
    t.store.delete_agent(&bot.id).await.unwrap();
    assert!(t.store.list_agent_memberships(&bot.id).await.unwrap().is_empty());
}
