//! SQLite: one writer connection (writers queue in the pool instead of
//! spinning on `SQLITE_BUSY`) and a pool of readers; WAL journal.
//!
//! WAL checkpoints run on a connection of their own, every
//! [`CHECKPOINT_INTERVAL`], not on the writer: SQLite's automatic checkpoint
//! runs inside the commit that crosses 1,000 WAL pages, so that one write
//! (and every write queued behind it) waited for copying the pages and two
//! fsyncs, ~10 ms on a virtual disk, a few times a second under 200 chat
//! messages/s. A PASSIVE checkpoint elsewhere runs beside the writer. The
//! writer still checkpoints by itself if the WAL reaches
//! [`WRITER_AUTOCHECKPOINT_PAGES`] (the background one fell behind).

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chorus_clock::Clock;
use sqlx::Sqlite as Db;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions as _, Connection as _};
use tokio::sync::oneshot;

use crate::model::PoolStats;
use crate::{Engine, StoreError};
use crate::config::{DEFAULT_SQLITE_READERS, SqliteSynchronous as SyncMode, StoreConfig};

type This = SqliteStore;
const ENGINE: Engine = Engine::Sqlite;
static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// How often the background connection checkpoints the WAL.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);
/// WAL pages at which the writer checkpoints on commit itself (SQLite's
/// default is 1,000); only reached if the background checkpoints fall behind.
const WRITER_AUTOCHECKPOINT_PAGES: &str = "10000";

// SQLite write transactions are exclusive (`BEGIN IMMEDIATE`): no row locks needed.
macro_rules! for_update {
    ($sql:expr) => {
        $sql
    };
}
macro_rules! skip_locked {
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
    /// Stops the background checkpointer (so does dropping it).
    checkpointer: std::sync::Mutex<Option<oneshot::Sender<()>>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url`, or at `default_file`
    /// when there is no URL. Does not migrate.
    pub(crate) async fn open(
        config: &StoreConfig,
        url: Option<&str>,
        default_file: &Path,
        clock: Arc<dyn Clock>,
        mode: crate::OpenMode,
    ) -> Result<Self, StoreError> {
        let base = match url {
            Some(url) => SqliteConnectOptions::from_str(url)?,
            None => SqliteConnectOptions::new().filename(default_file),
        };
        let in_memory = url.is_some_and(|u| u.contains(":memory:") || u.contains("mode=memory"));
        if !in_memory {
            prepare_file(base.get_filename(), mode)?;
        }
        let options = base
            .create_if_missing(mode == crate::OpenMode::Create)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match config.sqlite_synchronous {
                SyncMode::Normal => SqliteSynchronous::Normal,
                SyncMode::Full => SqliteSynchronous::Full,
            })
            .busy_timeout(config.sqlite_busy_timeout)
            .foreign_keys(true)
            .pragma("wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES);

        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(config.acquire_timeout)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_with(options.clone())
            .await?;
        // An in-memory database exists only on its one connection: read through
        // the writer; it has no WAL to checkpoint.
        let (reader, checkpointer) = if in_memory {
            (writer.clone(), None)
        } else {
            let (stop, stopped) = oneshot::channel();
            let conn = options.connect().await?;
            tokio::spawn(checkpoint_loop(conn, stopped));
            let reader = SqlitePoolOptions::new()
                .max_connections(config.max_connections.unwrap_or(DEFAULT_SQLITE_READERS).max(1))
                .acquire_timeout(config.acquire_timeout)
                .max_lifetime(None)
                .connect_lazy_with(options);
            (reader, Some(stop))
        };
        Ok(Self { writer, reader, reader_is_writer: in_memory, clock, checkpointer: std::sync::Mutex::new(checkpointer) })
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
        if let Some(stop) = self.checkpointer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            let _ = stop.send(());
        }
        self.reader.close().await;
        self.writer.close().await;
    }
}

/// Makes the database file (and its directory) private before SQLite opens
/// it, so the file and the `-wal`/`-shm` files SQLite derives from it are
/// 0600 whoever creates them first. With [`OpenMode::Existing`](crate::OpenMode)
/// a missing file is an error that says where it was looked for.
fn prepare_file(file: &Path, mode: crate::OpenMode) -> Result<(), StoreError> {
    let fail = |what: &str, p: &Path, e: std::io::Error| StoreError::Unavailable(format!("{what} {}: {e}", p.display()));
    if mode == crate::OpenMode::Existing {
        if !file.exists() {
            let shown = std::path::absolute(file).unwrap_or_else(|_| file.to_owned());
            return Err(StoreError::Unavailable(format!("no database at {}", shown.display())));
        }
    } else {
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::private::private_dir(dir).map_err(|e| fail("creating data directory", dir, e))?;
        }
        crate::private::private_file(file).map_err(|e| fail("creating database file", file, e))?;
    }
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut side = file.as_os_str().to_owned();
        side.push(suffix);
        crate::private::narrow(Path::new(&side)).map_err(|e| fail("narrowing the permissions of", Path::new(&side), e))?;
    }
    Ok(())
}

/// Checkpoints the WAL (PASSIVE: copies what no reader still needs, never
/// waits for the writer or readers) every [`CHECKPOINT_INTERVAL`] until
/// stopped. A checkpoint with nothing new to copy costs no I/O.
async fn checkpoint_loop(mut conn: SqliteConnection, mut stop: oneshot::Receiver<()>) {
    let mut tick = tokio::time::interval(CHECKPOINT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {}
        }
        match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&mut conn).await {
            Ok(_) => failing = false,
            Err(e) => {
                // Once per run of failures; the writer's own checkpoint is the fallback.
                if !failing {
                    tracing::warn!(error = %e, "background WAL checkpoint failed");
                }
                failing = true;
            }
        }
    }
    let _ = conn.close().await;
}

// The operations, compiled for this engine: both engines load the same
// files, each with its own `Db`.
#[allow(clippy::duplicate_mod)]
#[path = "queries/mod.rs"]
mod queries;
