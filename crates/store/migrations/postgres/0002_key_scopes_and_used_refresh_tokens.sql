-- Keep in step with ../sqlite/0002_key_scopes_and_used_refresh_tokens.sql.

-- What an API key may do beyond its owner's rights narrowing them further, as
-- JSON (`{"channels":[...]}` or `{"agent":"<id>"}`); NULL: whatever its owner may.
ALTER TABLE api_keys ADD COLUMN scope TEXT;

-- Refresh tokens already exchanged, kept while their session lives:
-- presenting one again means a copy was stolen, and the session is revoked.
CREATE TABLE used_refresh_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL,
    session_id TEXT NOT NULL REFERENCES auth_sessions (id) ON DELETE CASCADE,
    used_at BIGINT NOT NULL
);
CREATE INDEX ix_used_refresh_tokens_session ON used_refresh_tokens (session_id);
