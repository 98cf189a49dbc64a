//! The catalog of pushed event types and the schema of each one's `data`.
//!
//! Every event on a channel has its own name; there is no generic wrapper.
//! Events that come from outside Chorus (the server publish API) are checked
//! against these schemas before they are accepted.

use crate::payload::Payload;

/// Who may put an event of this type on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Clients with publish permission (the `publish` command) and server publishers.
    Client,
    /// Server-side publishers with an API key (agents that run elsewhere).
    ServerApi,
    /// Only Chorus itself.
    Internal,
}

/// The JSON type a field must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    String,
    Integer,
    Number,
    Bool,
    Object,
    Array,
    Any,
}

impl FieldKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FieldKind::String => "string",
            FieldKind::Integer => "integer",
            FieldKind::Number => "number",
            FieldKind::Bool => "boolean",
            FieldKind::Object => "object",
            FieldKind::Array => "array",
            FieldKind::Any => "any",
        }
    }

    fn accepts(self, v: &serde_json::Value) -> bool {
        use serde_json::Value as V;
        match self {
            FieldKind::String => matches!(v, V::String(_)),
            FieldKind::Integer => v.as_i64().is_some() || v.as_u64().is_some(),
            FieldKind::Number => matches!(v, V::Number(_)),
            FieldKind::Bool => matches!(v, V::Bool(_)),
            FieldKind::Object => matches!(v, V::Object(_)),
            FieldKind::Array => matches!(v, V::Array(_)),
            FieldKind::Any => true,
        }
    }
}

/// One field of an event's `data`.
#[derive(Debug, Clone, Copy)]
pub struct FieldSpec {
    pub name: &'static str,
    pub kind: FieldKind,
    pub required: bool,
}

const fn req(name: &'static str, kind: FieldKind) -> FieldSpec {
    FieldSpec { name, kind, required: true }
}
const fn opt(name: &'static str, kind: FieldKind) -> FieldSpec {
    FieldSpec { name, kind, required: false }
}

use FieldKind::{Any, Bool, Integer, Number, Object, String as Str};

// Every run event carries the run, its thread (the channel's stream name),
// the agent, and `seq`: the event's place in the run, from 1, increasing.
const AGENT_QUEUED: &[FieldSpec] = &[
    req("run_id", Str),
    req("thread_id", Str),
    req("agent_id", Str),
    req("seq", Integer),
    req("position", Integer),
    opt("trigger_message_id", Str),
];
const RUN_STARTED: &[FieldSpec] = &[
    req("run_id", Str),
    req("thread_id", Str),
    req("agent_id", Str),
    req("seq", Integer),
    opt("model", Str),
    opt("provider", Str),
    opt("trigger_message_id", Str),
    opt("triggered_by", Str),
    opt("parent_run_id", Str),
    opt("hop", Integer),
];
const RUN_THINKING: &[FieldSpec] =
    &[req("run_id", Str), req("thread_id", Str), req("agent_id", Str), req("seq", Integer), opt("thought", Str)];
