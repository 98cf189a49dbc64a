//! Users, their login sessions and their API keys.

use super::This;
use crate::StoreError;
use crate::model::*;
use crate::sql::rows::UserRow;
use crate::sql::{count, name_key, new_id, page_limit};
use crate::store::StoreResult;

// ------------------------------------------------------------ users

pub(super) async fn create_user(store: &This, new: NewUser) -> StoreResult<User> {
    let user = User {
        id: new_id(),
        username: new.username,
        email: new.email,
        password_hash: new.password_hash,
        role: new.role,
        external: new.external,
        created_at: store.clock.now_ms(),
    };
    sqlx::query(
        "INSERT INTO users (id, username, username_key, email, password_hash, role, external_issuer, external_subject, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&user.id)
    .bind(&user.username)
    .bind(name_key(&user.username))
    .bind(user.email.as_deref())
    .bind(user.password_hash.as_deref())
    .bind(user.role.as_str())
    .bind(user.external.as_ref().map(|e| e.issuer.as_str()))
    .bind(user.external.as_ref().map(|e| e.subject.as_str()))
    .bind(user.created_at)
    .execute(&store.writer)
    .await?;
    Ok(user)
}

pub(super) async fn get_user(store: &This, id: &str) -> StoreResult<Option<User>> {
    let row: Option<UserRow> = sqlx::query_as(concat!("SELECT ", user_cols!(), " FROM users WHERE id = $1"))
        .bind(id)
        .fetch_optional(&store.reader)
        .await?;
    Ok(row.map(User::from))
}

pub(super) async fn get_user_by_username(store: &This, username: &str) -> StoreResult<Option<User>> {
    let row: Option<UserRow> = sqlx::query_as(concat!("SELECT ", user_cols!(), " FROM users WHERE username_key = $1"))
        .bind(name_key(username))
        .fetch_optional(&store.reader)
        .await?;
    Ok(row.map(User::from))
}

pub(super) async fn get_user_by_external(store: &This, issuer: &str, subject: &str) -> StoreResult<Option<User>> {
    let row: Option<UserRow> = sqlx::query_as(concat!(
        "SELECT ",
        user_cols!(),
        " FROM users WHERE external_issuer = $1 AND external_subject = $2"
    ))
    .bind(issuer)
    .bind(subject)
    .fetch_optional(&store.reader)
    .await?;
    Ok(row.map(User::from))
}

pub(super) async fn list_users(store: &This, after: Option<&str>, limit: u32) -> StoreResult<Vec<User>> {
    // UUID v7 ids sort by creation time; every id sorts after "".
    let rows: Vec<UserRow> =
        sqlx::query_as(concat!("SELECT ", user_cols!(), " FROM users WHERE id > $1 ORDER BY id LIMIT $2"))
            .bind(after.unwrap_or(""))
            .bind(page_limit(limit))
            .fetch_all(&store.reader)
            .await?;
    Ok(rows.into_iter().map(User::from).collect())
}

pub(super) async fn count_users(store: &This) -> StoreResult<u64> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(&store.reader).await?;
    Ok(count(n))
}

pub(super) async fn count_admins(store: &This) -> StoreResult<u64> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE role = 'admin'").fetch_one(&store.reader).await?;
    Ok(count(n))
}

pub(super) async fn set_user_role(store: &This, id: &str, role: UserRole) -> StoreResult<User> {
    let row: Option<UserRow> =
        sqlx::query_as(concat!("UPDATE users SET role = $2 WHERE id = $1 RETURNING ", user_cols!()))
            .bind(id)
            .bind(role.as_str())
            .fetch_optional(&store.writer)
            .await?;
    row.map(User::from).ok_or(StoreError::NotFound)
}

// ------------------------------------------------------------ auth sessions

