//! Durable storage for Chorus: the [`Store`] trait and its SQLite and
//! PostgreSQL implementations on sqlx.
//!
//! A composition root calls [`open_store`] with the `[store]` configuration,
//! then [`Store::migrate`], and hands the `Arc<dyn Store>` to the services.
//! The store keeps data consistent where only the database can
//! (uniqueness, per-owner limits, message sequence numbers, idempotency
//! keys, the outbox written with each message); validation and permissions
//! beyond that are the caller's.
//!
//! ```no_run
//! # async fn demo() -> Result<(), chorus_store::StoreError> {
//! use chorus_store::*;
//!
//! let store = open_store(&StoreConfig::default(), std::path::Path::new("chorus-data")).await?;
//! store.migrate().await?;
//! let owner = store
//!     .create_user(NewUser {
//!         username: "alice".into(),
//!         email: None,
//!         password_hash: Some("$argon2id$...".into()),
//!         role: UserRole::User,
//!         external: None,
//!     })
//!     .await?;
//! let channel = store
//!     .create_channel(NewChannel { name: "general".into(), topic: None, owner_id: owner.id.clone(), retention_ms: None }, 5)
//!     .await?;
//! // The event is built from the stored message (id, seq) inside the transaction.
//! let event = |m: &Message| OutboxEvent {
//!     channel: format!("room:{}", m.channel_id),
//!     event_type: "message_created".into(),
//!     payload: format!(r#"{{"id":"{}","seq":{}}}"#, m.id, m.seq),
//! };
//! let new = NewMessage { channel_id: channel.id, author: MemberRef::user(&owner.id), text: "hi".into() };
//! match store.insert_message(new, Some("client-key-1"), &event).await? {
//!     InsertOutcome::Inserted(write) => { /* publish, then store.delete_outbox(&[write.outbox_id]) */ }
//!     InsertOutcome::Duplicate(original) => { /* acknowledge `original` again */ }
//! }
//! # Ok(()) }
//! ```

mod config;
mod error;
mod model;
pub mod private;
mod sql;
mod store;

use std::path::Path;
use std::sync::Arc;

use chorus_clock::{Clock, SystemClock};

pub use config::{
    DEFAULT_POSTGRES_CONNECTIONS, DEFAULT_SQLITE_FILE, DEFAULT_SQLITE_READERS, Engine, SqliteSynchronous, StoreConfig,
    redact_url,
};
pub use error::StoreError;
pub use model::*;
pub use sql::postgres::PostgresStore;
pub use sql::sqlite::SqliteStore;
pub use store::{IDEMPOTENCY_WINDOW_MS, MAX_PAGE, Store, StoreResult};

use config::Target;

/// Opens the store the configuration points at (engine chosen by the URL
/// scheme; SQLite `<data_dir>/chorus.db` by default). Does not migrate: call
/// [`Store::migrate`] next.
pub async fn open_store(config: &StoreConfig, data_dir: &Path) -> Result<Arc<dyn Store>, StoreError> {
    open_store_with_clock(config, data_dir, Arc::new(SystemClock)).await
}

/// Whether opening may create the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Creates a missing SQLite file (and its directory), private to this user.
    Create,
    /// Only an existing database: a missing SQLite file is an error naming
    /// where it was looked for. For tools that read what a server wrote.
    Existing,
}

/// Like [`open_store`], but a missing SQLite database is an error instead of
/// a new empty one.
pub async fn open_existing_store(config: &StoreConfig, data_dir: &Path) -> Result<Arc<dyn Store>, StoreError> {
    open_store_in(config, data_dir, Arc::new(SystemClock), OpenMode::Existing).await
}

/// [`open_store`] with the clock timestamps come from: the composition
/// root's one clock (tests move it by hand).
pub async fn open_store_with_clock(
    config: &StoreConfig,
    data_dir: &Path,
    clock: Arc<dyn Clock>,
) -> Result<Arc<dyn Store>, StoreError> {
    open_store_in(config, data_dir, clock, OpenMode::Create).await
}

async fn open_store_in(config: &StoreConfig, data_dir: &Path, clock: Arc<dyn Clock>, mode: OpenMode) -> Result<Arc<dyn Store>, StoreError> {
    let store: Arc<dyn Store> = match config.target(data_dir)? {
        Target::Sqlite { url, default_file } => {
            Arc::new(SqliteStore::open(config, url.as_deref(), &default_file, clock, mode).await?)
        }
        Target::Postgres { url } => Arc::new(PostgresStore::open(config, &url, clock).await?),
    };
    tracing::debug!(engine = %store.engine(), "store opened");
    Ok(store)
}
