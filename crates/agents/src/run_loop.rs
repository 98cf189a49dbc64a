//! The hosted run loop: one run of one agent, from `agent_started` to its
//! ending. Builds the prompt (memory), calls the model through the
//! resilience layer, streams reasoning and text (coalesced), runs the tool
//! calls the model asks for (several at once, bounded) and feeds their
//! results back, at most `tool_rounds` times; counts usage and cost and
//! checks the person's daily budget before the start and after every model
//! call. Every way out is an [`Ending`] handed to the ledger, which owns it.

use std::collections::HashMap;
use std::sync::Arc;

use chorus_chat::triggers::Speaker;
use chorus_llm::{FinishReason, Message as Turn, Model, ProviderError, StreamEvent, ToolCall, ToolDefinition, ToolResult, Usage};
use chorus_protocol::RunErrorCode;
use chorus_store::Run;
use chorus_tools::Toolset;
use futures_util::StreamExt;
use tokio::time::Instant;

use crate::coalesce::Coalescer;
use crate::events::{Ending, RunEvent, UsageView};
use crate::ledger::{AnswerPlan, EndOutcome, LedgerError, LiveRun};
use crate::memory::{self, MemoryError, MemoryParts};
use crate::runtime::Shared;

const DAY_MS: i64 = 86_400_000;

/// Runs `live` to its ending.
pub(crate) async fn run(shared: Arc<Shared>, live: Arc<LiveRun>) {
    let mut state = RunState::new(&shared, &live);
    let outcome = state.execute().await;
    let Some((ending, decision)) = outcome else { return };
    let plan = AnswerPlan { triggers: decision.as_ref().map(|d| d.triggers.clone()).unwrap_or_default() };
    match shared.ledger.end(live.id(), ending, plan).await {
        Ok(EndOutcome::Ended(ended)) => {
            if let (Some(decision), Some(message)) = (decision, &ended.message) {
                shared.chat.triggers.committed(&ended.run.channel_id, &message.id, &decision, &ended.runs, &ended.limited).await;
            }
        }
        Ok(EndOutcome::AlreadyEnded(_) | EndOutcome::OwnedElsewhere(_)) => {}
        Err(e) => tracing::error!(error = %e, "run ending not stored; the watchdog retries"),
    }
}

/// What one run has done so far.
struct RunState<'a> {
    shared: &'a Arc<Shared>,
    live: &'a Arc<LiveRun>,
    /// The whole answer, over every model turn.
    text: String,
    usage: Usage,
    cost_usd: f64,
    text_out: Coalescer,
    thinking_out: Coalescer,
    message_id: String,
}

/// One model turn's result.
struct TurnResult {
    /// Where this turn's text starts in the run's answer (kept once, there).
    text_from: usize,
    calls: Vec<ToolCall>,
    finish: FinishReason,
    served_by: String,
}

type Outcome = Option<(Ending, Option<chorus_chat::triggers::Decision>)>;

impl<'a> RunState<'a> {
    fn new(shared: &'a Arc<Shared>, live: &'a Arc<LiveRun>) -> Self {
        let interval = shared.config.delta_interval;
        RunState {
            shared,
            live,
            text: String::new(),
            usage: Usage::default(),
            cost_usd: 0.0,
            text_out: Coalescer::new(interval),
            thinking_out: Coalescer::new(interval),
            message_id: live.message_id(),
        }
    }

    fn fail(&self, code: RunErrorCode, message: impl Into<String>) -> Outcome {
        Some((
            Ending::Failed { code, message: message.into(), usage: Some(self.usage_view()), cost_usd: Some(self.cost_usd) },
            None,
        ))
    }

    fn usage_view(&self) -> UsageView {
        UsageView {
            input_tokens: i64::try_from(self.usage.input_tokens).unwrap_or(i64::MAX),
            output_tokens: i64::try_from(self.usage.output_tokens).unwrap_or(i64::MAX),
            estimated: self.usage.estimated,
        }
    }

    /// The ending a stop request asks for.
    fn stopped(&self) -> Outcome {
        let reason = self.live.stop_reason().unwrap_or(crate::ledger::Stop::Cancelled);
        self.fail(reason.code(), reason.message())
    }

