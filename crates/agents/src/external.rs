//! External agents' runs: the run goes to the agent's webhook (signed, with
//! the agent's circuit breaker), then its service pushes the run's events
//! back ([`Runtime::push_events`]). Those pass the same run state machine
//! as hosted runs (the [`RunLedger`](crate::RunLedger)), so browsers see
//! the same events either way.
//!
//! Inbound rules, per run: the service's `seq` starts at 1 and grows by
//! one; a `seq` already taken is ignored (a retried push), a gap is
//! refused. `agent_started` comes first, then any events, then one
//! terminal event (`agent_completed` or `agent_error`); nothing after it.
//! A run whose service never starts it, or goes silent, ends with
//! `timeout` after `silence_timeout`.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use chorus_chat::triggers::Speaker;
use chorus_external::{DeliveryError, WebhookClient, WebhookUrl};
use chorus_protocol::RunErrorCode;
use chorus_protocol::timestamp::format_ms;
use chorus_store::{Agent, MemberRef, Run};
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;

use crate::events::{Ending, RunEvent, UsageView};
use crate::ledger::{AnswerPlan, EndOutcome, LedgerError, LiveRun, Stop};
use crate::runtime::{Runtime, Shared};

/// The `provider` external runs show in `agent_started`.
pub const EXTERNAL_PROVIDER: &str = "external";

/// One event an external agent's service pushes.
#[derive(Debug, Clone, PartialEq)]
pub struct PushedEvent {
    /// The service's own sequence number for the run: 1, 2, 3…
    pub seq: i64,
    pub kind: PushedKind,
}

/// What a pushed event says.
#[derive(Debug, Clone, PartialEq)]
pub enum PushedKind {
    Started { model: Option<String> },
    Thinking { thought: String },
    TextDelta { delta: String },
    ToolExecuting { call_id: String, tool: String, arguments: Value },
    ToolCompleted { call_id: String, tool: String, result: Value, is_error: bool, duration_ms: u64 },
    /// `text` absent: the streamed deltas are the answer.
    Completed { text: Option<String>, finish_reason: Option<String>, usage: Option<UsageView>, model: Option<String> },
    Failed { code: RunErrorCode, message: String },
}

impl PushedKind {
    fn name(&self) -> &'static str {
        match self {
            PushedKind::Started { .. } => "agent_started",
            PushedKind::Thinking { .. } => "agent_thinking",
            PushedKind::TextDelta { .. } => "agent_text_delta",
            PushedKind::ToolExecuting { .. } => "tool_executing",
            PushedKind::ToolCompleted { .. } => "tool_completed",
            PushedKind::Completed { .. } => "agent_completed",
            PushedKind::Failed { .. } => "agent_error",
        }
    }

    fn is_terminal(&self) -> bool {
        matches!(self, PushedKind::Completed { .. } | PushedKind::Failed { .. })
    }
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PushReport {
    pub accepted: usize,
    /// Repeats of a `seq` already taken.
    pub ignored: usize,
    /// The highest `seq` taken so far.
    pub last_seq: i64,
    pub ended: bool,
}

/// Why a push was refused. Events before the refused one were taken
/// (`accepted`); none after it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error("no such run")]
    NotFound,
    #[error("this API key is not scoped to the run's agent")]
    Forbidden,
    #[error("the run is not an external agent's run being delivered by this server")]
    NotExternal,
    #[error("events[{index}]: seq {got} leaves a gap: the next seq is {expected} ({accepted} event(s) of this push taken)")]
    Gap { index: usize, expected: i64, got: i64, accepted: usize },
    #[error("events[{index}]: {message} ({accepted} event(s) of this push taken)")]
    State { index: usize, message: String, accepted: usize },
    #[error("the run has ended ({accepted} event(s) of this push taken)")]
    Ended { accepted: usize },
    #[error("the run's events could not be stored; push them again")]
    Unavailable,
    /// The run is owned by another node of the deployment (only the owner
    /// takes its events).
    #[error("another node of this deployment runs this run; push again (another node may answer)")]
    Elsewhere,
}

/// Inbound state of one external run.
#[derive(Debug, Default)]
pub(crate) struct Inbound {
    last_seq: i64,
    started: bool,
    ended: bool,
}

