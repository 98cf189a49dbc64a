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
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}
