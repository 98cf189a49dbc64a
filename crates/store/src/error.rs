//! The one error type of the store, and how database errors map onto it.

use sqlx::error::{DatabaseError, ErrorKind};

/// Everything a store operation can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The row addressed (or one it must reference) does not exist.
    #[error("not found")]
    NotFound,
    /// A uniqueness rule or the current state forbids the change
    /// (taken username, existing member, archived channel, ...).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A per-owner limit checked in the writing transaction was reached.
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    /// The caller is not allowed to change this row (e.g. editing another's message).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The database cannot be reached or the pool is exhausted or closed; retrying later may work.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The configuration cannot be used (bad URL, ...).
    #[error("invalid store configuration: {0}")]
    InvalidConfig(String),
    /// Anything else: a bug or an unexpected database state.
    #[error("store error: {0}")]
    Internal(String),
}

impl StoreError {
    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// Unique constraints by name (PostgreSQL) and by the column list SQLite
/// reports, with the message callers get.
const UNIQUE_RULES: &[(&str, &str, &str)] = &[
    ("uq_users_username_key", "users.username_key", "username is already taken"),
    ("uq_users_external", "users.external_issuer", "external identity is already linked to a user"),
    ("uq_auth_sessions_refresh_hash", "auth_sessions.refresh_token_hash", "refresh token hash already in use"),
    ("uq_api_keys_key_hash", "api_keys.key_hash", "api key hash already in use"),
    ("uq_agents_owner_name", "agents.owner_id", "an agent with this name already exists for this owner"),
    ("channel_members_pkey", "channel_members.channel_id", "already a member of this channel"),
    ("idempotency_keys_pkey", "idempotency_keys.author_kind", "idempotency key already in use"),
];

fn describe_unique(e: &dyn DatabaseError) -> String {
    let constraint = e.constraint().unwrap_or_default();
    let message = e.message();
    UNIQUE_RULES
        .iter()
        .find(|(pg, sqlite, _)| constraint == *pg || message.contains(sqlite))
        .map(|(_, _, text)| (*text).to_owned())
        .unwrap_or_else(|| format!("unique constraint violated: {message}"))
}

/// SQLite's "database is locked/busy" and PostgreSQL's connection and
/// shutdown classes mean "try again later", not "bug".
fn is_transient_db_error(e: &dyn DatabaseError) -> bool {
    let Some(code) = e.code() else { return false };
    // SQLite primary codes live in the low byte of the extended code.
    if let Ok(n) = code.parse::<i32>() {
        return matches!(n & 0xff, 5 | 6 | 10 | 13); // BUSY, LOCKED, IOERR, FULL
    }
    code.starts_with("08") || code.starts_with("53") || code.starts_with("57") || code == "40001" || code == "40P01"
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(db) => match db.kind() {
                ErrorKind::UniqueViolation => StoreError::Conflict(describe_unique(db.as_ref())),
                ErrorKind::ForeignKeyViolation => StoreError::NotFound,
                _ if is_transient_db_error(db.as_ref()) => StoreError::Unavailable(db.message().to_owned()),
                _ => StoreError::Internal(db.to_string()),
            },
            sqlx::Error::PoolTimedOut => StoreError::Unavailable("timed out waiting for a database connection".into()),
            sqlx::Error::PoolClosed => StoreError::Unavailable("the store is closed".into()),
            sqlx::Error::Io(io) => StoreError::Unavailable(format!("database i/o: {io}")),
            sqlx::Error::Tls(t) => StoreError::Unavailable(format!("database tls: {t}")),
            sqlx::Error::WorkerCrashed => StoreError::Unavailable("database worker crashed".into()),
            sqlx::Error::Protocol(p) => StoreError::Unavailable(format!("database protocol: {p}")),
            sqlx::Error::Configuration(c) => StoreError::InvalidConfig(c.to_string()),
            other => StoreError::Internal(other.to_string()),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        match e {
            sqlx::migrate::MigrateError::Execute(inner) => StoreError::from(inner),
            other => StoreError::Internal(format!("migration: {other}")),
        }
    }
}
