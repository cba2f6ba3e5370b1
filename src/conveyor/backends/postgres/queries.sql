-- Every statement the PostgreSQL store runs. Named blocks; {schema} is composed as an
-- identifier by psycopg.sql, values are bound parameters only.

-- name: meta_create
CREATE TABLE IF NOT EXISTS {schema}.meta (key text PRIMARY KEY, value text NOT NULL);

-- name: schema_create
CREATE SCHEMA IF NOT EXISTS {schema};

-- name: migrate_lock
SELECT pg_advisory_xact_lock(hashtext(%(lock)s));

-- name: meta_get
SELECT value FROM {schema}.meta WHERE key = %(key)s;

-- name: meta_set
INSERT INTO {schema}.meta (key, value) VALUES (%(key)s, %(value)s)
ON CONFLICT (key) DO UPDATE SET value = excluded.value;

-- name: job_insert_many
-- The batch arrives as one JSON array (encoded in C by orjson) and is unpacked here: far
-- cheaper than binding one array parameter per column.
WITH new AS (
    SELECT * FROM json_to_recordset(%(rows)s::json) AS t(
        id text, task text, queue text, state text, data jsonb, priority int,
        run_at float8, max_attempts int, key text, timeout float8, backoff jsonb,
        enqueued_at float8, ord int, custom bool)
)
INSERT INTO {schema}.jobs
    (id, task, queue, state, data, priority, run_at, max_attempts, key, timeout, backoff,
     enqueued_at)
SELECT id, task, queue, state, data, priority, run_at, max_attempts, key, timeout,
       backoff, enqueued_at
FROM new
-- Only an id the caller chose can name a finished job (CASE: the probe runs for those only).
WHERE CASE WHEN custom THEN NOT EXISTS (SELECT 1 FROM {schema}.jobs_done d WHERE d.id = new.id)
           ELSE true END
ORDER BY ord
ON CONFLICT DO NOTHING
RETURNING id;

-- name: queue_touch_many
INSERT INTO {schema}.queues (name)
SELECT DISTINCT q FROM unnest(%(queues)s::text[]) AS q
WHERE NOT EXISTS (SELECT 1 FROM {schema}.queues WHERE name = q)
ON CONFLICT (name) DO NOTHING;

-- name: notify
SELECT pg_notify(%(channel)s, q) FROM unnest(%(queues)s::text[]) AS q;

-- name: job_get
SELECT * FROM {schema}.jobs WHERE id = %(id)s
UNION ALL
SELECT * FROM {schema}.jobs_done WHERE id = %(id)s;

-- name: job_get_by_key
SELECT * FROM {schema}.jobs WHERE queue = %(queue)s AND key = %(key)s;

-- name: job_list
SELECT * FROM (
    (SELECT * FROM {schema}.jobs
     WHERE (%(queue)s::text IS NULL OR queue = %(queue)s)
       AND (%(state)s::text IS NULL OR state = %(state)s)
       AND (%(task)s::text IS NULL OR task = %(task)s)
       AND (%(before_id)s::text IS NULL OR id < %(before_id)s)
     ORDER BY id DESC LIMIT %(limit)s)
    UNION ALL
    (SELECT * FROM {schema}.jobs_done
     WHERE (%(queue)s::text IS NULL OR queue = %(queue)s)
       AND (%(state)s::text IS NULL OR state = %(state)s)
       AND (%(task)s::text IS NULL OR task = %(task)s)
       AND (%(before_id)s::text IS NULL OR id < %(before_id)s)
     ORDER BY id DESC LIMIT %(limit)s)
) AS j
ORDER BY id DESC
LIMIT %(limit)s;

-- name: job_claim
WITH candidates AS (
    SELECT c.id, c.priority, c.run_at
    FROM unnest(%(queues)s::text[]) AS q(name)
    CROSS JOIN LATERAL (
        SELECT id, priority, run_at FROM {schema}.jobs
        WHERE queue = q.name AND state IN ('queued', 'scheduled') AND run_at <= %(now)s
        ORDER BY priority, run_at, id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) AS c
    WHERE q.name NOT IN (SELECT name FROM {schema}.queues WHERE paused)
    ORDER BY c.priority, c.run_at, c.id
    LIMIT %(limit)s
)
UPDATE {schema}.jobs AS j
SET state = 'active', attempt = j.attempt + 1, worker_id = %(worker_id)s,
    started_at = %(now)s, lease_expires_at = %(lease_expires_at)s
FROM candidates
WHERE j.id = candidates.id
RETURNING j.*;

