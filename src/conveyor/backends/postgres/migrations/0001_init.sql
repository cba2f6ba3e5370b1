-- Conveyor's PostgreSQL schema, version 1. {schema} is the configured schema (an identifier).
-- Hot table `jobs` holds only pending and active jobs; finished jobs move to `jobs_done`, so
-- claims and their indexes stay small however much history is kept.
CREATE TABLE {schema}.jobs (
    id               text PRIMARY KEY,
    task             text NOT NULL,
    queue            text NOT NULL,
    state            text NOT NULL,
    data             jsonb NOT NULL,
    priority         integer NOT NULL,
    run_at           double precision NOT NULL,
    attempt          integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL,
    key              text,
    timeout          double precision,
    backoff          jsonb,
    progress         jsonb,
    result           jsonb,
    errors           jsonb NOT NULL DEFAULT '[]',
    enqueued_at      double precision NOT NULL,
    started_at       double precision,
    finished_at      double precision,
    worker_id        text,
    lease_expires_at double precision,
    cancel_requested boolean NOT NULL DEFAULT false
) WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.02,
        autovacuum_vacuum_insert_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0);

CREATE INDEX jobs_claim ON {schema}.jobs (queue, priority, run_at, id)
    WHERE state IN ('queued', 'scheduled');
CREATE INDEX jobs_scheduled ON {schema}.jobs (queue, run_at) WHERE state = 'scheduled';
CREATE INDEX jobs_lease ON {schema}.jobs (lease_expires_at) WHERE state = 'active';
-- A unique job: one pending or active job per (queue, key); finished jobs are elsewhere.
CREATE UNIQUE INDEX jobs_key ON {schema}.jobs (queue, key) WHERE key IS NOT NULL;

CREATE TABLE {schema}.jobs_done (LIKE {schema}.jobs INCLUDING DEFAULTS);
ALTER TABLE {schema}.jobs_done ADD PRIMARY KEY (id);
CREATE INDEX jobs_done_queue ON {schema}.jobs_done (queue, state, finished_at);
CREATE INDEX jobs_done_finished ON {schema}.jobs_done (finished_at);

CREATE TABLE {schema}.queues (
    name   text PRIMARY KEY,
    paused boolean NOT NULL DEFAULT false
);
