//! What a model sees: the agent's persona and quirks, then its stored
//! rolling summary of the channel, then the newest channel messages that fit
//! (context window − max output − tool schemas − a 10 % margin, counted with
//! tiktoken), each other speaker's message under their name.
//!
//! When older messages do not fit, the model summarizes them (folding them
//! into the previous summary, in chunks that fit its window), and the
//! summary is stored per agent and channel with the last message it covers:
//! the next run, also after a restart, starts from it.

use std::collections::HashMap;
use std::sync::Arc;

use chorus_llm::{ChatRequest, Message as Turn, Model, StreamEvent, TokenCounter, ToolDefinition, Usage};
use chorus_store::{Agent, AgentSummary, MemberKind, Message, MessagePage, Store, StoreError};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

/// Messages read per store round trip.
const PAGE: u32 = 200;
/// Summarization calls one prompt may take; older messages beyond are left out.
const MAX_SUMMARY_PASSES: usize = 8;
/// Tokens of framing a summary adds to the system prompt.
const SUMMARY_FRAMING: usize = 16;

/// A prompt ready for the model, and the model calls it took.
#[derive(Debug, Default)]
pub struct Prompt {
    pub system: String,
    pub messages: Vec<Turn>,
    /// Usage of each summarization call, by the configured model name that served it.
    pub calls: Vec<(String, Usage)>,
    /// Tokens the prompt takes, as counted here.
    pub tokens: usize,
    /// Tokens it may take.
    pub budget: usize,
}

/// Why no prompt could be built.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("summarizing earlier messages failed: {0}")]
    Summary(chorus_llm::ProviderError),
    #[error("the persona and tools alone do not fit the model's context window")]
    TooLarge,
    #[error("cancelled")]
    Cancelled,
}

pub struct MemoryParts<'a> {
    pub store: &'a Arc<dyn Store>,
    pub tokens: &'a TokenCounter,
    pub agent: &'a Agent,
    pub channel_id: &'a str,
    pub model: &'a Model,
    pub tools: &'a [ToolDefinition],
    pub history_max_messages: u32,
    pub summary_max_tokens: u32,
    /// The newest message the prompt holds: the run's trigger. Messages
    /// after it belong to the runs they start (a waiting run answers the
    /// message that asked, not a later one).
    pub through_seq: Option<i64>,
    pub cancel: &'a CancellationToken,
}

/// The persona and quirks, as the system prompt's first part.
pub fn persona(agent: &Agent) -> String {
    let mut system = format!(
        "You are {}, taking part in a group chat. {}\n",
        agent.name, agent.persona
    );
    if !agent.quirks.is_empty() {
        system.push_str("Your quirks:\n");
        for quirk in &agent.quirks {
            system.push_str("- ");
            system.push_str(quirk);
            system.push('\n');
        }
    }
    system.push_str("Messages from others start with their name. Answer as yourself, without a name in front.");
    system
}

fn with_summary(persona: &str, summary: Option<&str>) -> String {
    match summary {
        Some(s) if !s.trim().is_empty() => format!("{persona}\n\nWhat happened earlier in this channel, summarized:\n{s}"),
        _ => persona.to_owned(),
    }
}

