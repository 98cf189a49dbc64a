//! Agent runs: created with the message that triggers them, started and
//! ended by compare-and-set on their status, and the rolling summaries.

use super::messages::{append_message, insert_outbox};
use super::{DbConn, This};
use crate::StoreError;
use crate::model::*;
use crate::sql::rows::RunRow;
use crate::sql::{new_id, page_limit};
use crate::store::StoreResult;

/// A minute, for the channel's run-rate guard.
const MINUTE_MS: i64 = 60_000;

async fn run_in(conn: &mut DbConn, id: &str) -> StoreResult<Option<Run>> {
    let row: Option<RunRow> = sqlx::query_as(concat!("SELECT ", run_cols!(), " FROM runs WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(Run::from))
}

async fn insert_run(conn: &mut DbConn, new: NewRun, now: i64) -> StoreResult<Run> {
    let run = Run {
        id: new_id(),
        agent_id: new.agent_id,
        channel_id: new.channel_id,
        trigger_message_id: new.trigger_message_id,
        triggered_by: new.triggered_by,
        parent_run_id: new.parent_run_id,
        hop: new.hop,
        status: RunStatus::Queued,
        provider: None,
        model: None,
        usage: RunUsage::default(),
        cost_usd: 0.0,
        error_code: None,
        error_message: None,
        answer_message_id: None,
        seq_reserved: RUN_SEQ_BLOCK,
        created_at: now,
        started_at: None,
        ended_at: None,
        node_id: None,
    };
    sqlx::query(
        "INSERT INTO runs (id, agent_id, channel_id, trigger_message_id, triggered_by, parent_run_id, hop, status, \
         seq_reserved, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', $8, $9)",
    )
    .bind(&run.id)
    .bind(&run.agent_id)
    .bind(&run.channel_id)
    .bind(&run.trigger_message_id)
    .bind(&run.triggered_by)
    .bind(&run.parent_run_id)
    .bind(run.hop)
    .bind(run.seq_reserved)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(run)
}

/// Inserts the runs `message` triggers, within the channel's run rate.
/// The caller holds the channel row lock (taken by `append_message`), so
/// the count and the inserts are race-free on both engines.
pub(super) async fn insert_triggered_runs(
    conn: &mut DbConn,
    message: &Message,
    triggers: &RunTriggers,
    now: i64,
) -> StoreResult<(Vec<Run>, Vec<String>)> {
    if triggers.runs.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut room = usize::MAX;
    if triggers.channel_runs_per_minute > 0 {
        let recent: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE channel_id = $1 AND created_at > $2")
            .bind(&message.channel_id)
            .bind(now - MINUTE_MS)
            .fetch_one(&mut *conn)
            .await?;
        let recent = usize::try_from(recent).unwrap_or(usize::MAX);
        room = (triggers.channel_runs_per_minute as usize).saturating_sub(recent);
    }
    let mut runs = Vec::new();
    let mut limited = Vec::new();
    for trigger in &triggers.runs {
        if runs.len() >= room {
            limited.push(trigger.agent_id.clone());
            continue;
        }
        let new = NewRun {
            agent_id: trigger.agent_id.clone(),
            channel_id: message.channel_id.clone(),
            trigger_message_id: Some(message.id.clone()),
            triggered_by: trigger.triggered_by.clone(),
            parent_run_id: trigger.parent_run_id.clone(),
            hop: trigger.hop,
        };
        runs.push(insert_run(conn, new, now).await?);
    }
    Ok((runs, limited))
}

pub(super) async fn create_run(store: &This, new: NewRun) -> StoreResult<Run> {
    let now = store.clock.now_ms();
    let mut tx = store.begin_write().await?;
    let channel = sqlx::query("SELECT id FROM channels WHERE id = $1").bind(&new.channel_id).fetch_optional(&mut *tx).await?;
    if channel.is_none() {
        return Err(StoreError::NotFound);
    }
    let run = insert_run(&mut tx, new, now).await?;
    tx.commit().await?;
    Ok(run)
}

pub(super) async fn get_run(store: &This, id: &str) -> StoreResult<Option<Run>> {
    let mut conn = store.reader.acquire().await?;
    run_in(&mut conn, id).await
}

pub(super) async fn list_channel_runs(store: &This, channel_id: &str, filter: RunFilter, limit: u32) -> StoreResult<Vec<Run>> {
    let rows: Vec<RunRow> = match filter {
        RunFilter::Active => {
            sqlx::query_as(concat!(
                "SELECT ",
                run_cols!(),
                " FROM runs WHERE channel_id = $1 AND status IN ('queued', 'running') ORDER BY created_at, id LIMIT $2"
            ))
            .bind(channel_id)
            .bind(page_limit(limit))
            .fetch_all(&store.reader)
            .await?
        }
        RunFilter::All { before } => {
            sqlx::query_as(concat!(
                "SELECT ",
                run_cols!(),
                " FROM runs WHERE channel_id = $1 AND created_at < $2 ORDER BY created_at DESC, id DESC LIMIT $3"
            ))
            .bind(channel_id)
            .bind(before.unwrap_or(i64::MAX))
            .bind(page_limit(limit))
            .fetch_all(&store.reader)
            .await?
        }
    };
    Ok(rows.into_iter().map(Run::from).collect())
}

pub(super) async fn list_runs_with_status(
    store: &This,
    status: RunStatus,
    after: Option<(i64, String)>,
    limit: u32,
) -> StoreResult<Vec<Run>> {
    let (after_at, after_id) = after.unwrap_or((i64::MIN, String::new()));
    let rows: Vec<RunRow> = sqlx::query_as(concat!(
        "SELECT ",
        run_cols!(),
        " FROM runs WHERE status = $1 AND (created_at > $2 OR (created_at = $2 AND id > $3)) \
         ORDER BY created_at, id LIMIT $4"
    ))
    .bind(status.as_str())
    .bind(after_at)
    .bind(after_id)
    .bind(page_limit(limit))
    .fetch_all(&store.reader)
    .await?;
    Ok(rows.into_iter().map(Run::from).collect())
}

pub(super) async fn claim_run(store: &This, claim: RunClaimRequest<'_>) -> StoreResult<RunClaim> {
    let mut tx = store.begin_write().await?;
    // The row lock (PostgreSQL) makes the check and the update one compare-and-set.
    let row: Option<RunRow> = sqlx::query_as(for_update!(concat!("SELECT ", run_cols!(), " FROM runs WHERE id = $1")))
        .bind(claim.run_id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(mut run) = row.map(Run::from) else {
        return Ok(RunClaim::Taken(None));
    };
    let owner = run.node_id.as_deref();
    if run.status != RunStatus::Queued || !(owner.is_none() || owner == Some(claim.node) || owner == claim.dead_owner) {
        tx.rollback().await?;
        return Ok(RunClaim::Taken(Some(run)));
    }
    if owner == Some(claim.node) {
        tx.rollback().await?;
        return Ok(RunClaim::Claimed(run));
    }
    // The agent's row lock serialises claims of its runs on every node, so
    // the runs of one agent in one channel always have one owner at a time.
    sqlx::query(for_no_key_update!("SELECT id FROM agents WHERE id = $1")).bind(&run.agent_id).fetch_optional(&mut *tx).await?;
    let elsewhere: Option<Option<String>> = sqlx::query_scalar(
        "SELECT node_id FROM runs WHERE agent_id = $1 AND channel_id = $2 AND id <> $3 \
         AND (status = 'running' OR (status = 'queued' AND node_id IS NOT NULL)) \
         AND (node_id IS NULL OR (node_id <> $4 AND node_id <> $5)) \
         ORDER BY created_at, id LIMIT 1",
    )
    .bind(&run.agent_id)
    .bind(&run.channel_id)
    .bind(&run.id)
    .bind(claim.node)
    .bind(claim.dead_owner.unwrap_or(claim.node))
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(owner) = elsewhere {
        tx.rollback().await?;
        return Ok(RunClaim::Busy { run, owner: owner.unwrap_or_default() });
    }
    if let Some(user) = run.triggered_by.clone() {
        // The person's row lock serialises claims of their runs on every node,
        // so two nodes never both take the last place.
        sqlx::query(for_no_key_update!("SELECT id FROM users WHERE id = $1")).bind(&user).fetch_optional(&mut *tx).await?;
        let active: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM runs WHERE triggered_by = $1 AND status IN ('queued', 'running') \
             AND node_id IS NOT NULL AND id <> $2",
        )
        .bind(&user)
        .bind(&run.id)
        .fetch_one(&mut *tx)
        .await?;
        if active >= i64::from(claim.runs_per_user) {
            tx.rollback().await?;
            return Ok(RunClaim::UserFull(run));
        }
    }
    sqlx::query("UPDATE runs SET node_id = $2 WHERE id = $1").bind(&run.id).bind(claim.node).execute(&mut *tx).await?;
    tx.commit().await?;
    run.node_id = Some(claim.node.to_owned());
    Ok(RunClaim::Claimed(run))
}

pub(super) async fn start_run(store: &This, id: &str, node: &str, provider: &str, model: &str, reserve: i64) -> StoreResult<Option<Run>> {
    let now = store.clock.now_ms();
    let row: Option<RunRow> = sqlx::query_as(concat!(
        "UPDATE runs SET status = 'running', provider = $2, model = $3, started_at = $4, seq_reserved = seq_reserved + $5 \
         WHERE id = $1 AND status = 'queued' AND node_id = $6 RETURNING ",
        run_cols!()
    ))
    .bind(id)
    .bind(provider)
    .bind(model)
    .bind(now)
    .bind(reserve)
    .bind(node)
    .fetch_optional(&store.writer)
    .await?;
    Ok(row.map(Run::from))
}

pub(super) async fn reserve_run_seq(store: &This, id: &str, node: &str, block: i64) -> StoreResult<Option<i64>> {
    Ok(sqlx::query_scalar(
        "UPDATE runs SET seq_reserved = seq_reserved + $2 WHERE id = $1 AND status IN ('queued', 'running') \
         AND (node_id IS NULL OR node_id = $3) RETURNING seq_reserved",
    )
    .bind(id)
    .bind(block)
    .bind(node)
    .fetch_optional(&store.writer)
    .await?)
}

pub(super) async fn record_run_usage(store: &This, id: &str, usage: RunUsage, cost_usd: f64) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE runs SET input_tokens = $2, output_tokens = $3, usage_estimated = $4, cost_usd = $5 \
         WHERE id = $1 AND status IN ('queued', 'running')",
    )
    .bind(id)
    .bind(usage.input_tokens)
    .bind(usage.output_tokens)
    .bind(usage.estimated)
    .bind(cost_usd)
    .execute(&store.writer)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn end_run(store: &This, end: RunEnd, events: &RunEventBuilder<'_>) -> StoreResult<RunEndOutcome> {
    if end.status.is_active() {
        return Err(StoreError::Internal(format!("a run cannot end as {}", end.status)));
    }
    let now = store.clock.now_ms();
    let mut tx = store.begin_write().await?;
    // The row lock (PostgreSQL) makes this and the update below one compare-and-set.
    let row: Option<RunRow> =
        sqlx::query_as(for_update!(concat!("SELECT ", run_cols!(), " FROM runs WHERE id = $1")))
            .bind(&end.run_id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(mut run) = row.map(Run::from) else {
        return Ok(RunEndOutcome::AlreadyEnded(None));
    };
    if !run.status.is_active() {
        tx.rollback().await?;
        return Ok(RunEndOutcome::AlreadyEnded(Some(run)));
    }
    if let (Some(ender), Some(owner)) = (end.ender.as_deref(), run.node_id.as_deref())
        && ender != owner
    {
        tx.rollback().await?;
        return Ok(RunEndOutcome::OwnedElsewhere(run));
    }
    let seq = match end.seq {
        Some(seq) => seq.max(1),
        None => run.seq_reserved + 1,
    };
    let (mut message, mut runs, mut limited) = (None, Vec::new(), Vec::new());
    if let Some(answer) = end.answer {
        let new = NewMessage {
            channel_id: run.channel_id.clone(),
            author: MemberRef::agent(&run.agent_id),
            text: answer.text,
        };
        match append_message(&mut tx, answer.message_id, new, Some(run.id.clone()), now).await {
            Ok(stored) => {
                (runs, limited) = insert_triggered_runs(&mut tx, &stored, &answer.triggers, now).await?;
                message = Some(stored);
            }
            // An archived channel takes no answer; the run still ends.
            Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
    }
    run.status = end.status;
    run.error_code = end.error_code;
    run.error_message = end.error_message;
    if let Some((usage, cost)) = end.usage {
        run.usage = usage;
        run.cost_usd = cost;
    }
    run.answer_message_id = message.as_ref().map(|m| m.id.clone());
    run.seq_reserved = run.seq_reserved.max(seq);
    run.ended_at = Some(now);
    let updated = sqlx::query(
        "UPDATE runs SET status = $2, error_code = $3, error_message = $4, input_tokens = $5, output_tokens = $6, \
         usage_estimated = $7, cost_usd = $8, answer_message_id = $9, seq_reserved = $10, ended_at = $11 \
         WHERE id = $1 AND status IN ('queued', 'running')",
    )
    .bind(&run.id)
    .bind(run.status.as_str())
    .bind(&run.error_code)
    .bind(&run.error_message)
    .bind(run.usage.input_tokens)
    .bind(run.usage.output_tokens)
    .bind(run.usage.estimated)
    .bind(run.cost_usd)
    .bind(&run.answer_message_id)
    .bind(run.seq_reserved)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() != 1 {
        return Err(StoreError::Internal("a locked active run did not update".into()));
    }
    let built = events(&EndedRun { run: &run, seq, message: message.as_ref(), runs: &runs });
    let mut outbox_ids = Vec::with_capacity(built.len());
    for event in built {
        outbox_ids.push(insert_outbox(&mut tx, event, now).await?);
    }
    tx.commit().await?;
    Ok(RunEndOutcome::Ended(RunEnded { run, seq, message, outbox_ids, runs, limited }))
}

pub(super) async fn user_run_cost_since(store: &This, user_id: &str, since_ms: i64) -> StoreResult<f64> {
    let total: Option<f64> =
        sqlx::query_scalar("SELECT SUM(cost_usd) FROM runs WHERE triggered_by = $1 AND created_at >= $2")
            .bind(user_id)
            .bind(since_ms)
            .fetch_one(&store.reader)
            .await?;
    Ok(total.unwrap_or(0.0))
}

pub(super) async fn get_agent_summary(store: &This, agent_id: &str, channel_id: &str) -> StoreResult<Option<AgentSummary>> {
    Ok(sqlx::query_as(
        "SELECT agent_id, channel_id, summary, last_seq, last_message_id, updated_at FROM agent_summaries \
         WHERE agent_id = $1 AND channel_id = $2",
    )
    .bind(agent_id)
    .bind(channel_id)
    .fetch_optional(&store.reader)
    .await?)
}

pub(super) async fn put_agent_summary(store: &This, summary: &AgentSummary) -> StoreResult<()> {
    // A summary never moves backwards: an older one (a slower writer) loses.
    sqlx::query(
        "INSERT INTO agent_summaries (agent_id, channel_id, summary, last_seq, last_message_id, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (agent_id, channel_id) DO UPDATE SET summary = excluded.summary, last_seq = excluded.last_seq, \
         last_message_id = excluded.last_message_id, updated_at = excluded.updated_at \
         WHERE agent_summaries.last_seq <= excluded.last_seq",
    )
    .bind(&summary.agent_id)
    .bind(&summary.channel_id)
    .bind(&summary.summary)
    .bind(summary.last_seq)
    .bind(&summary.last_message_id)
    .bind(store.clock.now_ms())
    .execute(&store.writer)
    .await?;
    Ok(())
}
