-- Which node owns each agent run: the node that claimed it (compare-and-set
-- from no owner) and alone produces its events. Other nodes send it their
-- cancels, and end its running runs as interrupted when its heartbeat stops.
-- NULL: not claimed yet (a run committed with its message, waiting for a node).
ALTER TABLE runs ADD COLUMN node_id TEXT;
-- The per-user limit counts a person's claimed active runs on every node.
CREATE INDEX ix_runs_user_active ON runs (triggered_by) WHERE status IN ('queued', 'running');