-- name: job_finish_many
-- Completed, failed or cancelled attempts move to jobs_done in one statement. Rows whose
-- attempt is no longer this worker's are left alone. `only_if_cancel` rows move only when a
-- cancel was requested (a retry outcome of a job cancelled meanwhile).
WITH o AS (
    SELECT * FROM unnest(
        %(ids)s::text[], %(attempts)s::int[], %(workers)s::text[], %(states)s::text[],
        %(results)s::text[], %(errors)s::text[], %(finished_ats)s::float8[],
        %(only_if_cancel)s::bool[]
    ) AS t(id, attempt, worker_id, state, result, error, finished_at, only_if_cancel)
), moved AS (
    DELETE FROM {schema}.jobs AS j USING o
    WHERE j.id = o.id AND j.state = 'active' AND j.worker_id = o.worker_id
      AND j.attempt = o.attempt AND (NOT o.only_if_cancel OR j.cancel_requested)
    RETURNING j.*, o.state AS new_state, o.result AS new_result, o.error AS new_error,
              o.finished_at AS new_finished_at
)
INSERT INTO {schema}.jobs_done
SELECT id, task, queue, new_state, data, priority, run_at, attempt, max_attempts, key,
       timeout, backoff, progress, new_result::jsonb,
       CASE WHEN new_error IS NULL THEN errors ELSE errors || jsonb_build_array(new_error::jsonb) END,
       enqueued_at, started_at, new_finished_at, worker_id, NULL, cancel_requested
FROM moved;

-- name: job_retry_later_many
WITH o AS (
    SELECT * FROM unnest(
        %(ids)s::text[], %(attempts)s::int[], %(workers)s::text[], %(errors)s::text[],
        %(run_ats)s::float8[], %(finished_ats)s::float8[]
    ) AS t(id, attempt, worker_id, error, run_at, finished_at)
)
UPDATE {schema}.jobs AS j
SET state = CASE WHEN o.run_at > o.finished_at THEN 'scheduled' ELSE 'queued' END,
    run_at = o.run_at, errors = j.errors || jsonb_build_array(o.error::jsonb),
    worker_id = NULL, lease_expires_at = NULL
FROM o
WHERE j.id = o.id AND j.state = 'active' AND j.worker_id = o.worker_id
  AND j.attempt = o.attempt AND NOT j.cancel_requested;

-- name: job_lock
-- Locks one worker's rows in id order before a statement that changes several of them: its
-- heartbeat, acknowledgement and release connections then all wait in the same order and
-- never deadlock one another (an UPDATE or DELETE alone locks in whatever order its plan
-- happens to scan).
-- Only active rows: a claim skips locked rows, so queued ones must never be held here.
SELECT id FROM {schema}.jobs
WHERE id = ANY(%(ids)s::text[]) AND state = 'active'
ORDER BY id FOR UPDATE;

-- name: job_lock_expired
-- The rows a rescue is about to change, locked in id order (see job_lock).
SELECT id FROM {schema}.jobs
WHERE state = 'active' AND lease_expires_at < %(now)s
ORDER BY id FOR UPDATE;

-- name: job_heartbeat
UPDATE {schema}.jobs
SET lease_expires_at = %(lease_expires_at)s
WHERE id = ANY(%(ids)s::text[]) AND state = 'active' AND worker_id = %(worker_id)s
RETURNING id, cancel_requested;

-- name: job_release_cancelled
WITH moved AS (
    DELETE FROM {schema}.jobs
    WHERE id = ANY(%(ids)s::text[]) AND state = 'active' AND worker_id = %(worker_id)s
      AND cancel_requested
    RETURNING *
)
INSERT INTO {schema}.jobs_done
SELECT id, task, queue, 'cancelled', data, priority, run_at, attempt - 1, max_attempts, key,
       timeout, backoff, progress, result, errors, enqueued_at, NULL, %(now)s, NULL, NULL,
       cancel_requested
FROM moved;

-- name: job_release
UPDATE {schema}.jobs
SET state = 'queued', attempt = attempt - 1, worker_id = NULL, lease_expires_at = NULL,
    started_at = NULL, run_at = %(now)s
WHERE id = ANY(%(ids)s::text[]) AND state = 'active' AND worker_id = %(worker_id)s;

-- name: job_rescue_finish
WITH moved AS (
    DELETE FROM {schema}.jobs
    WHERE state = 'active' AND lease_expires_at < %(now)s
      AND (cancel_requested OR attempt >= max_attempts)
    RETURNING *
)
INSERT INTO {schema}.jobs_done
SELECT id, task, queue, CASE WHEN cancel_requested THEN 'cancelled' ELSE 'failed' END, data,
       priority, run_at, attempt, max_attempts, key, timeout, backoff, progress, result,
       errors || jsonb_build_array(jsonb_build_object(
           'attempt', attempt, 'at', %(now)s::float8,
           'error', 'worker lost: lease expired before the attempt finished',
           'traceback', NULL)),
       enqueued_at, started_at, %(now)s, NULL, NULL, cancel_requested
FROM moved
RETURNING state;

-- name: job_rescue_requeue
UPDATE {schema}.jobs
SET state = 'queued', run_at = %(now)s, worker_id = NULL, lease_expires_at = NULL,
    errors = errors || jsonb_build_array(jsonb_build_object(
        'attempt', attempt, 'at', %(now)s::float8,
        'error', 'worker lost: lease expired before the attempt finished',
        'traceback', NULL))
