-- Conveyor's PostgreSQL schema, version 2: the worker registry. One row per worker process with
-- its last report (a WorkerInfo as JSON); a row whose expires_at has passed is a dead one's.
CREATE TABLE {schema}.workers (
    id           text PRIMARY KEY,
    info         jsonb NOT NULL,
    heartbeat_at double precision NOT NULL,
    expires_at   double precision NOT NULL
);

CREATE INDEX workers_expires ON {schema}.workers (expires_at);