/// External runs being delivered on this node; bounded by the runs the
/// scheduler lets run (an entry lives as long as its run task).
#[derive(Default)]
pub(crate) struct InboundRuns(Mutex<HashMap<String, Arc<tokio::sync::Mutex<Inbound>>>>);

impl InboundRuns {
    fn open(&self, run_id: &str) {
        self.0.lock().insert(run_id.to_owned(), Arc::new(tokio::sync::Mutex::new(Inbound::default())));
    }

    fn close(&self, run_id: &str) {
        self.0.lock().remove(run_id);
    }

    fn get(&self, run_id: &str) -> Option<Arc<tokio::sync::Mutex<Inbound>>> {
        self.0.lock().get(run_id).cloned()
    }
}

/// What the webhook receives (see PROTOCOL.md, "Webhook deliveries").
#[derive(Serialize)]
struct DeliveryBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    run: RunBody<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<MessageBody<'a>>,
    /// Where the service pushes the run's events.
    events_url: String,
}

#[derive(Serialize)]
struct RunBody<'a> {
    id: &'a str,
    agent_id: &'a str,
    channel_id: &'a str,
    thread_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    trigger_message_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    triggered_by: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_run_id: Option<&'a str>,
    hop: i64,
    created_at: String,
}

#[derive(Serialize)]
struct MessageBody<'a> {
    id: &'a str,
    channel_id: &'a str,
    author: &'a MemberRef,
    text: &'a str,
    created_at: String,
}

/// Runs `live` of external `agent`: delivers it, then waits for its ending
/// (pushed by the service, a stop, or the silence deadline).
pub(crate) async fn run(shared: Arc<Shared>, live: Arc<LiveRun>, agent: Agent) {
    let run = live.run().clone();
    shared.inbound.open(&run.id);
    let ending = deliver_and_wait(&shared, &live, &agent, &run).await;
    shared.inbound.close(&run.id);
    if let Some(ending) = ending
        && let Err(e) = shared.ledger.end(&run.id, ending, AnswerPlan::default()).await
    {
        tracing::error!(error = %e, "external run's ending not stored; the watchdog retries");
    }
}

async fn deliver_and_wait(shared: &Shared, live: &LiveRun, agent: &Agent, run: &Run) -> Option<Ending> {
    let Some(client) = &shared.webhooks else {
        return Some(Ending::failed(RunErrorCode::AgentUnavailable, "external agents are not enabled on this server"));
    };
    let Some(webhook) = &agent.webhook else {
        return Some(Ending::failed(RunErrorCode::AgentUnavailable, "the agent has no webhook"));
    };
    let url = match WebhookUrl::parse(&webhook.url, client.policy()) {
        Ok(url) => url,
        Err(e) => return Some(Ending::failed(RunErrorCode::AgentUnavailable, format!("the agent's webhook URL {e}"))),
    };
    let body = match delivery_body(shared, run, live.thread_id()).await {
        Ok(body) => body,
        Err(message) => return Some(Ending::failed(RunErrorCode::Internal, message)),
    };
    let secrets = shared.chat.agents.webhooks().signing_secrets(agent, shared.hub.clock().now_ms());
    let delivery = chorus_external::Delivery { agent_id: &agent.id, url: &url, secrets: &secrets, id: &run.id, body };
    let delivered = tokio::select! {
        _ = live.stop_token().cancelled() => return Some(stopped(live)),
        _ = live.ended() => return None,
        d = client.deliver(delivery) => d,
    };
    match delivered {
        Ok(d) => tracing::info!(attempts = d.attempts, status = d.status, "external run delivered"),
        Err(DeliveryError::BreakerOpen(open)) => {
            return Some(Ending::failed(
                RunErrorCode::AgentUnavailable,
                format!("the agent's webhook is failing; deliveries resume in {} s", open.retry_after.as_secs().max(1)),
            ));
        }
        Err(e @ DeliveryError::Failed { .. }) => {
            return Some(Ending::failed(RunErrorCode::AgentUnavailable, format!("the agent's webhook {e}")));
        }
    }
    // The watchdog watches started runs; until the service starts it, this does.
    let timeout = shared.config.silence_timeout;
    tokio::select! {
        _ = live.ended() => None,
        _ = live.stop_token().cancelled() => Some(stopped(live)),
        _ = tokio::time::sleep(timeout) , if !live.is_started() => {
            if live.is_started() {
                // Started just now: the watchdog takes over.
                tokio::select! {
                    _ = live.ended() => None,
                    _ = live.stop_token().cancelled() => Some(stopped(live)),
                }
            } else {
                Some(Ending::failed(RunErrorCode::Timeout, "the agent's service did not start the run in time"))
            }
        }
    }
}