const RUN_TEXT: &[FieldSpec] = &[
    req("run_id", Str),
    req("thread_id", Str),
    req("agent_id", Str),
    req("seq", Integer),
    req("message_id", Str),
    req("delta", Str),
];
const TOOL_EXECUTING: &[FieldSpec] = &[
    req("run_id", Str),
    req("thread_id", Str),
    req("agent_id", Str),
    req("seq", Integer),
    req("call_id", Str),
    req("tool", Str),
    opt("arguments", Any),
];
const TOOL_COMPLETED: &[FieldSpec] = &[
    req("run_id", Str),
    req("thread_id", Str),
    req("agent_id", Str),
    req("seq", Integer),
    req("call_id", Str),
    req("tool", Str),
    opt("result", Any),
    opt("is_error", Bool),
    opt("duration_ms", Integer),
];
const RUN_COMPLETED: &[FieldSpec] = &[
    req("run_id", Str),
    req("thread_id", Str),
    req("agent_id", Str),
    req("seq", Integer),
    opt("message_id", Str),
    opt("text", Str),
    opt("finish_reason", Str),
    opt("usage", Object),
    opt("cost_usd", Number),
    opt("model", Str),
];
const RUN_ERROR: &[FieldSpec] = &[
    req("run_id", Str),
    req("thread_id", Str),
    req("agent_id", Str),
    req("seq", Integer),
    req("code", Str),
    req("message", Str),
    opt("retryable", Bool),
    opt("message_id", Str),
    opt("text", Str),
    opt("usage", Object),
    opt("cost_usd", Number),
];
const CHAIN_LIMITED: &[FieldSpec] = &[
    req("thread_id", Str),
    req("agent_id", Str),
    req("message_id", Str),
    req("reason", Str),
    opt("parent_run_id", Str),
    opt("hop", Integer),
];
const USER_ONLY: &[FieldSpec] = &[req("user_id", Str)];
const TYPING_STARTED: &[FieldSpec] = &[req("user_id", Str), req("expires_at", Str)];
const MESSAGE: &[FieldSpec] = &[req("message", Object)];
const MESSAGE_DELETED: &[FieldSpec] = &[req("message_id", Str), req("channel_id", Str)];
const CHANNEL: &[FieldSpec] = &[req("channel", Object)];
const CHANNEL_MEMBER: &[FieldSpec] = &[req("channel_id", Str), req("member", Object)];
const CHANNEL_DELETED: &[FieldSpec] = &[req("channel_id", Str)];
const AGENT: &[FieldSpec] = &[req("agent", Object)];
const AGENT_DESPAWNED: &[FieldSpec] = &[req("agent_id", Str)];

macro_rules! event_types {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, $origin:ident, $schema:expr; )*) => {
        /// Every event type that can be pushed on a channel.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventType { $( $(#[$doc])* $variant, )* }

        impl EventType {
            pub const ALL: &'static [EventType] = &[$(EventType::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self { $(EventType::$variant => $name,)* }
            }

            pub fn parse(name: &str) -> Option<Self> {
                match name { $($name => Some(EventType::$variant),)* _ => None }
            }

            pub fn origin(self) -> Origin {
                match self { $(EventType::$variant => Origin::$origin,)* }
            }

            /// Fields of `data`; other fields are allowed and passed through.
            pub fn schema(self) -> &'static [FieldSpec] {
                match self { $(EventType::$variant => $schema,)* }
            }
        }
    };
}

