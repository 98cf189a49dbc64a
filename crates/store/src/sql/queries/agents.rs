//! Agent records and where they are members.

use super::{This, lock_owner};
use crate::StoreError;
use crate::model::*;
use crate::sql::rows::{AgentRow, MemberRow};
use crate::sql::{name_key, new_id, to_json};
use crate::store::StoreResult;

pub(super) async fn create_agent(store: &This, new: NewAgent, max_per_owner: u32) -> StoreResult<Agent> {
    let now = store.clock.now_ms();
    let agent = Agent {
        id: new_id(),
        owner_id: new.owner_id,
        name: new.name,
        persona: new.persona,
        quirks: new.quirks,
        model: new.model,
        tools: new.tools,
        response_policy: new.response_policy,
        on_busy: new.on_busy,
        webhook: new.webhook.map(|w| AgentWebhook { previous_salt: None, previous_until: None, ..w }),
        created_at: now,
        updated_at: now,
    };
    let mut tx = store.begin_write().await?;
    lock_owner(&mut tx, &agent.owner_id).await?;
    let owned: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM agents WHERE owner_id = $1")
        .bind(&agent.owner_id)
        .fetch_one(&mut *tx)
        .await?;
    if owned >= i64::from(max_per_owner) {
        return Err(StoreError::LimitExceeded(format!("a user may own at most {max_per_owner} agents")));
    }
    sqlx::query(
        "INSERT INTO agents (id, owner_id, name, name_key, persona, quirks, model, tools, response_policy, on_busy, \
         created_at, updated_at, kind, webhook_url, webhook_secret_salt) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $13, $14)",
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
    .bind(&agent.on_busy)
    .bind(now)
    .bind(if agent.is_external() { "external" } else { "hosted" })
    .bind(agent.webhook.as_ref().map(|w| &w.url))
    .bind(agent.webhook.as_ref().map(|w| &w.secret_salt))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(agent)
}

pub(super) async fn get_agent(store: &This, id: &str) -> StoreResult<Option<Agent>> {
    let row: Option<AgentRow> = sqlx::query_as(concat!("SELECT ", agent_cols!(), " FROM agents WHERE id = $1"))
        .bind(id)
        .fetch_optional(&store.reader)
        .await?;
    row.map(Agent::try_from).transpose()
}

pub(super) async fn list_agents(store: &This, owner_id: &str) -> StoreResult<Vec<Agent>> {
    let rows: Vec<AgentRow> =
        sqlx::query_as(concat!("SELECT ", agent_cols!(), " FROM agents WHERE owner_id = $1 ORDER BY created_at, id"))
            .bind(owner_id)
            .fetch_all(&store.reader)
            .await?;
    rows.into_iter().map(Agent::try_from).collect()
}

pub(super) async fn update_agent(store: &This, id: &str, update: AgentUpdate) -> StoreResult<Agent> {
    let mut tx = store.begin_write().await?;
    let found: Option<AgentRow> =
        sqlx::query_as(for_no_key_update!(concat!("SELECT ", agent_cols!(), " FROM agents WHERE id = $1")))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let mut agent = Agent::try_from(found.ok_or(StoreError::NotFound)?)?;
    let AgentUpdate { name, persona, quirks, model, tools, response_policy, on_busy, webhook_url } = update;
    if let Some(url) = webhook_url {
        match agent.webhook.as_mut() {
            Some(w) => w.url = url,
            None => return Err(StoreError::Conflict("a hosted agent has no webhook".into())),
        }
    }
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
    if let Some(v) = on_busy {
        agent.on_busy = v;
    }
    agent.updated_at = store.clock.now_ms();
    sqlx::query(
        "UPDATE agents SET name = $2, name_key = $3, persona = $4, quirks = $5, model = $6, tools = $7, \
         response_policy = $8, on_busy = $9, updated_at = $10, webhook_url = $11 WHERE id = $1",
    )
    .bind(id)
    .bind(&agent.name)
    .bind(name_key(&agent.name))
    .bind(&agent.persona)
    .bind(to_json(&agent.quirks)?)
    .bind(&agent.model)
    .bind(to_json(&agent.tools)?)
    .bind(&agent.response_policy)
    .bind(&agent.on_busy)
    .bind(agent.updated_at)
    .bind(agent.webhook.as_ref().map(|w| &w.url))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(agent)
}

pub(super) async fn rotate_agent_secret(store: &This, id: &str, salt: &str, previous_until: i64) -> StoreResult<Agent> {
    let mut tx = store.begin_write().await?;
    let found: Option<AgentRow> =
        sqlx::query_as(for_no_key_update!(concat!("SELECT ", agent_cols!(), " FROM agents WHERE id = $1")))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let mut agent = Agent::try_from(found.ok_or(StoreError::NotFound)?)?;
    let Some(webhook) = agent.webhook.as_mut() else {
        return Err(StoreError::Conflict("a hosted agent has no signing secret".into()));
    };
    // The secret in use until now stays honoured for a while; one rotated before that is dropped.
    webhook.previous_salt = Some(std::mem::replace(&mut webhook.secret_salt, salt.to_owned()));
    webhook.previous_until = Some(previous_until);
    agent.updated_at = store.clock.now_ms();
    sqlx::query(
        "UPDATE agents SET webhook_secret_salt = $2, webhook_previous_salt = $3, webhook_previous_until = $4, \
         updated_at = $5 WHERE id = $1",
    )
    .bind(id)
    .bind(&webhook.secret_salt)
    .bind(&webhook.previous_salt)
    .bind(webhook.previous_until)
    .bind(agent.updated_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(agent)
}

pub(super) async fn delete_agent(store: &This, id: &str) -> StoreResult<Vec<String>> {
    let mut tx = store.begin_write().await?;
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

pub(super) async fn list_agent_memberships(store: &This, agent_id: &str) -> StoreResult<Vec<ChannelMember>> {
    // `ix_channel_members_agent` makes this one index range.
    let rows: Vec<MemberRow> = sqlx::query_as(concat!(
        "SELECT ",
        member_cols!(),
        " FROM channel_members WHERE agent_id = $1 ORDER BY channel_id"
    ))
    .bind(agent_id)
    .fetch_all(&store.reader)
    .await?;
    Ok(rows.into_iter().map(ChannelMember::from).collect())
}

pub(super) async fn list_channel_agents(store: &This, channel_id: &str) -> StoreResult<Vec<Agent>> {
    let rows: Vec<AgentRow> = sqlx::query_as(concat!(
        "SELECT ",
        agent_cols!(),
        " FROM agents WHERE id IN (SELECT agent_id FROM channel_members WHERE channel_id = $1 AND agent_id IS NOT NULL) \
         ORDER BY created_at, id"
    ))
    .bind(channel_id)
    .fetch_all(&store.reader)
    .await?;
    rows.into_iter().map(Agent::try_from).collect()
}
