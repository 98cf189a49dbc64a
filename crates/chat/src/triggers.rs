//! Who answers a message: the chat domain's rules for starting agent runs.
//!
//! - `response_policy`: `mention` answers a message that mentions
//!   `@<agent name>` (case-insensitive, the name as written, spaces
//!   included: `@Helper Bot`), `always` answers every message a person sends
//!   in its channels, `manual` never answers on its own.
//! - An agent never triggers itself, and an agent's message triggers another
//!   agent only by mentioning it (whatever that agent's policy, `manual`
//!   aside).
//! - Loop guard: a run triggered by a person has hop 0; a run triggered by
//!   an agent's answer has its parent's hop + 1, and past `max_hops` none is
//!   created. The store also caps the runs created in a channel per minute
//!   (checked in the message's transaction). Either way the channel gets
//!   `agent_chain_limited`.
//!
//! The runs decided here are inserted `queued` in the same transaction as
//! the message, so a trigger is never lost, even if the process dies right
//! after the commit; [`RunIntake`] then tells the runtime.

use std::collections::HashSet;
use std::sync::Arc;

use chorus_protocol::EventType;
use chorus_store::{Agent, Run, RunTrigger, RunTriggers};
use serde::Serialize;

use crate::agents::ResponsePolicy;
use crate::events::{publish, room_channel};
use crate::{ChatError, Deps};

/// The loop guard's bounds (from `[agents]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunGuard {
    /// Most hops in a chain of agents answering agents (a person's message starts at 0).
    pub max_hops: u32,
    /// Most runs created in one channel within a minute; 0 for no limit.
    pub channel_runs_per_minute: u32,
}

impl Default for RunGuard {
    fn default() -> Self {
        RunGuard { max_hops: 3, channel_runs_per_minute: 20 }
    }
}

/// Where the chat domain hands committed runs to the agent runtime (which
/// it does not depend on). The runtime also finds them in the store, so a
/// lost call delays a run but never loses it.
pub trait RunIntake: Send + Sync + 'static {
    /// Runs committed `queued` (with the message that triggered them).
    fn queued(&self, runs: &[Run]);
    /// The loop guard stopped a chain (for the runtime's metrics).
    fn chain_limited(&self, limit: &ChainLimit);
}

/// Who wrote the message being answered.
#[derive(Debug, Clone, Copy)]
pub enum Speaker<'a> {
    Person { user_id: &'a str },
    /// An agent's answer, ending `run`.
    Agent { run: &'a Run },
}

/// Why the guard stopped a trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitReason {
    /// The chain reached `max_hops`.
    Hops,
    /// The channel reached its runs per minute.
    Rate,
}

/// A trigger the loop guard stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainLimit {
    pub channel_id: String,
    pub agent_id: String,
    pub message_id: String,
    pub reason: LimitReason,
    pub parent_run_id: Option<String>,
    pub hop: i64,
}

/// The runs a message triggers, and the triggers the hop limit stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    pub triggers: RunTriggers,
    /// Stopped for hops (the rate limit is the store's to find).
    pub over_hops: Vec<String>,
    /// The hop the triggered runs get.
    pub hop: i64,
    pub parent_run_id: Option<String>,
}

#[derive(Serialize)]
struct ChainLimitedEvent<'a> {
    thread_id: String,
    agent_id: &'a str,
    message_id: &'a str,
    reason: LimitReason,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_run_id: Option<&'a str>,
    hop: i64,
}

/// The trigger rules over the store and the hub. Cheap to clone.
#[derive(Clone)]
pub struct Triggers {
    deps: Deps,
    guard: RunGuard,
    intake: Option<Arc<dyn RunIntake>>,
}

impl Triggers {
    pub fn new(deps: Deps, guard: RunGuard, intake: Option<Arc<dyn RunIntake>>) -> Self {
        Triggers { deps, guard, intake }
    }

    pub fn guard(&self) -> RunGuard {
        self.guard
    }

    /// The runs `text` by `speaker` in `channel_id` triggers, from the agents
    /// that are members of the channel now.
    pub async fn decide(&self, channel_id: &str, speaker: Speaker<'_>, text: &str) -> Result<Decision, ChatError> {
        let agents = self.deps.store.list_channel_agents(channel_id).await?;
        Ok(decide(&agents, speaker, text, self.guard))
    }

