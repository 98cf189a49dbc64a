//! The JSON shape of a run, for REST (and what a reconnecting UI needs to
//! rebuild a live run card: status, the answer streamed so far, the last `seq`).

use chorus_protocol::RunErrorCode;
use chorus_protocol::timestamp::format_ms;
use chorus_store::Run;
use serde::Serialize;
use utoipa::ToSchema;

use crate::ledger::LiveRun;

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RunUsageView {
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// Counted with a tokenizer because a provider reported none.
    pub estimated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RunErrorView {
    /// The `agent_error` code (`cancelled`, `timeout`, `queue_full`, ...).
    pub code: String,
    pub message: String,
    /// Whether sending the message again later may succeed.
    pub retryable: bool,
}

/// An agent run.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RunView {
    pub id: String,
    pub agent_id: String,
    pub channel_id: String,
    /// The channel's stream (`room:<channel id>`), where the run's events go.
    pub thread_id: String,
    /// `queued`, `running`, `completed`, `failed` or `cancelled`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger_message_id: Option<String>,
    /// The person accountable for the run (queue limits, budget).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub triggered_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_run_id: Option<String>,
    /// 0 for a run a person triggered; the parent's hop + 1 otherwise.
    pub hop: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub usage: RunUsageView,
    /// US dollars.
    pub cost_usd: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<RunErrorView>,
    /// The agent's answer: once the run has ended, the stored message; while
    /// it runs, the id the message will have (text deltas name it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// While the run is going: the answer streamed so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// With `text`: the run's last event `seq` when `text` was read. `text`
    /// holds every `agent_text_delta` numbered up to it, so a client that
    /// rebuilds a live card from this view drops the deltas at or below it
    /// (they may still arrive on the stream) and appends the later ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
}

impl RunView {
    /// The stored run, with what it streamed so far when it is live here.
    pub fn new(run: &Run, live: Option<&LiveRun>) -> Self {
        let streamed = live.filter(|_| run.status.is_active()).map(|l| l.streamed());
        RunView {
            id: run.id.clone(),
            agent_id: run.agent_id.clone(),
            channel_id: run.channel_id.clone(),
            thread_id: format!("room:{}", run.channel_id),
            status: run.status.as_str().to_owned(),
            trigger_message_id: run.trigger_message_id.clone(),
            triggered_by: run.triggered_by.clone(),
            parent_run_id: run.parent_run_id.clone(),
            hop: run.hop,
            provider: run.provider.clone(),
            model: run.model.clone(),
            usage: RunUsageView {
                input_tokens: run.usage.input_tokens,
                output_tokens: run.usage.output_tokens,
                estimated: run.usage.estimated,
            },
            cost_usd: run.cost_usd,
            error: run.error_code.as_ref().map(|code| RunErrorView {
                code: code.clone(),
                message: run.error_message.clone().unwrap_or_default(),
                retryable: RunErrorCode::parse(code).is_some_and(RunErrorCode::retryable),
            }),
            message_id: run.answer_message_id.clone().or_else(|| streamed.as_ref().map(|s| s.message_id.clone())),
            seq: streamed.as_ref().map(|s| s.seq),
            text: streamed.map(|s| s.text),
            created_at: format_ms(run.created_at),
            started_at: run.started_at.map(format_ms),
            ended_at: run.ended_at.map(format_ms),
        }
    }
}