fn stopped(live: &LiveRun) -> Ending {
    let reason = live.stop_reason().unwrap_or(Stop::Cancelled);
    Ending::failed(reason.code(), reason.message())
}

async fn delivery_body(shared: &Shared, run: &Run, thread_id: &str) -> Result<Bytes, String> {
    let message = match &run.trigger_message_id {
        Some(id) => shared.store.get_message(id).await.map_err(|e| format!("the triggering message could not be read: {e}"))?,
        None => None,
    };
    let body = DeliveryBody {
        kind: "agent_run",
        run: RunBody {
            id: &run.id,
            agent_id: &run.agent_id,
            channel_id: &run.channel_id,
            thread_id,
            trigger_message_id: run.trigger_message_id.as_deref(),
            triggered_by: run.triggered_by.as_deref(),
            parent_run_id: run.parent_run_id.as_deref(),
            hop: run.hop,
            created_at: format_ms(run.created_at),
        },
        message: message.as_ref().map(|m| MessageBody {
            id: &m.id,
            channel_id: &m.channel_id,
            author: &m.author,
            text: &m.text,
            created_at: format_ms(m.created_at),
        }),
        events_url: format!("/api/v1/runs/{}/events", run.id),
    };
    serde_json::to_vec(&body).map(Bytes::from).map_err(|e| format!("the delivery could not be encoded: {e}"))
}

impl Runtime {
    /// Takes events an external agent's service pushed for `run_id`, in
    /// order. `key_agent` is the agent the caller's API key is scoped to.
    pub async fn push_events(&self, run_id: &str, key_agent: &str, events: Vec<PushedEvent>) -> Result<PushReport, PushError> {
        let shared = &self.0;
        let live = shared.ledger.get(run_id);
        let inbound = shared.inbound.get(run_id);
        let (Some(live), Some(inbound)) = (live, inbound) else {
            return match shared.store.get_run(run_id).await {
                Ok(Some(run)) if run.agent_id != key_agent => Err(PushError::Forbidden),
                Ok(Some(run)) if !run.status.is_active() => Err(PushError::Ended { accepted: 0 }),
                Ok(Some(run)) if run.node_id.as_deref().is_some_and(|owner| owner != self.node()) => Err(PushError::Elsewhere),
                Ok(Some(_)) => Err(PushError::NotExternal),
                Ok(None) => Err(PushError::NotFound),
                Err(_) => Err(PushError::Unavailable),
            };
        };
        if live.run().agent_id != key_agent {
            return Err(PushError::Forbidden);
        }
        let mut state = inbound.lock().await;
        let mut report = PushReport { last_seq: state.last_seq, ended: state.ended, ..PushReport::default() };
        for (index, event) in events.into_iter().enumerate() {
            if event.seq <= state.last_seq {
                report.ignored += 1;
                continue;
            }
            let accepted = report.accepted;
            if state.ended || live.is_ended() {
                return Err(PushError::Ended { accepted });
            }
            if event.seq != state.last_seq + 1 {
                return Err(PushError::Gap { index, expected: state.last_seq + 1, got: event.seq, accepted });
            }
            let refuse = |message: String| PushError::State { index, message, accepted };
            match (&event.kind, state.started) {
                (PushedKind::Started { .. }, true) => return Err(refuse("agent_started was already sent".into())),
                (PushedKind::Started { .. }, false) => {}
                (kind, false) => return Err(refuse(format!("{} before agent_started: agent_started comes first", kind.name()))),
                _ => {}
            }
            self.apply(&live, &event.kind).await.map_err(|e| match e {
                Applied::Ended => PushError::Ended { accepted },
                Applied::Unavailable => PushError::Unavailable,
            })?;
            state.last_seq = event.seq;
            state.started = true;
            state.ended |= event.kind.is_terminal();
            report.accepted += 1;
            report.last_seq = state.last_seq;
            report.ended = state.ended;
        }
        Ok(report)
    }

