//! SQLite: one writer connection (writers queue in the pool instead of
//! spinning on `SQLITE_BUSY`) and a pool of readers; WAL journal.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use sqlx::Sqlite as Db;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::clock::Clock;
use crate::config::{DEFAULT_SQLITE_READERS, SqliteSynchronous as SyncMode, StoreConfig};

type This = SqliteStore;
const ENGINE: Engine = Engine::Sqlite;
static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

// SQLite write transactions are exclusive (`BEGIN IMMEDIATE`): no row locks needed.
macro_rules! for_update {
    ($sql:expr) => {
        $sql
    };
}
macro_rules! for_no_key_update {
    ($sql:expr) => {
        $sql
    };
}

/// The SQLite implementation of [`Store`](crate::Store).
pub struct SqliteStore {
    writer: SqlitePool,
    /// The writer itself for an in-memory database.
    reader: SqlitePool,
    reader_is_writer: bool,
    clock: Arc<dyn Clock>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url`, or at `default_file`
    /// when there is no URL. Does not migrate.
    pub(crate) async fn open(
        config: &StoreConfig,
        url: Option<&str>,
        default_file: &Path,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        let base = match url {
            Some(url) => SqliteConnectOptions::from_str(url)?,
            None => {
                if let Some(dir) = default_file.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        StoreError::Unavailable(format!("creating data directory {}: {e}", dir.display()))
                    })?;
                }
                SqliteConnectOptions::new().filename(default_file)
            }
        };
        let options = base
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match config.sqlite_synchronous {
                SyncMode::Normal => SqliteSynchronous::Normal,
                SyncMode::Full => SqliteSynchronous::Full,
            })
            .busy_timeout(config.sqlite_busy_timeout)
            .foreign_keys(true);
        let in_memory = url.is_some_and(|u| u.contains(":memory:") || u.contains("mode=memory"));

        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(config.acquire_timeout)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_with(options.clone())
            .await?;
        // An in-memory database exists only on its one connection: read through the writer.
        let reader = if in_memory {
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(config.max_connections.unwrap_or(DEFAULT_SQLITE_READERS).max(1))
                .acquire_timeout(config.acquire_timeout)
                .max_lifetime(None)
                .connect_lazy_with(options)
        };
        Ok(Self { writer, reader, reader_is_writer: in_memory, clock })
    }

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Db>, StoreError> {
        // IMMEDIATE takes the write lock up front, so a transaction that read
        // first never fails to upgrade (another process may write too).
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    fn stats(&self) -> PoolStats {
        let pools: &[&SqlitePool] = if self.reader_is_writer { &[&self.writer] } else { &[&self.writer, &self.reader] };
        pools.iter().fold(PoolStats::default(), |acc, p| PoolStats {
            size: acc.size + p.size(),
            idle: acc.idle + u32::try_from(p.num_idle()).unwrap_or(u32::MAX),
            max: acc.max + p.options().get_max_connections(),
        })
    }

    async fn close_pools(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}

include!("common.rs");