WHERE state = 'active' AND lease_expires_at < %(now)s
RETURNING queue;

-- name: job_cancel_pending
WITH moved AS (
    DELETE FROM {schema}.jobs
    WHERE id = %(id)s AND state IN ('scheduled', 'queued', 'blocked')
    RETURNING *
)
INSERT INTO {schema}.jobs_done
SELECT id, task, queue, 'cancelled', data, priority, run_at, attempt, max_attempts, key,
       timeout, backoff, progress, result, errors, enqueued_at, started_at, %(now)s,
       worker_id, NULL, cancel_requested
FROM moved
RETURNING *;

-- name: job_cancel_request
UPDATE {schema}.jobs SET cancel_requested = true
WHERE id = %(id)s AND state = 'active'
RETURNING *;

-- name: job_retry_manual
WITH moved AS (
    DELETE FROM {schema}.jobs_done
    WHERE id = %(id)s AND state IN ('failed', 'cancelled')
    RETURNING *
)
INSERT INTO {schema}.jobs
SELECT id, task, queue, 'queued', data, priority, %(now)s, attempt,
       greatest(max_attempts, attempt + 1), key, timeout, backoff, progress, NULL, errors,
       enqueued_at, started_at, NULL, NULL, NULL, false
FROM moved
RETURNING *;

-- name: job_set_progress
UPDATE {schema}.jobs SET progress = %(progress)s::jsonb
WHERE id = %(id)s AND attempt = %(attempt)s AND state = 'active';

-- name: job_prune
DELETE FROM {schema}.jobs_done
WHERE (state = 'completed' AND finished_at < %(completed_before)s)
   OR (state IN ('failed', 'cancelled') AND finished_at < %(failed_before)s);

-- name: job_next_due_at
SELECT min(run_at) FROM {schema}.jobs
WHERE state = 'scheduled' AND queue = ANY(%(queues)s::text[])
  AND queue NOT IN (SELECT name FROM {schema}.queues WHERE paused);

-- name: compact_try_lock
SELECT pg_try_advisory_lock(hashtext(%(lock)s));

-- name: compact_jobs
VACUUM (ANALYZE) {schema}.jobs;

-- name: queue_set_paused
INSERT INTO {schema}.queues (name, paused) VALUES (%(name)s, %(paused)s)
ON CONFLICT (name) DO UPDATE SET paused = excluded.paused;

-- name: queue_names
SELECT name FROM {schema}.queues;

-- name: queue_list
SELECT name, paused FROM {schema}.queues
WHERE %(name)s::text IS NULL OR name = %(name)s
ORDER BY name;

-- name: queue_counts
SELECT queue,
       CASE WHEN state = 'scheduled' AND run_at <= %(now)s THEN 'queued' ELSE state END AS st,
       count(*) AS n
FROM {schema}.jobs
WHERE %(name)s::text IS NULL OR queue = %(name)s
GROUP BY 1, 2
UNION ALL
SELECT queue, state, count(*)
FROM {schema}.jobs_done
WHERE %(name)s::text IS NULL OR queue = %(name)s
GROUP BY 1, 2;

-- name: queue_oldest_queued
SELECT queue, min(run_at) AS oldest FROM {schema}.jobs
WHERE state IN ('queued', 'scheduled') AND run_at <= %(now)s
  AND (%(name)s::text IS NULL OR queue = %(name)s)
GROUP BY queue;

-- name: queue_recent
SELECT queue,
       count(*) FILTER (WHERE state = 'completed' AND finished_at >= %(minute_ago)s)
           AS completed_last_minute,
       count(*) FILTER (WHERE state = 'failed' AND finished_at >= %(minute_ago)s)
           AS failed_last_minute,
       avg(started_at - run_at) AS avg_wait,
       avg(finished_at - started_at) AS avg_run
FROM {schema}.jobs_done
WHERE state IN ('completed', 'failed') AND finished_at >= %(hour_ago)s
  AND (%(name)s::text IS NULL OR queue = %(name)s)
GROUP BY queue;

-- name: worker_beat
INSERT INTO {schema}.workers (id, info, heartbeat_at, expires_at)
VALUES (%(id)s, %(info)s::jsonb, %(heartbeat_at)s, %(expires_at)s)
ON CONFLICT (id) DO UPDATE SET
    info = excluded.info, heartbeat_at = excluded.heartbeat_at, expires_at = excluded.expires_at;

-- name: worker_list
-- As text: every store parses the entry with the same helper.
SELECT info::text AS info FROM {schema}.workers WHERE expires_at > %(now)s;

-- name: worker_forget
DELETE FROM {schema}.workers WHERE id = %(id)s;

-- name: worker_prune
DELETE FROM {schema}.workers WHERE expires_at <= %(now)s;
