use std::sync::Arc;
use std::time::Duration;

use chorus_store::*;
use sqlx::Connection;

use crate::common::*;

both_engines!(migrations_are_idempotent, health_and_pool_stats, closed_store_is_unavailable);

async fn migrations_are_idempotent(t: Ctx) {
    let before = t.user("alice").await;
    // Again on the same handle, then from a second handle (as `chorus migrate` beside a server).
    t.store.migrate().await.unwrap();
    let other = t.reopen().await;
    other.migrate().await.unwrap();
    other.migrate().await.unwrap();
    assert_eq!(other.get_user(&before.id).await.unwrap(), Some(before));
    other.close().await;
}

async fn health_and_pool_stats(t: Ctx) {
    let health = t.store.health().await.unwrap();
    assert_eq!(health.engine, t.engine);
    assert_eq!(t.store.engine(), t.engine);
    assert!(health.latency < Duration::from_secs(5));
    let stats = t.store.pool_stats();
    assert!(stats.size >= 1 && stats.size <= stats.max && stats.idle <= stats.size, "{stats:?}");
    match t.engine {
        Engine::Sqlite => assert_eq!(stats.max, 1 + 4, "one writer plus the readers"),
        Engine::Postgres => assert_eq!(stats.max, 8),
    }
}

async fn closed_store_is_unavailable(t: Ctx) {
    let other = t.reopen().await;
    other.close().await;
    let err = other.get_user("nobody").await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(err.is_transient());
    // The first handle is unaffected.
    assert_eq!(t.store.get_user("nobody").await.unwrap(), None);
}

#[tokio::test]
async fn sqlite_default_file_is_in_data_dir_with_wal() {
    let dir = std::env::temp_dir().join(format!("chorus-store-test-{}", uuid::Uuid::new_v4().simple()));
    let data_dir = dir.join("nested");
    let store = open_store(&StoreConfig::default(), &data_dir).await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.engine(), Engine::Sqlite);
    store.close().await;
    let file = data_dir.join(DEFAULT_SQLITE_FILE);
    assert!(file.exists(), "{} should exist", file.display());
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", file.display())).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut conn).await.unwrap();
    assert_eq!(mode, "wal");
    conn.close().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn sqlite_url_and_in_memory() {
    let dir = std::env::temp_dir().join(format!("chorus-store-test-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("other.db");
    let config = StoreConfig {
        url: Some(format!("sqlite://{}", file.display())),
        sqlite_synchronous: SqliteSynchronous::Full,
        ..StoreConfig::default()
    };
    let store = open_store(&config, &dir).await.unwrap();
    store.migrate().await.unwrap();
    store.close().await;
    assert!(file.exists());
    assert!(!dir.join(DEFAULT_SQLITE_FILE).exists());
    let _ = std::fs::remove_dir_all(dir);

    let memory = StoreConfig { url: Some("sqlite::memory:".into()), ..StoreConfig::default() };
    let store = open_store(&memory, std::path::Path::new(".")).await.unwrap();
    store.migrate().await.unwrap();
    let user = store
        .create_user(NewUser {
            username: "mem".into(),
            email: None,
            password_hash: None,
            role: UserRole::User,
            external: None,
        })
        .await
        .unwrap();
    assert_eq!(store.get_user(&user.id).await.unwrap(), Some(user));
    assert_eq!(store.pool_stats().max, 1);
    store.close().await;
}

#[tokio::test]
async fn invalid_url_is_a_config_error() {
    let config = StoreConfig { url: Some("mysql://u:secret@h/db".into()), ..StoreConfig::default() };
    let err = open_store(&config, std::path::Path::new(".")).await.err().unwrap();
    match err {
        StoreError::InvalidConfig(m) => assert!(!m.contains("secret"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn postgres_unreachable_is_unavailable() {
    // Nothing listens on port 1.
    let config = StoreConfig {
        url: Some("postgres://postgres@127.0.0.1:1/postgres".into()),
        acquire_timeout: Duration::from_secs(2),
        ..StoreConfig::default()
    };
    let err = open_store(&config, std::path::Path::new(".")).await.err().unwrap();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn postgres_pool_defaults() {
    let url = std::env::var(POSTGRES_ENV).unwrap_or_default();
    assert!(!url.is_empty(), "{POSTGRES_ENV} is not set: run `eval \"$(scripts/test-services.sh start)\"` first");
    let config = StoreConfig { url: Some(url), ..StoreConfig::default() };
    assert_eq!(config.max_lifetime, Duration::from_secs(3600));
    assert_eq!(config.acquire_timeout, Duration::from_secs(5));
    let store: Arc<dyn Store> = open_store(&config, std::path::Path::new(".")).await.unwrap();
    assert_eq!(store.pool_stats().max, DEFAULT_POSTGRES_CONNECTIONS);
    assert_eq!(store.health().await.unwrap().engine, Engine::Postgres);
    store.close().await;
}
