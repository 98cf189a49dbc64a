//! The store's operations, shared by both engines: `sqlite.rs` and
//! `postgres.rs` each compile this module (and its areas) once more, after
//! defining
//! - `Db`: the sqlx driver, `This`: the store type (with `writer`, `reader`
//!   and `clock` fields, and `begin_write`, `stats`, `close_pools` methods),
//! - `ENGINE` and `MIGRATOR`,
//! - `for_update!` and `for_no_key_update!`: row locks (PostgreSQL) that
//!   SQLite does without, its write transactions being exclusive.
//!
//! One file per area holds the queries; the [`Store`] implementation here
//! only hands each call to its area.

mod agents;
mod channels;
mod messages;
mod runs;
mod users;

use std::time::Instant;

use async_trait::async_trait;

use super::{Db, ENGINE, MIGRATOR, This};
use crate::model::*;
use crate::store::{Store, StoreResult};
use crate::{Engine, StoreError};

type DbConn = <Db as sqlx::Database>::Connection;

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
        users::create_user(self, new).await
    }
    async fn get_user(&self, id: &str) -> StoreResult<Option<User>> {
        users::get_user(self, id).await
    }
    async fn get_user_by_username(&self, username: &str) -> StoreResult<Option<User>> {
        users::get_user_by_username(self, username).await
    }
    async fn get_user_by_external(&self, issuer: &str, subject: &str) -> StoreResult<Option<User>> {
        users::get_user_by_external(self, issuer, subject).await
    }
    async fn list_users(&self, after: Option<&str>, limit: u32) -> StoreResult<Vec<User>> {
        users::list_users(self, after, limit).await
    }
    async fn count_users(&self) -> StoreResult<u64> {
        users::count_users(self).await
    }
    async fn count_admins(&self) -> StoreResult<u64> {
        users::count_admins(self).await
    }
    async fn set_user_role(&self, id: &str, role: UserRole) -> StoreResult<User> {
        users::set_user_role(self, id, role).await
    }

    // ------------------------------------------------------------ auth sessions
    async fn create_session(&self, new: NewAuthSession) -> StoreResult<AuthSession> {
        users::create_session(self, new).await
    }
    async fn get_session(&self, id: &str) -> StoreResult<Option<AuthSession>> {
        users::get_session(self, id).await
    }
    async fn get_live_session_by_refresh_hash(&self, refresh_token_hash: &str) -> StoreResult<Option<AuthSession>> {
        users::get_live_session_by_refresh_hash(self, refresh_token_hash).await
    }
    async fn touch_session(&self, id: &str) -> StoreResult<bool> {
        users::touch_session(self, id).await
    }
    async fn rotate_session_refresh(&self, id: &str, old_hash: &str, new_hash: &str) -> StoreResult<AuthSession> {
        users::rotate_session_refresh(self, id, old_hash, new_hash).await
    }
    async fn get_session_by_used_refresh_hash(&self, refresh_token_hash: &str) -> StoreResult<Option<AuthSession>> {
        users::get_session_by_used_refresh_hash(self, refresh_token_hash).await
    }
    async fn revoke_session(&self, id: &str, owner: Option<&str>) -> StoreResult<bool> {
        users::revoke_session(self, id, owner).await
    }
    async fn revoke_user_sessions(&self, user_id: &str) -> StoreResult<Vec<String>> {
        users::revoke_user_sessions(self, user_id).await
    }
    async fn list_sessions(&self, user_id: &str) -> StoreResult<Vec<AuthSession>> {
        users::list_sessions(self, user_id).await
    }
    async fn delete_expired_sessions(&self, idle_cutoff_ms: i64, limit: u32) -> StoreResult<SessionCleanup> {
        users::delete_expired_sessions(self, idle_cutoff_ms, limit).await
    }

    // ------------------------------------------------------------ api keys
    async fn create_api_key(&self, new: NewApiKey) -> StoreResult<ApiKey> {
        users::create_api_key(self, new).await
    }
    async fn get_live_api_key_by_hash(&self, key_hash: &str) -> StoreResult<Option<ApiKey>> {
        users::get_live_api_key_by_hash(self, key_hash).await
    }
    async fn list_api_keys(&self, user_id: &str) -> StoreResult<Vec<ApiKey>> {
        users::list_api_keys(self, user_id).await
    }
    async fn revoke_api_key(&self, user_id: &str, id: &str) -> StoreResult<bool> {
        users::revoke_api_key(self, user_id, id).await
    }
    async fn touch_api_key(&self, id: &str) -> StoreResult<()> {
        users::touch_api_key(self, id).await
    }

    // ------------------------------------------------------------ channels
    async fn create_channel(&self, new: NewChannel, max_per_owner: u32) -> StoreResult<Channel> {
        channels::create_channel(self, new, max_per_owner).await
    }
    async fn get_channel(&self, id: &str) -> StoreResult<Option<Channel>> {
        channels::get_channel(self, id).await
    }
    async fn list_channels_for_user(&self, user_id: &str) -> StoreResult<Vec<UserChannel>> {
        channels::list_channels_for_user(self, user_id).await
    }
    async fn update_channel(&self, id: &str, update: ChannelUpdate) -> StoreResult<Channel> {
        channels::update_channel(self, id, update).await
    }
    async fn set_channel_archived(&self, id: &str, archived: bool) -> StoreResult<Channel> {
        channels::set_channel_archived(self, id, archived).await
    }
    async fn delete_channel(&self, id: &str) -> StoreResult<Vec<ChannelMember>> {
        channels::delete_channel(self, id).await
    }

    // ------------------------------------------------------------ members
    async fn add_member(&self, channel_id: &str, member: &MemberRef, role: MemberRole) -> StoreResult<ChannelMember> {
        channels::add_member(self, channel_id, member, role).await
    }
    async fn remove_member(&self, channel_id: &str, member: &MemberRef) -> StoreResult<bool> {
        channels::remove_member(self, channel_id, member).await
    }
    async fn list_members(&self, channel_id: &str) -> StoreResult<Vec<ChannelMember>> {
        channels::list_members(self, channel_id).await
    }
    async fn list_member_profiles(&self, channel_id: &str) -> StoreResult<Vec<MemberProfile>> {
        channels::list_member_profiles(self, channel_id).await
    }
    async fn member_role(&self, channel_id: &str, member: &MemberRef) -> StoreResult<Option<MemberRole>> {
        channels::member_role(self, channel_id, member).await
    }
    async fn is_member(&self, channel_id: &str, user_id: &str) -> StoreResult<bool> {
        channels::is_member(self, channel_id, user_id).await
    }

    // ------------------------------------------------------------ messages
    async fn insert_message_with_runs(
        &self,
        new: NewMessage,
        idempotency_key: Option<&str>,
        event: &EventBuilder,
        triggers: &RunTriggers,
    ) -> StoreResult<InsertOutcome> {
        messages::insert_message(self, new, idempotency_key, event, triggers).await
    }
    async fn edit_message(
        &self,
        id: &str,
        editor: &MemberRef,
        text: &str,
        event: &EventBuilder,
    ) -> StoreResult<MessageWrite> {
        messages::edit_message(self, id, editor, text, event).await
    }
    async fn delete_message(&self, id: &str, actor: &MemberRef, event: &EventBuilder) -> StoreResult<MessageWrite> {
        messages::delete_message(self, id, actor, event).await
    }
    async fn get_message(&self, id: &str) -> StoreResult<Option<Message>> {
        messages::get_message(self, id).await
    }
    async fn list_messages(&self, channel_id: &str, page: MessagePage) -> StoreResult<Vec<Message>> {
        messages::list_messages(self, channel_id, page).await
    }

    // ------------------------------------------------------------ outbox
    async fn pending_outbox(&self, limit: u32) -> StoreResult<Vec<OutboxRecord>> {
        messages::pending_outbox(self, limit).await
    }
    async fn claim_outbox(&self, claim: OutboxClaim) -> StoreResult<Vec<OutboxRecord>> {
        messages::claim_outbox(self, claim).await
    }
    async fn release_outbox(&self, ids: &[i64]) -> StoreResult<u64> {
        messages::release_outbox(self, ids).await
    }
    async fn delete_outbox(&self, ids: &[i64]) -> StoreResult<u64> {
        messages::delete_outbox(self, ids).await
    }

    // ------------------------------------------------------------ agents
    async fn create_agent(&self, new: NewAgent, max_per_owner: u32) -> StoreResult<Agent> {
        agents::create_agent(self, new, max_per_owner).await
    }
    async fn get_agent(&self, id: &str) -> StoreResult<Option<Agent>> {
        agents::get_agent(self, id).await
    }
    async fn list_agents(&self, owner_id: &str) -> StoreResult<Vec<Agent>> {
        agents::list_agents(self, owner_id).await
    }
    async fn update_agent(&self, id: &str, update: AgentUpdate) -> StoreResult<Agent> {
        agents::update_agent(self, id, update).await
    }
    async fn delete_agent(&self, id: &str) -> StoreResult<Vec<String>> {
        agents::delete_agent(self, id).await
    }
    async fn list_agent_memberships(&self, agent_id: &str) -> StoreResult<Vec<ChannelMember>> {
        agents::list_agent_memberships(self, agent_id).await
    }

    async fn rotate_agent_secret(&self, id: &str, salt: &str, previous_until: i64) -> StoreResult<Agent> {
        agents::rotate_agent_secret(self, id, salt, previous_until).await
    }
    async fn list_channel_agents(&self, channel_id: &str) -> StoreResult<Vec<Agent>> {
        agents::list_channel_agents(self, channel_id).await
    }

    // ------------------------------------------------------------ runs
    async fn create_run(&self, new: NewRun) -> StoreResult<Run> {
        runs::create_run(self, new).await
    }
    async fn get_run(&self, id: &str) -> StoreResult<Option<Run>> {
        runs::get_run(self, id).await
    }
    async fn list_channel_runs(&self, channel_id: &str, filter: RunFilter, limit: u32) -> StoreResult<Vec<Run>> {
        runs::list_channel_runs(self, channel_id, filter, limit).await
    }
    async fn list_runs_with_status(
        &self,
        status: RunStatus,
        after: Option<(i64, String)>,
        limit: u32,
    ) -> StoreResult<Vec<Run>> {
        runs::list_runs_with_status(self, status, after, limit).await
    }
    async fn claim_run(&self, claim: RunClaimRequest<'_>) -> StoreResult<RunClaim> {
        runs::claim_run(self, claim).await
    }
    async fn start_run(&self, id: &str, node: &str, provider: &str, model: &str, reserve: i64) -> StoreResult<Option<Run>> {
        runs::start_run(self, id, node, provider, model, reserve).await
    }
    async fn reserve_run_seq(&self, id: &str, node: &str, block: i64) -> StoreResult<Option<i64>> {
        runs::reserve_run_seq(self, id, node, block).await
    }
    async fn record_run_usage(&self, id: &str, usage: RunUsage, cost_usd: f64) -> StoreResult<bool> {
        runs::record_run_usage(self, id, usage, cost_usd).await
    }
    async fn end_run(&self, end: RunEnd, events: &RunEventBuilder<'_>) -> StoreResult<RunEndOutcome> {
        runs::end_run(self, end, events).await
    }
    async fn user_run_cost_since(&self, user_id: &str, since_ms: i64) -> StoreResult<f64> {
        runs::user_run_cost_since(self, user_id, since_ms).await
    }
    async fn get_agent_summary(&self, agent_id: &str, channel_id: &str) -> StoreResult<Option<AgentSummary>> {
        runs::get_agent_summary(self, agent_id, channel_id).await
    }
    async fn put_agent_summary(&self, summary: &AgentSummary) -> StoreResult<()> {
        runs::put_agent_summary(self, summary).await
    }

    // ------------------------------------------------------------ cleanup
    async fn delete_idempotency_keys_before(&self, cutoff_ms: i64, limit: u32) -> StoreResult<u64> {
        messages::delete_idempotency_keys_before(self, cutoff_ms, limit).await
    }
    async fn delete_expired_messages(&self, limit: u32) -> StoreResult<u64> {
        messages::delete_expired_messages(self, limit).await
    }
}
