//! Channels and their members.

use super::{This, lock_owner};
use crate::StoreError;
use crate::model::*;
use crate::sql::new_id;
use crate::sql::rows::{MemberProfileRow, MemberRow};
use crate::store::StoreResult;

// ------------------------------------------------------------ channels

pub(super) async fn create_channel(store: &This, new: NewChannel, max_per_owner: u32) -> StoreResult<Channel> {
    let now = store.clock.now_ms();
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
    let mut tx = store.begin_write().await?;
    lock_owner(&mut tx, &channel.owner_id).await?;
    let owned: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM channels WHERE owner_id = $1")
        .bind(&channel.owner_id)
        .fetch_one(&mut *tx)
        .await?;
    if owned >= i64::from(max_per_owner) {
        return Err(StoreError::LimitExceeded(format!("a user may own at most {max_per_owner} channels")));
    }
    sqlx::query(concat!("INSERT INTO channels (", channel_cols!(), ") VALUES ($1, $2, $3, $4, $5, $6, NULL, $7, 0)"))
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

pub(super) async fn get_channel(store: &This, id: &str) -> StoreResult<Option<Channel>> {
    Ok(sqlx::query_as(concat!("SELECT ", channel_cols!(), " FROM channels WHERE id = $1"))
        .bind(id)
        .fetch_optional(&store.reader)
        .await?)
}

pub(super) async fn list_channels_for_user(store: &This, user_id: &str) -> StoreResult<Vec<UserChannel>> {
    Ok(sqlx::query_as(
        "SELECT c.id, c.name, c.topic, c.owner_id, c.created_at, c.updated_at, c.archived_at, c.retention_ms, \
                c.last_seq, m.role \
         FROM channel_members m JOIN channels c ON c.id = m.channel_id \
         WHERE m.user_id = $1 ORDER BY c.created_at, c.id",
    )
    .bind(user_id)
    .fetch_all(&store.reader)
    .await?)
}

pub(super) async fn update_channel(store: &This, id: &str, update: ChannelUpdate) -> StoreResult<Channel> {
    let mut tx = store.begin_write().await?;
    let found: Option<Channel> =
        sqlx::query_as(for_no_key_update!(concat!("SELECT ", channel_cols!(), " FROM channels WHERE id = $1")))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let mut channel = found.ok_or(StoreError::NotFound)?;
    if let Some(name) = update.name {
        channel.name = name;
    }
    if let Some(topic) = update.topic {
        channel.topic = topic;
    }
    if let Some(retention_ms) = update.retention_ms {
        channel.retention_ms = retention_ms;
    }
    channel.updated_at = store.clock.now_ms();
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

pub(super) async fn set_channel_archived(store: &This, id: &str, archived: bool) -> StoreResult<Channel> {
    let sql = if archived {
        concat!(
            "UPDATE channels SET archived_at = COALESCE(archived_at, $2), updated_at = $2 WHERE id = $1 RETURNING ",
            channel_cols!()
        )
    } else {
        concat!("UPDATE channels SET archived_at = NULL, updated_at = $2 WHERE id = $1 RETURNING ", channel_cols!())
    };
    let channel: Option<Channel> =
        sqlx::query_as(sql).bind(id).bind(store.clock.now_ms()).fetch_optional(&store.writer).await?;
    channel.ok_or(StoreError::NotFound)
}

pub(super) async fn delete_channel(store: &This, id: &str) -> StoreResult<Vec<ChannelMember>> {
    let mut tx = store.begin_write().await?;
    // Blocks concurrent member inserts, so the list returned is complete.
    let found =
        sqlx::query(for_update!("SELECT id FROM channels WHERE id = $1")).bind(id).fetch_optional(&mut *tx).await?;
    if found.is_none() {
        return Err(StoreError::NotFound);
    }
    let rows: Vec<MemberRow> = sqlx::query_as(concat!(
        "SELECT ",
        member_cols!(),
        " FROM channel_members WHERE channel_id = $1 ORDER BY added_at, member_kind, member_id"
    ))
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM channels WHERE id = $1").bind(id).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(rows.into_iter().map(ChannelMember::from).collect())
}

// ------------------------------------------------------------ members

pub(super) async fn add_member(
    store: &This,
    channel_id: &str,
    member: &MemberRef,
    role: MemberRole,
) -> StoreResult<ChannelMember> {
    let added = ChannelMember {
        channel_id: channel_id.to_owned(),
        member: member.clone(),
        role,
        added_at: store.clock.now_ms(),
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
    .execute(&store.writer)
    .await?;
    Ok(added)
}

pub(super) async fn remove_member(store: &This, channel_id: &str, member: &MemberRef) -> StoreResult<bool> {
    let done = sqlx::query("DELETE FROM channel_members WHERE channel_id = $1 AND member_kind = $2 AND member_id = $3")
        .bind(channel_id)
        .bind(member.kind.as_str())
        .bind(&member.id)
        .execute(&store.writer)
        .await?;
    Ok(done.rows_affected() > 0)
}

pub(super) async fn list_members(store: &This, channel_id: &str) -> StoreResult<Vec<ChannelMember>> {
    let rows: Vec<MemberRow> = sqlx::query_as(concat!(
        "SELECT ",
        member_cols!(),
        " FROM channel_members WHERE channel_id = $1 ORDER BY added_at, member_kind, member_id"
    ))
    .bind(channel_id)
    .fetch_all(&store.reader)
    .await?;
    Ok(rows.into_iter().map(ChannelMember::from).collect())
}

pub(super) async fn list_member_profiles(store: &This, channel_id: &str) -> StoreResult<Vec<MemberProfile>> {
    // `user_id` and `agent_id` mirror `member_id` by kind, with foreign keys:
    // every member has its user or agent row.
    let rows: Vec<MemberProfileRow> = sqlx::query_as(
        "SELECT m.channel_id AS channel_id, m.member_kind AS member_kind, m.member_id AS member_id, m.role AS role, m.added_at AS added_at, \
                COALESCE(u.username, a.name, '') AS name, a.model AS agent_model, a.owner_id AS agent_owner_id \
         FROM channel_members m \
         LEFT JOIN users u ON u.id = m.user_id \
         LEFT JOIN agents a ON a.id = m.agent_id \
         WHERE m.channel_id = $1 ORDER BY m.added_at, m.member_kind, m.member_id",
    )
    .bind(channel_id)
    .fetch_all(&store.reader)
    .await?;
    Ok(rows.into_iter().map(MemberProfile::from).collect())
}

pub(super) async fn member_role(store: &This, channel_id: &str, member: &MemberRef) -> StoreResult<Option<MemberRole>> {
    let role: Option<String> = sqlx::query_scalar(
        "SELECT role FROM channel_members WHERE channel_id = $1 AND member_kind = $2 AND member_id = $3",
    )
    .bind(channel_id)
    .bind(member.kind.as_str())
    .bind(&member.id)
    .fetch_optional(&store.reader)
    .await?;
    role.map(|r| r.parse()).transpose()
}

pub(super) async fn is_member(store: &This, channel_id: &str, user_id: &str) -> StoreResult<bool> {
    let row =
        sqlx::query("SELECT 1 FROM channel_members WHERE channel_id = $1 AND member_kind = 'user' AND member_id = $2")
            .bind(channel_id)
            .bind(user_id)
            .fetch_optional(&store.reader)
            .await?;
    Ok(row.is_some())
}
