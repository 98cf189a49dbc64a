//! Store configuration (`[store]` in the server's TOML file).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// File name of the default SQLite database inside the data directory.
pub const DEFAULT_SQLITE_FILE: &str = "chorus.db";
/// PostgreSQL pool size when `max_connections` is not set (docs/decisions.md, "Store").
pub const DEFAULT_POSTGRES_CONNECTIONS: u32 = 20;
/// SQLite reader pool size when `max_connections` is not set. SQLite has one
/// writer connection besides, so writers queue in the pool instead of
/// spinning on `SQLITE_BUSY`.
pub const DEFAULT_SQLITE_READERS: u32 = 4;

/// Where and how the store keeps its data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://PATH` or `postgres://USER@HOST:PORT/DB`. Absent: the SQLite
    /// file `<data_dir>/chorus.db`.
    pub url: Option<String>,
    /// SQLite `synchronous` mode. The journal is always WAL. `normal` loses no
    /// committed transaction on a process crash; `full` also survives power loss.
    pub sqlite_synchronous: SqliteSynchronous,
    /// How long a SQLite statement waits for a lock held by another process.
    #[serde(with = "humantime_serde")]
    pub sqlite_busy_timeout: Duration,
    /// Pool size. Absent: 20 for PostgreSQL; for SQLite, 4 readers (plus the
    /// single writer connection SQLite always has).
    pub max_connections: Option<u32>,
    /// How long an operation waits for a pooled connection before failing
    /// with [`StoreError::Unavailable`](crate::StoreError::Unavailable).
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// Connections older than this are closed and replaced (PostgreSQL).
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: None,
            sqlite_synchronous: SqliteSynchronous::Normal,
            sqlite_busy_timeout: Duration::from_secs(5),
            max_connections: None,
            acquire_timeout: Duration::from_secs(5),
            max_lifetime: Duration::from_secs(3600),
        }
    }
}

/// SQLite `PRAGMA synchronous` choices offered (both with WAL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SqliteSynchronous {
    #[default]
    Normal,
    Full,
}

/// The database engine behind a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgres",
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a configuration points, resolved against the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A SQLite database file (or `:memory:` URL) given as a URL, or the default file.
    Sqlite {
        url: Option<String>,
        default_file: PathBuf,
    },
    Postgres {
        url: String,
    },
}

impl StoreConfig {
    /// The engine this configuration selects.
    pub fn engine(&self) -> Result<Engine, crate::StoreError> {
        Ok(match self.target(Path::new("."))? {
            Target::Sqlite { .. } => Engine::Sqlite,
            Target::Postgres { .. } => Engine::Postgres,
        })
    }

    pub(crate) fn target(&self, data_dir: &Path) -> Result<Target, crate::StoreError> {
        let default_file = data_dir.join(DEFAULT_SQLITE_FILE);
        match self.url.as_deref().map(str::trim) {
            None | Some("") => Ok(Target::Sqlite { url: None, default_file }),
            Some(url) if url.starts_with("sqlite:") => Ok(Target::Sqlite { url: Some(url.to_owned()), default_file }),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(Target::Postgres { url: url.to_owned() })
            }
            Some(url) => Err(crate::StoreError::InvalidConfig(format!(
                "store.url must start with sqlite: or postgres:// (got `{}`)",
                redact_url(url)
            ))),
        }
    }
}

/// A URL with any password replaced, for logs and error messages.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else { return url.to_owned() };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => {
            format!("{}{}:***{}", &url[..scheme_end + 3], &authority[..colon], &rest[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_engine_selection() {
        let c = StoreConfig::default();
        assert_eq!(c.engine().unwrap(), Engine::Sqlite);
        assert_eq!(
            c.target(Path::new("/d")).unwrap(),
            Target::Sqlite { url: None, default_file: PathBuf::from("/d/chorus.db") }
        );
        let pg = StoreConfig { url: Some("postgres://u@h/db".into()), ..c.clone() };
        assert_eq!(pg.engine().unwrap(), Engine::Postgres);
        let bad = StoreConfig { url: Some("mysql://x".into()), ..c };
        assert!(matches!(bad.engine(), Err(crate::StoreError::InvalidConfig(_))));
    }

    #[test]
    fn deserializes_humantime_and_rejects_unknown_keys() {
        let c: StoreConfig = serde_json::from_str(
            r#"{"url":"sqlite://x.db","sqlite_synchronous":"full","acquire_timeout":"2s","max_lifetime":"30m"}"#,
        )
        .unwrap();
        assert_eq!(c.sqlite_synchronous, SqliteSynchronous::Full);
        assert_eq!(c.acquire_timeout, Duration::from_secs(2));
        assert_eq!(c.max_lifetime, Duration::from_secs(1800));
        assert!(serde_json::from_str::<StoreConfig>(r#"{"nope":1}"#).is_err());
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact_url("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://a.db"), "sqlite://a.db");
    }
}
