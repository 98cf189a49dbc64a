// The store's operations, shared by both engines: `sqlite.rs` and
// `postgres.rs` each `include!` this file after defining
// - `Db`: the sqlx driver, `This`: the store type (with `writer`, `reader`
//   and `clock` fields, and `begin_write`, `stats`, `close_pools` methods),
// - `ENGINE` and `MIGRATOR`,
// - `for_update!` and `for_no_key_update!`: row locks (PostgreSQL) that
//   SQLite does without, its write transactions being exclusive.

use std::time::Instant;

use async_trait::async_trait;
use sqlx::Row as _;

use crate::model::*;
use crate::sql::{count, from_json, name_key, new_id, page_limit, to_json};
use crate::store::{IDEMPOTENCY_WINDOW_MS, Store, StoreResult};
use crate::{Engine, StoreError};

type DbRow = <Db as sqlx::Database>::Row;
type DbConn = <Db as sqlx::Database>::Connection;

fn user_from_row(r: &DbRow) -> StoreResult<User> {
    let issuer: Option<String> = r.try_get("external_issuer")?;
    let subject: Option<String> = r.try_get("external_subject")?;
    Ok(User {
        id: r.try_get("id")?,
        username: r.try_get("username")?,
        email: r.try_get("email")?,
        password_hash: r.try_get("password_hash")?,
        role: r.try_get::<String, _>("role")?.parse()?,
        external: match (issuer, subject) {
            (Some(issuer), Some(subject)) => Some(ExternalIdentity { issuer, subject }),
            _ => None,
        },
        created_at: r.try_get("created_at")?,
    })
}