pub(super) async fn create_session(store: &This, new: NewAuthSession) -> StoreResult<AuthSession> {
    let now = store.clock.now_ms();
    let session = AuthSession {
        id: new_id(),
        user_id: new.user_id,
        refresh_token_hash: new.refresh_token_hash,
        created_at: now,
        last_seen_at: now,
        expires_at: new.expires_at,
        revoked_at: None,
        user_agent: new.user_agent,
        ip: new.ip,
    };
    sqlx::query(concat!(
        "INSERT INTO auth_sessions (",
        session_cols!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    ))
    .bind(&session.id)
    .bind(&session.user_id)
    .bind(&session.refresh_token_hash)
    .bind(session.created_at)
    .bind(session.last_seen_at)
    .bind(session.expires_at)
    .bind(session.revoked_at)
    .bind(session.user_agent.as_deref())
    .bind(session.ip.as_deref())
    .execute(&store.writer)
    .await?;
    Ok(session)
}

pub(super) async fn get_session(store: &This, id: &str) -> StoreResult<Option<AuthSession>> {
    Ok(sqlx::query_as(concat!("SELECT ", session_cols!(), " FROM auth_sessions WHERE id = $1"))
        .bind(id)
        .fetch_optional(&store.reader)
        .await?)
}

pub(super) async fn get_live_session_by_refresh_hash(
    store: &This,
    refresh_token_hash: &str,
) -> StoreResult<Option<AuthSession>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        session_cols!(),
        " FROM auth_sessions WHERE refresh_token_hash = $1 AND revoked_at IS NULL AND expires_at > $2"
    ))
    .bind(refresh_token_hash)
    .bind(store.clock.now_ms())
    .fetch_optional(&store.reader)
    .await?)
}

pub(super) async fn touch_session(store: &This, id: &str) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE auth_sessions SET last_seen_at = $2 WHERE id = $1 AND revoked_at IS NULL AND expires_at > $2",
    )
    .bind(id)
    .bind(store.clock.now_ms())
    .execute(&store.writer)
    .await?;
    Ok(done.rows_affected() > 0)
}

pub(super) async fn rotate_session_refresh(
    store: &This,
    id: &str,
    old_hash: &str,
    new_hash: &str,
) -> StoreResult<AuthSession> {
    let now = store.clock.now_ms();
    let mut tx = store.begin_write().await?;
    let session: Option<AuthSession> = sqlx::query_as(concat!(
        "UPDATE auth_sessions SET refresh_token_hash = $3, last_seen_at = $4 \
         WHERE id = $1 AND refresh_token_hash = $2 AND revoked_at IS NULL AND expires_at > $4 RETURNING ",
        session_cols!()
    ))
    .bind(id)
    .bind(old_hash)
    .bind(new_hash)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    let session = session.ok_or(StoreError::NotFound)?;
    // The exchanged token is remembered, so a second use of it is recognised.
    sqlx::query("INSERT INTO used_refresh_tokens (token_hash, session_id, used_at) VALUES ($1, $2, $3)")
        .bind(old_hash)
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(session)
}

pub(super) async fn get_session_by_used_refresh_hash(store: &This, refresh_token_hash: &str) -> StoreResult<Option<AuthSession>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        session_cols!(),
        " FROM auth_sessions WHERE id = (SELECT session_id FROM used_refresh_tokens WHERE token_hash = $1)"
    ))
    .bind(refresh_token_hash)
    .fetch_optional(&store.reader)
    .await?)
}

pub(super) async fn revoke_session(store: &This, id: &str, owner: Option<&str>) -> StoreResult<bool> {
    let now = store.clock.now_ms();
    let mut tx = store.begin_write().await?;
    let found: Option<String> =
        sqlx::query_scalar(for_no_key_update!("SELECT user_id FROM auth_sessions WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    match (found, owner) {
        (None, _) => return Err(StoreError::NotFound),
        (Some(user), Some(owner)) if user != owner => return Err(StoreError::NotFound),
        _ => {}
    }
    let done = sqlx::query(
        "UPDATE auth_sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL AND expires_at > $2",
    )
    .bind(id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(done.rows_affected() > 0)
}

pub(super) async fn revoke_user_sessions(store: &This, user_id: &str) -> StoreResult<Vec<String>> {
    let ids: Vec<String> = sqlx::query_scalar(
        "UPDATE auth_sessions SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 RETURNING id",
    )
    .bind(user_id)
    .bind(store.clock.now_ms())
    .fetch_all(&store.writer)
    .await?;
    Ok(ids)
}

pub(super) async fn list_sessions(store: &This, user_id: &str) -> StoreResult<Vec<AuthSession>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        session_cols!(),
        " FROM auth_sessions WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 \
          ORDER BY created_at DESC, id DESC"
    ))
    .bind(user_id)
    .bind(store.clock.now_ms())
    .fetch_all(&store.reader)
    .await?)
}

