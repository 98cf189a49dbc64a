//! The SQL implementations. Both engines share one body of code,
//! `queries/` (one file per area), compiled once per engine with `Db` bound
//! to that engine's sqlx driver; the few dialect differences (row locks,
//! pools, how a write transaction starts) live in `sqlite.rs` and
//! `postgres.rs`. Rows are read with `sqlx::FromRow` (`rows.rs`, and the
//! derives in `model.rs`).
//! Queries are written with `$N` placeholders, which sqlx accepts for both.

use crate::StoreError;

// Column lists shared by the queries (macros so that `concat!` can build
// `&'static str` statements from them).
macro_rules! user_cols {
    () => {
        "id, username, email, password_hash, role, external_issuer, external_subject, created_at"
    };
}
macro_rules! session_cols {
    () => {
        "id, user_id, refresh_token_hash, created_at, last_seen_at, expires_at, revoked_at, user_agent, ip"
    };
}
macro_rules! api_key_cols {
    () => {
        "id, user_id, name, prefix, key_hash, created_at, last_used_at, revoked_at, scope"
    };
}
macro_rules! channel_cols {
    () => {
        "id, name, topic, owner_id, created_at, updated_at, archived_at, retention_ms, last_seq"
    };
}
macro_rules! member_cols {
    () => {
        "channel_id, member_kind, member_id, role, added_at"
    };
}
macro_rules! message_cols {
    () => {
        "id, channel_id, seq, author_kind, author_id, text, created_at, edited_at, deleted_at, run_id"
    };
}
macro_rules! agent_cols {
    () => {
        "id, owner_id, name, persona, quirks, model, tools, response_policy, on_busy, webhook_url, webhook_secret_salt, \
         webhook_previous_salt, webhook_previous_until, created_at, updated_at"
    };
}
macro_rules! run_cols {
    () => {
        "id, agent_id, channel_id, trigger_message_id, triggered_by, parent_run_id, hop, status, provider, model, \
         input_tokens, output_tokens, usage_estimated, cost_usd, error_code, error_message, answer_message_id, \
         seq_reserved, created_at, started_at, ended_at, node_id"
    };
}

pub(crate) mod postgres;
mod rows;
pub(crate) mod sqlite;

/// A new row id: UUID v7, so ids sort by creation time.
pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The form of a name that uniqueness compares (case-insensitive, the same on both engines).
pub(crate) fn name_key(name: &str) -> String {
    name.to_lowercase()
}

pub(crate) fn to_json(list: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(list).map_err(|e| StoreError::Internal(format!("encoding a list: {e}")))
}

pub(crate) fn from_json(text: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Internal(format!("decoding a stored list: {e}")))
}

/// A page size as bound in SQL.
pub(crate) fn page_limit(limit: u32) -> i64 {
    i64::from(limit.min(crate::MAX_PAGE))
}

pub(crate) fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}