    /// After a commit: wakes the runtime for `runs`, and announces the
    /// triggers the guard stopped (hops from `decision`, rate from the store).
    pub async fn committed(&self, channel_id: &str, message_id: &str, decision: &Decision, runs: &[Run], rate_limited: &[String]) {
        if !runs.is_empty()
            && let Some(intake) = &self.intake
        {
            intake.queued(runs);
        }
        let stopped = decision
            .over_hops
            .iter()
            .map(|a| (a, LimitReason::Hops))
            .chain(rate_limited.iter().map(|a| (a, LimitReason::Rate)));
        for (agent_id, reason) in stopped {
            let limit = ChainLimit {
                channel_id: channel_id.to_owned(),
                agent_id: agent_id.clone(),
                message_id: message_id.to_owned(),
                reason,
                parent_run_id: decision.parent_run_id.clone(),
                hop: decision.hop,
            };
            tracing::info!(channel = %channel_id, agent = %agent_id, ?reason, hop = decision.hop, "agent chain limited");
            if let Some(intake) = &self.intake {
                intake.chain_limited(&limit);
            }
            if let Some(room) = room_channel(channel_id) {
                let event = ChainLimitedEvent {
                    thread_id: room.to_string(),
                    agent_id,
                    message_id,
                    reason,
                    parent_run_id: limit.parent_run_id.as_deref(),
                    hop: limit.hop,
                };
                publish(&self.deps.hub, &room, EventType::AgentChainLimited, &event).await;
            }
        }
    }
}

/// The pure rule: which of `agents` (the channel's) answer `text`.
pub fn decide(agents: &[Agent], speaker: Speaker<'_>, text: &str, guard: RunGuard) -> Decision {
    let mentioned = mentions(text, agents);
    let (hop, parent, triggered_by, author_agent) = match speaker {
        Speaker::Person { user_id } => (0, None, Some(user_id.to_owned()), None),
        Speaker::Agent { run } => (run.hop + 1, Some(run.id.clone()), run.triggered_by.clone(), Some(run.agent_id.as_str())),
    };
    let mut decision = Decision { hop, parent_run_id: parent.clone(), ..Decision::default() };
    decision.triggers.channel_runs_per_minute = guard.channel_runs_per_minute;
    for agent in agents {
        if Some(agent.id.as_str()) == author_agent {
            continue;
        }
        let policy = ResponsePolicy::from_stored(&agent.response_policy);
        let answers = match (speaker, policy) {
            (_, ResponsePolicy::Manual) => false,
            (Speaker::Person { .. }, ResponsePolicy::Always) => true,
            _ => mentioned.contains(agent.id.as_str()),
        };
        if !answers {
            continue;
        }
        if hop > i64::from(guard.max_hops) {
            decision.over_hops.push(agent.id.clone());
            continue;
        }
        decision.triggers.runs.push(RunTrigger {
            agent_id: agent.id.clone(),
            triggered_by: triggered_by.clone(),
            parent_run_id: parent.clone(),
            hop,
        });
    }
    decision
}

