//! Runs for callers: read, list, start and cancel, with who may do what.
//! REST and the WebSocket `cancel_run` command both come here.
//!
//! - Reading and listing: the channel's members (and administrators);
//!   anyone else gets `not_found`.
//! - Starting (`POST /api/v1/agents/{id}/runs`): a member of the channel, for
//!   an agent that is a member of it; the caller is accountable. Refused in
//!   maintenance mode.
//! - Cancelling: the person the run is accountable to, the agent's owner,
//!   the channel's owners and administrators. Idempotent.

use chorus_chat::{Caller, ChatError};
use chorus_core::{CommandError, Identity, RunCommands};
use chorus_protocol::reply::RunCancelResult;
use chorus_store::{MemberRef, MemberRole, NewRun, Run, RunFilter, UserRole};

use crate::events::Ending;
use crate::ledger::{EndOutcome, Origin, Stop};
use crate::runtime::Runtime;
use crate::views::RunView;

/// Most runs one list returns.
pub const RUNS_PAGE_MAX: u32 = 200;

/// Which runs of a channel to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunListFilter {
    Active,
    All,
}

impl Runtime {
    /// A run, for a member of its channel or an administrator.
    pub async fn get_run(&self, caller: &Caller, run_id: &str) -> Result<RunView, ChatError> {
        let run = self.visible(caller, run_id).await?;
        Ok(RunView::new(&run, self.ledger().get(run_id).as_deref()))
    }

    /// A channel's runs: the active ones oldest first, or all newest first.
    pub async fn list_runs(
        &self,
        caller: &Caller,
        channel_id: &str,
        filter: RunListFilter,
        limit: u32,
    ) -> Result<Vec<RunView>, ChatError> {
        if !(1..=RUNS_PAGE_MAX).contains(&limit) {
            return Err(ChatError::invalid("limit", format!("must be from 1 to {RUNS_PAGE_MAX}")));
        }
        self.require_member(caller, channel_id).await?;
        let filter = match filter {
            RunListFilter::Active => RunFilter::Active,
            RunListFilter::All => RunFilter::All { before: None },
        };
        let runs = self.0.store.list_channel_runs(channel_id, filter, limit).await?;
        Ok(runs.iter().map(|r| RunView::new(r, self.ledger().get(&r.id).as_deref())).collect())
    }

    /// Starts a run of `agent_id` in `channel_id` explicitly (e.g. for a
    /// `manual` agent), accountable to the caller.
    pub async fn start_run(&self, caller: &Caller, agent_id: &str, channel_id: &str) -> Result<RunView, ChatError> {
        self.0.chat.deps().check_maintenance("starting agent runs")?;
        if self.is_closing() {
            return Err(ChatError::Unavailable("the server is shutting down; try again shortly".into()));
        }
        if !self.0.config.enabled {
            return Err(ChatError::Unavailable("this server runs no agents".into()));
        }
        self.require_member(caller, channel_id).await?;
        let agent = self.0.store.get_agent(agent_id).await?.ok_or_else(|| ChatError::NotFound("agent not found".into()))?;
        if self.0.store.member_role(channel_id, &MemberRef::agent(&agent.id)).await?.is_none() {
            return Err(ChatError::Conflict(format!("{} is not a member of this channel; add it first", agent.name)));
        }
        let run = self
            .0
            .store
            .create_run(NewRun {
                agent_id: agent.id.clone(),
                channel_id: channel_id.to_owned(),
                trigger_message_id: None,
                triggered_by: Some(caller.user_id.clone()),
                parent_run_id: None,
                hop: 0,
            })
            .await?;
        let run_id = run.id.clone();
        self.admit(run, Origin::Fresh).await;
        let run = self.0.store.get_run(&run_id).await?.ok_or_else(|| ChatError::NotFound("run not found".into()))?;
        Ok(RunView::new(&run, self.ledger().get(&run_id).as_deref()))
    }