event_types! {
    /// Free-form data published by a client or a server publisher.
    Publication = "publication", Client, &[];
    /// A user's first connection joined the channel.
    PresenceJoined = "presence_joined", Internal, USER_ONLY;
    /// A user's last connection left the channel.
    PresenceLeft = "presence_left", Internal, USER_ONLY;
    /// A user started typing; the indicator expires at `expires_at` unless renewed.
    TypingStarted = "typing_started", Internal, TYPING_STARTED;
    /// A user stopped typing (explicitly, by sending, or by expiry).
    TypingStopped = "typing_stopped", Internal, USER_ONLY;
    MessageCreated = "message_created", Internal, MESSAGE;
    MessageUpdated = "message_updated", Internal, MESSAGE;
    MessageDeleted = "message_deleted", Internal, MESSAGE_DELETED;
    ChannelCreated = "channel_created", Internal, CHANNEL;
    ChannelUpdated = "channel_updated", Internal, CHANNEL;
    ChannelMemberAdded = "channel_member_added", Internal, CHANNEL_MEMBER;
    ChannelMemberRemoved = "channel_member_removed", Internal, CHANNEL_MEMBER;
    ChannelDeleted = "channel_deleted", Internal, CHANNEL_DELETED;
    AgentSpawned = "agent_spawned", Internal, AGENT;
    AgentUpdated = "agent_updated", Internal, AGENT;
    AgentDespawned = "agent_despawned", Internal, AGENT_DESPAWNED;
    /// A run was accepted and waits for its turn (`position` among its person's waiting runs).
    AgentQueued = "agent_queued", ServerApi, AGENT_QUEUED;
    /// An agent run began.
    AgentStarted = "agent_started", ServerApi, RUN_STARTED;
    /// The agent is reasoning; `thought` carries the next piece of visible reasoning.
    AgentThinking = "agent_thinking", ServerApi, RUN_THINKING;
    /// The next piece of the agent's streamed answer (coalesced: at most one per run per 100 ms).
    AgentTextDelta = "agent_text_delta", ServerApi, RUN_TEXT;
    ToolExecuting = "tool_executing", ServerApi, TOOL_EXECUTING;
    ToolCompleted = "tool_completed", ServerApi, TOOL_COMPLETED;
    /// The run ended successfully (terminal).
    AgentCompleted = "agent_completed", ServerApi, RUN_COMPLETED;
    /// The run ended with an error (terminal).
    AgentError = "agent_error", ServerApi, RUN_ERROR;
    /// The loop guard stopped an agent chain (too many hops, or too many runs in the channel this minute).
    AgentChainLimited = "agent_chain_limited", Internal, CHAIN_LIMITED;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("unknown event type `{0}`")]
    UnknownType(String),
    #[error("event type `{0}` cannot be published from outside the server")]
    NotPublishable(&'static str),
    #[error("`data` is not a JSON object")]
    NotAnObject,
    #[error("event `{event}`: field `{field}` is required")]
    Missing { event: &'static str, field: &'static str },
    #[error("event `{event}`: field `{field}` must be of type {expected}")]
    WrongType { event: &'static str, field: &'static str, expected: &'static str },
}

impl EventType {
    /// Whether a server publisher with an API key may publish this type.
    pub fn server_publishable(self) -> bool {
        matches!(self.origin(), Origin::Client | Origin::ServerApi)
    }

    /// Checks `data` against this type's schema.
    pub fn validate(self, data: &Payload) -> Result<(), SchemaError> {
        let schema = self.schema();
        if schema.is_empty() {
            return Ok(());
        }
        let map = data.to_map().map_err(|_| SchemaError::NotAnObject)?;
        for f in schema {
            match map.get(f.name) {
                None | Some(serde_json::Value::Null) if f.required => {
                    return Err(SchemaError::Missing { event: self.as_str(), field: f.name });
                }
                None | Some(serde_json::Value::Null) => {}
                Some(v) if !f.kind.accepts(v) => {
                    return Err(SchemaError::WrongType { event: self.as_str(), field: f.name, expected: f.kind.as_str() });
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Parses a name given by a server publisher and checks it may be published.
    pub fn parse_publishable(name: &str) -> Result<Self, SchemaError> {
        let t = Self::parse(name).ok_or_else(|| SchemaError::UnknownType(name.to_owned()))?;
        if !t.server_publishable() {
            return Err(SchemaError::NotPublishable(t.as_str()));
        }
        Ok(t)
    }

    /// True for the events that end an agent run.
    pub fn is_terminal(self) -> bool {
        matches!(self, EventType::AgentCompleted | EventType::AgentError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(v: serde_json::Value) -> Payload {
        Payload::from_value(&v).unwrap()
    }

    #[test]
    fn names_round_trip() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(*t));
        }
        assert_eq!(EventType::parse("channel_event"), None);
    }

    #[test]
    fn validates_required_fields_and_types() {
        let ok = payload(serde_json::json!({"run_id":"r","thread_id":"room:a","agent_id":"g","seq":2,"thought":"hm","extra":1}));
        assert_eq!(EventType::AgentThinking.validate(&ok), Ok(()));
        let missing = payload(serde_json::json!({"run_id":"r","thread_id":"room:a"}));
        assert_eq!(
            EventType::AgentThinking.validate(&missing),
            Err(SchemaError::Missing { event: "agent_thinking", field: "agent_id" })
        );
        let wrong = payload(serde_json::json!({"run_id":1,"thread_id":"t","agent_id":"g","seq":1}));
        assert!(matches!(EventType::AgentStarted.validate(&wrong), Err(SchemaError::WrongType { field: "run_id", .. })));
        let null_req = payload(serde_json::json!({"run_id":null,"thread_id":"t","agent_id":"g","seq":1}));
        assert!(matches!(EventType::AgentStarted.validate(&null_req), Err(SchemaError::Missing { .. })));
    }

    #[test]
    fn internal_events_are_not_publishable() {
        assert_eq!(EventType::parse_publishable("presence_joined"), Err(SchemaError::NotPublishable("presence_joined")));
        assert_eq!(EventType::parse_publishable("nope"), Err(SchemaError::UnknownType("nope".into())));
        assert_eq!(EventType::parse_publishable("agent_error"), Ok(EventType::AgentError));
    }
}