    async fn apply(&self, live: &LiveRun, kind: &PushedKind) -> Result<(), Applied> {
        let shared = &self.0;
        let emit = |event: RunEvent| async move {
            if shared.ledger.emit(live, event).await { Ok(()) } else { Err(Applied::Ended) }
        };
        match kind.clone() {
            PushedKind::Started { model } => {
                let model = model.unwrap_or_else(|| EXTERNAL_PROVIDER.to_owned());
                match shared.ledger.start(live, EXTERNAL_PROVIDER, &model).await {
                    Ok(_) => Ok(()),
                    Err(LedgerError::NotQueued) => Err(Applied::Ended),
                    Err(LedgerError::Store(e)) => {
                        tracing::warn!(error = %e, "external run not started");
                        Err(Applied::Unavailable)
                    }
                }
            }
            PushedKind::Thinking { thought } => emit(RunEvent::Thinking { thought }).await,
            PushedKind::TextDelta { delta } => emit(RunEvent::TextDelta { message_id: live.message_id(), delta }).await,
            PushedKind::ToolExecuting { call_id, tool, arguments } => emit(RunEvent::ToolExecuting { call_id, tool, arguments }).await,
            PushedKind::ToolCompleted { call_id, tool, result, is_error, duration_ms } => {
                emit(RunEvent::ToolCompleted { call_id, tool, result, is_error, duration_ms }).await
            }
            PushedKind::Completed { text, finish_reason, usage, model } => {
                let text = text.unwrap_or_else(|| live.streamed().text);
                let decision = match shared.chat.triggers.decide(&live.run().channel_id, Speaker::Agent { run: live.run() }, &text).await {
                    Ok(d) => Some(d),
                    Err(e) => {
                        tracing::warn!(error = %e, "answer's mentions not read; it triggers no other agent");
                        None
                    }
                };
                let ending = Ending::Completed {
                    text,
                    finish_reason: finish_reason.unwrap_or_else(|| "stop".to_owned()),
                    usage: usage.unwrap_or(UsageView { input_tokens: 0, output_tokens: 0, estimated: false }),
                    cost_usd: 0.0,
                    model: model.or_else(|| live.run().model.clone()).unwrap_or_else(|| EXTERNAL_PROVIDER.to_owned()),
                };
                let plan = AnswerPlan { triggers: decision.as_ref().map(|d| d.triggers.clone()).unwrap_or_default() };
                self.finish(live, ending, plan, decision).await
            }
            PushedKind::Failed { code, message } => {
                self.finish(live, Ending::failed(code, message), AnswerPlan::default(), None).await
            }
        }
    }

    async fn finish(
        &self,
        live: &LiveRun,
        ending: Ending,
        plan: AnswerPlan,
        decision: Option<chorus_chat::triggers::Decision>,
    ) -> Result<(), Applied> {
        let shared = &self.0;
        match shared.ledger.end(live.id(), ending, plan).await {
            Ok(EndOutcome::Ended(ended)) => {
                if let (Some(decision), Some(message)) = (decision, &ended.message) {
                    shared.chat.triggers.committed(&ended.run.channel_id, &message.id, &decision, &ended.runs, &ended.limited).await;
                }
                Ok(())
            }
            Ok(EndOutcome::AlreadyEnded(_) | EndOutcome::OwnedElsewhere(_)) => Err(Applied::Ended),
            Err(e) => {
                tracing::warn!(error = %e, "external run's ending not stored");
                Err(Applied::Unavailable)
            }
        }
    }

    /// The webhook client, when external agents are enabled.
    pub fn webhooks(&self) -> Option<&WebhookClient> {
        self.0.webhooks.as_ref()
    }
}

enum Applied {
    Ended,
    Unavailable,
}