fn session_from_row(r: &DbRow) -> StoreResult<AuthSession> {
    Ok(AuthSession {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        refresh_token_hash: r.try_get("refresh_token_hash")?,
        created_at: r.try_get("created_at")?,
        last_seen_at: r.try_get("last_seen_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
        user_agent: r.try_get("user_agent")?,
        ip: r.try_get("ip")?,
    })
}

fn api_key_from_row(r: &DbRow) -> StoreResult<ApiKey> {
    Ok(ApiKey {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        name: r.try_get("name")?,
        prefix: r.try_get("prefix")?,
        key_hash: r.try_get("key_hash")?,
        created_at: r.try_get("created_at")?,
        last_used_at: r.try_get("last_used_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

fn channel_from_row(r: &DbRow) -> StoreResult<Channel> {
    Ok(Channel {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        topic: r.try_get("topic")?,
        owner_id: r.try_get("owner_id")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        archived_at: r.try_get("archived_at")?,
        retention_ms: r.try_get("retention_ms")?,
        last_seq: r.try_get("last_seq")?,
    })
}

fn member_from_row(r: &DbRow) -> StoreResult<ChannelMember> {
    Ok(ChannelMember {
        channel_id: r.try_get("channel_id")?,
        member: MemberRef { kind: r.try_get::<String, _>("member_kind")?.parse()?, id: r.try_get("member_id")? },
        role: r.try_get::<String, _>("role")?.parse()?,
        added_at: r.try_get("added_at")?,
    })
}

fn message_from_row(r: &DbRow) -> StoreResult<Message> {
    Ok(Message {
        id: r.try_get("id")?,
        channel_id: r.try_get("channel_id")?,
        seq: r.try_get("seq")?,
        author: MemberRef { kind: r.try_get::<String, _>("author_kind")?.parse()?, id: r.try_get("author_id")? },
        text: r.try_get("text")?,
        created_at: r.try_get("created_at")?,
        edited_at: r.try_get("edited_at")?,
        deleted_at: r.try_get("deleted_at")?,
    })
}

fn outbox_from_row(r: &DbRow) -> StoreResult<OutboxRecord> {
    Ok(OutboxRecord {
        id: r.try_get("id")?,
        channel: r.try_get("channel")?,
        event_type: r.try_get("event_type")?,
        payload: r.try_get("payload")?,
        created_at: r.try_get("created_at")?,
    })
}

fn agent_from_row(r: &DbRow) -> StoreResult<Agent> {
    Ok(Agent {
        id: r.try_get("id")?,
        owner_id: r.try_get("owner_id")?,
        name: r.try_get("name")?,
        persona: r.try_get("persona")?,
        quirks: from_json(&r.try_get::<String, _>("quirks")?)?,
        model: r.try_get("model")?,
        tools: from_json(&r.try_get::<String, _>("tools")?)?,
        response_policy: r.try_get("response_policy")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn collect<T>(rows: Vec<DbRow>, f: fn(&DbRow) -> StoreResult<T>) -> StoreResult<Vec<T>> {
    rows.iter().map(f).collect()
}

/// Locks the user row so that per-owner limits are checked race-free
/// (`NO KEY`: rows referencing the user can still be inserted meanwhile).
async fn lock_owner(conn: &mut DbConn, user_id: &str) -> StoreResult<()> {
    sqlx::query(for_no_key_update!("SELECT id FROM users WHERE id = $1"))
        .bind(user_id)
        .fetch_optional(&mut *conn)
        .await?
        .map(|_| ())
        .ok_or(StoreError::NotFound)
}

async fn message_in(conn: &mut DbConn, id: &str) -> StoreResult<Option<Message>> {
    sqlx::query(concat!("SELECT ", message_cols!(), " FROM messages WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .as_ref()
        .map(message_from_row)
        .transpose()
}

async fn insert_outbox(conn: &mut DbConn, event: OutboxEvent, now: i64) -> StoreResult<i64> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO outbox (channel, event_type, payload, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(&event.channel)
    .bind(&event.event_type)
    .bind(&event.payload)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    Ok(id)
}

/// Why an edit or delete of `id` matched no row: the most specific error.
async fn explain_message_miss(conn: &mut DbConn, id: &str, forbidden: &str) -> StoreError {
    let row = sqlx::query(
        "SELECT m.deleted_at, c.archived_at FROM messages m JOIN channels c ON c.id = m.channel_id WHERE m.id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await;
    let row = match row {
        Ok(Some(row)) => row,
        Ok(None) => return StoreError::NotFound,
        Err(e) => return e.into(),
    };
    let deleted: Result<Option<i64>, _> = row.try_get("deleted_at");
    let archived: Result<Option<i64>, _> = row.try_get("archived_at");
    match (deleted, archived) {
        (Ok(Some(_)), _) => StoreError::NotFound,
        (_, Ok(Some(_))) => StoreError::Conflict("channel is archived".into()),
        (Ok(None), Ok(None)) => StoreError::Forbidden(forbidden.into()),
        (Err(e), _) | (_, Err(e)) => e.into(),
    }
}

#[async_trait]
impl Store for This {
    // ------------------------------------------------------------ lifecycle

    fn engine(&self) -> Engine {
        ENGINE
    }

    async fn migrate(&self) -> StoreResult<()> {
        MIGRATOR.run(&self.writer).await?;
        Ok(())
    }

    async fn health(&self) -> StoreResult<StoreHealth> {
        let start = Instant::now();
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(StoreHealth { engine: ENGINE, latency: start.elapsed() })
    }

    fn pool_stats(&self) -> PoolStats {
        self.stats()
    }

    async fn close(&self) {
        self.close_pools().await;
    }

    // ------------------------------------------------------------ users

    async fn create_user(&self, new: NewUser) -> StoreResult<User> {
        let user = User {
            id: new_id(),
            username: new.username,
            email: new.email,
            password_hash: new.password_hash,
            role: new.role,
            external: new.external,
            created_at: self.clock.now_ms(),
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
        .execute(&self.writer)
        .await?;
        Ok(user)
    }

    async fn get_user(&self, id: &str) -> StoreResult<Option<User>> {
        sqlx::query(concat!("SELECT ", user_cols!(), " FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.reader)
            .await?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    async fn get_user_by_username(&self, username: &str) -> StoreResult<Option<User>> {
        sqlx::query(concat!("SELECT ", user_cols!(), " FROM users WHERE username_key = $1"))
            .bind(name_key(username))
            .fetch_optional(&self.reader)
            .await?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    async fn get_user_by_external(&self, issuer: &str, subject: &str) -> StoreResult<Option<User>> {
        sqlx::query(concat!(
            "SELECT ",
            user_cols!(),
            " FROM users WHERE external_issuer = $1 AND external_subject = $2"
        ))
        .bind(issuer)
        .bind(subject)
        .fetch_optional(&self.reader)
        .await?
        .as_ref()
        .map(user_from_row)
        .transpose()
    }

    async fn list_users(&self, after: Option<&str>, limit: u32) -> StoreResult<Vec<User>> {
        // UUID v7 ids sort by creation time; every id sorts after "".
        let rows = sqlx::query(concat!("SELECT ", user_cols!(), " FROM users WHERE id > $1 ORDER BY id LIMIT $2"))
            .bind(after.unwrap_or(""))
            .bind(page_limit(limit))
            .fetch_all(&self.reader)
            .await?;
        collect(rows, user_from_row)
    }

    async fn count_users(&self) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(&self.reader).await?;
        Ok(count(n))
    }

    async fn count_admins(&self) -> StoreResult<u64> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE role = 'admin'").fetch_one(&self.reader).await?;
        Ok(count(n))
    }

    async fn set_user_role(&self, id: &str, role: UserRole) -> StoreResult<User> {
        sqlx::query(concat!("UPDATE users SET role = $2 WHERE id = $1 RETURNING ", user_cols!()))
            .bind(id)
            .bind(role.as_str())
            .fetch_optional(&self.writer)
            .await?
            .as_ref()
            .map(user_from_row)
            .transpose()?
            .ok_or(StoreError::NotFound)
    }

    // ------------------------------------------------------------ auth sessions

    async fn create_session(&self, new: NewAuthSession) -> StoreResult<AuthSession> {
        let now = self.clock.now_ms();
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
        .execute(&self.writer)
        .await?;
        Ok(session)
    }

    async fn get_session(&self, id: &str) -> StoreResult<Option<AuthSession>> {
        sqlx::query(concat!("SELECT ", session_cols!(), " FROM auth_sessions WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.reader)
            .await?
            .as_ref()
            .map(session_from_row)
            .transpose()
    }

    async fn get_live_session_by_refresh_hash(&self, refresh_token_hash: &str) -> StoreResult<Option<AuthSession>> {
        sqlx::query(concat!(
            "SELECT ",
            session_cols!(),
            " FROM auth_sessions WHERE refresh_token_hash = $1 AND revoked_at IS NULL AND expires_at > $2"
        ))
        .bind(refresh_token_hash)
        .bind(self.clock.now_ms())
        .fetch_optional(&self.reader)
        .await?
        .as_ref()
        .map(session_from_row)
        .transpose()
    }

    async fn touch_session(&self, id: &str) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE auth_sessions SET last_seen_at = $2 WHERE id = $1 AND revoked_at IS NULL AND expires_at > $2",
        )
        .bind(id)
        .bind(self.clock.now_ms())
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn rotate_session_refresh(&self, id: &str, old_hash: &str, new_hash: &str) -> StoreResult<AuthSession> {
        sqlx::query(concat!(
            "UPDATE auth_sessions SET refresh_token_hash = $3, last_seen_at = $4 \
             WHERE id = $1 AND refresh_token_hash = $2 AND revoked_at IS NULL AND expires_at > $4 RETURNING ",
            session_cols!()
        ))
        .bind(id)
        .bind(old_hash)
        .bind(new_hash)
        .bind(self.clock.now_ms())
        .fetch_optional(&self.writer)
        .await?
        .as_ref()
        .map(session_from_row)
        .transpose()?
        .ok_or(StoreError::NotFound)
    }

    async fn revoke_session(&self, id: &str, owner: Option<&str>) -> StoreResult<bool> {
        let now = self.clock.now_ms();
        let mut tx = self.begin_write().await?;
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

    async fn revoke_user_sessions(&self, user_id: &str) -> StoreResult<Vec<String>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "UPDATE auth_sessions SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 RETURNING id",
        )
        .bind(user_id)
        .bind(self.clock.now_ms())
        .fetch_all(&self.writer)
        .await?;
        Ok(ids)
    }

    async fn list_sessions(&self, user_id: &str) -> StoreResult<Vec<AuthSession>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            session_cols!(),
            " FROM auth_sessions WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 \
              ORDER BY created_at DESC, id DESC"
        ))
        .bind(user_id)
        .bind(self.clock.now_ms())
        .fetch_all(&self.reader)
        .await?;
        collect(rows, session_from_row)
    }

    async fn delete_expired_sessions(&self, idle_cutoff_ms: i64, limit: u32) -> StoreResult<SessionCleanup> {
        let limit = page_limit(limit);
        if limit == 0 {
            return Ok(SessionCleanup::default());
        }
        let expired = sqlx::query(
            "DELETE FROM auth_sessions WHERE id IN (SELECT id FROM auth_sessions WHERE expires_at <= $1 LIMIT $2)",
        )
        .bind(self.clock.now_ms())
        .bind(limit)
        .execute(&self.writer)
        .await?
        .rows_affected();
        let revoked = sqlx::query(
            "DELETE FROM auth_sessions WHERE id IN (SELECT id FROM auth_sessions WHERE revoked_at IS NOT NULL LIMIT $1)",
        )
        .bind(limit)
        .execute(&self.writer)
        .await?
        .rows_affected();
        let idle = sqlx::query(
            "DELETE FROM auth_sessions WHERE id IN (SELECT id FROM auth_sessions WHERE last_seen_at < $1 LIMIT $2)",
        )
        .bind(idle_cutoff_ms)
        .bind(limit)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(SessionCleanup { expired, idle, revoked })
    }

    // ------------------------------------------------------------ api keys

    async fn create_api_key(&self, new: NewApiKey) -> StoreResult<ApiKey> {
        let key = ApiKey {
            id: new_id(),
            user_id: new.user_id,
            name: new.name,
            prefix: new.prefix,
            key_hash: new.key_hash,
            created_at: self.clock.now_ms(),
            last_used_at: None,
            revoked_at: None,
        };
        sqlx::query(concat!(
            "INSERT INTO api_keys (",
            api_key_cols!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, NULL, NULL)"
        ))
        .bind(&key.id)
        .bind(&key.user_id)
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(&key.key_hash)
        .bind(key.created_at)
        .execute(&self.writer)
        .await?;
        Ok(key)
    }

    async fn get_live_api_key_by_hash(&self, key_hash: &str) -> StoreResult<Option<ApiKey>> {
        sqlx::query(concat!("SELECT ", api_key_cols!(), " FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL"))
            .bind(key_hash)
            .fetch_optional(&self.reader)
            .await?
            .as_ref()
            .map(api_key_from_row)
            .transpose()
    }

    async fn list_api_keys(&self, user_id: &str) -> StoreResult<Vec<ApiKey>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            api_key_cols!(),
            " FROM api_keys WHERE user_id = $1 ORDER BY created_at DESC, id DESC"
        ))
        .bind(user_id)
        .fetch_all(&self.reader)
        .await?;
        collect(rows, api_key_from_row)
    }

    async fn revoke_api_key(&self, user_id: &str, id: &str) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
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
            .bind(self.clock.now_ms())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    async fn touch_api_key(&self, id: &str) -> StoreResult<()> {
        let done = sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE id = $1")
            .bind(id)
            .bind(self.clock.now_ms())
            .execute(&self.writer)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    // ------------------------------------------------------------ channels

    async fn create_channel(&self, new: NewChannel, max_per_owner: u32) -> StoreResult<Channel> {
        let now = self.clock.now_ms();
        let channel = Channel {
            id: new_id(),
            name: new.name,
            topic: new.topic,
            owner_id: new.owner_id,
            created_at: now,
            updated_at: now,
            archived_at: None,
            retention_ms: new.retention_ms,
            last_seq: 0,
        };
        let mut tx = self.begin_write().await?;
        lock_owner(&mut tx, &channel.owner_id).await?;
        let owned: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM channels WHERE owner_id = $1")
            .bind(&channel.owner_id)
            .fetch_one(&mut *tx)
            .await?;
        if owned >= i64::from(max_per_owner) {
            return Err(StoreError::LimitExceeded(format!("a user may own at most {max_per_owner} channels")));
        }
        sqlx::query(concat!(
            "INSERT INTO channels (",
            channel_cols!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, NULL, $7, 0)"
        ))
        .bind(&channel.id)
        .bind(&channel.name)
        .bind(channel.topic.as_deref())
        .bind(&channel.owner_id)
        .bind(now)
        .bind(now)
        .bind(channel.retention_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO channel_members (channel_id, member_kind, member_id, user_id, agent_id, role, added_at) \
             VALUES ($1, 'user', $2, $2, NULL, 'owner', $3)",
        )
        .bind(&channel.id)
        .bind(&channel.owner_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(channel)
    }

    async fn get_channel(&self, id: &str) -> StoreResult<Option<Channel>> {
        sqlx::query(concat!("SELECT ", channel_cols!(), " FROM channels WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.reader)
            .await?
            .as_ref()
            .map(channel_from_row)
            .transpose()
    }

    async fn list_channels_for_user(&self, user_id: &str) -> StoreResult<Vec<UserChannel>> {
        let rows = sqlx::query(
            "SELECT c.id, c.name, c.topic, c.owner_id, c.created_at, c.updated_at, c.archived_at, c.retention_ms, \
                    c.last_seq, m.role \
             FROM channel_members m JOIN channels c ON c.id = m.channel_id \
             WHERE m.user_id = $1 ORDER BY c.created_at, c.id",
        )
        .bind(user_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| Ok(UserChannel { channel: channel_from_row(r)?, role: r.try_get::<String, _>("role")?.parse()? }))
            .collect()
    }

    async fn update_channel(&self, id: &str, update: ChannelUpdate) -> StoreResult<Channel> {
        let mut tx = self.begin_write().await?;
        let mut channel =
            sqlx::query(for_no_key_update!(concat!("SELECT ", channel_cols!(), " FROM channels WHERE id = $1")))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .as_ref()
                .map(channel_from_row)
                .transpose()?
                .ok_or(StoreError::NotFound)?;
        if let Some(name) = update.name {
            channel.name = name;
        }
        if let Some(topic) = update.topic {
            channel.topic = topic;
        }
        if let Some(retention_ms) = update.retention_ms {
            channel.retention_ms = retention_ms;
        }
        channel.updated_at = self.clock.now_ms();
        sqlx::query("UPDATE channels SET name = $2, topic = $3, retention_ms = $4, updated_at = $5 WHERE id = $1")
            .bind(id)
            .bind(&channel.name)
            .bind(channel.topic.as_deref())
            .bind(channel.retention_ms)
            .bind(channel.updated_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(channel)
    }

    async fn set_channel_archived(&self, id: &str, archived: bool) -> StoreResult<Channel> {
        let sql = if archived {
            concat!(
                "UPDATE channels SET archived_at = COALESCE(archived_at, $2), updated_at = $2 WHERE id = $1 RETURNING ",
                channel_cols!()
            )
        } else {
            concat!("UPDATE channels SET archived_at = NULL, updated_at = $2 WHERE id = $1 RETURNING ", channel_cols!())
        };
        sqlx::query(sql)
            .bind(id)
            .bind(self.clock.now_ms())
            .fetch_optional(&self.writer)
            .await?
            .as_ref()
            .map(channel_from_row)
            .transpose()?
            .ok_or(StoreError::NotFound)
    }

    async fn delete_channel(&self, id: &str) -> StoreResult<Vec<ChannelMember>> {
        let mut tx = self.begin_write().await?;
        // Blocks concurrent member inserts, so the list returned is complete.
        let found =
            sqlx::query(for_update!("SELECT id FROM channels WHERE id = $1")).bind(id).fetch_optional(&mut *tx).await?;
        if found.is_none() {
            return Err(StoreError::NotFound);
        }
        let rows = sqlx::query(concat!(
            "SELECT ",
            member_cols!(),
            " FROM channel_members WHERE channel_id = $1 ORDER BY added_at, member_kind, member_id"
        ))
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        let members = collect(rows, member_from_row)?;
        sqlx::query("DELETE FROM channels WHERE id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(members)
    }

    // ------------------------------------------------------------ members

    async fn add_member(&self, channel_id: &str, member: &MemberRef, role: MemberRole) -> StoreResult<ChannelMember> {
        let added = ChannelMember {
            channel_id: channel_id.to_owned(),
            member: member.clone(),
            role,
            added_at: self.clock.now_ms(),
        };
        let (user_id, agent_id) = match member.kind {
            MemberKind::User => (Some(member.id.as_str()), None),
            MemberKind::Agent => (None, Some(member.id.as_str())),
        };
        sqlx::query(
            "INSERT INTO channel_members (channel_id, member_kind, member_id, user_id, agent_id, role, added_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(channel_id)
        .bind(member.kind.as_str())
        .bind(&member.id)
        .bind(user_id)
        .bind(agent_id)
        .bind(role.as_str())
        .bind(added.added_at)
        .execute(&self.writer)
        .await?;
        Ok(added)
    }

    async fn remove_member(&self, channel_id: &str, member: &MemberRef) -> StoreResult<bool> {
        let done =
            sqlx::query("DELETE FROM channel_members WHERE channel_id = $1 AND member_kind = $2 AND member_id = $3")
                .bind(channel_id)
                .bind(member.kind.as_str())
                .bind(&member.id)
                .execute(&self.writer)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_members(&self, channel_id: &str) -> StoreResult<Vec<ChannelMember>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            member_cols!(),
            " FROM channel_members WHERE channel_id = $1 ORDER BY added_at, member_kind, member_id"
        ))
        .bind(channel_id)
        .fetch_all(&self.reader)
        .await?;
        collect(rows, member_from_row)
    }

    async fn member_role(&self, channel_id: &str, member: &MemberRef) -> StoreResult<Option<MemberRole>> {
        let role: Option<String> = sqlx::query_scalar(
            "SELECT role FROM channel_members WHERE channel_id = $1 AND member_kind = $2 AND member_id = $3",
        )
        .bind(channel_id)
        .bind(member.kind.as_str())
        .bind(&member.id)
        .fetch_optional(&self.reader)
        .await?;
        role.map(|r| r.parse()).transpose()
    }

    async fn is_member(&self, channel_id: &str, user_id: &str) -> StoreResult<bool> {
        let row = sqlx::query(
            "SELECT 1 FROM channel_members WHERE channel_id = $1 AND member_kind = 'user' AND member_id = $2",
        )
        .bind(channel_id)
        .bind(user_id)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.is_some())
    }

    // ------------------------------------------------------------ messages

    async fn insert_message(
        &self,
        new: NewMessage,
        idempotency_key: Option<&str>,
        event: &EventBuilder,
    ) -> StoreResult<InsertOutcome> {
        let now = self.clock.now_ms();
        let id = new_id();
        let mut tx = self.begin_write().await?;

        if let Some(key) = idempotency_key {
            // Claim the key, or take it over if it is past the window. A live
            // key makes the upsert return nothing; on PostgreSQL a concurrent
            // claim of the same key waits here for the other transaction.
            let claimed: Option<String> = sqlx::query_scalar(
                "INSERT INTO idempotency_keys (author_kind, author_id, idem_key, message_id, created_at) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (author_kind, author_id, idem_key) DO UPDATE \
                 SET message_id = excluded.message_id, created_at = excluded.created_at \
                 WHERE idempotency_keys.created_at <= $6 \
                 RETURNING message_id",
            )
            .bind(new.author.kind.as_str())
            .bind(&new.author.id)
            .bind(key)
            .bind(&id)
            .bind(now)
            .bind(now - IDEMPOTENCY_WINDOW_MS)
            .fetch_optional(&mut *tx)
            .await?;
            if claimed.is_none() {
                let original: String = sqlx::query_scalar(
                    "SELECT message_id FROM idempotency_keys WHERE author_kind = $1 AND author_id = $2 AND idem_key = $3",
                )
                .bind(new.author.kind.as_str())
                .bind(&new.author.id)
                .bind(key)
                .fetch_one(&mut *tx)
                .await?;
                let message = message_in(&mut tx, &original)
                    .await?
                    .ok_or_else(|| StoreError::Internal("idempotency key points to no message".into()))?;
                tx.rollback().await?;
                return Ok(InsertOutcome::Duplicate(message));
            }
        }

        // The channel row lock taken here orders concurrent inserts: seq
        // follows commit order.
        let seq: Option<i64> = sqlx::query_scalar(
            "UPDATE channels SET last_seq = last_seq + 1 WHERE id = $1 AND archived_at IS NULL RETURNING last_seq",
        )
        .bind(&new.channel_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(seq) = seq else {
            let exists = sqlx::query("SELECT id FROM channels WHERE id = $1")
                .bind(&new.channel_id)
                .fetch_optional(&mut *tx)
                .await?;
            return Err(match exists {
                Some(_) => StoreError::Conflict("channel is archived".into()),
                None => StoreError::NotFound,
            });
        };

        let message = Message {
            id,
            channel_id: new.channel_id,
            seq,
            author: new.author,
            text: new.text,
            created_at: now,
            edited_at: None,
            deleted_at: None,
        };
        sqlx::query(concat!(
            "INSERT INTO messages (",
            message_cols!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, NULL)"
        ))
        .bind(&message.id)
        .bind(&message.channel_id)
        .bind(message.seq)
        .bind(message.author.kind.as_str())
        .bind(&message.author.id)
        .bind(&message.text)
        .bind(message.created_at)
        .execute(&mut *tx)
        .await?;
        let outbox_id = insert_outbox(&mut tx, event(&message), now).await?;
        tx.commit().await?;
        Ok(InsertOutcome::Inserted(MessageWrite { message, outbox_id }))
    }

    async fn edit_message(
        &self,
        id: &str,
        editor: &MemberRef,
        text: &str,
        event: &EventBuilder,
    ) -> StoreResult<MessageWrite> {
        let now = self.clock.now_ms();
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(concat!(
            "UPDATE messages SET text = $4, edited_at = $5 \
             WHERE id = $1 AND author_kind = $2 AND author_id = $3 AND deleted_at IS NULL \
               AND EXISTS (SELECT 1 FROM channels c WHERE c.id = messages.channel_id AND c.archived_at IS NULL) \
             RETURNING ",
            message_cols!()
        ))
        .bind(id)
        .bind(editor.kind.as_str())
        .bind(&editor.id)
        .bind(text)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(explain_message_miss(&mut tx, id, "only the author may edit a message").await);
        };
        let message = message_from_row(&row)?;
        let outbox_id = insert_outbox(&mut tx, event(&message), now).await?;
        tx.commit().await?;
        Ok(MessageWrite { message, outbox_id })
    }

    async fn delete_message(&self, id: &str, actor: &MemberRef, event: &EventBuilder) -> StoreResult<MessageWrite> {
        let now = self.clock.now_ms();
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(concat!(
            "UPDATE messages SET text = '', deleted_at = $4 \
             WHERE id = $1 AND deleted_at IS NULL \
               AND EXISTS (SELECT 1 FROM channels c WHERE c.id = messages.channel_id AND c.archived_at IS NULL) \
               AND ((author_kind = $2 AND author_id = $3) \
                    OR EXISTS (SELECT 1 FROM channel_members cm WHERE cm.channel_id = messages.channel_id \
                               AND cm.member_kind = $2 AND cm.member_id = $3 AND cm.role = 'owner')) \
             RETURNING ",
            message_cols!()
        ))
        .bind(id)
        .bind(actor.kind.as_str())
        .bind(&actor.id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(
                explain_message_miss(&mut tx, id, "only the author or a channel owner may delete a message").await
            );
        };
        let message = message_from_row(&row)?;
        let outbox_id = insert_outbox(&mut tx, event(&message), now).await?;
        tx.commit().await?;
        Ok(MessageWrite { message, outbox_id })
    }

    async fn get_message(&self, id: &str) -> StoreResult<Option<Message>> {
        let mut conn = self.reader.acquire().await?;
        message_in(&mut conn, id).await
    }

    async fn list_messages(&self, channel_id: &str, page: MessagePage) -> StoreResult<Vec<Message>> {
        let limit = page_limit(page.limit);
        if limit == 0 {
            return Ok(Vec::new());
        }
        match (page.before, page.after) {
            (None, Some(after)) => {
                // Catching up: the messages right after the cursor, returned newest first.
                let rows = sqlx::query(concat!(
                    "SELECT ",
                    message_cols!(),
                    " FROM messages WHERE channel_id = $1 AND seq > $2 ORDER BY seq ASC LIMIT $3"
                ))
                .bind(channel_id)
                .bind(after)
                .bind(limit)
                .fetch_all(&self.reader)
                .await?;
                let mut messages = collect(rows, message_from_row)?;
                messages.reverse();
                Ok(messages)
            }
            (before, after) => {
                let rows = sqlx::query(concat!(
                    "SELECT ",
                    message_cols!(),
                    " FROM messages WHERE channel_id = $1 AND seq < $2 AND seq > $3 ORDER BY seq DESC LIMIT $4"
                ))
                .bind(channel_id)
                .bind(before.unwrap_or(i64::MAX))
                .bind(after.unwrap_or(i64::MIN))
                .bind(limit)
                .fetch_all(&self.reader)
                .await?;
                collect(rows, message_from_row)
            }
        }
    }

    // ------------------------------------------------------------ outbox

    async fn pending_outbox(&self, limit: u32) -> StoreResult<Vec<OutboxRecord>> {
        let rows = sqlx::query("SELECT id, channel, event_type, payload, created_at FROM outbox ORDER BY id LIMIT $1")
            .bind(page_limit(limit))
            .fetch_all(&self.reader)
            .await?;
        collect(rows, outbox_from_row)
    }

    async fn delete_outbox(&self, ids: &[i64]) -> StoreResult<u64> {
        let mut deleted = 0;
        for chunk in ids.chunks(500) {
            let mut query = sqlx::QueryBuilder::<Db>::new("DELETE FROM outbox WHERE id IN (");
            let mut list = query.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            list.push_unseparated(")");
            deleted += query.build().execute(&self.writer).await?.rows_affected();
        }
        Ok(deleted)
    }

    // ------------------------------------------------------------ agents

    async fn create_agent(&self, new: NewAgent, max_per_owner: u32) -> StoreResult<Agent> {
        let now = self.clock.now_ms();
        let agent = Agent {
            id: new_id(),
            owner_id: new.owner_id,
            name: new.name,
            persona: new.persona,
            quirks: new.quirks,
            model: new.model,
            tools: new.tools,
            response_policy: new.response_policy,
            created_at: now,
            updated_at: now,
        };
        let mut tx = self.begin_write().await?;
        lock_owner(&mut tx, &agent.owner_id).await?;
        let owned: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM agents WHERE owner_id = $1")
            .bind(&agent.owner_id)
            .fetch_one(&mut *tx)
            .await?;
        if owned >= i64::from(max_per_owner) {
            return Err(StoreError::LimitExceeded(format!("a user may own at most {max_per_owner} agents")));
        }
        sqlx::query(
            "INSERT INTO agents (id, owner_id, name, name_key, persona, quirks, model, tools, response_policy, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
        )
        .bind(&agent.id)
        .bind(&agent.owner_id)
        .bind(&agent.name)
        .bind(name_key(&agent.name))
        .bind(&agent.persona)
        .bind(to_json(&agent.quirks)?)
        .bind(&agent.model)
        .bind(to_json(&agent.tools)?)
        .bind(&agent.response_policy)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(agent)
    }

    async fn get_agent(&self, id: &str) -> StoreResult<Option<Agent>> {
        sqlx::query(concat!("SELECT ", agent_cols!(), " FROM agents WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.reader)
            .await?
            .as_ref()
            .map(agent_from_row)
            .transpose()
    }

    async fn list_agents(&self, owner_id: &str) -> StoreResult<Vec<Agent>> {
        let rows =
            sqlx::query(concat!("SELECT ", agent_cols!(), " FROM agents WHERE owner_id = $1 ORDER BY created_at, id"))
                .bind(owner_id)
                .fetch_all(&self.reader)
                .await?;
        collect(rows, agent_from_row)
    }

    async fn update_agent(&self, id: &str, update: AgentUpdate) -> StoreResult<Agent> {
        let mut tx = self.begin_write().await?;
        let mut agent =
            sqlx::query(for_no_key_update!(concat!("SELECT ", agent_cols!(), " FROM agents WHERE id = $1")))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .as_ref()
                .map(agent_from_row)
                .transpose()?
                .ok_or(StoreError::NotFound)?;
        let AgentUpdate { name, persona, quirks, model, tools, response_policy } = update;
        if let Some(v) = name {
            agent.name = v;
        }
        if let Some(v) = persona {
            agent.persona = v;
        }
        if let Some(v) = quirks {
            agent.quirks = v;
        }
        if let Some(v) = model {
            agent.model = v;
        }
        if let Some(v) = tools {
            agent.tools = v;
        }
        if let Some(v) = response_policy {
            agent.response_policy = v;
        }
        agent.updated_at = self.clock.now_ms();
        sqlx::query(
            "UPDATE agents SET name = $2, name_key = $3, persona = $4, quirks = $5, model = $6, tools = $7, \
             response_policy = $8, updated_at = $9 WHERE id = $1",
        )
        .bind(id)
        .bind(&agent.name)
        .bind(name_key(&agent.name))
        .bind(&agent.persona)
        .bind(to_json(&agent.quirks)?)
        .bind(&agent.model)
        .bind(to_json(&agent.tools)?)
        .bind(&agent.response_policy)
        .bind(agent.updated_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(agent)
    }

    async fn delete_agent(&self, id: &str) -> StoreResult<Vec<String>> {
        let mut tx = self.begin_write().await?;
        // Blocks concurrent `add_member` of this agent, so the list returned is complete.
        let found =
            sqlx::query(for_update!("SELECT id FROM agents WHERE id = $1")).bind(id).fetch_optional(&mut *tx).await?;
        if found.is_none() {
            return Err(StoreError::NotFound);
        }
        let mut channels: Vec<String> =
            sqlx::query_scalar("DELETE FROM channel_members WHERE agent_id = $1 RETURNING channel_id")
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
        channels.sort();
        sqlx::query("DELETE FROM agents WHERE id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(channels)
    }

    async fn list_agent_memberships(&self, agent_id: &str) -> StoreResult<Vec<ChannelMember>> {
        // `ix_channel_members_agent` makes this one index range.
        let rows = sqlx::query(concat!(
            "SELECT ",
            member_cols!(),
            " FROM channel_members WHERE agent_id = $1 ORDER BY channel_id"
        ))
        .bind(agent_id)
        .fetch_all(&self.reader)
        .await?;
        collect(rows, member_from_row)
    }

    // ------------------------------------------------------------ cleanup

    async fn delete_idempotency_keys_before(&self, cutoff_ms: i64, limit: u32) -> StoreResult<u64> {
        let limit = page_limit(limit);
        if limit == 0 {
            return Ok(0);
        }
        let done = sqlx::query(
            "DELETE FROM idempotency_keys WHERE (author_kind, author_id, idem_key) IN \
             (SELECT author_kind, author_id, idem_key FROM idempotency_keys WHERE created_at < $1 LIMIT $2)",
        )
        .bind(cutoff_ms)
        .bind(limit)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected())
    }

    async fn delete_expired_messages(&self, limit: u32) -> StoreResult<u64> {
        let limit = page_limit(limit);
        if limit == 0 {
            return Ok(0);
        }
        let done = sqlx::query(
            "DELETE FROM messages WHERE id IN \
             (SELECT m.id FROM channels c JOIN messages m ON m.channel_id = c.id \
              WHERE c.retention_ms IS NOT NULL AND m.created_at < $1 - c.retention_ms LIMIT $2)",
        )
        .bind(self.clock.now_ms())
        .bind(limit)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected())
    }
}