    /// Cancels a run (idempotent); answers with the run as it is after.
    pub async fn cancel_run(&self, caller: &Caller, run_id: &str) -> Result<RunView, ChatError> {
        let run = self.visible(caller, run_id).await?;
        if run.status.is_active() {
            let allowed = caller.is_admin()
                || run.triggered_by.as_deref() == Some(caller.user_id.as_str())
                || self.0.store.get_agent(&run.agent_id).await?.is_some_and(|a| a.owner_id == caller.user_id)
                || self.0.store.member_role(&run.channel_id, &MemberRef::user(&caller.user_id)).await? == Some(MemberRole::Owner);
            if !allowed {
                return Err(ChatError::Forbidden(
                    "only who started the run, the agent's owner, the channel's owners and administrators may cancel it".into(),
                ));
            }
            self.cancel_anywhere(&run).await?;
        }
        let run = self.0.store.get_run(run_id).await?.ok_or_else(|| ChatError::NotFound("run not found".into()))?;
        Ok(RunView::new(&run, self.ledger().get(run_id).as_deref()))
    }

    /// Cancels an active run where it is: here when this node owns it (or
    /// nobody does yet: the ending's compare-and-set settles a race with a
    /// claim), on its owner through a control message otherwise (the owner
    /// ends it, with nothing published after the ending; the answer may
    /// still show it running). An owner that is not alive any more cannot
    /// publish: the run is ended here.
    async fn cancel_anywhere(&self, run: &Run) -> Result<(), ChatError> {
        let owner = match run.node_id.as_deref() {
            Some(owner) if owner != self.node() => owner.to_owned(),
            Some(_) => return Ok(self.cancel(&run.id, Stop::Cancelled).await?),
            None if self.ledger().get(&run.id).is_some() => return Ok(self.cancel(&run.id, Stop::Cancelled).await?),
            // Nobody owns it yet: ended here unless a node claims it first,
            // in which case that node (the one producer) is asked.
            None => {
                let stop = Stop::Cancelled;
                match self.ledger().end_unowned(&run.id, Ending::failed(stop.code(), stop.message())).await? {
                    EndOutcome::OwnedElsewhere(claimed) => match claimed.node_id {
                        Some(owner) if owner != self.node() => owner,
                        _ => return Ok(self.cancel(&run.id, stop).await?),
                    },
                    _ => return Ok(()),
                }
            }
        };
        let owner = chorus_core::NodeId::new(owner);
        match self.0.hub.live_nodes().await {
            Ok(live) if !live.contains(&owner) => {
                tracing::info!(run_id = %run.id, %owner, "cancelling a run whose node is not alive: ending it here");
                return Ok(self.cancel(&run.id, Stop::Cancelled).await?);
            }
            _ => {}
        }
        self.0.hub.cancel_run_on(&owner, &run.id).await.map_err(|e| {
            ChatError::Unavailable(format!("the node running this run could not be reached ({e}); try again"))
        })
    }

    async fn visible(&self, caller: &Caller, run_id: &str) -> Result<Run, ChatError> {
        let not_found = || ChatError::NotFound("run not found".into());
        let run = self.0.store.get_run(run_id).await?.ok_or_else(not_found)?;
        if caller.is_admin() || self.0.store.is_member(&run.channel_id, &caller.user_id).await? {
            Ok(run)
        } else {
            Err(not_found())
        }
    }

    /// `not_found` unless the caller is a member (or an administrator).
    async fn require_member(&self, caller: &Caller, channel_id: &str) -> Result<(), ChatError> {
        if caller.is_admin() && self.0.store.get_channel(channel_id).await?.is_some() {
            return Ok(());
        }
        match self.0.store.member_role(channel_id, &MemberRef::user(&caller.user_id)).await? {
            Some(_) => Ok(()),
            None => Err(ChatError::NotFound("channel not found".into())),
        }
    }
}

#[async_trait::async_trait]
impl RunCommands for Runtime {
    async fn cancel_run(&self, who: &Identity, run_id: &str) -> Result<RunCancelResult, CommandError> {
        let user = self.0.store.get_user(who.user_id.as_str()).await.map_err(ChatError::from)?;
        let role = user.map_or(UserRole::User, |u| u.role);
        let caller = Caller { user_id: who.user_id.to_string(), role, session_id: who.session_id.clone() };
        let run = Runtime::cancel_run(self, &caller, run_id).await?;
        Ok(RunCancelResult { run_id: run.id, status: run.status })
    }
}
