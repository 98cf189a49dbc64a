-- Chorus store schema, PostgreSQL dialect. Timestamps are Unix milliseconds.
-- Keep in step with ../sqlite/0001_initial.sql: same tables, columns and index names.

CREATE TABLE users (
    id TEXT PRIMARY KEY NOT NULL,
    username TEXT NOT NULL,
    -- Lowercased by the store (Rust `to_lowercase`), so both engines agree on what "same name" means.
    username_key TEXT NOT NULL,
    email TEXT,
    password_hash TEXT,
    role TEXT NOT NULL CHECK (role IN ('user', 'admin')),
    external_issuer TEXT,
    external_subject TEXT,
    created_at BIGINT NOT NULL,
    CHECK ((external_issuer IS NULL) = (external_subject IS NULL))
);
CREATE UNIQUE INDEX uq_users_username_key ON users (username_key);
CREATE UNIQUE INDEX uq_users_external ON users (external_issuer, external_subject);
CREATE INDEX ix_users_admins ON users (role) WHERE role = 'admin';

CREATE TABLE auth_sessions (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    refresh_token_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT,
    user_agent TEXT,
    ip TEXT
);
CREATE UNIQUE INDEX uq_auth_sessions_refresh_hash ON auth_sessions (refresh_token_hash);
CREATE INDEX ix_auth_sessions_user ON auth_sessions (user_id);
CREATE INDEX ix_auth_sessions_expires ON auth_sessions (expires_at);
CREATE INDEX ix_auth_sessions_last_seen ON auth_sessions (last_seen_at);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    key_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT
);
CREATE UNIQUE INDEX uq_api_keys_key_hash ON api_keys (key_hash);
CREATE INDEX ix_api_keys_user ON api_keys (user_id);

CREATE TABLE channels (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    topic TEXT,
    owner_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    archived_at BIGINT,
    retention_ms BIGINT CHECK (retention_ms IS NULL OR retention_ms > 0),
    -- Message sequence allocator: bumped in the insert transaction (the row lock orders writers).
    last_seq BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX ix_channels_owner ON channels (owner_id);
CREATE INDEX ix_channels_retention ON channels (retention_ms) WHERE retention_ms IS NOT NULL;

CREATE TABLE agents (
    id TEXT PRIMARY KEY NOT NULL,
    owner_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL,
    persona TEXT NOT NULL,
    quirks TEXT NOT NULL, -- JSON array of strings
    model TEXT NOT NULL,
    tools TEXT NOT NULL, -- JSON array of strings
    response_policy TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX uq_agents_owner_name ON agents (owner_id, name_key);

-- Members are users or agents. `user_id`/`agent_id` mirror `member_id` so that foreign keys
-- refuse unknown members and cascade when a user or agent is deleted.
CREATE TABLE channel_members (
    channel_id TEXT NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    member_kind TEXT NOT NULL CHECK (member_kind IN ('user', 'agent')),
    member_id TEXT NOT NULL,
    user_id TEXT REFERENCES users (id) ON DELETE CASCADE,
    agent_id TEXT REFERENCES agents (id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('owner', 'member')),
    added_at BIGINT NOT NULL,
    PRIMARY KEY (channel_id, member_kind, member_id),
    CHECK (
        (member_kind = 'user' AND user_id IS NOT NULL AND user_id = member_id AND agent_id IS NULL)
        OR (member_kind = 'agent' AND agent_id IS NOT NULL AND agent_id = member_id AND user_id IS NULL)
    )
);
CREATE INDEX ix_channel_members_user ON channel_members (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX ix_channel_members_agent ON channel_members (agent_id) WHERE agent_id IS NOT NULL;

CREATE TABLE messages (
    id TEXT PRIMARY KEY NOT NULL,
    channel_id TEXT NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    author_kind TEXT NOT NULL CHECK (author_kind IN ('user', 'agent')),
    author_id TEXT NOT NULL,
    text TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    edited_at BIGINT,
    deleted_at BIGINT
);
CREATE UNIQUE INDEX uq_messages_channel_seq ON messages (channel_id, seq);
CREATE INDEX ix_messages_channel_created ON messages (channel_id, created_at);

-- The key is claimed before the message row exists (same transaction), hence the deferred check.
CREATE TABLE idempotency_keys (
    author_kind TEXT NOT NULL,
    author_id TEXT NOT NULL,
    idem_key TEXT NOT NULL,
    message_id TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (author_kind, author_id, idem_key)
);
CREATE INDEX ix_idempotency_created ON idempotency_keys (created_at);
CREATE INDEX ix_idempotency_message ON idempotency_keys (message_id);

-- Events committed with the data they describe; deleted once fanned out.
CREATE TABLE outbox (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel TEXT NOT NULL,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