    async fn execute(&mut self) -> Outcome {
        let shared = self.shared;
        let run = self.live.run().clone();
        let agent = match shared.store.get_agent(&run.agent_id).await {
            Ok(Some(agent)) => agent,
            Ok(None) => return self.fail(RunErrorCode::AgentUnavailable, "the agent no longer exists"),
            Err(e) => return self.fail(RunErrorCode::Internal, format!("the agent could not be read: {e}")),
        };
        let Some(model) = shared.models.get(&agent.model).cloned() else {
            return self.fail(RunErrorCode::ModelUnavailable, format!("the model {:?} is not configured on this server", agent.model));
        };
        if let Some(outcome) = self.over_budget(&run).await {
            return Some(outcome);
        }
        let started = match shared.ledger.start(self.live, model.provider_kind().as_str(), model.name()).await {
            Ok(run) => run,
            Err(LedgerError::NotQueued) => return None,
            Err(LedgerError::Store(e)) => return self.fail(RunErrorCode::Internal, format!("the run could not start: {e}")),
        };
        tracing::info!(model = model.name(), "run started");
        let toolset = shared.tools.toolset(&agent.tools);
        let mut definitions: Vec<ToolDefinition> = toolset
            .specs()
            .iter()
            .map(|s| ToolDefinition {
                name: s.model_name.clone(),
                description: s.description.clone(),
                input_schema: (*s.parameters).clone(),
            })
            .collect();
        // The client's own tools, offered beside the agent's (names checked apart when the run was asked for).
        let live: &'a Arc<LiveRun> = self.live;
        let frontend = &live.client().frontend_tools;
        definitions.extend(frontend.iter().cloned());
        let through_seq = match &run.trigger_message_id {
            Some(id) => match shared.store.get_message(id).await {
                Ok(message) => message.map(|m| m.seq),
                Err(e) => return self.fail(RunErrorCode::Internal, format!("the triggering message could not be read: {e}")),
            },
            None => None,
        };
        let prompt = memory::build(MemoryParts {
            store: &shared.store,
            tokens: &shared.tokens,
            agent: &agent,
            channel_id: &run.channel_id,
            model: &model,
            tools: &definitions,
            history_max_messages: shared.config.history_max_messages,
            summary_max_tokens: shared.config.summary_max_tokens,
            through_seq,
            cancel: self.live.stop_token(),
        })
        .await;
        let prompt = match prompt {
            Ok(prompt) => prompt,
            Err(MemoryError::Cancelled) => return self.stopped(),
            Err(MemoryError::Summary(e)) => return self.provider_failed(&e),
            Err(MemoryError::TooLarge) => {
                return self.fail(RunErrorCode::ContextLength, "the persona and tools do not fit the model's context window");
            }
            Err(MemoryError::Store(e)) => return self.fail(RunErrorCode::Internal, format!("history could not be read: {e}")),
        };
        tracing::debug!(tokens = prompt.tokens, budget = prompt.budget, messages = prompt.messages.len(), "prompt built");
        for (served_by, usage) in &prompt.calls {
            self.account(served_by, *usage).await;
        }
        if !prompt.calls.is_empty()
            && let Some(outcome) = self.over_budget(&run).await
        {
            return Some(outcome);
        }
        let mut conversation = prompt.messages;
        conversation.extend(live.client().continuation.iter().cloned());
        let mut seen: HashMap<(String, String), u32> = HashMap::new();
        let mut rounds = 0u32;
        loop {
            let mut request = model.request();
            request.system = Some(prompt.system.clone());
            request.messages = conversation.clone();
            request.tools = definitions.clone();
            let turn = match self.turn(&model, request).await {
                Ok(turn) => turn,
                Err(outcome) => return outcome,
            };
            if turn.calls.is_empty() {
                self.flush().await;
                let finish = turn.finish.as_str().to_owned();
                let decision = match shared.chat.triggers.decide(&run.channel_id, Speaker::Agent { run: &started }, &self.text).await {
                    Ok(decision) => Some(decision),
                    Err(e) => {
                        tracing::warn!(error = %e, "answer's mentions not read; it triggers no other agent");
                        None
                    }
                };
                let ending = Ending::Completed {
                    text: self.text.clone(),
                    finish_reason: finish,
                    usage: self.usage_view(),
                    cost_usd: self.cost_usd,
                    model: turn.served_by,
                };
                return Some((ending, decision));
            }
            // Another model call will follow: is there budget for it?
            if let Some(outcome) = self.over_budget(&run).await {
                return Some(outcome);
            }
            for call in &turn.calls {
                let key = (call.name.clone(), call.arguments.to_string());
                let count = seen.entry(key).or_default();
                *count += 1;
                if *count >= 3 {
                    return self.fail(
                        RunErrorCode::ToolLoop,
                        format!("the model asked for the same `{}` call a third time", tool_name(&toolset, &call.name)),
                    );
                }
            }
            rounds += 1;
            if rounds > shared.config.tool_rounds {
                return self.fail(
                    RunErrorCode::ToolRounds,
                    format!("the model kept calling tools past {} rounds", shared.config.tool_rounds),
                );
            }
            self.flush().await;
            let (client_calls, own_calls): (Vec<ToolCall>, Vec<ToolCall>) =
                turn.calls.iter().cloned().partition(|c| frontend.iter().any(|t| t.name == c.name));
            let results = self.call_tools(&toolset, &own_calls).await;
            if self.live.stop_token().is_cancelled() {
                return self.stopped();
            }
            if !client_calls.is_empty() {
                // The client executes these: the run ends with them announced
                // and unanswered; the client's results start the next run.
                for call in &client_calls {
                    let event =
                        RunEvent::ToolExecuting { call_id: call.id.clone(), tool: call.name.clone(), arguments: call.arguments.clone() };
                    shared.ledger.emit(self.live, event).await;
                }
                let ending = Ending::Completed {
                    text: self.text.clone(),
                    finish_reason: FinishReason::ToolCalls.as_str().to_owned(),
                    usage: self.usage_view(),
                    cost_usd: self.cost_usd,
                    model: turn.served_by,
                };
                return Some((ending, None));
            }
            let text = self.text.get(turn.text_from..).unwrap_or_default().to_owned();
            conversation.push(Turn::Assistant { text, tool_calls: turn.calls });
            conversation.extend(results.into_iter().map(Turn::ToolResult));
        }
    }

