//! Test harness: runs a test body against both engines, each on its own
//! database (SQLite: a temp directory; PostgreSQL: a database created for
//! the test and dropped after), so tests can run in parallel.
//!
//! PostgreSQL tests read `CHORUS_TEST_POSTGRES_URL` (an admin URL; CI and
//! `scripts/test-services.sh start` provide it) and fail without it.

#![allow(dead_code)]

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;

use chorus_clock::ManualClock;
use chorus_store::*;
use futures_util::FutureExt;
use sqlx::Connection;

pub const POSTGRES_ENV: &str = "CHORUS_TEST_POSTGRES_URL";
/// An arbitrary fixed start: 2026-01-01T00:00:00Z.
pub const T0: i64 = 1_767_225_600_000;
pub const HOUR: i64 = 3_600_000;

/// What a test body gets.
#[derive(Clone)]
pub struct Ctx {
    pub engine: Engine,
    pub store: Arc<dyn Store>,
    pub clock: ManualClock,
    /// Enough to open a second store on the same database.
    pub config: StoreConfig,
    pub data_dir: PathBuf,
}

impl Ctx {
    /// Opens another handle on the same database (not migrated).
    pub async fn reopen(&self) -> Arc<dyn Store> {
        open_store_with_clock(&self.config, &self.data_dir, Arc::new(self.clock.clone())).await.expect("reopening the test store")
    }

    pub async fn user(&self, name: &str) -> User {
        self.store
            .create_user(NewUser {
                username: name.into(),
                email: None,
                password_hash: Some("hash".into()),
                role: UserRole::User,
                external: None,
            })
            .await
            .expect("creating a user")
    }

    pub async fn channel(&self, owner: &User, name: &str) -> Channel {
        self.store
            .create_channel(
                NewChannel { name: name.into(), topic: None, owner_id: owner.id.clone(), retention_ms: None },
                100,
            )
            .await
            .expect("creating a channel")
    }

    pub async fn agent(&self, owner: &User, name: &str) -> Agent {
        self.store.create_agent(new_agent(owner, name), 100).await.expect("creating an agent")
    }

    /// Sends a message without idempotency key; panics unless inserted.
    pub async fn send(&self, channel: &Channel, author: &MemberRef, text: &str) -> MessageWrite {
        match self
            .store
            .insert_message(
                NewMessage { channel_id: channel.id.clone(), author: author.clone(), text: text.into() },
                None,
                &created_event,
            )
            .await
            .expect("inserting a message")
        {
            InsertOutcome::Inserted(w) => w,
            InsertOutcome::Duplicate(m) => panic!("unexpected duplicate {m:?}"),
        }
    }
}

pub fn new_agent(owner: &User, name: &str) -> NewAgent {
    NewAgent {
        owner_id: owner.id.clone(),
        name: name.into(),
        persona: "A helpful test agent.".into(),
        quirks: vec!["terse".into(), "uses emoji".into()],
        model: "demo".into(),
        tools: vec!["clock".into()],
        response_policy: "mention".into(),
    }
}

/// The event the services would build: it embeds what only the transaction knows (id, seq).
pub fn created_event(m: &Message) -> OutboxEvent {
    event_for("message_created", m)
}

pub fn updated_event(m: &Message) -> OutboxEvent {
    event_for("message_updated", m)
}

pub fn deleted_event(m: &Message) -> OutboxEvent {
    event_for("message_deleted", m)
}

fn event_for(kind: &str, m: &Message) -> OutboxEvent {
    OutboxEvent {
        channel: format!("room:{}", m.channel_id),
        event_type: kind.into(),
        payload: format!(r#"{{"id":"{}","seq":{},"text":"{}"}}"#, m.id, m.seq, m.text),
    }
}

enum Cleanup {
    Dir(PathBuf),
    Database { admin_url: String, name: String },
}

/// Runs `body` against a fresh, migrated store of `engine`, then removes the
/// database, also when the body panics.
pub async fn run<F, Fut>(engine: Engine, body: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    let id = uuid::Uuid::new_v4().simple().to_string();
    let data_dir = std::env::temp_dir().join(format!("chorus-store-test-{id}"));
    let (config, cleanup) = match engine {
        Engine::Sqlite => {
            (StoreConfig { max_connections: Some(4), ..StoreConfig::default() }, Cleanup::Dir(data_dir.clone()))
        }
        Engine::Postgres => {
            let admin_url = std::env::var(POSTGRES_ENV).unwrap_or_default();
            assert!(
                !admin_url.trim().is_empty(),
                "{POSTGRES_ENV} is not set: PostgreSQL store tests need a server. \
                 Run `eval \"$(scripts/test-services.sh start)\"` first (CI always sets it)."
            );
            let name = format!("chorus_test_{id}");
            let mut admin = sqlx::PgConnection::connect(&admin_url)
                .await
                .unwrap_or_else(|e| panic!("connecting to {POSTGRES_ENV} ({}): {e}", redact_url(&admin_url)));
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                .execute(&mut admin)
                .await
                .expect("creating the test database");
            let _ = admin.close().await;
            let url = with_database(&admin_url, &name);
            (
                StoreConfig { url: Some(url), max_connections: Some(8), ..StoreConfig::default() },
                Cleanup::Database { admin_url, name },
            )
        }
    };
    let clock = ManualClock::starting_at(T0);
    let store = open_store_with_clock(&config, &data_dir, Arc::new(clock.clone())).await.expect("opening the test store");
    store.migrate().await.expect("migrating the test store");
    let ctx = Ctx { engine, store: store.clone(), clock, config, data_dir };

    let outcome = AssertUnwindSafe(body(ctx)).catch_unwind().await;

    store.close().await;
    drop(store);
    match cleanup {
        Cleanup::Dir(dir) => {
            let _ = std::fs::remove_dir_all(dir);
        }
        Cleanup::Database { admin_url, name } => {
            if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))
                    .execute(&mut admin)
                    .await;
                let _ = admin.close().await;
            }
        }
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// `postgres://u@h:p/old?x=y` with the database replaced.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    let authority_end = base[after_scheme..].find('/').map(|i| i + after_scheme).unwrap_or(base.len());
    let mut out = format!("{}/{}", &base[..authority_end], database);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Declares each named `async fn(Ctx)` as two tests, `<name>::sqlite` and
/// `<name>::postgres`.
macro_rules! both_engines {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    $crate::common::run(chorus_store::Engine::Sqlite, super::$name).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    $crate::common::run(chorus_store::Engine::Postgres, super::$name).await
                }
            }
        )+
    };
}
