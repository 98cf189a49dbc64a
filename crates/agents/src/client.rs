//! Runs a client asks for and watches as they go (the AG-UI endpoint is
//! such a client): the caller's message is stored in the channel like any
//! other, the agent answers it through the same queue, policies, limits and
//! run state machine as every run, and the caller gets a [`RunFeed`] of the
//! run's events besides the channel's subscribers.
//!
//! Who may: the agent's owner (or an administrator), a member of the
//! channel, for an agent that is a member of it. Anyone else gets
//! `not_found` for an agent or channel they cannot see.

use chorus_chat::{Caller, ChatError};
use chorus_llm::{Message as Turn, ToolDefinition};
use chorus_store::{MemberRef, NewRun};

use crate::ledger::Origin;
use crate::runtime::Runtime;
use crate::watch::{ClientTurns, RunFeed};

/// What the run answers.
#[derive(Debug, Clone)]
pub enum ClientPrompt {
    /// A new message of the caller: stored in the channel, then answered.
    Message(String),
    /// Results the client computed for frontend tool calls of an earlier run
    /// (the model's calls, then one result per call): the conversation goes
    /// on from the channel's history and these turns. Nothing is stored in
    /// the channel for them.
    ToolResults(Vec<Turn>),
}

/// A run a client asks for.
#[derive(Debug, Clone)]
pub struct ClientRunRequest {
    pub agent_id: String,
    pub channel_id: String,
    pub prompt: ClientPrompt,
    /// Tools the client executes itself, offered to the model next to the
    /// agent's own (hosted agents only: an external agent's service has its own).
    pub frontend_tools: Vec<ToolDefinition>,
}

/// The run started for a client.
#[derive(Debug)]
pub struct ClientRun {
    pub agent_id: String,
    /// The caller's stored message, for a [`ClientPrompt::Message`].
    pub message_id: Option<String>,
    pub outcome: ClientRunOutcome,
}

/// What the client watches.
#[derive(Debug)]
pub enum ClientRunOutcome {
    /// The run's events, from its first.
    Watching { run_id: String, feed: RunFeed },
    /// The run exists but cannot be watched from here (it has ended, or has
    /// as many watchers as it takes): its events are on the channel.
    Unwatchable { run_id: String },
    /// No run was created: the channel's run rate (the loop guard) stopped it.
    ChainLimited { message: String },
}

impl Runtime {
    /// Starts a run of `request.agent_id` for `caller` and watches it.
    pub async fn start_client_run(&self, caller: &Caller, request: ClientRunRequest) -> Result<ClientRun, ChatError> {
        let shared = &self.0;
        if self.is_closing() {
            return Err(ChatError::Unavailable("the server is shutting down; try again shortly".into()));
        }
        if !shared.config.enabled {
            return Err(ChatError::Unavailable("this server runs no agents".into()));
        }
        // The agent first: another user's agent is `not_found`, whatever the channel.
        shared.chat.agents.get(caller, &request.agent_id).await?;
        let agent =
            shared.store.get_agent(&request.agent_id).await?.ok_or_else(|| ChatError::NotFound("agent not found".into()))?;
        if shared.store.member_role(&request.channel_id, &MemberRef::user(&caller.user_id)).await?.is_none() {
            return Err(ChatError::NotFound("channel not found".into()));
        }
        if shared.store.member_role(&request.channel_id, &MemberRef::agent(&agent.id)).await?.is_none() {
            return Err(ChatError::Conflict(format!("{} is not a member of this channel; add it first", agent.name)));
        }
        let client = if agent.is_external() {
            if matches!(request.prompt, ClientPrompt::ToolResults(_)) {
                return Err(ChatError::invalid(
                    "messages",
                    "an external agent takes no frontend tool results: its service runs its own tools",
                ));
            }
            ClientTurns::default()
        } else {
            let toolset = shared.tools.toolset(&agent.tools);
            for (i, tool) in request.frontend_tools.iter().enumerate() {
                if toolset.specs().iter().any(|s| s.model_name == tool.name || s.name == tool.name) {
                    return Err(ChatError::invalid(
                        &format!("tools[{i}].name"),
                        format!("`{}` is the name of one of the agent's own tools", tool.name),
                    ));
                }
            }
            let continuation = match &request.prompt {
                ClientPrompt::ToolResults(turns) => turns.clone(),
                ClientPrompt::Message(_) => Vec::new(),
            };
            ClientTurns { frontend_tools: request.frontend_tools.clone(), continuation }
        };
        let (run, message_id) = match &request.prompt {
            ClientPrompt::Message(text) => {
                let sent = shared.chat.messages.send_to_agent(&caller.user_id, &request.channel_id, text, &agent.id).await?;
                let message_id = Some(sent.sent.message.id.clone());
                match sent.run {
                    Some(run) => (run, message_id),
                    None => {
                        let message = format!(
                            "the channel started too many agent runs within a minute; {} does not answer this message",
                            agent.name
                        );
                        return Ok(ClientRun { agent_id: agent.id, message_id, outcome: ClientRunOutcome::ChainLimited { message } });
                    }
                }
            }
            ClientPrompt::ToolResults(_) => {
                shared.chat.deps().check_maintenance("starting agent runs")?;
                let run = shared
                    .store
                    .create_run(NewRun {
                        agent_id: agent.id.clone(),
                        channel_id: request.channel_id.clone(),
                        trigger_message_id: None,
                        triggered_by: Some(caller.user_id.clone()),
                        parent_run_id: None,
                        hop: 0,
                    })
                    .await?;
                (run, None)
            }
        };
        let run_id = run.id.clone();
        let outcome = match shared.ledger.open_for_client(run, Origin::Fresh, client) {
            Some(live) => {
                // Watched before it is admitted, so no event is missed.
                let feed = live.watch();
                self.admit_live(live, None).await;
                match feed {
                    Some(feed) => ClientRunOutcome::Watching { run_id, feed },
                    None => ClientRunOutcome::Unwatchable { run_id },
                }
            }
            // A rescan took it first (it was committed `queued`): watch what is left.
            None => match shared.ledger.get(&run_id).and_then(|live| live.watch()) {
                Some(feed) => ClientRunOutcome::Watching { run_id, feed },
                None => ClientRunOutcome::Unwatchable { run_id },
            },
        };
        Ok(ClientRun { agent_id: agent.id, message_id, outcome })
    }
}
