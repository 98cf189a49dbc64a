//! PostgreSQL: one pool, connections health-checked before use and
//! recycled after `max_lifetime`.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chorus_clock::Clock;
use sqlx::Postgres as Db;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::model::PoolStats;
use crate::{Engine, StoreError};
use crate::config::{DEFAULT_POSTGRES_CONNECTIONS, StoreConfig};

type This = PostgresStore;
const ENGINE: Engine = Engine::Postgres;
static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

macro_rules! for_update {
    ($sql:expr) => {
        concat!($sql, " FOR UPDATE")
    };
}
// Rows another transaction holds are left to it (outbox claims).
macro_rules! skip_locked {
    ($sql:expr) => {
        concat!($sql, " FOR UPDATE SKIP LOCKED")
    };
}
// Serialises writers of the row without blocking inserts that reference it.
macro_rules! for_no_key_update {
    ($sql:expr) => {
        concat!($sql, " FOR NO KEY UPDATE")
    };
}

/// The PostgreSQL implementation of [`Store`](crate::Store).
pub struct PostgresStore {
    // One pool serves both roles; the shared code names them apart for SQLite.
    writer: PgPool,
    reader: PgPool,
    clock: Arc<dyn Clock>,
}

impl PostgresStore {
    /// Connects (one connection, to fail early on a bad URL). Does not migrate.
    pub(crate) async fn open(config: &StoreConfig, url: &str, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)?.application_name("chorus");
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections.unwrap_or(DEFAULT_POSTGRES_CONNECTIONS).max(1))
            .acquire_timeout(config.acquire_timeout)
            .test_before_acquire(true)
            .max_lifetime(config.max_lifetime)
            .idle_timeout(Duration::from_secs(600))
            .connect_with(options)
            .await?;
        Ok(Self { writer: pool.clone(), reader: pool, clock })
    }

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Db>, StoreError> {
        Ok(self.writer.begin().await?)
    }

    fn stats(&self) -> PoolStats {
        PoolStats {
            size: self.writer.size(),
            idle: u32::try_from(self.writer.num_idle()).unwrap_or(u32::MAX),
            max: self.writer.options().get_max_connections(),
        }
    }

    async fn close_pools(&self) {
        self.writer.close().await;
    }
}

// The operations, compiled for this engine: both engines load the same
// files, each with its own `Db`.
#[allow(clippy::duplicate_mod)]
#[path = "queries/mod.rs"]
mod queries;