pub(super) async fn delete_expired_sessions(
    store: &This,
    idle_cutoff_ms: i64,
    limit: u32,
) -> StoreResult<SessionCleanup> {
    let limit = page_limit(limit);
    if limit == 0 {
        return Ok(SessionCleanup::default());
    }
    let expired = sqlx::query(
        "DELETE FROM auth_sessions WHERE id IN (SELECT id FROM auth_sessions WHERE expires_at <= $1 LIMIT $2)",
    )
    .bind(store.clock.now_ms())
    .bind(limit)
    .execute(&store.writer)
    .await?
    .rows_affected();
    let revoked = sqlx::query(
        "DELETE FROM auth_sessions WHERE id IN (SELECT id FROM auth_sessions WHERE revoked_at IS NOT NULL LIMIT $1)",
    )
    .bind(limit)
    .execute(&store.writer)
    .await?
    .rows_affected();
    let idle = sqlx::query(
        "DELETE FROM auth_sessions WHERE id IN (SELECT id FROM auth_sessions WHERE last_seen_at < $1 LIMIT $2)",
    )
    .bind(idle_cutoff_ms)
    .bind(limit)
    .execute(&store.writer)
    .await?
    .rows_affected();
    Ok(SessionCleanup { expired, idle, revoked })
}

// ------------------------------------------------------------ api keys

pub(super) async fn create_api_key(store: &This, new: NewApiKey) -> StoreResult<ApiKey> {
    let key = ApiKey {
        id: new_id(),
        user_id: new.user_id,
        name: new.name,
        prefix: new.prefix,
        key_hash: new.key_hash,
        created_at: store.clock.now_ms(),
        last_used_at: None,
        revoked_at: None,
        scope: new.scope,
    };
    sqlx::query(concat!("INSERT INTO api_keys (", api_key_cols!(), ") VALUES ($1, $2, $3, $4, $5, $6, NULL, NULL, $7)"))
        .bind(&key.id)
        .bind(&key.user_id)
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(&key.key_hash)
        .bind(key.created_at)
        .bind(key.scope.as_deref())
        .execute(&store.writer)
        .await?;
    Ok(key)
}

pub(super) async fn get_live_api_key_by_hash(store: &This, key_hash: &str) -> StoreResult<Option<ApiKey>> {
    Ok(sqlx::query_as(concat!("SELECT ", api_key_cols!(), " FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL"))
        .bind(key_hash)
        .fetch_optional(&store.reader)
        .await?)
}

pub(super) async fn list_api_keys(store: &This, user_id: &str) -> StoreResult<Vec<ApiKey>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        api_key_cols!(),
        " FROM api_keys WHERE user_id = $1 ORDER BY created_at DESC, id DESC"
    ))
    .bind(user_id)
    .fetch_all(&store.reader)
    .await?)
}

pub(super) async fn revoke_api_key(store: &This, user_id: &str, id: &str) -> StoreResult<bool> {
    let mut tx = store.begin_write().await?;
    let owned = sqlx::query(for_no_key_update!("SELECT id FROM api_keys WHERE id = $1 AND user_id = $2"))
        .bind(id)
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
    if owned.is_none() {
        return Err(StoreError::NotFound);
    }
    let done = sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
        .bind(id)
        .bind(store.clock.now_ms())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(done.rows_affected() > 0)
}

pub(super) async fn touch_api_key(store: &This, id: &str) -> StoreResult<()> {
    let done = sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE id = $1")
        .bind(id)
        .bind(store.clock.now_ms())
        .execute(&store.writer)
        .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}