/// Builds the prompt, summarizing what no longer fits.
pub async fn build(parts: MemoryParts<'_>) -> Result<Prompt, MemoryError> {
    let MemoryParts { store, tokens, agent, channel_id, model, tools, .. } = parts;
    let window = model.context_window() as usize;
    let budget = window
        .saturating_sub(model.max_output_tokens() as usize)
        .saturating_sub(tokens.tools(tools))
        .saturating_sub(window / 10);
    let persona = persona(agent);
    let persona_tokens = tokens.text(&persona) + 8;
    if persona_tokens + parts.summary_max_tokens as usize + SUMMARY_FRAMING >= budget {
        return Err(MemoryError::TooLarge);
    }
    let mut summary = store.get_agent_summary(&agent.id, channel_id).await?;
    let mut names = Names::new(store.clone(), agent);

    // Newest first, back to the summary's last message (or the history bound).
    let covered = summary.as_ref().map_or(0, |s| s.last_seq);
    let mut newest_first: Vec<(Message, Turn, usize)> = Vec::new();
    let mut before = parts.through_seq.map_or(i64::MAX, |seq| seq.saturating_add(1));
    while newest_first.len() < parts.history_max_messages as usize {
        // Both bounds: the newest page strictly between them.
        let page = MessagePage { before: Some(before), after: Some(covered), limit: PAGE };
        let rows = store.list_messages(channel_id, page).await?;
        let full = rows.len() == PAGE as usize;
        for m in rows {
            before = m.seq;
            if m.deleted_at.is_some() || m.text.trim().is_empty() {
                continue;
            }
            let turn = names.turn(&m).await?;
            let cost = tokens.message(&turn);
            newest_first.push((m, turn, cost));
            if newest_first.len() >= parts.history_max_messages as usize {
                break;
            }
        }
        if !full {
            break;
        }
    }

    // What fits beside the persona and a summary of the longest allowed size.
    let reserve = if summary.is_some() || !newest_first.is_empty() { parts.summary_max_tokens as usize + SUMMARY_FRAMING } else { 0 };
    let room = budget.saturating_sub(persona_tokens + reserve);
    let mut used = 0;
    let mut keep = 0;
    for (_, _, cost) in &newest_first {
        if used + cost > room {
            break;
        }
        used += cost;
        keep += 1;
    }
    let mut calls = Vec::new();
    if keep < newest_first.len() {
        // Oldest first: the messages that do not fit, folded into the summary.
        let overflow: Vec<&(Message, Turn, usize)> = newest_first[keep..].iter().rev().collect();
        let folded = summarize(&parts, summary.as_ref().map(|s| s.summary.as_str()), &overflow, &mut calls).await?;
        if let Some((text, last)) = folded {
            let stored = AgentSummary {
                agent_id: agent.id.clone(),
                channel_id: channel_id.to_owned(),
                summary: text,
                last_seq: last.seq,
                last_message_id: last.id.clone(),
                updated_at: 0,
            };
            match store.put_agent_summary(&stored).await {
                Ok(()) | Err(StoreError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
            summary = Some(stored);
        }
    }
    let system = with_summary(&persona, summary.as_ref().map(|s| s.summary.as_str()));
    let system_tokens = tokens.text(&system) + 8;
    let mut messages: Vec<Turn> = Vec::with_capacity(keep);
    let mut total = system_tokens;
    for (_, turn, cost) in newest_first.into_iter().take(keep) {
        if total + cost > budget {
            break;
        }
        total += cost;
        messages.push(turn);
    }
    messages.reverse();
    Ok(Prompt { system, messages, calls, tokens: total + tokens.tools(tools), budget: budget + tokens.tools(tools) })
}

/// Folds `overflow` (oldest first) into `previous` in chunks that fit the
/// model; returns the new summary and the last message it covers.
async fn summarize<'m>(
    parts: &MemoryParts<'_>,
    previous: Option<&str>,
    overflow: &[&'m (Message, Turn, usize)],
    calls: &mut Vec<(String, Usage)>,
) -> Result<Option<(String, &'m Message)>, MemoryError> {
    let model = parts.model;
    let window = model.context_window() as usize;
    let max_output = (parts.summary_max_tokens).min(model.max_output_tokens());
    let instructions = format!(
        "Summarize the conversation so far for {}, in at most {} words: keep who said what, facts, decisions \
         and open questions. Start from the summary so far, if there is one.",
        parts.agent.name,
        max_output * 3 / 4
    );
    let chunk_room = window
        .saturating_sub(max_output as usize)
        .saturating_sub(window / 10)
        .saturating_sub(parts.tokens.text(&instructions) + parts.summary_max_tokens as usize + 2 * SUMMARY_FRAMING);
    let mut chunks: Vec<&[&(Message, Turn, usize)]> = Vec::new();
    let mut start = 0;
    let mut used = 0;
    for (i, (_, _, cost)) in overflow.iter().map(|x| (&x.0, &x.1, x.2)).enumerate() {
        if used + cost > chunk_room && i > start {
            chunks.push(&overflow[start..i]);
            start = i;
            used = 0;
        }
        used += cost;
    }
    if start < overflow.len() {
        chunks.push(&overflow[start..]);
    }
    if chunks.len() > MAX_SUMMARY_PASSES {
        // The oldest chunks are left out: a bounded cost per prompt.
        let skipped = chunks.len() - MAX_SUMMARY_PASSES;
        tracing::info!(agent = %parts.agent.id, channel = %parts.channel_id, skipped, "oldest messages left out of the summary");
        chunks.drain(..skipped);
    }
    let mut summary = previous.map(str::to_owned);
    let mut last = None;
    for chunk in chunks {
        let mut request = model.request();
        request.system = Some(instructions.clone());
        request.max_output_tokens = max_output;
        if let Some(s) = &summary {
            request.messages.push(Turn::user(format!("The summary so far:\n{s}")));
        }
        request.messages.extend(chunk.iter().map(|(_, turn, _)| turn.clone()));
        let (text, served_by, usage) = complete(model, request, parts.cancel, parts.tokens).await?;
        calls.push((served_by, usage));
        if !text.trim().is_empty() {
            summary = Some(text.trim().to_owned());
        }
        last = chunk.last().map(|(m, _, _)| m);
    }
    Ok(match (summary, last) {
        (Some(s), Some(last)) => Some((s, last)),
        _ => None,
    })
}

/// One whole answer of the model (no tools): its text, the model that
/// served it (the fallback's name after a switch) and its usage.
async fn complete(
    model: &Model,
    request: ChatRequest,
    cancel: &CancellationToken,
    tokens: &TokenCounter,
) -> Result<(String, String, Usage), MemoryError> {
    let input_estimate = tokens.request(&request) as u64;
    let mut stream = model.stream(request);
    let mut text = String::new();
    let mut served_by = model.name().to_owned();
    let mut usage = None;
    loop {
        let item = tokio::select! {
            _ = cancel.cancelled() => return Err(MemoryError::Cancelled),
            item = stream.next() => item,
        };
        match item {
            None => break,
            Some(Err(e)) => return Err(MemoryError::Summary(e)),
            Some(Ok(StreamEvent::TextDelta { text: t })) => text.push_str(&t),
            Some(Ok(StreamEvent::Usage { usage: u })) => usage = Some(u),
            Some(Ok(StreamEvent::FellBack { model, .. })) => served_by = model,
            Some(Ok(StreamEvent::Finished { .. })) => break,
            Some(Ok(_)) => {}
        }
    }
    let usage = usage.unwrap_or(Usage {
        input_tokens: input_estimate,
        output_tokens: tokens.text(&text) as u64,
        reasoning_tokens: None,
        estimated: true,
    });
    Ok((text, served_by, usage))
}

/// Speakers' names, looked up once per prompt.
struct Names {
    store: Arc<dyn Store>,
    me: String,
    users: HashMap<String, String>,
    agents: HashMap<String, String>,
}

impl Names {
    fn new(store: Arc<dyn Store>, me: &Agent) -> Self {
        Names { store, me: me.id.clone(), users: HashMap::new(), agents: HashMap::new() }
    }

    async fn turn(&mut self, m: &Message) -> Result<Turn, StoreError> {
        match m.author.kind {
            MemberKind::Agent if m.author.id == self.me => Ok(Turn::assistant(m.text.clone())),
            MemberKind::Agent => {
                if !self.agents.contains_key(&m.author.id) {
                    let name = self.store.get_agent(&m.author.id).await?.map_or_else(|| "an agent".to_owned(), |a| a.name);
                    self.agents.insert(m.author.id.clone(), name);
                }
                Ok(Turn::user_named(self.agents[&m.author.id].clone(), m.text.clone()))
            }
            MemberKind::User => {
                if !self.users.contains_key(&m.author.id) {
                    let name = self.store.get_user(&m.author.id).await?.map_or_else(|| "someone".to_owned(), |u| u.username);
                    self.users.insert(m.author.id.clone(), name);
                }
                Ok(Turn::user_named(self.users[&m.author.id].clone(), m.text.clone()))
            }
        }
    }
}
