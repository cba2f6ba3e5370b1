-- Conveyor's SQLite schema, version 3: snoozes (postponements that cost no attempt) and
-- leader leases (one row per lease: who holds it until when, by the store's clock).
ALTER TABLE conveyor_jobs ADD COLUMN snoozes INTEGER NOT NULL DEFAULT 0;

CREATE TABLE conveyor_leaders (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
