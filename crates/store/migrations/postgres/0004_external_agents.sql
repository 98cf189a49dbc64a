-- External agents: agents that run in their owner's own service, reached by a signed webhook. PostgreSQL dialect.
-- Keep in step with ../sqlite/0004_external_agents.sql: same columns.

-- 'hosted' (Chorus runs it) or 'external' (its webhook does); external agents have webhook_url and
-- webhook_secret_salt, hosted ones neither.
ALTER TABLE agents ADD COLUMN kind TEXT NOT NULL DEFAULT 'hosted' CHECK (kind IN ('hosted', 'external'));
ALTER TABLE agents ADD COLUMN webhook_url TEXT;
-- The signing secret is derived from the server's key and this salt; the secret itself is not stored.
ALTER TABLE agents ADD COLUMN webhook_secret_salt TEXT;
-- After a rotation, the previous secret's salt, and until when (Unix ms) deliveries are signed with it too.
ALTER TABLE agents ADD COLUMN webhook_previous_salt TEXT;
ALTER TABLE agents ADD COLUMN webhook_previous_until BIGINT;