    /// One model call, streamed: reasoning and text go out coalesced.
    async fn turn(&mut self, model: &Model, request: chorus_llm::ChatRequest) -> Result<TurnResult, Outcome> {
        let input_estimate = self.shared.tokens.request(&request) as u64;
        let mut stream = model.stream(request);
        let mut result =
            TurnResult { text_from: self.text.len(), calls: Vec::new(), finish: FinishReason::Stop, served_by: model.name().to_owned() };
        let mut usage = None;
        let stop = self.live.stop_token().clone();
        loop {
            let due = match (self.text_out.due(), self.thinking_out.due()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let item = tokio::select! {
                biased;
                _ = stop.cancelled() => {
                    drop(stream);
                    self.flush().await;
                    self.account_turn(&result, usage, input_estimate).await;
                    return Err(self.stopped());
                }
                _ = sleep_until(due), if due.is_some() => {
                    self.emit_due().await;
                    continue;
                }
                item = stream.next() => item,
            };
            match item {
                None => break,
                Some(Err(e)) => {
                    self.flush().await;
                    self.account_turn(&result, usage, input_estimate).await;
                    return Err(self.provider_failed(&e));
                }
                Some(Ok(event)) => match event {
                    StreamEvent::TextDelta { text } => {
                        self.text.push_str(&text);
                        if let Some(piece) = self.text_out.push(&text, Instant::now()) {
                            self.emit_text(piece).await;
                        }
                    }
                    StreamEvent::ReasoningDelta { text } => {
                        if let Some(piece) = self.thinking_out.push(&text, Instant::now()) {
                            self.emit_thinking(piece).await;
                        }
                    }
                    StreamEvent::ToolCallCompleted { call } => result.calls.push(call),
                    StreamEvent::Usage { usage: u } => usage = Some(u),
                    StreamEvent::Finished { reason } => {
                        result.finish = reason;
                        break;
                    }
                    StreamEvent::FellBack { model, code } => {
                        tracing::warn!(fallback = %model, %code, "answer continues on the fallback model");
                        result.served_by = model;
                    }
                    StreamEvent::Retrying { attempt, delay, code } => {
                        tracing::info!(attempt, ?delay, %code, "model call retried");
                    }
                    StreamEvent::ToolCallStarted { .. } | StreamEvent::ToolCallArgumentsDelta { .. } | StreamEvent::KeepAlive => {}
                },
            }
        }
        self.account_turn(&result, usage, input_estimate).await;
        Ok(result)
    }

    /// Counts a turn's usage: the provider's numbers, or an estimate.
    async fn account_turn(&mut self, turn: &TurnResult, usage: Option<Usage>, input_estimate: u64) {
        let usage = usage.unwrap_or_else(|| {
            let arguments: usize = turn.calls.iter().map(|c| self.shared.tokens.text(&c.arguments.to_string())).sum();
            Usage {
                input_tokens: input_estimate,
                output_tokens: (self.shared.tokens.text(self.text.get(turn.text_from..).unwrap_or_default()) + arguments) as u64,
                reasoning_tokens: None,
                estimated: true,
            }
        });
        let served_by = turn.served_by.clone();
        self.account(&served_by, usage).await;
    }

    async fn account(&mut self, served_by: &str, usage: Usage) {
        let prices = self.shared.models.get(served_by).map(|m| m.prices()).unwrap_or_default();
        let cost = prices.cost(&usage);
        self.usage = self.usage + usage;
        self.cost_usd += cost;
        self.shared.metrics.usage(served_by, usage.input_tokens, usage.output_tokens, cost);
        let stored = chorus_store::RunUsage {
            input_tokens: i64::try_from(self.usage.input_tokens).unwrap_or(i64::MAX),
            output_tokens: i64::try_from(self.usage.output_tokens).unwrap_or(i64::MAX),
            estimated: self.usage.estimated,
        };
        if let Err(e) = self.shared.store.record_run_usage(self.live.id(), stored, self.cost_usd).await {
            tracing::warn!(error = %e, "run usage not recorded");
        }
    }

    /// `Some(ending)` when the person's runs today cost their daily budget or more.
    async fn over_budget(&self, run: &Run) -> Option<(Ending, Option<chorus_chat::triggers::Decision>)> {
        let budget = self.shared.config.daily_budget_usd?;
        let user = run.triggered_by.as_deref()?;
        let now = self.shared.hub.now_ms();
        let spent = match self.shared.store.user_run_cost_since(user, now - now.rem_euclid(DAY_MS)).await {
            Ok(spent) => spent,
            Err(e) => {
                tracing::warn!(error = %e, "budget not checked");
                return None;
            }
        };
        if spent >= budget {
            tracing::info!(spent, budget, "daily budget spent");
            return self.fail(
                RunErrorCode::BudgetExceeded,
                format!("today's agent budget (${budget:.4}) is spent (${spent:.4}); it resets at midnight UTC"),
            );
        }
        None
    }

    fn provider_failed(&self, error: &ProviderError) -> Outcome {
        let code = RunErrorCode::parse(error.code()).unwrap_or(RunErrorCode::ProviderError);
        tracing::warn!(%code, %error, "model call failed");
        self.fail(code, error.to_string())
    }

    async fn emit_text(&self, delta: String) {
        self.shared.ledger.emit(self.live, RunEvent::TextDelta { message_id: self.message_id.clone(), delta }).await;
    }

    async fn emit_thinking(&self, thought: String) {
        self.shared.ledger.emit(self.live, RunEvent::Thinking { thought }).await;
    }

    async fn emit_due(&mut self) {
        let now = Instant::now();
        if let Some(piece) = self.thinking_out.take_due(now) {
            self.emit_thinking(piece).await;
        }
        if let Some(piece) = self.text_out.take_due(now) {
            self.emit_text(piece).await;
        }
    }

    /// Sends everything buffered (before another kind of event, or the end).
    async fn flush(&mut self) {
        if let Some(piece) = self.thinking_out.flush() {
            self.emit_thinking(piece).await;
        }
        if let Some(piece) = self.text_out.flush() {
            self.emit_text(piece).await;
        }
    }

    /// Runs one turn's tool calls, `parallel_tool_calls` at once; results in
    /// the calls' order. A stop cancels the calls in flight.
    async fn call_tools(&self, toolset: &Toolset, calls: &[ToolCall]) -> Vec<ToolResult> {
        for call in calls {
            let event = RunEvent::ToolExecuting {
                call_id: call.id.clone(),
                tool: tool_name(toolset, &call.name),
                arguments: call.arguments.clone(),
            };
            self.shared.ledger.emit(self.live, event).await;
        }
        let cancel = self.live.stop_token().clone();
        let parallel = self.shared.config.parallel_tool_calls.max(1);
        let mut waiting = calls.iter().enumerate();
        let mut pending = futures_util::stream::FuturesUnordered::new();
        for (index, call) in waiting.by_ref().take(parallel) {
            pending.push(call_one(toolset.clone(), index, call.name.clone(), call.arguments.clone(), cancel.clone()));
        }
        let mut results: Vec<Option<ToolResult>> = vec![None; calls.len()];
        while let Some((index, result, took)) = pending.next().await {
            if let Some((next, call)) = waiting.next() {
                pending.push(call_one(toolset.clone(), next, call.name.clone(), call.arguments.clone(), cancel.clone()));
            }
            let call = &calls[index];
            let event = RunEvent::ToolCompleted {
                call_id: call.id.clone(),
                tool: tool_name(toolset, &call.name),
                result: result.content.clone(),
                is_error: result.is_error(),
                duration_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            };
            self.shared.ledger.emit(self.live, event).await;
            results[index] = Some(ToolResult {
                call_id: call.id.clone(),
                name: call.name.clone(),
                content: result.text().into_owned(),
                is_error: result.is_error(),
            });
        }
        results.into_iter().flatten().collect()
    }
}

/// One tool call, owning what it needs (so several can be in flight).
fn call_one(
    toolset: Toolset,
    index: usize,
    name: String,
    arguments: serde_json::Value,
    cancel: tokio_util::sync::CancellationToken,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = (usize, chorus_tools::ToolResult, std::time::Duration)> + Send>> {
    Box::pin(async move {
        let started = Instant::now();
        let result = toolset.call(&name, arguments, &cancel).await;
        (index, result, started.elapsed())
    })
}

/// The name agents list for a tool the model called by its model name.
fn tool_name(toolset: &Toolset, called: &str) -> String {
    toolset.spec(called).map_or_else(|| called.to_owned(), |s| s.name.clone())
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
