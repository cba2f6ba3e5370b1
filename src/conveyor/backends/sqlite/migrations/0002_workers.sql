-- Conveyor's SQLite schema, version 2: the worker registry. One row per worker process with
-- its last report (a WorkerInfo as JSON); a row whose expires_at has passed is a dead one's.
CREATE TABLE conveyor_workers (
    id           TEXT PRIMARY KEY,
    info         TEXT NOT NULL,
    heartbeat_at REAL NOT NULL,
    expires_at   REAL NOT NULL
) WITHOUT ROWID;

CREATE INDEX conveyor_workers_expires ON conveyor_workers (expires_at);
