//! Messages with the outbox rows committed beside them, and the cleanup of
//! old idempotency keys and of messages past their channel's retention.

use super::runs::insert_triggered_runs;
use super::{Db, DbConn, This};
use crate::StoreError;
use crate::model::*;
use crate::sql::rows::MessageRow;
use crate::sql::{new_id, page_limit};
use crate::store::{IDEMPOTENCY_WINDOW_MS, StoreResult};

async fn message_in(conn: &mut DbConn, id: &str) -> StoreResult<Option<Message>> {
    let row: Option<MessageRow> = sqlx::query_as(concat!("SELECT ", message_cols!(), " FROM messages WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(Message::from))
}

pub(super) async fn insert_outbox(conn: &mut DbConn, event: OutboxEvent, now: i64) -> StoreResult<i64> {
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
    // (deleted_at, archived_at)
    let row: Result<Option<(Option<i64>, Option<i64>)>, _> = sqlx::query_as(
        "SELECT m.deleted_at, c.archived_at FROM messages m JOIN channels c ON c.id = m.channel_id WHERE m.id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await;
    match row {
        Ok(None) | Ok(Some((Some(_), _))) => StoreError::NotFound,
        Ok(Some((None, Some(_)))) => StoreError::Conflict("channel is archived".into()),
        Ok(Some((None, None))) => StoreError::Forbidden(forbidden.into()),
        Err(e) => e.into(),
    }
}

// ------------------------------------------------------------ messages

pub(super) async fn insert_message(
    store: &This,
    new: NewMessage,
    idempotency_key: Option<&str>,
    event: &EventBuilder,
    triggers: &RunTriggers,
) -> StoreResult<InsertOutcome> {
    let now = store.clock.now_ms();
    let id = new_id();
    let mut tx = store.begin_write().await?;

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

    let message = append_message(&mut tx, id, new, None, now).await?;
    let (runs, limited) = insert_triggered_runs(&mut tx, &message, triggers, now).await?;
    let outbox_id = insert_outbox(&mut tx, event(&message), now).await?;
    tx.commit().await?;
    Ok(InsertOutcome::Inserted(MessageWrite { message, outbox_id, runs, limited }))
}

/// Allocates the channel's next `seq` and inserts the message. NotFound if
/// the channel does not exist; Conflict if it is archived.
pub(super) async fn append_message(
    conn: &mut DbConn,
    id: String,
    new: NewMessage,
    run_id: Option<String>,
    now: i64,
) -> StoreResult<Message> {
    // The channel row lock taken here orders concurrent inserts: seq
    // follows commit order.
    let seq: Option<i64> = sqlx::query_scalar(
        "UPDATE channels SET last_seq = last_seq + 1 WHERE id = $1 AND archived_at IS NULL RETURNING last_seq",
    )
    .bind(&new.channel_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(seq) = seq else {
        let exists =
            sqlx::query("SELECT id FROM channels WHERE id = $1").bind(&new.channel_id).fetch_optional(&mut *conn).await?;
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
        run_id,
    };
    sqlx::query(concat!(
        "INSERT INTO messages (",
        message_cols!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, NULL, $8)"
    ))
    .bind(&message.id)
    .bind(&message.channel_id)
    .bind(message.seq)
    .bind(message.author.kind.as_str())
    .bind(&message.author.id)
    .bind(&message.text)
    .bind(message.created_at)
    .bind(&message.run_id)
    .execute(&mut *conn)
    .await?;
    Ok(message)
}

pub(super) async fn edit_message(
    store: &This,
    id: &str,
    editor: &MemberRef,
    text: &str,
    event: &EventBuilder,
) -> StoreResult<MessageWrite> {
    let now = store.clock.now_ms();
    let mut tx = store.begin_write().await?;
    let row: Option<MessageRow> = sqlx::query_as(concat!(
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
    let message = Message::from(row);
    let outbox_id = insert_outbox(&mut tx, event(&message), now).await?;
    tx.commit().await?;
    Ok(MessageWrite { message, outbox_id, runs: Vec::new(), limited: Vec::new() })
}

pub(super) async fn delete_message(
    store: &This,
    id: &str,
    actor: &MemberRef,
    event: &EventBuilder,
) -> StoreResult<MessageWrite> {
    let now = store.clock.now_ms();
    let mut tx = store.begin_write().await?;
    let row: Option<MessageRow> = sqlx::query_as(concat!(
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
        return Err(explain_message_miss(&mut tx, id, "only the author or a channel owner may delete a message").await);
    };
    let message = Message::from(row);
    let outbox_id = insert_outbox(&mut tx, event(&message), now).await?;
    tx.commit().await?;
    Ok(MessageWrite { message, outbox_id, runs: Vec::new(), limited: Vec::new() })
}

pub(super) async fn get_message(store: &This, id: &str) -> StoreResult<Option<Message>> {
    let mut conn = store.reader.acquire().await?;
    message_in(&mut conn, id).await
}

pub(super) async fn list_messages(store: &This, channel_id: &str, page: MessagePage) -> StoreResult<Vec<Message>> {
    let limit = page_limit(page.limit);
    if limit == 0 {
        return Ok(Vec::new());
    }
    let rows: Vec<MessageRow> = match (page.before, page.after) {
        (None, Some(after)) => {
            // Catching up: the messages right after the cursor, returned newest first.
            let mut rows: Vec<MessageRow> = sqlx::query_as(concat!(
                "SELECT ",
                message_cols!(),
                " FROM messages WHERE channel_id = $1 AND seq > $2 ORDER BY seq ASC LIMIT $3"
            ))
            .bind(channel_id)
            .bind(after)
            .bind(limit)
            .fetch_all(&store.reader)
            .await?;
            rows.reverse();
            rows
        }
        (before, after) => {
            sqlx::query_as(concat!(
                "SELECT ",
                message_cols!(),
                " FROM messages WHERE channel_id = $1 AND seq < $2 AND seq > $3 ORDER BY seq DESC LIMIT $4"
            ))
            .bind(channel_id)
            .bind(before.unwrap_or(i64::MAX))
            .bind(after.unwrap_or(i64::MIN))
            .bind(limit)
            .fetch_all(&store.reader)
            .await?
        }
    };
    Ok(rows.into_iter().map(Message::from).collect())
}

// ------------------------------------------------------------ outbox

pub(super) async fn pending_outbox(store: &This, limit: u32) -> StoreResult<Vec<OutboxRecord>> {
    Ok(sqlx::query_as("SELECT id, channel, event_type, payload, created_at FROM outbox ORDER BY id LIMIT $1")
        .bind(page_limit(limit))
        .fetch_all(&store.reader)
        .await?)
}

pub(super) async fn claim_outbox(store: &This, claim: OutboxClaim) -> StoreResult<Vec<OutboxRecord>> {
    let limit = page_limit(claim.limit);
    if limit == 0 {
        return Ok(Vec::new());
    }
    // One statement: PostgreSQL skips rows another claimer has locked and
    // re-checks the lease of rows committed meanwhile; SQLite's writer is
    // exclusive.
    let mut rows: Vec<OutboxRecord> = sqlx::query_as(concat!(
        "UPDATE outbox SET claimed_by = $1, claimed_until = $2 WHERE id IN (",
        skip_locked!("SELECT id FROM outbox WHERE claimed_until < $3 AND created_at <= $4 ORDER BY id LIMIT $5"),
        ") RETURNING id, channel, event_type, payload, created_at"
    ))
    .bind(&claim.owner)
    .bind(claim.lease_until_ms)
    .bind(claim.now_ms)
    .bind(claim.created_until_ms)
    .bind(limit)
    .fetch_all(&store.writer)
    .await?;
    // RETURNING has no order of its own.
    rows.sort_by_key(|r| r.id);
    Ok(rows)
}

pub(super) async fn release_outbox(store: &This, ids: &[i64]) -> StoreResult<u64> {
    let mut released = 0;
    for chunk in ids.chunks(500) {
        let mut query = sqlx::QueryBuilder::<Db>::new("UPDATE outbox SET claimed_by = NULL, claimed_until = 0 WHERE id IN (");
        let mut list = query.separated(", ");
        for id in chunk {
            list.push_bind(*id);
        }
        list.push_unseparated(")");
        released += query.build().execute(&store.writer).await?.rows_affected();
    }
    Ok(released)
}

pub(super) async fn delete_outbox(store: &This, ids: &[i64]) -> StoreResult<u64> {
    let mut deleted = 0;
    for chunk in ids.chunks(500) {
        let mut query = sqlx::QueryBuilder::<Db>::new("DELETE FROM outbox WHERE id IN (");
        let mut list = query.separated(", ");
        for id in chunk {
            list.push_bind(*id);
        }
        list.push_unseparated(")");
        deleted += query.build().execute(&store.writer).await?.rows_affected();
    }
    Ok(deleted)
}

// ------------------------------------------------------------ cleanup

pub(super) async fn delete_idempotency_keys_before(store: &This, cutoff_ms: i64, limit: u32) -> StoreResult<u64> {
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
    .execute(&store.writer)
    .await?;
    Ok(done.rows_affected())
}

pub(super) async fn delete_expired_messages(store: &This, limit: u32) -> StoreResult<u64> {
    let limit = page_limit(limit);
    if limit == 0 {
        return Ok(0);
    }
    let done = sqlx::query(
        "DELETE FROM messages WHERE id IN \
         (SELECT m.id FROM channels c JOIN messages m ON m.channel_id = c.id \
          WHERE c.retention_ms IS NOT NULL AND m.created_at < $1 - c.retention_ms LIMIT $2)",
    )
    .bind(store.clock.now_ms())
    .bind(limit)
    .execute(&store.writer)
    .await?;
    Ok(done.rows_affected())
}
