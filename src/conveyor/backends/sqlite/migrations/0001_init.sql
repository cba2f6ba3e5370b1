-- Conveyor's SQLite schema, version 1. Times are Unix seconds (REAL); JSON is TEXT.
CREATE TABLE conveyor_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE conveyor_jobs (
    id               TEXT PRIMARY KEY,
    task             TEXT NOT NULL,
    queue            TEXT NOT NULL,
    state            TEXT NOT NULL,
    data             TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    run_at           REAL NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    key              TEXT,
    timeout          REAL,
    backoff          TEXT,
    progress         TEXT,
    result           TEXT,
    errors           TEXT NOT NULL DEFAULT '[]',
    enqueued_at      REAL NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    worker_id        TEXT,
    lease_expires_at REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);

-- Claim order: per queue, priority then due time then id; only pending rows are indexed.
CREATE INDEX conveyor_jobs_claim ON conveyor_jobs (queue, priority, run_at, id)
    WHERE state IN ('queued', 'scheduled');
CREATE INDEX conveyor_jobs_scheduled ON conveyor_jobs (queue, run_at)
    WHERE state = 'scheduled';
CREATE INDEX conveyor_jobs_lease ON conveyor_jobs (lease_expires_at)
    WHERE state = 'active';
CREATE INDEX conveyor_jobs_finished ON conveyor_jobs (queue, state, finished_at)
    WHERE state IN ('completed', 'failed', 'cancelled');
-- A unique job: one pending or active job per (queue, key).
CREATE UNIQUE INDEX conveyor_jobs_key ON conveyor_jobs (queue, key)
    WHERE key IS NOT NULL AND state IN ('scheduled', 'queued', 'active', 'blocked');

CREATE TABLE conveyor_queues (
    name   TEXT PRIMARY KEY,
    paused INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