/// The ids of the agents `text` mentions: `@` (at the start or after a
/// character that cannot be part of a word) followed by an agent's name,
/// ignoring ASCII case, and then the end or a character that cannot
/// continue a name. Where names overlap (`Helper`, `Helper Bot`) the longest wins.
pub fn mentions<'a>(text: &str, agents: &'a [Agent]) -> HashSet<&'a str> {
    let bytes = text.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    let mut found = HashSet::new();
    for (i, _) in text.match_indices('@') {
        if i > 0 && word(bytes[i - 1]) {
            continue;
        }
        let rest = &bytes[i + 1..];
        let best = agents
            .iter()
            .filter(|a| {
                let name = a.name.as_bytes();
                !name.is_empty()
                    && rest.len() >= name.len()
                    && rest[..name.len()].eq_ignore_ascii_case(name)
                    && rest.get(name.len()).is_none_or(|&b| !word(b))
            })
            .max_by_key(|a| a.name.len());
        if let Some(agent) = best {
            found.insert(agent.id.as_str());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_store::RunStatus;

    fn agent(id: &str, name: &str, policy: &str) -> Agent {
        Agent {
            id: id.into(),
            owner_id: "o".into(),
            name: name.into(),
            persona: "p".into(),
            quirks: vec![],
            model: "demo".into(),
            tools: vec![],
            response_policy: policy.into(),
            on_busy: "enqueue".into(),
            webhook: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn run(agent_id: &str, hop: i64) -> Run {
        Run {
            id: "r".into(),
            agent_id: agent_id.into(),
            channel_id: "c".into(),
            trigger_message_id: None,
            triggered_by: Some("alice".into()),
            parent_run_id: None,
            hop,
            status: RunStatus::Running,
            provider: None,
            model: None,
            usage: Default::default(),
            cost_usd: 0.0,
            error_code: None,
            error_message: None,
            answer_message_id: None,
            seq_reserved: 0,
            created_at: 0,
            started_at: None,
            ended_at: None,
            node_id: None,
        }
    }

    fn ids(d: &Decision) -> Vec<&str> {
        d.triggers.runs.iter().map(|r| r.agent_id.as_str()).collect()
    }

    #[test]
    fn mentions_match_names_case_insensitively_with_boundaries() {
        let agents = [agent("h", "Helper", "mention"), agent("hb", "Helper Bot", "mention"), agent("x", "x-1", "mention")];
        let m = |t: &str| {
            let mut v: Vec<&str> = mentions(t, &agents).into_iter().collect();
            v.sort();
            v
        };
        assert_eq!(m("hi @helper, how are you"), vec!["h"]);
        assert_eq!(m("@HELPER BOT do it"), vec!["hb"]);
        assert_eq!(m("@Helper Bots"), vec!["h"], "longest name that ends at a boundary");
        assert_eq!(m("@Helpers"), Vec::<&str>::new());
        assert_eq!(m("mail bob@helper now"), Vec::<&str>::new(), "inside a word is not a mention");
        assert_eq!(m("(@x-1) and @helper"), vec!["h", "x"]);
        assert_eq!(m("@"), Vec::<&str>::new());
        assert_eq!(m("é@helper"), vec!["h"], "after a non-ASCII character");
    }

    #[test]
    fn people_trigger_always_and_mentioned_agents_but_never_manual_ones() {
        let agents = [agent("a", "Ann", "always"), agent("m", "Mo", "mention"), agent("q", "Quiet", "manual")];
        let guard = RunGuard::default();
        let d = decide(&agents, Speaker::Person { user_id: "alice" }, "hello", guard);
        assert_eq!(ids(&d), vec!["a"]);
        let d = decide(&agents, Speaker::Person { user_id: "alice" }, "@mo @quiet hi", guard);
        assert_eq!(ids(&d), vec!["a", "m"]);
        assert!(d.triggers.runs.iter().all(|r| r.hop == 0 && r.triggered_by.as_deref() == Some("alice")));
        assert_eq!(d.triggers.channel_runs_per_minute, 20);
    }

    #[test]
    fn agents_trigger_only_by_mention_never_themselves_and_within_hops() {
        let agents = [agent("a", "Ann", "always"), agent("b", "Bob", "always"), agent("q", "Quiet", "manual")];
        let guard = RunGuard { max_hops: 3, channel_runs_per_minute: 0 };
        let parent = run("a", 0);
        let d = decide(&agents, Speaker::Agent { run: &parent }, "no mention here", guard);
        assert!(ids(&d).is_empty(), "`always` does not apply to agents' messages");
        let d = decide(&agents, Speaker::Agent { run: &parent }, "@Ann @Bob @Quiet", guard);
        assert_eq!(ids(&d), vec!["b"], "not itself, not a manual agent");
        assert_eq!((d.triggers.runs[0].hop, d.triggers.runs[0].parent_run_id.as_deref()), (1, Some("r")));
        assert_eq!(d.triggers.runs[0].triggered_by.as_deref(), Some("alice"), "the person who started the chain");
        let deep = run("a", 3);
        let d = decide(&agents, Speaker::Agent { run: &deep }, "@Bob", guard);
        assert!(ids(&d).is_empty());
        assert_eq!((d.over_hops.clone(), d.hop), (vec!["b".to_owned()], 4));
    }
}
