-- The outbox relay claims rows before publishing them, so that two nodes
-- relaying from one database never publish the same event twice. A claim is
-- a lease: a node that dies mid-pass leaves rows that others take once
-- `claimed_until` has passed.
ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
ALTER TABLE outbox ADD COLUMN claimed_until BIGINT NOT NULL DEFAULT 0;
