-- Conveyor's PostgreSQL schema, version 3: snoozes (postponements that cost no attempt) on both
-- job tables, and leader leases: one row per lease, who holds it until when (store time).
ALTER TABLE {schema}.jobs ADD COLUMN snoozes integer NOT NULL DEFAULT 0;

ALTER TABLE {schema}.jobs_done ADD COLUMN snoozes integer NOT NULL DEFAULT 0;

CREATE TABLE {schema}.conveyor_leaders (
    name       text PRIMARY KEY,
    holder     text NOT NULL,
    expires_at double precision NOT NULL
);
