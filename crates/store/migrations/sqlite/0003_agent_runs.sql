-- Agent runs, rolling summaries, and what runs need on agents and messages. SQLite dialect.
-- Keep in step with ../postgres/0002_agent_runs.sql: same tables, columns and index names.

-- What a new trigger does while the agent is busy in the channel: 'enqueue', 'reject' or 'interrupt'.
ALTER TABLE agents ADD COLUMN on_busy TEXT NOT NULL DEFAULT 'enqueue';

-- The run an agent's message answers (NULL for people's messages).
ALTER TABLE messages ADD COLUMN run_id TEXT;

-- One row per agent run, written in the transaction of the message that triggered it.
-- `agent_id` has no foreign key: a run outlives its agent's deletion as a record.
CREATE TABLE runs (
    id TEXT PRIMARY KEY NOT NULL,
    agent_id TEXT NOT NULL,
    channel_id TEXT NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    trigger_message_id TEXT,
    -- The person accountable for the run (queue limits, budget): the author of the human
    -- message at the start of the chain, or who started it explicitly.
    triggered_by TEXT,
    parent_run_id TEXT,
    hop INTEGER NOT NULL DEFAULT 0 CHECK (hop >= 0),
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    provider TEXT,
    model TEXT,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    usage_estimated INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    error_code TEXT,
    error_message TEXT,
    answer_message_id TEXT,
    -- High-water mark of the event sequence numbers handed out (reserved in blocks), so a
    -- terminal event written by another producer after a crash still comes last.
    seq_reserved INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    ended_at INTEGER
) STRICT;
CREATE INDEX ix_runs_active ON runs (status, created_at, id) WHERE status IN ('queued', 'running');
CREATE INDEX ix_runs_channel ON runs (channel_id, created_at);
CREATE INDEX ix_runs_user_created ON runs (triggered_by, created_at) WHERE triggered_by IS NOT NULL;

-- An agent's rolling summary of a channel's older messages (up to and including `last_seq`).
CREATE TABLE agent_summaries (
    agent_id TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    channel_id TEXT NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    summary TEXT NOT NULL,
    last_seq INTEGER NOT NULL,
    last_message_id TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (agent_id, channel_id)
) STRICT;
CREATE INDEX ix_agent_summaries_channel ON agent_summaries (channel_id);
