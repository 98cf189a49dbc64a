//! Rows whose columns do not map one to one onto a model (two columns make
//! one field, or a column holds JSON), read with `sqlx::FromRow` and turned
//! into the model. Models that do map one to one derive `FromRow` in
//! `model.rs`. Both are generic over the engine, so compiled once.

use crate::StoreError;
use crate::model::*;
use crate::sql::from_json;

#[derive(sqlx::FromRow)]
pub(crate) struct UserRow {
    id: String,
    username: String,
    email: Option<String>,
    password_hash: Option<String>,
    #[sqlx(try_from = "String")]
    role: UserRole,
    external_issuer: Option<String>,
    external_subject: Option<String>,
    created_at: i64,
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> Self {
        User {
            id: r.id,
            username: r.username,
            email: r.email,
            password_hash: r.password_hash,
            role: r.role,
            // Both columns or neither (the schema checks it).
            external: match (r.external_issuer, r.external_subject) {
                (Some(issuer), Some(subject)) => Some(ExternalIdentity { issuer, subject }),
                _ => None,
            },
            created_at: r.created_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct MemberRow {
    channel_id: String,
    #[sqlx(try_from = "String")]
    member_kind: MemberKind,
    member_id: String,
    #[sqlx(try_from = "String")]
    role: MemberRole,
    added_at: i64,
}

#[derive(sqlx::FromRow)]
pub(crate) struct MemberProfileRow {
    #[sqlx(flatten)]
    member: MemberRow,
    name: String,
    agent_model: Option<String>,
    agent_owner_id: Option<String>,
}

impl From<MemberProfileRow> for MemberProfile {
    fn from(r: MemberProfileRow) -> Self {
        MemberProfile { member: r.member.into(), name: r.name, agent_model: r.agent_model, agent_owner_id: r.agent_owner_id }
    }
}

impl From<MemberRow> for ChannelMember {
    fn from(r: MemberRow) -> Self {
        ChannelMember {
            channel_id: r.channel_id,
            member: MemberRef { kind: r.member_kind, id: r.member_id },
            role: r.role,
            added_at: r.added_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct MessageRow {
    id: String,
    channel_id: String,
    seq: i64,
    #[sqlx(try_from = "String")]
    author_kind: MemberKind,
    author_id: String,
    text: String,
    created_at: i64,
    edited_at: Option<i64>,
    deleted_at: Option<i64>,
    run_id: Option<String>,
}

impl From<MessageRow> for Message {
    fn from(r: MessageRow) -> Self {
        Message {
            id: r.id,
            channel_id: r.channel_id,
            seq: r.seq,
            author: MemberRef { kind: r.author_kind, id: r.author_id },
            text: r.text,
            created_at: r.created_at,
            edited_at: r.edited_at,
            deleted_at: r.deleted_at,
            run_id: r.run_id,
        }
    }
}

/// `quirks` and `tools` are JSON arrays in TEXT columns (the same on both engines).
#[derive(sqlx::FromRow)]
pub(crate) struct AgentRow {
    id: String,
    owner_id: String,
    name: String,
    persona: String,
    quirks: String,
    model: String,
    tools: String,
    response_policy: String,
    on_busy: String,
    webhook_url: Option<String>,
    webhook_secret_salt: Option<String>,
    webhook_previous_salt: Option<String>,
    webhook_previous_until: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<AgentRow> for Agent {
    type Error = StoreError;

    fn try_from(r: AgentRow) -> Result<Self, StoreError> {
        Ok(Agent {
            id: r.id,
            owner_id: r.owner_id,
            name: r.name,
            persona: r.persona,
            quirks: from_json(&r.quirks)?,
            model: r.model,
            tools: from_json(&r.tools)?,
            response_policy: r.response_policy,
            on_busy: r.on_busy,
            // `kind` is 'external' exactly when these two are set.
            webhook: match (r.webhook_url, r.webhook_secret_salt) {
                (Some(url), Some(secret_salt)) => Some(AgentWebhook {
                    url,
                    secret_salt,
                    previous_salt: r.webhook_previous_salt,
                    previous_until: r.webhook_previous_until,
                }),
                _ => None,
            },
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct RunRow {
    id: String,
    agent_id: String,
    channel_id: String,
    trigger_message_id: Option<String>,
    triggered_by: Option<String>,
    parent_run_id: Option<String>,
    hop: i64,
    #[sqlx(try_from = "String")]
    status: RunStatus,
    provider: Option<String>,
    model: Option<String>,
    input_tokens: i64,
    output_tokens: i64,
    usage_estimated: bool,
    cost_usd: f64,
    error_code: Option<String>,
    error_message: Option<String>,
    answer_message_id: Option<String>,
    seq_reserved: i64,
    created_at: i64,
    started_at: Option<i64>,
    ended_at: Option<i64>,
    node_id: Option<String>,
}

impl From<RunRow> for Run {
    fn from(r: RunRow) -> Self {
        Run {
            id: r.id,
            agent_id: r.agent_id,
            channel_id: r.channel_id,
            trigger_message_id: r.trigger_message_id,
            triggered_by: r.triggered_by,
            parent_run_id: r.parent_run_id,
            hop: r.hop,
            status: r.status,
            provider: r.provider,
            model: r.model,
            usage: RunUsage { input_tokens: r.input_tokens, output_tokens: r.output_tokens, estimated: r.usage_estimated },
            cost_usd: r.cost_usd,
            error_code: r.error_code,
            error_message: r.error_message,
            answer_message_id: r.answer_message_id,
            seq_reserved: r.seq_reserved,
            created_at: r.created_at,
            started_at: r.started_at,
            ended_at: r.ended_at,
            node_id: r.node_id,
        }
    }
}
