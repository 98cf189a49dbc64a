use chorus_store::*;

use crate::common::*;

both_engines!(create_and_get_users, usernames_are_unique_ignoring_case, external_identities, list_count_and_roles);

fn new_user(name: &str) -> NewUser {
    NewUser {
        username: name.into(),
        email: Some(format!("{name}@example.com")),
        password_hash: Some("$argon2id$...".into()),
        role: UserRole::User,
        external: None,
    }
}

async fn create_and_get_users(t: Ctx) {
    let alice = t.store.create_user(new_user("Alice")).await.unwrap();
    assert_eq!(alice.username, "Alice");
    assert_eq!(alice.created_at, T0);
    assert_eq!(alice.role, UserRole::User);
    assert_eq!(uuid::Uuid::parse_str(&alice.id).unwrap().get_version_num(), 7);
    assert_eq!(t.store.get_user(&alice.id).await.unwrap(), Some(alice.clone()));
    assert_eq!(t.store.get_user_by_username("alice").await.unwrap(), Some(alice.clone()));
    assert_eq!(t.store.get_user_by_username("ALICE").await.unwrap(), Some(alice.clone()));
    assert_eq!(t.store.get_user("missing").await.unwrap(), None);
    assert_eq!(t.store.get_user_by_username("bob").await.unwrap(), None);

    // Optional fields absent.
    let bare = t
        .store
        .create_user(NewUser {
            username: "bare".into(),
            email: None,
            password_hash: None,
            role: UserRole::Admin,
            external: None,
        })
        .await
        .unwrap();
    assert_eq!(t.store.get_user(&bare.id).await.unwrap(), Some(bare));
}

async fn usernames_are_unique_ignoring_case(t: Ctx) {
    t.store.create_user(new_user("Carol")).await.unwrap();
    for taken in ["Carol", "carol", "CAROL"] {
        match t.store.create_user(new_user(taken)).await {
            Err(StoreError::Conflict(m)) => assert!(m.contains("username"), "{m}"),
            other => panic!("{taken}: {other:?}"),
        }
    }
    // Non-ASCII names compare the same on both engines.
    t.store.create_user(new_user("Ünal")).await.unwrap();
    assert!(matches!(t.store.create_user(new_user("ünal")).await, Err(StoreError::Conflict(_))));
    assert_eq!(t.store.count_users().await.unwrap(), 2);
}

async fn external_identities(t: Ctx) {
    let ext = ExternalIdentity { issuer: "https://idp.example".into(), subject: "sub-1".into() };
    let user = t
        .store
        .create_user(NewUser { external: Some(ext.clone()), password_hash: None, ..new_user("ext") })
        .await
        .unwrap();
    assert_eq!(t.store.get_user_by_external(&ext.issuer, &ext.subject).await.unwrap(), Some(user.clone()));
    assert_eq!(t.store.get_user_by_external(&ext.issuer, "sub-2").await.unwrap(), None);
    assert_eq!(t.store.get_user_by_external("other", &ext.subject).await.unwrap(), None);
    match t.store.create_user(NewUser { external: Some(ext.clone()), ..new_user("ext2") }).await {
        Err(StoreError::Conflict(m)) => assert!(m.contains("external identity"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Same subject at another issuer is someone else.
    t.store
        .create_user(NewUser {
            external: Some(ExternalIdentity { issuer: "other".into(), subject: "sub-1".into() }),
            ..new_user("ext3")
        })
        .await
        .unwrap();
    // Many users without an external identity do not collide.
    t.user("local1").await;
    t.user("local2").await;
}

async fn list_count_and_roles(t: Ctx) {
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(t.user(&format!("user{i}")).await.id);
        t.clock.advance_ms(1);
    }
    assert_eq!(t.store.count_users().await.unwrap(), 7);
    let first = t.store.list_users(None, 3).await.unwrap();
    assert_eq!(first.iter().map(|u| u.id.clone()).collect::<Vec<_>>(), ids[0..3]);
    let second = t.store.list_users(Some(&first[2].id), 3).await.unwrap();
    assert_eq!(second.iter().map(|u| u.id.clone()).collect::<Vec<_>>(), ids[3..6]);
    let last = t.store.list_users(Some(&second[2].id), 3).await.unwrap();
    assert_eq!(last.len(), 1);
    assert!(t.store.list_users(Some(&last[0].id), 3).await.unwrap().is_empty());
    assert!(t.store.list_users(None, 0).await.unwrap().is_empty());

    assert_eq!(t.store.count_admins().await.unwrap(), 0);
    let admin = t.store.set_user_role(&ids[1], UserRole::Admin).await.unwrap();
    assert_eq!(admin.role, UserRole::Admin);
    assert_eq!(t.store.get_user(&ids[1]).await.unwrap().unwrap().role, UserRole::Admin);
    t.store.create_user(NewUser { role: UserRole::Admin, ..new_user("root") }).await.unwrap();
    assert_eq!(t.store.count_admins().await.unwrap(), 2);
    t.store.set_user_role(&ids[1], UserRole::User).await.unwrap();
    assert_eq!(t.store.count_admins().await.unwrap(), 1);
    assert_eq!(t.store.set_user_role("missing", UserRole::Admin).await, Err(StoreError::NotFound));
}
