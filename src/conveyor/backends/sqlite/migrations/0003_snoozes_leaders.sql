-- Conveyor's SQLite schema, version 3: snoozes (postponements that cost no attempt), leader
-- leases (one row per lease: who holds it until when, by the store's clock), and an index
-- that lets a bounded prune walk finished jobs oldest first.
ALTER TABLE conveyor_jobs ADD COLUMN snoozes INTEGER NOT NULL DEFAULT 0;

CREATE TABLE conveyor_leaders (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;

CREATE INDEX conveyor_jobs_prune ON conveyor_jobs (finished_at)
    WHERE state IN ('completed', 'failed', 'cancelled');
