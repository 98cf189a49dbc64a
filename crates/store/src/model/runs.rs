//! Agent runs: the rows, what creating and ending one takes, and the
//! rolling summaries agents keep per channel.

use serde::{Deserialize, Serialize};

use super::{Message, OutboxEvent};
use crate::StoreError;

/// Event sequence numbers reserved for a run when it is created; the
/// producer reserves more in blocks as it goes (`Store::reserve_run_seq`).
pub const RUN_SEQ_BLOCK: i64 = 64;

string_enum!(
    /// Where a run is in its life. `queued` and `running` are active; the
    /// others are terminal and never change again.
    RunStatus {
        Queued = "queued",
        Running = "running",
        Completed = "completed",
        Failed = "failed",
        Cancelled = "cancelled",
    }
);

impl RunStatus {
    pub fn is_active(self) -> bool {
        matches!(self, RunStatus::Queued | RunStatus::Running)
    }
}

/// Tokens a run used so far (all its model calls together).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunUsage {
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// Counted with a tokenizer because a provider reported none.
    pub estimated: bool,
}

/// One agent run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: String,
    pub agent_id: String,
    pub channel_id: String,
    /// The message that triggered it; `None` for a run started explicitly without one.
    pub trigger_message_id: Option<String>,
    /// The person accountable for it (queue limits and budget).
    pub triggered_by: Option<String>,
    /// The run whose answer triggered this one.
    pub parent_run_id: Option<String>,
    /// 0 for a run triggered by a person; the parent's hop + 1 otherwise.
    pub hop: i64,
    pub status: RunStatus,
    /// Set when the run starts (the provider kind and the configured model name).
    pub provider: Option<String>,
    pub model: Option<String>,
    pub usage: RunUsage,
    /// US dollars.
    pub cost_usd: f64,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    /// The agent's answer, stored as a channel message when the run ended.
    pub answer_message_id: Option<String>,
    /// Highest event sequence number handed out so far.
    pub seq_reserved: i64,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    /// The node that claimed the run and alone produces its events; `None`
    /// until a node claims it.
    pub node_id: Option<String>,
}

/// A run to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRun {
    pub agent_id: String,
    pub channel_id: String,
    pub trigger_message_id: Option<String>,
    pub triggered_by: Option<String>,
    pub parent_run_id: Option<String>,
    pub hop: i64,
}

/// A run a message triggers: created in the message's transaction, with the
/// message as its trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunTrigger {
    pub agent_id: String,
    pub triggered_by: Option<String>,
    pub parent_run_id: Option<String>,
    pub hop: i64,
}

/// The runs a message triggers, and the channel's run-rate guard checked
/// against them in the same transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunTriggers {
    pub runs: Vec<RunTrigger>,
    /// At most this many runs created in the channel within a minute
    /// (counting these); triggers past it create no run and come back as
    /// `limited`. 0 means no limit.
    pub channel_runs_per_minute: u32,
}

impl RunTriggers {
    pub fn none() -> Self {
        RunTriggers::default()
    }
}

/// Which runs of a channel to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunFilter {
    /// `queued` and `running`, oldest first.
    Active,
    /// Every run, newest first, before the run created at `before` (keyset).
    All { before: Option<i64> },
}

/// The agent's answer, stored with the run's ending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAnswer {
    /// Chosen when the run started (text deltas name it).
    pub message_id: String,
    pub text: String,
    /// Runs the answer triggers (other agents it mentions).
    pub triggers: RunTriggers,
}

/// How a run ends: the compare-and-set of [`Store::end_run`](crate::Store::end_run).
#[derive(Debug, Clone, PartialEq)]
pub struct RunEnd {
    pub run_id: String,
    /// A terminal status.
    pub status: RunStatus,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    /// Replaces the recorded usage and cost when given.
    pub usage: Option<(RunUsage, f64)>,
    /// The terminal event's sequence number; `None` takes the reserved
    /// high-water mark + 1 (a producer that did not hand out the run's
    /// earlier numbers, e.g. after a crash).
    pub seq: Option<i64>,
    pub answer: Option<RunAnswer>,
    /// Who may end it: `Some(node)` ends it only while it is unowned or
    /// owned by `node` (a producer ending a run it may have lost to a claim
    /// elsewhere); `None` ends it whoever owns it (the sweep of a dead
    /// node's runs, a cancel of a run no live node produces).
    pub ender: Option<String>,
}

/// What the outbox events of an ending are built from, inside its transaction.
#[derive(Debug)]
pub struct EndedRun<'a> {
    pub run: &'a Run,
    /// The terminal event's sequence number.
    pub seq: i64,
    /// The answer as stored, when there was one (and the channel took it).
    pub message: Option<&'a Message>,
    /// Runs the answer triggered.
    pub runs: &'a [Run],
}

/// Builds the outbox rows of an ending (the answer's `message_created`, the
/// terminal event), committed with the status change.
pub type RunEventBuilder<'a> = dyn Fn(&EndedRun<'_>) -> Vec<OutboxEvent> + Send + Sync + 'a;

/// What [`Store::end_run`](crate::Store::end_run) did.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // One value per run ending, never held in bulk.
pub enum RunEndOutcome {
    /// This call ended the run; its events are in the outbox.
    Ended(RunEnded),
    /// The run had already ended (or does not exist: `None`); nothing was written.
    AlreadyEnded(Option<Run>),
    /// Still active but owned by another node than [`RunEnd::ender`]: that
    /// node produces it; nothing was written.
    OwnedElsewhere(Run),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunEnded {
    pub run: Run,
    pub seq: i64,
    pub message: Option<Message>,
    /// The outbox rows, in the order the builder returned their events.
    pub outbox_ids: Vec<i64>,
    /// Runs the answer triggered, committed `queued`.
    pub runs: Vec<Run>,
    /// Agents whose trigger the channel's run rate stopped.
    pub limited: Vec<String>,
}

/// A node's claim on a queued run ([`Store::claim_run`](crate::Store::claim_run)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunClaimRequest<'a> {
    pub run_id: &'a str,
    /// The node claiming it.
    pub node: &'a str,
    /// The owner the caller saw and judged dead (its queued run is taken
    /// over); `None` claims only an unowned run (or one this node owns).
    pub dead_owner: Option<&'a str>,
    /// Active runs (claimed by any node) the accountable person may have.
    pub runs_per_user: u32,
}

/// What [`Store::claim_run`](crate::Store::claim_run) did.
#[derive(Debug, Clone, PartialEq)]
pub enum RunClaim {
    /// The caller owns the queued run now (or owned it already).
    Claimed(Run),
    /// The accountable person has `runs_per_user` active runs already, on
    /// any node; nothing was written (the caller ends the run).
    UserFull(Run),
    /// Not queued any more, or owned by another node; nothing was written.
    Taken(Option<Run>),
    /// Another node (`owner`) has a claimed active run of the same agent in
    /// the same channel: the agent answers one run at a time per channel
    /// across nodes, so the run waits unowned for that node (which takes it
    /// when its run ends, or at its next rescan); nothing was written.
    Busy { run: Run, owner: String },
}

/// An agent's rolling summary of a channel's older messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct AgentSummary {
    pub agent_id: String,
    pub channel_id: String,
    pub summary: String,
    /// The `seq` of the newest message it covers.
    pub last_seq: i64,
    pub last_message_id: String,
    pub updated_at: i64,
}
